#include "backend/cpu/ggml_order.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "gguf/ggml_types.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvfit {
namespace cpu {

namespace {

#if defined(__x86_64__)
// Element-wise ops: any vector width gives the same bits, one rounding per op.
__attribute__((target("avx2,fma,f16c"))) void scale_f16_avx2(uint16_t *a, int n, float s) {
    const __m256 v = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i *p = reinterpret_cast<__m128i *>(a + i);
        _mm_storeu_si128(p, _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(p)), v), _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) a[i] = fp32_to_fp16(fp16_to_fp32(a[i]) * s);
}
__attribute__((target("avx2,fma,f16c"))) void mad_f16_avx2(uint16_t *a, const uint16_t *x, int n, float s) {
    const __m256 v = _mm256_set1_ps(s);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i *p = reinterpret_cast<__m128i *>(a + i);
        const __m256 xv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x + i)));
        _mm_storeu_si128(p, _mm256_cvtps_ph(_mm256_fmadd_ps(xv, v, _mm256_cvtph_ps(_mm_loadu_si128(p))),
                                            _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++) a[i] = fp32_to_fp16(std::fma(fp16_to_fp32(x[i]), s, fp16_to_fp32(a[i])));
}
__attribute__((target("avx2,fma,f16c"))) inline __m256 ld(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}
// Lane l of the 16-lane accumulators lives in lo (l < 8) or hi (l >= 8).
__attribute__((target("avx2,fma,f16c"))) float dot_f16_avx2(const uint16_t *x, const uint16_t *y, int n) {
    const int np = n & ~63;
    __m256 lo[4], hi[4];
    for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++) {
            lo[j] = _mm256_fmadd_ps(ld(x + i + 16 * j), ld(y + i + 16 * j), lo[j]);
            hi[j] = _mm256_fmadd_ps(ld(x + i + 16 * j + 8), ld(y + i + 16 * j + 8), hi[j]);
        }
    // x0 = s0 + s2, x1 = s1 + s3, x0 += x1; then _mm512_reduce_add_ps.
    const __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    const __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    const __m256 t3 = _mm256_add_ps(h, l);
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    double sum = double(_mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8))));
    for (int i = np; i < n; i++) sum += double(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return float(sum);
}
// exp_ggml on 8 lanes; the scaling by 2^n as two exact factors (one rounding).
__attribute__((target("avx2,fma"))) __m256 exp_ggml_avx2(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    const __m256 big = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 inf_or_0 = _mm256_and_ps(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_GT_OQ),
                                          _mm256_set1_ps(INFINITY));
    // n is integral; where |n| <= 192, 2^(n/2) and 2^(n - n/2) are normal floats
    const __m256i ni = _mm256_cvttps_epi32(_mm256_blendv_ps(n, _mm256_setzero_ps(), big));
    const __m256i h = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    return _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(j, f1), f2), inf_or_0, big);
}

__attribute__((target("avx2,fma"))) void exps_avx2(const float *x, int n, float *out) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp_ggml_avx2(_mm256_loadu_ps(x + i)));
    if (i < n) {  // the rest in one padded vector (lanes are independent)
        alignas(32) float t[8] = {};
        for (int j = i; j < n; j++) t[j - i] = x[j];
        _mm256_store_ps(t, exp_ggml_avx2(_mm256_load_ps(t)));
        for (int j = i; j < n; j++) out[j] = t[j - i];
    }
}

// dot_f16_avx2 with the query already converted to floats (the same values).
__attribute__((target("avx2,fma,f16c"))) float dot_f16_q_avx2(const uint16_t *x, const float *y, int n) {
    const int np = n & ~63;
    __m256 lo[4], hi[4];
    for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++) {
            lo[j] = _mm256_fmadd_ps(ld(x + i + 16 * j), _mm256_loadu_ps(y + i + 16 * j), lo[j]);
            hi[j] = _mm256_fmadd_ps(ld(x + i + 16 * j + 8), _mm256_loadu_ps(y + i + 16 * j + 8), hi[j]);
        }
    const __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
    const __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
    const __m256 t3 = _mm256_add_ps(h, l);
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    double sum = double(_mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8))));
    for (int i = np; i < n; i++) sum += double(fp16_to_fp32(x[i]) * y[i]);
    return float(sum);
}

