"""The C ABI of kvfit.h declared for ctypes, one declaration per function.

The library is looked up in this order: $KVFIT_LIB (a file), $KVFIT_LIB_DIR
(a folder holding libkvfit.so.0), the copy bundled in this package (what
`pip install` builds), the dynamic loader's search path, and the libdir that
`pkg-config kvfit` names.
"""
import ctypes
import os
import subprocess
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char, c_char_p, c_float, c_int, c_int32, c_size_t,
                    c_uint32, c_uint64, c_void_p)

ABI_MAJOR = 0
SONAME = "libkvfit.so.%d" % ABI_MAJOR


def _pkg_config_libdir():
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "kvfit"], capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _candidates():
    if os.environ.get("KVFIT_LIB"):
        yield os.environ["KVFIT_LIB"]
        return
    if os.environ.get("KVFIT_LIB_DIR"):
        yield os.path.join(os.environ["KVFIT_LIB_DIR"], SONAME)
        return
    bundled = os.path.join(os.path.dirname(os.path.abspath(__file__)), SONAME)
    if os.path.exists(bundled):
        yield bundled
    yield SONAME
    libdir = _pkg_config_libdir()
    if libdir:
        yield os.path.join(libdir, SONAME)


def _load():
    tried = []
    for path in _candidates():
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("kvfit: cannot load %s; tried %s. Set KVFIT_LIB_DIR to the folder holding it."
                      % (SONAME, "; ".join(tried)))


lib = _load()

# C enums are pinned to 32 bits by their *_MAX_ENUM members.
c_enum = c_int
kvfit_status = c_int

log_fn = CFUNCTYPE(None, c_enum, c_char_p, c_void_p)
progress_fn = CFUNCTYPE(c_bool, c_float, c_void_p)
token_fn = CFUNCTYPE(c_bool, c_int32, POINTER(c_char), c_size_t, c_void_p)


class ModelParams(Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_enum), ("progress", progress_fn),
                ("progress_user_data", c_void_p), ("vocab_only", c_bool), ("device", c_int32)]


class DeviceInfo(Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_enum), ("index", c_int32), ("type", c_enum),
                ("name", c_char_p), ("memory_bytes", c_uint64)]


class ModelInfo(Structure):
    _fields_ = [("struct_size", c_uint32), ("arch", c_char_p), ("name", c_char_p), ("tokenizer", c_char_p),
                ("n_layer", c_uint32), ("n_head", c_uint32), ("n_head_kv", c_uint32), ("n_embd", c_uint32),
                ("n_ctx_train", c_uint32), ("n_vocab", c_uint32), ("n_params", c_uint64),
                ("weight_bytes", c_uint64), ("bos_token", c_int32), ("eos_token", c_int32)]


