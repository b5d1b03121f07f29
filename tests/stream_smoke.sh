#!/bin/sh
# Smoke test of kvfit-stream (and kvfit-plot on its output): bad flags exit 2;
# on the default model a budgeted session generates and then ingests text
# with the KV bytes the same on every row and never above the budget.
#   stream_smoke.sh PATH/TO/kvfit-stream PATH/TO/kvfit-plot|"" MODEL   (KVFIT_MODEL overrides MODEL)
set -u
stream="$1" plot="$2"
model="${KVFIT_MODEL:-$3}"
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL: $*"; exit 1; }

for bad in "--bogus 1" "--every 0" "--budget 12XB" "--max-tokens -3" "--repeat" "--temp warm"; do
    # shellcheck disable=SC2086 # word splitting of $bad is intended
    "$stream" -m model.gguf $bad >/dev/null 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "'$bad' exited $rc, expected 2"
done
if [ ! -f "$model" ]; then
    echo "skipped: default model $model not found (make models)"
    exit 77
fi

tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
budget_mib=2

# Checks one run: the CSV header, at least $2 rows, tokens rising to $3 on
# the last row, and one KV size on every row, inside the budget.
check() {
    out="$1"
    grep -q '^tokens,elapsed_s,tok_per_s,rss_mib,kv_mib$' "$out" || { cat "$out"; fail "no CSV header"; }
    grep -q '^# plan: 30 layers' "$out" || { cat "$out"; fail "no plan comment"; }
    rows=$(grep -cE '^[0-9]+,[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+$' "$out")
    [ "$rows" -ge "$2" ] || { cat "$out"; fail "$rows rows, expected at least $2"; }
    awk -F, -v last="$3" -v budget="$budget_mib" '
        /^[0-9]/ {
            if ($1 <= prev) { print "tokens did not rise: " $0; bad = 1 }
            if (kv != "" && $5 != kv) { print "KV bytes moved: " kv " -> " $5; bad = 1 }
            if ($5 > budget || $5 <= 0) { print "KV MiB " $5 " outside (0, " budget "]"; bad = 1 }
            prev = $1; kv = $5
        }
        END { if (prev != last) { print "last row at " prev " tokens, expected " last; bad = 1 } exit bad }
    ' "$out" || { cat "$out"; fail "rows of $out"; }
}

"$stream" -m "$model" --budget ${budget_mib}MiB --every 16 --max-tokens 48 -t 2 --seed 7 \
    >"$tmp/gen.csv" 2>"$tmp/err" || { cat "$tmp/err"; fail "generating"; }
check "$tmp/gen.csv" 3 48

# A text shorter than the run, repeated: the stream goes on past its end.
head -c 600 "$here/../README.md" >"$tmp/text.txt"
"$stream" -m "$model" --budget ${budget_mib}MiB -f "$tmp/text.txt" --repeat --every 64 --max-tokens 400 -t 2 \
    >"$tmp/ingest.csv" 2>"$tmp/err" || { cat "$tmp/err"; fail "ingesting"; }
check "$tmp/ingest.csv" 6 400

if [ -n "$plot" ]; then
    "$plot" memory -o "$tmp/memory.png" "generated=$tmp/gen.csv" "ingested=$tmp/ingest.csv" >"$tmp/err" 2>&1 \
        || { cat "$tmp/err"; fail "kvfit-plot on kvfit-stream's CSV"; }
    head -c 8 "$tmp/memory.png" | od -An -c | grep -q 'P   N   G' || fail "memory.png is not a PNG"
fi
echo "stream smoke ok: KV $(awk -F, '/^[0-9]/ {kv = $5} END {print kv}' "$tmp/gen.csv") MiB on every row"
