// AVX-512 VNNI kernels over weights repacked in groups of four rows
// (repack.h). CMake compiles *_avx512.cpp with AVX-512 F/BW/VL; VNNI is
// enabled here.
//
// Per block of 32 columns the float steps are those of kernels_x86.inc's
// q_tile (llama.cpp's x86 vec_dot order, kernels_impl.h): for each output 8
// lanes, lane k the exact integer sum of columns 4k .. 4k+3, then
// acc[k] = fma(dw * dx, float(lane k), acc[k]) block after block, the lanes
// reduced as ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), plus Q4_1's m * s
// chain. Only where the lanes of the outputs sit in the registers differs:
//   Q4_1: register A holds lanes 0-3 (low nibbles, columns 0-15) of rows
//         0-3 (row r in lanes 4r .. 4r+3), register B lanes 4-7 (high
//         nibbles, columns 16-31);
//   Q8_0: register A holds rows 0 and 1 (8 lanes each), B rows 2 and 3.
// GCC 12's AVX-512 headers build some intrinsics from _mm512_undefined_*().
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/repack.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

#include <immintrin.h>

#include <algorithm>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni,f16c,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512vnni,f16c,fma")
#endif

namespace kvfit {
namespace cpu {
namespace {

constexpr size_t kPrefetch = 768;  // bytes ahead of the block being read

inline float lanes_sum(const float *a) {
    const float t0 = a[4] + a[0], t1 = a[5] + a[1], t2 = a[6] + a[2], t3 = a[7] + a[3];
    return (t0 + t2) + (t1 + t3);
}

template <int T>
void q41_tile(const GemmArgs &a, int64_t g, int64_t t) {
    constexpr size_t BB = 80;
    const NaturalLayout L = natural_layout(a.n);
    const uint8_t *w = a.W + size_t(g) * a.w_stride;
    const uint8_t *x[T];
    for (int j = 0; j < T; j++) x[j] = a.X + size_t(t + j) * a.x_stride;
    __m512 accA[T], accB[T];
    __m128 ms[T];
    for (int j = 0; j < T; j++) {
        accA[j] = _mm512_setzero_ps();
        accB[j] = _mm512_setzero_ps();
        ms[j] = _mm_setzero_ps();
    }
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t b = 0; b < L.nb; b++) {
        const uint8_t *blk = w + size_t(b) * BB;
        _mm_prefetch(reinterpret_cast<const char *>(blk) + kPrefetch, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(blk) + kPrefetch + 64, _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(blk);
        const __m512i lo = _mm512_and_si512(v, m4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        const __m256 dm = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + 64)));
        const __m512 dw = _mm512_permutexvar_ps(spread, _mm512_zextps256_ps512(dm));
        const __m128 mw = _mm256_extractf128_ps(dm, 1);
        for (int j = 0; j < T; j++) {
            const __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[j] + b * QK)));
            const __m512i xhi =
                _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(x[j] + b * QK + 16)));
            const __m512i pA = _mm512_dpbusd_epi32(zero, lo, xlo);
            const __m512i pB = _mm512_dpbusd_epi32(zero, hi, xhi);
            const __m512 dd = _mm512_mul_ps(dw, _mm512_set1_ps(reinterpret_cast<const float *>(x[j] + L.d_off)[b]));
            accA[j] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(pA), accA[j]);
            accB[j] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(pB), accB[j]);
            ms[j] = _mm_fmadd_ps(mw, _mm_set1_ps(reinterpret_cast<const float *>(x[j] + L.s_off)[b]), ms[j]);
        }
    }
    for (int j = 0; j < T; j++) {
        alignas(64) float fa[16], fb[16], m[4];
        _mm512_store_ps(fa, accA[j]);
        _mm512_store_ps(fb, accB[j]);
        _mm_store_ps(m, ms[j]);
        float *y = a.Y + (t + j) * a.ldy + 4 * g;
        for (int r = 0; r < 4; r++) {
            const float *pa = fa + 4 * r, *pb = fb + 4 * r;
            const float t0 = pb[0] + pa[0], t1 = pb[1] + pa[1], t2 = pb[2] + pa[2], t3 = pb[3] + pa[3];
            y[r] = ((t0 + t2) + (t1 + t3)) + m[r];
        }
    }
}

