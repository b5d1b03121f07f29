// KV codecs: scalar encoding and decoding, an AVX2/FMA/F16C path for
// decoding and the rotation (picked at run time, so the library still runs on
// older CPUs and builds on ARM), and the randomized Hadamard rotation.
#include "kv/codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_features.h"
#include "common.h"
#include "gguf/ggml_types.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvfit {
namespace {

constexpr int G = KV_GROUP;
constexpr size_t Q8_GROUP_BYTES = 2 + G;          // d, 32 int8
constexpr size_t Q4_GROUP_BYTES = 2 + 2 + G / 2;  // d, m, 16 bytes of nibbles
constexpr uint16_t HALF_MAX = 0x7bff;             // 65504
constexpr uint16_t HALF_MIN = 0xfbff;             // -65504

inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline void st16(uint8_t *p, uint16_t v) {
    std::memcpy(p, &v, 2);
}

// Scalar fp16 -> fp32 of one group. AArch64 has a native half type; elsewhere
// this only runs on CPUs without F16C, where the portable conversion will do.
inline void f16_group(const uint8_t *p, float *out) {
    for (int i = 0; i < G; i++) {
#if defined(__aarch64__)
        __fp16 h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = float(h);
#else
        out[i] = fp16_to_fp32(ld16(p + 2 * i));
#endif
    }
}

// Smallest fp16 >= v (v >= 0), capped at 65504. Rounding the scale up means
// no value needs more than the largest code, so the d/2 error bound holds
// even where fp16 is coarse (subnormal scales of near-zero groups).
uint16_t half_up(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 65504.0f) return HALF_MAX;
    uint16_t h = fp32_to_fp16(v);
    if (fp16_to_fp32(h) < v) h++;  // positive halfs are ordered like their bits
    return h;
}

// Largest fp16 <= v, clamped to +-65504. Rounding the minimum down keeps every
// value at or above it, so no code needs to go below 0.
uint16_t half_down(float v) {
    if (v >= 65504.0f) return HALF_MAX;
    if (v <= -65504.0f) return HALF_MIN;
    uint16_t h = fp32_to_fp16(v);
    if (fp16_to_fp32(h) > v) {
        if ((h & 0x7fff) == 0) {
            h = 0x8001;  // a zero above a tiny negative: the smallest negative subnormal
        } else if (h & 0x8000) {
            h++;  // negative: one more unit of magnitude
        } else {
            h--;
        }
    }
    return h;
}

// v clamped to [lo, hi] (NaN goes to hi, so the conversion below is defined),
// rounded to nearest even.
inline int round_clamp(float v, float lo, float hi) {
    if (!(v < hi)) v = hi;
    if (v < lo) v = lo;
    return int(std::nearbyint(v));
}

// ---------------------------------------------------------------------------
// Encoding and decoding (scalar: once per token, not in the hot loop)

void encode_f16(const float *x, uint8_t *dst, int n) {
    for (int i = 0; i < n; i++) {
        // fp16 overflows to inf above 65504; saturate instead.
        float v = std::min(65504.0f, std::max(-65504.0f, x[i]));
        st16(dst + 2 * i, fp32_to_fp16(v));
    }
}

void encode_q8(const float *x, uint8_t *dst, int n) {
    for (int g = 0; g < n / G; g++, x += G, dst += Q8_GROUP_BYTES) {
        float amax = 0.0f;
        for (int i = 0; i < G; i++) amax = std::max(amax, std::fabs(x[i]));
        const uint16_t dh = half_up(amax / 127.0f);
        const float d = fp16_to_fp32(dh);
        st16(dst, dh);
        int8_t *qs = reinterpret_cast<int8_t *>(dst + 2);
        for (int i = 0; i < G; i++) qs[i] = int8_t(d > 0.0f ? round_clamp(x[i] / d, -127.0f, 127.0f) : 0);
    }
}

void encode_q4(const float *x, uint8_t *dst, int n) {
    for (int g = 0; g < n / G; g++, x += G, dst += Q4_GROUP_BYTES) {
        float mn = x[0], mx = x[0];
        for (int i = 1; i < G; i++) {
            mn = std::min(mn, x[i]);
            mx = std::max(mx, x[i]);
        }
        // m first, then d from the fp16 m actually stored, so the rounding of m
        // is absorbed by the step instead of shifting every value.
        const uint16_t mh = half_down(mn);
        const float m = fp16_to_fp32(mh);
        const uint16_t dh = half_up((mx - m) / 15.0f);
        const float d = fp16_to_fp32(dh);
        st16(dst, dh);
        st16(dst + 2, mh);
        uint8_t q[G];
        for (int i = 0; i < G; i++) q[i] = uint8_t(d > 0.0f ? round_clamp((x[i] - m) / d, 0.0f, 15.0f) : 0);
        for (int j = 0; j < G / 2; j++) dst[4 + j] = uint8_t(q[j] | q[j + G / 2] << 4);
    }
}

