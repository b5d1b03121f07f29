# Shared by the scripts ctest runs for the bindings and their chat samples
# (sourced, not executed). Points each language's toolchain at the freshly
# built library and keeps build outputs under $KVFIT_WORK_DIR.
#
# Expects, from bindings/CMakeLists.txt: KVFIT_LIB_DIR (folder of
# libkvfit.so.0), PKG_CONFIG_PATH (holding kvfit-uninstalled.pc),
# KVFIT_DEFAULT_MODEL (the default model, unless KVFIT_MODEL names another)
# and KVFIT_WORK_DIR (scratch space in the build tree).

KVFIT_REPO=$(cd "$(dirname "$0")/.." && pwd)
export KVFIT_MODEL="${KVFIT_MODEL:-$KVFIT_DEFAULT_MODEL}"
export LD_LIBRARY_PATH="$KVFIT_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$KVFIT_WORK_DIR"

# ctest's SKIP_RETURN_CODE: the test is reported as skipped, with the reason.
skip() {
    echo "skipped: $*"
    exit 77
}

fail() {
    echo "FAIL: $*"
    exit 1
}

model_present() { [ -f "$KVFIT_MODEL" ]; }

setup_rust() {
    # rustup installs into ~/.cargo/bin, which non-login shells may not have on PATH.
    [ -n "${HOME:-}" ] && [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
    command -v cargo >/dev/null 2>&1 || skip "cargo not found (install Rust, e.g. with rustup)"
    export CARGO_TARGET_DIR="$KVFIT_WORK_DIR/cargo"
}

setup_go() {
    command -v go >/dev/null 2>&1 || skip "go not found (apt-get install golang-go)"
    export CGO_ENABLED=1 GOPROXY=off GOTOOLCHAIN=local
    # Go needs a cache; without a home folder keep it in the build tree.
    if [ -z "${HOME:-}" ]; then
        export GOCACHE="$KVFIT_WORK_DIR/go-cache" GOPATH="$KVFIT_WORK_DIR/go-path"
    fi
}

setup_python() {
    command -v python3 >/dev/null 2>&1 || skip "python3 not found"
    export PYTHONDONTWRITEBYTECODE=1
}
