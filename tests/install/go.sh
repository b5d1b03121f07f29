#!/bin/sh
# The Go module (bindings/go, `#cgo pkg-config: kvfit`) built both ways the
# README documents, with no LD_LIBRARY_PATH:
#   build tree:  PKG_CONFIG_PATH=BUILD_DIR (its kvfit-uninstalled.pc, whose
#                run path lets the test binary find the library): go vet,
#                then go test -race on the whole suite;
#   installed:   `cmake --install` into a fresh prefix and PKG_CONFIG_PATH at
#                its lib/pkgconfig: go build, go vet, and the test binary,
#                which must load the installed library, run on the loader's
#                path (LD_LIBRARY_PATH, as for any library outside /usr).
# Exits 77 (ctest's skip) without go, and, after everything passed, when the
# default model is missing (the tests that generate then only said so).
#   go.sh BUILD_DIR CMAKE REPO MODEL   (KVFIT_MODEL overrides MODEL)
set -u
build="$1" cmake="$2" repo="$3"
export KVFIT_MODEL="${KVFIT_MODEL:-$4}"
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v go >/dev/null 2>&1 || skip "go not found (apt-get install golang-go)"
unset LD_LIBRARY_PATH KVFIT_LIB_DIR GOFLAGS
export CGO_ENABLED=1 GOPROXY=off GOTOOLCHAIN=local
tmp=$(mktemp -d) || fail "mktemp"
trap 'rm -rf "$tmp"' EXIT
[ -n "${HOME:-}" ] || export GOPATH="$tmp/go-path"
cd "$repo/bindings/go" || fail "cd bindings/go"

# Go's build cache keys a cgo package by its #cgo lines and CGO_* variables,
# not by what pkg-config answers, so a cached package built against another
# libkvfit would be reused with that library's flags. Each part below has a
# build cache of its own: one kept in the build tree for the build tree, a
# fresh one for the installed prefix.
export GOCACHE="$build/bindings/install-go/go-cache"
mkdir -p "$GOCACHE" || fail "mkdir $GOCACHE"

# The build tree.
export PKG_CONFIG_PATH="$build"
go vet ./... || fail "go vet (build tree)"
start=$(date +%s)
# -count=1: the Go test cache does not know when libkvfit changes.
go test -race -count=1 ./... || fail "go test -race (build tree)"
echo "go test -race against the build tree took $(($(date +%s) - start)) s"

# An installed prefix.
prefix="$tmp/prefix"
export GOCACHE="$tmp/go-cache"
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; fail "cmake --install"; }
pc=$(find "$prefix" -name kvfit.pc) && [ -n "$pc" ] || fail "no kvfit.pc installed"
PKG_CONFIG_PATH=$(dirname "$pc")
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir kvfit) || fail "pkg-config kvfit (installed)"
go build ./... || fail "go build (installed)"
go vet ./... || fail "go vet (installed)"
go test -c -o "$tmp/kvfit.test" . || fail "go test -c (installed)"
LD_LIBRARY_PATH="$libdir" ldd "$tmp/kvfit.test" | grep -q "libkvfit.so.0 => $libdir/" \
    || { LD_LIBRARY_PATH="$libdir" ldd "$tmp/kvfit.test"; fail "the test binary does not load $libdir/libkvfit.so.0"; }
LD_LIBRARY_PATH="$libdir" "$tmp/kvfit.test" -test.count=1 || fail "go tests against the installed library"
echo "go module ok: vet and race-tested against the build tree, built, vetted and tested against $prefix"

[ -f "$KVFIT_MODEL" ] || skip "the tests that generate: default model $KVFIT_MODEL not found (make models); the others passed"
