// The extern "C" layer: argument checks, the exception firewall and status
// codes. Nothing below throws across the boundary.
#include <cstddef>
#include <cstring>
#include <new>
#include <optional>
#include <string>

#include "backend/cpu/threadpool.h"
#include "chat/chat_template.h"
#include "common.h"
#include "gguf/gguf.h"
#include "kvfit.h"
#include "model/model.h"
#include "sampler.h"
#include "session.h"
#include "tokenizer/tokenizer.h"

struct kvfit_model {
    std::unique_ptr<kvfit::Model> m;
};
struct kvfit_session {
    std::unique_ptr<kvfit::Session> s;
};
struct kvfit_sampler {
    std::unique_ptr<kvfit::Sampler> s;
};

namespace {

thread_local std::string t_last_error;

kvfit_status set_error(kvfit_status st, const char *msg) noexcept {
    try {
        t_last_error = msg;
    } catch (...) {  // no memory for the message: the status still says what happened
        t_last_error.clear();
    }
    return st;
}

// Runs fn, turning every exception into a status and the thread's message.
template <typename F>
kvfit_status guard(F &&fn) {
    try {
        t_last_error.clear();
        fn();
        return KVFIT_OK;
    } catch (const kvfit::Error &e) {
        return set_error(e.status(), e.what());
    } catch (const std::bad_alloc &) {
        return set_error(KVFIT_E_NOMEM, "out of memory");
    } catch (const std::exception &e) {
        return set_error(KVFIT_E_INTERNAL, e.what());
    } catch (...) {
        return set_error(KVFIT_E_INTERNAL, "unknown internal error");
    }
}

#define REQUIRE(cond, ...) \
    do {                   \
        if (!(cond)) kvfit::fail(KVFIT_E_ARG, __VA_ARGS__); \
    } while (0)

// Copies a params struct given by a caller built against any header version:
// fields the caller's struct does not have keep their defaults.
template <typename T>
T read_params(const T *given, void (*init)(T *), const char *what) {
    T p;
    init(&p);
    if (given) {
        REQUIRE(given->struct_size >= sizeof(uint32_t) * 2 && given->struct_size <= 4096,
                "%s.struct_size is %u; fill the struct with its _params_init function", what, given->struct_size);
        std::memcpy(&p, given, std::min<size_t>(given->struct_size, sizeof(T)));
        p.struct_size = sizeof(T);
    }
    return p;
}

// Copies bytes into a caller's buffer; BUFFER_TOO_SMALL reports the size needed.
void copy_out(const std::string &s, char *buf, size_t buf_size, size_t *len, bool nul) {
    REQUIRE(len, "len is NULL");
    *len = s.size();
    const size_t need = s.size() + (nul ? 1 : 0);
    if (need > buf_size || (!buf && need > 0))
        kvfit::fail(KVFIT_E_BUFFER_TOO_SMALL, "buffer of %zu bytes is too small, %zu needed", buf_size, need);
    if (!s.empty()) std::memcpy(buf, s.data(), s.size());
    if (nul) buf[s.size()] = '\0';
}

const kvfit::Model &model_of(const kvfit_model *m) {
    REQUIRE(m && m->m, "model is NULL");
    return *m->m;
}

kvfit::Session &session_of(const kvfit_session *s) {
    REQUIRE(s && s->s, "session is NULL");
    return *s->s;
}

}  // namespace

