//! Safe Rust bindings to kvfit, an embeddable LLM inference runtime whose
//! sessions keep their KV memory inside a budget fixed in bytes up front.
//!
//! ```no_run
//! use kvfit::{ChatMessage, Model, Session, SessionParams};
//!
//! let model = Model::load("models/SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let params = SessionParams { kv_budget_bytes: 64 << 20, ..SessionParams::default() };
//! let mut session = Session::new(&model, &params)?;
//! let prompt = model.apply_chat_template(None, &[ChatMessage::new("user", "Hi!")], true)?;
//! let tokens = model.tokenize(&prompt, true, true)?;
//! session.generate(&tokens, None, &Default::default(), |_, text| {
//!     print!("{text}");
//!     true // false stops generation
//! })?;
//! # Ok::<(), kvfit::Error>(())
//! ```
//!
//! Thread-safety follows the C ABI: a [`Model`] is immutable and may be shared
//! by many threads and sessions (`Send + Sync`); a [`Session`] or a
//! [`Sampler`] is used by one thread at a time (`Send`, not `Sync`). A session
//! borrows its model, so the model cannot be dropped while a session lives.
//!
//! Every failure is an [`Error`] carrying kvfit's status and its message.

pub mod sys;

use std::any::Any;
use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::slice;
use std::sync::{Arc, RwLock};

/// A token id of the model's vocabulary.
pub type Token = i32;

/// What went wrong, one variant per kvfit status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    Arg,
    BufferTooSmall,
    Utf8,
    Token,
    State,
    Io,
    Format,
    Unsupported,
    NoMem,
    Budget,
    ContextFull,
    Backend,
    BackendUnavailable,
    Cancelled,
    Internal,
    /// The chat template refused the conversation or failed while rendering it.
    Template,
    /// A code this binding does not know (from a newer library).
    Unknown(i32),
}

impl ErrorKind {
    fn from_code(code: sys::kvfit_status) -> ErrorKind {
        use ErrorKind::*;
        match code {
            sys::KVFIT_E_ARG => Arg,
            sys::KVFIT_E_BUFFER_TOO_SMALL => BufferTooSmall,
            sys::KVFIT_E_UTF8 => Utf8,
            sys::KVFIT_E_TOKEN => Token,
            sys::KVFIT_E_STATE => State,
            sys::KVFIT_E_IO => Io,
            sys::KVFIT_E_FORMAT => Format,
            sys::KVFIT_E_UNSUPPORTED => Unsupported,
            sys::KVFIT_E_NOMEM => NoMem,
            sys::KVFIT_E_BUDGET => Budget,
            sys::KVFIT_E_CONTEXT_FULL => ContextFull,
            sys::KVFIT_E_BACKEND => Backend,
            sys::KVFIT_E_BACKEND_UNAVAILABLE => BackendUnavailable,
            sys::KVFIT_E_CANCELLED => Cancelled,
            sys::KVFIT_E_INTERNAL => Internal,
            sys::KVFIT_E_TEMPLATE => Template,
            other => Unknown(other),
        }
    }

    /// The C status code (`KVFIT_E_*`).
    pub fn code(self) -> i32 {
        use ErrorKind::*;
        match self {
            Arg => sys::KVFIT_E_ARG,
            BufferTooSmall => sys::KVFIT_E_BUFFER_TOO_SMALL,
            Utf8 => sys::KVFIT_E_UTF8,
            Token => sys::KVFIT_E_TOKEN,
            State => sys::KVFIT_E_STATE,
            Io => sys::KVFIT_E_IO,
            Format => sys::KVFIT_E_FORMAT,
            Unsupported => sys::KVFIT_E_UNSUPPORTED,
            NoMem => sys::KVFIT_E_NOMEM,
            Budget => sys::KVFIT_E_BUDGET,
            ContextFull => sys::KVFIT_E_CONTEXT_FULL,
            Backend => sys::KVFIT_E_BACKEND,
            BackendUnavailable => sys::KVFIT_E_BACKEND_UNAVAILABLE,
            Cancelled => sys::KVFIT_E_CANCELLED,
            Internal => sys::KVFIT_E_INTERNAL,
            Template => sys::KVFIT_E_TEMPLATE,
            Unknown(code) => code,
        }
    }

    /// The status constant's name, e.g. `"KVFIT_E_BUDGET"`.
    pub fn name(self) -> &'static str {
        // The library returns static strings.
        unsafe { CStr::from_ptr(sys::kvfit_status_str(self.code())) }.to_str().unwrap_or("KVFIT_E_UNKNOWN")
    }
}

