#!/bin/sh
# ctest fixture: converts rwkv.cpp's tiny trained RWKV-7 (shared test data)
# to GGUF with tools/rwkv-to-gguf.py, for test_model_rwkv7 and the peer test.
#   make_rwkv_model.sh OUT_DIR DATA_DIR
# Exits 77 (skipped) without the gguf/numpy Python packages or the data.
set -e
OUT=$1
DATA=${KVFIT_TEST_DATA:-$2}
SRC="$DATA/rwkv/tiny-rwkv-7v0-834K-FP32.bin"
if ! python3 -c "import gguf, numpy" 2>/dev/null; then
    echo "skipped: the gguf and numpy Python packages are not installed (make deps installs them)"
    exit 77
fi
if [ ! -f "$SRC" ]; then
    echo "skipped: $SRC is not in the shared test data"
    exit 77
fi
mkdir -p "$OUT"
python3 "$(dirname "$0")/../tools/rwkv-to-gguf.py" "$SRC" -o "$OUT/tiny-rwkv7-834K.gguf.tmp" --name tiny-rwkv-7v0-834K
mv "$OUT/tiny-rwkv7-834K.gguf.tmp" "$OUT/tiny-rwkv7-834K.gguf"
echo "wrote $OUT/tiny-rwkv7-834K.gguf"