extern "C" {

KVFIT_API const char *kvfit_version(void) {
#define KVFIT_STR2(x) #x
#define KVFIT_STR(x) KVFIT_STR2(x)
    return KVFIT_STR(KVFIT_VERSION_MAJOR) "." KVFIT_STR(KVFIT_VERSION_MINOR) "." KVFIT_STR(KVFIT_VERSION_PATCH);
}

KVFIT_API uint32_t kvfit_version_number(void) { return KVFIT_VERSION_NUMBER; }

KVFIT_API const char *kvfit_status_str(kvfit_status status) {
    switch (status) {
        case KVFIT_OK: return "KVFIT_OK";
        case KVFIT_E_ARG: return "KVFIT_E_ARG";
        case KVFIT_E_BUFFER_TOO_SMALL: return "KVFIT_E_BUFFER_TOO_SMALL";
        case KVFIT_E_UTF8: return "KVFIT_E_UTF8";
        case KVFIT_E_TOKEN: return "KVFIT_E_TOKEN";
        case KVFIT_E_STATE: return "KVFIT_E_STATE";
        case KVFIT_E_IO: return "KVFIT_E_IO";
        case KVFIT_E_FORMAT: return "KVFIT_E_FORMAT";
        case KVFIT_E_UNSUPPORTED: return "KVFIT_E_UNSUPPORTED";
        case KVFIT_E_NOMEM: return "KVFIT_E_NOMEM";
        case KVFIT_E_BUDGET: return "KVFIT_E_BUDGET";
        case KVFIT_E_CONTEXT_FULL: return "KVFIT_E_CONTEXT_FULL";
        case KVFIT_E_BACKEND: return "KVFIT_E_BACKEND";
        case KVFIT_E_BACKEND_UNAVAILABLE: return "KVFIT_E_BACKEND_UNAVAILABLE";
        case KVFIT_E_CANCELLED: return "KVFIT_E_CANCELLED";
        case KVFIT_E_INTERNAL: return "KVFIT_E_INTERNAL";
        case KVFIT_E_TEMPLATE: return "KVFIT_E_TEMPLATE";
        default: return "KVFIT_E_UNKNOWN";
    }
}

KVFIT_API const char *kvfit_last_error(void) { return t_last_error.c_str(); }

KVFIT_API void kvfit_set_log_callback(kvfit_log_fn fn, kvfit_log_level min_level, void *user_data) {
    kvfit::set_log_callback(fn, min_level, user_data);
}

KVFIT_API kvfit_status kvfit_set_thread_limit(int32_t limit) {
    return guard([&] { kvfit::set_thread_limit(limit); });
}

KVFIT_API int32_t kvfit_get_thread_limit(void) {
    try {
        return kvfit::thread_limit();
    } catch (...) {
        return 1;
    }
}

/* ---- models ---- */

KVFIT_API void kvfit_model_params_init(kvfit_model_params *p) {
    if (!p) return;
    std::memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->backend = KVFIT_BACKEND_AUTO;
    p->device = -1;
}

KVFIT_API kvfit_status kvfit_device_count(size_t *n_devices) {
    return guard([&] {
        REQUIRE(n_devices, "n_devices is NULL");
        *n_devices = kvfit::list_devices().size();
    });
}

KVFIT_API kvfit_status kvfit_device_get_info(size_t i, kvfit_device_info *info) {
    return guard([&] {
        REQUIRE(info, "info is NULL");
        REQUIRE(info->struct_size >= offsetof(kvfit_device_info, backend) + sizeof(int32_t),
                "kvfit_device_info.struct_size is %u; set it to sizeof(kvfit_device_info)", info->struct_size);
        const auto &devs = kvfit::list_devices();
        REQUIRE(i < devs.size(), "device %zu does not exist (%zu devices)", i, devs.size());
        kvfit_device_info d;
        std::memset(&d, 0, sizeof d);
        d.struct_size = info->struct_size;
        d.backend = devs[i].backend;
        d.index = devs[i].index;
        d.type = devs[i].type;
        d.name = devs[i].name.c_str();
        d.memory_bytes = devs[i].memory;
        std::memcpy(info, &d, std::min<size_t>(info->struct_size, sizeof d));
    });
}

KVFIT_API kvfit_status kvfit_model_load(const char *path, const kvfit_model_params *params, kvfit_model **out) {
    return guard([&] {
        REQUIRE(out, "out_model is NULL");
        REQUIRE(path && *path, "path is NULL or empty");
        kvfit_model_params p = read_params(params, kvfit_model_params_init, "kvfit_model_params");
        auto h = std::make_unique<kvfit_model>();
        h->m = kvfit::Model::load(path, p);
        *out = h.release();
    });
}

KVFIT_API void kvfit_model_free(kvfit_model *model) { delete model; }

KVFIT_API kvfit_status kvfit_model_get_info(const kvfit_model *model, kvfit_model_info *info) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        REQUIRE(info, "info is NULL");
        REQUIRE(info->struct_size >= offsetof(kvfit_model_info, n_layer),
                "kvfit_model_info.struct_size is %u; set it to sizeof(kvfit_model_info)", info->struct_size);
        kvfit_model_info i;
        std::memset(&i, 0, sizeof i);
        const kvfit::HParams &hp = m.hparams();
        i.struct_size = info->struct_size;
        i.arch = hp.arch.c_str();
        i.name = m.name().c_str();
        i.tokenizer = m.tokenizer().spec().model.c_str();
        i.n_layer = uint32_t(hp.n_layer);
        i.n_head = uint32_t(hp.n_head);
        i.n_head_kv = uint32_t(hp.n_head_kv);
        i.n_embd = uint32_t(hp.n_embd);
        i.n_ctx_train = uint32_t(hp.n_ctx_train);
        i.n_vocab = uint32_t(m.tokenizer().n_vocab());
        i.n_params = m.n_params();
        i.weight_bytes = m.weight_bytes();
        i.bos_token = m.tokenizer().spec().bos;
        i.eos_token = m.tokenizer().spec().eos;
        std::memcpy(info, &i, std::min<size_t>(info->struct_size, sizeof i));
    });
}

