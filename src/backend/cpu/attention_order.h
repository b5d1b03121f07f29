// The order of float operations of kvfit's own attention: every cache that
// is not dense F16 with keys stored after RoPE (budgeted, streaming and
// quantized caches), and batches of 64 or more queries. It is defined once,
// here, and followed by every CPU instruction set, any thread count and the
// Vulkan backend (vulkan/shaders/attention.comp), so that a session gives the
// same logits, bit for bit, wherever it runs. (Dense F16 caches follow
// llama.cpp's order instead; see ggml_order.h.)
//
// For one query row over the keys it may see, listed in order (sinks, then
// the window oldest first), index v = 0, 1, ...:
//   score  s_v = dot(key_v, query) * scale, the dot product in 16 lanes (lane
//          l: the fma chain over elements l, l+16, ...), reduced as
//          s8[l] = x[l] + x[l+8], s4[l] = s8[l] + s8[l+4],
//          s2[l] = s4[l] + s4[l+2], dot = s2[0] + s2[1];
//   chunks of kAttnChunk keys (v / kAttnChunk), each an online softmax key
//          by key from m = -inf, l = 0, acc = 0:
//            s > m:  r = exp(m - s), w = 1, m = s;   else  r = 1, w = exp(s - m)
//            acc[d] = fma(value_v[d], w, acc[d] * r);   l = fma(l, r, w)
//          (acc[d] * 1 is acc[d], so it may be skipped);
//   the chunks merged in order into M = -inf, L = 0, ACC = 0:
//            M' = max(M, m), a = exp(M - M'), b = exp(m - M')
//            L = fma(L, a, l * b);   ACC[d] = fma(ACC[d], a, acc[d] * b);   M = M'
//   output ACC[d] * (1 / L).
// exp is ggml's vector exp (exp_ggml: fmas and an exact scaling only), so it
// is the same function everywhere. Chunks bound the sequential work, so the
// keys of one long row can be split across threads or workgroups without
// changing the result.
#pragma once

#include <cmath>
#include <cstddef>

namespace kvfit {
namespace cpu {

constexpr int kAttnChunk = 256;

// The state of one chunk or of the merged result (the accumulator is kept by
// the caller).
struct SoftmaxState {
    float m = -INFINITY, l = 0.0f;
};

// dot(k, q) over n floats in the 16-lane order above.
float attn_dot(const float *k, const float *q, int n);

// out[j] = attn_dot(key j, q, hd) * scale for n keys at keys + j * hd: the
// same bits, several keys at a time.
void attn_scores(const float *keys, int n, const float *q, int hd, float scale, float *out);

// attn_scores of nq <= 4 queries over the same keys (out[i] for q[i]).
void attn_scores_multi(int nq, const float *keys, int n, const float *const *q, int hd, float scale,
                       float *const *out);

// Adds n keys with scores s (all in one chunk, in order) and value rows
// vals[j * hd .. j * hd + hd) to a chunk's state and its accumulator acc[hd].
// scratch holds 3 * n floats.
void attn_chunk_add(SoftmaxState &st, float *acc, const float *s, int n, const float *vals, int hd, float *scratch);

// attn_chunk_add for nq <= 4 query rows at once, each over its own n scores
// s[i] and value rows vals[i] (the same count of keys; same bits as nq
// separate calls). scratch holds 3 * nq * n floats.
void attn_chunk_add_multi(int nq, SoftmaxState *st, float *const *acc, const float *const *s, int n,
                          const float *const *vals, int hd, float *scratch);

// Merges a finished chunk (c, cacc) into the running result (t, tacc).
void attn_chunk_merge(SoftmaxState &t, float *tacc, const SoftmaxState &c, const float *cacc, int hd);

// out[d] = tacc[d] / t.l, as tacc[d] * (1 / t.l).
void attn_finish(const SoftmaxState &t, const float *tacc, int hd, float *out);

}  // namespace cpu
}  // namespace kvfit
