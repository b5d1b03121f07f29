// A session: one conversation's layer memory, activation buffers and position
// bookkeeping on one model. Used by one thread at a time.
#pragma once

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "kv/memory.h"
#include "kvfit.h"
#include "model/model.h"

namespace kvfit {

class Sampler;

class Session {
public:
    // fold_layers: with params.fold == KVFIT_FOLD_AUTO, the layers that fold
    // (a calibration's choice; see plan_memory); null: calibrate on
    // params.fold_calib_tokens here.
    Session(const Model &model, const kvfit_session_params &params, const std::vector<uint8_t> *fold_layers = nullptr);

    void reset();
    // Appends tokens (in batches of n_batch) and computes the last one's logits.
    // Validates everything first, so a failure leaves the session unchanged.
    void prefill(const int32_t *tokens, size_t n);
    // prefill that also writes nll[i] = -log p(tokens[i] | before); nll[0]
    // uses the logits from before the call (NaN without).
    void prefill_nll(const int32_t *tokens, size_t n, float *nll);
    const std::vector<float> &logits() const;  // throws KVFIT_E_STATE before any token
    bool has_logits() const { return has_logits_; }
    uint64_t n_past() const { return n_past_; }
    // Whether n more tokens fit: always when every layer streams.
    bool has_room(uint64_t n) const { return memory_->unbounded() || n_past_ + n <= memory_->capacity(); }
    // What the backend allocated for the layers' memory (measured), and for
    // everything else of the session on its stream (activations, staging, logits).
    uint64_t kv_bytes() const { return memory_->allocated_bytes(); }
    uint64_t scratch_bytes() const { return stream_->allocated_bytes() - memory_->allocated_bytes(); }
    const MemoryPlan &plan() const { return memory_->plan(); }
    const Model &model() const { return model_; }

    // Persisted state (see kvfit_session_save).
    size_t state_size() const;
    void save(uint8_t *dst, size_t size) const;
    void load(const uint8_t *src, size_t size);

    // Generation loop behind kvfit_generate; sampler may be null (greedy).
    void generate(const int32_t *prompt, size_t n_prompt, Sampler *sampler, const kvfit_generate_params &gp,
                  kvfit_generate_result &result);

private:
    void run(const int32_t *tokens, size_t n, float *nll);
    const Model &model_;
    int n_batch_;
    std::unique_ptr<Stream> stream_;
    std::unique_ptr<SessionMemory> memory_;
    std::unique_ptr<ForwardBuffers> bufs_;
    uint64_t n_past_ = 0;
    bool has_logits_ = false;
    std::vector<float> logits_;
    float *nll_logits_ = nullptr;  // [kLogitRows][n_vocab], allocated on the first prefill_nll
    std::vector<float> nll_host_;  // host copy of those rows
};

}  // namespace kvfit
