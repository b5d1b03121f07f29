/*
 * kvfit.h -- the whole public C ABI of kvfit, an embeddable LLM inference
 * runtime whose sessions live inside a KV memory budget fixed up front.
 *
 * Conventions
 * -----------
 * - C99, no C++ in this header. Every exported symbol starts with kvfit_.
 * - Handles are opaque. A kvfit_model is immutable after loading and may be
 *   shared by any number of sessions on any number of threads. A
 *   kvfit_session and a kvfit_sampler are used by one thread at a time.
 * - Parameter structs begin with `uint32_t struct_size`; fill them with the
 *   matching kvfit_*_params_init() and pass them by pointer. New fields are
 *   only ever added at the end, so a program built against an older header
 *   keeps working.
 * - Every fallible function returns a kvfit_status (0 = success). On failure
 *   kvfit_last_error() returns a message for the calling thread, valid until
 *   the next kvfit call on that thread. Nothing aborts, exits, throws across
 *   this boundary or prints to stdout; logging goes through the optional
 *   callback.
 * - Whatever kvfit_*_load / kvfit_*_create returns is released by the matching
 *   kvfit_*_free, which accepts NULL. Output parameters are left untouched on
 *   failure unless documented otherwise. Strings and arrays the library
 *   returns belong to it, for as long as documented at each call; the caller
 *   owns every buffer it passes in.
 * - Functions on a model are thread-safe unless noted. Functions on a session
 *   or sampler must not run concurrently with another call on the same
 *   session or sampler; different sessions may run on different threads at
 *   once. A handle must not be freed while another thread uses it.
 * - Callbacks run on the thread that made the call (the log callback: on any
 *   thread that calls kvfit) and must not free the handle they were called
 *   for.
 * - Every function that takes a handle returns KVFIT_E_ARG for NULL (functions
 *   returning a value instead of a status return 0, false or a default).
 *
 * Minimal use
 * -----------
 *   kvfit_model *m; kvfit_session *s;
 *   kvfit_model_load("model.gguf", NULL, &m);
 *   kvfit_session_create(m, NULL, &s);
 *   int32_t ids[256]; size_t n;
 *   kvfit_tokenize(m, "Hello", 5, true, false, ids, 256, &n);
 *   kvfit_generate(s, ids, n, NULL, NULL, NULL);   (see kvfit_generate_params)
 *   kvfit_session_free(s); kvfit_model_free(m);
 */
#ifndef KVFIT_H
#define KVFIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(KVFIT_BUILDING_LIBRARY)
#define KVFIT_API __attribute__((visibility("default")))
#else
#define KVFIT_API
#endif

/* ---- Versions ----------------------------------------------------------- */

#define KVFIT_VERSION_MAJOR 0 /* ABI major: also the SONAME suffix */
#define KVFIT_VERSION_MINOR 1
#define KVFIT_VERSION_PATCH 0
#define KVFIT_VERSION_NUMBER (KVFIT_VERSION_MAJOR * 10000 + KVFIT_VERSION_MINOR * 100 + KVFIT_VERSION_PATCH)

/* "MAJOR.MINOR.PATCH" of the library actually loaded. Thread-safe. */
KVFIT_API const char *kvfit_version(void);
/* KVFIT_VERSION_NUMBER of the library actually loaded. Thread-safe. */
KVFIT_API uint32_t kvfit_version_number(void);

/* ---- Status codes -------------------------------------------------------- */

typedef enum kvfit_status {
    KVFIT_OK = 0,

    /* -1 .. -99: the caller passed something wrong */
    KVFIT_E_ARG = -1,              /* invalid argument (NULL handle, bad value, bad struct_size) */
    KVFIT_E_BUFFER_TOO_SMALL = -2, /* output buffer too small; the needed size is reported */
    KVFIT_E_UTF8 = -3,             /* text is not valid UTF-8 */
    KVFIT_E_TOKEN = -4,            /* token id outside the vocabulary */
    KVFIT_E_STATE = -5,            /* call not valid in the current state (e.g. no logits yet) */

    /* -100 .. -199: the model file */
    KVFIT_E_IO = -100,          /* file missing or unreadable */
    KVFIT_E_FORMAT = -101,      /* not a GGUF file, truncated or corrupt */
    KVFIT_E_UNSUPPORTED = -102, /* valid file, but an architecture, tensor type or tokenizer kvfit lacks */

    /* -200 .. -299: memory, budget and context */
    KVFIT_E_NOMEM = -200,        /* an allocation failed */
    KVFIT_E_BUDGET = -201,       /* the KV budget cannot hold even the smallest plan */
    KVFIT_E_CONTEXT_FULL = -202, /* the session's cache has no room for these tokens */

    /* -300 .. -399: backends */
    KVFIT_E_BACKEND = -300,             /* a backend operation failed */
    KVFIT_E_BACKEND_UNAVAILABLE = -301, /* the requested backend is not built or has no device */

    /* -400 .. -499: control flow */
    KVFIT_E_CANCELLED = -400, /* a progress callback asked to stop */

    KVFIT_E_INTERNAL = -500, /* a bug in kvfit: please report it with the message */

    /* -600 .. -699: chat templates */
    KVFIT_E_TEMPLATE = -600, /* the chat template refused the conversation (its raise_exception, e.g. roles
                                that do not alternate) or failed while rendering it */

    KVFIT_STATUS_MAX_ENUM = 0x7FFFFFFF /* pins the enum to 32 bits */
} kvfit_status;

