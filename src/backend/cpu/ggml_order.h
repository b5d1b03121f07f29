// CPU ops that reproduce, operation for operation, the float arithmetic of
// llama.cpp's CPU build for x86 with AVX-512 (the build pip gives a modern x86
// machine), so that the same GGUF gives the same greedy tokens.
//
// Why bit-exact and not merely close: the matrix products quantize their
// activations to 8 bits, so a last-bit difference anywhere can move one
// activation across a rounding boundary; by the last layer that is a logit
// difference of about 0.2, and greedy decoding forks at the next near tie.
// kvfit's own AVX2 and scalar paths differed from each other by as much.
//
// Used for dense sessions whose keys and values are F16 (the layout llama.cpp
// keeps): keys are stored after RoPE, rotated as ggml_rope does, and attention
// follows ggml's flash-attention kernel for one query row (F16 query, F16
// value accumulator, online softmax key by key). The results do not depend on
// which instruction set runs them: the vector code only reorders what is
// independent.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kv/codec.h"

namespace kvfit {
namespace cpu {

// RoPE of one head vector as ggml_rope computes it (cos, sin interleaved per
// pair in cs; pair mode rotates (2i, 2i+1), NeoX mode (i, i + n_dims / 2)).
void rope_ggml(float *v, const float *cs, int n_dims, bool neox);

// ggml_vec_dot_f16 for the AVX-512 build: products in 4 accumulators of 16
// lanes over blocks of 64, lanes reduced as _mm512_reduce_add_ps does, and
// elements past the last multiple of 64 added in double.
float dot_f16_ggml(const uint16_t *x, const uint16_t *y, int n);
// acc16 = f16(acc16 * s) and acc16 = f16(acc16 + v * s) (fused), element-wise.
void scale_f16_ggml(uint16_t *acc16, int n, float s);
void mad_f16_ggml(uint16_t *acc16, const uint16_t *v, int n, float s);

// ggml's AVX-512 vector exp (ggml_v_expf) for one lane: fmas and an exact
// scaling by a power of two only, so any device with a fused fma gives the
// same bits (kvfit's own attention uses it for that reason too).
float exp_ggml(float x);
// out[i] = exp_ggml(x[i]) for n values (vectorised; out may be x).
void exp_ggml_n(const float *x, int n, float *out);

// out = silu(gate) * up with ggml's AVX-512 vector exp (ggml_v_expf) for every
// whole group of 16 and x / (1 + expf(-x)) for the rest.
void swiglu_ggml(const float *gate, const float *up, size_t n, float *out);

// GELU in its tanh form as ggml's CPU build computes it: through a table of
// F16 results indexed by the F16 bits of the input (0 below -10, x above 10),
// the table made from 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2))) with
// the inner 1 + a x x fused, as the compiler contracts it there. The table is
// built once per process; GPU backends upload it to give the same bits.
const uint16_t *gelu_f16_table();
// out = gelu(gate) * up, n floats (out may be gate).
void geglu_ggml(const float *gate, const float *up, size_t n, float *out);

// One query head's attention over n keys and values (F16 rows of hd), as
// ggml_compute_forward_flash_attn_ext_f16_one_chunk computes it with an F16
// cache: q16 is the query already converted to F16; key(j) and value(j)
// return row j; acc16 is scratch of hd halves. out receives hd floats.
template <typename KeyFn, typename ValueFn>
void attention_ggml(const uint16_t *q16, int hd, int n, float scale, KeyFn key, ValueFn value, uint16_t *acc16,
                    float *out) {
    float S = 0.0f, M = -INFINITY;
    for (int d = 0; d < hd; d++) acc16[d] = 0;
    for (int j = 0; j < n; j++) {
        const float s = dot_f16_ggml(key(j), q16, hd) * scale;
        const float m_old = M;
        float ms = 1.0f, vs = 1.0f;
        if (s > M) {  // a new maximum: rescale what was accumulated
            M = s;
            ms = std::exp(m_old - M);
            scale_f16_ggml(acc16, hd, ms);
        } else {
            vs = std::exp(s - M);
        }
        mad_f16_ggml(acc16, value(j), hd, vs);
        S = std::fma(S, ms, vs);
    }
    codec_decode(KVCodec::F16, acc16, out, hd);
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int d = 0; d < hd; d++) out[d] *= inv;
}

// The rows a query sees, index j for stream position first + j: a cached
// position p < n_cached at cached + slot * stride, where slot is p (a dense
// cache) or p mod ring (a native sliding window's ring), later ones (this
// batch's) at fresh + (p - n_cached) * stride (in halves).
struct F16Rows {
    const uint16_t *cached, *fresh;
    size_t stride;
    uint64_t n_cached;
    uint64_t first = 0;
    uint64_t ring = 0;  // 0: no ring
    const uint16_t *row(int j) const {
        const uint64_t p = first + uint64_t(j);
        if (p >= n_cached) return fresh + size_t(p - n_cached) * stride;
        return cached + size_t(ring ? p % ring : p) * stride;
    }
};

// attention_ggml over such rows, with the same operations: on AVX2 + F16C
// (head size a multiple of 8) keys are scored a block at a time and the
// accumulator is kept as floats, rounded to F16 after every update as the
// reference's F16 storage rounds it. scratch: 2 * hd floats.
void attention_ggml_rows(const uint16_t *q16, int hd, int n, float scale, const F16Rows &k, const F16Rows &v,
                         float *scratch, float *out);

}  // namespace cpu
}  // namespace kvfit
