// NEON kernels for 64-bit Arm (Jetson, Apple silicon, Graviton); compiles to
// an empty stub elsewhere. Uses the int8 dot-product instructions when the
// compiler targets them (-march=armv8.2-a+dotprod or later), widening
// multiplies otherwise. Integer block sums are exact, so results differ from
// the scalar reference only in float summation order: 4 float lanes per
// output instead of 8; the k-quants sum each super-block's scaled sub-block
// sums as integers, then take one FMA per super-block on 4 lanes and one
// chained FMA for the minimums. Activations quantize to the scalar bytes.
#include "backend/cpu/kernels_impl.h"

#if defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

namespace kvfit {
namespace cpu {
namespace {

inline float h2f(uint16_t h) {
    __fp16 f;
    std::memcpy(&f, &h, 2);
    return float(f);
}
inline uint16_t f2h(float x) {
    const __fp16 f = __fp16(x);  // round to nearest even
    uint16_t h;
    std::memcpy(&h, &f, 2);
    return h;
}
inline uint16_t ld16(const uint8_t *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// acc + per 32-bit lane the sum of 4 products of signed bytes.
inline int32x4_t dot4(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

// ---------------------------------------------------------------------------
// Activation quantization: the scalar reference's arithmetic (d = amax/127 as
// fp16, multiplier 127/amax, round half to even).

struct QBlock {
    int8x16_t lo, hi;  // the 32 quants in natural order
    float d_raw;
    uint16_t dh;
    int sum;
};

inline QBlock quantize_block(const float *x) {
    float32x4_t v[8];
    float32x4_t m = vdupq_n_f32(0.0f);
    for (int k = 0; k < 8; k++) {
        v[k] = vld1q_f32(x + 4 * k);
        m = vmaxq_f32(m, vabsq_f32(v[k]));
    }
    const float amax = vmaxvq_f32(m);
    QBlock b;
    b.d_raw = amax / 127.0f;
    b.dh = f2h(b.d_raw);
    const float id = q8_inv_scale(amax);
    int32x4_t q[8];
    int32x4_t s = vdupq_n_s32(0);
    for (int k = 0; k < 8; k++) {
        q[k] = vcvtnq_s32_f32(vmulq_n_f32(v[k], id));
        s = vaddq_s32(s, q[k]);
    }
    b.sum = vaddvq_s32(s);
    int16x8_t h[4];
    for (int k = 0; k < 4; k++) h[k] = vcombine_s16(vqmovn_s32(q[2 * k]), vqmovn_s32(q[2 * k + 1]));
    b.lo = vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1]));
    b.hi = vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3]));
    return b;
}

inline uint16x4_t f32_to_bf16_4(float32x4_t v) {
    const uint32x4_t x = vreinterpretq_u32_f32(v);
    const uint32x4_t lsb = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(1));
    uint32x4_t r = vshrq_n_u32(vaddq_u32(x, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
    const uint32x4_t nan = vorrq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(64));
    const uint32x4_t is_num = vceqq_f32(v, v);
    r = vbslq_u32(is_num, r, nan);
    return vmovn_u32(r);
}

void quantize_row_neon(uint32_t type, const float *x, void *vy, int64_t n) {
    switch (type) {
        case TYPE_Q8_0:
        case TYPE_Q8_1: {
            uint8_t *y = static_cast<uint8_t *>(vy);
            const size_t bs = type == TYPE_Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ8_1);
            const size_t qoff = type == TYPE_Q8_0 ? 2 : 4;
            for (int64_t b = 0; b < n / QK; b++) {
                const QBlock q = quantize_block(x + b * QK);
                uint8_t *dst = y + size_t(b) * bs;
                std::memcpy(dst, &q.dh, 2);
                if (type == TYPE_Q8_1) {
                    const uint16_t s = f2h(q.d_raw * float(q.sum));
                    std::memcpy(dst + 2, &s, 2);
                }
                vst1q_s8(reinterpret_cast<int8_t *>(dst + qoff), q.lo);
                vst1q_s8(reinterpret_cast<int8_t *>(dst + qoff + 16), q.hi);
            }
            return;
        }
        case TYPE_Q8_K: {
            BlockQ8_K *y = static_cast<BlockQ8_K *>(vy);
            for (int64_t b = 0; b < n / QK_K; b++) quantize_block_q8_K(x + b * QK_K, y + b);
            return;
        }
        case TYPE_F16: {
            uint16_t *y = static_cast<uint16_t *>(vy);
            int64_t i = 0;
            for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
            for (; i < n; i++) y[i] = f2h(x[i]);
            return;
        }
        case TYPE_BF16: {
            uint16_t *y = static_cast<uint16_t *>(vy);
            int64_t i = 0;
            for (; i + 4 <= n; i += 4) vst1_u16(y + i, f32_to_bf16_4(vld1q_f32(x + i)));
            for (; i < n; i++) y[i] = fp32_to_bf16(x[i]);
            return;
        }
        default:
            std::memcpy(vy, x, size_t(n) * sizeof(float));
            return;
    }
}