/* Short constant name of a status ("KVFIT_E_FORMAT"); never NULL. Thread-safe. */
KVFIT_API const char *kvfit_status_str(kvfit_status status);
/* Message describing the last failure on the calling thread ("" if none).
 * The pointer stays valid until the next kvfit call on this thread. */
KVFIT_API const char *kvfit_last_error(void);

/* ---- Logging -------------------------------------------------------------- */

typedef enum kvfit_log_level {
    KVFIT_LOG_DEBUG = 0,
    KVFIT_LOG_INFO = 1,
    KVFIT_LOG_WARN = 2,
    KVFIT_LOG_ERROR = 3,
    KVFIT_LOG_MAX_ENUM = 0x7FFFFFFF
} kvfit_log_level;

typedef void (*kvfit_log_fn)(kvfit_log_level level, const char *message, void *user_data);

/* Route kvfit's log lines at or above min_level to fn (NULL = silence, the
 * default), passing user_data back. Process-wide and thread-safe; fn may be
 * called from any thread that calls kvfit, one line at a time under kvfit's
 * log lock, so it must not call kvfit_set_log_callback itself. message is
 * valid during the call only. */
KVFIT_API void kvfit_set_log_callback(kvfit_log_fn fn, kvfit_log_level min_level, void *user_data);

/* ---- CPU threads ----------------------------------------------------------- */

/* The CPU backend splits each of a session's parallel loops into the
 * session's n_threads parts (kvfit_session_params). The parts run on the
 * thread that called kvfit and on worker threads that the whole process
 * shares: one set of workers for all models and sessions, started when the
 * first session with n_threads > 1 is created and stopped when the last one
 * is freed, so concurrent sessions share workers instead of each starting
 * its own. The thread limit caps the threads computing one loop: the caller
 * plus at most limit - 1 shared workers, which is also the number of workers
 * in the process. Sessions on several application threads add those threads,
 * each computing its own session's loops; every session makes progress even
 * when all workers are busy with others. Results do not depend on the limit
 * or on the number of threads.
 *
 * kvfit_set_thread_limit sets the limit for the process: 1..256, or 0 for the
 * default, the number of cores the process may run on (at most 16). It applies at once to running
 * sessions: a lower limit idles the surplus workers, a higher one starts
 * workers if any session is running. Thread-safe. Errors: KVFIT_E_ARG (n out
 * of range; nothing changes), KVFIT_E_NOMEM (the system refused new threads;
 * the limit is set and the workers that could start are used). */
KVFIT_API kvfit_status kvfit_set_thread_limit(int32_t limit);
/* The thread limit in effect (the default resolved). Thread-safe. */
KVFIT_API int32_t kvfit_get_thread_limit(void);

/* ---- Models ---------------------------------------------------------------- */

typedef struct kvfit_model kvfit_model;
typedef struct kvfit_session kvfit_session;
typedef struct kvfit_sampler kvfit_sampler;

typedef enum kvfit_backend_kind {
    KVFIT_BACKEND_AUTO = 0, /* CUDA, then Vulkan on a GPU, then CPU; the KVFIT_BACKEND env var
                               (auto, cpu, cuda, vulkan) overrides */
    KVFIT_BACKEND_CPU = 1,
    KVFIT_BACKEND_CUDA = 2,
    KVFIT_BACKEND_VULKAN = 3,
    KVFIT_BACKEND_MAX_ENUM = 0x7FFFFFFF
} kvfit_backend_kind;

/* Called during loading with progress in [0, 1]; return false to cancel
 * (kvfit_model_load then fails with KVFIT_E_CANCELLED). */
typedef bool (*kvfit_progress_fn)(float progress, void *user_data);

