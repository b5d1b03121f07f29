"""Python bindings (ctypes) to kvfit, an embeddable LLM inference runtime whose
sessions keep their KV memory inside a budget fixed in bytes up front.

    import kvfit
    with kvfit.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf") as model:
        with model.session(kv_budget_bytes=64 << 20) as session:
            prompt = model.apply_chat_template([("user", "Hi!")])
            tokens = model.tokenize(prompt, parse_special=True)
            session.generate(tokens, on_token=lambda tok, text: print(text, end="") or True)

A Model is immutable and may be used from many threads and sessions at once.
A Session or a Sampler serializes its calls (the C library allows one thread
at a time). close() releases memory at once and may be called again; a with
block closes for you, and garbage collection closes what was forgotten.
Closing a model that still has open sessions defers the release until the
last one closes.

Every failure raises a KvfitError subclass (BudgetError, ModelIOError, ...)
carrying kvfit's status and message.
"""
import ctypes
import enum
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

from . import _ffi

__all__ = [
    "version", "version_number", "set_log_callback", "Status", "KvfitError", "ArgumentError", "BufferTooSmallError",
    "Utf8Error", "TokenError", "StateError", "ModelIOError", "FormatError", "UnsupportedError", "OutOfMemoryError",
    "BudgetError", "ContextFullError", "BackendError", "BackendUnavailableError", "CancelledError", "InternalError",
    "TemplateError", "ClosedError", "LogLevel", "Backend", "DeviceType", "DeviceInfo", "devices", "KvCodec", "LayerKind", "StopReason", "ModelInfo", "LayerPlan", "Plan",
    "GenerateResult", "Model", "Session", "Sampler",
]

Token = int


def version() -> str:
    """The "MAJOR.MINOR.PATCH" of the library actually loaded."""
    return _ffi.kvfit_version().decode()


def version_number() -> int:
    """MAJOR * 10000 + MINOR * 100 + PATCH of the library actually loaded."""
    return _ffi.kvfit_version_number()


class Status(enum.IntEnum):
    """kvfit status codes (KVFIT_E_* in kvfit.h)."""
    OK = 0
    ARG = -1
    BUFFER_TOO_SMALL = -2
    UTF8 = -3
    TOKEN = -4
    STATE = -5
    IO = -100
    FORMAT = -101
    UNSUPPORTED = -102
    NOMEM = -200
    BUDGET = -201
    CONTEXT_FULL = -202
    BACKEND = -300
    BACKEND_UNAVAILABLE = -301
    CANCELLED = -400
    INTERNAL = -500
    TEMPLATE = -600


class KvfitError(Exception):
    """A failed kvfit call: `status` (a Status or, from a newer library, an
    int), `name` ("KVFIT_E_BUDGET") and kvfit's `message`."""

    def __init__(self, status: int, message: str):
        try:
            self.status: Union[Status, int] = Status(status)
        except ValueError:
            self.status = status
        self.name = _ffi.kvfit_status_str(status).decode()
        self.message = message
        super().__init__("%s (%s)" % (message, self.name) if message else self.name)


class ArgumentError(KvfitError, ValueError):
    """An invalid argument."""


class BufferTooSmallError(KvfitError):
    """An output buffer was too small (the bindings size buffers themselves)."""


class Utf8Error(KvfitError, ValueError):
    """Text that is not valid UTF-8."""


class TokenError(KvfitError, ValueError):
    """A token id outside the vocabulary."""


class StateError(KvfitError):
    """A call not valid in the current state, e.g. logits before any token."""


class ModelIOError(KvfitError, OSError):
    """A model file missing or unreadable."""


class FormatError(KvfitError):
    """Not a GGUF file, truncated or corrupt; or foreign session state."""


class UnsupportedError(KvfitError):
    """A valid file with an architecture, tensor type or tokenizer kvfit lacks."""


class OutOfMemoryError(KvfitError, MemoryError):
    """An allocation failed."""


class BudgetError(KvfitError):
    """The KV budget cannot hold even the smallest plan; the message names the
    smallest budget that works."""


class ContextFullError(KvfitError):
    """The session's cache has no room for these tokens."""


