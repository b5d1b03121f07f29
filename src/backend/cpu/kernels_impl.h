// Private contract between the kernel dispatcher (kernels.cpp) and the
// per-instruction-set kernel files. Not part of the backend interface.
//
// matmul does not feed the public Q8_0/Q8_1 blocks to its inner loops: it
// converts each activation row once into a "packed" layout that the SIMD loops
// can consume without shuffles and with scales already in fp32:
//
//   weight Q4_0 / Q4_1 / Q8_0 (activations quantized exactly like Q8_0/Q8_1):
//     blocks are taken in pairs (2p, 2p+1); per pair
//       qs   [64] int8   x[2p][0..15] x[2p+1][0..15] x[2p][16..31] x[2p+1][16..31]
//                        (a lone last block keeps its natural order in the first 32)
//       sc   [8]  float  {d[2p] x4, d[2p+1] x4}, matching the int32 lanes of
//                        a dot product of the 64 bytes above
//       aux  [8]  Q4_0/Q8_0: int32, lane k = -8 (Q4_0) or -128 (Q8_0) times the
//                        sum of the 8 activation bytes that meet in int32 lane k
//                        of that dot product: what offsetting the weights to
//                        unsigned bytes adds, cancelled per lane so that every
//                        lane holds the exact signed partial sum (cancelling it
//                        per block would round large values in float);
//                 Q4_1: float {0, s[2p], 0, s[2p+1], 0, 0, 0, 0}, the Q8_1 s (its
//                        lanes meet the fp16 {d, m, d, m} header words of two Q4_1 blocks)
//     stored as three arrays (all qs, then all sc, then all aux). A lone last
//     block has d x8, s in the first slot, and its lanes over natural order.
//     d and s hold exactly the fp16-rounded values the Q8_0/Q8_1 blocks would.
//   weight F16 / BF16: the converted row; F32: the row itself.
//
// The pair order matches what a 16-byte load of two Q4 blocks' nibbles gives
// in one 256-bit register: low nibbles of both blocks, then high nibbles.
#pragma once

#include <cstddef>
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
