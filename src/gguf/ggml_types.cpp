#include "gguf/ggml_types.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kvfit {

const TypeInfo *type_info(uint32_t type) {
    static const TypeInfo f32 = {"F32", 1, 4, true};
    static const TypeInfo f16 = {"F16", 1, 2, true};
    static const TypeInfo bf16 = {"BF16", 1, 2, true};
    static const TypeInfo q4_0 = {"Q4_0", QK, sizeof(BlockQ4_0), true};
    static const TypeInfo q4_1 = {"Q4_1", QK, sizeof(BlockQ4_1), true};
    static const TypeInfo q5_0 = {"Q5_0", QK, sizeof(BlockQ5_0), true};
    static const TypeInfo q5_1 = {"Q5_1", QK, sizeof(BlockQ5_1), true};
    static const TypeInfo q8_0 = {"Q8_0", QK, sizeof(BlockQ8_0), true};
    static const TypeInfo q8_1 = {"Q8_1", QK, sizeof(BlockQ8_1), false};
    static const TypeInfo q4_k = {"Q4_K", QK_K, sizeof(BlockQ4_K), true};
    static const TypeInfo q5_k = {"Q5_K", QK_K, sizeof(BlockQ5_K), true};
    static const TypeInfo q6_k = {"Q6_K", QK_K, sizeof(BlockQ6_K), true};
    static const TypeInfo q8_k = {"Q8_K", QK_K, sizeof(BlockQ8_K), false};
    // Known to GGUF but not computed by kvfit (yet): sizes let the reader
    // validate files that contain them and name them in errors.
    static const TypeInfo q2_k = {"Q2_K", 256, 84, false};
    static const TypeInfo q3_k = {"Q3_K", 256, 110, false};
    static const TypeInfo iq2_xxs = {"IQ2_XXS", 256, 66, false};
    static const TypeInfo iq2_xs = {"IQ2_XS", 256, 74, false};
    static const TypeInfo iq3_xxs = {"IQ3_XXS", 256, 98, false};
    static const TypeInfo iq1_s = {"IQ1_S", 256, 50, false};
    static const TypeInfo iq4_nl = {"IQ4_NL", 32, 18, false};
    static const TypeInfo iq3_s = {"IQ3_S", 256, 110, false};
    static const TypeInfo iq2_s = {"IQ2_S", 256, 82, false};
    static const TypeInfo iq4_xs = {"IQ4_XS", 256, 136, false};
    static const TypeInfo iq1_m = {"IQ1_M", 256, 56, false};
    static const TypeInfo tq1_0 = {"TQ1_0", 256, 54, false};
    static const TypeInfo tq2_0 = {"TQ2_0", 256, 66, false};
    static const TypeInfo mxfp4 = {"MXFP4", 32, 17, false};
    static const TypeInfo nvfp4 = {"NVFP4", 64, 36, false};
    static const TypeInfo q1_0 = {"Q1_0", 128, 18, false};
    static const TypeInfo q2_0 = {"Q2_0", 64, 18, false};
    static const TypeInfo i8 = {"I8", 1, 1, false};
    static const TypeInfo i16 = {"I16", 1, 2, false};
    static const TypeInfo i32 = {"I32", 1, 4, false};
    static const TypeInfo i64 = {"I64", 1, 8, false};
    static const TypeInfo f64 = {"F64", 1, 8, false};
    switch (type) {
        case 0: return &f32;
        case 1: return &f16;
        case 2: return &q4_0;
        case 3: return &q4_1;
        case 6: return &q5_0;
        case 7: return &q5_1;
        case 8: return &q8_0;
        case 9: return &q8_1;
        case 10: return &q2_k;
        case 11: return &q3_k;
        case 12: return &q4_k;
        case 13: return &q5_k;
        case 14: return &q6_k;
        case 15: return &q8_k;
        case 16: return &iq2_xxs;
        case 17: return &iq2_xs;
        case 18: return &iq3_xxs;
        case 19: return &iq1_s;
        case 20: return &iq4_nl;
        case 21: return &iq3_s;
        case 22: return &iq2_s;
        case 23: return &iq4_xs;
        case 24: return &i8;
        case 25: return &i16;
        case 26: return &i32;
        case 27: return &i64;
        case 28: return &f64;
        case 29: return &iq1_m;
        case 30: return &bf16;
        case 34: return &tq1_0;
        case 35: return &tq2_0;
        case 39: return &mxfp4;
        case 40: return &nvfp4;
        case 41: return &q1_0;
        case 42: return &q2_0;
        default: return nullptr;
    }
}

size_t row_bytes(uint32_t type, int64_t n) {
    const TypeInfo *ti = type_info(type);
    return ti ? size_t(n / ti->block_size) * ti->block_bytes : 0;
}

