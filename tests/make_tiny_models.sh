#!/bin/sh
# ctest fixture: writes the tiny random-weight models the peer and backend
# tests compare with llama.cpp's recorded results (tools/make-tiny-model.py;
# a seed gives the same bytes, and the tests check their sha256).
#   make_tiny_models.sh OUT_DIR VOCAB_DIR
# Exits 77 (skipped) without the gguf/numpy Python packages or the vocabularies.
set -e
OUT=$1
VOCAB=${KVFIT_TEST_DATA:+$KVFIT_TEST_DATA/vocab}
VOCAB=${VOCAB:-$2}
GEN="$(dirname "$0")/../tools/make-tiny-model.py"
if ! python3 -c "import gguf, numpy" 2>/dev/null; then
    echo "skipped: the gguf and numpy Python packages are not installed (make deps installs them)"
    exit 77
fi
if [ ! -f "$VOCAB/ggml-vocab-llama-spm.gguf" ] || [ ! -f "$VOCAB/ggml-vocab-gpt-2.gguf" ]; then
    echo "skipped: the vocabularies are not in $VOCAB"
    exit 77
fi
mkdir -p "$OUT"
python3 "$GEN" gemma3 --vocab "$VOCAB/ggml-vocab-llama-spm.gguf" -o "$OUT/tiny-gemma3.gguf"
python3 "$GEN" gemma3 --window 100 --vocab "$VOCAB/ggml-vocab-llama-spm.gguf" -o "$OUT/tiny-gemma3-w100.gguf"
python3 "$GEN" qwen2 --vocab "$VOCAB/ggml-vocab-gpt-2.gguf" -o "$OUT/tiny-qwen2.gguf"
python3 "$GEN" qwen3 --vocab "$VOCAB/ggml-vocab-gpt-2.gguf" -o "$OUT/tiny-qwen3.gguf"
python3 "$GEN" qwen35 --vocab "$VOCAB/ggml-vocab-gpt-2.gguf" -o "$OUT/tiny-qwen35.gguf"
echo "tiny models in $OUT"
