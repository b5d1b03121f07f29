// Fold memory of a streaming attention layer (kvfit_session_params.fold):
// the tokens evicted from the window, summed into a fixed-size linear
// memory per KV head that queries read alongside the exact softmax over the
// sinks and the window, under one shared normalisation.
//
// Per KV head the memory is F32: a matrix A [F][head_dim] = sum over folded
// tokens of phi(k) v^T, and a vector z [F] = sum of phi(k). Keys are folded
// as the window held them (decoded from their codec, before RoPE: position
// 0), and a query reads the memory rotated to the cache position
// query_pos = n_window, so every folded token is seen at distance n_window,
// the nearest an evicted token can be. With s = scale * q_rot . k:
//
//   Taylor (FoldMap::Taylor, F = head_dim + 1, phi(k) = [1, k]): the
//     first-order expansion of exp(s) around the mean folded score
//     mu = scale * q_rot . (z[1..] / z[0]):
//       exp(s) ~ exp(mu) (1 + s - mu),
//     so the folded tokens add exp(mu) ((1 - mu) A[0] + scale q_rot^T A[1..])
//     to the numerator and exp(mu) z[0] (their count: the (s - mu) terms sum
//     to zero, so the normaliser stays positive) to the denominator.
//   Random features (FoldMap::RandomFeatures, F = head_dim): positive random
//     features (FAVOR+), phi(x) = exp(w_f . x' - |x'|^2 / 2) / sqrt(F) with
//     x' = sqrt(scale) x and w_f fixed N(0, I) draws, an unbiased estimate of
//     exp(s) = E[phi(q') . phi(k')].
//
// The exact part gives its running maximum m and sum l per query and head
// (CacheAttention::stats); with the fold's numerator N and denominator Z
// (both relative to their own maximum, to stay in range) the output is
//   (out * l * e^(m - M) + N * e^(f - M)) / (l * e^(m - M) + Z * e^(f - M)),
// M = max(m, f).
//
// What the memory holds: the tokens whose ring slot was overwritten before
// the current batch (a token is folded when a later token takes its slot,
// after that batch has been attended). A query therefore misses the tokens
// that left its window during its own batch (at most the batch's size, one
// token when decoding).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/backend.h"
#include "kv/codec.h"

namespace kvfit {

enum class FoldMap : uint8_t { None = 0, Taylor = 1, RandomFeatures = 2 };

// F, the features per key of a map.
int fold_features(FoldMap map, int head_dim);
// One layer's fold memory: n_head_kv * (F * head_dim + F) floats.
uint64_t fold_state_bytes(FoldMap map, int n_head_kv, int head_dim);

struct FoldArgs {
    FoldMap map = FoldMap::None;
    int n_head = 0, n_head_kv = 0, head_dim = 0;
    float scale = 1.0f;
    const float *rope_cs = nullptr;  // the layer's cos/sin table (cache positions)
    RopeParams rope;
    uint32_t query_pos = 0;          // the cache position queries are rotated to
    float *mem = nullptr;            // [n_head_kv][F * head_dim + F]
};

// Host implementations (the CPU backend's ops).
// Folds one token: its encoded K and V rows as the cache stores them (all KV
// heads, head_bytes each; keys Hadamard-rotated if hadamard).
void fold_add_host(const FoldArgs &f, const uint8_t *k_row, const uint8_t *v_row, KVCodec codec, bool hadamard,
                   size_t head_bytes);
// Merges the fold memory's part into out ([n_q][n_head][head_dim], the
// exact attention's normalised output) given stats ([n_q][n_head][2]: the
// exact part's maximum score and sum of exp(score - maximum)); q is before
// RoPE.
void fold_read_host(const FoldArgs &f, const float *q, int n_q, const float *stats, float *out);

// The fixed random directions of the random-feature map: [F][head_dim].
const float *fold_random_directions(int head_dim);

}  // namespace kvfit