float fp16_to_fp32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                mant <<= 1;
                e++;
            } while (!(mant & 0x400));
            mant &= 0x3ff;
            bits = sign | uint32_t(127 - 15 - e) << 23 | mant << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_fp16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) return uint16_t(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // overflows to inf after rounding
    if (absx < 0x38800000u) {                                 // subnormal or zero in half
        // Let the FPU round: add a magic number that aligns the half ulp.
        float a;
        std::memcpy(&a, &absx, 4);
        a += 0.5f;
        uint32_t r;
        std::memcpy(&r, &a, 4);
        return uint16_t(sign | (r - 0x3f000000u));
    }
    uint32_t mant_odd = (absx >> 13) & 1;
    absx += 0xc8000fffu + mant_odd;  // rebias exponent and round to nearest even
    return uint16_t(sign | (absx >> 13));
}

uint16_t fp32_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return uint16_t((x >> 16) | 64);  // quiet NaN
    return uint16_t((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

void dequantize_row(uint32_t type, const void *src, float *dst, int64_t n) {
    switch (type) {
        case TYPE_F32:
            std::memcpy(dst, src, size_t(n) * 4);
            return;
        case TYPE_F16: {
            const uint16_t *s = static_cast<const uint16_t *>(src);
            for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case TYPE_BF16: {
            const uint16_t *s = static_cast<const uint16_t *>(src);
            for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        case TYPE_Q4_0: {
            const BlockQ4_0 *b = static_cast<const BlockQ4_0 *>(src);
            for (int64_t i = 0; i < n / QK; i++) {
                float d = fp16_to_fp32(b[i].d);
                for (int j = 0; j < QK / 2; j++) {
                    dst[i * QK + j] = float((b[i].qs[j] & 0x0f) - 8) * d;
                    dst[i * QK + j + QK / 2] = float((b[i].qs[j] >> 4) - 8) * d;
                }
            }
            return;
        }
        case TYPE_Q4_1: {
            const BlockQ4_1 *b = static_cast<const BlockQ4_1 *>(src);
            for (int64_t i = 0; i < n / QK; i++) {
                float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
                for (int j = 0; j < QK / 2; j++) {
                    dst[i * QK + j] = float(b[i].qs[j] & 0x0f) * d + m;
                    dst[i * QK + j + QK / 2] = float(b[i].qs[j] >> 4) * d + m;
                }
            }
            return;
        }
        case TYPE_Q5_0:
        case TYPE_Q5_1: {
            const bool q50 = type == TYPE_Q5_0;
            const uint8_t *p = static_cast<const uint8_t *>(src);
            const size_t bs = q50 ? sizeof(BlockQ5_0) : sizeof(BlockQ5_1);
            for (int64_t i = 0; i < n / QK; i++) {
                const uint8_t *blk = p + size_t(i) * bs;
                uint16_t dh, mh = 0;
                std::memcpy(&dh, blk, 2);
                if (!q50) std::memcpy(&mh, blk + 2, 2);
                const uint8_t *qh = blk + (q50 ? 2 : 4), *qs = qh + 4;
                const uint32_t hi = uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
                const float d = fp16_to_fp32(dh), m = fp16_to_fp32(mh);
                for (int j = 0; j < QK; j++) {
                    const int nib = j < QK / 2 ? qs[j] & 0x0f : qs[j - QK / 2] >> 4;
                    const int q = nib | int((hi >> j) & 1) << 4;
                    dst[i * QK + j] = q50 ? float(q - 16) * d : float(q) * d + m;
                }
            }
            return;
        }
        case TYPE_Q4_K:
        case TYPE_Q5_K: {
            // (d * sc) * q - dmin * m, as ggml rounds it: two products, one difference.
            const bool q5 = type == TYPE_Q5_K;
            for (int64_t i = 0; i < n / QK_K; i++) {
                const uint8_t *scales, *qs, *qh = nullptr;
                uint16_t dh, mh;
                if (q5) {
                    const BlockQ5_K &b = static_cast<const BlockQ5_K *>(src)[i];
                    dh = b.d, mh = b.dmin, scales = b.scales, qs = b.qs, qh = b.qh;
                } else {
                    const BlockQ4_K &b = static_cast<const BlockQ4_K *>(src)[i];
                    dh = b.d, mh = b.dmin, scales = b.scales, qs = b.qs;
                }
                const float d = fp16_to_fp32(dh), dmin = fp16_to_fp32(mh);
                float *y = dst + i * QK_K;
                for (int j = 0; j < 8; j++) {
                    int sc, m;
                    kquant_scale_min(scales, j, &sc, &m);
                    const float ds = d * float(sc), dm = dmin * float(m);
                    const uint8_t *q = qs + 32 * (j / 2);
                    for (int l = 0; l < 32; l++) {
                        int v = j % 2 ? q[l] >> 4 : q[l] & 0x0f;
                        if (q5) v |= ((qh[l] >> j) & 1) << 4;
                        y[32 * j + l] = ds * float(v) - dm;
                    }
                }
            }
            return;
        }
        case TYPE_Q6_K: {
            const BlockQ6_K *b = static_cast<const BlockQ6_K *>(src);
            for (int64_t i = 0; i < n / QK_K; i++) {
                const float d = fp16_to_fp32(b[i].d);
                float *y = dst + i * QK_K;
                for (int e = 0; e < QK_K; e++) {
                    const int h = e / 128, k = (e % 128) / 32, l = e % 32;
                    const uint8_t lo = b[i].ql[64 * h + l + 32 * (k & 1)];
                    const int q = (k < 2 ? lo & 0x0f : lo >> 4) | ((b[i].qh[32 * h + l] >> (2 * k)) & 3) << 4;
                    y[e] = d * float(b[i].scales[e / 16]) * float(q - 32);
                }
            }
            return;
        }
        case TYPE_Q8_K: {
            const BlockQ8_K *b = static_cast<const BlockQ8_K *>(src);
            for (int64_t i = 0; i < n / QK_K; i++)
                for (int j = 0; j < QK_K; j++) dst[i * QK_K + j] = b[i].d * float(b[i].qs[j]);
            return;
        }
        case TYPE_Q8_0: {
            const BlockQ8_0 *b = static_cast<const BlockQ8_0 *>(src);
            for (int64_t i = 0; i < n / QK; i++) {
                float d = fp16_to_fp32(b[i].d);
                for (int j = 0; j < QK; j++) dst[i * QK + j] = float(b[i].qs[j]) * d;
            }
            return;
        }
        case TYPE_Q8_1: {
            const BlockQ8_1 *b = static_cast<const BlockQ8_1 *>(src);
            for (int64_t i = 0; i < n / QK; i++) {
                float d = fp16_to_fp32(b[i].d);
                for (int j = 0; j < QK; j++) dst[i * QK + j] = float(b[i].qs[j]) * d;
            }
            return;
        }
        default:
            for (int64_t i = 0; i < n; i++) dst[i] = NAN;
    }
}

void quantize_row_q8_0_ref(const float *x, BlockQ8_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = std::fmax(amax, std::fabs(x[i * QK + j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; j++) y[i].qs[j] = int8_t(std::roundf(x[i * QK + j] * id));
    }
}

void quantize_row_q8_1_ref(const float *x, BlockQ8_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = std::fmax(amax, std::fabs(x[i * QK + j]));
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            int q = int(std::roundf(x[i * QK + j] * id));
            y[i].qs[j] = int8_t(q);
            sum += q;
        }
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16(float(sum) * d);
    }
}

namespace {
// The value of largest magnitude among a block's QK, with its sign (the first
// of equals), which Q4_0 and Q5_0 scale by.
float signed_absmax(const float *xb) {
    float amax = 0, max = 0;
    for (int j = 0; j < QK; j++) {
        if (std::fabs(xb[j]) > amax) {
            amax = std::fabs(xb[j]);
            max = xb[j];
        }
    }
    return max;
}
}  // namespace

void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        const float max = signed_absmax(xb);
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = std::min(15, int(xb[j] * id + 8.5f));
            int q1 = std::min(15, int(xb[j + QK / 2] * id + 8.5f));
            y[i].qs[j] = uint8_t(q0 | q1 << 4);
        }
    }
}