class BackendError(KvfitError):
    """A backend operation failed."""


class BackendUnavailableError(KvfitError):
    """The requested backend is not built or has no device."""


class CancelledError(KvfitError):
    """A progress callback asked to stop."""


class InternalError(KvfitError):
    """A bug in kvfit: please report it with the message."""


class TemplateError(KvfitError):
    """The chat template refused the conversation (its raise_exception, e.g.
    roles that do not alternate) or failed while rendering it."""


class ClosedError(ValueError):
    """A method of a closed Model, Session or Sampler was called."""


_ERROR_CLASSES = {
    Status.ARG: ArgumentError, Status.BUFFER_TOO_SMALL: BufferTooSmallError, Status.UTF8: Utf8Error,
    Status.TOKEN: TokenError, Status.STATE: StateError, Status.IO: ModelIOError, Status.FORMAT: FormatError,
    Status.UNSUPPORTED: UnsupportedError, Status.NOMEM: OutOfMemoryError, Status.BUDGET: BudgetError,
    Status.CONTEXT_FULL: ContextFullError, Status.BACKEND: BackendError,
    Status.BACKEND_UNAVAILABLE: BackendUnavailableError, Status.CANCELLED: CancelledError,
    Status.INTERNAL: InternalError, Status.TEMPLATE: TemplateError,
}


def _error(status: int) -> KvfitError:
    """The exception for a failed call; reads the calling thread's message,
    so it must run right after the call."""
    message = (_ffi.kvfit_last_error() or b"").decode("utf-8", "replace")
    return _ERROR_CLASSES.get(status, KvfitError)(status, message)


def _check(status: int) -> None:
    if status != Status.OK:
        raise _error(status)


def _read_sized(call: Callable[[ctypes.Array, int, ctypes.c_size_t], int], nul: bool) -> bytes:
    """Calls a function that fills a buffer and reports the size it needs,
    growing the buffer once if it was too small. nul: it also writes a
    terminating NUL, which is not part of the result."""
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = ctypes.c_size_t(0)
        status = call(buf, size, n)
        needed = n.value + (1 if nul else 0)
        if status == Status.BUFFER_TOO_SMALL and needed > size:
            size = needed
            continue
        _check(status)
        return buf.raw[:n.value]


def _token_array(tokens: Sequence[int]) -> ctypes.Array:
    return (ctypes.c_int32 * len(tokens))(*tokens)


def _utf8(what: str, text: str) -> bytes:
    data = text.encode("utf-8")
    if b"\0" in data:
        raise ArgumentError(Status.ARG, "%s contains a NUL character" % what)
    return data


class LogLevel(enum.IntEnum):
    DEBUG = 0
    INFO = 1
    WARN = 2
    ERROR = 3


_log_lock = threading.Lock()
_log_handler: Optional[Callable[[LogLevel, str], None]] = None


@_ffi.log_fn
def _log_trampoline(level, message, _user):
    handler = _log_handler
    if handler is None:
        return
    try:
        handler(LogLevel(level) if level in LogLevel._value2member_map_ else level,
                (message or b"").decode("utf-8", "replace"))
    except Exception:  # noqa: BLE001 -- an exception must not cross into C; a failing logger loses that line
        pass


def set_log_callback(handler: Optional[Callable[[LogLevel, str], None]], min_level: LogLevel = LogLevel.INFO):
    """Routes kvfit's log lines at or above min_level to handler(level,
    message), process-wide; None silences them (the default). The handler may
    be called from any thread that runs kvfit code."""
    global _log_handler
    with _log_lock:
        _log_handler = handler
        _ffi.kvfit_set_log_callback(_log_trampoline if handler else _ffi.log_fn(), int(min_level), None)


class Backend(enum.IntEnum):
    AUTO = 0  # CUDA, then Vulkan on a GPU, then CPU; $KVFIT_BACKEND (auto, cpu, cuda, vulkan) overrides it
    CPU = 1
    CUDA = 2
    VULKAN = 3


class DeviceType(enum.IntEnum):
    CPU = 0  # the CPU backend, or a Vulkan device running on the CPU
    INTEGRATED_GPU = 1  # shares memory with the host
    DISCRETE_GPU = 2
    VIRTUAL_GPU = 3  # a GPU seen through a hypervisor
    OTHER = 4