// ---------------------------------------------------------------------------
// Weight blocks as two registers of signed values (low and high halves).

// 16 bits -> 16 bytes, 0x10 where the bit is set (five-bit types' fifth bits).
inline uint8x16_t fifth_bits(uint16_t bits) {
    const uint8x16_t spread = vcombine_u8(vdup_n_u8(uint8_t(bits)), vdup_n_u8(uint8_t(bits >> 8)));
    const uint8x16_t bit = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    return vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(0x10));
}

template <uint32_t WT>
struct WBlock {
    static constexpr size_t BS = WT == TYPE_Q4_0   ? sizeof(BlockQ4_0)
                                 : WT == TYPE_Q4_1 ? sizeof(BlockQ4_1)
                                 : WT == TYPE_Q5_0 ? sizeof(BlockQ5_0)
                                 : WT == TYPE_Q5_1 ? sizeof(BlockQ5_1)
                                                   : sizeof(BlockQ8_0);
    // offsets of the codes and (five-bit types) of the fifth bits
    static constexpr size_t QOFF = WT == TYPE_Q4_1 ? 4 : WT == TYPE_Q5_0 ? 6 : WT == TYPE_Q5_1 ? 8 : 2;
    static constexpr size_t HOFF = WT == TYPE_Q5_0 ? 2 : 4;
    int8x16_t lo, hi;
    float d, m;
    inline void load(const uint8_t *blk) {
        d = h2f(ld16(blk));
        if (WT == TYPE_Q8_0) {
            lo = vld1q_s8(reinterpret_cast<const int8_t *>(blk + QOFF));
            hi = vld1q_s8(reinterpret_cast<const int8_t *>(blk + QOFF + 16));
        } else {
            const uint8x16_t q = vld1q_u8(blk + QOFF);
            uint8x16_t l = vandq_u8(q, vdupq_n_u8(0x0f)), h = vshrq_n_u8(q, 4);
            if (WT == TYPE_Q5_0 || WT == TYPE_Q5_1) {
                const uint16_t b0 = ld16(blk + HOFF), b1 = ld16(blk + HOFF + 2);
                l = vorrq_u8(l, fifth_bits(b0));
                h = vorrq_u8(h, fifth_bits(b1));
            }
            lo = vreinterpretq_s8_u8(l);
            hi = vreinterpretq_s8_u8(h);
            const int off = WT == TYPE_Q4_0 ? 8 : WT == TYPE_Q5_0 ? 16 : 0;
            if (off) {
                lo = vsubq_s8(lo, vdupq_n_s8(int8_t(off)));
                hi = vsubq_s8(hi, vdupq_n_s8(int8_t(off)));
            }
        }
        m = has_min_term(WT) ? h2f(ld16(blk + 2)) : 0.0f;
    }
};

// ---------------------------------------------------------------------------
// Public single-row dot products on the standard block layouts

template <int KIND>  // 0: F32, 1: F16, 2: BF16
inline float32x4_t load_f4(const void *p, int64_t i) {
    if (KIND == 0) return vld1q_f32(static_cast<const float *>(p) + i);
    const uint16x4_t u = vld1_u16(static_cast<const uint16_t *>(p) + i);
    if (KIND == 1) return vcvt_f32_f16(vreinterpret_f16_u16(u));
    return vreinterpretq_f32_u32(vshll_n_u16(u, 16));
}
template <int KIND>
inline float load_f1(const void *p, int64_t i) {
    if (KIND == 0) return static_cast<const float *>(p)[i];
    if (KIND == 1) return h2f(static_cast<const uint16_t *>(p)[i]);
    return bf16_to_fp32(static_cast<const uint16_t *>(p)[i]);
}

