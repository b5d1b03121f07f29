"""Shared helpers for the llama.cpp peer scripts (record_peer.py, bench_llamacpp.py).

Everything goes through llama-cpp-python's low-level ctypes API (llama_cpp.llama_cpp),
so the calls map one to one onto llama.cpp's C API (llama.h).
"""

import ctypes
import os
import re
import sys

import numpy as np

try:
    import llama_cpp
    from llama_cpp import llama_cpp as L
except ImportError:  # pragma: no cover
    sys.exit("llama-cpp-python is not installed: pip install -r tests/peer/requirements.txt")

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def shared_data_dir():
    """$KVFIT_TEST_DATA, or ../shared/data beside the checkout (same rule as tests/CMakeLists.txt)."""
    d = os.environ.get("KVFIT_TEST_DATA")
    if d:
        return d
    return os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data"))


def default_smollm2_path():
    return os.path.join(REPO_ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


def default_stories_path():
    return os.path.join(shared_data_dir(), "models", "stories260K.gguf")


# --------------------------------------------------------------------------- logging
# llama.cpp logs through a callback; we keep the text (to learn how "flash_attn = auto"
# was resolved) and only echo it when asked to.

_log_lines = []
_log_echo = False


@L.llama_log_callback
def _log_cb(level, text, user_data):  # noqa: ARG001
    s = text.decode("utf-8", errors="replace") if text else ""
    _log_lines.append(s)
    if _log_echo:
        sys.stderr.write(s)


def init_backend(verbose=False):
    global _log_echo
    _log_echo = verbose
    L.llama_log_set(_log_cb, ctypes.c_void_p(0))
    L.llama_backend_init()


def log_text():
    return "".join(_log_lines)


def clear_log():
    del _log_lines[:]


def flash_attn_resolved(log):
    """What llama.cpp did with flash_attn_type for the last context created (from its log)."""
    m = None
    for m in re.finditer(r"Flash Attention (enabled|disabled)", log, flags=re.IGNORECASE):
        pass
    return m.group(1).lower() if m else "unknown"


# --------------------------------------------------------------------------- versions

def versions():
    """(llama-cpp-python version, llama.cpp description)."""
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    parts = []
    try:
        fn = L._lib.llama_version
        fn.restype = ctypes.c_char_p
        fn.argtypes = []
        parts.append("libllama " + fn().decode())
    except (AttributeError, OSError):
        pass
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        p = os.path.join(lib_dir, name)
        if not os.path.exists(p):
            continue
        try:
            g = ctypes.CDLL(p)
            gv, gc = g.ggml_version, g.ggml_commit
            gv.restype = gc.restype = ctypes.c_char_p
            gv.argtypes = gc.argtypes = []
            parts.insert(0, "commit " + gc().decode())
            parts.append("ggml " + gv().decode())
        except (AttributeError, OSError):
            pass
        break
    return llama_cpp.__version__, ", ".join(parts) if parts else "version unknown"


def system_info():
    return L.llama_print_system_info().decode(errors="replace").strip()


# --------------------------------------------------------------------------- model / context

FA_NAMES = {-1: "auto", 0: "disabled", 1: "enabled"}
GGML_TYPE_NAMES = {0: "f32", 1: "f16", 8: "q8_0", 30: "bf16"}


def reference_arithmetic():
    """For recordings: llama.cpp multiplies k-quant weights by batches of 8 or
    more tokens with a tiled kernel that sums in another order than its vec_dot
    kernels; the reference is the vec_dot arithmetic, which kvfit reproduces at
    every batch size, so that kernel is switched off (llama.cpp's own switch,
    read once: call this before the first model is loaded). Not for speed
    comparisons, which use llama.cpp's defaults."""
    os.environ["GGML_CPU_TILED_MM"] = "0"


class Model:
    def __init__(self, path, n_gpu_layers=0, extra_bufts=False):
        if not os.path.exists(path):
            sys.exit("model not found: %s" % path)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers  # 0: CPU only; -1: every layer (a GPU build of llama.cpp)
        # Recordings use no repacked weight buffers (AMX, CPU_REPACK): the
        # reference is ggml's plain CPU kernels. (A native build on a CPU with
        # AMX prefers the AMX buffers, whose kernels crashed on such a VM.)
        mp.use_extra_bufts = extra_bufts
        self.path = path
        self.model = L.llama_model_load_from_file(path.encode(), mp)
        if not self.model:
            sys.exit("llama.cpp failed to load %s" % path)
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.bos = L.llama_vocab_bos(self.vocab)
        self.eos = L.llama_vocab_eos(self.vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, text_bytes, add_special, parse_special):
        n_max = len(text_bytes) + 16
        while True:
            buf = (L.llama_token * n_max)()
            n = L.llama_tokenize(self.vocab, text_bytes, len(text_bytes), buf, n_max,
                                 bool(add_special), bool(parse_special))
            if n >= 0:
                return [int(buf[i]) for i in range(n)]
            n_max = -n

    def piece(self, tok, special=True):
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, tok, buf, 256, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, tok, buf, -n, 0, special)
        return buf.raw[:n]

    def detok(self, toks):
        return b"".join(self.piece(t) for t in toks).decode("utf-8", errors="replace")

    def new_context(self, n_ctx, n_batch, n_ubatch, n_threads, flash_attn=None):
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_ubatch
        cp.n_seq_max = 1
        cp.n_threads = n_threads
        cp.n_threads_batch = n_threads
        # type_k, type_v (and flash_attn_type unless asked): left at the library defaults on purpose.
        if flash_attn is not None:
            cp.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[flash_attn]
        settings = {
            "n_ctx": n_ctx, "n_batch": n_batch, "n_ubatch": n_ubatch,
            "n_threads": n_threads, "n_threads_batch": n_threads,
            "flash_attn_type": FA_NAMES.get(cp.flash_attn_type, str(cp.flash_attn_type)),
            "type_k": GGML_TYPE_NAMES.get(cp.type_k, str(cp.type_k)),
            "type_v": GGML_TYPE_NAMES.get(cp.type_v, str(cp.type_v)),
        }
        clear_log()
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            sys.exit("llama.cpp failed to create a context")
        if cp.flash_attn_type in (0, 1):
            settings["flash_attn_resolved"] = FA_NAMES[cp.flash_attn_type]
        else:
            settings["flash_attn_resolved"] = flash_attn_resolved(log_text())
        return Context(self, ctx), settings

    def close(self):
        if self.model:
            L.llama_model_free(self.model)
            self.model = None


class Context:
    def __init__(self, model, ctx):
        self.m = model
        self.ctx = ctx
        self.n_past = 0

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        self.n_past = 0

    def decode(self, toks):
        """Evaluate toks as one llama_decode batch; only the last position outputs logits."""
        arr = (L.llama_token * len(toks))(*toks)
        batch = L.llama_batch_get_one(arr, len(toks))
        rc = L.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError("llama_decode returned %d" % rc)
        self.n_past += len(toks)

    def last_logits(self):
        p = L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.m.n_vocab,)).astype(np.float32, copy=True)

    def synchronize(self):
        L.llama_synchronize(self.ctx)

    def close(self):
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
