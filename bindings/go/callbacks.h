/* C side of the Go bindings: kvfit calls these trampolines, which pass a
 * runtime/cgo.Handle (as the callback's user_data) back into Go, so C never
 * keeps a Go pointer. */
#ifndef KVFIT_GO_CALLBACKS_H
#define KVFIT_GO_CALLBACKS_H

#include <stdint.h>
#include <kvfit.h>

kvfit_status kvfitgo_model_load(const char *path, kvfit_backend_kind backend, int32_t device, bool vocab_only,
                                uintptr_t progress_handle, kvfit_model **out_model);
kvfit_status kvfitgo_generate(kvfit_session *session, const int32_t *prompt, size_t n_prompt, kvfit_sampler *sampler,
                              uint32_t max_tokens, bool render_special, uintptr_t token_handle,
                              kvfit_generate_result *result);
void kvfitgo_set_log_callback(bool enabled, kvfit_log_level min_level);

#endif