template <int KIND>
float dot_float(int64_t n, const void *w, const void *x) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, load_f4<KIND>(w, i), load_f4<KIND>(x, i));
        a1 = vfmaq_f32(a1, load_f4<KIND>(w, i + 4), load_f4<KIND>(x, i + 4));
        a2 = vfmaq_f32(a2, load_f4<KIND>(w, i + 8), load_f4<KIND>(x, i + 8));
        a3 = vfmaq_f32(a3, load_f4<KIND>(w, i + 12), load_f4<KIND>(x, i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, load_f4<KIND>(w, i), load_f4<KIND>(x, i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) s += load_f1<KIND>(w, i) * load_f1<KIND>(x, i);
    return s;
}

template <uint32_t WT>
float dot_q(int64_t n, const void *vw, const void *vx) {
    const uint8_t *w = static_cast<const uint8_t *>(vw);
    const uint8_t *x = static_cast<const uint8_t *>(vx);
    const size_t xbs = has_min_term(WT) ? sizeof(BlockQ8_1) : sizeof(BlockQ8_0);
    const size_t xoff = has_min_term(WT) ? 4 : 2;
    float32x4_t acc = vdupq_n_f32(0.0f);
    float ms = 0.0f;
    for (int64_t b = 0; b < n / QK; b++) {
        WBlock<WT> wb;
        wb.load(w + size_t(b) * WBlock<WT>::BS);
        const uint8_t *xb = x + size_t(b) * xbs;
        const int8x16_t xl = vld1q_s8(reinterpret_cast<const int8_t *>(xb + xoff));
        const int8x16_t xh = vld1q_s8(reinterpret_cast<const int8_t *>(xb + xoff + 16));
        const int32x4_t s = dot4(dot4(vdupq_n_s32(0), wb.lo, xl), wb.hi, xh);
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), wb.d * h2f(ld16(xb)));
        if (has_min_term(WT)) ms += wb.m * h2f(ld16(xb + 2));
    }
    return vaddvq_f32(acc) + ms;
}

// ---------------------------------------------------------------------------
// k-quants against Q8_K blocks (see the top of this file for the order).

inline int8x16_t ld_s8(const int8_t *p) { return vld1q_s8(p); }

template <uint32_t WT>
float dot_k(int64_t n, const uint8_t *w, const BlockQ8_K *x) {
    constexpr size_t BS = WT == TYPE_Q4_K ? sizeof(BlockQ4_K) : WT == TYPE_Q5_K ? sizeof(BlockQ5_K) : sizeof(BlockQ6_K);
    float32x4_t acc = vdupq_n_f32(0.0f);
    float mins = 0.0f;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = w + size_t(b) * BS;
        const BlockQ8_K &xb = x[b];
        int32x4_t isum = vdupq_n_s32(0);
        if (WT == TYPE_Q6_K) {
            const BlockQ6_K &k = *reinterpret_cast<const BlockQ6_K *>(blk);
            for (int c = 0; c < 8; c++) {  // chunks of 32: two sub-blocks of 16
                const int h = c / 4, q = c % 4;
                for (int half = 0; half < 2; half++) {
                    const uint8x16_t lb = vld1q_u8(k.ql + 64 * h + 32 * (q & 1) + 16 * half);
                    const uint8x16_t hb = vld1q_u8(k.qh + 32 * h + 16 * half);
                    const uint8x16_t low = q < 2 ? vandq_u8(lb, vdupq_n_u8(0x0f)) : vshrq_n_u8(lb, 4);
                    const uint8x16_t high = vshlq_n_u8(vandq_u8(vshlq_u8(hb, vdupq_n_s8(int8_t(-2 * q))), vdupq_n_u8(3)), 4);
                    const int8x16_t v = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(low, high)), vdupq_n_s8(32));
                    const int32x4_t p = dot4(vdupq_n_s32(0), v, ld_s8(xb.qs + 32 * c + 16 * half));
                    isum = vmlaq_n_s32(isum, p, k.scales[2 * c + half]);
                }
            }
            acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), xb.d * h2f(k.d));
            continue;
        }
        const bool q5 = WT == TYPE_Q5_K;
        const uint8_t *scales = blk + 4;
        const uint8_t *qs = blk + (q5 ? offsetof(BlockQ5_K, qs) : offsetof(BlockQ4_K, qs));
        const uint8_t *qh = blk + offsetof(BlockQ5_K, qh);
        int msum = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            kquant_scale_min(scales, j, &sc, &m);
            msum += m * (xb.bsums[2 * j] + xb.bsums[2 * j + 1]);
            int32x4_t p = vdupq_n_s32(0);
            for (int half = 0; half < 2; half++) {
                const uint8x16_t bytes = vld1q_u8(qs + 32 * (j / 2) + 16 * half);
                uint8x16_t v = j % 2 ? vshrq_n_u8(bytes, 4) : vandq_u8(bytes, vdupq_n_u8(0x0f));
                if (q5) {
                    const uint8x16_t hb = vld1q_u8(qh + 16 * half);
                    v = vorrq_u8(v, vandq_u8(vtstq_u8(hb, vdupq_n_u8(uint8_t(1u << j))), vdupq_n_u8(0x10)));
                }
                p = dot4(p, vreinterpretq_s8_u8(v), ld_s8(xb.qs + 32 * j + 16 * half));
            }
            isum = vmlaq_n_s32(isum, p, sc);
        }
        acc = vfmaq_n_f32(acc, vcvtq_f32_s32(isum), xb.d * h2f(ld16(blk)));
        mins = std::fma(-xb.d * h2f(ld16(blk + 2)), float(msum), mins);
    }
    return vaddvq_f32(acc) + mins;
}

