// Private contract between the kernel dispatcher (kernels.cpp) and the
// per-instruction-set kernel files. Not part of the backend interface.
//
// matmul does not feed the public Q8_0/Q8_1 blocks to its inner loops: it
// converts each activation row once into a "packed" layout whose scales are
// already fp32.
//
// Scalar and x86 (the "natural" layout), weight Q4_0 / Q4_1 / Q8_0:
//   qs [nb][32] int8  the block's activation quants in natural order
//   d  [nb]     float its scale (the fp16-rounded value the Q8 block holds)
//   s  [nb]     float Q4_1 only: the Q8_1 block's s (fp16-rounded d * sum(qs))
// NEON (the "paired" layout): blocks are taken in pairs (2p, 2p+1); per pair
//   qs   [64] int8   x[2p][0..15] x[2p+1][0..15] x[2p][16..31] x[2p+1][16..31]
//                    (a lone last block keeps its natural order in the first 32)
//   sc   [8]  float  {d[2p] x4, d[2p+1] x4}
//   aux  [8]  Q4_0/Q8_0: int32, lane k = -8 (Q4_0) or -128 (Q8_0) times the
//                    sum of the 8 activation bytes that meet in lane k (what
//                    offsetting the weights to unsigned bytes adds);
//             Q4_1: float {0, s[2p], 0, s[2p+1], 0, 0, 0, 0}
//   stored as three arrays (all qs, then all sc, then all aux).
// Weight F16 / BF16: the converted row; F32: the row itself.
//
// Order of arithmetic. The scalar and x86 block dot products follow, for
// every output, exactly the float operations of llama.cpp's x86 (AVX2 /
// AVX-512) kernels, so that the same GGUF gives bit-identical matrix products
// (8-bit activations turn any last-bit difference into a different rounding
// of some activation further on, and greedy decoding then forks at the next
// near tie). Per block: 8 int32 lanes, lane k the sum of the products of
// elements 4k .. 4k+3; acc[k] = fma(dw * dx, lane k, acc[k]), block after
// block; the 8 lanes are reduced as ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7));
// Q4_1 adds sum_b fma(m_w, s_x, .) chained over the blocks, last.

#pragma once

#include <cstddef>
#include <cmath>
#include <cstdint>

#include "backend/cpu/kernels.h"

namespace kvfit {
namespace cpu {

struct PackedLayout {
    int64_t nb = 0;      // blocks of 32 (Q types)
    int64_t npairs = 0;  // ceil(nb / 2)
    size_t sc_off = 0;   // byte offsets inside one packed row
    size_t aux_off = 0;
    size_t bytes = 0;  // whole row, rounded up to 64
};

inline bool is_q_type(uint32_t t) { return t == TYPE_Q4_0 || t == TYPE_Q4_1 || t == TYPE_Q8_0; }

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

}  // namespace cpu
}  // namespace kvfit