void decode_f16(const uint8_t *src, float *x, int n) {
    for (int g = 0; g < n / G; g++) f16_group(src + 2 * G * g, x + G * g);
    for (int i = n / G * G; i < n; i++) x[i] = fp16_to_fp32(ld16(src + 2 * i));
}

void decode_q8(const uint8_t *src, float *x, int n) {
    for (int g = 0; g < n / G; g++, x += G, src += Q8_GROUP_BYTES) {
        const float d = fp16_to_fp32(ld16(src));
        const int8_t *qs = reinterpret_cast<const int8_t *>(src + 2);
        for (int i = 0; i < G; i++) x[i] = float(qs[i]) * d;
    }
}

void decode_q4(const uint8_t *src, float *x, int n) {
    for (int g = 0; g < n / G; g++, x += G, src += Q4_GROUP_BYTES) {
        const float d = fp16_to_fp32(ld16(src)), m = fp16_to_fp32(ld16(src + 2));
        for (int j = 0; j < G / 2; j++) {
            x[j] = float(src[4 + j] & 0x0f) * d + m;
            x[j + G / 2] = float(src[4 + j] >> 4) * d + m;
        }
    }
}

// ---------------------------------------------------------------------------
// Randomized Hadamard rotation

constexpr int HADAMARD_MAX_LOG = 9;  // n <= 512

// Per n = 2^k: signs[i] / sqrt(n). The signs come from a 64-bit LCG (Knuth's
// MMIX constants) seeded from n, top bit per step: integer-only, so every
// platform and compiler gets the same rotation.
struct HadamardTables {
    float scaled_signs[HADAMARD_MAX_LOG + 1][1 << HADAMARD_MAX_LOG];
    HadamardTables() {
        for (int k = 0; k <= HADAMARD_MAX_LOG; k++) {
            const int n = 1 << k;
            uint64_t s = 0x6b76666974ull ^ (uint64_t(n) * 0x9e3779b97f4a7c15ull);
            const float scale = float(1.0 / std::sqrt(double(n)));
            for (int i = 0; i < n; i++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                scaled_signs[k][i] = (s >> 63) ? -scale : scale;
            }
        }
    }
};

const float *hadamard_signs(int n) {
    static const HadamardTables t;
    int k = 0;
    while ((1 << k) < n && k <= HADAMARD_MAX_LOG) k++;
    if (n <= 0 || (1 << k) != n || k > HADAMARD_MAX_LOG)
        fail(KVFIT_E_INTERNAL, "Hadamard rotation needs a power of two <= 512, not %d", n);
    return t.scaled_signs[k];
}

// Unnormalised fast Walsh-Hadamard transform (Sylvester order), in place.
// Its stages commute; every path here runs them in this order, so results
// are bit-identical across paths.
void fwht(float *x, int n) {
    for (int h = 1; h < n; h *= 2) {
        for (int i = 0; i < n; i += 2 * h) {
            for (int j = i; j < i + h; j++) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
        }
    }
}

// x <- H diag(s) x, or diag(s) H x for the inverse (s already scaled by 1/sqrt(n)).
void rotate_scalar(float *x, const float *s, int n, bool inverse) {
    if (!inverse)
        for (int i = 0; i < n; i++) x[i] *= s[i];
    fwht(x, n);
    if (inverse)
        for (int i = 0; i < n; i++) x[i] *= s[i];
}

// ---------------------------------------------------------------------------
// AVX2 + FMA + F16C: whole-row decoding, per-channel block decoding and the rotation.

#if defined(__x86_64__)

#define KVFIT_AVX2 __attribute__((target("avx2,fma,f16c")))

KVFIT_AVX2 inline float h2f(const uint8_t *p) {
    return _cvtsh_ss(ld16(p));
}

// 8 halfs / 8 int8 at p -> 8 floats
KVFIT_AVX2 inline __m256 ld_f16x8(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
KVFIT_AVX2 inline __m256 ld_i8x8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}

// The 32 codes of a Q4 group as floats, in value order.
KVFIT_AVX2 inline void ld_q4(const uint8_t *qs, __m256 f[4]) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, mask), hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    f[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    f[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo)));
    f[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    f[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi)));
}

