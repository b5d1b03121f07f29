#!/bin/sh
# Smoke test of kvfit-ppl: bad flags exit 2; on a tiny real model and a short
# real text it prints CSV rows and a finite total perplexity, streaming past
# the text's first window and, dense, stopping where its cache is full.
# Without the model or the text, after the flag checks, exits 77 (ctest's skip).
#   ppl_smoke.sh PATH/TO/kvfit-ppl DATA_DIR   (KVFIT_TEST_DATA overrides DATA_DIR)
set -u
ppl="$1"
data="${KVFIT_TEST_DATA:-$2}"
fail() { echo "FAIL: $*"; exit 1; }

# Flag errors need no data, so they are checked even where it is absent.
for bad in "--bogus" "--chunk" "--budget 12XB" "--budget 1.5" "--codec q5" "--dense --window 8"; do
    # shellcheck disable=SC2086 # word splitting of $bad is intended
    "$ppl" -m model.gguf -f text.txt $bad >/dev/null 2>&1
    rc=$?
    [ "$rc" -eq 2 ] || fail "'$bad' exited $rc, expected 2"
done

model="$data/models/stories260K.gguf"
src="$data/text/tinyshakespeare.txt"
if [ ! -f "$model" ] || [ ! -f "$src" ]; then
    echo "skipped: $model or $src not found (set KVFIT_TEST_DATA)"
    exit 77
fi

tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
# The first ~20 KB (ASCII, so no character is cut) give well over 2000 tokens.
head -c 20000 "$src" >"$tmp/text.txt"

# Checks one run's output: at least $2 CSV rows and a finite total ppl in
# [1, 512): stories260K has 512 tokens, and a model that does worse than a
# uniform guess over them is broken, not just weak.
check() {
    out="$1"
    rows=$(grep -cE '^[0-9]+,[0-9]+,[0-9]+,[0-9.]+,[0-9.]+$' "$out")
    [ "$rows" -ge "$2" ] || { cat "$out"; fail "$rows CSV rows, expected at least $2"; }
    total=$(sed -n 's/^# total: .*, ppl \(.*\)$/\1/p' "$out")
    echo "$total" | grep -qE '^[0-9]+(\.[0-9]+)?$' || { cat "$out"; fail "total ppl '$total' is not finite"; }
    awk -v p="$total" 'BEGIN { exit !(p >= 1 && p < 512) }' || { cat "$out"; fail "total ppl $total outside [1, 512)"; }
}

# Streaming: 2000 tokens through 4 sinks + a 256-token window, 4 rows of 512.
"$ppl" -m "$model" -f "$tmp/text.txt" -t 2 --max-tokens 2000 --sinks 4 --window 256 --codec f16 \
    --csv "$tmp/stream.csv" >"$tmp/stream.out" 2>"$tmp/err" || { cat "$tmp/err"; fail "streaming run"; }
check "$tmp/stream.out" 4
grep -q '^chunk,first_token,last_token,nll_mean,ppl$' "$tmp/stream.csv" || fail "--csv file lacks the CSV header"
grep -q '^# layer kind codec sinks window bytes$' "$tmp/stream.out" || fail "no plan in the output"

# Dense: a 1024-token cache stops the 2000-token evaluation after 1024 tokens.
"$ppl" -m "$model" -f "$tmp/text.txt" -t 2 --max-tokens 2000 --dense --ctx 1024 \
    >"$tmp/dense.out" 2>"$tmp/err" || { cat "$tmp/err"; fail "dense run"; }
check "$tmp/dense.out" 2
grep -q '^# total: tokens 1024,' "$tmp/dense.out" || { cat "$tmp/dense.out"; fail "dense run did not stop at 1024"; }

echo "ppl smoke ok: streaming ppl $(sed -n 's/^# total: .*, ppl //p' "$tmp/stream.out"), dense ppl $total"
