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
    static const TypeInfo q8_0 = {"Q8_0", QK, sizeof(BlockQ8_0), true};
    static const TypeInfo q8_1 = {"Q8_1", QK, sizeof(BlockQ8_1), false};
    // Known to GGUF but not computed by kvfit (yet): sizes let the reader
    // validate files that contain them and name them in errors.
    static const TypeInfo q5_0 = {"Q5_0", 32, 22, false};
    static const TypeInfo q5_1 = {"Q5_1", 32, 24, false};
    static const TypeInfo q2_k = {"Q2_K", 256, 84, false};
    static const TypeInfo q3_k = {"Q3_K", 256, 110, false};
    static const TypeInfo q4_k = {"Q4_K", 256, 144, false};
    static const TypeInfo q5_k = {"Q5_K", 256, 176, false};
    static const TypeInfo q6_k = {"Q6_K", 256, 210, false};
    static const TypeInfo q8_k = {"Q8_K", 256, 292, false};
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
        case 24: return &i8;
        case 25: return &i16;
        case 26: return &i32;
        case 27: return &i64;
        case 28: return &f64;
        case 30: return &bf16;
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

void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n) {
    for (int64_t i = 0; i < n / QK; i++) {
        const float *xb = x + i * QK;
        float amax = 0, max = 0;
        for (int j = 0; j < QK; j++) {
            if (std::fabs(xb[j]) > amax) {
                amax = std::fabs(xb[j]);
                max = xb[j];
            }
        }
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

}  // namespace kvfit