/// A failed kvfit call: its status and kvfit's explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// The error of a failed call, with the calling thread's last message.
    /// Must run right after the call, on the same thread.
    fn last(code: sys::kvfit_status) -> Error {
        let message = unsafe { cstr_lossy(sys::kvfit_last_error()) };
        Error { kind: ErrorKind::from_code(code), message }
    }

    /// An argument the binding rejects before reaching the library.
    fn argument(message: String) -> Error {
        Error { kind: ErrorKind::Arg, message }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// kvfit's message, e.g. which budget would have been enough.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.kind.name())
        } else {
            write!(f, "{} ({})", self.message, self.kind.name())
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(code: sys::kvfit_status) -> Result<()> {
    if code == sys::KVFIT_OK {
        Ok(())
    } else {
        Err(Error::last(code))
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::argument(format!("{what} contains a NUL byte")))
}

/// Calls a kvfit function that fills a caller's buffer and reports the size
/// it needs, growing the buffer once if it was too small. `nul` says whether
/// the function also writes a terminating NUL (not part of the result).
fn read_sized(nul: bool, mut call: impl FnMut(*mut c_char, usize, &mut usize) -> sys::kvfit_status) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let mut len = 0usize;
        let code = call(buf.as_mut_ptr() as *mut c_char, buf.len(), &mut len);
        let needed = len + usize::from(nul);
        if code == sys::KVFIT_E_BUFFER_TOO_SMALL && needed > buf.len() {
            buf.resize(needed, 0);
            continue;
        }
        check(code)?;
        buf.truncate(len);
        return Ok(buf);
    }
}

/// The version of the library actually loaded, "MAJOR.MINOR.PATCH".
pub fn version() -> &'static str {
    unsafe { CStr::from_ptr(sys::kvfit_version()) }.to_str().unwrap_or("")
}

/// MAJOR * 10000 + MINOR * 100 + PATCH of the library actually loaded.
pub fn version_number() -> u32 {
    unsafe { sys::kvfit_version_number() }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

type LogFn = dyn Fn(LogLevel, &str) + Send + Sync;
static LOGGER: RwLock<Option<Arc<LogFn>>> = RwLock::new(None);

unsafe extern "C" fn log_trampoline(level: sys::kvfit_log_level, message: *const c_char, _user: *mut c_void) {
    // Cloned out of the lock so a logger may itself replace the logger.
    let logger = LOGGER.read().ok().and_then(|guard| guard.clone());
    if let Some(logger) = logger {
        let level = match level {
            0 => LogLevel::Debug,
            1 => LogLevel::Info,
            2 => LogLevel::Warn,
            _ => LogLevel::Error,
        };
        let text = cstr_lossy(message);
        // A panic must not unwind into C; a logger that panics loses that line.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| logger(level, &text)));
    }
}

/// Routes kvfit's log lines at or above `min_level` to `logger`, process-wide.
/// The logger may be called from any thread that calls kvfit.
pub fn set_log_callback<F>(min_level: LogLevel, logger: F)
where
    F: Fn(LogLevel, &str) + Send + Sync + 'static,
{
    if let Ok(mut guard) = LOGGER.write() {
        *guard = Some(Arc::new(logger));
    }
    unsafe { sys::kvfit_set_log_callback(Some(log_trampoline), min_level as i32, ptr::null_mut()) };
}

/// Silences kvfit's logging again (the default).
pub fn clear_log_callback() {
    unsafe { sys::kvfit_set_log_callback(None, LogLevel::Error as i32, ptr::null_mut()) };
    if let Ok(mut guard) = LOGGER.write() {
        *guard = None;
    }
}

/// Which kind of device runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// CUDA, then Vulkan on a GPU, then CPU; the KVFIT_BACKEND environment
    /// variable (auto, cpu, cuda, vulkan) overrides it.
    #[default]
    Auto,
    Cpu,
    Cuda,
    Vulkan,
    /// A backend this binding does not know (from a newer library).
    Unknown(i32),
}

impl Backend {
    fn from_raw(v: i32) -> Backend {
        match v {
            0 => Backend::Auto,
            1 => Backend::Cpu,
            2 => Backend::Cuda,
            3 => Backend::Vulkan,
            other => Backend::Unknown(other),
        }
    }

    fn to_raw(self) -> i32 {
        match self {
            Backend::Auto => 0,
            Backend::Cpu => 1,
            Backend::Cuda => 2,
            Backend::Vulkan => 3,
            Backend::Unknown(v) => v,
        }
    }
}

/// What kind of hardware a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceType {
    /// The CPU backend, or a Vulkan device running on the CPU.
    Cpu,
    /// Shares memory with the host.
    IntegratedGpu,
    DiscreteGpu,
    /// A GPU seen through a hypervisor.
    VirtualGpu,
    Other,
    Unknown(i32),
}