KVFIT_API kvfit_status kvfit_model_meta(const kvfit_model *model, const char *key, char *buf, size_t buf_size,
                                        size_t *len) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        REQUIRE(key, "key is NULL");
        const kvfit::GGUFValue *v = m.file().find(key);
        REQUIRE(v, "the model has no metadata key '%s'", key);
        copy_out(v->to_text(), buf, buf_size, len, true);
    });
}

/* ---- tokens ---- */

KVFIT_API kvfit_status kvfit_tokenize(const kvfit_model *model, const char *text, size_t text_len, bool add_special,
                                      bool parse_special, int32_t *tokens, size_t capacity, size_t *n_tokens) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        REQUIRE(text || text_len == 0, "text is NULL");
        REQUIRE(n_tokens, "n_tokens is NULL");
        std::vector<int32_t> ids =
            m.tokenizer().tokenize(std::string_view(text ? text : "", text_len), add_special, parse_special);
        *n_tokens = ids.size();
        if (ids.size() > capacity || (!tokens && !ids.empty()))
            kvfit::fail(KVFIT_E_BUFFER_TOO_SMALL, "%zu tokens do not fit in a buffer of %zu", ids.size(), capacity);
        if (!ids.empty()) std::memcpy(tokens, ids.data(), ids.size() * sizeof(int32_t));
    });
}

KVFIT_API kvfit_status kvfit_token_to_piece(const kvfit_model *model, int32_t token, bool render_special, char *buf,
                                            size_t buf_size, size_t *len) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        copy_out(m.tokenizer().token_to_piece(token, render_special), buf, buf_size, len, false);
    });
}

KVFIT_API kvfit_status kvfit_detokenize(const kvfit_model *model, const int32_t *tokens, size_t n_tokens,
                                        bool render_special, char *buf, size_t buf_size, size_t *len) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        copy_out(m.tokenizer().detokenize(tokens, n_tokens, render_special), buf, buf_size, len, false);
    });
}

KVFIT_API bool kvfit_token_is_eog(const kvfit_model *model, int32_t token) {
    return model && model->m && model->m->tokenizer().is_eog(token);
}

/* ---- chat ---- */

KVFIT_API const char *kvfit_model_chat_template(const kvfit_model *model) {
    return model && model->m ? model->m->chat_template() : "chatml";
}

