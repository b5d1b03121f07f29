#!/bin/sh
# Runs one binding's test suite against the freshly built library (ctest runs
# it; see env.sh for the environment). Exits 77, ctest's skip, when the
# language's toolchain is missing, and also when the default model is: the
# tests that need no model still run (and fail the run if they fail), but
# most of each suite generates text, so without the model it did not run.
#   run-tests.sh rust|go|python
set -u
. "$(dirname "$0")/env.sh"

case "$1" in
rust)
    setup_rust
    cd "$KVFIT_REPO/bindings/rust" && cargo test --offline -- --test-threads=2
    ;;
go)
    setup_go
    # -count=1: the Go test cache does not know when libkvfit changes.
    cd "$KVFIT_REPO/bindings/go" && go test -count=1 -v ./...
    ;;
python)
    setup_python
    python3 -c "import pytest" 2>/dev/null || skip "pytest not found (python3 -m pip install pytest)"
    cd "$KVFIT_REPO/bindings/python" && python3 -m pytest -v -p no:cacheprovider tests
    ;;
*)
    fail "unknown binding '$1'"
    ;;
esac
rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
model_present || skip "the $1 tests that generate: default model $KVFIT_MODEL not found (make models); the others passed"