class KvCodec(enum.IntEnum):
    AUTO = 0  # the planner chooses
    F16 = 1
    Q8 = 2
    Q4 = 3
    Q4_HADAMARD = 4  # Q4 with keys rotated by a fixed randomized Hadamard transform first
    Q4_CHANNEL = 5  # Q4 with keys grouped per channel over blocks of 32 tokens; windows are multiples of 32
    F32 = 6  # recurrent layers' state (reported by plans, not requested)
    BF16 = 7  # a recurrent layer's state matrix kept in BF16 (reported by plans, not requested)

    def __str__(self):
        """The names kvfit's tools use: auto, f16, q8, q4, q4h, q4c, f32, bf16."""
        return {KvCodec.Q4_HADAMARD: "q4h", KvCodec.Q4_CHANNEL: "q4c"}.get(self, self.name.lower())


class LayerKind(enum.IntEnum):
    DENSE = 0  # attention over every token of the context
    STREAMING = 1  # attention over sinks + a sliding window
    WINDOW = 2  # the model's own sliding window (Gemma 3's local layers)
    RECURRENT = 3  # a fixed-size state instead of a list of tokens (Gated DeltaNet, RWKV)

    def __str__(self):
        return self.name.lower()


class StopReason(enum.IntEnum):
    EOG = 0  # the model produced an end-of-generation token
    LENGTH = 1  # max_tokens reached
    CALLBACK = 2  # the token callback returned False
    CONTEXT_FULL = 3  # the session's cache is full


def _enum_or_int(enum_type, value: int):
    """An enum member, or the plain int a newer library may send."""
    try:
        return enum_type(value)
    except ValueError:
        return value


@dataclass(frozen=True)
class DeviceInfo:
    backend: Union[Backend, int]
    index: int  # the device's index within its backend, for Model(device=...)
    type: Union[DeviceType, int]
    name: str
    memory_bytes: int  # device-local memory (for the CPU: physical RAM)


def devices() -> List[DeviceInfo]:
    """The devices kvfit can compute on: the CPU first, then every usable
    device of each GPU backend built in."""
    n = ctypes.c_size_t(0)
    _check(_ffi.kvfit_device_count(ctypes.byref(n)))
    out = []
    for i in range(n.value):
        d = _ffi.DeviceInfo()
        d.struct_size = ctypes.sizeof(d)
        _check(_ffi.kvfit_device_get_info(i, ctypes.byref(d)))
        out.append(DeviceInfo(_enum_or_int(Backend, d.backend), d.index, _enum_or_int(DeviceType, d.type),
                              (d.name or b"").decode("utf-8", "replace"), d.memory_bytes))
    return out


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    name: str
    tokenizer: str  # "llama" (SentencePiece) or "gpt2" (byte-level BPE)
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int
    n_ctx_train: int
    n_vocab: int
    n_params: int
    weight_bytes: int
    bos_token: Optional[int]
    eos_token: Optional[int]


@dataclass(frozen=True)
class LayerPlan:
    kind: Union[LayerKind, int]
    codec: Union[KvCodec, int]
    n_sink: int
    n_window: int  # dense layers: the tokens they hold
    bytes: int  # codes, scales, minima


@dataclass(frozen=True)
class Plan:
    layers: List[LayerPlan]
    total_bytes: int


@dataclass(frozen=True)
class GenerateResult:
    n_generated: int  # an end-of-generation token is not counted
    stop_reason: Union[StopReason, int]


class _ModelHandle:
    """The C model and its open sessions, shared with the finalizers so the
    model is released only once nothing uses it."""

    def __init__(self, ptr: int):
        self.ptr: Optional[int] = ptr
        self.lock = threading.RLock()
        self.sessions = 0
        self.closing = False

    def close(self):
        with self.lock:
            self.closing = True
            self.release_if_unused()

    def release_if_unused(self):
        with self.lock:
            if self.closing and self.sessions == 0 and self.ptr:
                _ffi.kvfit_model_free(self.ptr)
                self.ptr = None

    def get(self) -> int:
        if not self.ptr or self.closing:
            raise ClosedError("the model is closed")
        return self.ptr


