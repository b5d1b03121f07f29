#!/bin/sh
# The Debian package `make package` makes (CPack), installed for real with
# dpkg -i: tests/install/consumer.c built against the system's kvfit alone,
# with pkg-config and with find_package(kvfit) (no PKG_CONFIG_PATH, no
# CMAKE_PREFIX_PATH, no rpath), runs a chat turn on the default model; the Go
# module (when go is there) builds and vets against it through
# `#cgo pkg-config: kvfit`. Then dpkg -r and --purge remove it and the files are checked
# gone, leaving the machine as it was. Exits 77 (ctest's skip) when not root,
# without dpkg or cpack, when a kvfit package or a file it would install is
# already there (it must not be replaced), and, after the rest passed, when
# the default model is missing.
#   deb.sh BUILD_DIR C_COMPILER CMAKE MODEL   (KVFIT_MODEL overrides MODEL)
set -u
build="$1" cc="$2" cmake="$3"
model="${KVFIT_MODEL:-$4}"
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "not root (dpkg -i needs it)"
command -v dpkg >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 || skip "dpkg not found (not a Debian system)"
cpack="$(dirname "$cmake")/cpack"
[ -x "$cpack" ] || cpack=$(command -v cpack) || skip "cpack not found"
# dpkg knows a kvfit package in any state but "not-installed"
pkg_known() {
    st=$(dpkg-query -W -f '${Status}' kvfit 2>/dev/null) || return 1
    case "$st" in "" | *" not-installed") return 1 ;; *) return 0 ;; esac
}
if pkg_known; then
    skip "a kvfit package is already installed; it is left alone"
fi

tmp=$(mktemp -d) || fail "mktemp"
installed=0
cleanup() {
    if [ "$installed" -eq 1 ]; then
        dpkg -r kvfit >"$tmp/remove.log" 2>&1 && dpkg --purge kvfit >>"$tmp/remove.log" 2>&1 \
            || { cat "$tmp/remove.log"; echo "FAIL: removing the kvfit package"; }
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
unset LD_LIBRARY_PATH PKG_CONFIG_PATH CMAKE_PREFIX_PATH KVFIT_LIB_DIR

# What `make package` runs, into a scratch folder.
(cd "$tmp" && "$cpack" --config "$build/CPackConfig.cmake" -G DEB -B "$tmp/pkg") >"$tmp/cpack.log" 2>&1 \
    || { cat "$tmp/cpack.log"; fail "cpack -G DEB"; }
set -- "$tmp"/pkg/kvfit_*.deb
[ "$#" -eq 1 ] && [ -f "$1" ] || { cat "$tmp/cpack.log"; fail "expected one kvfit_*.deb"; }
deb="$1"
echo "package: $(basename "$deb"), depends: $(dpkg-deb -f "$deb" Depends)"
dpkg-deb -c "$deb" | awk '{ print $6 }' | sed 's|^\./|/|' | grep -v '/$' >"$tmp/files"
for f in /include/kvfit.h /libkvfit.so.0 /libkvfit.so /pkgconfig/kvfit.pc /cmake/kvfit/kvfitConfig.cmake; do
    grep -q "^/usr.*$f\$" "$tmp/files" || { cat "$tmp/files"; fail "the package lacks $f"; }
done
grep -q '\.a$' "$tmp/files" && fail "the package holds a static library"
while read -r f; do
    [ -e "$f" ] || [ -L "$f" ] && skip "$f already exists; installing the package would replace it"
done <"$tmp/files"

dpkg -i "$deb" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; installed=1; fail "dpkg -i"; }
installed=1
lib=$(grep '/libkvfit\.so\.0$' "$tmp/files")

# (the loader may name it through /lib when /lib links to /usr/lib)
check_loads_system() {
    got=$(ldd "$1" | awk '$1 == "libkvfit.so.0" { print $3 }')
    [ -n "$got" ] && [ "$(readlink -f "$got")" = "$(readlink -f "$lib")" ] || { ldd "$1"; fail "$1 does not load $lib"; }
}
run_consumer() {
    if [ -f "$model" ]; then
        "$1" "$model" || fail "$1 failed a chat turn"
    else
        "$1" || fail "$1 failed"
    fi
}
mkdir "$tmp/src" && cp "$here/consumer.c" "$here/CMakeLists.txt" "$tmp/src/" || fail "copying the consumer"

# pkg-config, on its default path only
pkg-config --exists kvfit || fail "pkg-config does not find the installed kvfit"
# shellcheck disable=SC2046 # pkg-config prints separate words
"$cc" -o "$tmp/consumer-pc" "$tmp/src/consumer.c" $(pkg-config --cflags --libs kvfit) || fail "building with pkg-config"
check_loads_system "$tmp/consumer-pc"
run_consumer "$tmp/consumer-pc"

# find_package(kvfit), on CMake's default search path only
"$cmake" -S "$tmp/src" -B "$tmp/cmake-build" -DCMAKE_C_COMPILER="$cc" >"$tmp/cmake.log" 2>&1 \
    || { cat "$tmp/cmake.log"; fail "configuring with find_package(kvfit)"; }
"$cmake" --build "$tmp/cmake-build" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; fail "building with CMake"; }
check_loads_system "$tmp/cmake-build/kvfit-consumer"
run_consumer "$tmp/cmake-build/kvfit-consumer"

# The Go module against the installed kvfit.
if command -v go >/dev/null 2>&1; then
    export CGO_ENABLED=1 GOPROXY=off GOTOOLCHAIN=local
    # A build cache of its own: Go's would keep the package built against
    # this soon removed library and reuse it for other pkg-config answers.
    export GOCACHE="$tmp/go-cache"
    [ -n "${HOME:-}" ] || export GOPATH="$tmp/go-path"
    (cd "$repo/bindings/go" && go build ./... && go vet ./... && go test -c -o "$tmp/kvfit-go.test" .) \
        || fail "the Go module against the installed kvfit"
    check_loads_system "$tmp/kvfit-go.test"
    echo "go build and go vet ok against the installed kvfit"
else
    echo "go not found: the Go module was not built against the package"
fi

dpkg -r kvfit >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log"; fail "dpkg -r kvfit"; }
# dpkg -r keeps the package's maintainer scripts (state "config-files") for a
# later purge; purging drops that record too.
dpkg --purge kvfit >"$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log"; fail "dpkg --purge kvfit"; }
installed=0
while read -r f; do
    [ -e "$f" ] || [ -L "$f" ] && fail "$f is still there after dpkg -r"
done <"$tmp/files"
pkg_known && fail "dpkg still lists kvfit after dpkg -r"
echo "package removed; none of its files are left"

if [ -f "$model" ]; then
    echo "deb ok: pkg-config and find_package consumers ran a chat turn against the installed package"
else
    echo "deb ok: both consumers built and ran without a model"
    skip "the chat turn: default model $model not found (make models)"
fi
