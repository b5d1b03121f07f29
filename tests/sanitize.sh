#!/bin/sh
# The sanitizer part of the test suite, run by ctest (tests/CMakeLists.txt):
#
#   sanitize.sh build SRC DIR TEST_DATA   configure and build DIR: the library, the
#                                         unit tests and (with clang) the fuzz
#                                         targets, under ASan + UBSan
#   sanitize.sh unit DIR                  run DIR's unit-labelled tests
#   sanitize.sh fuzz DIR SRC NAME SECONDS TEST_DATA
#                                         replay tests/fuzz/NAME through DIR's
#                                         fuzz_NAME, then fuzz it for SECONDS
#                                         (the targets find their models in
#                                         $KVFIT_TEST_DATA, else TEST_DATA)
#
# With clang the build is the fuzz build (-DKVFIT_FUZZ=ON: libFuzzer's
# coverage instrumentation on top of the sanitizers); without it, the default
# compiler's sanitizer build, and the fuzz tests skip (exit 77). UBSan stops
# at its first report, so that undefined behaviour fails a test.
set -e
mode=$1
shift
jobs=${KVFIT_SANITIZE_JOBS:-$(nproc 2>/dev/null || echo 2)}
# Unit tests and fuzz targets: reports are errors; leaks too.
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export UBSAN_OPTIONS

case $mode in
build)
    src=$1 dir=$2 data=$3
    # KVFIT_TEST_HOOKS: the allocation-failure hook that test_alloc_failure sweeps.
    flags="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFIT_SANITIZE=ON -DKVFIT_TEST_HOOKS=ON -DKVFIT_BUILD_SAMPLES=OFF"
    flags="$flags -DKVFIT_VULKAN=OFF -DKVFIT_CUDA=OFF"
    flags="$flags -DKVFIT_TEST_DATA_DEFAULT=$data"
    cflags="-fno-sanitize-recover=undefined"
    if command -v clang >/dev/null 2>&1 && command -v clang++ >/dev/null 2>&1 &&
        printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char *, unsigned long) { return 0; }\n' |
        clang++ -x c++ -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
        export CC=clang CXX=clang++
        flags="$flags -DKVFIT_FUZZ=ON"
        echo "sanitizer build with clang and libFuzzer in $dir"
    else
        echo "no clang with libFuzzer: sanitizer build with the default compiler, no fuzz targets"
    fi
    # A folder configured with another compiler is started again.
    if [ -f "$dir/CMakeCache.txt" ] && ! grep -q "KVFIT_FUZZ:BOOL=$( [ "${CXX:-}" = clang++ ] && echo ON || echo OFF)" "$dir/CMakeCache.txt"; then
        rm -rf "$dir"
    fi
    # shellcheck disable=SC2086 # one word per flag
    cmake -S "$src" -B "$dir" $flags "-DCMAKE_C_FLAGS=$cflags" "-DCMAKE_CXX_FLAGS=$cflags" >"$dir.configure.log" 2>&1 ||
        { cat "$dir.configure.log"; exit 1; }
    # Only what the unit tests and the fuzz replays run.
    targets="kvfit header_c99"
    for t in $(cd "$dir" && ctest -N -L unit | sed -n 's/^ *Test *#[0-9]*: //p'); do
        case $t in test_*) targets="$targets $t" ;; esac
    done
    if grep -q "KVFIT_FUZZ:BOOL=ON" "$dir/CMakeCache.txt"; then
        for f in "$src"/tests/fuzz/fuzz_*.cpp; do targets="$targets $(basename "$f" .cpp)"; done
    fi
    # shellcheck disable=SC2086
    cmake --build "$dir" -j "$jobs" --target $targets
    ;;
unit)
    dir=$1
    cd "$dir"
    # ASan, UBSan and the fuzzer's coverage counters slow code down several
    # times: the tests' wall-clock limits are scaled by this much.
    KVFIT_TEST_TIME_SCALE=${KVFIT_TEST_TIME_SCALE:-5}
    export KVFIT_TEST_TIME_SCALE
    ctest --output-on-failure -L unit -j "$jobs"
    ;;
fuzz)
    dir=$1 src=$2 name=$3 seconds=$4
    KVFIT_TEST_DATA=${KVFIT_TEST_DATA:-$5}
    export KVFIT_TEST_DATA
    bin=$dir/fuzz/fuzz_$name
    if [ ! -x "$bin" ]; then
        echo "skipped: $bin was not built (the sanitizer build found no clang with libFuzzer)"
        exit 77
    fi
    exec sh "$src/tests/fuzz/run.sh" "$bin" "$src/tests/fuzz/$name" "$seconds" "$dir/fuzz/corpus-$name"
    ;;
*)
    echo "usage: $0 build|unit|fuzz ..." >&2
    exit 2
    ;;
esac
