#!/bin/sh
# run.sh BIN SEEDS SECONDS WORK [extra libFuzzer flags]
#
# Replays every input of the seed folder SEEDS through the libFuzzer binary
# BIN (-runs=0: each input once; a crash, leak, sanitizer report or timeout
# fails), then fuzzes for SECONDS seconds (0: replay only), starting from the
# seeds and what earlier runs left in the folder WORK (new inputs are written
# there, never into SEEDS). A crashing input is saved in WORK as crash-*.
# Exit status: libFuzzer's (0 clean), 77 when the target skips (no model or
# vocabulary: set KVFIT_TEST_DATA).
set -e
bin=$1 seeds=$2 seconds=$3 work=$4
shift 4
name=$(basename "$bin")
src_dir=$(cd "$(dirname "$0")" && pwd)
dict=""
[ -f "$src_dir/${name#fuzz_}.dict" ] && dict="-dict=$src_dir/${name#fuzz_}.dict"
mkdir -p "$work"
# Per-input limits: 10 s, 2 GiB.
# libFuzzer's own exit code for a finding is 77, the suite's skip: 1 instead.
common="-error_exitcode=1 -timeout_exitcode=1 -timeout=10 -rss_limit_mb=2048 -max_len=65536 -artifact_prefix=$work/ -print_final_stats=1 $dict"

status=0
# shellcheck disable=SC2086 # one word per flag
"$bin" $common -runs=0 "$@" "$seeds" || status=$?
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 77 ] && exit 77
    echo "$name: replaying $seeds failed (exit $status)"
    exit "$status"
fi
echo "$name: every seed of $seeds replayed cleanly"
if [ "$seconds" -gt 0 ]; then
    # shellcheck disable=SC2086
    "$bin" $common -max_total_time="$seconds" "$@" "$work" "$seeds" || status=$?
    [ "$status" -ne 0 ] && echo "$name: fuzzing for $seconds s failed (exit $status); the input is in $work"
fi
exit "$status"
