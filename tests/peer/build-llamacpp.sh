#!/bin/sh
# Builds llama.cpp's own command-line tools (llama-bench, llama-perplexity,
# llama-completion) from the llama.cpp source inside the pinned
# llama-cpp-python sdist, so speed and perplexity comparisons use llama.cpp's
# own tools, built the same way on every machine.
#
#   tests/peer/build-llamacpp.sh [DIR]        # default DIR: build-llamacpp
#
# The tools land in DIR/bin. Environment:
#   LLAMACPP_FLAGS   extra CMake options (default: a native CPU build)
#   LLAMACPP_CUDA=1  a CUDA build for the GPU present (nvcc on PATH)
#   JOBS             parallel compile jobs (default: all cores)
# A native build on a CPU with AMX selects llama.cpp's AMX weight buffers by
# default, which crashed on such a VM: run llama-bench with --repack 0 there.
set -e
VERSION=0.3.36
DIR=${1:-build-llamacpp}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$DIR/src"
DIR=$(cd "$DIR" && pwd)
SRC="$DIR/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    python3 -m pip download --quiet --no-binary :all: --no-deps --dest "$DIR/src" "llama-cpp-python==$VERSION"
    tar xzf "$DIR/src/llama_cpp_python-$VERSION.tar.gz" -C "$DIR/src"
fi
FLAGS=${LLAMACPP_FLAGS:-"-DGGML_NATIVE=ON"}
if [ "${LLAMACPP_CUDA:-0}" = 1 ]; then
    FLAGS="$FLAGS -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=native"
fi
# shellcheck disable=SC2086
cmake -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF $FLAGS >/dev/null
cmake --build "$DIR/build" -j "$JOBS" --target llama-bench llama-perplexity llama-completion >/dev/null
mkdir -p "$DIR/bin"
for t in llama-bench llama-perplexity llama-completion; do
    cp "$DIR/build/bin/$t" "$DIR/bin/"
done
echo "llama.cpp tools in $DIR/bin"
