#include "backend/cpu/recurrent_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ggml_order.h"
#include "gguf/ggml_types.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvfit {
namespace cpu {

namespace {

// The scalar form of dot_f32_ggml: lane l of accumulator j sums x[i] * y[i]
// for i = 64 b + 16 j + l, then the same reduction tree.
float dot_f32_scalar(const float *x, const float *y, int n) {
    const int np = n & ~63;
    float acc[4][16] = {};
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) acc[j][l] = std::fma(x[i + 16 * j + l], y[i + 16 * j + l], acc[j][l]);
    float sumf = 0.0f;
    if (np) {
        float t[16];
        for (int l = 0; l < 16; l++) t[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
        // _mm512_reduce_add_ps: halves 256, 128, then pairs as the AVX2 code below
        float h8[8], h4[4];
        for (int l = 0; l < 8; l++) h8[l] = t[l + 8] + t[l];
        for (int l = 0; l < 4; l++) h4[l] = h8[l + 4] + h8[l];
        const float p0 = h4[0] + h4[2], p1 = h4[1] + h4[3];
        sumf = p0 + p1;
    }
    for (int i = np; i < n; i++) sumf = std::fma(x[i], y[i], sumf);
    return sumf;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float dot_f32_avx2(const float *x, const float *y, int n) {
    const int np = n & ~63;
    float sumf = 0.0f;
    if (np) {
        __m256 lo[4], hi[4];
        for (int j = 0; j < 4; j++) lo[j] = hi[j] = _mm256_setzero_ps();
        for (int i = 0; i < np; i += 64)
            for (int j = 0; j < 4; j++) {
                lo[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16 * j), _mm256_loadu_ps(y + i + 16 * j), lo[j]);
                hi[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16 * j + 8), _mm256_loadu_ps(y + i + 16 * j + 8), hi[j]);
            }
        const __m256 l = _mm256_add_ps(_mm256_add_ps(lo[0], lo[2]), _mm256_add_ps(lo[1], lo[3]));
        const __m256 h = _mm256_add_ps(_mm256_add_ps(hi[0], hi[2]), _mm256_add_ps(hi[1], hi[3]));
        const __m256 t3 = _mm256_add_ps(h, l);
        const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
        const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
        sumf = _mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8)));
    }
    for (int i = np; i < n; i++) sumf = std::fma(x[i], y[i], sumf);
    return sumf;
}

__attribute__((target("avx2,fma"))) void mad_f32_avx2(float *y, const float *x, float v, int n) {
    const __m256 vv = _mm256_set1_ps(v);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vv, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] = std::fma(x[i], v, y[i]);
}

__attribute__((target("avx2"))) void scale_avx2(float *y, int n, float v) {
    const __m256 vv = _mm256_set1_ps(v);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vv));
    for (; i < n; i++) y[i] *= v;
}
#endif

bool use_avx2() {
#if defined(__x86_64__)
    static const bool yes = has_avx2_fma();
    return yes;
#else
    return false;
#endif
}

void scale_f32(float *y, int n, float v) {
#if defined(__x86_64__)
    if (use_avx2()) return scale_avx2(y, n, v);
#endif
    for (int i = 0; i < n; i++) y[i] *= v;
}

}  // namespace

float dot_f32_ggml(const float *x, const float *y, int n) {
#if defined(__x86_64__)
    if (use_avx2()) return dot_f32_avx2(x, y, n);
#endif
    return dot_f32_scalar(x, y, n);
}

void mad_f32(float *y, const float *x, float v, int n) {
#if defined(__x86_64__)
    if (use_avx2()) return mad_f32_avx2(y, x, v, n);
#endif
    for (int i = 0; i < n; i++) y[i] = std::fma(x[i], v, y[i]);
}

void silu_ggml(const float *x, size_t n, float *y) {
    const size_t nv = n & ~size_t(15);
    constexpr size_t kPiece = 256;
    float e[kPiece];
    for (size_t i0 = 0; i0 < nv; i0 += kPiece) {
        const size_t k = std::min(kPiece, nv - i0);
        for (size_t i = 0; i < k; i++) e[i] = 0.0f - x[i0 + i];
        exp_ggml_n(e, int(k), e);
        for (size_t i = 0; i < k; i++) y[i0 + i] = x[i0 + i] / (1.0f + e[i]);
    }
    for (size_t i = nv; i < n; i++) y[i] = x[i] / (1.0f + std::exp(-x[i]));
}

