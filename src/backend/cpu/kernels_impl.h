// Private contract between the kernel dispatcher (kernels.cpp) and the
// per-instruction-set kernel files. Not part of the backend interface.
//
// matmul does not feed the public Q8_0/Q8_1 blocks to its inner loops: it
// converts each activation row once into a "packed" layout whose scales are
// already fp32.
//
// Scalar and x86 (the "natural" layout), weight Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0:
//   qs [nb][32] int8  the block's activation quants in natural order
//   d  [nb]     float its scale (the fp16-rounded value the Q8 block holds)
//   s  [nb]     float Q4_1 / Q5_1 only: the Q8_1 block's s (fp16-rounded d * sum(qs))
// NEON (the "paired" layout): blocks are taken in pairs (2p, 2p+1); per pair
//   qs   [64] int8   x[2p][0..15] x[2p+1][0..15] x[2p][16..31] x[2p+1][16..31]
//                    (a lone last block keeps its natural order in the first 32)
//   sc   [8]  float  {d[2p] x4, d[2p+1] x4}
//   aux  [8]  Q4_0/Q5_0/Q8_0: int32, lane k = -8 (Q4_0), -16 (Q5_0) or -128
//                    (Q8_0) times the sum of the 8 activation bytes that meet
//                    in lane k (what offsetting the weights to unsigned bytes adds);
//             Q4_1/Q5_1: float {0, s[2p], 0, s[2p+1], 0, 0, 0, 0}
//   stored as three arrays (all qs, then all sc, then all aux).
// Weight Q4_K / Q5_K / Q6_K (every instruction set): the row as Q8_K blocks
// (BlockQ8_K: float d, 256 quants, 16 sums of 16), exactly what
// quantize_row(TYPE_Q8_K) writes.
// Weight F16 / BF16: the converted row; F32: the row itself.
//
// Order of arithmetic. The scalar and x86 block dot products follow, for
// every output, exactly the float operations of llama.cpp's x86 (AVX2 /
// AVX-512) kernels, so that the same GGUF gives bit-identical matrix products
// (8-bit activations turn any last-bit difference into a different rounding
// of some activation further on, and greedy decoding then forks at the next
// near tie).
//
// 32-value blocks: per block, 8 int32 lanes, lane k the sum of the products
// of elements 4k .. 4k+3; acc[k] = fma(dw * dx, lane k, acc[k]), block after
// block; the 8 lanes are reduced as ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7));
// Q4_1 and Q5_1 add sum_b fma(m_w, s_x, .) chained over the blocks, last.
//
// k-quants: per super-block, again 8 int32 lanes, now summed over its
// sub-blocks of 32 (the chunk c = values 32c .. 32c+31), each chunk's 4-value
// products weighted by their sub-block's integer scale:
//   Q4_K, Q5_K: lane k = sum_c sc_c * sum_{i = 4k..4k+3} q[32c+i] * x[32c+i]
//               (q the unsigned 4- or 5-bit codes)
//   Q6_K:       lane k = sum_c sc[2c + (k >= 4)] * sum_{i = 4k..4k+3} q * x
//                        - 32 * (bsums[2k] * sc[2k] + bsums[2k+1] * sc[2k+1])
//               (q the unsigned 6-bit codes; the second term removes the
//               offset of 32 for the 32 values of chunk k, not lane k's)
// and acc[k] = fma(d, float(lane k), acc[k]) with d = dx * dw (dx the Q8_K
// block's float d, dw the fp16 super-block factor). The minimums:
//   Q4_K: 4 int32 lanes, lane k = m_{2k} S_{2k} + m_{2k+1} S_{2k+1} (S_j
//         the sum of the activation quants of sub-block j, from bsums);
//         accm[k] = fma(-dx * dmin_w, lane k, accm[k]); the result is
//         sum8(acc) + ((accm0 + accm2) + (accm1 + accm3)).
//   Q5_K: one int32, sum_j m_j S_j; ms = fma(-dx * dmin_w, it, ms); the
//         result is sum8(acc) + ms.
//   Q6_K: the result is sum8(acc).
// (sum8 the 8-lane reduction above.) Integer sums are exact whatever their
// order, so only the float steps are fixed. These are the vec_dot kernels'
// steps (ggml-cpu/arch/x86/quants.c); llama.cpp computes k-quant products of
// 8 or more tokens with its tiled kernel (ggml-cpu/tiled: per super-block
// whole integer sums, scaled and added to one float per output) and repacked
// Q4_K weights with ggml-cpu/repack.cpp, in orders not reproduced here.

#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "backend/cpu/kernels.h"