typedef struct kvfit_model_params {
    uint32_t struct_size;
    kvfit_backend_kind backend; /* default KVFIT_BACKEND_AUTO */
    kvfit_progress_fn progress; /* optional */
    void *progress_user_data;
    bool vocab_only; /* load only metadata and tokenizer (no weights, no sessions) */
    int32_t device;  /* index of the device among the backend's devices (kvfit_device_info.index);
                        -1 (default) = the KVFIT_DEVICE env var if set, else the best device */
} kvfit_model_params;

/* Fill params with the defaults (and struct_size). NULL is a no-op. */
KVFIT_API void kvfit_model_params_init(kvfit_model_params *params);

/* Compute devices. KVFIT_BACKEND_AUTO picks a CUDA GPU, then a Vulkan
 * discrete or integrated GPU, then the CPU; a Vulkan device that is itself a
 * CPU implementation (such as Mesa's lavapipe) is only used when the Vulkan
 * backend is asked for explicitly. */
typedef enum kvfit_device_type {
    KVFIT_DEVICE_CPU = 0,            /* the CPU backend, or a Vulkan device running on the CPU */
    KVFIT_DEVICE_INTEGRATED_GPU = 1, /* shares memory with the host */
    KVFIT_DEVICE_DISCRETE_GPU = 2,
    KVFIT_DEVICE_VIRTUAL_GPU = 3,    /* a GPU seen through a hypervisor */
    KVFIT_DEVICE_OTHER = 4,
    KVFIT_DEVICE_TYPE_MAX_ENUM = 0x7FFFFFFF
} kvfit_device_type;

typedef struct kvfit_device_info {
    uint32_t struct_size;
    kvfit_backend_kind backend; /* KVFIT_BACKEND_CPU, KVFIT_BACKEND_VULKAN, ... */
    int32_t index;              /* the device's index within its backend, for kvfit_model_params.device */
    kvfit_device_type type;
    const char *name;           /* e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"; valid for the life of the process */
    uint64_t memory_bytes;      /* device-local memory (for the CPU: physical RAM) */
} kvfit_device_info;

/* Number of devices kvfit can compute on: the CPU first, then every usable
 * device of each GPU backend built in. Devices are enumerated once, on the
 * first call. Thread-safe. */
KVFIT_API kvfit_status kvfit_device_count(size_t *n_devices);
/* Describe device i (0 <= i < kvfit_device_count). Set info->struct_size to
 * sizeof(kvfit_device_info) first. KVFIT_E_ARG for i out of range. Thread-safe. */
KVFIT_API kvfit_status kvfit_device_get_info(size_t i, kvfit_device_info *info);

/* Load a GGUF file (memory-mapped). params may be NULL for defaults. On
 * success *out_model is the caller's, to release with kvfit_model_free.
 * Thread-safe: several models may load at once.
 * Errors: KVFIT_E_ARG, KVFIT_E_IO, KVFIT_E_FORMAT, KVFIT_E_UNSUPPORTED,
 * KVFIT_E_NOMEM, KVFIT_E_CANCELLED, KVFIT_E_BACKEND*. */
KVFIT_API kvfit_status kvfit_model_load(const char *path, const kvfit_model_params *params, kvfit_model **out_model);
/* Release a model. Every session created from it must be freed first. NULL is a no-op. */
KVFIT_API void kvfit_model_free(kvfit_model *model);

typedef struct kvfit_model_info {
    uint32_t struct_size;
    const char *arch;       /* "llama", ...; owned by the model */
    const char *name;       /* general.name or ""; owned by the model */
    const char *tokenizer;  /* "llama" (SentencePiece) or "gpt2" (byte-level BPE) */
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t n_embd;
    uint32_t n_ctx_train;   /* training context length */
    uint32_t n_vocab;
    uint64_t n_params;      /* parameters in the weight tensors */
    uint64_t weight_bytes;  /* bytes of the weight tensors as stored */
    int32_t bos_token;      /* -1 if none */
    int32_t eos_token;      /* -1 if none */
} kvfit_model_info;

/* Fill *info (set info->struct_size first, or call with a zeroed struct whose
 * struct_size = sizeof). The strings belong to the model and live until
 * kvfit_model_free. Thread-safe. Errors: KVFIT_E_ARG. */
KVFIT_API kvfit_status kvfit_model_get_info(const kvfit_model *model, kvfit_model_info *info);

/* Copy a GGUF metadata value rendered as text (numbers in decimal, arrays as
 * "[n items]") into buf, NUL-terminated. *len receives the length without the
 * NUL, also when KVFIT_E_BUFFER_TOO_SMALL (buf may then be NULL with
 * buf_size 0 to ask for the size). KVFIT_E_ARG if the key is absent.
 * Thread-safe. */
