// GCC 12's AVX-512 headers build some intrinsics from _mm512_undefined_*().
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/attention_order.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

// nq sum chains side by side (independent, so their latencies overlap).
__attribute__((target("avx2,fma"))) void sum_chains_avx2(int nq, float *l, const float *const *e,
                                                          const float *const *is_max, int n) {
    float l0 = l[0], l1 = l[1], l2 = l[2], l3 = l[3];
    auto step = [](float x, float ev, float im) {
        return im != 0.0f ? __builtin_fmaf(x, ev, 1.0f) : __builtin_fmaf(x, 1.0f, ev);
    };
    const float *e0 = e[0], *e1 = e[std::min(1, nq - 1)], *e2 = e[std::min(2, nq - 1)], *e3 = e[std::min(3, nq - 1)];
    const float *m0 = is_max[0], *m1 = is_max[std::min(1, nq - 1)], *m2 = is_max[std::min(2, nq - 1)],
                *m3 = is_max[std::min(3, nq - 1)];
    for (int j = 0; j < n; j++) {
        l0 = step(l0, e0[j], m0[j]);
        l1 = step(l1, e1[j], m1[j]);
        l2 = step(l2, e2[j], m2[j]);
        l3 = step(l3, e3[j], m3[j]);
    }
    l[0] = l0;
    l[1] = l1;
    l[2] = l2;
    l[3] = l3;
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

// The reduction s8, s4, s2, dot of attention_order.h for 16 accumulators at
// once with shuffles (each sum adds the same two numbers as the scalar
// tree); lane j of the result is accumulator j's dot.
__attribute__((target("avx512f,fma"))) inline __m512 reduce16_avx512(const __m512 *x) {
    __m512 y[8], z[4];
    for (int i = 0; i < 8; i++)  // lanes 0-7: x[2i]'s s8, lanes 8-15: x[2i+1]'s
        y[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++)  // 128-bit block k: x[4i+k]'s s4
        z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], 0xDD));
    // block k: s2 of x[k] and x[4 + k] (w01), x[8 + k] and x[12 + k] (w23)
    const __m512 w01 = _mm512_add_ps(_mm512_shuffle_ps(z[0], z[1], 0x44), _mm512_shuffle_ps(z[0], z[1], 0xEE));
    const __m512 w23 = _mm512_add_ps(_mm512_shuffle_ps(z[2], z[3], 0x44), _mm512_shuffle_ps(z[2], z[3], 0xEE));
    // lane 4k + m: x[4m + k]
    const __m512 d = _mm512_add_ps(_mm512_shuffle_ps(w01, w23, 0x88), _mm512_shuffle_ps(w01, w23, 0xDD));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, d);
}

// 16 keys against one query: the 16 lanes of each key's fma chain as in
// dot_avx2, then reduce16.
__attribute__((target("avx512f,fma"))) inline void scores16_avx512(const float *keys, const float *q, int hd,
                                                                      __m512 scale, float *out) {
    __m512 x[16];
    for (int j = 0; j < 16; j++) x[j] = _mm512_setzero_ps();
    for (int e = 0; e < hd; e += 16) {
        const __m512 qv = _mm512_loadu_ps(q + e);
        for (int j = 0; j < 16; j++) x[j] = _mm512_fmadd_ps(_mm512_loadu_ps(keys + size_t(j) * hd + e), qv, x[j]);
    }
    _mm512_storeu_ps(out, _mm512_mul_ps(reduce16_avx512(x), scale));
}