/// A device kvfit can compute on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub backend: Backend,
    /// The device's index within its backend, for [`ModelParams::device`].
    pub index: u32,
    pub device_type: DeviceType,
    pub name: String,
    /// Device-local memory (for the CPU: physical RAM).
    pub memory_bytes: u64,
}

/// The devices kvfit can compute on: the CPU first, then every usable device
/// of each GPU backend built in.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    let mut n = 0usize;
    check(unsafe { sys::kvfit_device_count(&mut n) })?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut d = unsafe { std::mem::zeroed::<sys::kvfit_device_info>() };
        d.struct_size = std::mem::size_of::<sys::kvfit_device_info>() as u32;
        check(unsafe { sys::kvfit_device_get_info(i, &mut d) })?;
        out.push(DeviceInfo {
            backend: Backend::from_raw(d.backend),
            index: u32::try_from(d.index).unwrap_or(0),
            device_type: match d.r#type {
                0 => DeviceType::Cpu,
                1 => DeviceType::IntegratedGpu,
                2 => DeviceType::DiscreteGpu,
                3 => DeviceType::VirtualGpu,
                4 => DeviceType::Other,
                other => DeviceType::Unknown(other),
            },
            name: unsafe { cstr_lossy(d.name) },
            memory_bytes: d.memory_bytes,
        });
    }
    Ok(out)
}

/// How a model is loaded.
#[derive(Debug, Clone, Default)]
pub struct ModelParams {
    pub backend: Backend,
    /// Only metadata and tokenizer: no weights, no sessions.
    pub vocab_only: bool,
    /// The device's index within the backend ([`DeviceInfo::index`]); None =
    /// the KVFIT_DEVICE environment variable if set, else the best device.
    pub device: Option<u32>,
}

/// What a model file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub arch: String,
    pub name: String,
    /// "llama" (SentencePiece) or "gpt2" (byte-level BPE).
    pub tokenizer: String,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_embd: u32,
    pub n_ctx_train: u32,
    pub n_vocab: u32,
    pub n_params: u64,
    pub weight_bytes: u64,
    pub bos_token: Option<Token>,
    pub eos_token: Option<Token>,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// A loaded GGUF model: immutable, shareable across threads and sessions.
pub struct Model {
    raw: NonNull<sys::kvfit_model>,
}

// The C ABI: a model is immutable after loading and may be used by any number
// of threads at once.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

unsafe extern "C" fn progress_trampoline(progress: f32, user: *mut c_void) -> bool {
    let f = &mut *(user as *mut &mut dyn FnMut(f32) -> bool);
    // A panicking callback cancels the load rather than unwinding into C.
    panic::catch_unwind(AssertUnwindSafe(|| f(progress))).unwrap_or(false)
}

#[cfg(unix)]
fn path_to_c(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::argument("the path contains a NUL byte".into()))
}

#[cfg(not(unix))]
fn path_to_c(path: &Path) -> Result<CString> {
    let s = path.to_str().ok_or_else(|| Error::argument("the path is not valid UTF-8".into()))?;
    c_string("the path", s)
}

