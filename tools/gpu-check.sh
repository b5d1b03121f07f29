#!/bin/sh
# The GPU check in one command, for a machine with one NVIDIA GPU and no
# network that receives only this checkout (and gpu-check-data/, which
# --prepare fills on a machine with network).
#
#   tools/gpu-check.sh --prepare    # here: fill gpu-check-data/ (git-ignored), print the size to carry
#   tools/gpu-check.sh              # there: build, test, benchmark; writes gpu-check-out/summary.md
#
# The run configures kvfit with CUDA for the GPU's own architecture only
# (nvidia-smi's compute capability), with Vulkan too where glslc and the
# Vulkan headers and loader are there; runs the gpu-labelled tests (the CUDA
# op and model tests, the Vulkan tests) on the GPU; writes the benchmark model
# (tools/make-bench-model.py: SmolLM2-135M's shapes, random Q4_1 weights);
# builds llama.cpp's llama-bench with CUDA for the same architecture (from the
# pruned sources of the pinned llama-cpp-python sdist, in the background while
# kvfit builds and tests); then benchmarks kvfit on CUDA and on Vulkan and
# llama-bench on CUDA on that model: prefill 512 and 4096 tokens, decode 128
# tokens at depth 1K and 32K, and kvfit's decode under an 8 MiB KV budget at
# stream positions 1K, 10K and 100K. Every stage is timed and recorded in the
# summary whatever the others did; a stage that fails does not stop the run.
# The exit status is 0 when every stage passed, 1 otherwise.
#
# Environment: GPU_CHECK_OUT (default gpu-check-out), GPU_CHECK_DEADLINE
# (seconds, default 450: stages not started by then are skipped), JOBS
# (default: all cores), and for --prepare KVFIT_TEST_DATA (default
# ../shared/data) and LLAMACPP_SDIST (a downloaded llama_cpp_python-0.3.36.tar.gz).
# GPU_CHECK_REHEARSE=1 rehearses the run where there is no GPU: compute
# capability 9.0 assumed, kvfit built without CUDA, llama.cpp configured but
# not built; the CUDA stages then fail as they should.
# When $OUT is set the summary and the logs are copied there too.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=$ROOT/gpu-check-data
LLAMACPP_VERSION=0.3.36
LIMIT_MIB=64

# ---- --prepare ---------------------------------------------------------------