KVFIT_API kvfit_status kvfit_chat_apply(const kvfit_model *model, const char *template_name,
                                        const kvfit_chat_message *messages, size_t n_messages, bool add_assistant,
                                        char *buf, size_t buf_size, size_t *len) {
    return guard([&] {
        REQUIRE(messages || n_messages == 0, "messages is NULL");
        REQUIRE(model || template_name, "give a model or a template name");
        std::vector<kvfit::ChatMessage> msgs;
        for (size_t i = 0; i < n_messages; i++) {
            REQUIRE(messages[i].role && messages[i].content, "message %zu has a NULL role or content", i);
            REQUIRE(kvfit::utf8_valid(messages[i].content), "message %zu is not valid UTF-8", i);
            msgs.push_back({messages[i].role, messages[i].content});
        }
        const kvfit::Model *m = model ? &model_of(model) : nullptr;
        // Jinja: the model's own template (when no name is given), or the caller's.
        std::optional<std::string> jinja;
        if (template_name && kvfit::chat_template_is_jinja(template_name)) jinja = template_name;
        else if (!template_name) jinja = m->file().get_string("tokenizer.chat_template");
        if (jinja) {
            kvfit::ChatTemplateTokens tokens;
            const kvfit::VocabSpec *vocab = m ? &m->tokenizer().spec() : nullptr;
            auto token_text = [&](int32_t id) -> std::optional<std::string> {
                if (!vocab || id < 0 || size_t(id) >= vocab->tokens.size()) return std::nullopt;
                return vocab->tokens[size_t(id)];
            };
            if (vocab) {
                tokens.bos = token_text(vocab->bos);
                tokens.eos = token_text(vocab->eos);
            }
            std::string text = kvfit::chat_template_render(*jinja, msgs, add_assistant, tokens);
            // The tokenizer adds BOS itself where the model asks for it; a
            // template's own leading bos_token would make it twice.
            if (vocab && vocab->add_bos && tokens.bos && !tokens.bos->empty() && text.rfind(*tokens.bos, 0) == 0)
                text.erase(0, tokens.bos->size());
            copy_out(text, buf, buf_size, len, true);
            return;
        }
        // A built-in family: the one named, or chatml for a model without a template.
        std::string name = template_name ? template_name : m->chat_template();
        // A model's own default system prompt applies only with its own template.
        std::string def_sys;
        if (m && (!template_name || kvfit::chat_template_canonical_name(name) == m->chat_template()))
            def_sys = m->chat_default_system();
        copy_out(kvfit::chat_template_apply(name, msgs, add_assistant, def_sys), buf, buf_size, len, true);
    });
}

/* ---- sessions ---- */

namespace {

void session_params_defaults(kvfit_session_params *p) {
    std::memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->n_sink = -1;
    p->kv_codec = KVFIT_KV_AUTO;
}

// The struct's first version ended with kv_codec (its size padded to 8).
constexpr size_t kSessionParamsV1 = 40;
static_assert(offsetof(kvfit_session_params, fold) == 36, "the first version's fields moved");
// The fold fields arrived together; a caller's struct has all of them or none.
constexpr size_t kSessionParamsV2 = offsetof(kvfit_session_params, n_fold_calib_tokens) + sizeof(size_t);

kvfit_session_params read_session_params(const kvfit_session_params *given) {
    kvfit_session_params p = read_params(given, session_params_defaults, "kvfit_session_params");
    if (given && given->struct_size < kSessionParamsV2) {  // (bytes 36..40 were padding in the first version)
        p.fold = KVFIT_FOLD_OFF;
        p.fold_calib_tokens = nullptr;
        p.n_fold_calib_tokens = 0;
    }
    return p;
}

}  // namespace

KVFIT_API void kvfit_session_params_init_sized(kvfit_session_params *p, size_t size) {
    if (!p || size < sizeof(uint32_t) * 2) return;
    kvfit_session_params d;
    session_params_defaults(&d);
    size = std::min(size, sizeof d);
    d.struct_size = uint32_t(size);
    std::memcpy(p, &d, size);
}