impl Model {
    /// Loads a GGUF file (memory-mapped) with default parameters.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Model::load_with(path, &ModelParams::default(), None)
    }

    /// Loads a GGUF file. `progress` is called with values in [0, 1]; it
    /// returns false to cancel, which fails with [`ErrorKind::Cancelled`].
    pub fn load_with(
        path: impl AsRef<Path>,
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        let path = path_to_c(path.as_ref())?;
        let mut raw_params = unsafe {
            let mut p = std::mem::zeroed::<sys::kvfit_model_params>();
            sys::kvfit_model_params_init(&mut p);
            p
        };
        raw_params.backend = params.backend.to_raw();
        raw_params.vocab_only = params.vocab_only;
        if let Some(device) = params.device {
            raw_params.device =
                i32::try_from(device).map_err(|_| Error::argument(format!("device {device} is too large")))?;
        }
        let mut progress = progress;
        if let Some(f) = progress.as_mut() {
            raw_params.progress = Some(progress_trampoline);
            raw_params.progress_user_data = f as *mut &mut dyn FnMut(f32) -> bool as *mut c_void;
        }
        let mut out = ptr::null_mut();
        check(unsafe { sys::kvfit_model_load(path.as_ptr(), &raw_params, &mut out) })?;
        NonNull::new(out)
            .map(|raw| Model { raw })
            .ok_or_else(|| Error { kind: ErrorKind::Internal, message: "kvfit_model_load returned NULL".into() })
    }

    /// The raw handle, for calls this crate does not wrap. Owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::kvfit_model {
        self.raw.as_ptr()
    }

    pub fn info(&self) -> Result<ModelInfo> {
        let mut i = unsafe { std::mem::zeroed::<sys::kvfit_model_info>() };
        i.struct_size = std::mem::size_of::<sys::kvfit_model_info>() as u32;
        check(unsafe { sys::kvfit_model_get_info(self.raw.as_ptr(), &mut i) })?;
        let token = |t: i32| if t < 0 { None } else { Some(t) };
        Ok(ModelInfo {
            arch: unsafe { cstr_lossy(i.arch) },
            name: unsafe { cstr_lossy(i.name) },
            tokenizer: unsafe { cstr_lossy(i.tokenizer) },
            n_layer: i.n_layer,
            n_head: i.n_head,
            n_head_kv: i.n_head_kv,
            n_embd: i.n_embd,
            n_ctx_train: i.n_ctx_train,
            n_vocab: i.n_vocab,
            n_params: i.n_params,
            weight_bytes: i.weight_bytes,
            bos_token: token(i.bos_token),
            eos_token: token(i.eos_token),
        })
    }

    /// A GGUF metadata value as text ([`ErrorKind::Arg`] if the key is absent).
    pub fn meta(&self, key: &str) -> Result<String> {
        let key = c_string("the key", key)?;
        let bytes = read_sized(true, |buf, size, len| unsafe {
            sys::kvfit_model_meta(self.raw.as_ptr(), key.as_ptr(), buf, size, len)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Tokenizes text. `add_special` adds BOS/EOS as the model asks;
    /// `parse_special` turns control-token text such as "<|im_start|>" into
    /// those tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        let mut tokens = vec![0 as Token; text.len() + 8];
        loop {
            let mut n = 0usize;
            let code = unsafe {
                sys::kvfit_tokenize(
                    self.raw.as_ptr(),
                    text.as_ptr() as *const c_char,
                    text.len(),
                    add_special,
                    parse_special,
                    tokens.as_mut_ptr(),
                    tokens.len(),
                    &mut n,
                )
            };
            if code == sys::KVFIT_E_BUFFER_TOO_SMALL && n > tokens.len() {
                tokens.resize(n, 0);
                continue;
            }
            check(code)?;
            tokens.truncate(n);
            return Ok(tokens);
        }
    }

    /// The bytes of one token (possibly part of a UTF-8 character).
    pub fn token_to_piece(&self, token: Token, render_special: bool) -> Result<Vec<u8>> {
        read_sized(false, |buf, size, len| unsafe {
            sys::kvfit_token_to_piece(self.raw.as_ptr(), token, render_special, buf, size, len)
        })
    }

    /// The text of a token sequence; bytes that are not valid UTF-8 (a
    /// character cut short) become U+FFFD.
    pub fn detokenize(&self, tokens: &[Token], render_special: bool) -> Result<String> {
        let bytes = read_sized(false, |buf, size, len| unsafe {
            sys::kvfit_detokenize(self.raw.as_ptr(), tokens.as_ptr(), tokens.len(), render_special, buf, size, len)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...).
    pub fn is_eog(&self, token: Token) -> bool {
        unsafe { sys::kvfit_token_is_eog(self.raw.as_ptr(), token) }
    }

    /// The chat template family the model's own template resembles ("chatml",
    /// "llama3", ..., "custom" for none kvfit knows by name).
    pub fn chat_template(&self) -> &'static str {
        unsafe { CStr::from_ptr(sys::kvfit_model_chat_template(self.raw.as_ptr())) }.to_str().unwrap_or("chatml")
    }

    /// Renders a conversation: None renders the model's own Jinja template as
    /// Hugging Face does, a family name ("chatml", ...) a built-in rendering,
    /// Jinja text that template itself ([`ErrorKind::Template`] if it refuses
    /// the conversation, [`ErrorKind::Unsupported`] for Jinja kvfit lacks);
    /// `add_assistant` appends the header that opens the assistant's turn.
    pub fn apply_chat_template(
        &self,
        template: Option<&str>,
        messages: &[ChatMessage],
        add_assistant: bool,
    ) -> Result<String> {
        let template = template.map(|t| c_string("the template name", t)).transpose()?;
        let mut owned = Vec::with_capacity(messages.len());
        for m in messages {
            owned.push((c_string("a message role", &m.role)?, c_string("a message", &m.content)?));
        }
        let raw: Vec<sys::kvfit_chat_message> =
            owned.iter().map(|(r, c)| sys::kvfit_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
        let template_ptr = template.as_ref().map_or(ptr::null(), |t| t.as_ptr());
        let bytes = read_sized(true, |buf, size, len| unsafe {
            sys::kvfit_chat_apply(self.raw.as_ptr(), template_ptr, raw.as_ptr(), raw.len(), add_assistant, buf, size, len)
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::kvfit_model_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("raw", &self.raw).finish()
    }
}

/// How an attention layer stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KvCodec {
    /// The planner chooses.
    #[default]
    Auto,
    F16,
    Q8,
    Q4,
    /// Q4 with keys rotated by a fixed randomized Hadamard transform first.
    Q4Hadamard,
    /// Q4 with keys grouped per channel over blocks of 32 tokens; windows are multiples of 32.
    Q4Channel,
    /// 32-bit floats: recurrent layers' state (reported by plans, not requested).
    F32,
    /// bfloat16: a recurrent layer's state matrix kept in BF16 (reported by plans, not requested).
    Bf16,
    /// A codec this binding does not know (from a newer library).
    Unknown(i32),
}

impl KvCodec {
    fn from_raw(v: i32) -> KvCodec {
        match v {
            0 => KvCodec::Auto,
            1 => KvCodec::F16,
            2 => KvCodec::Q8,
            3 => KvCodec::Q4,
            4 => KvCodec::Q4Hadamard,
            5 => KvCodec::Q4Channel,
            6 => KvCodec::F32,
            7 => KvCodec::Bf16,
            other => KvCodec::Unknown(other),
        }
    }

    fn to_raw(self) -> i32 {
        match self {
            KvCodec::Auto => 0,
            KvCodec::F16 => 1,
            KvCodec::Q8 => 2,
            KvCodec::Q4 => 3,
            KvCodec::Q4Hadamard => 4,
            KvCodec::Q4Channel => 5,
            KvCodec::F32 => 6,
            KvCodec::Bf16 => 7,
            KvCodec::Unknown(v) => v,
        }
    }
}

impl fmt::Display for KvCodec {
    /// The names kvfit's command-line tools use: auto, f16, q8, q4, q4h, q4c, f32, bf16.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvCodec::Auto => f.write_str("auto"),
            KvCodec::F16 => f.write_str("f16"),
            KvCodec::Q8 => f.write_str("q8"),
            KvCodec::Q4 => f.write_str("q4"),
            KvCodec::Q4Hadamard => f.write_str("q4h"),
            KvCodec::Q4Channel => f.write_str("q4c"),
            KvCodec::F32 => f.write_str("f32"),
            KvCodec::Bf16 => f.write_str("bf16"),
            KvCodec::Unknown(v) => write!(f, "codec {v}"),
        }
    }
}

/// A session's KV memory; see `kvfit_session_params` in kvfit.h.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// Dense: tokens the cache holds; streaming: the context the planner aims
    /// to cover. 0 = the model's training context.
    pub n_ctx: u32,
    /// Tokens per prefill step; 0 = 512.
    pub n_batch: u32,
    /// CPU threads; 0 = all cores (at most 16).
    pub n_threads: i32,
    /// 0 = no budget (dense unless `n_window` is set). Everything the session
    /// keeps per token is allocated at creation inside this many bytes.
    pub kv_budget_bytes: u64,
    /// Sink tokens per attention layer; None = 4 when streaming.
    pub n_sink: Option<u32>,
    /// Ring size in tokens; 0 = the planner decides.
    pub n_window: u32,
    pub kv_codec: KvCodec,
}

impl Default for SessionParams {
    /// The library's defaults.
    fn default() -> SessionParams {
        let p = raw_session_params_default();
        SessionParams {
            n_ctx: p.n_ctx,
            n_batch: p.n_batch,
            n_threads: p.n_threads,
            kv_budget_bytes: p.kv_budget_bytes,
            n_sink: u32::try_from(p.n_sink).ok(),
            n_window: p.n_window,
            kv_codec: KvCodec::from_raw(p.kv_codec),
        }
    }
}

fn raw_session_params_default() -> sys::kvfit_session_params {
    unsafe {
        let mut p = std::mem::zeroed::<sys::kvfit_session_params>();
        sys::kvfit_session_params_init(&mut p);
        p
    }
}

impl SessionParams {
    fn to_raw(&self) -> Result<sys::kvfit_session_params> {
        let mut p = raw_session_params_default();
        p.n_ctx = self.n_ctx;
        p.n_batch = self.n_batch;
        p.n_threads = self.n_threads;
        p.kv_budget_bytes = self.kv_budget_bytes;
        p.n_sink = match self.n_sink {
            None => -1,
            Some(n) => i32::try_from(n).map_err(|_| Error::argument(format!("n_sink {n} is too large")))?,
        };
        p.n_window = self.n_window;
        p.kv_codec = self.kv_codec.to_raw();
        Ok(p)
    }
}

/// Whether a layer attends to every token, to sinks + a sliding window or
/// to the model's own sliding window, or keeps a fixed-size recurrent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerKind {
    Dense,
    Streaming,
    Window,
    Recurrent,
    Unknown(i32),
}