float vec_dot_k(uint32_t wt, int64_t n, const void *w, const void *x) {
    const uint8_t *wb = static_cast<const uint8_t *>(w);
    const BlockQ8_K *xb = static_cast<const BlockQ8_K *>(x);
    switch (wt) {
        case TYPE_Q4_K: return dot_k<TYPE_Q4_K>(n, wb, xb);
        case TYPE_Q5_K: return dot_k<TYPE_Q5_K>(n, wb, xb);
        default: return dot_k<TYPE_Q6_K>(n, wb, xb);
    }
}

float vec_dot_neon(uint32_t wt, int64_t n, const void *w, const void *x) {
    switch (wt) {
        case TYPE_Q4_0: return dot_q<TYPE_Q4_0>(n, w, x);
        case TYPE_Q4_1: return dot_q<TYPE_Q4_1>(n, w, x);
        case TYPE_Q5_0: return dot_q<TYPE_Q5_0>(n, w, x);
        case TYPE_Q5_1: return dot_q<TYPE_Q5_1>(n, w, x);
        case TYPE_Q8_0: return dot_q<TYPE_Q8_0>(n, w, x);
        case TYPE_Q4_K:
        case TYPE_Q5_K:
        case TYPE_Q6_K: return vec_dot_k(wt, n, w, x);
        case TYPE_F16: return dot_float<1>(n, w, x);
        case TYPE_BF16: return dot_float<2>(n, w, x);
        default: return dot_float<0>(n, w, x);
    }
}

// ---------------------------------------------------------------------------
// Packed activations (kernels_impl.h). NEON needs no offset corrections (its
// dot product is signed x signed) but fills aux like the others.

