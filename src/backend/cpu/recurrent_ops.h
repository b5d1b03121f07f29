// CPU ops of the recurrent (linear-state) layers: the Gated DeltaNet of
// Qwen3-Next / Qwen3.5 and the ops around it. Where llama.cpp's CPU build
// has the same op, the float arithmetic follows it operation for operation
// (its AVX-512 build, as ggml_order.h), so the same GGUF gives the same bits:
// the delta rule token by token (ggml's gated_delta_net: dot products in
// ggml_vec_dot_f32's lane order, fused multiply-adds for the rank-1 update),
// the causal convolution (ssm_conv), SiLU, sigmoid, softplus and the L2 norm.
// The chunked scan has no counterpart there; it is checked against the
// recurrent form and a brute-force reference (tests/test_recurrent_ops.cpp).
#pragma once

#include <cstddef>

#include "backend/backend.h"

namespace kvfit {
namespace cpu {

// ggml_vec_dot_f32 of the AVX-512 build: 4 accumulators of 16 lanes over
// blocks of 64 with fmas, reduced (s0 + s2) + (s1 + s3) and across lanes as
// _mm512_reduce_add_ps; the elements past the last multiple of 64 are added
// in float with fmas.
float dot_f32_ggml(const float *x, const float *y, int n);
// y[i] = fma(x[i], v, y[i]).
void mad_f32(float *y, const float *x, float v, int n);
// y = x * sigmoid(x) as ggml_vec_silu_f32 (y may be x).
void silu_ggml(const float *x, size_t n, float *y);

// Recurrent states of a StateType other than F32 (backend.h): n values
// read into floats, written back rounded to nearest even, and rounded in
// place (x becomes what storing it as the type and reading it back gives).
// F32 copies (round_state: nothing).
void widen_state(StateType t, const void *src, float *dst, size_t n);
void narrow_state(StateType t, const float *src, void *dst, size_t n);
void round_state(StateType t, float *x, size_t n);

// One value head h of DeltaNetArgs over tokens [0, a.n): recurrent form. A
// state of another type than F32 is read into floats, rounded after every
// token and written back (see StateType).
void delta_net_head(const DeltaNetArgs &a, int h);
// The same as a chunked scan; scratch: delta_net_chunk_scratch floats.
size_t delta_net_chunk_scratch(int head_dim, int chunk);
void delta_net_head_chunked(const DeltaNetArgs &a, int h, int chunk, float *scratch);

// Channels [c0, c1) of Stream::ssm_conv.
void ssm_conv_channels(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y, int c0,
                       int c1);

}  // namespace cpu
}  // namespace kvfit
