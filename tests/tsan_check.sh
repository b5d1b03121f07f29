#!/bin/sh
# Runs test_concurrency from the ThreadSanitizer build (`make tsan` makes it):
#   tsan_check.sh TSAN_BUILD_DIR SOURCE_DIR
# Exits 77 (skipped) when that build is missing or older than the sources, so
# a stale binary never passes for the current code. Any ThreadSanitizer
# report fails the test (exit code 66).
build="${KVFIT_TSAN_BUILD:-$1}"
src="$2"
bin="$build/tests/test_concurrency"
if [ ! -x "$bin" ]; then
    echo "skipped: no ThreadSanitizer build at $build (make tsan builds it)"
    exit 77
fi
newer=$(find "$src/src" "$src/include" "$src/tests/test_concurrency.c" "$src/tests/testutil.c" -newer "$bin" -type f 2>/dev/null | head -1)
if [ -n "$newer" ]; then
    echo "skipped: the ThreadSanitizer build is older than $newer (make tsan rebuilds it)"
    exit 77
fi
TSAN_OPTIONS="exitcode=66 halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" exec "$bin"
