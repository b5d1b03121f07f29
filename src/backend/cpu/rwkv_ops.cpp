// RWKV-7 CPU kernels (see rwkv_ops.h). The recurrence's sums over a head run
// in 8 lanes (element j in lane j mod 8) reduced in a fixed tree, in the
// scalar version too, so that the AVX2 version gives the same bits.
#include "backend/cpu/rwkv_ops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_features.h"
#include "backend/cpu/recurrent_ops.h"

namespace kvfit::cpu {

namespace {

inline float sigmoidf(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// The fixed reduction of 8 lane sums.
inline float reduce8(const float *l) { return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])); }

}  // namespace

void norm_affine_row(const float *x, const float *w, const float *b, float eps, int d, int groups, float *y) {
    const int gs = d / groups;
    for (int g = 0; g < groups; g++) {
        const float *xg = x + size_t(g) * size_t(gs);
        float *yg = y + size_t(g) * size_t(gs);
        double sum = 0;
        for (int i = 0; i < gs; i++) sum += double(xg[i]);
        const float mean = float(sum / double(gs));
        double var = 0;
        for (int i = 0; i < gs; i++) {
            const float c = xg[i] - mean;
            var += double(c * c);
        }
        const float scale = 1.0f / std::sqrt(float(var / double(gs)) + eps);
        for (int i = 0; i < gs; i++) {
            const int c = g * gs + i;
            yg[i] = (xg[i] - mean) * scale * w[c] + b[c];
        }
    }
}

void token_shift_mix_rows(const float *x, const float *state, const float *mix, int n_mix, int n, int d, int t0,
                          int t1, float *out) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + size_t(t) * size_t(d);
        const float *prev = t ? xt - d : state;
        for (int j = 0; j < n_mix; j++) {
            const float *m = mix + size_t(j) * size_t(d);
            float *o = out + (size_t(j) * size_t(n) + size_t(t)) * size_t(d);
            for (int i = 0; i < d; i++) {
                const float sx = prev[i] - xt[i];
                const float ms = sx * m[i];
                o[i] = ms + xt[i];
            }
        }
    }
}

void rwkv7_prepare_rows(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                        const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a, int n_head,
                        int head_size, int t0, int t1, float *a_out, float *b_out) {
    const int d = n_head * head_size;
    const float decay_scale = -std::exp(-0.5f);  // -0.606531
    for (int t = t0; t < t1; t++) {
        const size_t o = size_t(t) * size_t(d);
        float *wt = w + o, *at = a + o, *vt = v + o, *kt = k + o, *ao = a_out + o, *bo = b_out + o;
        for (int i = 0; i < d; i++) {
            wt[i] = std::exp(decay_scale * sigmoidf(wt[i] + w0[i]));
            at[i] = sigmoidf(at[i] + a0[i]);
        }
        if (vmix) {
            const float *vf = v_first + o, *vm = vmix + o;
            for (int i = 0; i < d; i++) {
                const float gate = sigmoidf(vm[i] + v0[i]);
                vt[i] = vt[i] + (vf[i] - vt[i]) * gate;
            }
        }
        for (int h = 0; h < n_head; h++) {
            const int c0 = h * head_size;
            double ss = 0;
            for (int i = 0; i < head_size; i++) {
                const float kk = kt[c0 + i] * k_k[c0 + i];
                ao[c0 + i] = kk;
                ss += double(kk * kk);
            }
            const float scale = 1.0f / std::fmax(std::sqrt(float(ss)), 1e-12f);
            for (int i = 0; i < head_size; i++) {
                const float kk = ao[c0 + i] * scale;
                ao[c0 + i] = -kk;
                bo[c0 + i] = kk * at[c0 + i];
            }
        }
        for (int i = 0; i < d; i++) {
            const float ka = kt[i] * k_a[i];
            kt[i] = kt[i] + (at[i] * ka - ka);
        }
    }
}

