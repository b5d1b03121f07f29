#include "callbacks.h"

#include "_cgo_export.h"

static bool on_progress(float progress, void *user) { return kvfitgoOnProgress(progress, (uintptr_t)user); }

kvfit_status kvfitgo_model_load(const char *path, kvfit_backend_kind backend, int32_t device, bool vocab_only,
                                uintptr_t progress_handle, kvfit_model **out_model) {
    kvfit_model_params p;
    kvfit_model_params_init(&p);
    p.backend = backend;
    p.device = device;
    p.vocab_only = vocab_only;
    if (progress_handle) {
        p.progress = on_progress;
        p.progress_user_data = (void *)progress_handle;
    }
    return kvfit_model_load(path, &p, out_model);
}

static bool on_token(int32_t token, const char *text, size_t text_len, void *user) {
    return kvfitgoOnToken(token, (char *)text, text_len, (uintptr_t)user);
}

kvfit_status kvfitgo_generate(kvfit_session *session, const int32_t *prompt, size_t n_prompt, kvfit_sampler *sampler,
                              uint32_t max_tokens, bool render_special, uintptr_t token_handle,
                              kvfit_generate_result *result) {
    kvfit_generate_params p;
    kvfit_generate_params_init(&p);
    p.max_tokens = max_tokens;
    p.render_special = render_special;
    if (token_handle) {
        p.on_token = on_token;
        p.user_data = (void *)token_handle;
    }
    result->struct_size = sizeof *result;
    return kvfit_generate(session, prompt, n_prompt, sampler, &p, result);
}

static void on_log(kvfit_log_level level, const char *message, void *user) {
    (void)user;
    kvfitgoOnLog(level, (char *)message);
}

void kvfitgo_set_log_callback(bool enabled, kvfit_log_level min_level) {
    kvfit_set_log_callback(enabled ? on_log : NULL, min_level, NULL);
}