void quantize_row_q4_1_ref(const float *x, BlockQ4_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        float mn = xb[0], mx = xb[0];
        for (int j = 1; j < QK; j++) {
            mn = std::fmin(mn, xb[j]);
            mx = std::fmax(mx, xb[j]);
        }
        float d = (mx - mn) / 15.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(mn);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = std::min(15, int((xb[j] - mn) * id + 0.5f));
            int q1 = std::min(15, int((xb[j + QK / 2] - mn) * id + 0.5f));
            y[i].qs[j] = uint8_t(q0 | q1 << 4);
        }
    }
}

// Five-bit codes: Q5_0 as Q4_0 with d = max / -16 and codes q + 16 in 0..31,
// Q5_1 as Q4_1 with 31 steps; the fifth bits go to qh.
void quantize_row_q5_0_ref(const float *x, BlockQ5_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        const float max = signed_absmax(xb);
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        uint32_t hi = 0;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = std::clamp(int(xb[j] * id + 16.5f), 0, 31);
            const int q1 = std::clamp(int(xb[j + QK / 2] * id + 16.5f), 0, 31);
            y[i].qs[j] = uint8_t((q0 & 0x0f) | (q1 & 0x0f) << 4);
            hi |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + QK / 2);
        }
        std::memcpy(y[i].qh, &hi, 4);
    }
}

void quantize_row_q5_1_ref(const float *x, BlockQ5_1 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        float mn = xb[0], mx = xb[0];
        for (int j = 1; j < QK; j++) {
            mn = std::fmin(mn, xb[j]);
            mx = std::fmax(mx, xb[j]);
        }
        const float d = (mx - mn) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].m = fp32_to_fp16(mn);
        uint32_t hi = 0;
        for (int j = 0; j < QK / 2; j++) {
            const int q0 = std::min(31, int((xb[j] - mn) * id + 0.5f));
            const int q1 = std::min(31, int((xb[j + QK / 2] - mn) * id + 0.5f));
            y[i].qs[j] = uint8_t((q0 & 0x0f) | (q1 & 0x0f) << 4);
            hi |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + QK / 2);
        }
        std::memcpy(y[i].qh, &hi, 4);
    }
}

}  // namespace kvfit