// The rotation for n >= 8: stages h = 1, 2, 4 inside one vector (swap
// neighbours, then blend sums and differences), wider stages across vectors.
KVFIT_AVX2 inline __m256 fwht8(__m256 v) {
    __m256 p = _mm256_permute_ps(v, 0xb1);  // 1 0 3 2
    v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xaa);
    p = _mm256_permute_ps(v, 0x4e);  // 2 3 0 1
    v = _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xcc);
    p = _mm256_permute2f128_ps(v, v, 0x01);  // the other 128-bit half
    return _mm256_blend_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), 0xf0);
}

KVFIT_AVX2 void rotate_avx2(float *x, const float *s, int n, bool inverse) {
    if (n < 8) return rotate_scalar(x, s, n, inverse);
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (!inverse) v = _mm256_mul_ps(v, _mm256_loadu_ps(s + i));
        _mm256_storeu_ps(x + i, fwht8(v));
    }
    for (int h = 8; h < n; h *= 2) {
        for (int i = 0; i < n; i += 2 * h) {
            for (int j = i; j < i + h; j += 8) {
                const __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + h);
                _mm256_storeu_ps(x + j, _mm256_add_ps(a, b));
                _mm256_storeu_ps(x + j + h, _mm256_sub_ps(a, b));
            }
        }
    }
    if (inverse)
        for (int i = 0; i < n; i += 8)
            _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(s + i)));
}

// Whole-row decoding, used where attention must rotate keys before the dot.
KVFIT_AVX2 void decode_avx2(int codec, const uint8_t *src, float *x, int n) {
    if (codec == 0) {
        int i = 0;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, ld_f16x8(src + 2 * i));
        for (; i < n; i++) x[i] = h2f(src + 2 * i);
        return;
    }
    for (int g = 0; g < n / G; g++, x += G) {
        if (codec == 1) {
            const __m256 d = _mm256_set1_ps(h2f(src));
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(x + 8 * k, _mm256_mul_ps(ld_i8x8(src + 2 + 8 * k), d));
            src += Q8_GROUP_BYTES;
        } else {
            const __m256 d = _mm256_set1_ps(h2f(src)), m = _mm256_set1_ps(h2f(src + 2));
            __m256 f[4];
            ld_q4(src + 4, f);
            for (int k = 0; k < 4; k++) _mm256_storeu_ps(x + 8 * k, _mm256_fmadd_ps(f[k], d, m));
            src += Q4_GROUP_BYTES;
        }
    }
}

// Per-channel key blocks: 8 channels at a time, their 16 code bytes
// transposed so that each token's 8 codes sit in one register (byte p of the
// 8 channels holds tokens p and p + 16).
KVFIT_AVX2 void channel_block_decode_avx2(const uint8_t *block, int n, int first, int count, float *dst) {
    const int last = first + count;
    for (int c0 = 0; c0 < n; c0 += 8) {
        const uint8_t *rec = block + size_t(c0) * Q4_GROUP_BYTES;
        alignas(32) float d[8], m[8];
        __m128i r[8];
        for (int c = 0; c < 8; c++) {
            d[c] = h2f(rec + size_t(c) * Q4_GROUP_BYTES);
            m[c] = h2f(rec + size_t(c) * Q4_GROUP_BYTES + 2);
            r[c] = _mm_loadu_si128(reinterpret_cast<const __m128i *>(rec + size_t(c) * Q4_GROUP_BYTES + 4));
        }
        const __m256 dv = _mm256_load_ps(d), mv = _mm256_load_ps(m);
        __m128i a[8], b[8], t[8];
        for (int i = 0; i < 4; i++) {
            a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
        }
        for (int i = 0; i < 2; i++) {  // channel pairs (0,1)+(2,3) and (4,5)+(6,7)
            b[4 * i + 0] = _mm_unpacklo_epi16(a[4 * i], a[4 * i + 2]);
            b[4 * i + 1] = _mm_unpackhi_epi16(a[4 * i], a[4 * i + 2]);
            b[4 * i + 2] = _mm_unpacklo_epi16(a[4 * i + 1], a[4 * i + 3]);
            b[4 * i + 3] = _mm_unpackhi_epi16(a[4 * i + 1], a[4 * i + 3]);
        }
        for (int i = 0; i < 4; i++) {  // t[j]: the 8 channels' bytes at positions 2j, 2j + 1
            t[2 * i] = _mm_unpacklo_epi32(b[i], b[i + 4]);
            t[2 * i + 1] = _mm_unpackhi_epi32(b[i], b[i + 4]);
        }
        const __m128i mask = _mm_set1_epi8(0x0f);
        for (int p = 0; p < 16; p++) {
            const __m128i bytes = (p & 1) ? _mm_srli_si128(t[p / 2], 8) : t[p / 2];
            for (int half = 0; half < 2; half++) {
                const int tok = p + 16 * half;
                if (tok < first || tok >= last) continue;
                const __m128i q = _mm_and_si128(half ? _mm_srli_epi16(bytes, 4) : bytes, mask);
                const __m256 v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), dv, mv);
                _mm256_storeu_ps(dst + size_t(tok - first) * size_t(n) + size_t(c0), v);
            }
        }
    }
}

