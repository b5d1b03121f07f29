#!/bin/sh
# Installs what kvfit needs to build and run its whole test suite (`make test`,
# which .ci/run runs), only what is missing: Debian packages through apt-get
# (the package lists are updated first when something is to be installed),
# pytest for the Python binding's tests and gguf + numpy for the tiny test
# models through pip. clang (with its libFuzzer and sanitizer runtimes)
# builds the suite's sanitizer build and fuzz targets; without libFuzzer the
# fuzz tests skip. Rust is not a Debian package here: install it with rustup; without cargo the Rust tests skip.
set -e
PKGS="cmake g++ clang make pkg-config libpcre2-dev libcmocka-dev python3 python3-pip unzip libstb-dev golang-go mesa-vulkan-drivers libvulkan-dev glslc vulkan-validationlayers"

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