namespace kvfit {
namespace cpu {

struct PackedLayout {
    int64_t nb = 0;      // blocks of 32 (Q types) or super-blocks of 256 (k-quants)
    int64_t npairs = 0;  // ceil(nb / 2)
    size_t sc_off = 0;   // byte offsets inside one packed row
    size_t aux_off = 0;
    size_t bytes = 0;  // whole row, rounded up to 64
};

// Weights in blocks of 32 whose activations are Q8_0 / Q8_1 blocks.
constexpr bool is_q_type(uint32_t t) {
    return t == TYPE_Q4_0 || t == TYPE_Q4_1 || t == TYPE_Q5_0 || t == TYPE_Q5_1 || t == TYPE_Q8_0;
}
// Weights in super-blocks of 256 whose activations are Q8_K blocks.
constexpr bool is_k_type(uint32_t t) { return t == TYPE_Q4_K || t == TYPE_Q5_K || t == TYPE_Q6_K; }
// Weights with a Q4_1-style minimum term (the activations' s).
constexpr bool has_min_term(uint32_t t) { return t == TYPE_Q4_1 || t == TYPE_Q5_1; }

inline size_t align64(size_t v) { return (v + 63) & ~size_t(63); }

// Bytes of one packed row: the paired layout's size, which the natural
// layout (40 bytes per block against 64) always fits in.
inline PackedLayout packed_layout(uint32_t w_type, int64_t n) {
    PackedLayout L;
    if (is_q_type(w_type)) {
        L.nb = n / QK;
        L.npairs = (L.nb + 1) / 2;
        L.sc_off = size_t(L.npairs) * 64;
        L.aux_off = L.sc_off + size_t(L.npairs) * 32;
        L.bytes = align64(L.aux_off + size_t(L.npairs) * 32);
    } else if (is_k_type(w_type)) {
        L.nb = n / QK_K;
        L.bytes = align64(size_t(L.nb) * sizeof(BlockQ8_K));
    } else if (w_type == TYPE_F16 || w_type == TYPE_BF16) {
        L.bytes = align64(size_t(n) * 2);
    } else {
        L.bytes = align64(size_t(n) * 4);
    }
    return L;
}

struct NaturalLayout {
    int64_t nb = 0;
    size_t d_off = 0, s_off = 0;
};
inline NaturalLayout natural_layout(int64_t n) {
    NaturalLayout L;
    L.nb = n / QK;
    L.d_off = size_t(L.nb) * QK;
    L.s_off = L.d_off + size_t(L.nb) * 4;
    return L;
}

// The float side of one output's block dot product in llama.cpp's x86 order
// (see the top of this file); the scalar reference of what the SIMD code does.
struct GgmlDotAcc {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float ms = 0.0f;
    // q: 32 weight values (as ints), x: 32 activation quants, both natural order.
    template <typename W>
    inline void block(const W *q, const int8_t *x, float dd) {
        for (int k = 0; k < 8; k++) {
            const int l = int(q[4 * k]) * x[4 * k] + int(q[4 * k + 1]) * x[4 * k + 1] + int(q[4 * k + 2]) * x[4 * k + 2] +
                          int(q[4 * k + 3]) * x[4 * k + 3];
            a[k] = std::fma(dd, float(l), a[k]);
        }
    }
    inline void min_term(float m, float s) { ms = std::fma(m, s, ms); }
    inline float sum() const {
        const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
        return ((t0 + t2) + (t1 + t3)) + ms;
    }
};

// The float side of a k-quant dot product in llama.cpp's x86 order (see the
// top of this file), given each super-block's integer lanes.
struct GgmlKDotAcc {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    float m[4] = {0, 0, 0, 0};  // Q4_K's minimum lanes
    float ms = 0.0f;            // Q5_K's minimum chain
    inline void block(const int32_t lanes[8], float d) {
        for (int k = 0; k < 8; k++) a[k] = std::fma(d, float(lanes[k]), a[k]);
    }
    inline void mins4(const int32_t p[4], float dmin) {
        for (int k = 0; k < 4; k++) m[k] = std::fma(dmin, float(p[k]), m[k]);
    }
    inline void mins1(int32_t p, float dmin) { ms = std::fma(dmin, float(p), ms); }
    inline float sum8() const {
        const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
        return (t0 + t2) + (t1 + t3);
    }
    inline float sum(uint32_t w_type) const {
        if (w_type == TYPE_Q4_K) return sum8() + ((m[0] + m[2]) + (m[1] + m[3]));
        if (w_type == TYPE_Q5_K) return sum8() + ms;
        return sum8();
    }
};

// The integer lanes of one k-quant super-block (see the top of this file):
// lanes[8] and, for Q4_K / Q5_K, the minimum lanes mins[4] (Q5_K adds them
// up itself). Shared by the scalar and NEON code; x86 computes the same
// integers with vector instructions.
inline void kquant_lanes(uint32_t w_type, const uint8_t *blk, const BlockQ8_K &x, int32_t lanes[8], int32_t mins[4]) {
    int q[QK_K];
    int sc[16];
    for (int k = 0; k < 8; k++) lanes[k] = 0;
    for (int k = 0; k < 4; k++) mins[k] = 0;
    if (w_type == TYPE_Q6_K) {
        const BlockQ6_K &w = *reinterpret_cast<const BlockQ6_K *>(blk);
        for (int e = 0; e < QK_K; e++) {
            const int h = e / 128, k = (e % 128) / 32, l = e % 32;
            const uint8_t lo = w.ql[64 * h + l + 32 * (k & 1)];
            q[e] = (k < 2 ? lo & 0x0f : lo >> 4) | ((w.qh[32 * h + l] >> (2 * k)) & 3) << 4;
        }
        for (int c = 0; c < 8; c++)
            for (int k = 0; k < 8; k++) {
                int p = 0;
                for (int i = 4 * k; i < 4 * k + 4; i++) p += q[32 * c + i] * x.qs[32 * c + i];
                lanes[k] += w.scales[2 * c + (k >= 4)] * p;
            }
        for (int k = 0; k < 8; k++)
            lanes[k] -= 32 * (x.bsums[2 * k] * w.scales[2 * k] + x.bsums[2 * k + 1] * w.scales[2 * k + 1]);
        return;
    }
    const bool q5 = w_type == TYPE_Q5_K;
    const uint8_t *scales = q5 ? reinterpret_cast<const BlockQ5_K *>(blk)->scales
                               : reinterpret_cast<const BlockQ4_K *>(blk)->scales;
    const uint8_t *qs = q5 ? reinterpret_cast<const BlockQ5_K *>(blk)->qs : reinterpret_cast<const BlockQ4_K *>(blk)->qs;
    const uint8_t *qh = q5 ? reinterpret_cast<const BlockQ5_K *>(blk)->qh : nullptr;
    int mn[8];
    for (int j = 0; j < 8; j++) kquant_scale_min(scales, j, &sc[j], &mn[j]);
    for (int e = 0; e < QK_K; e++) {
        const int j = e / 32, l = e % 32;
        const uint8_t b = qs[32 * (j / 2) + l];
        q[e] = (j % 2 ? b >> 4 : b & 0x0f) | (q5 ? ((qh[l] >> j) & 1) << 4 : 0);
    }
    for (int c = 0; c < 8; c++)
        for (int k = 0; k < 8; k++) {
            int p = 0;
            for (int i = 4 * k; i < 4 * k + 4; i++) p += q[32 * c + i] * x.qs[32 * c + i];
            lanes[k] += sc[c] * p;
        }
    for (int k = 0; k < 4; k++) {
        const int s0 = x.bsums[4 * k] + x.bsums[4 * k + 1], s1 = x.bsums[4 * k + 2] + x.bsums[4 * k + 3];
        mins[k] = mn[2 * k] * s0 + mn[2 * k + 1] * s1;
    }
}

// Arguments of a block of the matrix product, rows [r0, r1) x tokens [t0, t1):
// Y[t * ldy + r] = dot(W row r, packed X row t).
struct GemmArgs {
    uint32_t w_type;
    int64_t n;  // columns
    const uint8_t *W;
    size_t w_stride;
    const uint8_t *X;  // packed rows
    size_t x_stride;
    float *Y;
    int64_t ldy;
};

struct KernelImpl {
    KernelTable table;
    // Converts one activation row of n floats to the packed layout above.
    void (*pack_row)(uint32_t w_type, const float *x, uint8_t *xp, int64_t n);
    void (*gemm)(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
};

const KernelImpl &impl_scalar();
// Defined by the SIMD translation units; nullptr where not compiled for this target.
const KernelImpl *impl_avx2();
const KernelImpl *impl_avx512();
const KernelImpl *impl_neon();

// Shared by every implementation so their quantization is bit-identical:
// llama.cpp's x86 activation quantizer (d = amax/127 stored as fp16,
// multiplier 127/amax, round half to even).
inline float q8_inv_scale(float amax) { return amax != 0.0f ? 127.0f / amax : 0.0f; }

// The nearest integer to v, ties to even, as llama.cpp's k-quant code rounds:
// by adding 1.5 * 2^23 and reading the low mantissa bits (exact for |v| < 2^22;
// defined, if meaningless, for every other float).
inline int round_magic(float v) {
    const float t = v + 12582912.0f;
    uint32_t u;
    std::memcpy(&u, &t, 4);
    return int(u & 0x007fffff) - 0x00400000;
}

// One Q8_K block the way llama.cpp quantizes activations for the k-quants
// (its x86 build calls the reference quantize_row_q8_K_ref): the value of
// largest magnitude (the first one, on ties) sets iscale = -127 / max;
// q = min(127, round(iscale * x)); d = 1 / iscale. An all-zero block gets
// d = 0 and zero quants and sums.
inline void quantize_block_q8_K(const float *x, BlockQ8_K *y) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK_K; j++) {
        const float ax = std::fabs(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0.0f) {
        std::memset(y, 0, sizeof(*y));
        return;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < QK_K; j++) y->qs[j] = int8_t(std::min(127, round_magic(iscale * x[j])));
    for (int g = 0; g < QK_K / 16; g++) {
        int s = 0;
        for (int i = 0; i < 16; i++) s += y->qs[16 * g + i];
        y->bsums[g] = int16_t(s);
    }
    y->d = 1.0f / iscale;
}

}  // namespace cpu
}  // namespace kvfit
