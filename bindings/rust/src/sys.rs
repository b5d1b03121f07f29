//! Raw declarations of the C ABI in `kvfit.h`, one to one. Everything here is
//! unsafe to use; the crate root wraps it. C enums are pinned to 32 bits by
//! their `*_MAX_ENUM` members, so they appear as `i32`.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_void};

pub type kvfit_status = i32;
pub type kvfit_log_level = i32;
pub type kvfit_backend_kind = i32;
pub type kvfit_device_type = i32;
pub type kvfit_kv_codec = i32;
pub type kvfit_layer_kind = i32;
pub type kvfit_stop_reason = i32;

pub const KVFIT_OK: kvfit_status = 0;
pub const KVFIT_E_ARG: kvfit_status = -1;
pub const KVFIT_E_BUFFER_TOO_SMALL: kvfit_status = -2;
pub const KVFIT_E_UTF8: kvfit_status = -3;
pub const KVFIT_E_TOKEN: kvfit_status = -4;
pub const KVFIT_E_STATE: kvfit_status = -5;
pub const KVFIT_E_IO: kvfit_status = -100;
pub const KVFIT_E_FORMAT: kvfit_status = -101;
pub const KVFIT_E_UNSUPPORTED: kvfit_status = -102;
pub const KVFIT_E_NOMEM: kvfit_status = -200;
pub const KVFIT_E_BUDGET: kvfit_status = -201;
pub const KVFIT_E_CONTEXT_FULL: kvfit_status = -202;
pub const KVFIT_E_BACKEND: kvfit_status = -300;
pub const KVFIT_E_BACKEND_UNAVAILABLE: kvfit_status = -301;
pub const KVFIT_E_CANCELLED: kvfit_status = -400;
pub const KVFIT_E_INTERNAL: kvfit_status = -500;
pub const KVFIT_E_TEMPLATE: kvfit_status = -600;

