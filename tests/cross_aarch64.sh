#!/bin/sh
# The test suite's aarch64 part, run by ctest (tests/CMakeLists.txt): the
# library and its CPU tests cross-compiled for 64-bit ARM and run under
# qemu-user, so that the NEON kernels (src/backend/cpu/kernels_neon.cpp) are
# checked against the scalar reference and ggml's recorded values
# (test_kernels), and the stories260K model tests run on them.
#
#   cross_aarch64.sh build SRC DIR TEST_DATA   configure and build DIR (Release,
#                                              CPU only, the tests below)
#   cross_aarch64.sh test DIR                  run them (ctest runs each through
#                                              qemu-aarch64)
#
# Skips (exit 77) without the cross compiler, qemu-aarch64 or the arm64
# libraries (tools/install-deps.sh installs them). Only stories260K from the
# test data is used: the default model would take minutes under emulation.
set -e
mode=$1
shift
jobs=${KVFIT_CROSS_JOBS:-$(nproc 2>/dev/null || echo 2)}
# The unit tests, and the model tests on stories260K (their long streams are
# shorter under KVFIT_TEST_EMULATED: a few minutes in all under qemu).
# (test_kernels' matrix products on fewer shapes: KVFIT_TEST_EMULATED.)
TESTS="test_kernels test_kv_codec test_gguf test_model_generate test_model_streaming test_session_state"

missing() {
    echo "skipped: $1 (tools/install-deps.sh installs it)"
    exit 77
}
check_tools() {
    command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || missing "no aarch64 cross compiler (g++-aarch64-linux-gnu)"
    command -v qemu-aarch64 >/dev/null 2>&1 || missing "no qemu-aarch64 (qemu-user)"
    [ -f /usr/lib/aarch64-linux-gnu/pkgconfig/libpcre2-8.pc ] || missing "no arm64 PCRE2 (libpcre2-dev:arm64)"
    [ -f /usr/lib/aarch64-linux-gnu/pkgconfig/cmocka.pc ] || missing "no arm64 CMocka (libcmocka-dev:arm64)"
}

case $mode in
build)
    src=$1 dir=$2 data=$3
    check_tools
    mkdir -p "$dir"
    # KVFIT_MODELS_DIR: an empty folder, so that the default model's cases skip.
    mkdir -p "$dir/no-models"
    cmake -S "$src" -B "$dir" -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64-linux-gnu.cmake" -DCMAKE_BUILD_TYPE=Release \
        -DKVFIT_VULKAN=OFF -DKVFIT_CUDA=OFF -DKVFIT_BUILD_SAMPLES=OFF "-DKVFIT_TEST_DATA_DEFAULT=$data" \
        "-DKVFIT_MODELS_DIR=$dir/no-models" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
    # shellcheck disable=SC2086 # one word per target
    cmake --build "$dir" -j "$jobs" --target $TESTS
    ;;
test)
    dir=$1
    check_tools
    [ -f "$dir/CMakeCache.txt" ] || { echo "no aarch64 build in $dir"; exit 1; }
    cd "$dir"
    # Emulation is slow: the tests' wall-clock limits are scaled.
    KVFIT_TEST_TIME_SCALE=${KVFIT_TEST_TIME_SCALE:-10}
    KVFIT_MODEL=
    KVFIT_TEST_EMULATED=1
    export KVFIT_TEST_TIME_SCALE KVFIT_MODEL KVFIT_TEST_EMULATED
    regex=$(echo $TESTS | sed 's/ /|/g')
    # A skip inside is still a pass here; the log shows each test's result.
    ctest --output-on-failure -j "$jobs" -R "^($regex)\$"
    ;;
*)
    echo "usage: $0 build SRC DIR TEST_DATA | test DIR" >&2
    exit 2
    ;;
esac