# What the llama-bench CUDA build needs of llama.cpp; everything else goes.
prune_llamacpp() { # $1: the llama.cpp source folder
    (
        cd "$1"
        rm -rf models docs examples tests pocs benches app scripts gguf-py grammars media conversion requirements \
            ci .devops .github skills convert_*.py flake.nix Makefile build-xcframework.sh
        for d in ggml/src/ggml-*/; do
            case $d in ggml/src/ggml-cpu/ | ggml/src/ggml-cuda/) ;; *) rm -rf "$d" ;; esac
        done
        for d in tools/*/; do
            [ "$d" = tools/llama-bench/ ] || rm -rf "$d"
        done
        # Only llama-bench among the tools (the other folders are gone).
        cat >tools/CMakeLists.txt <<'EOF'
# Pruned for kvfit's GPU check: only llama-bench is built from these sources.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
EOF
    )
}

prepare() {
    mkdir -p "$DATA/data/models" "$DATA/tiny"
    shared=${KVFIT_TEST_DATA:-$ROOT/../shared/data}
    # The correctness tests' data: stories260K (test_model_cuda) and the tiny
    # Gemma 3 models test_model_vulkan_archs reads (written here: the GPU
    # machine may lack the gguf and numpy packages the generator needs).
    cp "$shared/models/stories260K.gguf" "$DATA/data/models/"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    if ! sh "$ROOT/tests/make_tiny_models.sh" "$tmp/tiny" "$shared/vocab"; then
        echo "gpu-check --prepare: the tiny models need the gguf and numpy Python packages and $shared/vocab" >&2
        exit 1
    fi
    cp "$tmp/tiny/tiny-gemma3.gguf" "$tmp/tiny/tiny-gemma3-w100.gguf" "$DATA/tiny/"

    # llama.cpp from the pinned sdist, pruned, as a tar.gz.
    # (the download tests/peer/build-llamacpp.sh made, if there is one)
    sdist=${LLAMACPP_SDIST:-$ROOT/build-llamacpp/src/llama_cpp_python-$LLAMACPP_VERSION.tar.gz}
    if [ ! -f "$sdist" ]; then
        python3 -m pip download --quiet --no-binary :all: --no-deps --dest "$tmp" "llama-cpp-python==$LLAMACPP_VERSION"
        sdist=$tmp/llama_cpp_python-$LLAMACPP_VERSION.tar.gz
    fi
    tar xzf "$sdist" -C "$tmp" "llama_cpp_python-$LLAMACPP_VERSION/vendor/llama.cpp"
    mv "$tmp/llama_cpp_python-$LLAMACPP_VERSION/vendor/llama.cpp" "$tmp/llama.cpp"
    prune_llamacpp "$tmp/llama.cpp"
    echo "llama-cpp-python $LLAMACPP_VERSION (vendor/llama.cpp), pruned for the CUDA llama-bench build" \
        >"$tmp/llama.cpp/PRUNED.txt"
    tar czf "$DATA/llama.cpp.tar.gz" -C "$tmp" llama.cpp
    src_mib=$(du -sm "$tmp/llama.cpp" | cut -f1)

    # Debian packages of the two libraries the build needs besides a compiler,
    # CMake and CUDA (PCRE2; cmocka for the tests), unpacked there only if that
    # machine lacks them. Best effort: apt-get download needs this machine's
    # package lists.
    mkdir -p "$DATA/debs"
    (cd "$DATA/debs" && apt-get download libpcre2-dev libpcre2-8-0 libcmocka-dev libcmocka0 >/dev/null 2>&1) ||
        echo "note: apt-get download failed; gpu-check-data/debs/ is empty"

    # The total a run carries: the tracked files and this folder.
    tracked=$(cd "$ROOT" && git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    data=$(du -sb "$DATA" | cut -f1)
    total=$((tracked + data))
    echo "gpu-check-data/: $(du -sh "$DATA" | cut -f1) (llama.cpp sources: ${src_mib} MiB unpacked," \
        "$(du -h "$DATA/llama.cpp.tar.gz" | cut -f1) packed)"
    awk -v t="$tracked" -v d="$data" -v l=$LIMIT_MIB 'BEGIN {
        printf "to carry: %.1f MiB (tracked files %.1f MiB + gpu-check-data/ %.1f MiB; limit %d MiB)\n",
            (t + d) / 1048576, t / 1048576, d / 1048576, l }'
    if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
        echo "gpu-check: over the $LIMIT_MIB MiB a GPU machine receives" >&2
        exit 1
    fi
}

if [ "${1:-}" = --prepare ]; then
    prepare
    exit 0
elif [ $# -gt 0 ]; then
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi

# ---- the run -----------------------------------------------------------------

OUTD=${GPU_CHECK_OUT:-$ROOT/gpu-check-out}
DEADLINE=${GPU_CHECK_DEADLINE:-450}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUTD/logs"
OUTD=$(cd "$OUTD" && pwd)
RESULTS=$OUTD/stages.txt
SUMMARY=$OUTD/summary.md
: >"$RESULTS"
T0=$(date +%s)
FAILED=0

elapsed() { echo $(($(date +%s) - T0)); }

# stage NAME TIMEOUT_S COMMAND...: runs the command with its output in
# logs/NAME.log, records "NAME|passed or failed (status)|seconds".
stage() {
    name=$1 limit=$2
    shift 2
    if [ "$(elapsed)" -ge "$DEADLINE" ]; then
        echo "$name|skipped (past the ${DEADLINE} s deadline)|0" >>"$RESULTS"
        FAILED=1
        return 0
    fi
    echo "[$(elapsed) s] $name" >&2
    s=$(date +%s)
    if timeout "$limit" "$@" >"$OUTD/logs/$name.log" 2>&1; then rc=0; else rc=$?; fi
    dt=$(($(date +%s) - s))
    if [ $rc = 0 ]; then
        echo "$name|passed|$dt" >>"$RESULTS"
    else
        [ $rc = 124 ] && what="timed out after $limit s" || what="failed (exit $rc)"
        echo "$name|$what|$dt" >>"$RESULTS"
        FAILED=1
    fi
    return 0
}

skip() { # NAME REASON
    echo "$1|skipped ($2)|0" >>"$RESULTS"
    FAILED=1
}

fail() { # NAME REASON: a failed check, then the summary and exit status 1
    echo "$1|failed ($2)|0" >>"$RESULTS"
    write_summary
    echo "gpu-check: $2; summary in $SUMMARY" >&2
    exit 1
}

write_summary() {
    {
        echo "# kvfit GPU check"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), total $(elapsed) s"
        echo "- kvfit: $(git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null || echo '(not a git checkout)')"
        echo "- GPU: ${GPU_NAME:-none}, compute capability ${CC:-?}, driver ${DRIVER:-?}"
        echo "- CUDA: $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' || true)," \
            "CPU: $(nproc) cores, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)"
        echo "- Vulkan backend: ${VULKAN_NOTE:-?}"
        echo "- llama.cpp: llama-cpp-python $LLAMACPP_VERSION's vendor/llama.cpp, CUDA, architecture ${ARCH:-?}"
        echo
        echo "## Stages"
        echo
        echo "| stage | result | seconds |"
        echo "|---|---|---:|"
        awk -F'|' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$RESULTS"
        if [ -f "$OUTD/logs/tests-gpu.log" ]; then
            echo
            echo "## Tests (ctest -L gpu)"
            echo
            echo '```'
            grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|tests failed|Skipped|\*\*\*' "$OUTD/logs/tests-gpu.log" | head -40 || true
            echo '```'
        fi
        for f in bench-kvfit-cuda bench-kvfit-vulkan bench-llamacpp-cuda-prefill bench-llamacpp-cuda-decode \
            bench-kvfit-cuda-budget bench-kvfit-vulkan-budget; do
            [ -f "$OUTD/logs/$f.log" ] || continue
            echo
            echo "## $f"
            echo
            sed -n '1s/^/    /p' "$OUTD/logs/$f.cmd" 2>/dev/null || true
            echo
            grep -E '^\||^model:|^devices:|^plan:|^kvfit-bench:|error|Error' "$OUTD/logs/$f.log" | head -30 || true
        done
        if [ -f "$OUTD/logs/bench-kvfit-cuda.log" ] && [ -f "$OUTD/logs/bench-llamacpp-cuda-decode.log" ]; then
            echo
            echo "## kvfit CUDA against llama.cpp CUDA (same model, tok/s)"
            echo
            echo "| test | kvfit | llama.cpp | kvfit / llama.cpp |"
            echo "|---|---:|---:|---:|"
            awk -F'|' '
                FILENAME ~ /kvfit/ && $2 ~ /^ *[0-9]+ *$/ { p = $2 + 0; pre["pp" p] = $3 + 0; dec["tg128 @ d" p] = $4 + 0 }
                FILENAME ~ /llamacpp/ && NF > 4 { t = $(NF - 2); gsub(/^ +| +$/, "", t); v = $(NF - 1) + 0; if (v > 0) ll[t] = v }
                END {
                    split("pp512,pp4096,tg128 @ d1024,tg128 @ d32768", keys, ",")
                    for (i = 1; i <= 4; i++) {
                        k = keys[i]; kv = (k in pre) ? pre[k] : ((k in dec) ? dec[k] : 0)
                        l = (k in ll) ? ll[k] : 0
                        printf "| %s | %s | %s | %s |\n", k, kv ? sprintf("%.1f", kv) : "-", l ? sprintf("%.1f", l) : "-",
                               (kv && l) ? sprintf("%.2f", kv / l) : "-"
                    }
                }' "$OUTD/logs/bench-kvfit-cuda.log" "$OUTD/logs/bench-llamacpp-cuda-prefill.log" \
                "$OUTD/logs/bench-llamacpp-cuda-decode.log"
        fi
        echo
        echo "Logs: logs/ beside this file."
    } >"$SUMMARY"
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT/gpu-check"
        cp -r "$SUMMARY" "$RESULTS" "$OUTD/logs" "$OUT/gpu-check/"
    fi
}

# -- the GPU and the tools
if [ -x /usr/local/cuda/bin/nvcc ]; then PATH=$PATH:/usr/local/cuda/bin; fi
REHEARSE=${GPU_CHECK_REHEARSE:-0}
if [ "$REHEARSE" = 1 ]; then
    CC=9.0 GPU_NAME="none (a rehearsal: GPU_CHECK_REHEARSE=1)" DRIVER=none
else
    command -v nvidia-smi >/dev/null 2>&1 || fail gpu "no NVIDIA GPU here: nvidia-smi not found"
    CC=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ') || CC=
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1) || GPU_NAME=
    DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1) || DRIVER=
fi
case $CC in
    [0-9]*.[0-9]*) ARCH=$(echo "$CC" | tr -d .) ;;
    *) fail gpu "nvidia-smi lists no GPU with a compute capability" ;;
esac
missing=
for t in cmake c++ cc nvcc python3 pkg-config tar; do
    command -v $t >/dev/null 2>&1 || missing="$missing $t"
done
[ -z "$missing" ] || fail tools "missing tools:$missing"
GEN=
command -v ninja >/dev/null 2>&1 && GEN="-G Ninja"

# Libraries the machine lacks come from the Debian packages --prepare saved.
if ! pkg-config --exists libpcre2-8 cmocka && ls "$DATA"/debs/*.deb >/dev/null 2>&1; then
    SYSROOT=$OUTD/sysroot
    for d in "$DATA"/debs/*.deb; do dpkg-deb -x "$d" "$SYSROOT"; done
    pcdirs=$(find "$SYSROOT" -type d -name pkgconfig | tr '\n' ':')
    export PKG_CONFIG_PATH="$pcdirs${PKG_CONFIG_PATH:-}" PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
    libdirs=$(find "$SYSROOT" -name '*.so*' -exec dirname {} \; | sort -u | tr '\n' ':')
    export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:-}" LIBRARY_PATH="$libdirs${LIBRARY_PATH:-}"
    echo "libraries from gpu-check-data/debs unpacked in $SYSROOT" >"$OUTD/logs/sysroot.log"
fi
TESTS=ON
pkg-config --exists cmocka || TESTS=OFF

VULKAN=OFF
if command -v glslc >/dev/null 2>&1 && { [ -f /usr/include/vulkan/vulkan.h ] || [ -n "${VULKAN_SDK:-}" ]; } &&
    { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; }; then
    VULKAN=ON
    VULKAN_NOTE="built (glslc, Vulkan headers and loader found); ICDs: $(find /usr/share/vulkan/icd.d /etc/vulkan/icd.d -name '*.json' 2>/dev/null | tr '\n' ' ')"
else
    VULKAN_NOTE="not built (needs glslc, vulkan/vulkan.h and libvulkan.so.1)"
fi

# -- llama.cpp: configure, then build in the background
LLAMA_SRC=$OUTD/llama.cpp
LLAMA_BUILD=$OUTD/build-llamacpp
if [ -f "$DATA/llama.cpp.tar.gz" ]; then
    rm -rf "$LLAMA_SRC"
    tar xzf "$DATA/llama.cpp.tar.gz" -C "$OUTD"
    # shellcheck disable=SC2086
    stage llamacpp-configure 120 cmake -S "$LLAMA_SRC" -B "$LLAMA_BUILD" $GEN -DCMAKE_BUILD_TYPE=Release \
        -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_CUDA_NCCL=OFF -DGGML_CCACHE=OFF
else
    skip llamacpp-configure "gpu-check-data/llama.cpp.tar.gz missing: run tools/gpu-check.sh --prepare first"
fi
LLAMA_PID=
if [ "$REHEARSE" = 1 ]; then
    skip llamacpp-build "a rehearsal"
elif grep -q '^llamacpp-configure|passed' "$RESULTS"; then
    echo "[$(elapsed) s] llamacpp-build (background)" >&2
    LB_T0=$(date +%s)
    (cmake --build "$LLAMA_BUILD" -j "$JOBS" --target llama-bench >"$OUTD/logs/llamacpp-build.log" 2>&1
        echo $? >"$OUTD/logs/llamacpp-build.rc") &
    LLAMA_PID=$!
fi

# -- kvfit: configure and build for this GPU's architecture
KVFIT_BUILD=$OUTD/build-kvfit
# shellcheck disable=SC2086
stage kvfit-configure 120 cmake -S "$ROOT" -B "$KVFIT_BUILD" $GEN -DCMAKE_BUILD_TYPE=Release \
    -DKVFIT_CUDA="$([ "$REHEARSE" = 1 ] && echo OFF || echo ON)" -DCMAKE_CUDA_ARCHITECTURES="$ARCH-real" -DKVFIT_VULKAN=$VULKAN -DKVFIT_BUILD_TESTS=$TESTS \
    -DKVFIT_TEST_DATA_DEFAULT="$DATA/data"
if grep -q '^kvfit-configure|passed' "$RESULTS"; then
    grep -q 'CUDA backend: built' "$OUTD/logs/kvfit-configure.log" ||
        echo "kvfit-cuda-backend|failed (configure did not build the CUDA backend; see logs/kvfit-configure.log)|0" >>"$RESULTS"
    stage kvfit-build 400 cmake --build "$KVFIT_BUILD" -j "$JOBS"
else
    skip kvfit-build "configure failed"
fi
BENCH=$KVFIT_BUILD/tools/kvfit-bench

# -- the GPU tests (while llama.cpp compiles)
if [ "$TESTS" = OFF ]; then
    skip tests-gpu "cmocka not found: the tests were not built"
elif grep -q '^kvfit-build|passed' "$RESULTS"; then
    # The tiny models come from --prepare: -FA keeps ctest from running the
    # fixture that would write them (it needs numpy and gguf).
    # shellcheck disable=SC2016
    stage tests-gpu 300 env KVFIT_TEST_DATA="$DATA/data" KVFIT_TINY_DIR="$DATA/tiny" sh -c \
        'cd "$1" && exec ctest -L gpu -FA tiny_models --output-on-failure --timeout 240 -j 4' sh "$KVFIT_BUILD"
else
    skip tests-gpu "kvfit did not build"
fi

# -- the benchmark model
MODEL=$OUTD/bench-q4_1.gguf
stage bench-model 60 python3 "$ROOT/tools/make-bench-model.py" -o "$MODEL" --type q4_1

# -- llama.cpp's build must be done before the benchmarks, which want the CPU to themselves
if [ -n "$LLAMA_PID" ]; then
    left=$((DEADLINE + 60 - $(elapsed)))
    [ $left -lt 10 ] && left=10
    # wait for the build, at most until the deadline
    while kill -0 "$LLAMA_PID" 2>/dev/null && [ "$(elapsed)" -lt $((DEADLINE + 60)) ]; do sleep 2; done
    if kill -0 "$LLAMA_PID" 2>/dev/null; then
        kill "$LLAMA_PID" 2>/dev/null || true
        echo "llamacpp-build|timed out (past the deadline)|$(($(date +%s) - LB_T0))" >>"$RESULTS"
        FAILED=1
    elif [ "$(cat "$OUTD/logs/llamacpp-build.rc" 2>/dev/null)" = 0 ]; then
        echo "llamacpp-build|passed (in the background, beside the kvfit stages)|$(($(date +%s) - LB_T0))" >>"$RESULTS"
    else
        echo "llamacpp-build|failed (exit $(cat "$OUTD/logs/llamacpp-build.rc" 2>/dev/null))|$(($(date +%s) - LB_T0))" >>"$RESULTS"
        FAILED=1
    fi
fi

# -- benchmarks: prefill 512 / 4096, decode 128 tokens at depth 1K / 32K
# bench NAME TIMEOUT COMMAND...: a stage that also keeps its command line
bench() {
    n=$1
    shift
    echo "$*" | sed "s|$OUTD/||g; s|$ROOT/||g" >"$OUTD/logs/$n.cmd"
    stage "$@"
}
have_model=0
grep -q '^bench-model|passed' "$RESULTS" && have_model=1
if [ -x "$BENCH" ] && [ $have_model = 1 ]; then
    bench bench-kvfit-cuda bench-kvfit-cuda 150 env KVFIT_BACKEND=cuda "$BENCH" -m "$MODEL" -p 512,1024,4096,32768 -n 128 -r 3
else
    skip bench-kvfit-cuda "kvfit-bench or the model missing"
fi
LLAMA_BENCH=$LLAMA_BUILD/bin/llama-bench
if [ -x "$LLAMA_BENCH" ] && [ $have_model = 1 ]; then
    bench bench-llamacpp-cuda-prefill bench-llamacpp-cuda-prefill 120 "$LLAMA_BENCH" -m "$MODEL" -ngl 99 -p 512,4096 -n 0 -r 3 -o md
    bench bench-llamacpp-cuda-decode bench-llamacpp-cuda-decode 150 "$LLAMA_BENCH" -m "$MODEL" -ngl 99 -p 0 -n 128 -d 1024,32768 -r 3 -o md
else
    skip bench-llamacpp-cuda "llama-bench or the model missing"
fi
if [ -x "$BENCH" ] && [ $have_model = 1 ]; then
    bench bench-kvfit-cuda-budget bench-kvfit-cuda-budget 120 env KVFIT_BACKEND=cuda "$BENCH" -m "$MODEL" --budget 8MiB \
        --positions 1000,10000,100000 -n 128 -r 3
    if [ $VULKAN = ON ]; then
        bench bench-kvfit-vulkan bench-kvfit-vulkan 150 env KVFIT_BACKEND=vulkan "$BENCH" -m "$MODEL" -p 512,1024,4096,32768 -n 128 -r 3
        bench bench-kvfit-vulkan-budget bench-kvfit-vulkan-budget 120 env KVFIT_BACKEND=vulkan "$BENCH" -m "$MODEL" \
            --budget 8MiB --positions 1000,10000,100000 -n 128 -r 3
    else
        skip bench-kvfit-vulkan "$VULKAN_NOTE"
    fi
fi

write_summary
echo "[$(elapsed) s] summary: $SUMMARY" >&2
cat "$SUMMARY"
exit $FAILED
