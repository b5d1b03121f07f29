#!/bin/sh
# The shared library exports the C ABI and nothing else, under the ABI-major SONAME.
set -e
lib="$1"
bad=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | grep -v '^kvfit_' || true)
if [ -n "$bad" ]; then
    echo "symbols exported besides kvfit_*:"; echo "$bad"; exit 1
fi
n=$(nm -D --defined-only "$lib" | awk '$2 == "T"' | grep -c '^.* kvfit_' || true)
[ "$n" -ge 30 ] || { echo "only $n kvfit_ functions exported"; exit 1; }
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
case "$soname" in
    libkvfit.so.[0-9]*) ;;
    *) echo "unexpected SONAME '$soname'"; exit 1 ;;
esac
echo "exports ok: $n kvfit_ functions exported, nothing else; SONAME $soname"