__attribute__((target("avx2,fma,f16c"))) inline __m256 round_f16(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

// Per block of keys j0 .. j0 + nb - 1: their scores, and the accumulator's
// updates (acc = f16(acc * ms[j]) where ms[j] != 1, a new maximum, since
// acc * 1 is acc; then acc = f16(fma(value j, vs[j], acc))), in the width of
// one instruction set; attention_ggml_blocked does the rest.
using ScoreBlockFn = void (*)(const F16Rows &K, int j0, int nb, const float *qf, int hd, float scale, float *sc);
using UpdateBlockFn = void (*)(float *acc, const F16Rows &V, int j0, int nb, const float *ms, const float *vs, int hd);

__attribute__((target("avx2,fma,f16c"))) void score_block_avx2(const F16Rows &K, int j0, int nb, const float *qf,
                                                               int hd, float scale, float *sc) {
    for (int j = 0; j < nb; j++) sc[j] = dot_f16_q_avx2(K.row(j0 + j), qf, hd) * scale;
}

__attribute__((target("avx2,fma,f16c"))) void update_block_avx2(float *acc, const F16Rows &V, int j0, int nb,
                                                                const float *ms, const float *vs, int hd) {
    for (int j = 0; j < nb; j++) {
        const uint16_t *v = V.row(j0 + j);
        const __m256 w = _mm256_set1_ps(vs[j]);
        if (ms[j] != 1.0f) {
            const __m256 r = _mm256_set1_ps(ms[j]);
            for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(acc + d, round_f16(_mm256_mul_ps(_mm256_loadu_ps(acc + d), r)));
        }
        for (int d = 0; d < hd; d += 8)
            _mm256_storeu_ps(acc + d, round_f16(_mm256_fmadd_ps(ld(v + d), w, _mm256_loadu_ps(acc + d))));
    }
}

// attention_ggml's operations with keys scored a block at a time and the
// accumulator kept as floats (F16 values) in acc.
__attribute__((target("avx2,fma,f16c"))) void attention_ggml_blocked(const uint16_t *q16, int hd, int n, float scale,
                                                                   const F16Rows &K, const F16Rows &V, float *qf,
                                                                   float *acc, float *out, ScoreBlockFn score,
                                                                   UpdateBlockFn update) {
    for (int d = 0; d < hd; d++) {
        qf[d] = fp16_to_fp32(q16[d]);
        acc[d] = 0.0f;
    }
    constexpr int B = 32;
    float sc[B], ms[B], vs[B];
    float S = 0.0f, M = -INFINITY;
    for (int j0 = 0; j0 < n; j0 += B) {
        const int nb = std::min(B, n - j0);
        score(K, j0, nb, qf, hd, scale, sc);
        for (int j = 0; j < nb; j++) {
            ms[j] = vs[j] = 1.0f;
            if (sc[j] > M) {
                const float m_old = M;
                M = sc[j];
                ms[j] = std::exp(m_old - M);
            } else {
                vs[j] = std::exp(sc[j] - M);
            }
            S = __builtin_fmaf(S, ms[j], vs[j]);
        }
        update(acc, V, j0, nb, ms, vs, hd);
    }
    const float inv = S == 0.0f ? 0.0f : 1.0f / S;
    for (int d = 0; d < hd; d++) out[d] = acc[d] * inv;
}

// GCC 12 warns inside its own AVX-512 intrinsics (their "undefined" operands)
// once they are inlined into target("avx512f") functions; nothing here is.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The same with 16-lane registers: ggml's AVX-512 accumulators themselves.
__attribute__((target("avx512f,avx2,fma,f16c"))) float dot_f16_q_avx512(const uint16_t *x, const float *y, int n) {
    const int np = n & ~63;
    __m512 acc[4];
    for (int j = 0; j < 4; j++) acc[j] = _mm512_setzero_ps();
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i + 16 * j))),
                                     _mm512_loadu_ps(y + i + 16 * j), acc[j]);
    const __m512 x0 = _mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), _mm512_add_ps(acc[1], acc[3]));
    const __m256 t3 = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x0), 1)),
                                    _mm512_castps512_ps256(x0));
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    double sum = double(_mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8))));
    for (int i = np; i < n; i++) sum += double(fp16_to_fp32(x[i]) * y[i]);
    return float(sum);
}

