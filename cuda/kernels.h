// Launchers of the CUDA kernels, called by the host code in cuda_backend.cpp.
// Each enqueues its kernels on `stream` and returns the launch status
// (cudaSuccess or the error the runtime reported); none synchronizes.
// Shapes and byte layouts are those of src/backend/backend.h and
// src/kv/codec.h; this header keeps its own copies of the few constants so
// the .cu files need no project headers (cuda_backend.cpp checks they agree).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace kvfit {
namespace cuda {

constexpr int kGroup = 32;         // KV codec group (KV_GROUP) and weight block (QK)
constexpr int kChannelBlock = 32;  // tokens per per-channel key block (KV_CHANNEL_BLOCK)
constexpr int kMaxHadamardLog = 9; // Hadamard rotation of heads up to 512 values

// ggml type ids (GgmlType) and KV codec ids (KVCodec).
constexpr uint32_t kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kBF16 = 30;
constexpr uint32_t kQ4_K = 12, kQ5_K = 13, kQ6_K = 14;
constexpr int kSuper = 256;  // values per k-quant super-block (QK_K)
constexpr int kCodecF16 = 1, kCodecQ8 = 2, kCodecQ4 = 3;

// The scaled signs of the randomized Hadamard rotation for n = 2^0 .. 2^9
// (signs[k][i] for n = 2^k), copied to constant memory of the current device.
cudaError_t set_hadamard_signs(const float signs[kMaxHadamardLog + 1][1 << kMaxHadamardLog]);

cudaError_t get_rows(cudaStream_t s, uint32_t type, const void *table, size_t row_bytes, int64_t n_cols,
                     const int32_t *ids, int n, float *x);
cudaError_t rmsnorm(cudaStream_t s, const float *x, const float *w, int64_t d, float eps, int n, float *y);
cudaError_t swiglu(cudaStream_t s, const float *gate, const float *up, size_t n, float *out);
cudaError_t add(cudaStream_t s, float *y, const float *x, size_t n);
cudaError_t scale(cudaStream_t s, float *x, size_t n, float v);
// out = gelu(gate) * up through the CPU's table of 65536 F16 GELU values
// (cpu::gelu_f16_table, on the device), indexed by the F16 bits of gate; 0
// where gate <= -10 and gate itself where gate >= 10. out may be gate.
cudaError_t geglu(cudaStream_t s, const float *gate, const float *up, size_t n, const uint16_t *table, float *out);

// kv_encode: n * n_heads head rows of head_dim floats (rotated in place first
// when hadamard is set) into codec rows at dst.
cudaError_t kv_encode(cudaStream_t s, int codec, bool hadamard, float *x, int rows, int head_dim, uint8_t *dst);
// kv_encode_channels: 32 F16 rows of n_heads * head_dim into n_heads per-channel Q4 blocks.
cudaError_t kv_encode_channels(cudaStream_t s, const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst);

// Matrix products y[t][r] = dot(W row r, x[t]). Activations meet block-quantized
// weights as 8-bit blocks of 32 quantized exactly as the CPU backend quantizes
// Q8_0 / Q8_1 (with the block's sum), so for Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0
// every block's integer sum is the CPU's. The k-quants meet the same blocks
// of 32 (the CPU uses Q8_K super-blocks), a close approximation.
struct MatmulScratch {
    int8_t *q = nullptr;   // [n][n_cols] activation codes
    float *d = nullptr;    // [n][n_cols / 32] fp16-rounded block scales
    float *s = nullptr;    // [n][n_cols / 32] fp16-rounded d * sum(codes) (Q4_1's partner)
};
size_t matmul_scratch_bytes(int64_t max_cols, int max_tokens);
MatmulScratch matmul_scratch(void *base, int64_t max_cols, int max_tokens);
cudaError_t matmul(cudaStream_t s, uint32_t type, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                   const float *x, int n, float *y, const MatmulScratch &scratch);

// Attention over the sink + window cache; see CacheAttention in backend.h,
// whose fields these mirror (device addresses).
struct AttnParams {
    int n_q, n_head, n_head_kv, head_dim;
    uint64_t pos0;
    uint32_t n_sink, n_window;
    int streaming, codec, hadamard, channel_keys;
    size_t row_bytes, head_bytes, k_block_bytes;
    const uint8_t *k, *v, *k_new, *v_new, *k_sink, *k_res;
    const float *rope_cs;
    int rope_dims;  // rotated dimensions of each head
    int rope_neox;  // pairs (i, i + n/2) instead of (2i, 2i + 1)
    float scale;
};
// Splits of the visible keys per query and KV head the attention will use
// (flash-decoding), and the float scratch its partial results need.
int attention_splits(const AttnParams &p, int n_sm);
size_t attention_scratch_floats(const AttnParams &p, int splits);
// Fails with cudaErrorInvalidValue when a head does not fit in shared memory.
cudaError_t attention(cudaStream_t s, const AttnParams &p, int splits, const float *q, float *partials, float *out);

// RWKV-7 (cuda/rwkv.cu): the Stream ops of the same names in backend.h.
// token_shift_mix also copies the last row into the state, in stream order;
// activate's f is 0 tanh, 1 sigmoid, 2 squared ReLU; rwkv7_prepare takes the
// decay factor -exp(-1/2) from the host (the C library's value).
cudaError_t norm_affine(cudaStream_t s, const float *x, const float *w, const float *b, float eps, int n, int d,
                        int groups, float *y);
cudaError_t token_shift_mix(cudaStream_t s, const float *x, float *state, const float *mix, int n_mix, int n, int d,
                            float *out);
cudaError_t activate(cudaStream_t s, int f, float *x, size_t n);
cudaError_t rwkv7_prepare(cudaStream_t s, float *w, const float *w0, float *a, const float *a0, float *v,
                          const float *v_first, const float *vmix, const float *v0, float *k, const float *k_k,
                          const float *k_a, int n, int n_head, int head_size, float decay, float *a_out, float *b_out);
cudaError_t wkv7(cudaStream_t s, const float *r, const float *w, const float *k, const float *v, const float *a,
                 const float *b, int n, int n_head, int head_size, float *state, float *out);
cudaError_t rwkv7_bonus_gate(cudaStream_t s, float *y, const float *r, const float *k, const float *v,
                             const float *r_k, const float *g, int n, int n_head, int head_size);

// --- Gated DeltaNet (qwen35): the Stream ops of backend.h of the same names.
// gdn_pointwise: mode 0 c = silu(a), 1 c = a * sigmoid(b) (sigmoid_mul), 2
// c = a * silu(b) (the gate of gated_rmsnorm); c may be a. width: the length
// of the rows (0: n).
cudaError_t gdn_pointwise(cudaStream_t s, int mode, const float *a, const float *b, float *c, size_t n, size_t width);
cudaError_t delta_gates(cudaStream_t s, float *alpha, float *beta, const float *dt_bias, const float *a, int n,
                        int n_heads);
cudaError_t l2norm(cudaStream_t s, float *x, int n, int rows, int dim, size_t stride, float eps);
cudaError_t ssm_conv(cudaStream_t s, const float *x, int n, int channels, int kernel, const float *w, float *state,
                     float *y);
// DeltaNetArgs (device addresses). One block per value head, head_dim threads
// (at most 1024); the recurrent form, token by token.
struct DeltaNetParams {
    int n, n_k_heads, n_v_heads, head_dim;
    const float *q, *k, *v;
    size_t qk_stride, v_stride;
    const float *g, *beta;
    float *state, *out;
    float scale;
};
cudaError_t delta_net(cudaStream_t s, const DeltaNetParams &p);

}  // namespace cuda
}  // namespace kvfit
