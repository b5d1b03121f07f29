#!/bin/sh
# Smoke run of a chat sample on the default model: flag errors, a one-shot
# reply with --budget and --plan, two turns from stdin, and a budget too small
# for any plan. Builds the Rust and Go samples first (see bindings/env.sh for
# the environment ctest sets); exits 77, ctest's skip, without a toolchain.
#   chat-smoke.sh c PATH/TO/kvfit-chat | rust | go | python
set -u
. "$(dirname "$0")/../bindings/env.sh"

case "$1" in
c)
    chat() { "$KVFIT_CHAT_BIN" "$@"; }
    KVFIT_CHAT_BIN="$2"
    ;;
rust)
    setup_rust
    (cd "$KVFIT_REPO/samples/rust" && cargo build --offline -q) || fail "building kvfit-chat-rs"
    chat() { "$CARGO_TARGET_DIR/debug/kvfit-chat-rs" "$@"; }
    ;;
go)
    setup_go
    (cd "$KVFIT_REPO/samples/go" && go build -o "$KVFIT_WORK_DIR/kvfit-chat-go" .) || fail "building kvfit-chat-go"
    chat() { "$KVFIT_WORK_DIR/kvfit-chat-go" "$@"; }
    ;;
python)
    setup_python
    chat() { python3 "$KVFIT_REPO/samples/python/chat.py" "$@"; }
    ;;
*)
    fail "unknown sample '$1'"
    ;;
esac

tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT

chat -m "$KVFIT_MODEL" --budget 12XB >"$tmp/out" 2>&1
rc=$?
[ "$rc" -eq 2 ] || { cat "$tmp/out"; fail "a bad --budget exited $rc, expected 2"; }

model_present || skip "default model $KVFIT_MODEL not found (make models)"

chat -m "$KVFIT_MODEL" -p "What is the capital of France?" -n 8 -t 2 --temp 0 --budget 64MiB --plan \
    >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/out" "$tmp/err"; fail "one-shot chat"; }
grep -q '[^[:space:]]' "$tmp/out" || { cat "$tmp/err"; fail "no reply on stdout"; }
grep -q '^plan: 30 layers' "$tmp/err" || { cat "$tmp/err"; fail "--plan printed no plan"; }
grep -q 'streaming' "$tmp/err" || { cat "$tmp/err"; fail "a 64MiB budget should give streaming layers"; }

printf 'Hi!\nWhat is two plus two?\n' | chat -m "$KVFIT_MODEL" -n 6 -t 2 --temp 0 --budget 64MiB \
    >"$tmp/turns" 2>"$tmp/err" || { cat "$tmp/turns" "$tmp/err"; fail "two turns from stdin"; }
[ "$(grep -c '[^[:space:]]' "$tmp/turns")" -ge 2 ] || { cat "$tmp/turns" "$tmp/err"; fail "expected two replies"; }

if [ "$1" = c ]; then
    # A conversation saved after its first turn and continued by a new
    # process gives the second reply the single process gave.
    printf 'Hi!\n' | chat -m "$KVFIT_MODEL" -n 6 -t 2 --temp 0 --budget 64MiB --save "$tmp/conv" \
        >"$tmp/first" 2>"$tmp/err" || { cat "$tmp/err"; fail "first turn with --save"; }
    printf 'What is two plus two?\n' | chat -m "$KVFIT_MODEL" -n 6 -t 2 --temp 0 --budget 64MiB --load "$tmp/conv" \
        >"$tmp/second" 2>"$tmp/err" || { cat "$tmp/err"; fail "second turn with --load"; }
    [ "$(sed -n 2p "$tmp/turns")" = "$(sed -n 1p "$tmp/second")" ] ||
        { cat "$tmp/turns" "$tmp/second"; fail "the restored conversation answered differently"; }
    # Another session plan: refused with a message, nothing generated.
    printf 'Hello\n' | chat -m "$KVFIT_MODEL" -n 6 -t 2 --temp 0 --budget 32MiB --load "$tmp/conv" \
        >"$tmp/out" 2>"$tmp/err"
    rc=$?
    [ "$rc" -eq 1 ] && grep -q 'loading the saved session' "$tmp/err" || { cat "$tmp/err"; fail "a state of another plan loaded"; }
fi

chat -m "$KVFIT_MODEL" -p "Hi" --budget 1KiB >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -eq 1 ] || { cat "$tmp/out" "$tmp/err"; fail "a 1KiB budget exited $rc, expected 1"; }
grep -q 'smallest budget that works.*KVFIT_E_BUDGET' "$tmp/err" || { cat "$tmp/err"; fail "no budget message"; }

echo "chat sample ($1) ok; two turns said: $(tr '\n' ' ' <"$tmp/turns")"