// (the name in parentheses: kvfit.h makes it a macro for callers)
KVFIT_API void (kvfit_session_params_init)(kvfit_session_params *p) { kvfit_session_params_init_sized(p, kSessionParamsV1); }

KVFIT_API kvfit_status kvfit_session_create(kvfit_model *model, const kvfit_session_params *params,
                                            kvfit_session **out) {
    return guard([&] {
        const kvfit::Model &m = model_of(model);
        REQUIRE(out, "out_session is NULL");
        kvfit_session_params p = read_session_params(params);
        auto h = std::make_unique<kvfit_session>();
        h->s = std::make_unique<kvfit::Session>(m, p);
        *out = h.release();
    });
}

KVFIT_API void kvfit_session_free(kvfit_session *session) { delete session; }

KVFIT_API kvfit_status kvfit_session_reset(kvfit_session *session) {
    return guard([&] { session_of(session).reset(); });
}

KVFIT_API kvfit_status kvfit_session_prefill(kvfit_session *session, const int32_t *tokens, size_t n_tokens) {
    return guard([&] {
        kvfit::Session &s = session_of(session);
        REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        s.prefill(tokens, n_tokens);
    });
}

KVFIT_API kvfit_status kvfit_session_decode(kvfit_session *session, int32_t token) {
    return guard([&] { session_of(session).prefill(&token, 1); });
}

KVFIT_API kvfit_status kvfit_session_logits(const kvfit_session *session, const float **logits, size_t *n_vocab) {
    return guard([&] {
        const kvfit::Session &s = session_of(session);
        REQUIRE(logits, "logits is NULL");
        const std::vector<float> &l = s.logits();
        *logits = l.data();
        if (n_vocab) *n_vocab = l.size();
    });
}

KVFIT_API uint64_t kvfit_session_n_past(const kvfit_session *session) {
    return session && session->s ? session->s->n_past() : 0;
}

KVFIT_API uint64_t kvfit_session_kv_bytes(const kvfit_session *session) {
    return session && session->s ? session->s->kv_bytes() : 0;
}

KVFIT_API uint64_t kvfit_session_scratch_bytes(const kvfit_session *session) {
    return session && session->s ? session->s->scratch_bytes() : 0;
}

KVFIT_API kvfit_status kvfit_session_plan(const kvfit_session *session, kvfit_layer_plan *layers, size_t capacity,
                                          size_t *n_layers, uint64_t *total_bytes) {
    return guard([&] {
        const kvfit::MemoryPlan &plan = session_of(session).plan();
        REQUIRE(layers || capacity == 0, "layers is NULL");
        if (n_layers) *n_layers = plan.layers.size();
        if (total_bytes) *total_bytes = plan.total_bytes;
        for (size_t i = 0; i < plan.layers.size() && i < capacity; i++) {
            const kvfit::LayerPlan &lp = plan.layers[i];
            layers[i].kind = lp.fold != kvfit::FoldMap::None ? KVFIT_LAYER_STREAMING_FOLD : lp.kind;
            layers[i].codec = kvfit::layer_codec(lp);
            layers[i].n_sink = lp.n_sink;
            layers[i].n_window = lp.n_window;
            layers[i].bytes = lp.bytes;
        }
    });
}

KVFIT_API kvfit_status kvfit_session_state_size(const kvfit_session *session, size_t *size) {
    return guard([&] {
        const kvfit::Session &s = session_of(session);
        REQUIRE(size, "size is NULL");
        *size = s.state_size();
    });
}

KVFIT_API kvfit_status kvfit_session_save(const kvfit_session *session, void *buf, size_t buf_size, size_t *written) {
    return guard([&] {
        const kvfit::Session &s = session_of(session);
        REQUIRE(buf || buf_size == 0, "buf is NULL");
        if (written) *written = s.state_size();
        s.save(static_cast<uint8_t *>(buf), buf_size);
    });
}

