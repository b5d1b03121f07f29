#!/bin/sh
# The Python package's install routes from this checkout, each into a fresh
# virtual environment holding nothing else, then the README's Python example
# run there against the default model with no environment pointing at a
# library: `import kvfit` must load the libkvfit.so.0 the package bundles.
#   pip:   pip install ./bindings/python (the CMake build folder is kept in
#          WORK, so a second run only rebuilds what changed)
#   wheel: python3 -m build (an sdist, then a wheel built from that sdist
#          alone), the wheel installed with pip --no-index
# The build backend (scikit-build-core) and `build` come from PyPI through a
# pip cache in WORK; exits 77 (ctest's skip) when pip cannot reach PyPI, when
# python3 cannot make a virtual environment, and, after everything else
# passed, when the default model is missing.
#   python.sh pip|wheel WORK REPO MODEL   (KVFIT_MODEL overrides MODEL)
set -u
mode="$1" work="$2" repo="$3"
model="${KVFIT_MODEL:-$4}"
skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
show_fail() { cat "$1"; shift; fail "$*"; }

command -v python3 >/dev/null 2>&1 || skip "python3 not found"
# Nothing may point at another libkvfit or at the source tree.
unset KVFIT_LIB KVFIT_LIB_DIR LD_LIBRARY_PATH PYTHONPATH PYTHONHOME PKG_CONFIG_PATH
export PIP_CACHE_DIR="$work/pip-cache" PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
dir="$work/$mode"
mkdir -p "$dir" || fail "mkdir $dir"
log="$dir/log.txt"
: >"$log"

fresh_venv() {
    rm -rf "$1"
    python3 -m venv "$1" >>"$log" 2>&1 || { cat "$log"; skip "python3 -m venv failed (apt-get install python3-venv)"; }
}

venv="$dir/venv"
fresh_venv "$venv"
rm -rf "$dir/probe"
"$venv/bin/python" -m pip download --no-deps --dest "$dir/probe" --timeout 15 --retries 1 scikit-build-core \
    >>"$log" 2>&1 || { cat "$log"; skip "pip cannot reach PyPI (scikit-build-core, the build backend, comes from there)"; }

start=$(date +%s)
case "$mode" in
pip)
    "$venv/bin/python" -m pip install -v --config-settings=build-dir="$dir/cmake-build" "$repo/bindings/python" \
        >>"$log" 2>&1 || show_fail "$log" "pip install ./bindings/python"
    ;;
wheel)
    tools="$dir/tools"
    [ -x "$tools/bin/python" ] || fresh_venv "$tools"
    "$tools/bin/python" -m pip install build >>"$log" 2>&1 || show_fail "$log" "pip install build"
    rm -rf "$dir/dist"
    "$tools/bin/python" -m build --outdir "$dir/dist" "$repo/bindings/python" >>"$log" 2>&1 \
        || show_fail "$log" "python3 -m build bindings/python"
    set -- "$dir"/dist/kvfit-*.tar.gz
    [ -f "$1" ] || show_fail "$log" "no sdist in $dir/dist"
    set -- "$dir"/dist/kvfit-*.whl
    [ "$#" -eq 1 ] && [ -f "$1" ] || show_fail "$log" "expected one wheel in $dir/dist"
    whl="$1"
    "$tools/bin/python" -m zipfile -l "$whl" | grep -q 'kvfit/libkvfit\.so\.0 ' || fail "$whl holds no kvfit/libkvfit.so.0"
    "$venv/bin/python" -m pip install --no-index "$whl" >>"$log" 2>&1 || show_fail "$log" "pip install $whl"
    ;;
*)
    fail "unknown mode '$mode'"
    ;;
esac
echo "$mode install took $(($(date +%s) - start)) s"
grep -E '(CUDA|Vulkan) backend:' "$log" | sed 's/^ *//' | sort -u

# Run from a folder without the package sources, isolated from the user's site.
cd "$dir" || fail "cd $dir"
loaded=$("$venv/bin/python" -I -c 'import kvfit._ffi as f; print(f.lib._name)') || fail "import kvfit"
case "$loaded" in
"$venv"/*/kvfit/libkvfit.so.0) echo "import kvfit loads the bundled $loaded" ;;
*) fail "import kvfit loaded $loaded, not the library bundled in $venv" ;;
esac
# KVFIT_LIB_DIR still wins over the bundled library.
KVFIT_LIB_DIR="$dir/no-such-folder" "$venv/bin/python" -I -c 'import kvfit' >"$dir/override.txt" 2>&1 \
    && fail "import kvfit ignored KVFIT_LIB_DIR"
grep -q "no-such-folder/libkvfit.so.0" "$dir/override.txt" || show_fail "$dir/override.txt" "KVFIT_LIB_DIR not tried"

[ -f "$model" ] || skip "the README example: default model $model not found (make models); the $mode install passed"
# The README's Python example, as printed there, on the default model.
awk '/^Python \(`bindings\/python`/ { found = 1 } found && /^```python/ { code = 1; next }
     code && /^```/ { exit } code { print }' "$repo/README.md" >"$dir/example.py"
grep -q 'models/SmolLM2-135M-Instruct.Q4_1.gguf' "$dir/example.py" || show_fail "$dir/example.py" "README's Python example not found"
ln -sfn "$(dirname "$model")" "$dir/models"
[ "$(basename "$model")" = SmolLM2-135M-Instruct.Q4_1.gguf ] \
    || sed -i "s|models/SmolLM2-135M-Instruct.Q4_1.gguf|models/$(basename "$model")|" "$dir/example.py"
"$venv/bin/python" -I "$dir/example.py" >"$dir/reply.txt" 2>&1 || show_fail "$dir/reply.txt" "the README example failed"
grep -q '[^[:space:]]' "$dir/reply.txt" || fail "the README example printed nothing"
echo "README example ($mode install) said: $(tr '\n' ' ' <"$dir/reply.txt")"