template <int T>
void q80_tile(const GemmArgs &a, int64_t g, int64_t t) {
    constexpr size_t BB = 136;
    const NaturalLayout L = natural_layout(a.n);
    const uint8_t *w = a.W + size_t(g) * a.w_stride;
    const uint8_t *x[T];
    for (int j = 0; j < T; j++) x[j] = a.X + size_t(t + j) * a.x_stride;
    __m512 accA[T], accB[T];
    for (int j = 0; j < T; j++) {
        accA[j] = _mm512_setzero_ps();
        accB[j] = _mm512_setzero_ps();
    }
    const __m512i spreadA = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i spreadB = _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m512i bias = _mm512_set1_epi8(char(0x80));
    const __m512i zero = _mm512_setzero_si512();
    for (int64_t b = 0; b < L.nb; b++) {
        const uint8_t *blk = w + size_t(b) * BB;
        _mm_prefetch(reinterpret_cast<const char *>(blk) + kPrefetch, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(blk) + kPrefetch + 64, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char *>(blk) + kPrefetch + 128, _MM_HINT_T0);
        const __m512i vA = _mm512_loadu_si512(blk);
        const __m512i vB = _mm512_loadu_si512(blk + 64);
        const __m512 d4 = _mm512_zextps128_ps512(
            _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(blk + 128))));
        const __m512 dwA = _mm512_permutexvar_ps(spreadA, d4), dwB = _mm512_permutexvar_ps(spreadB, d4);
        for (int j = 0; j < T; j++) {
            const __m512i xv =
                _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x[j] + b * QK)));
            // the weights are w + 128: start each lane from -128 * (its 4 activations)
            const __m512i off = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, xv));
            const __m512i pA = _mm512_dpbusd_epi32(off, vA, xv);
            const __m512i pB = _mm512_dpbusd_epi32(off, vB, xv);
            const __m512 dx = _mm512_set1_ps(reinterpret_cast<const float *>(x[j] + L.d_off)[b]);
            accA[j] = _mm512_fmadd_ps(_mm512_mul_ps(dwA, dx), _mm512_cvtepi32_ps(pA), accA[j]);
            accB[j] = _mm512_fmadd_ps(_mm512_mul_ps(dwB, dx), _mm512_cvtepi32_ps(pB), accB[j]);
        }
    }
    for (int j = 0; j < T; j++) {
        alignas(64) float fa[16], fb[16];
        _mm512_store_ps(fa, accA[j]);
        _mm512_store_ps(fb, accB[j]);
        float *y = a.Y + (t + j) * a.ldy + 4 * g;
        y[0] = lanes_sum(fa);
        y[1] = lanes_sum(fa + 8);
        y[2] = lanes_sum(fb);
        y[3] = lanes_sum(fb + 8);
    }
}

using TileFn = void (*)(const GemmArgs &, int64_t, int64_t);
constexpr int kT = 4;  // tokens per tile

template <uint32_t WT>
void gemm_x4_type(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    static constexpr TileFn tab[kT] = {
        WT == TYPE_Q4_1 ? q41_tile<1> : q80_tile<1>, WT == TYPE_Q4_1 ? q41_tile<2> : q80_tile<2>,
        WT == TYPE_Q4_1 ? q41_tile<3> : q80_tile<3>, WT == TYPE_Q4_1 ? q41_tile<4> : q80_tile<4>};
    for (int64_t t = t0; t < t1; t += kT) {
        const int nt = int(std::min<int64_t>(kT, t1 - t));
        for (int64_t g = r0 / 4; g < r1 / 4; g++) tab[nt - 1](a, g, t);
    }
}

void gemm_x4(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    if (a.w_type == TYPE_Q4_1) gemm_x4_type<TYPE_Q4_1>(a, r0, r1, t0, t1);
    else gemm_x4_type<TYPE_Q8_0>(a, r0, r1, t0, t1);
}

}  // namespace

GemmFn gemm_x4_avx512() {
    static const bool ok = (__builtin_cpu_init(), true) && __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512vnni") && has_avx2_fma_f16c();  // (clang 14 knows no "f16c")
    return ok ? gemm_x4 : nullptr;
}

}  // namespace cpu
}  // namespace kvfit

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else

namespace kvfit {
namespace cpu {
GemmFn gemm_x4_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace kvfit

#endif