// 4 keys against 4 queries (each key read once for all four): accumulator
// 4i + k is query i with key k.
__attribute__((target("avx512f,fma"))) void scores4x4_avx512(const float *keys, int n, const float *const *q, int hd,
                                                               float scale, float *const *out) {
    const __m512 vs = _mm512_set1_ps(scale);
    for (int j = 0; j + 4 <= n; j += 4) {
        const float *k = keys + size_t(j) * hd;
        __m512 x[16];
        for (int i = 0; i < 16; i++) x[i] = _mm512_setzero_ps();
        for (int e = 0; e < hd; e += 16) {
            const __m512 k0 = _mm512_loadu_ps(k + e), k1 = _mm512_loadu_ps(k + hd + e);
            const __m512 k2 = _mm512_loadu_ps(k + 2 * hd + e), k3 = _mm512_loadu_ps(k + 3 * hd + e);
            for (int i = 0; i < 4; i++) {
                const __m512 qv = _mm512_loadu_ps(q[i] + e);
                x[4 * i] = _mm512_fmadd_ps(k0, qv, x[4 * i]);
                x[4 * i + 1] = _mm512_fmadd_ps(k1, qv, x[4 * i + 1]);
                x[4 * i + 2] = _mm512_fmadd_ps(k2, qv, x[4 * i + 2]);
                x[4 * i + 3] = _mm512_fmadd_ps(k3, qv, x[4 * i + 3]);
            }
        }
        alignas(64) float r[16];
        _mm512_store_ps(r, _mm512_mul_ps(reduce16_avx512(x), vs));
        for (int i = 0; i < 4; i++) std::memcpy(out[i] + j, r + 4 * i, 16);
    }
}

__attribute__((target("avx512f,fma"))) void scores_avx512(const float *keys, int n, const float *q, int hd,
                                                             float scale, float *out) {
    const __m512 vs = _mm512_set1_ps(scale);
    int j = 0;
    for (; j + 16 <= n; j += 16) scores16_avx512(keys + size_t(j) * hd, q, hd, vs, out + j);
    for (; j < n; j++) out[j] = dot_avx2(keys + size_t(j) * hd, q, hd) * scale;
}

// values_slices_avx2 for NQ query rows at once, 16-float slices: NQ * NS
// independent fma chains. any_max[j]: key j is a new maximum of some row.
template <int NQ, int NS>
__attribute__((target("avx512f,fma"))) void values_multi_avx512(float *const *acc, const float *const *vals, int n,
                                                                  int hd, int d0, const float *const *e,
                                                                  const float *const *is_max, const uint8_t *any_max) {
    __m512 a[NQ][NS];
    bool shared = true;
    for (int q = 0; q < NQ; q++) {
        shared = shared && vals[q] == vals[0];
        for (int k = 0; k < NS; k++) a[q][k] = _mm512_loadu_ps(acc[q] + d0 + 16 * k);
    }
    for (int j = 0; j < n; j++) {
        if (!any_max[j]) {
            if (shared) {  // one value row for every query row: read it once
                const float *v = vals[0] + size_t(j) * size_t(hd) + d0;
                __m512 vv[NS];
                for (int k = 0; k < NS; k++) vv[k] = _mm512_loadu_ps(v + 16 * k);
                for (int q = 0; q < NQ; q++) {
                    const __m512 w = _mm512_set1_ps(e[q][j]);
                    for (int k = 0; k < NS; k++) a[q][k] = _mm512_fmadd_ps(vv[k], w, a[q][k]);
                }
                continue;
            }
            for (int q = 0; q < NQ; q++) {
                const float *v = vals[q] + size_t(j) * size_t(hd) + d0;
                const __m512 w = _mm512_set1_ps(e[q][j]);
                for (int k = 0; k < NS; k++) a[q][k] = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * k), w, a[q][k]);
            }
            continue;
        }
        for (int q = 0; q < NQ; q++) {
            const float *v = vals[q] + size_t(j) * size_t(hd) + d0;
            const __m512 w = _mm512_set1_ps(e[q][j]);
            if (is_max[q][j] != 0.0f) {
                for (int k = 0; k < NS; k++) a[q][k] = _mm512_add_ps(_mm512_loadu_ps(v + 16 * k), _mm512_mul_ps(a[q][k], w));
            } else {
                for (int k = 0; k < NS; k++) a[q][k] = _mm512_fmadd_ps(_mm512_loadu_ps(v + 16 * k), w, a[q][k]);
            }
        }
    }
    for (int q = 0; q < NQ; q++)
        for (int k = 0; k < NS; k++) _mm512_storeu_ps(acc[q] + d0 + 16 * k, a[q][k]);
}