class ChatMessage(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


class SessionParams(Structure):
    _fields_ = [("struct_size", c_uint32), ("n_ctx", c_uint32), ("n_batch", c_uint32), ("n_threads", c_int32),
                ("kv_budget_bytes", c_uint64), ("n_sink", c_int32), ("n_window", c_uint32), ("kv_codec", c_enum)]


class LayerPlan(Structure):
    _fields_ = [("kind", c_enum), ("codec", c_enum), ("n_sink", c_uint32), ("n_window", c_uint32),
                ("bytes", c_uint64)]


class SamplerParams(Structure):
    _fields_ = [("struct_size", c_uint32), ("temperature", c_float), ("top_k", c_int32), ("top_p", c_float),
                ("min_p", c_float), ("repeat_penalty", c_float), ("repeat_last_n", c_int32), ("seed", c_uint64)]


class GenerateParams(Structure):
    _fields_ = [("struct_size", c_uint32), ("max_tokens", c_uint32), ("on_token", token_fn),
                ("user_data", c_void_p), ("render_special", c_bool)]


class GenerateResult(Structure):
    _fields_ = [("struct_size", c_uint32), ("n_generated", c_uint32), ("stop_reason", c_enum)]


model_p = c_void_p
session_p = c_void_p
sampler_p = c_void_p
int32_p = POINTER(c_int32)
size_p = POINTER(c_size_t)


def _fn(name, restype, *argtypes):
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


kvfit_version = _fn("kvfit_version", c_char_p)
kvfit_version_number = _fn("kvfit_version_number", c_uint32)
kvfit_status_str = _fn("kvfit_status_str", c_char_p, kvfit_status)
kvfit_last_error = _fn("kvfit_last_error", c_char_p)
kvfit_set_log_callback = _fn("kvfit_set_log_callback", None, log_fn, c_enum, c_void_p)

kvfit_model_params_init = _fn("kvfit_model_params_init", None, POINTER(ModelParams))
kvfit_device_count = _fn("kvfit_device_count", kvfit_status, size_p)
kvfit_device_get_info = _fn("kvfit_device_get_info", kvfit_status, c_size_t, POINTER(DeviceInfo))
kvfit_model_load = _fn("kvfit_model_load", kvfit_status, c_char_p, POINTER(ModelParams), POINTER(model_p))
kvfit_model_free = _fn("kvfit_model_free", None, model_p)
kvfit_model_get_info = _fn("kvfit_model_get_info", kvfit_status, model_p, POINTER(ModelInfo))
kvfit_model_meta = _fn("kvfit_model_meta", kvfit_status, model_p, c_char_p, c_void_p, c_size_t, size_p)

kvfit_tokenize = _fn("kvfit_tokenize", kvfit_status, model_p, c_char_p, c_size_t, c_bool, c_bool, int32_p,
                     c_size_t, size_p)
kvfit_token_to_piece = _fn("kvfit_token_to_piece", kvfit_status, model_p, c_int32, c_bool, c_void_p, c_size_t, size_p)
kvfit_detokenize = _fn("kvfit_detokenize", kvfit_status, model_p, int32_p, c_size_t, c_bool, c_void_p, c_size_t, size_p)
kvfit_token_is_eog = _fn("kvfit_token_is_eog", c_bool, model_p, c_int32)

kvfit_model_chat_template = _fn("kvfit_model_chat_template", c_char_p, model_p)
kvfit_chat_apply = _fn("kvfit_chat_apply", kvfit_status, model_p, c_char_p, POINTER(ChatMessage), c_size_t,
                       c_bool, c_void_p, c_size_t, size_p)

kvfit_session_params_init = _fn("kvfit_session_params_init", None, POINTER(SessionParams))
kvfit_session_create = _fn("kvfit_session_create", kvfit_status, model_p, POINTER(SessionParams), POINTER(session_p))
kvfit_session_free = _fn("kvfit_session_free", None, session_p)
kvfit_session_reset = _fn("kvfit_session_reset", kvfit_status, session_p)
kvfit_session_prefill = _fn("kvfit_session_prefill", kvfit_status, session_p, int32_p, c_size_t)
kvfit_session_decode = _fn("kvfit_session_decode", kvfit_status, session_p, c_int32)
kvfit_session_logits = _fn("kvfit_session_logits", kvfit_status, session_p, POINTER(POINTER(c_float)), size_p)
kvfit_session_n_past = _fn("kvfit_session_n_past", c_uint64, session_p)
kvfit_session_kv_bytes = _fn("kvfit_session_kv_bytes", c_uint64, session_p)
kvfit_session_plan = _fn("kvfit_session_plan", kvfit_status, session_p, POINTER(LayerPlan), c_size_t, size_p,
                         POINTER(c_uint64))
kvfit_session_state_size = _fn("kvfit_session_state_size", kvfit_status, session_p, size_p)
kvfit_session_save = _fn("kvfit_session_save", kvfit_status, session_p, c_void_p, c_size_t, size_p)
kvfit_session_load = _fn("kvfit_session_load", kvfit_status, session_p, c_void_p, c_size_t)
kvfit_session_prefill_nll = _fn("kvfit_session_prefill_nll", kvfit_status, session_p, int32_p, c_size_t,
                                POINTER(c_float))

kvfit_sampler_params_init = _fn("kvfit_sampler_params_init", None, POINTER(SamplerParams))
kvfit_sampler_create = _fn("kvfit_sampler_create", kvfit_status, POINTER(SamplerParams), POINTER(sampler_p))
kvfit_sampler_free = _fn("kvfit_sampler_free", None, sampler_p)
kvfit_sampler_reset = _fn("kvfit_sampler_reset", None, sampler_p)
kvfit_sampler_sample = _fn("kvfit_sampler_sample", kvfit_status, sampler_p, session_p, POINTER(c_int32))
kvfit_sampler_accept = _fn("kvfit_sampler_accept", kvfit_status, sampler_p, c_int32)

kvfit_generate_params_init = _fn("kvfit_generate_params_init", None, POINTER(GenerateParams))
kvfit_generate = _fn("kvfit_generate", kvfit_status, session_p, int32_p, c_size_t, sampler_p,
                     POINTER(GenerateParams), POINTER(GenerateResult))

if kvfit_version_number() // 10000 != ABI_MAJOR:
    raise ImportError("kvfit: loaded library %s has another ABI major than %d"
                      % (kvfit_version().decode(), ABI_MAJOR))
