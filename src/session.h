// A session: one conversation's cache, activation buffers and position
// bookkeeping on one model. Used by one thread at a time.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "kvfit.h"
#include "model/model.h"

namespace kvfit {

class Sampler;

class Session {
public:
    Session(const Model &model, const kvfit_session_params &params);

    void reset();
    // Appends tokens (in batches of n_batch) and computes the last one's logits.
    // Validates everything first, so a failure leaves the session unchanged.
    void prefill(const int32_t *tokens, size_t n);
    const std::vector<float> &logits() const;  // throws KVFIT_E_STATE before any token
    bool has_logits() const { return has_logits_; }
    uint64_t n_past() const { return n_past_; }
    uint32_t n_ctx() const { return cache_->capacity(); }
    uint64_t kv_bytes() const { return cache_->bytes(); }
    const Model &model() const { return model_; }

    // Generation loop behind kvfit_generate; sampler may be null (greedy).
    void generate(const int32_t *prompt, size_t n_prompt, Sampler *sampler, const kvfit_generate_params &gp,
                  kvfit_generate_result &result);

private:
    const Model &model_;
    int n_batch_;
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<KVCache> cache_;
    ForwardBuffers bufs_;
    uint64_t n_past_ = 0;
    bool has_logits_ = false;
    std::vector<float> logits_;
};

}  // namespace kvfit