KVFIT_API kvfit_status kvfit_model_meta(const kvfit_model *model, const char *key, char *buf, size_t buf_size, size_t *len);

/* ---- Tokens --------------------------------------------------------------- */

/* Tokenize UTF-8 text. add_special adds BOS/EOS as the model's metadata asks;
 * parse_special turns control-token text such as "<|im_start|>" into those
 * tokens (otherwise it is tokenized as plain text). On KVFIT_E_BUFFER_TOO_SMALL
 * *n_tokens holds the count needed. Errors: KVFIT_E_ARG, KVFIT_E_UTF8. Thread-safe. */
KVFIT_API kvfit_status kvfit_tokenize(const kvfit_model *model, const char *text, size_t text_len, bool add_special,
                                      bool parse_special, int32_t *tokens, size_t capacity, size_t *n_tokens);

/* Bytes of one token's text (may be part of a UTF-8 character). Control tokens
 * give their text only if render_special. Not NUL-terminated; on
 * KVFIT_E_BUFFER_TOO_SMALL *len holds the size needed. Errors: KVFIT_E_ARG,
 * KVFIT_E_TOKEN, KVFIT_E_BUFFER_TOO_SMALL. Thread-safe. */
KVFIT_API kvfit_status kvfit_token_to_piece(const kvfit_model *model, int32_t token, bool render_special, char *buf,
                                            size_t buf_size, size_t *len);

/* Text of a token sequence (SentencePiece leading space handled as the model
 * does). Not NUL-terminated; on KVFIT_E_BUFFER_TOO_SMALL *len holds the size
 * needed. Errors: KVFIT_E_ARG, KVFIT_E_TOKEN, KVFIT_E_BUFFER_TOO_SMALL.
 * Thread-safe. */
KVFIT_API kvfit_status kvfit_detokenize(const kvfit_model *model, const int32_t *tokens, size_t n_tokens,
                                        bool render_special, char *buf, size_t buf_size, size_t *len);

/* True for end-of-generation tokens (EOS, EOT, <|im_end|>, ...); false for
 * other tokens, ids outside the vocabulary and a NULL model. Thread-safe. */
KVFIT_API bool kvfit_token_is_eog(const kvfit_model *model, int32_t token);

/* ---- Chat templates --------------------------------------------------------- */

typedef struct kvfit_chat_message {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} kvfit_chat_message;

/* Name of the template family recognised in the model's tokenizer.chat_template
 * ("chatml", "llama3", "gemma", "llama2", "zephyr"), "custom" for a template of
 * no family kvfit knows by name, or "chatml" when the model has none (or model
 * is NULL). Informative only: kvfit_chat_apply renders a model's own template
 * whatever its family. The string is static. Thread-safe. */
KVFIT_API const char *kvfit_model_chat_template(const kvfit_model *model);

/* Render messages for the model to continue. template_name selects how:
 *   NULL      the model's own Jinja template (tokenizer.chat_template),
 *             rendered exactly as Hugging Face transformers renders it, with
 *             messages, add_generation_prompt (= add_assistant), bos_token and
 *             eos_token (the model's special tokens), tools and documents
 *             (none) and strftime_now (the current local time); a model
 *             without a template gets "chatml";
 *   a name    a built-in rendering of a family: "chatml", "llama3", "llama2",
 *             "gemma", "zephyr" (aliases: "llama-3", "llama-2", "llama2-sys",
 *             "gemma2", "gemma3"; any case); model may then be NULL;
 *   Jinja     text containing "{{", "{%" or "{#" is rendered as a template
 *             itself, with the model's special tokens if a model is given.
 * Where the model's tokenizer adds BOS by itself, a BOS the template writes at
 * the very start is left out, so tokenizing with add_special does not double
 * it. add_assistant appends the header that starts the assistant's turn.
 * Output is NUL-terminated; *len excludes the NUL and holds the size needed on
 * KVFIT_E_BUFFER_TOO_SMALL. Errors: KVFIT_E_ARG for an unknown template name,
 * a NULL role or content, or text that is not valid UTF-8;
 * KVFIT_E_UNSUPPORTED when the template uses Jinja that kvfit does not
 * implement (the message names the line; name a built-in template instead);
 * KVFIT_E_TEMPLATE when the template refuses the conversation (its
 * raise_exception, e.g. roles that do not alternate) or fails on it.
 * Thread-safe. */