__attribute__((target("avx512f,avx2,fma,f16c"))) inline __m512 round_f16_512(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
}

__attribute__((target("avx512f,avx2,fma,f16c"))) void score_block_avx512(const F16Rows &K, int j0, int nb,
                                                                         const float *qf, int hd, float scale,
                                                                         float *sc) {
    for (int j = 0; j < nb; j++) sc[j] = dot_f16_q_avx512(K.row(j0 + j), qf, hd) * scale;
}

// update_block_avx2 with 16-lane registers (head size a multiple of 16).
__attribute__((target("avx512f,avx2,fma,f16c"))) void update_block_avx512(float *acc, const F16Rows &V, int j0,
                                                                          int nb, const float *ms, const float *vs,
                                                                          int hd) {
    for (int j = 0; j < nb; j++) {
        const uint16_t *v = V.row(j0 + j);
        const __m512 w = _mm512_set1_ps(vs[j]);
        if (ms[j] != 1.0f) {
            const __m512 r = _mm512_set1_ps(ms[j]);
            for (int d = 0; d < hd; d += 16)
                _mm512_storeu_ps(acc + d, round_f16_512(_mm512_mul_ps(_mm512_loadu_ps(acc + d), r)));
        }
        for (int d = 0; d < hd; d += 16) {
            const __m512 vv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(v + d)));
            _mm512_storeu_ps(acc + d, round_f16_512(_mm512_fmadd_ps(vv, w, _mm512_loadu_ps(acc + d))));
        }
    }
}
#pragma GCC diagnostic pop
#endif

float dot_f16_scalar(const uint16_t *x, const uint16_t *y, int n) {
    const int np = n & ~63;
    float acc[4][16] = {};
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++)
                acc[j][l] = std::fma(fp16_to_fp32(x[i + 16 * j + l]), fp16_to_fp32(y[i + 16 * j + l]), acc[j][l]);
    float v[16];
    for (int l = 0; l < 16; l++) v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    float t3[8], t6[4];
    for (int i = 0; i < 8; i++) t3[i] = v[8 + i] + v[i];
    for (int i = 0; i < 4; i++) t6[i] = t3[4 + i] + t3[i];
    double sum = double((t6[0] + t6[2]) + (t6[1] + t6[3]));
    for (int i = np; i < n; i++) sum += double(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return float(sum);
}


}  // namespace

float exp_ggml(float x) {
    const float r = 0x1.8p23f;
    const float z = std::fma(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                             u, std::fma(0x1.ffffecp-1f, b, 1.0f));
    if (std::isnan(n)) return n;  // exp(NaN); int(NaN) below would be undefined
    if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    return std::ldexp(j, int(n));
}

void rope_ggml(float *v, const float *cs, int n_dims, bool neox) {
    const int half = n_dims / 2;
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        float *p0 = neox ? v + i : v + 2 * i;
        float *p1 = neox ? v + i + half : v + 2 * i + 1;
        const float x0 = *p0, x1 = *p1;
        // x0*c - x1*s and x0*s + x1*c, contracted as the compiler does in ggml
        *p0 = std::fma(x0, c, -(x1 * s));
        *p1 = std::fma(x0, s, x1 * c);
    }
}

