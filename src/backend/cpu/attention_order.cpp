#include "backend/cpu/attention_order.h"

#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ggml_order.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvfit {
namespace cpu {

namespace {

float dot_scalar(const float *k, const float *q, int n) {
    float x[16] = {};
    for (int e = 0; e < n; e++) x[e % 16] = std::fma(k[e], q[e], x[e % 16]);
    for (int l = 0; l < 8; l++) x[l] = x[l] + x[l + 8];
    for (int l = 0; l < 4; l++) x[l] = x[l] + x[l + 4];
    for (int l = 0; l < 2; l++) x[l] = x[l] + x[l + 2];
    return x[0] + x[1];
}

// Per key of a chunk, in order: the argument of its exp and whether it is a
// new maximum (the prefix maximum decides).
float prefix_args(float m, const float *s, int n, float *arg, float *is_max) {
    for (int j = 0; j < n; j++) {
        if (s[j] > m) {
            arg[j] = m - s[j];
            is_max[j] = 1.0f;
            m = s[j];
        } else {
            arg[j] = s[j] - m;
            is_max[j] = 0.0f;
        }
    }
    return m;
}

// The per-element updates: any vector width gives the same bits.
void values_scalar(float *acc, const float *vals, int n, int hd, const float *e, const float *is_max) {
    for (int j = 0; j < n; j++) {
        const float *v = vals + size_t(j) * size_t(hd);
        const float w = is_max[j] != 0.0f ? 1.0f : e[j];
        if (is_max[j] != 0.0f)
            for (int d = 0; d < hd; d++) acc[d] *= e[j];
        for (int d = 0; d < hd; d++) acc[d] = std::fma(v[d], w, acc[d]);
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dot_avx2(const float *k, const float *q, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int e = 0;
    for (; e + 16 <= n; e += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + e), _mm256_loadu_ps(q + e), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(k + e + 8), _mm256_loadu_ps(q + e + 8), a1);
    }
    if (e < n) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(k + e), _mm256_loadu_ps(q + e), a0);  // n % 16 == 8
    const __m256 s8 = _mm256_add_ps(a0, a1);
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    return _mm_cvtss_f32(_mm_add_ss(x, _mm_movehdup_ps(x)));
}

// The sum's chain, with fma as an instruction rather than a library call.
__attribute__((target("avx2,fma"))) float sum_chain_avx2(float l, const float *e, const float *is_max, int n) {
    for (int j = 0; j < n; j++) l = is_max[j] != 0.0f ? __builtin_fmaf(l, e[j], 1.0f) : __builtin_fmaf(l, 1.0f, e[j]);
    return l;
}

__attribute__((target("avx2,fma"))) void merge_avx2(float *tacc, const float *cacc, int hd, float a, float b) {
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
    int d = 0;
    for (; d + 8 <= hd; d += 8)
        _mm256_storeu_ps(tacc + d, _mm256_fmadd_ps(_mm256_loadu_ps(tacc + d), va,
                                                   _mm256_mul_ps(_mm256_loadu_ps(cacc + d), vb)));
    for (; d < hd; d++) tacc[d] = __builtin_fmaf(tacc[d], a, cacc[d] * b);
}

// Up to 64 accumulator values stay in registers across the keys, as 8
// independent fma chains (one chain at a time would wait on fma latency).
template <int NS>
__attribute__((target("avx2,fma"))) inline void values_slices_avx2(float *acc, const float *vals, int n, int hd,
                                                                    const float *e, const float *is_max) {
    __m256 a[NS];
    for (int k = 0; k < NS; k++) a[k] = _mm256_loadu_ps(acc + 8 * k);
    for (int j = 0; j < n; j++) {
        const float *v = vals + size_t(j) * size_t(hd);
        const __m256 w = _mm256_set1_ps(e[j]);
        if (is_max[j] != 0.0f) {
            for (int k = 0; k < NS; k++) a[k] = _mm256_add_ps(_mm256_loadu_ps(v + 8 * k), _mm256_mul_ps(a[k], w));
        } else {
            for (int k = 0; k < NS; k++) a[k] = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8 * k), w, a[k]);
        }
    }
    for (int k = 0; k < NS; k++) _mm256_storeu_ps(acc + 8 * k, a[k]);
}

__attribute__((target("avx2,fma"))) void values_avx2(float *acc, const float *vals, int n, int hd, const float *e,
                                                     const float *is_max) {
    int d = 0;
    for (; d + 64 <= hd; d += 64) values_slices_avx2<8>(acc + d, vals + d, n, hd, e, is_max);
    for (; d + 8 <= hd; d += 8) values_slices_avx2<1>(acc + d, vals + d, n, hd, e, is_max);
}
#endif

}  // namespace

float attn_dot(const float *k, const float *q, int n) {
#if defined(__x86_64__)
    if (n % 8 == 0 && has_avx2_fma()) return dot_avx2(k, q, n);
#endif
    return dot_scalar(k, q, n);
}

void attn_chunk_add(SoftmaxState &st, float *acc, const float *s, int n, const float *vals, int hd, float *scratch) {
    float *arg = scratch, *is_max = scratch + n, *e = scratch + 2 * size_t(n);
    st.m = prefix_args(st.m, s, n, arg, is_max);
    exp_ggml_n(arg, n, e);
#if defined(__x86_64__)
    if (has_avx2_fma()) {
        st.l = sum_chain_avx2(st.l, e, is_max, n);
        if (hd % 8 == 0) return values_avx2(acc, vals, n, hd, e, is_max);
        return values_scalar(acc, vals, n, hd, e, is_max);
    }
#endif
    for (int j = 0; j < n; j++)
        st.l = is_max[j] != 0.0f ? std::fma(st.l, e[j], 1.0f) : std::fma(st.l, 1.0f, e[j]);
    values_scalar(acc, vals, n, hd, e, is_max);
}

void attn_chunk_merge(SoftmaxState &t, float *tacc, const SoftmaxState &c, const float *cacc, int hd) {
    const float m = std::max(t.m, c.m);
    const float a = exp_ggml(t.m - m), b = exp_ggml(c.m - m);
    t.l = std::fma(t.l, a, c.l * b);
    t.m = m;
#if defined(__x86_64__)
    if (has_avx2_fma()) return merge_avx2(tacc, cacc, hd, a, b);
#endif
    for (int d = 0; d < hd; d++) tacc[d] = std::fma(tacc[d], a, cacc[d] * b);
}

void attn_finish(const SoftmaxState &t, const float *tacc, int hd, float *out) {
    const float inv = t.l == 0.0f ? 0.0f : 1.0f / t.l;
    for (int d = 0; d < hd; d++) out[d] = tacc[d] * inv;
}

}  // namespace cpu
}  // namespace kvfit