KVFIT_API kvfit_status kvfit_chat_apply(const kvfit_model *model, const char *template_name,
                                        const kvfit_chat_message *messages, size_t n_messages, bool add_assistant,
                                        char *buf, size_t buf_size, size_t *len);

/* ---- Sessions --------------------------------------------------------------- */

/* How an attention layer stores its keys and values. */
typedef enum kvfit_kv_codec {
    KVFIT_KV_AUTO = 0,        /* the planner chooses */
    KVFIT_KV_F16 = 1,         /* 16-bit floats: 2 bytes per value */
    KVFIT_KV_Q8 = 2,          /* int8, one fp16 scale per 32 values: 1.0625 bytes per value */
    KVFIT_KV_Q4 = 3,          /* int4, fp16 scale + minimum per 32 values: 0.625 bytes per value */
    KVFIT_KV_Q4_HADAMARD = 4, /* Q4 with keys rotated by a fixed randomized Hadamard transform first */
    KVFIT_KV_Q4_CHANNEL = 5,  /* Q4 with keys grouped per channel over blocks of 32 tokens (values per
                               * token); the sinks' keys and the newest, unfinished block's keys stay F16.
                               * Windows are multiples of 32. */
    KVFIT_KV_F32 = 6,         /* 32-bit floats: how recurrent layers keep their state (reported by
                               * kvfit_session_plan; not a codec a session can ask for) */
    KVFIT_KV_BF16 = 7,        /* bfloat16: a recurrent layer whose large state matrix (delta-rule or wkv
                               * state) is kept in BF16 (its other state buffers stay F32), as the
                               * planner keeps it within a budget on the CPU backend (half the bytes;
                               * perplexity measured unchanged, docs/BENCHMARKS.md); without a budget,
                               * or on a backend without it, recurrent states are F32. Reported by
                               * kvfit_session_plan; not a codec a session can ask for */
    KVFIT_KV_CODEC_MAX_ENUM = 0x7FFFFFFF
} kvfit_kv_codec;

/* Fold mode of a streaming session (kvfit_session_params.fold). */
typedef enum kvfit_fold_mode {
    KVFIT_FOLD_OFF = 0,  /* no fold memory (default): sinks + window only */
    KVFIT_FOLD_AUTO = 1, /* fold only in the layers where a calibration on fold_calib_tokens (perplexity
                          * of trial sessions at the same budget, fold against no fold) shows it helps */
    KVFIT_FOLD_ON = 2,   /* fold in every streaming layer whose window can pay for it */
    KVFIT_FOLD_MODE_MAX_ENUM = 0x7FFFFFFF
} kvfit_fold_mode;

/* A session's KV memory.
 *
 * Dense (kv_budget_bytes = 0 and n_window = 0): every layer keeps all n_ctx
 * tokens at F16 (or kv_codec); a prompt that does not fit fails with
 * KVFIT_E_CONTEXT_FULL.
 *
 * Streaming (kv_budget_bytes > 0, or n_window > 0): each attention layer keeps
 * n_sink "attention sink" tokens (the first of the stream) for ever plus a ring
 * of the n_window most recent ones, so the session ingests and generates
 * without end at constant memory. With a budget, the planner picks the codec
 * and window (what the caller pins is kept) to cover n_ctx tokens if possible,
 * else the longest window that fits; everything the session keeps per token
 * is allocated at creation and counted in the budget. Recurrent layers' states
 * (fixed bytes) come off the budget first; within a budget the CPU backend keeps
 * their large state matrices in BF16 (KVFIT_KV_BF16). A budget too small for
 * the smallest plan fails with KVFIT_E_BUDGET naming the smallest budget that
 * works. */
typedef struct kvfit_session_params {
    uint32_t struct_size;
    uint32_t n_ctx;           /* dense: tokens the cache holds; streaming: the context the planner aims to cover.
                                 0 = the model's training context */
    uint32_t n_batch;         /* tokens per prefill step; 0 = 512 */
    int32_t n_threads;        /* CPU parts per loop; 0 = all cores (at most 16); the threads that run them:
                                 see kvfit_set_thread_limit */
    uint64_t kv_budget_bytes; /* 0 = no budget (dense unless n_window is set) */
    int32_t n_sink;           /* sink tokens per attention layer; -1 (default) = 4 when streaming */
    uint32_t n_window;        /* ring size in tokens; 0 = the planner decides (dense without a budget) */
    kvfit_kv_codec kv_codec;  /* KVFIT_KV_AUTO (default) = the planner decides (F16 without a budget) */
    /* Fold mode (an experiment; see docs/BENCHMARKS.md for what it measures):
     * tokens evicted from a streaming layer's window are folded into a fixed
     * per-KV-head linear memory that queries read alongside the exact softmax.
     * Its bytes come out of the budget (the layer's window shrinks to pay for
     * it). CPU backend only (KVFIT_E_UNSUPPORTED elsewhere). */
    kvfit_fold_mode fold;     /* KVFIT_FOLD_OFF (default) */
    /* KVFIT_FOLD_AUTO: the tokens the calibration runs on (a prompt), read
     * during kvfit_session_create only; without them nothing is folded. */
    const int32_t *fold_calib_tokens;
    size_t n_fold_calib_tokens;
} kvfit_session_params;