ChatMessages = Sequence[Union[Tuple[str, str], dict]]


class _Closeable:
    """close() goes through the object's weakref finalizer, so the C handle is
    released once, whether by close(), a with block or garbage collection."""
    _finalizer: weakref.finalize

    def close(self) -> None:
        """Releases the C object. Calling it again does nothing."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


class Model(_Closeable):
    """A loaded GGUF model: immutable, usable from many threads at once."""

    def __init__(self, path: Union[str, os.PathLike], backend: Backend = Backend.AUTO,
                 device: Optional[int] = None, vocab_only: bool = False,
                 progress: Optional[Callable[[float], bool]] = None):
        """Memory-maps a GGUF file. device is an index within the backend
        (DeviceInfo.index; None = $KVFIT_DEVICE if set, else the best
        device). progress(fraction) is called during loading; returning False
        cancels it (CancelledError)."""
        params = _ffi.ModelParams()
        _ffi.kvfit_model_params_init(ctypes.byref(params))
        params.backend = int(backend)
        if device is not None:
            params.device = device
        params.vocab_only = vocab_only
        raised = []
        if progress is not None:
            def on_progress(fraction, _user):
                try:
                    return bool(progress(fraction))
                except BaseException as e:  # noqa: BLE001 -- re-raised below, after C returns
                    raised.append(e)
                    return False
            params.progress = _ffi.progress_fn(on_progress)
        cpath = os.fsencode(path)
        if b"\0" in cpath:
            raise ArgumentError(Status.ARG, "the path contains a NUL character")
        ptr = _ffi.model_p()
        status = _ffi.kvfit_model_load(cpath, ctypes.byref(params), ctypes.byref(ptr))
        if raised:
            _ffi.kvfit_model_free(ptr)
            raise raised[0]
        _check(status)
        self._handle = _ModelHandle(ptr.value)
        self._finalizer = weakref.finalize(self, _ModelHandle.close, self._handle)

    def close(self) -> None:
        """Releases the model now, or when its last open session closes."""
        super().close()

    def _ptr(self) -> int:
        return self._handle.get()

    def info(self) -> ModelInfo:
        i = _ffi.ModelInfo()
        i.struct_size = ctypes.sizeof(i)
        _check(_ffi.kvfit_model_get_info(self._ptr(), ctypes.byref(i)))
        text = (lambda b: (b or b"").decode("utf-8", "replace"))
        return ModelInfo(text(i.arch), text(i.name), text(i.tokenizer), i.n_layer, i.n_head, i.n_head_kv, i.n_embd,
                         i.n_ctx_train, i.n_vocab, i.n_params, i.weight_bytes,
                         i.bos_token if i.bos_token >= 0 else None, i.eos_token if i.eos_token >= 0 else None)

    def meta(self, key: str) -> str:
        """A GGUF metadata value as text (ArgumentError if the key is absent)."""
        ptr, ckey = self._ptr(), _utf8("the key", key)
        data = _read_sized(lambda buf, size, n: _ffi.kvfit_model_meta(ptr, ckey, buf, size, ctypes.byref(n)), True)
        return data.decode("utf-8", "replace")

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> List[int]:
        """Token ids of text. add_special adds BOS/EOS as the model asks;
        parse_special turns control-token text such as "<|im_start|>" into
        those tokens."""
        ptr, data = self._ptr(), text.encode("utf-8", "surrogateescape")
        capacity = len(data) + 8
        while True:
            out = (ctypes.c_int32 * capacity)()
            n = ctypes.c_size_t(0)
            status = _ffi.kvfit_tokenize(ptr, data, len(data), add_special, parse_special, out, capacity,
                                         ctypes.byref(n))
            if status == Status.BUFFER_TOO_SMALL and n.value > capacity:
                capacity = n.value
                continue
            _check(status)
            return list(out[:n.value])

    def token_to_piece(self, token: int, render_special: bool = False) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character)."""
        ptr = self._ptr()
        return _read_sized(
            lambda buf, size, n: _ffi.kvfit_token_to_piece(ptr, token, render_special, buf, size, ctypes.byref(n)),
            False)

    def detokenize(self, tokens: Sequence[int], render_special: bool = False) -> str:
        """The text of a token sequence (bytes of a cut character become U+FFFD)."""
        ptr, ids = self._ptr(), _token_array(tokens)
        data = _read_sized(
            lambda buf, size, n: _ffi.kvfit_detokenize(ptr, ids, len(ids), render_special, buf, size, ctypes.byref(n)),
            False)
        return data.decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...)."""
        return bool(_ffi.kvfit_token_is_eog(self._ptr(), token))

    @property
    def chat_template(self) -> str:
        """The template family the model's own template resembles ("chatml",
        "llama3", ..., "custom" for none kvfit knows by name)."""
        return _ffi.kvfit_model_chat_template(self._ptr()).decode()

    def apply_chat_template(self, messages: ChatMessages, add_assistant: bool = True,
                            template: Optional[str] = None) -> str:
        """Renders (role, content) pairs or {"role", "content"} dicts: template
        None renders the model's own Jinja template as Hugging Face does, a
        family name ("chatml", ...) a built-in rendering, Jinja text that
        template itself. add_assistant appends the header that opens the
        assistant's turn. Raises TemplateError when the template refuses the
        conversation, UnsupportedError for Jinja kvfit cannot render."""
        pairs = [(m["role"], m["content"]) if isinstance(m, dict) else tuple(m) for m in messages]
        raw = (_ffi.ChatMessage * max(len(pairs), 1))()
        for i, (role, content) in enumerate(pairs):
            raw[i].role = _utf8("a role", role)
            raw[i].content = _utf8("a message", content)
        ptr = self._ptr()
        name = _utf8("the template name", template) if template is not None else None
        data = _read_sized(
            lambda buf, size, n: _ffi.kvfit_chat_apply(ptr, name, raw, len(pairs), add_assistant, buf, size,
                                                       ctypes.byref(n)),
            True)
        return data.decode("utf-8", "replace")

    def session(self, **params) -> "Session":
        """A new Session on this model; see Session for the parameters."""
        return Session(self, **params)


def _close_session(state: "_HandleState", model_handle: _ModelHandle):
    with state.lock:
        if state.ptr:
            _ffi.kvfit_session_free(state.ptr)
            state.ptr = None
    with model_handle.lock:
        model_handle.sessions -= 1
        model_handle.release_if_unused()


class _HandleState:
    """A session's or sampler's C pointer (None once freed) and the lock that
    serializes calls on it."""

    def __init__(self, ptr: int):
        self.ptr: Optional[int] = ptr
        self.lock = threading.Lock()
        self.callback_thread: Optional[int] = None  # the thread inside a token callback, if any


class Session(_Closeable):
    """A conversation's state on a model: its KV memory, position and logits.

    Parameters (None = the library's default; see kvfit_session_params):
      n_ctx            dense: tokens the cache holds; streaming: the context the
                       planner aims to cover (default: the training context)
      n_batch          tokens per prefill step (512)
      n_threads        CPU threads (all cores, at most 16)
      kv_budget_bytes  a fixed KV budget; everything the session keeps per
                       token is allocated now, inside it (0: no budget)
      n_sink           sink tokens per attention layer (4 when streaming)
      n_window         ring size in tokens (the planner decides)
      kv_codec         a KvCodec (the planner decides)
    A budget too small for any plan raises BudgetError naming the smallest
    budget that works.
    """

    def __init__(self, model: Model, n_ctx: Optional[int] = None, n_batch: Optional[int] = None,
                 n_threads: Optional[int] = None, kv_budget_bytes: int = 0, n_sink: Optional[int] = None,
                 n_window: Optional[int] = None, kv_codec: KvCodec = KvCodec.AUTO):
        params = _ffi.SessionParams()
        _ffi.kvfit_session_params_init(ctypes.byref(params))
        for field, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_threads", n_threads),
                             ("n_sink", n_sink), ("n_window", n_window)):
            if value is not None:
                setattr(params, field, value)
        params.kv_budget_bytes = kv_budget_bytes
        params.kv_codec = int(kv_codec)
        handle = model._handle
        with handle.lock:  # keeps close() from releasing the model mid-creation
            ptr = _ffi.session_p()
            _check(_ffi.kvfit_session_create(handle.get(), ctypes.byref(params), ctypes.byref(ptr)))
            handle.sessions += 1
        self.model = model
        self._state = _HandleState(ptr.value)
        self._finalizer = weakref.finalize(self, _close_session, self._state, handle)

    def close(self) -> None:
        """Releases the session's memory. Calling it again does nothing."""
        self._refuse_from_callback()
        super().close()

    def _refuse_from_callback(self):
        if self._state.callback_thread == threading.get_ident():
            raise RuntimeError("kvfit: a session was called from its own token callback")

    def _call(self, fn, *args):
        """Runs fn(session pointer, *args) holding the session."""
        self._refuse_from_callback()
        with self._state.lock:
            if not self._state.ptr:
                raise ClosedError("the session is closed")
            return fn(self._state.ptr, *args)

    def reset(self) -> None:
        """Forgets all tokens; the memory stays allocated."""
        _check(self._call(_ffi.kvfit_session_reset))

    def prefill(self, tokens: Sequence[int]) -> None:
        """Appends tokens, computing the logits of the last one."""
        ids = _token_array(tokens)
        _check(self._call(_ffi.kvfit_session_prefill, ids, len(ids)))

    def decode(self, token: int) -> None:
        """Appends one token and computes its logits."""
        _check(self._call(_ffi.kvfit_session_decode, token))

    def logits(self) -> List[float]:
        """A copy of the newest token's logits (StateError before any token)."""
        def read(ptr):
            out, n = ctypes.POINTER(ctypes.c_float)(), ctypes.c_size_t(0)
            _check(_ffi.kvfit_session_logits(ptr, ctypes.byref(out), ctypes.byref(n)))
            return out[:n.value]
        return self._call(read)

    @property
    def n_past(self) -> int:
        """Tokens the session holds."""
        return self._call(_ffi.kvfit_session_n_past)

    @property
    def kv_bytes(self) -> int:
        """Bytes allocated for per-token and per-sequence state."""
        return self._call(_ffi.kvfit_session_kv_bytes)

    def plan(self) -> Plan:
        """What the planner chose, per layer."""
        def read(ptr):
            n, total = ctypes.c_size_t(0), ctypes.c_uint64(0)
            _check(_ffi.kvfit_session_plan(ptr, None, 0, ctypes.byref(n), None))
            layers = (_ffi.LayerPlan * max(n.value, 1))()
            _check(_ffi.kvfit_session_plan(ptr, layers, n.value, ctypes.byref(n), ctypes.byref(total)))
            return Plan([LayerPlan(_enum_or_int(LayerKind, l.kind), _enum_or_int(KvCodec, l.codec), l.n_sink,
                                   l.n_window, l.bytes) for l in layers[:n.value]], total.value)
        return self._call(read)

    def save_state(self) -> bytes:
        """The session's state (tokens' KV, position, logits), loadable into a
        session of the same model with the same plan."""
        def read(ptr):
            size, written = ctypes.c_size_t(0), ctypes.c_size_t(0)
            _check(_ffi.kvfit_session_state_size(ptr, ctypes.byref(size)))
            buf = ctypes.create_string_buffer(max(size.value, 1))
            _check(_ffi.kvfit_session_save(ptr, buf, size.value, ctypes.byref(written)))
            return buf.raw[:written.value]
        return self._call(read)

    def load_state(self, state: bytes) -> None:
        """Restores what save_state() wrote; the session is unchanged on failure."""
        buf = ctypes.create_string_buffer(bytes(state), max(len(state), 1))
        _check(self._call(_ffi.kvfit_session_load, buf, len(state)))

    def prefill_nll(self, tokens: Sequence[int]) -> List[float]:
        """prefill() that also returns -log p(token | everything before) in
        nats per token (NaN for the first if the session had no logits)."""
        ids = _token_array(tokens)
        nll = (ctypes.c_float * max(len(ids), 1))()
        _check(self._call(_ffi.kvfit_session_prefill_nll, ids, len(ids), nll))
        return list(nll[:len(ids)])

    def generate(self, prompt: Sequence[int] = (), sampler: Optional["Sampler"] = None,
                 max_tokens: Optional[int] = None, render_special: bool = False,
                 on_token: Optional[Callable[[int, str], bool]] = None) -> GenerateResult:
        """Prefills prompt (may be empty if the session has logits), then
        samples and appends tokens until an end-of-generation token,
        max_tokens (default 256), on_token returning False, or a full cache.

        on_token(token, text) receives each token with its newly completed
        text (possibly "" while a character is incomplete), and token -1 with
        bytes still pending at the end. It must not call this session. An
        exception it raises stops generation and is re-raised here.
        sampler None = greedy."""
        params = _ffi.GenerateParams()
        _ffi.kvfit_generate_params_init(ctypes.byref(params))
        if max_tokens is not None:
            params.max_tokens = max_tokens
        params.render_special = render_special
        raised = []
        state = self._state
        if on_token is not None:
            def trampoline(token, text, length, _user):
                if raised:
                    return False
                state.callback_thread = threading.get_ident()
                try:
                    return bool(on_token(token, ctypes.string_at(text, length).decode("utf-8", "replace")))
                except BaseException as e:  # noqa: BLE001 -- re-raised below, after C returns
                    raised.append(e)
                    return False
                finally:
                    state.callback_thread = None
            params.on_token = _ffi.token_fn(trampoline)
        result = _ffi.GenerateResult()
        result.struct_size = ctypes.sizeof(result)
        ids = _token_array(prompt)

        def run(ptr):
            if sampler is None:
                return _ffi.kvfit_generate(ptr, ids, len(ids), None, ctypes.byref(params), ctypes.byref(result))
            return sampler._call(lambda sampler_ptr: _ffi.kvfit_generate(
                ptr, ids, len(ids), sampler_ptr, ctypes.byref(params), ctypes.byref(result)))
        status = self._call(run)
        if raised:
            raise raised[0]
        _check(status)
        return GenerateResult(result.n_generated, _enum_or_int(StopReason, result.stop_reason))


class Sampler(_Closeable):
    """A sampling chain with its own history and random state.

    Parameters (None = the library's default; see kvfit_sampler_params):
    temperature (<= 0: greedy), top_k (<= 0: off), top_p (>= 1: off), min_p
    (<= 0: off), repeat_penalty (1: off), repeat_last_n, seed."""

    def __init__(self, temperature: Optional[float] = None, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, min_p: Optional[float] = None,
                 repeat_penalty: Optional[float] = None, repeat_last_n: Optional[int] = None,
                 seed: Optional[int] = None):
        params = _ffi.SamplerParams()
        _ffi.kvfit_sampler_params_init(ctypes.byref(params))
        for field, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
                             ("repeat_penalty", repeat_penalty), ("repeat_last_n", repeat_last_n), ("seed", seed)):
            if value is not None:
                setattr(params, field, value)
        ptr = _ffi.sampler_p()
        _check(_ffi.kvfit_sampler_create(ctypes.byref(params), ctypes.byref(ptr)))
        self._state = _HandleState(ptr.value)
        self._finalizer = weakref.finalize(self, _free_sampler, self._state)

    def _call(self, fn, *args):
        with self._state.lock:
            if not self._state.ptr:
                raise ClosedError("the sampler is closed")
            return fn(self._state.ptr, *args)

    def reset(self) -> None:
        """Forgets the history and reseeds."""
        self._call(_ffi.kvfit_sampler_reset)

    def sample(self, session: Session) -> int:
        """Picks a token from the session's current logits (does not append it)."""
        token = ctypes.c_int32(0)
        # Session first, then sampler: the order generate() takes them in.
        _check(session._call(lambda session_ptr: self._call(
            lambda ptr: _ffi.kvfit_sampler_sample(ptr, session_ptr, ctypes.byref(token)))))
        return token.value

    def accept(self, token: int) -> None:
        """Records a token in the history the repetition penalty looks at."""
        _check(self._call(_ffi.kvfit_sampler_accept, token))


def _free_sampler(state: _HandleState):
    with state.lock:
        if state.ptr:
            _ffi.kvfit_sampler_free(state.ptr)
            state.ptr = None