template <int NQ>
void values_multi(float *const *acc, const float *const *vals, int n, int hd, const float *const *e,
                  const float *const *is_max, const uint8_t *any_max) {
    int d = 0;
    for (; d + 64 <= hd; d += 64) values_multi_avx512<NQ, 4>(acc, vals, n, hd, d, e, is_max, any_max);
    for (; d + 16 <= hd; d += 16) values_multi_avx512<NQ, 1>(acc, vals, n, hd, d, e, is_max, any_max);
}
#endif

}  // namespace

void attn_scores(const float *keys, int n, const float *q, int hd, float scale, float *out) {
#if defined(__x86_64__)
    if (hd % 16 == 0 && has_avx512f()) return scores_avx512(keys, n, q, hd, scale, out);
#endif
    for (int j = 0; j < n; j++) out[j] = attn_dot(keys + size_t(j) * hd, q, hd) * scale;
}

void attn_scores_multi(int nq, const float *keys, int n, const float *const *q, int hd, float scale,
                       float *const *out) {
#if defined(__x86_64__)
    if (nq > 1 && nq <= 4 && hd % 16 == 0 && has_avx512f()) {
        // rows past nq repeat the last one (same values written twice)
        const float *qq[4];
        float *oo[4];
        for (int i = 0; i < 4; i++) {
            qq[i] = q[std::min(i, nq - 1)];
            oo[i] = out[std::min(i, nq - 1)];
        }
        const int n4 = n / 4 * 4;
        scores4x4_avx512(keys, n4, qq, hd, scale, oo);
        for (int i = 0; i < nq; i++)
            for (int j = n4; j < n; j++) out[i][j] = dot_avx2(keys + size_t(j) * hd, q[i], hd) * scale;
        return;
    }
#endif
    for (int i = 0; i < nq; i++) attn_scores(keys, n, q[i], hd, scale, out[i]);
}

void attn_chunk_add_multi(int nq, SoftmaxState *st, float *const *acc, const float *const *s, int n,
                          const float *const *vals, int hd, float *scratch) {
#if defined(__x86_64__)
    if (nq >= 1 && nq <= 4 && hd % 16 == 0 && n > 0 && has_avx512f()) {
        const float *e[4], *is_max[4];
        float *arg = scratch;
        for (int q = 0; q < nq; q++) {
            float *im = scratch + size_t(nq) * n + size_t(q) * n;
            st[q].m = prefix_args(st[q].m, s[q], n, arg + size_t(q) * n, im);
            is_max[q] = im;
            e[q] = scratch + 2 * size_t(nq) * n + size_t(q) * n;
        }
        exp_ggml_n(arg, nq * n, scratch + 2 * size_t(nq) * n);
        // any_max reuses the arguments' space (no longer needed)
        uint8_t *any_max = reinterpret_cast<uint8_t *>(arg);
        for (int j = 0; j < n; j++) {
            uint8_t any = 0;
            for (int q = 0; q < nq; q++) any |= is_max[q][j] != 0.0f;
            any_max[j] = any;
        }
        if (nq == 1) {
            st[0].l = sum_chain_avx2(st[0].l, e[0], is_max[0], n);
        } else {
            float l[4] = {st[0].l, st[nq > 1].l, st[nq > 2 ? 2 : 0].l, st[nq > 3 ? 3 : 0].l};
            sum_chains_avx2(nq, l, e, is_max, n);
            for (int q = 0; q < nq; q++) st[q].l = l[q];
        }
        switch (nq) {
            case 1: values_multi<1>(acc, vals, n, hd, e, is_max, any_max); break;
            case 2: values_multi<2>(acc, vals, n, hd, e, is_max, any_max); break;
            case 3: values_multi<3>(acc, vals, n, hd, e, is_max, any_max); break;
            default: values_multi<4>(acc, vals, n, hd, e, is_max, any_max); break;
        }
        return;
    }
#endif
    for (int q = 0; q < nq; q++) attn_chunk_add(st[q], acc[q], s[q], n, vals[q], hd, scratch);
}

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
