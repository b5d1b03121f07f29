// Device helpers shared by the kernels: unaligned-safe loads from GGUF and KV
// codec bytes, fp16/bf16 conversions, warp reductions, and the element-wise
// decoding of KV codec rows. GGUF blocks (18 and 34 bytes) and codec groups
// (34 and 20 bytes) are only 2-byte aligned, so everything is read in 16-bit
// or 8-bit units.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.h"

namespace kvfit {
namespace cuda {

__device__ __forceinline__ float ld_half(const uint8_t *p) {
    return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short *>(p)));
}
__device__ __forceinline__ float bf16_to_float(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }
// Four bytes from a 2-byte aligned address.
__device__ __forceinline__ uint32_t ld_u32_a2(const uint8_t *p) {
    const unsigned short *h = reinterpret_cast<const unsigned short *>(p);
    return uint32_t(h[0]) | uint32_t(h[1]) << 16;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_min(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Element i of a weight row of `type` (every type the CPU backend computes with).
__device__ __forceinline__ float weight_elem(uint32_t type, const uint8_t *row, int64_t i) {
    const int64_t b = i / kGroup;
    const int j = int(i % kGroup);
    switch (type) {
        case kF32: return reinterpret_cast<const float *>(row)[i];
        case kF16: return ld_half(row + 2 * i);
        case kBF16: return bf16_to_float(reinterpret_cast<const uint16_t *>(row)[i]);
        case kQ4_0: {
            const uint8_t *blk = row + b * 18;
            const int q = j < 16 ? (blk[2 + j] & 0x0f) : (blk[2 + j - 16] >> 4);
            return float(q - 8) * ld_half(blk);
        }
        case kQ4_1: {
            const uint8_t *blk = row + b * 20;
            const int q = j < 16 ? (blk[4 + j] & 0x0f) : (blk[4 + j - 16] >> 4);
            return __fadd_rn(__fmul_rn(float(q), ld_half(blk)), ld_half(blk + 2));  // no FMA: the CPU's rounding
        }
        case kQ8_0: {
            const uint8_t *blk = row + b * 34;
            return float(int8_t(blk[2 + j])) * ld_half(blk);
        }
        case kQ5_0:
        case kQ5_1: {
            const bool q50 = type == kQ5_0;
            const uint8_t *blk = row + b * (q50 ? 22 : 24);
            const uint8_t *qh = blk + (q50 ? 2 : 4), *qs = qh + 4;
            const int q = (j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4)) | int((ld_u32_a2(qh) >> j) & 1u) << 4;
            if (q50) return float(q - 16) * ld_half(blk);
            return __fadd_rn(__fmul_rn(float(q), ld_half(blk)), ld_half(blk + 2));
        }
        case kQ4_K:
        case kQ5_K: {
            // (d * sc) * q - dmin * m, two products and a difference, as the CPU
            const bool q5 = type == kQ5_K;
            const uint8_t *blk = row + (i / kSuper) * (q5 ? 176 : 144);
            const int e = int(i % kSuper), sj = e / 32, l = e % 32;
            const uint8_t *sc = blk + 4;
            const int s = sj < 4 ? sc[sj] & 63 : (sc[sj + 4] & 0x0f) | (sc[sj - 4] >> 6) << 4;
            const int m = sj < 4 ? sc[sj + 4] & 63 : (sc[sj + 4] >> 4) | (sc[sj] >> 6) << 4;
            const uint8_t byte = blk[(q5 ? 48 : 16) + 32 * (sj / 2) + l];
            int q = sj % 2 ? byte >> 4 : byte & 0x0f;
            if (q5) q |= ((blk[16 + l] >> sj) & 1) << 4;
            return __fsub_rn(__fmul_rn(__fmul_rn(ld_half(blk), float(s)), float(q)),
                             __fmul_rn(ld_half(blk + 2), float(m)));
        }
        case kQ6_K: {
            const uint8_t *blk = row + (i / kSuper) * 210;
            const int e = int(i % kSuper), h = e / 128, k = (e % 128) / 32, l = e % 32;
            const uint8_t lo = blk[64 * h + l + 32 * (k & 1)];
            const int q = (k < 2 ? lo & 0x0f : lo >> 4) | ((blk[128 + 32 * h + l] >> (2 * k)) & 3) << 4;
            return __fmul_rn(__fmul_rn(ld_half(blk + 208), float(int8_t(blk[192 + e / 16]))), float(q - 32));
        }
        default: return __int_as_float(0x7fc00000);  // NaN, as dequantize_row
    }
}

// Value i of one head's row in a KV codec (src/kv/codec.h layouts).
__device__ __forceinline__ float codec_elem(int codec, const uint8_t *row, int i) {
    const int g = i / kGroup, j = i % kGroup;
    if (codec == kCodecQ8) {
        const uint8_t *p = row + g * (2 + kGroup);
        return float(int8_t(p[2 + j])) * ld_half(p);
    }
    if (codec == kCodecQ4) {
        const uint8_t *p = row + g * (4 + kGroup / 2);
        const int q = j < 16 ? (p[4 + j] & 0x0f) : (p[4 + j - 16] >> 4);
        return __fmaf_rn(float(q), ld_half(p), ld_half(p + 2));
    }
    return ld_half(row + 2 * i);
}

// Token o of channel c of a per-channel key block (one Q4 group per channel).
__device__ __forceinline__ float channel_elem(const uint8_t *block, int c, int o) {
    const uint8_t *p = block + c * (4 + kChannelBlock / 2);
    const int q = o < 16 ? (p[4 + o] & 0x0f) : (p[4 + o - 16] >> 4);
    return __fmaf_rn(float(q), ld_half(p), ld_half(p + 2));
}

__device__ __forceinline__ int log2_exact(int n) {
    int k = 0;
    while ((1 << k) < n) k++;
    return k;
}

// In-place unnormalised Walsh-Hadamard transform of x[0..n) by `nthreads`
// cooperating threads (index tid), stages in the CPU's order so every value
// is the same sum. sync() separates the stages.
template <class Sync>
__device__ __forceinline__ void fwht(float *x, int n, int tid, int nthreads, Sync sync) {
    for (int h = 1; h < n; h *= 2) {
        for (int p = tid; p < n / 2; p += nthreads) {
            const int j = p / h * 2 * h + p % h;
            const float a = x[j], b = x[j + h];
            x[j] = __fadd_rn(a, b);
            x[j + h] = __fsub_rn(a, b);
        }
        sync();
    }
}

}  // namespace cuda
}  // namespace kvfit