void widen_state(StateType t, const void *src, float *dst, size_t n) {
    const uint16_t *s = static_cast<const uint16_t *>(src);
    switch (t) {
        case StateType::F16:
            for (size_t i = 0; i < n; i++) dst[i] = fp16_to_fp32(s[i]);
            break;
        case StateType::BF16:
            for (size_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(s[i]);
            break;
        default: std::memcpy(dst, src, n * 4);
    }
}

void narrow_state(StateType t, const float *src, void *dst, size_t n) {
    uint16_t *d = static_cast<uint16_t *>(dst);
    switch (t) {
        case StateType::F16:
            for (size_t i = 0; i < n; i++) d[i] = fp32_to_fp16(src[i]);
            break;
        case StateType::BF16:
            for (size_t i = 0; i < n; i++) d[i] = fp32_to_bf16(src[i]);
            break;
        default: std::memcpy(dst, src, n * 4);
    }
}

void round_state(StateType t, float *x, size_t n) {
    switch (t) {
        case StateType::F16:
            for (size_t i = 0; i < n; i++) x[i] = fp16_to_fp32(fp32_to_fp16(x[i]));
            break;
        case StateType::BF16:
            for (size_t i = 0; i < n; i++) x[i] = bf16_to_fp32(fp32_to_bf16(x[i]));
            break;
        default: break;
    }
}

void delta_net_head(const DeltaNetArgs &a, int h) {
    const int D = a.head_dim, hk = h % a.n_k_heads;
    const size_t DD = size_t(D) * size_t(D);
    const StateType st = a.state_type;
    // F32: in place; otherwise a float copy of the head's state, rounded to
    // the state's type after every token and stored at the end.
    std::vector<float> wide;
    void *stored = nullptr;
    float *S;
    if (st == StateType::F32) {
        S = a.state + size_t(h) * DD;
    } else {
        stored = reinterpret_cast<uint16_t *>(a.state) + size_t(h) * DD;
        wide.resize(DD);
        S = wide.data();
        widen_state(st, stored, S, DD);
    }
    std::vector<float> delta(size_t(D), 0.0f);
    for (int t = 0; t < a.n; t++) {
        const float *q = a.q + size_t(t) * a.qk_stride + size_t(hk) * size_t(D);
        const float *k = a.k + size_t(t) * a.qk_stride + size_t(hk) * size_t(D);
        const float *v = a.v + size_t(t) * a.v_stride + size_t(h) * size_t(D);
        const float g = a.g[size_t(t) * size_t(a.n_v_heads) + size_t(h)];
        const float b = a.beta[size_t(t) * size_t(a.n_v_heads) + size_t(h)];
        scale_f32(S, D * D, std::exp(g));
        for (int j = 0; j < D; j++) delta[size_t(j)] = (v[j] - dot_f32_ggml(S + size_t(j) * size_t(D), k, D)) * b;
        for (int j = 0; j < D; j++) mad_f32(S + size_t(j) * size_t(D), k, delta[size_t(j)], D);
        float *o = a.out + (size_t(t) * size_t(a.n_v_heads) + size_t(h)) * size_t(D);
        for (int j = 0; j < D; j++) o[j] = dot_f32_ggml(S + size_t(j) * size_t(D), q, D) * a.scale;
        if (stored) round_state(st, S, DD);
    }
    if (stored) narrow_state(st, S, stored, DD);
}

size_t delta_net_chunk_scratch(int head_dim, int chunk) {
    const size_t D = size_t(head_dim), C = size_t(chunk);
    return C * D      // U: the chunk's writes u_t (values)
           + C * D    // KS: S0 k_t
           + C * D    // QS: S0 q_t
           + C * C    // KK: k_s . k_t
           + C * C    // QK: k_s . q_t
           + C;       // G: cumulative log decay
}

// Within a chunk with the state S0 at its start and cumulative log decays
// G_t = g_1 + ... + g_t, every step writes u_t = beta_t (v_t - exp(g_t) S_{t-1} k_t);
// unrolled, S_t = exp(G_t) S0 + sum_{s<=t} exp(G_t - G_s) u_s k_s^T, so
//   u_t = beta_t (v_t - exp(G_t) S0 k_t - sum_{s<t} exp(G_t - G_s) (k_s . k_t) u_s)
// (a lower-triangular system, solved forward), and
//   o_t = scale (exp(G_t) S0 q_t + sum_{s<=t} exp(G_t - G_s) (k_s . q_t) u_s),
//   S_C = exp(G_C) S0 + sum_s exp(G_C - G_s) u_s k_s^T.
void delta_net_head_chunked(const DeltaNetArgs &a, int h, int chunk, float *scratch) {
    const int D = a.head_dim, hk = h % a.n_k_heads, C = chunk;
    float *S = a.state + size_t(h) * size_t(D) * size_t(D);
    float *U = scratch, *KS = U + size_t(C) * D, *QS = KS + size_t(C) * D, *KK = QS + size_t(C) * D,
          *QK = KK + size_t(C) * C, *G = QK + size_t(C) * C;
    auto qrow = [&](int t) { return a.q + size_t(t) * a.qk_stride + size_t(hk) * size_t(D); };
    auto krow = [&](int t) { return a.k + size_t(t) * a.qk_stride + size_t(hk) * size_t(D); };
    for (int t0 = 0; t0 < a.n; t0 += C) {
        const int c = std::min(C, a.n - t0);
        float acc = 0.0f;
        for (int i = 0; i < c; i++) {
            acc += a.g[size_t(t0 + i) * size_t(a.n_v_heads) + size_t(h)];
            G[i] = acc;
        }
        for (int i = 0; i < c; i++) {
            const float *k = krow(t0 + i), *q = qrow(t0 + i);
            for (int j = 0; j < D; j++) {
                KS[size_t(i) * D + j] = dot_f32_ggml(S + size_t(j) * D, k, D);
                QS[size_t(i) * D + j] = dot_f32_ggml(S + size_t(j) * D, q, D);
            }
            for (int s = 0; s <= i; s++) {
                KK[size_t(i) * C + s] = dot_f32_ggml(krow(t0 + s), k, D);
                QK[size_t(i) * C + s] = dot_f32_ggml(krow(t0 + s), q, D);
            }
        }
        // forward substitution for the writes
        for (int i = 0; i < c; i++) {
            const float *v = a.v + size_t(t0 + i) * a.v_stride + size_t(h) * size_t(D);
            const float b = a.beta[size_t(t0 + i) * size_t(a.n_v_heads) + size_t(h)];
            const float eg = std::exp(G[i]);
            float *u = U + size_t(i) * D;
            for (int j = 0; j < D; j++) u[j] = v[j] - eg * KS[size_t(i) * D + j];
            for (int s = 0; s < i; s++) mad_f32(u, U + size_t(s) * D, -std::exp(G[i] - G[s]) * KK[size_t(i) * C + s], D);
            for (int j = 0; j < D; j++) u[j] *= b;
        }
        // outputs
        for (int i = 0; i < c; i++) {
            float *o = a.out + (size_t(t0 + i) * size_t(a.n_v_heads) + size_t(h)) * size_t(D);
            const float eg = std::exp(G[i]);
            for (int j = 0; j < D; j++) o[j] = eg * QS[size_t(i) * D + j];
            for (int s = 0; s <= i; s++) mad_f32(o, U + size_t(s) * D, std::exp(G[i] - G[s]) * QK[size_t(i) * C + s], D);
            for (int j = 0; j < D; j++) o[j] *= a.scale;
        }
        // the state at the chunk's end
        scale_f32(S, D * D, std::exp(G[c - 1]));
        for (int s = 0; s < c; s++) {
            const float w = std::exp(G[c - 1] - G[s]);
            const float *k = krow(t0 + s);
            for (int j = 0; j < D; j++) mad_f32(S + size_t(j) * D, k, w * U[size_t(s) * D + j], D);
        }
    }
}

void ssm_conv_channels(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y, int c0,
                       int c1) {
    const int K1 = kernel - 1;
    const size_t C = size_t(channels);
    for (int t = 0; t < n; t++)
        for (int c = c0; c < c1; c++) {
            const float *wc = w + size_t(c) * size_t(kernel);
            float sum = 0.0f;
            for (int i = 0; i < kernel; i++) {
                const int tau = t + i;  // index into [state (K1 rows) ; x]
                const float in = tau < K1 ? state[size_t(tau) * C + c] : x[size_t(tau - K1) * C + c];
                sum = std::fma(in, wc[i], sum);
            }
            y[size_t(t) * C + c] = sum;
        }
    // the last K1 inputs become the state
    for (int c = c0; c < c1; c++) {
        for (int r = 0; r < K1; r++) {
            const int tau = n + r;  // rows n .. n + K1 - 1 of [state ; x]
            state[size_t(r) * C + c] = tau < K1 ? state[size_t(tau) * C + c] : x[size_t(tau - K1) * C + c];
        }
    }
}

}  // namespace cpu
}  // namespace kvfit
