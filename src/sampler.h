// The sampling chain: repetition penalty -> top-k -> temperature -> top-p ->
// min-p -> seeded draw; temperature <= 0 is greedy.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

#include "kvfit.h"

namespace kvfit {

class Sampler {
public:
    explicit Sampler(const kvfit_sampler_params &params);  // throws KVFIT_E_ARG on invalid values
    // Picks a token from n_vocab logits (not modified). Deterministic for a
    // given seed, history and logits.
    int32_t sample(const float *logits, int32_t n_vocab);
    void accept(int32_t token);  // history for the repetition penalty
    void reset();                // clear history, reseed
    const kvfit_sampler_params &params() const { return params_; }

private:
    kvfit_sampler_params params_;
    std::mt19937_64 rng_;
    std::deque<int32_t> history_;
    std::vector<std::pair<float, int32_t>> cand_;  // reused scratch
};

// Index of the largest logit (lowest index on ties), as greedy decoding uses.
int32_t argmax(const float *logits, int32_t n);

}  // namespace kvfit