void pack_row_neon(uint32_t wt, const float *x, uint8_t *xp, int64_t n) {
    if (!is_q_type(wt)) {  // k-quants: the Q8_K row itself
        quantize_row_neon(vec_dot_type(wt), x, xp, n);
        return;
    }
    const PackedLayout L = packed_layout(wt, n);
    const int corr_mul = wt == TYPE_Q4_0 ? -8 : wt == TYPE_Q5_0 ? -16 : -128;
    std::memset(xp + L.aux_off, 0, size_t(L.npairs) * 32);
    for (int64_t b = 0; b < L.nb; b++) {
        const int64_t p = b / 2;
        const int h = int(b % 2);
        const bool lone = (b == L.nb - 1) && (L.nb % 2 == 1);
        const QBlock q = quantize_block(x + b * QK);
        int8_t *lo = reinterpret_cast<int8_t *>(xp + p * 64 + (lone ? 0 : h * 16));
        int8_t *hi = lone ? lo + 16 : lo + 32;
        vst1q_s8(lo, q.lo);
        vst1q_s8(hi, q.hi);
        float *sc = reinterpret_cast<float *>(xp + L.sc_off) + p * 8;
        const float d = h2f(q.dh);
        vst1q_f32(sc + h * 4, vdupq_n_f32(d));
        if (lone) vst1q_f32(sc + 4, vdupq_n_f32(d));
        if (has_min_term(wt)) {
            reinterpret_cast<float *>(xp + L.aux_off)[p * 8 + 1 + 2 * h] = h2f(f2h(q.d_raw * float(q.sum)));
        } else {
            int32_t *aux = reinterpret_cast<int32_t *>(xp + L.aux_off) + p * 8 + h * 4;
            // lane k: bytes 4k..4k+3 of both halves (pairs) or of the block (lone)
            int8_t all[32];
            vst1q_s8(all, q.lo);
            vst1q_s8(all + 16, q.hi);
            for (int k = 0; k < (lone ? 8 : 4); k++) {
                int s = all[4 * k] + all[4 * k + 1] + all[4 * k + 2] + all[4 * k + 3];
                if (!lone) s += all[16 + 4 * k] + all[17 + 4 * k] + all[18 + 4 * k] + all[19 + 4 * k];
                aux[k] = corr_mul * s;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// matmul tiles: R rows x T tokens over the whole row.

constexpr int kPrefetchTiles = 2;

template <uint32_t WT, int R, int T>
void q_tile(const GemmArgs &a, int64_t r, int64_t t) {
    constexpr size_t BS = WBlock<WT>::BS;
    const PackedLayout L = packed_layout(WT, a.n);
    const uint8_t *w[R];
    const uint8_t *x[T];
    for (int i = 0; i < R; i++) w[i] = a.W + size_t(r + i) * a.w_stride;
    for (int j = 0; j < T; j++) x[j] = a.X + size_t(t + j) * a.x_stride;
    float32x4_t acc[R][T];
    float ms[R][T];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) {
            acc[i][j] = vdupq_n_f32(0.0f);
            ms[i][j] = 0.0f;
        }
    // Interleaved short row streams defeat hardware prefetchers (see the x86 tiles).
    const uint8_t *pf = w[0] + size_t(R) * kPrefetchTiles * a.w_stride;
    for (int64_t b = 0; b < L.nb; b++) {
        const int64_t p = b / 2;
        const int h = int(b % 2);
        const bool lone = (b == L.nb - 1) && (L.nb % 2 == 1);
        const size_t lo_off = size_t(p) * 64 + (lone ? 0 : size_t(h) * 16);
        const size_t hi_off = lone ? lo_off + 16 : lo_off + 32;
        for (size_t k = 0; k < R * BS; k += 64) __builtin_prefetch(pf + size_t(b) * R * BS + k);
        WBlock<WT> wb[R];
        for (int i = 0; i < R; i++) wb[i].load(w[i] + size_t(b) * BS);
        for (int j = 0; j < T; j++) {
            const int8x16_t xl = vld1q_s8(reinterpret_cast<const int8_t *>(x[j] + lo_off));
            const int8x16_t xh = vld1q_s8(reinterpret_cast<const int8_t *>(x[j] + hi_off));
            const float dx = reinterpret_cast<const float *>(x[j] + L.sc_off)[p * 8 + h * 4];
            const float sx =
                has_min_term(WT) ? reinterpret_cast<const float *>(x[j] + L.aux_off)[p * 8 + 1 + 2 * h] : 0.0f;
            for (int i = 0; i < R; i++) {
                const int32x4_t s = dot4(dot4(vdupq_n_s32(0), wb[i].lo, xl), wb[i].hi, xh);
                acc[i][j] = vfmaq_n_f32(acc[i][j], vcvtq_f32_s32(s), wb[i].d * dx);
                if (has_min_term(WT)) ms[i][j] += wb[i].m * sx;
            }
        }
    }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) a.Y[(t + j) * a.ldy + r + i] = vaddvq_f32(acc[i][j]) + ms[i][j];
}

template <int KIND, int R, int T>
void f_tile(const GemmArgs &a, int64_t r, int64_t t) {
    const uint8_t *w[R];
    const uint8_t *x[T];
    for (int i = 0; i < R; i++) w[i] = a.W + size_t(r + i) * a.w_stride;
    for (int j = 0; j < T; j++) x[j] = a.X + size_t(t + j) * a.x_stride;
    float32x4_t acc[R][T];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) acc[i][j] = vdupq_n_f32(0.0f);
    constexpr size_t kStep = size_t(R) * 4 * (KIND == 0 ? 4 : 2);
    const uint8_t *pf = w[0] + size_t(R) * kPrefetchTiles * a.w_stride;
    int64_t k = 0;
    for (; k + 4 <= a.n; k += 4) {
        const size_t done = size_t(k / 4) * kStep;
        if (kStep >= 64 || done % 64 == 0)
            for (size_t o = 0; o < kStep; o += 64) __builtin_prefetch(pf + done + o);
        float32x4_t wv[R];
        for (int i = 0; i < R; i++) wv[i] = load_f4<KIND>(w[i], k);
        for (int j = 0; j < T; j++) {
            const float32x4_t xv = load_f4<KIND>(x[j], k);
            for (int i = 0; i < R; i++) acc[i][j] = vfmaq_f32(acc[i][j], wv[i], xv);
        }
    }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) {
            float s = vaddvq_f32(acc[i][j]);
            for (int64_t kk = k; kk < a.n; kk++) s += load_f1<KIND>(w[i], kk) * load_f1<KIND>(x[j], kk);
            a.Y[(t + j) * a.ldy + r + i] = s;
        }
}