/* Fill params with the defaults (and struct_size). NULL is a no-op.
 *
 * The struct has grown since its first version (the fold fields), so that a
 * program built against an older kvfit.h keeps working with this library,
 * the exported function kvfit_session_params_init fills only the first
 * version's fields (up to kv_codec: 40 bytes, struct_size 40), and this
 * header makes kvfit_session_params_init(p) a call of
 * kvfit_session_params_init_sized with the size of the struct it declares.
 * Bindings that mirror the struct call either with their mirror's size; a
 * struct_size shorter than the struct leaves the missing fields at their
 * defaults. */
KVFIT_API void kvfit_session_params_init_sized(kvfit_session_params *params, size_t size);
KVFIT_API void kvfit_session_params_init(kvfit_session_params *params);
#define kvfit_session_params_init(params) kvfit_session_params_init_sized((params), sizeof(kvfit_session_params))

/* Create a session on a model (params may be NULL). All per-session memory is
 * allocated here. On success *out_session is the caller's, to release with
 * kvfit_session_free before the model. Thread-safe: any number of sessions
 * may be created on one model at once. Errors: KVFIT_E_ARG, KVFIT_E_NOMEM,
 * KVFIT_E_BUDGET (the message names the smallest budget that works). */
KVFIT_API kvfit_status kvfit_session_create(kvfit_model *model, const kvfit_session_params *params,
                                            kvfit_session **out_session);
/* Release a session and all its memory. NULL is a no-op. */
KVFIT_API void kvfit_session_free(kvfit_session *session);

/* Forget all tokens (recurrent layers' states go back to zero); the memory
 * stays allocated. Errors: KVFIT_E_ARG. */
KVFIT_API kvfit_status kvfit_session_reset(kvfit_session *session);

/* Append tokens to the session (batched), computing the logits of the last one.
 * Errors: KVFIT_E_ARG, KVFIT_E_TOKEN, KVFIT_E_CONTEXT_FULL (nothing is appended). */
KVFIT_API kvfit_status kvfit_session_prefill(kvfit_session *session, const int32_t *tokens, size_t n_tokens);

/* Append one token and compute its logits (same as prefill with one token).
 * Errors: KVFIT_E_ARG, KVFIT_E_TOKEN, KVFIT_E_CONTEXT_FULL. */
KVFIT_API kvfit_status kvfit_session_decode(kvfit_session *session, int32_t token);

/* Logits of the newest token: *n_vocab floats (n_vocab may be NULL), owned by
 * the session and valid until the next call that changes it. KVFIT_E_STATE
 * before any token was appended. */
KVFIT_API kvfit_status kvfit_session_logits(const kvfit_session *session, const float **logits, size_t *n_vocab);

/* Tokens appended since create or reset, or restored by kvfit_session_load (a
 * streaming session keeps only its sinks and window of them); 0 for NULL. */
KVFIT_API uint64_t kvfit_session_n_past(const kvfit_session *session);

/* What a session allocates, as its backend counted the allocations (on the
 * session's device: host memory for the CPU backend, device memory for CUDA
 * and Vulkan); both are constant for the session's life and 0 for NULL.
 *
 * kvfit_session_kv_bytes: everything the session keeps per token or per
 * sequence (KV codes, scales, minima, F16 sink keys and residual rows, RoPE
 * tables, recurrent layers' states), which is what kv_budget_bytes bounds:
 * it never exceeds the budget.
 *
 * kvfit_session_scratch_bytes: the rest, which the budget does not cover:
 * the activations of one batch (about n_batch * (4 n_embd + 2 n_ff + 4 n_head
 * head_dim) floats), the batch's encoded K/V staging rows, and the logits
 * (n_vocab floats, 32 rows of them once perplexity is computed). The CPU
 * backend also keeps per-thread working buffers of the same order as one
 * batch's activations outside this count. */
KVFIT_API uint64_t kvfit_session_kv_bytes(const kvfit_session *session);
KVFIT_API uint64_t kvfit_session_scratch_bytes(const kvfit_session *session);