#[repr(C)]
pub struct kvfit_model {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvfit_session {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct kvfit_sampler {
    _opaque: [u8; 0],
}

pub type kvfit_log_fn = Option<unsafe extern "C" fn(level: kvfit_log_level, message: *const c_char, user_data: *mut c_void)>;
pub type kvfit_progress_fn = Option<unsafe extern "C" fn(progress: f32, user_data: *mut c_void) -> bool>;
pub type kvfit_token_fn =
    Option<unsafe extern "C" fn(token: i32, text: *const c_char, text_len: usize, user_data: *mut c_void) -> bool>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_model_params {
    pub struct_size: u32,
    pub backend: kvfit_backend_kind,
    pub progress: kvfit_progress_fn,
    pub progress_user_data: *mut c_void,
    pub vocab_only: bool,
    pub device: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_device_info {
    pub struct_size: u32,
    pub backend: kvfit_backend_kind,
    pub index: i32,
    pub r#type: kvfit_device_type,
    pub name: *const c_char,
    pub memory_bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_model_info {
    pub struct_size: u32,
    pub arch: *const c_char,
    pub name: *const c_char,
    pub tokenizer: *const c_char,
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_embd: u32,
    pub n_ctx_train: u32,
    pub n_vocab: u32,
    pub n_params: u64,
    pub weight_bytes: u64,
    pub bos_token: i32,
    pub eos_token: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_session_params {
    pub struct_size: u32,
    pub n_ctx: u32,
    pub n_batch: u32,
    pub n_threads: i32,
    pub kv_budget_bytes: u64,
    pub n_sink: i32,
    pub n_window: u32,
    pub kv_codec: kvfit_kv_codec,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_layer_plan {
    pub kind: kvfit_layer_kind,
    pub codec: kvfit_kv_codec,
    pub n_sink: u32,
    pub n_window: u32,
    pub bytes: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_sampler_params {
    pub struct_size: u32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub seed: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_generate_params {
    pub struct_size: u32,
    pub max_tokens: u32,
    pub on_token: kvfit_token_fn,
    pub user_data: *mut c_void,
    pub render_special: bool,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct kvfit_generate_result {
    pub struct_size: u32,
    pub n_generated: u32,
    pub stop_reason: kvfit_stop_reason,
}

extern "C" {
    pub fn kvfit_version() -> *const c_char;
    pub fn kvfit_version_number() -> u32;
    pub fn kvfit_status_str(status: kvfit_status) -> *const c_char;
    pub fn kvfit_last_error() -> *const c_char;
    pub fn kvfit_set_log_callback(f: kvfit_log_fn, min_level: kvfit_log_level, user_data: *mut c_void);

    pub fn kvfit_model_params_init(params: *mut kvfit_model_params);
    pub fn kvfit_device_count(n_devices: *mut usize) -> kvfit_status;
    pub fn kvfit_device_get_info(i: usize, info: *mut kvfit_device_info) -> kvfit_status;
    pub fn kvfit_model_load(path: *const c_char, params: *const kvfit_model_params, out_model: *mut *mut kvfit_model)
        -> kvfit_status;
    pub fn kvfit_model_free(model: *mut kvfit_model);
    pub fn kvfit_model_get_info(model: *const kvfit_model, info: *mut kvfit_model_info) -> kvfit_status;
    pub fn kvfit_model_meta(
        model: *const kvfit_model,
        key: *const c_char,
        buf: *mut c_char,
        buf_size: usize,
        len: *mut usize,
    ) -> kvfit_status;

    pub fn kvfit_tokenize(
        model: *const kvfit_model,
        text: *const c_char,
        text_len: usize,
        add_special: bool,
        parse_special: bool,
        tokens: *mut i32,
        capacity: usize,
        n_tokens: *mut usize,
    ) -> kvfit_status;
    pub fn kvfit_token_to_piece(
        model: *const kvfit_model,
        token: i32,
        render_special: bool,
        buf: *mut c_char,
        buf_size: usize,
        len: *mut usize,
    ) -> kvfit_status;
    pub fn kvfit_detokenize(
        model: *const kvfit_model,
        tokens: *const i32,
        n_tokens: usize,
        render_special: bool,
        buf: *mut c_char,
        buf_size: usize,
        len: *mut usize,
    ) -> kvfit_status;
    pub fn kvfit_token_is_eog(model: *const kvfit_model, token: i32) -> bool;

    pub fn kvfit_model_chat_template(model: *const kvfit_model) -> *const c_char;
    pub fn kvfit_chat_apply(
        model: *const kvfit_model,
        template_name: *const c_char,
        messages: *const kvfit_chat_message,
        n_messages: usize,
        add_assistant: bool,
        buf: *mut c_char,
        buf_size: usize,
        len: *mut usize,
    ) -> kvfit_status;

    pub fn kvfit_session_params_init(params: *mut kvfit_session_params);
    pub fn kvfit_session_create(
        model: *mut kvfit_model,
        params: *const kvfit_session_params,
        out_session: *mut *mut kvfit_session,
    ) -> kvfit_status;
    pub fn kvfit_session_free(session: *mut kvfit_session);
    pub fn kvfit_session_reset(session: *mut kvfit_session) -> kvfit_status;
    pub fn kvfit_session_prefill(session: *mut kvfit_session, tokens: *const i32, n_tokens: usize) -> kvfit_status;
    pub fn kvfit_session_decode(session: *mut kvfit_session, token: i32) -> kvfit_status;
    pub fn kvfit_session_logits(session: *const kvfit_session, logits: *mut *const f32, n_vocab: *mut usize)
        -> kvfit_status;
    pub fn kvfit_session_n_past(session: *const kvfit_session) -> u64;
    pub fn kvfit_session_kv_bytes(session: *const kvfit_session) -> u64;
    pub fn kvfit_session_plan(
        session: *const kvfit_session,
        layers: *mut kvfit_layer_plan,
        capacity: usize,
        n_layers: *mut usize,
        total_bytes: *mut u64,
    ) -> kvfit_status;
    pub fn kvfit_session_state_size(session: *const kvfit_session, size: *mut usize) -> kvfit_status;
    pub fn kvfit_session_save(session: *const kvfit_session, buf: *mut c_void, buf_size: usize, written: *mut usize)
        -> kvfit_status;
    pub fn kvfit_session_load(session: *mut kvfit_session, buf: *const c_void, size: usize) -> kvfit_status;
    pub fn kvfit_session_prefill_nll(
        session: *mut kvfit_session,
        tokens: *const i32,
        n_tokens: usize,
        nll: *mut f32,
    ) -> kvfit_status;

    pub fn kvfit_sampler_params_init(params: *mut kvfit_sampler_params);
    pub fn kvfit_sampler_create(params: *const kvfit_sampler_params, out_sampler: *mut *mut kvfit_sampler)
        -> kvfit_status;
    pub fn kvfit_sampler_free(sampler: *mut kvfit_sampler);
    pub fn kvfit_sampler_reset(sampler: *mut kvfit_sampler);
    pub fn kvfit_sampler_sample(sampler: *mut kvfit_sampler, session: *const kvfit_session, token: *mut i32)
        -> kvfit_status;
    pub fn kvfit_sampler_accept(sampler: *mut kvfit_sampler, token: i32) -> kvfit_status;

    pub fn kvfit_generate_params_init(params: *mut kvfit_generate_params);
    pub fn kvfit_generate(
        session: *mut kvfit_session,
        prompt: *const i32,
        n_prompt: usize,
        sampler: *mut kvfit_sampler,
        params: *const kvfit_generate_params,
        result: *mut kvfit_generate_result,
    ) -> kvfit_status;
}