/// What the planner chose for one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPlan {
    pub kind: LayerKind,
    pub codec: KvCodec,
    pub n_sink: u32,
    /// Dense layers: the tokens they hold.
    pub n_window: u32,
    /// Everything this layer keeps: codes, scales, minima.
    pub bytes: u64,
}

/// A session's plan: one entry per layer and the bytes of all KV state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub layers: Vec<LayerPlan>,
    pub total_bytes: u64,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// `max_tokens` reached.
    Length,
    /// The token callback returned false.
    Callback,
    /// The session's cache is full.
    ContextFull,
    Unknown(i32),
}

/// Options of [`Session::generate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    pub max_tokens: u32,
    /// Pass control tokens' text to the callback.
    pub render_special: bool,
}

impl Default for GenerateOptions {
    /// The library's defaults.
    fn default() -> GenerateOptions {
        let p = raw_generate_params_default();
        GenerateOptions { max_tokens: p.max_tokens, render_special: p.render_special }
    }
}

fn raw_generate_params_default() -> sys::kvfit_generate_params {
    unsafe {
        let mut p = std::mem::zeroed::<sys::kvfit_generate_params>();
        sys::kvfit_generate_params_init(&mut p);
        p
    }
}

/// How a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Tokens generated (an end-of-generation token is not counted).
    pub n_generated: u32,
    pub stop_reason: StopReason,
}