KVFIT_API kvfit_status kvfit_session_load(kvfit_session *session, const void *buf, size_t size) {
    return guard([&] {
        kvfit::Session &s = session_of(session);
        REQUIRE(buf, "buf is NULL");
        s.load(static_cast<const uint8_t *>(buf), size);
    });
}

KVFIT_API kvfit_status kvfit_session_prefill_nll(kvfit_session *session, const int32_t *tokens, size_t n_tokens,
                                                 float *nll) {
    return guard([&] {
        kvfit::Session &s = session_of(session);
        REQUIRE(tokens || n_tokens == 0, "tokens is NULL");
        s.prefill_nll(tokens, n_tokens, nll);
    });
}

/* ---- sampling ---- */

KVFIT_API void kvfit_sampler_params_init(kvfit_sampler_params *p) {
    if (!p) return;
    std::memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

KVFIT_API kvfit_status kvfit_sampler_create(const kvfit_sampler_params *params, kvfit_sampler **out) {
    return guard([&] {
        REQUIRE(out, "out_sampler is NULL");
        kvfit_sampler_params p = read_params(params, kvfit_sampler_params_init, "kvfit_sampler_params");
        auto h = std::make_unique<kvfit_sampler>();
        h->s = std::make_unique<kvfit::Sampler>(p);
        *out = h.release();
    });
}

KVFIT_API void kvfit_sampler_free(kvfit_sampler *sampler) { delete sampler; }

KVFIT_API void kvfit_sampler_reset(kvfit_sampler *sampler) {
    if (sampler && sampler->s) sampler->s->reset();
}

KVFIT_API kvfit_status kvfit_sampler_sample(kvfit_sampler *sampler, const kvfit_session *session, int32_t *token) {
    return guard([&] {
        REQUIRE(sampler && sampler->s, "sampler is NULL");
        REQUIRE(token, "token is NULL");
        const std::vector<float> &l = session_of(session).logits();
        *token = sampler->s->sample(l.data(), int32_t(l.size()));
    });
}

KVFIT_API kvfit_status kvfit_sampler_accept(kvfit_sampler *sampler, int32_t token) {
    return guard([&] {
        REQUIRE(sampler && sampler->s, "sampler is NULL");
        REQUIRE(token >= 0, "token %d is negative", token);
        sampler->s->accept(token);
    });
}

/* ---- generation ---- */

KVFIT_API void kvfit_generate_params_init(kvfit_generate_params *p) {
    if (!p) return;
    std::memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->max_tokens = 256;
}

KVFIT_API kvfit_status kvfit_generate(kvfit_session *session, const int32_t *prompt, size_t n_prompt,
                                      kvfit_sampler *sampler, const kvfit_generate_params *params,
                                      kvfit_generate_result *result) {
    return guard([&] {
        kvfit::Session &s = session_of(session);
        REQUIRE(prompt || n_prompt == 0, "prompt is NULL");
        REQUIRE(!sampler || sampler->s, "sampler is invalid");
        kvfit_generate_params p = read_params(params, kvfit_generate_params_init, "kvfit_generate_params");
        REQUIRE(!result || result->struct_size >= offsetof(kvfit_generate_result, stop_reason) + sizeof(int32_t),
                "kvfit_generate_result.struct_size is %u; set it to sizeof(kvfit_generate_result)",
                result ? result->struct_size : 0);
        kvfit_generate_result r;
        std::memset(&r, 0, sizeof r);
        // Filled also when generation fails part-way, so the caller knows how far it got.
        auto report = [&] {
            if (!result) return;
            const uint32_t caller_size = result->struct_size;
            std::memcpy(result, &r, std::min<size_t>(caller_size, sizeof r));
            result->struct_size = caller_size;
        };
        try {
            s.generate(prompt, n_prompt, sampler ? sampler->s.get() : nullptr, p, r);
        } catch (...) {
            report();
            throw;
        }
        report();
    });
}

}  // extern "C"