constexpr int kR = 4, kT = 4;
using TileFn = void (*)(const GemmArgs &, int64_t, int64_t);

template <uint32_t WT, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> q_tiles(std::index_sequence<I...>) {
    return {{q_tile<WT, int(I) / kT + 1, int(I) % kT + 1>...}};
}
template <int KIND, size_t... I>
constexpr std::array<TileFn, sizeof...(I)> f_tiles(std::index_sequence<I...>) {
    return {{f_tile<KIND, int(I) / kT + 1, int(I) % kT + 1>...}};
}

template <size_t N>
inline void run_tiles(const std::array<TileFn, N> &tab, const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0,
                      int64_t t1) {
    for (int64_t t = t0; t < t1; t += kT) {
        const int nt = int(std::min<int64_t>(kT, t1 - t));
        for (int64_t r = r0; r < r1; r += kR) {
            const int nr = int(std::min<int64_t>(kR, r1 - r));
            tab[size_t((nr - 1) * kT + nt - 1)](a, r, t);
        }
    }
}

// k-quants: one output at a time on the packed Q8_K rows.
void gemm_k(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++)
        for (int64_t r = r0; r < r1; r++)
            a.Y[t * a.ldy + r] = vec_dot_k(a.w_type, a.n, a.W + size_t(r) * a.w_stride, a.X + size_t(t) * a.x_stride);
}

void gemm_neon(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    static constexpr auto q40 = q_tiles<TYPE_Q4_0>(std::make_index_sequence<kR * kT>());
    static constexpr auto q41 = q_tiles<TYPE_Q4_1>(std::make_index_sequence<kR * kT>());
    static constexpr auto q50 = q_tiles<TYPE_Q5_0>(std::make_index_sequence<kR * kT>());
    static constexpr auto q51 = q_tiles<TYPE_Q5_1>(std::make_index_sequence<kR * kT>());
    static constexpr auto q80 = q_tiles<TYPE_Q8_0>(std::make_index_sequence<kR * kT>());
    static constexpr auto f16 = f_tiles<1>(std::make_index_sequence<kR * kT>());
    static constexpr auto bf16 = f_tiles<2>(std::make_index_sequence<kR * kT>());
    static constexpr auto f32 = f_tiles<0>(std::make_index_sequence<kR * kT>());
    switch (a.w_type) {
        case TYPE_Q4_0: run_tiles(q40, a, r0, r1, t0, t1); return;
        case TYPE_Q4_1: run_tiles(q41, a, r0, r1, t0, t1); return;
        case TYPE_Q5_0: run_tiles(q50, a, r0, r1, t0, t1); return;
        case TYPE_Q5_1: run_tiles(q51, a, r0, r1, t0, t1); return;
        case TYPE_Q8_0: run_tiles(q80, a, r0, r1, t0, t1); return;
        case TYPE_Q4_K:
        case TYPE_Q5_K:
        case TYPE_Q6_K: gemm_k(a, r0, r1, t0, t1); return;
        case TYPE_F16: run_tiles(f16, a, r0, r1, t0, t1); return;
        case TYPE_BF16: run_tiles(bf16, a, r0, r1, t0, t1); return;
        default: run_tiles(f32, a, r0, r1, t0, t1); return;
    }
}

const KernelImpl kImpl = {{"neon", quantize_row_neon, vec_dot_neon}, pack_row_neon, gemm_neon};

}  // namespace

// NEON is part of the AArch64 base architecture: always available.
const KernelImpl *impl_neon() { return &kImpl; }

}  // namespace cpu
}  // namespace kvfit

#else

namespace kvfit {
namespace cpu {
const KernelImpl *impl_neon() { return nullptr; }
}  // namespace cpu
}  // namespace kvfit

#endif