type TokenCallback<'f> = dyn FnMut(Option<Token>, &str) -> bool + 'f;

struct TokenSink<'a, 'f> {
    callback: &'a mut TokenCallback<'f>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn token_trampoline(token: i32, text: *const c_char, len: usize, user: *mut c_void) -> bool {
    let sink = &mut *(user as *mut TokenSink);
    if sink.panic.is_some() {
        return false;
    }
    let bytes = if len == 0 || text.is_null() { &[][..] } else { slice::from_raw_parts(text as *const u8, len) };
    let text = String::from_utf8_lossy(bytes);
    let token = if token < 0 { None } else { Some(token) };
    // The panic is carried across the C frames and resumed on our side.
    match panic::catch_unwind(AssertUnwindSafe(|| (sink.callback)(token, &text))) {
        Ok(go_on) => go_on,
        Err(payload) => {
            sink.panic = Some(payload);
            false
        }
    }
}

/// A conversation's state on a model: its KV memory, position and logits.
/// Used by one thread at a time; it cannot outlive its model:
///
/// ```compile_fail
/// let session = {
///     let model = kvfit::Model::load("model.gguf").unwrap();
///     kvfit::Session::new(&model, &Default::default()).unwrap()
/// }; // error: `model` does not live long enough
/// ```
pub struct Session<'m> {
    raw: NonNull<sys::kvfit_session>,
    _model: PhantomData<&'m Model>,
}

// The C ABI: a session may move between threads but is used by one at a time
// (so it is not Sync).
unsafe impl Send for Session<'_> {}