/* What the planner chose for one layer. */
typedef enum kvfit_layer_kind {
    KVFIT_LAYER_DENSE = 0,     /* attention over every token of the context */
    KVFIT_LAYER_STREAMING = 1, /* attention over sinks + a sliding window */
    KVFIT_LAYER_WINDOW = 2,    /* the model's own sliding window (e.g. Gemma 3's local layers): exactly its
                                * n_window most recent tokens, no sinks, whatever the budget */
    KVFIT_LAYER_RECURRENT = 3, /* a fixed-size state instead of a list of tokens (Gated DeltaNet, RWKV):
                                * its bytes do not grow with the context; n_sink and n_window are 0 */
    KVFIT_LAYER_STREAMING_FOLD = 4, /* sinks + a sliding window + a fold memory of the evicted tokens
                                     * (kvfit_session_params.fold); bytes include the fold memory */
    KVFIT_LAYER_KIND_MAX_ENUM = 0x7FFFFFFF
} kvfit_layer_kind;

typedef struct kvfit_layer_plan {
    kvfit_layer_kind kind;
    kvfit_kv_codec codec;
    uint32_t n_sink;
    uint32_t n_window; /* dense layers: the tokens they hold */
    uint64_t bytes;    /* everything this layer keeps: codes, scales, minima; a recurrent layer's state */
} kvfit_layer_plan;

/* The session's plan: up to capacity layers into layers (may be NULL with
 * capacity 0 to ask for the count), the number of layers in *n_layers (may be
 * NULL), and the bytes of all per-session KV state in *total_bytes (may be
 * NULL; it also counts state the layers share, so it can exceed the sum of
 * the layers' bytes). Errors: KVFIT_E_ARG. */
KVFIT_API kvfit_status kvfit_session_plan(const kvfit_session *session, kvfit_layer_plan *layers, size_t capacity,
                                          size_t *n_layers, uint64_t *total_bytes);

/* Session state as bytes, to persist a conversation: the tokens' KV state,
 * the position and the current logits (not the sampler). The bytes can be
 * loaded into a session of the same model created with the same parameters
 * (the same plan), on any backend: a state saved on the CPU loads on Vulkan or
 * CUDA and the other way round. Backends may keep a dense F16 layer's keys
 * before or after RoPE (the CPU and Vulkan after, CUDA before); load rotates
 * them to the loading backend's layout, through F16, so the keys may differ
 * from those the session had by one F16 rounding (between CPU and Vulkan,
 * which keep the same layout, the bytes are used as saved). The bytes are not
 * portable across kvfit major versions.
 * kvfit_session_state_size gives the size kvfit_session_save writes
 * (KVFIT_E_BUFFER_TOO_SMALL if buf_size is less; *written, which may be NULL,
 * gets that size either way). The bytes carry a format version, a record of
 * each layer's memory (kind, codec, sinks, window), a fingerprint of the model
 * and a checksum. kvfit_session_load checks them all and leaves the session
 * unchanged on failure: KVFIT_E_FORMAT for bytes that are not a state, are
 * truncated or damaged, come from another model or from another state format
 * version (older versions are not converted); KVFIT_E_ARG for a state of the
 * same model saved with another plan (the message names the first layer that
 * differs); KVFIT_E_NOMEM if there is no memory for converting the keys. */
KVFIT_API kvfit_status kvfit_session_state_size(const kvfit_session *session, size_t *size);
KVFIT_API kvfit_status kvfit_session_save(const kvfit_session *session, void *buf, size_t buf_size, size_t *written);
KVFIT_API kvfit_status kvfit_session_load(kvfit_session *session, const void *buf, size_t size);

/* Like kvfit_session_prefill, and also writes nll[i] = -log p(tokens[i] | all
 * tokens before it) in nats, for perplexity; nll holds n_tokens floats and
 * belongs to the caller. nll[0] uses the logits the session had before the
 * call (NaN if it had none). Errors: as kvfit_session_prefill. */
KVFIT_API kvfit_status kvfit_session_prefill_nll(kvfit_session *session, const int32_t *tokens, size_t n_tokens,
                                                 float *nll);

/* ---- Sampling ---------------------------------------------------------------- */

typedef struct kvfit_sampler_params {
    uint32_t struct_size;
    float temperature;      /* <= 0: greedy (argmax). default 0.8 */
    int32_t top_k;          /* <= 0: off. default 40 */
    float top_p;            /* >= 1: off. default 0.95 */
    float min_p;            /* <= 0: off. default 0.05 */
    float repeat_penalty;   /* 1: off. default 1.0 */
    int32_t repeat_last_n;  /* tokens of history the penalty looks at. default 64 */
    uint64_t seed;          /* same seed and same logits give the same tokens. default 0 */
} kvfit_sampler_params;