#endif  // __x86_64__

// ---------------------------------------------------------------------------
// Dispatch

using RotateFn = void (*)(float *x, const float *scaled_signs, int n, bool inverse);

RotateFn rotate_fn() {
#if defined(__x86_64__)
    static const RotateFn f = cpu::has_avx2_fma_f16c() ? rotate_avx2 : rotate_scalar;
    return f;
#else
    return rotate_scalar;
#endif
}

inline int codec_index(KVCodec c) {
    const int i = int(c) - 1;
    if (i < 0 || i > 2) fail(KVFIT_E_INTERNAL, "unknown KV codec %d", int(c));
    return i;
}

// Encoding and decoding also check the row length (once per row).
inline int row_codec_index(KVCodec c, int n) {
    if (n <= 0 || (n % G && c != KVCodec::F16))
        fail(KVFIT_E_INTERNAL, "KV row of %d values is not a multiple of %d", n, G);
    return codec_index(c);
}

}  // namespace

size_t codec_row_bytes(KVCodec c, int n) {
    if (n <= 0 || (n % G && c != KVCodec::F16)) return 0;
    switch (c) {
        case KVCodec::F16:
            return size_t(n) * 2;
        case KVCodec::Q8:
            return size_t(n / G) * Q8_GROUP_BYTES;
        case KVCodec::Q4:
            return size_t(n / G) * Q4_GROUP_BYTES;
    }
    return 0;
}

const char *codec_name(KVCodec c) {
    switch (c) {
        case KVCodec::F16:
            return "F16";
        case KVCodec::Q8:
            return "Q8";
        case KVCodec::Q4:
            return "Q4";
    }
    return "?";
}

void codec_encode(KVCodec c, const float *x, void *dst, int n) {
    uint8_t *d = static_cast<uint8_t *>(dst);
    switch (row_codec_index(c, n)) {
        case 0:
            return encode_f16(x, d, n);
        case 1:
            return encode_q8(x, d, n);
        default:
            return encode_q4(x, d, n);
    }
}

void codec_decode(KVCodec c, const void *src, float *x, int n) {
    const uint8_t *s = static_cast<const uint8_t *>(src);
#if defined(__x86_64__)
    static const bool avx2 = cpu::has_avx2_fma_f16c();
    if (avx2) return decode_avx2(row_codec_index(c, n), s, x, n);
#endif
    switch (row_codec_index(c, n)) {
        case 0:
            return decode_f16(s, x, n);
        case 1:
            return decode_q8(s, x, n);
        default:
            return decode_q4(s, x, n);
    }
}

size_t channel_block_bytes(int n) {
    return n > 0 ? size_t(n) * codec_row_bytes(KVCodec::Q4, KV_CHANNEL_BLOCK) : 0;
}

void channel_block_encode(const float *rows, size_t stride, void *dst, int n) {
    const size_t gb = codec_row_bytes(KVCodec::Q4, KV_CHANNEL_BLOCK);
    float col[KV_CHANNEL_BLOCK];
    for (int c = 0; c < n; c++) {
        for (int t = 0; t < KV_CHANNEL_BLOCK; t++) col[t] = rows[size_t(t) * stride + size_t(c)];
        encode_q4(col, static_cast<uint8_t *>(dst) + size_t(c) * gb, KV_CHANNEL_BLOCK);
    }
}

void channel_block_decode(const void *block, int n, int first, int count, float *dst) {
#if defined(__x86_64__)
    static const bool avx2 = cpu::has_avx2_fma_f16c();
    if (avx2 && n % 8 == 0) return channel_block_decode_avx2(static_cast<const uint8_t *>(block), n, first, count, dst);
#endif
    const size_t gb = codec_row_bytes(KVCodec::Q4, KV_CHANNEL_BLOCK);
    float col[KV_CHANNEL_BLOCK];
    for (int c = 0; c < n; c++) {
        codec_decode(KVCodec::Q4, static_cast<const uint8_t *>(block) + size_t(c) * gb, col, KV_CHANNEL_BLOCK);
        for (int t = 0; t < count; t++) dst[size_t(t) * size_t(n) + size_t(c)] = col[first + t];
    }
}

void hadamard_rotate(float *x, int n) {
    rotate_fn()(x, hadamard_signs(n), n, false);
}

void hadamard_rotate_inv(float *x, int n) {
    rotate_fn()(x, hadamard_signs(n), n, true);
}

}  // namespace kvfit
