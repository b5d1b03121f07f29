#!/bin/sh
# Installs what kvfit needs to build and run its whole test suite (`make test`,
# which .ci/run runs), only what is missing: Debian packages through apt-get
# (the package lists are updated first when something is to be installed),
# pytest for the Python binding's tests and gguf + numpy for the tiny test
# models through pip. clang (with its libFuzzer and sanitizer runtimes)
# builds the suite's sanitizer build and fuzz targets; without libFuzzer the
# fuzz tests skip. Rust is not a Debian package here: install it with rustup; without cargo the Rust tests skip.
# On x86-64, the aarch64 cross compiler, qemu-user and the arm64 builds of
# PCRE2 and CMocka (multiarch: the arm64 architecture is added to dpkg) let
# the suite run its CPU tests as on ARM; if they cannot be had, those tests skip.
set -e
PKGS="cmake g++ clang make pkg-config libpcre2-dev libcmocka-dev python3 python3-pip unzip libstb-dev golang-go mesa-vulkan-drivers libvulkan-dev glslc vulkan-validationlayers"
CROSS_PKGS="g++-aarch64-linux-gnu qemu-user libpcre2-dev:arm64 libcmocka-dev:arm64"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

missing=""
for p in $PKGS; do
    # A Go toolchain installed some other way will do.
    [ "$p" = golang-go ] && command -v go >/dev/null 2>&1 && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

# The aarch64 cross build (tests/cross_aarch64.sh), x86-64 hosts only. Best
# effort: a failure here leaves the rest of the suite as it is.
if [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ]; then
    cross_missing=""
    for p in $CROSS_PKGS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || cross_missing="$cross_missing $p"
    done
    if [ -n "$cross_missing" ]; then
        echo "installing (aarch64 cross tests):$cross_missing"
        if ! dpkg --print-foreign-architectures | grep -qx arm64; then
            $SUDO dpkg --add-architecture arm64
            # Ubuntu serves arm64 from its ports archive, not from the amd64 mirrors.
            if [ -r /etc/os-release ] && . /etc/os-release && [ "${ID:-}" = ubuntu ] && [ -n "${VERSION_CODENAME:-}" ]; then
                printf 'deb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports %s main universe\ndeb [arch=arm64] http://ports.ubuntu.com/ubuntu-ports %s-updates main universe\n' \
                    "$VERSION_CODENAME" "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/kvfit-arm64-ports.list >/dev/null
            fi
        fi
        # (on Ubuntu the amd64 mirrors answer 404 for arm64 lists: not fatal)
        $SUDO apt-get update -qq || true
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $cross_missing ||
            echo "note: could not install$cross_missing: the aarch64 tests will skip"
    fi
fi

# pytest from PyPI for the python3 the tests run (Debian 12's pip needs the
# override to install beside the system's packages).
if ! python3 -c "import pytest" 2>/dev/null; then
    echo "installing: pytest (pip, for $(command -v python3))"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet pytest
fi

# gguf and numpy from PyPI: tools/make-tiny-model.py writes the tiny
# random-weight models some tests compare with llama.cpp's recorded results.
if ! python3 -c "import gguf, numpy" 2>/dev/null; then
    echo "installing: gguf, numpy (pip, for $(command -v python3))"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet gguf numpy
fi

if ! command -v cargo >/dev/null 2>&1 && [ ! -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]; then
    echo "note: cargo not found: the Rust binding tests will skip (install Rust with rustup)"
fi
exit 0