/* Fill params with the defaults (and struct_size). NULL is a no-op. */
KVFIT_API void kvfit_sampler_params_init(kvfit_sampler_params *params);
/* Create a sampling chain with its own history and random state (params may
 * be NULL for the defaults). *out_sampler is the caller's, to release with
 * kvfit_sampler_free; it is independent of any model or session. Thread-safe.
 * Errors: KVFIT_E_ARG, KVFIT_E_NOMEM. */
KVFIT_API kvfit_status kvfit_sampler_create(const kvfit_sampler_params *params, kvfit_sampler **out_sampler);
/* Release a sampler. NULL is a no-op. */
KVFIT_API void kvfit_sampler_free(kvfit_sampler *sampler);
/* Forget the history and reseed. NULL is a no-op. */
KVFIT_API void kvfit_sampler_reset(kvfit_sampler *sampler);
/* Pick a token from the session's current logits (does not append it).
 * Neither the sampler nor the session may be in use on another thread.
 * Errors: KVFIT_E_ARG, KVFIT_E_STATE (the session has no logits yet). */
KVFIT_API kvfit_status kvfit_sampler_sample(kvfit_sampler *sampler, const kvfit_session *session, int32_t *token);
/* Record a token in the history used by the repetition penalty (prompt tokens
 * too). Errors: KVFIT_E_ARG (NULL sampler, negative token). */
KVFIT_API kvfit_status kvfit_sampler_accept(kvfit_sampler *sampler, int32_t token);

/* ---- Generation ----------------------------------------------------------------- */

/* Called for each generated token. text/text_len is newly completed UTF-8 text
 * (possibly empty while a multi-byte character is still incomplete; never
 * half a character; not NUL-terminated). Return false to stop after this
 * token. If bytes are still pending when generation ends (a character cut
 * short), one last call passes token = -1 with them (invalid bytes as U+FFFD);
 * its return value is ignored. */
typedef bool (*kvfit_token_fn)(int32_t token, const char *text, size_t text_len, void *user_data);

typedef enum kvfit_stop_reason {
    KVFIT_STOP_EOG = 0,      /* the model produced an end-of-generation token */
    KVFIT_STOP_LENGTH = 1,   /* max_tokens reached */
    KVFIT_STOP_CALLBACK = 2, /* the token callback returned false */
    KVFIT_STOP_CONTEXT = 3,  /* the session's cache is full */
    KVFIT_STOP_MAX_ENUM = 0x7FFFFFFF
} kvfit_stop_reason;

typedef struct kvfit_generate_params {
    uint32_t struct_size;
    uint32_t max_tokens;    /* default 256 */
    kvfit_token_fn on_token; /* optional */
    void *user_data;
    bool render_special;    /* pass control tokens' text to on_token. default false */
} kvfit_generate_params;

/* Fill params with the defaults (and struct_size). NULL is a no-op. */
KVFIT_API void kvfit_generate_params_init(kvfit_generate_params *params);

typedef struct kvfit_generate_result {
    uint32_t struct_size;
    uint32_t n_generated; /* tokens generated (an end-of-generation token is not counted) */
    kvfit_stop_reason stop_reason;
} kvfit_generate_result;

/* Prefill prompt (may be empty if the session already has logits), then sample
 * and append tokens until EOG, max_tokens, the callback, or a full cache.
 * Every generated token is appended to the session (an end-of-generation token
 * is not), so the session can continue from where generation stopped.
 * sampler NULL = greedy; params NULL = defaults; result may be NULL (else set
 * its struct_size to sizeof(kvfit_generate_result); it is filled on failure too).
 * A full cache ends generation with KVFIT_STOP_CONTEXT, not an error; a prompt
 * that does not fit fails with KVFIT_E_CONTEXT_FULL before anything changes.
 * on_token runs on the calling thread, between tokens; it must not call
 * functions on this session or sampler. Errors: KVFIT_E_ARG, KVFIT_E_TOKEN,
 * KVFIT_E_STATE (empty prompt and no logits), KVFIT_E_CONTEXT_FULL. */
KVFIT_API kvfit_status kvfit_generate(kvfit_session *session, const int32_t *prompt, size_t n_prompt,
                                      kvfit_sampler *sampler, const kvfit_generate_params *params,
                                      kvfit_generate_result *result);

#ifdef __cplusplus
}
#endif

#endif /* KVFIT_H */
