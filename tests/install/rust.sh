#!/bin/sh
# The Rust crate from a fresh checkout: `cargo test` in bindings/rust with no
# KVFIT_LIB_DIR, no PKG_CONFIG_PATH and no LD_LIBRARY_PATH, in its own
# CARGO_TARGET_DIR (WORK/target), so build.rs must build libkvfit with the
# project's CMake into its OUT_DIR and the test binaries must run against that
# library through their run path. Also checks that KVFIT_SYSTEM=1 and the
# feature `system` do not build. Exits 77 (ctest's skip) without cargo, when
# an installed kvfit is on pkg-config's path (build.rs would rightly link that
# one instead), and, after the tests passed, when the default model is
# missing (the tests that generate then only said so).
#   rust.sh WORK REPO MODEL   (KVFIT_MODEL overrides MODEL)
set -u
work="$1" repo="$2"
export KVFIT_MODEL="${KVFIT_MODEL:-$3}"
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

# rustup installs into ~/.cargo/bin, which non-login shells may not have on PATH.
[ -n "${HOME:-}" ] && [ -d "$HOME/.cargo/bin" ] && PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null 2>&1 || skip "cargo not found (install Rust, e.g. with rustup)"
unset KVFIT_LIB_DIR KVFIT_SYSTEM LD_LIBRARY_PATH PKG_CONFIG_PATH CARGO_BUILD_TARGET
pkg-config --exists kvfit 2>/dev/null \
    && skip "pkg-config finds an installed kvfit ($(pkg-config --variable=libdir kvfit)), which build.rs uses instead of building"
export CARGO_TARGET_DIR="$work/target"
mkdir -p "$work" || fail "mkdir $work"
cd "$repo/bindings/rust" || fail "cd bindings/rust"

# KVFIT_SYSTEM=1: only an installed library, never a build from the checkout.
KVFIT_SYSTEM=1 cargo build --offline -vv >"$work/system.log" 2>&1 || { cat "$work/system.log"; fail "KVFIT_SYSTEM=1 cargo build"; }
grep -q 'neither KVFIT_LIB_DIR nor pkg-config found libkvfit' "$work/system.log" \
    || { cat "$work/system.log"; fail "KVFIT_SYSTEM=1 did not report the missing system library"; }
grep -q 'cmake-configure.log\|kvfit-build' "$work/system.log" && { cat "$work/system.log"; fail "KVFIT_SYSTEM=1 built the library"; }
# The crate feature `system` does the same.
cargo build --offline -vv --features system >"$work/system.log" 2>&1 || { cat "$work/system.log"; fail "cargo build --features system"; }
grep -q 'neither KVFIT_LIB_DIR nor pkg-config found libkvfit' "$work/system.log" \
    || { cat "$work/system.log"; fail "--features system did not report the missing system library"; }
grep -q 'cmake-configure.log\|kvfit-build' "$work/system.log" && { cat "$work/system.log"; fail "--features system built the library"; }

start=$(date +%s)
cargo test --offline -- --test-threads=2 >"$work/test.log" 2>&1 || { cat "$work/test.log"; fail "cargo test"; }
echo "cargo test (library built by build.rs) took $(($(date +%s) - start)) s"
grep -h -E '(CUDA|Vulkan) backend:' "$CARGO_TARGET_DIR"/debug/build/kvfit-*/out/cmake-configure.log | sed 's/^ *//' | sort -u
grep -E '^test result' "$work/test.log"

# The test binaries load the library build.rs built, found through their rpath.
n=0
for bin in "$CARGO_TARGET_DIR"/debug/deps/generate-* "$CARGO_TARGET_DIR"/debug/deps/kvfit-*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    case "$bin" in *.d | *.so | *.rlib | *.rmeta) continue ;; esac
    ldd "$bin" | grep -q "libkvfit.so.0 => $CARGO_TARGET_DIR/debug/build/kvfit-[^/]*/out/kvfit-build/libkvfit.so.0" \
        || { ldd "$bin"; fail "$bin does not load the libkvfit that build.rs built"; }
    n=$((n + 1))
done
[ "$n" -gt 0 ] || fail "no test binaries found under $CARGO_TARGET_DIR/debug/deps"
echo "$n test binaries load the library built from this checkout"

[ -f "$KVFIT_MODEL" ] || skip "the tests that generate: default model $KVFIT_MODEL not found (make models); the others passed"