impl<'m> Session<'m> {
    /// Creates a session; all its memory is allocated now. A budget too small
    /// for any plan fails with [`ErrorKind::Budget`], the message naming the
    /// smallest budget that works.
    pub fn new(model: &'m Model, params: &SessionParams) -> Result<Session<'m>> {
        let raw_params = params.to_raw()?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::kvfit_session_create(model.raw.as_ptr(), &raw_params, &mut out) })?;
        NonNull::new(out)
            .map(|raw| Session { raw, _model: PhantomData })
            .ok_or_else(|| Error { kind: ErrorKind::Internal, message: "kvfit_session_create returned NULL".into() })
    }

    /// The raw handle, for calls this crate does not wrap. Owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::kvfit_session {
        self.raw.as_ptr()
    }

    /// Forgets all tokens; the memory stays allocated.
    pub fn reset(&mut self) -> Result<()> {
        check(unsafe { sys::kvfit_session_reset(self.raw.as_ptr()) })
    }

    /// Appends tokens, computing the logits of the last one.
    pub fn prefill(&mut self, tokens: &[Token]) -> Result<()> {
        check(unsafe { sys::kvfit_session_prefill(self.raw.as_ptr(), tokens.as_ptr(), tokens.len()) })
    }

    /// Appends one token and computes its logits.
    pub fn decode(&mut self, token: Token) -> Result<()> {
        check(unsafe { sys::kvfit_session_decode(self.raw.as_ptr(), token) })
    }

    /// Logits of the newest token ([`ErrorKind::State`] before any token).
    pub fn logits(&self) -> Result<&[f32]> {
        let mut p = ptr::null();
        let mut n = 0usize;
        check(unsafe { sys::kvfit_session_logits(self.raw.as_ptr(), &mut p, &mut n) })?;
        // Valid until the session changes, which needs `&mut self`.
        Ok(if n == 0 { &[] } else { unsafe { slice::from_raw_parts(p, n) } })
    }

    /// Tokens the session holds.
    pub fn n_past(&self) -> u64 {
        unsafe { sys::kvfit_session_n_past(self.raw.as_ptr()) }
    }

    /// Bytes allocated for per-token and per-sequence state.
    pub fn kv_bytes(&self) -> u64 {
        unsafe { sys::kvfit_session_kv_bytes(self.raw.as_ptr()) }
    }

    /// What the planner chose, per layer.
    pub fn plan(&self) -> Result<Plan> {
        let mut n = 0usize;
        check(unsafe { sys::kvfit_session_plan(self.raw.as_ptr(), ptr::null_mut(), 0, &mut n, ptr::null_mut()) })?;
        let empty = sys::kvfit_layer_plan { kind: 0, codec: 0, n_sink: 0, n_window: 0, bytes: 0 };
        let mut layers = vec![empty; n];
        let mut total = 0u64;
        check(unsafe {
            sys::kvfit_session_plan(self.raw.as_ptr(), layers.as_mut_ptr(), layers.len(), &mut n, &mut total)
        })?;
        layers.truncate(n);
        let layers = layers
            .iter()
            .map(|l| LayerPlan {
                kind: match l.kind {
                    0 => LayerKind::Dense,
                    1 => LayerKind::Streaming,
                    2 => LayerKind::Window,
                    3 => LayerKind::Recurrent,
                    other => LayerKind::Unknown(other),
                },
                codec: KvCodec::from_raw(l.codec),
                n_sink: l.n_sink,
                n_window: l.n_window,
                bytes: l.bytes,
            })
            .collect();
        Ok(Plan { layers, total_bytes: total })
    }

    /// The session's state (tokens' KV, position, logits) as bytes, loadable
    /// into a session of the same model with the same plan.
    pub fn save_state(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        check(unsafe { sys::kvfit_session_state_size(self.raw.as_ptr(), &mut size) })?;
        let mut buf = vec![0u8; size];
        let mut written = 0usize;
        check(unsafe {
            sys::kvfit_session_save(self.raw.as_ptr(), buf.as_mut_ptr() as *mut c_void, buf.len(), &mut written)
        })?;
        buf.truncate(written);
        Ok(buf)
    }

    /// Restores what [`Session::save_state`] wrote; the session is unchanged on failure.
    pub fn load_state(&mut self, state: &[u8]) -> Result<()> {
        check(unsafe { sys::kvfit_session_load(self.raw.as_ptr(), state.as_ptr() as *const c_void, state.len()) })
    }

    /// Like [`Session::prefill`], returning -log p(token | everything before)
    /// in nats for each token (NaN for the first if the session had no logits).
    pub fn prefill_nll(&mut self, tokens: &[Token]) -> Result<Vec<f32>> {
        let mut nll = vec![0f32; tokens.len()];
        check(unsafe {
            sys::kvfit_session_prefill_nll(self.raw.as_ptr(), tokens.as_ptr(), tokens.len(), nll.as_mut_ptr())
        })?;
        Ok(nll)
    }

    /// Prefills `prompt` (may be empty if the session has logits), then
    /// samples and appends tokens until an end-of-generation token,
    /// `max_tokens`, the callback returning false, or a full cache.
    ///
    /// `on_token` receives each token with its newly completed UTF-8 text
    /// (possibly empty while a character is incomplete), and `None` with any
    /// bytes left pending when generation ends. `sampler` None = greedy. A
    /// panic in the callback stops generation and is resumed here.
    pub fn generate<F>(
        &mut self,
        prompt: &[Token],
        sampler: Option<&mut Sampler>,
        options: &GenerateOptions,
        mut on_token: F,
    ) -> Result<Generation>
    where
        F: FnMut(Option<Token>, &str) -> bool,
    {
        let mut sink = TokenSink { callback: &mut on_token, panic: None };
        let mut params = raw_generate_params_default();
        params.max_tokens = options.max_tokens;
        params.render_special = options.render_special;
        params.on_token = Some(token_trampoline);
        params.user_data = &mut sink as *mut TokenSink as *mut c_void;
        let mut result = sys::kvfit_generate_result {
            struct_size: std::mem::size_of::<sys::kvfit_generate_result>() as u32,
            n_generated: 0,
            stop_reason: 0,
        };
        let sampler_ptr = sampler.map_or(ptr::null_mut(), |s| s.raw.as_ptr());
        let code = unsafe {
            sys::kvfit_generate(self.raw.as_ptr(), prompt.as_ptr(), prompt.len(), sampler_ptr, &params, &mut result)
        };
        let outcome = check(code);
        if let Some(payload) = sink.panic.take() {
            panic::resume_unwind(payload);
        }
        outcome?;
        let stop_reason = match result.stop_reason {
            0 => StopReason::EndOfGeneration,
            1 => StopReason::Length,
            2 => StopReason::Callback,
            3 => StopReason::ContextFull,
            other => StopReason::Unknown(other),
        };
        Ok(Generation { n_generated: result.n_generated, stop_reason })
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        unsafe { sys::kvfit_session_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("raw", &self.raw).field("n_past", &self.n_past()).finish()
    }
}