namespace {

// Head h's recurrence on its state S (head_size x head_size floats); with a
// round type other than F32 each row is rounded to it once updated (the
// output row is summed from the unrounded values), which equals rounding the
// whole state after every token: a row's update reads only that row.
void wkv7_scalar_on(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                    int n, int n_head, int head_size, int h, float *S, StateType round, float *out) {
    const int N = head_size, d = n_head * head_size;
    for (int t = 0; t < n; t++) {
        const size_t o = size_t(t) * size_t(d) + size_t(h) * size_t(N);
        const float *rt = r + o, *wt = w + o, *kt = k + o, *vt = v + o, *at = a + o, *bt = b + o;
        for (int i = 0; i < N; i++) {
            float *Si = S + size_t(i) * size_t(N);
            float lanes[8] = {};
            for (int j = 0; j < N; j++) lanes[j % 8] += at[j] * Si[j];
            const float sa = reduce8(lanes);
            float acc[8] = {};
            for (int j = 0; j < N; j++) {
                const float s = (Si[j] * wt[j] + vt[i] * kt[j]) + sa * bt[j];
                Si[j] = s;
                acc[j % 8] += s * rt[j];
            }
            out[o + size_t(i)] = reduce8(acc);
            if (round != StateType::F32) round_state(round, Si, size_t(N));
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void wkv7_avx2_on(const float *r, const float *w, const float *k, const float *v,
                                                  const float *a, const float *b, int n, int n_head, int head_size,
                                                  int h, float *S, StateType round, float *out) {
    const int N = head_size, d = n_head * head_size;
    alignas(32) float lanes[8];
    for (int t = 0; t < n; t++) {
        const size_t o = size_t(t) * size_t(d) + size_t(h) * size_t(N);
        const float *rt = r + o, *wt = w + o, *kt = k + o, *vt = v + o, *at = a + o, *bt = b + o;
        for (int i = 0; i < N; i++) {
            float *Si = S + size_t(i) * size_t(N);
            __m256 sum = _mm256_setzero_ps();
            for (int j = 0; j < N; j += 8)
                sum = _mm256_add_ps(sum, _mm256_mul_ps(_mm256_loadu_ps(at + j), _mm256_loadu_ps(Si + j)));
            _mm256_store_ps(lanes, sum);
            const __m256 sa = _mm256_set1_ps(reduce8(lanes));
            const __m256 vi = _mm256_set1_ps(vt[i]);
            __m256 acc = _mm256_setzero_ps();
            for (int j = 0; j < N; j += 8) {
                const __m256 sw = _mm256_mul_ps(_mm256_loadu_ps(Si + j), _mm256_loadu_ps(wt + j));
                const __m256 vk = _mm256_mul_ps(vi, _mm256_loadu_ps(kt + j));
                const __m256 s = _mm256_add_ps(_mm256_add_ps(sw, vk), _mm256_mul_ps(sa, _mm256_loadu_ps(bt + j)));
                _mm256_storeu_ps(Si + j, s);
                acc = _mm256_add_ps(acc, _mm256_mul_ps(s, _mm256_loadu_ps(rt + j)));
            }
            _mm256_store_ps(lanes, acc);
            out[o + size_t(i)] = reduce8(lanes);
            if (round != StateType::F32) round_state(round, Si, size_t(N));
        }
    }
}
#endif

void wkv7_best_on(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                  int n, int n_head, int head_size, int h, float *S, StateType round, float *out) {
#if defined(__x86_64__)
    if (head_size % 8 == 0 && has_avx2_fma())
        return wkv7_avx2_on(r, w, k, v, a, b, n, n_head, head_size, h, S, round, out);
#endif
    wkv7_scalar_on(r, w, k, v, a, b, n, n_head, head_size, h, S, round, out);
}

}  // namespace

void wkv7_head_scalar(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                      int n, int n_head, int head_size, int h, float *state, float *out) {
    wkv7_scalar_on(r, w, k, v, a, b, n, n_head, head_size, h,
                   state + size_t(h) * size_t(head_size) * size_t(head_size), StateType::F32, out);
}

void wkv7_head_best(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                    int n, int n_head, int head_size, int h, float *state, float *out) {
    wkv7_best_on(r, w, k, v, a, b, n, n_head, head_size, h, state + size_t(h) * size_t(head_size) * size_t(head_size),
                 StateType::F32, out);
}

void wkv7_head_typed(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                     int n, int n_head, int head_size, int h, StateType type, void *state, float *out) {
    if (type == StateType::F32)
        return wkv7_head_best(r, w, k, v, a, b, n, n_head, head_size, h, static_cast<float *>(state), out);
    const size_t NN = size_t(head_size) * size_t(head_size);
    uint16_t *stored = static_cast<uint16_t *>(state) + size_t(h) * NN;
    std::vector<float> S(NN);
    widen_state(type, stored, S.data(), NN);
    wkv7_best_on(r, w, k, v, a, b, n, n_head, head_size, h, S.data(), type, out);
    narrow_state(type, S.data(), stored, NN);
}

void rwkv7_bonus_gate_row(float *y, const float *r, const float *k, const float *v, const float *r_k, const float *g,
                          int n_head, int head_size) {
    for (int h = 0; h < n_head; h++) {
        const int c0 = h * head_size;
        float s = 0;
        for (int i = 0; i < head_size; i++) s += (r[c0 + i] * k[c0 + i]) * r_k[c0 + i];
        for (int i = 0; i < head_size; i++) y[c0 + i] = (y[c0 + i] + v[c0 + i] * s) * g[c0 + i];
    }
}

}  // namespace kvfit::cpu