float dot_f16_ggml(const uint16_t *x, const uint16_t *y, int n) {
#if defined(__x86_64__)
    if (has_avx2_fma_f16c()) return dot_f16_avx2(x, y, n);
#endif
    return dot_f16_scalar(x, y, n);
}

void scale_f16_ggml(uint16_t *a, int n, float s) {
#if defined(__x86_64__)
    if (has_avx2_fma_f16c()) return scale_f16_avx2(a, n, s);
#endif
    for (int i = 0; i < n; i++) a[i] = fp32_to_fp16(fp16_to_fp32(a[i]) * s);
}

void mad_f16_ggml(uint16_t *a, const uint16_t *x, int n, float s) {
#if defined(__x86_64__)
    if (has_avx2_fma_f16c()) return mad_f16_avx2(a, x, n, s);
#endif
    for (int i = 0; i < n; i++) a[i] = fp32_to_fp16(std::fma(fp16_to_fp32(x[i]), s, fp16_to_fp32(a[i])));
}

void attention_ggml_rows(const uint16_t *q16, int hd, int n, float scale, const F16Rows &k, const F16Rows &v,
                         float *scratch, float *out) {
#if defined(__x86_64__)
    if (hd % 16 == 0 && has_avx512f())
        return attention_ggml_blocked(q16, hd, n, scale, k, v, scratch, scratch + hd, out, score_block_avx512,
                                      update_block_avx512);
    if (hd % 8 == 0 && has_avx2_fma_f16c())
        return attention_ggml_blocked(q16, hd, n, scale, k, v, scratch, scratch + hd, out, score_block_avx2,
                                      update_block_avx2);
#endif
    attention_ggml(
        q16, hd, n, scale, [&](int j) { return k.row(j); }, [&](int j) { return v.row(j); },
        reinterpret_cast<uint16_t *>(scratch), out);
}

void exp_ggml_n(const float *x, int n, float *out) {
#if defined(__x86_64__)
    if (has_avx2_fma()) return exps_avx2(x, n, out);
#endif
    for (int i = 0; i < n; i++) out[i] = exp_ggml(x[i]);
}

const uint16_t *gelu_f16_table() {
    static const std::vector<uint16_t> table = [] {
        constexpr float a = 0.044715f, c = 0.79788456080286535587989211986876f;  // sqrt(2 / pi)
        std::vector<uint16_t> t(size_t(1) << 16);
        for (size_t i = 0; i < t.size(); i++) {
            const float x = fp16_to_fp32(uint16_t(i));
            t[i] = fp32_to_fp16(0.5f * x * (1.0f + std::tanh(c * x * std::fma(a * x, x, 1.0f))));
        }
        return t;
    }();
    return table.data();
}

void geglu_ggml(const float *gate, const float *up, size_t n, float *out) {
    const uint16_t *table = gelu_f16_table();
    for (size_t i = 0; i < n; i++) {
        const float x = gate[i];
        if (x <= -10.0f) out[i] = 0.0f;
        else if (x >= 10.0f) out[i] = x * up[i];
        else out[i] = fp16_to_fp32(table[fp32_to_fp16(x)]) * up[i];
    }
}

void swiglu_ggml(const float *gate, const float *up, size_t n, float *out) {
    const size_t nv = n & ~size_t(15);
    constexpr size_t kPiece = 256;
    float e[kPiece];
    for (size_t i0 = 0; i0 < nv; i0 += kPiece) {
        const size_t k = std::min(kPiece, nv - i0);
        for (size_t i = 0; i < k; i++) e[i] = 0.0f - gate[i0 + i];
        exp_ggml_n(e, int(k), e);
        for (size_t i = 0; i < k; i++) out[i0 + i] = (gate[i0 + i] / (1.0f + e[i])) * up[i0 + i];
    }
    for (size_t i = nv; i < n; i++) {
        const float x = gate[i];
        out[i] = (x / (1.0f + std::exp(-x))) * up[i];
    }
}

}  // namespace cpu
}  // namespace kvfit