/// Sampling settings; see `kvfit_sampler_params` in kvfit.h.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    /// <= 0: greedy (argmax).
    pub temperature: f32,
    /// <= 0: off.
    pub top_k: i32,
    /// >= 1: off.
    pub top_p: f32,
    /// <= 0: off.
    pub min_p: f32,
    /// 1: off.
    pub repeat_penalty: f32,
    /// Tokens of history the penalty looks at.
    pub repeat_last_n: i32,
    /// The same seed and logits give the same tokens.
    pub seed: u64,
}

impl Default for SamplerParams {
    /// The library's defaults.
    fn default() -> SamplerParams {
        let p = raw_sampler_params_default();
        SamplerParams {
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            min_p: p.min_p,
            repeat_penalty: p.repeat_penalty,
            repeat_last_n: p.repeat_last_n,
            seed: p.seed,
        }
    }
}

fn raw_sampler_params_default() -> sys::kvfit_sampler_params {
    unsafe {
        let mut p = std::mem::zeroed::<sys::kvfit_sampler_params>();
        sys::kvfit_sampler_params_init(&mut p);
        p
    }
}

/// A sampling chain with its own history and random state. Used by one
/// thread at a time.
pub struct Sampler {
    raw: NonNull<sys::kvfit_sampler>,
}

// The C ABI: a sampler is used by one thread at a time.
unsafe impl Send for Sampler {}

impl Sampler {
    pub fn new(params: &SamplerParams) -> Result<Sampler> {
        let mut p = raw_sampler_params_default();
        p.temperature = params.temperature;
        p.top_k = params.top_k;
        p.top_p = params.top_p;
        p.min_p = params.min_p;
        p.repeat_penalty = params.repeat_penalty;
        p.repeat_last_n = params.repeat_last_n;
        p.seed = params.seed;
        let mut out = ptr::null_mut();
        check(unsafe { sys::kvfit_sampler_create(&p, &mut out) })?;
        NonNull::new(out)
            .map(|raw| Sampler { raw })
            .ok_or_else(|| Error { kind: ErrorKind::Internal, message: "kvfit_sampler_create returned NULL".into() })
    }

    /// Forgets the history and reseeds.
    pub fn reset(&mut self) {
        unsafe { sys::kvfit_sampler_reset(self.raw.as_ptr()) }
    }

    /// Picks a token from the session's current logits (does not append it).
    pub fn sample(&mut self, session: &Session<'_>) -> Result<Token> {
        let mut token = 0;
        check(unsafe { sys::kvfit_sampler_sample(self.raw.as_ptr(), session.raw.as_ptr(), &mut token) })?;
        Ok(token)
    }

    /// Records a token in the history the repetition penalty looks at.
    pub fn accept(&mut self, token: Token) -> Result<()> {
        check(unsafe { sys::kvfit_sampler_accept(self.raw.as_ptr(), token) })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        unsafe { sys::kvfit_sampler_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler").field("raw", &self.raw).finish()
    }
}

#[cfg(test)]
mod layout_tests {
    use super::sys;

    /// Each `*_params_init` writes the C struct's size into `struct_size`:
    /// run it on a roomy buffer and compare with our declaration's size.
    macro_rules! assert_c_size {
        ($init:path, $ty:ty) => {{
            let mut buf = [0u64; 64];
            unsafe { $init(buf.as_mut_ptr() as *mut $ty) };
            let c_size = unsafe { *(buf.as_ptr() as *const u32) } as usize;
            assert_eq!(c_size, std::mem::size_of::<$ty>(), stringify!($ty));
        }};
    }

    #[test]
    fn params_structs_match_the_c_header() {
        assert_c_size!(sys::kvfit_model_params_init, sys::kvfit_model_params);
        assert_c_size!(sys::kvfit_session_params_init, sys::kvfit_session_params);
        assert_c_size!(sys::kvfit_sampler_params_init, sys::kvfit_sampler_params);
        assert_c_size!(sys::kvfit_generate_params_init, sys::kvfit_generate_params);
    }
}
