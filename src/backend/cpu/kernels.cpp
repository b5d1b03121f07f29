// Kernel dispatch, the scalar reference kernels, and the threaded matmul
// driver shared by every instruction set.
#include "backend/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/threadpool.h"

namespace kvfit {

uint32_t vec_dot_type(uint32_t weight_type) {
    switch (weight_type) {
        case TYPE_Q4_0:
        case TYPE_Q8_0: return TYPE_Q8_0;
        case TYPE_Q4_1: return TYPE_Q8_1;
        case TYPE_F16: return TYPE_F16;
        case TYPE_BF16: return TYPE_BF16;
        default: return TYPE_F32;
    }
}

namespace cpu {
namespace {

// ---------------------------------------------------------------------------
// Scalar reference. Integer block sums are exact; the float side follows
// ggml's per-block formula, so these are the numbers the SIMD paths must hit.

// One block of 32 floats to int8 the way llama.cpp's x86 quantize_row_q8_0/1
// does; returns the fp16-rounded scale, the unrounded one in *d_raw and the
// sum of the quants in *sum.
uint16_t quantize_block_q8(const float *x, int8_t *q, float *d_raw, int *sum) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = q8_inv_scale(amax);
    int s = 0;
    for (int j = 0; j < QK; j++) {
        // nearbyint rounds half to even in the default rounding mode, like
        // the SIMD round instruction ggml uses.
        const int v = int(std::nearbyint(x[j] * id));
        q[j] = int8_t(v);
        s += v;
    }
    *d_raw = d;
    *sum = s;
    return fp32_to_fp16(d);
}

void quantize_row_scalar(uint32_t type, const float *x, void *vy, int64_t n) {
    switch (type) {
        case TYPE_Q8_0: {
            BlockQ8_0 *y = static_cast<BlockQ8_0 *>(vy);
            for (int64_t b = 0; b < n / QK; b++) {
                float d;
                int sum;
                y[b].d = quantize_block_q8(x + b * QK, y[b].qs, &d, &sum);
            }
            return;
        }
        case TYPE_Q8_1: {
            BlockQ8_1 *y = static_cast<BlockQ8_1 *>(vy);
            for (int64_t b = 0; b < n / QK; b++) {
                float d;
                int sum;
                y[b].d = quantize_block_q8(x + b * QK, y[b].qs, &d, &sum);
                y[b].s = fp32_to_fp16(d * float(sum));
            }
            return;
        }
        case TYPE_F16: {
            uint16_t *y = static_cast<uint16_t *>(vy);
            for (int64_t i = 0; i < n; i++) y[i] = fp32_to_fp16(x[i]);
            return;
        }
        case TYPE_BF16: {
            uint16_t *y = static_cast<uint16_t *>(vy);
            for (int64_t i = 0; i < n; i++) y[i] = fp32_to_bf16(x[i]);
            return;
        }
        default:
            std::memcpy(vy, x, size_t(n) * sizeof(float));
            return;
    }
}

// Sum over one block given its weights (as signed ints) and activations.
inline int block_sum_q4_0(const uint8_t *qs, const int8_t *xlo, const int8_t *xhi) {
    int s = 0;
    for (int j = 0; j < QK / 2; j++) s += ((qs[j] & 0x0f) - 8) * xlo[j] + ((qs[j] >> 4) - 8) * xhi[j];
    return s;
}
inline int block_sum_q4_1(const uint8_t *qs, const int8_t *xlo, const int8_t *xhi) {
    int s = 0;
    for (int j = 0; j < QK / 2; j++) s += (qs[j] & 0x0f) * xlo[j] + (qs[j] >> 4) * xhi[j];
    return s;
}
inline int block_sum_q8_0(const int8_t *qs, const int8_t *xlo, const int8_t *xhi) {
    int s = 0;
    for (int j = 0; j < QK / 2; j++) s += qs[j] * xlo[j] + qs[j + QK / 2] * xhi[j];
    return s;
}

float vec_dot_scalar(uint32_t wt, int64_t n, const void *vw, const void *vx) {
    const int64_t nb = n / QK;
    switch (wt) {
        case TYPE_Q4_0: {
            const BlockQ4_0 *w = static_cast<const BlockQ4_0 *>(vw);
            const BlockQ8_0 *x = static_cast<const BlockQ8_0 *>(vx);
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int si = block_sum_q4_0(w[b].qs, x[b].qs, x[b].qs + QK / 2);
                sum += (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d)) * float(si);
            }
            return sum;
        }
        case TYPE_Q4_1: {
            const BlockQ4_1 *w = static_cast<const BlockQ4_1 *>(vw);
            const BlockQ8_1 *x = static_cast<const BlockQ8_1 *>(vx);
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int si = block_sum_q4_1(w[b].qs, x[b].qs, x[b].qs + QK / 2);
                sum += (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d)) * float(si) +
                       fp16_to_fp32(w[b].m) * fp16_to_fp32(x[b].s);
            }
            return sum;
        }
        case TYPE_Q8_0: {
            const BlockQ8_0 *w = static_cast<const BlockQ8_0 *>(vw);
            const BlockQ8_0 *x = static_cast<const BlockQ8_0 *>(vx);
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const int si = block_sum_q8_0(w[b].qs, x[b].qs, x[b].qs + QK / 2);
                sum += (fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d)) * float(si);
            }
            return sum;
        }
        case TYPE_F16: {
            const uint16_t *w = static_cast<const uint16_t *>(vw);
            const uint16_t *x = static_cast<const uint16_t *>(vx);
            double sum = 0.0;  // as ggml's scalar path: products in float, sum in double
            for (int64_t i = 0; i < n; i++) sum += double(fp16_to_fp32(w[i]) * fp16_to_fp32(x[i]));
            return float(sum);
        }
        case TYPE_BF16: {
            const uint16_t *w = static_cast<const uint16_t *>(vw);
            const uint16_t *x = static_cast<const uint16_t *>(vx);
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++) sum += double(bf16_to_fp32(w[i]) * bf16_to_fp32(x[i]));
            return float(sum);
        }
        default: {
            const float *w = static_cast<const float *>(vw);
            const float *x = static_cast<const float *>(vx);
            double sum = 0.0;
            for (int64_t i = 0; i < n; i++) sum += double(w[i] * x[i]);
            return float(sum);
        }
    }
}

void pack_row_scalar(uint32_t wt, const float *x, uint8_t *xp, int64_t n) {
    if (!is_q_type(wt)) {
        quantize_row_scalar(wt, x, xp, n);
        return;
    }
    const PackedLayout L = packed_layout(wt, n);
    int8_t *qs = reinterpret_cast<int8_t *>(xp);
    float *sc = reinterpret_cast<float *>(xp + L.sc_off);
    float *auxf = reinterpret_cast<float *>(xp + L.aux_off);
    int32_t *auxi = reinterpret_cast<int32_t *>(xp + L.aux_off);
    std::memset(xp + L.aux_off, 0, size_t(L.npairs) * 32);
    for (int64_t b = 0; b < L.nb; b++) {
        const int64_t p = b / 2;
        const int h = int(b % 2);
        const bool lone = (b == L.nb - 1) && (L.nb % 2 == 1);
        int8_t q[QK];
        float d_raw;
        int sum;
        const float d = fp16_to_fp32(quantize_block_q8(x + b * QK, q, &d_raw, &sum));
        int8_t *lo = qs + p * 64 + (lone ? 0 : h * 16);
        int8_t *hi = lone ? lo + 16 : lo + 32;
        std::memcpy(lo, q, 16);
        std::memcpy(hi, q + 16, 16);
        for (int k = 0; k < 4; k++) sc[p * 8 + h * 4 + k] = d;
        if (lone)
            for (int k = 4; k < 8; k++) sc[p * 8 + k] = d;
        if (wt == TYPE_Q4_1) {
            auxf[p * 8 + 1 + 2 * h] = fp16_to_fp32(fp32_to_fp16(d_raw * float(sum)));
        } else {
            const int mul = wt == TYPE_Q4_0 ? -8 : -128;
            for (int k = 0; k < (lone ? 8 : 4); k++) {
                // lane k sums 4 bytes of the low half and 4 of the high half
                // (pairs), or 4 consecutive bytes (a lone block)
                const int8_t *a = q + 4 * k;
                int ls = a[0] + a[1] + a[2] + a[3];
                if (!lone) ls += a[16] + a[17] + a[18] + a[19];
                auxi[p * 8 + h * 4 + k] = mul * ls;
            }
        }
    }
}

// Dot of one weight row with one packed activation row; the same per-block
// arithmetic as vec_dot_scalar, so matmul(scalar) == vec_dot(scalar) bit for bit.
float packed_dot_scalar(uint32_t wt, int64_t n, const uint8_t *w, const uint8_t *xp) {
    if (!is_q_type(wt)) return vec_dot_scalar(wt, n, w, xp);
    const PackedLayout L = packed_layout(wt, n);
    const int8_t *qs = reinterpret_cast<const int8_t *>(xp);
    const float *sc = reinterpret_cast<const float *>(xp + L.sc_off);
    const float *auxf = reinterpret_cast<const float *>(xp + L.aux_off);
    float sum = 0.0f;
    for (int64_t b = 0; b < L.nb; b++) {
        const int64_t p = b / 2;
        const int h = int(b % 2);
        const bool lone = (b == L.nb - 1) && (L.nb % 2 == 1);
        const int8_t *lo = qs + p * 64 + (lone ? 0 : h * 16);
        const int8_t *hi = lone ? lo + 16 : lo + 32;
        const float dx = sc[p * 8 + h * 4];
        if (wt == TYPE_Q4_0) {
            const BlockQ4_0 &blk = reinterpret_cast<const BlockQ4_0 *>(w)[b];
            sum += (fp16_to_fp32(blk.d) * dx) * float(block_sum_q4_0(blk.qs, lo, hi));
        } else if (wt == TYPE_Q4_1) {
            const BlockQ4_1 &blk = reinterpret_cast<const BlockQ4_1 *>(w)[b];
            sum += (fp16_to_fp32(blk.d) * dx) * float(block_sum_q4_1(blk.qs, lo, hi)) +
                   fp16_to_fp32(blk.m) * auxf[p * 8 + 1 + 2 * h];
        } else {
            const BlockQ8_0 &blk = reinterpret_cast<const BlockQ8_0 *>(w)[b];
            sum += (fp16_to_fp32(blk.d) * dx) * float(block_sum_q8_0(blk.qs, lo, hi));
        }
    }
    return sum;
}

void gemm_scalar(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1) {
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = t0; t < t1; t++)
            a.Y[t * a.ldy + r] = packed_dot_scalar(a.w_type, a.n, a.W + size_t(r) * a.w_stride,
                                                   a.X + size_t(t) * a.x_stride);
}

const KernelImpl kScalar = {{"scalar", quantize_row_scalar, vec_dot_scalar}, pack_row_scalar, gemm_scalar};

// The implementation behind a table handed to matmul (tables are only ever
// obtained from kernels_scalar/kernels_best, so the address identifies it).
const KernelImpl &impl_of(const KernelTable &k) {
    for (const KernelImpl *i : {impl_avx512(), impl_avx2(), impl_neon()})
        if (i && &i->table == &k) return *i;
    return kScalar;
}

const KernelImpl &pick_best() {
    // KVFIT_CPU_KERNELS=scalar|avx2|avx512|neon forces a path (benchmarks, bug hunts).
    const char *force = std::getenv("KVFIT_CPU_KERNELS");
    const KernelImpl *cands[] = {impl_avx512(), impl_avx2(), impl_neon()};
    if (force && *force) {
        if (std::strcmp(force, "scalar") == 0) return kScalar;
        for (const KernelImpl *i : cands)
            if (i && std::strcmp(i->table.name, force) == 0) return *i;
    }
    for (const KernelImpl *i : cands)
        if (i) return *i;
    return kScalar;
}

}  // namespace

const KernelImpl &impl_scalar() { return kScalar; }

}  // namespace cpu

const KernelTable &kernels_scalar() { return cpu::kScalar.table; }

const KernelTable &kernels_best() {
    static const KernelTable &best = cpu::pick_best().table;
    return best;
}

size_t matmul_scratch_bytes(uint32_t w_type, int64_t n_cols, int64_t n_tokens) {
    if (w_type == TYPE_F32) return 0;  // activations are used in place
    // +64: the caller's buffer need not be aligned; we align inside it.
    return cpu::packed_layout(w_type, n_cols).bytes * size_t(n_tokens) + 64;
}

void matmul(ThreadPool &pool, const KernelTable &k, uint32_t w_type, const void *W, size_t w_row_bytes,
            int64_t n_rows, int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy,
            void *scratch) {
    using namespace cpu;
    if (n_rows <= 0 || n_tokens <= 0) return;
    const KernelImpl &impl = impl_of(k);
    const int nth = pool.size();

    GemmArgs a;
    a.w_type = w_type;
    a.n = n_cols;
    a.W = static_cast<const uint8_t *>(W);
    a.w_stride = w_row_bytes;
    a.Y = Y;
    a.ldy = ldy;
    if (w_type == TYPE_F32) {
        a.X = reinterpret_cast<const uint8_t *>(X);
        a.x_stride = size_t(n_cols) * sizeof(float);
    } else {
        uint8_t *xp = reinterpret_cast<uint8_t *>((reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63));
        const size_t stride = packed_layout(w_type, n_cols).bytes;
        a.X = xp;
        a.x_stride = stride;
        // Packing costs about as much as a few rows of the product; only a
        // batch is worth a round trip through the pool.
        if (nth == 1 || n_tokens * n_cols < 16384) {
            for (int64_t t = 0; t < n_tokens; t++) impl.pack_row(w_type, X + t * n_cols, xp + t * stride, n_cols);
        } else {
            pool.run([&](int ith, int nth_) {
                int64_t b, e;
                split_range(n_tokens, ith, nth_, b, e);
                for (int64_t t = b; t < e; t++) impl.pack_row(w_type, X + t * n_cols, xp + t * stride, n_cols);
            });
        }
    }

    // Work items: a chunk of rows x a block of tokens. Row chunks are sized so
    // the chunk's weights stay in L1/L2 while every token of the block passes
    // over them; token blocks so the packed activations stay in L2.
    const size_t w_bytes = w_row_bytes ? w_row_bytes : 1;
    int64_t tb = n_tokens;
    int64_t rc;
    if (n_tokens <= 4) {
        // Decode: weights are read once, so chunks only balance the threads
        // (several per thread, so one that lost its core is covered by the others).
        rc = nth == 1 ? n_rows : std::max<int64_t>(4, (n_rows + 4 * nth - 1) / (4 * nth));
    } else {
        rc = std::clamp<int64_t>(int64_t((16 << 10) / w_bytes), 4, 64);
        tb = std::clamp<int64_t>(int64_t((256 << 10) / a.x_stride), 4, 128);
        // Enough items for every thread, even for short matrices.
        while (rc > 4 && ((n_rows + rc - 1) / rc) * ((n_tokens + tb - 1) / tb) < 4 * nth) rc /= 2;
    }
    rc = (rc + 3) & ~int64_t(3);
    const int64_t n_rc = (n_rows + rc - 1) / rc;
    const int64_t n_tb = (n_tokens + tb - 1) / tb;
    const int64_t n_items = n_rc * n_tb;

    // Consecutive items share a row chunk, so a thread moving to its next
    // item often finds the weights still in cache.
    auto item = [&](int64_t it) {
        const int64_t r0 = (it / n_tb) * rc, t0 = (it % n_tb) * tb;
        impl.gemm(a, r0, std::min(n_rows, r0 + rc), t0, std::min(n_tokens, t0 + tb));
    };
    if (nth == 1 || n_items == 1) {
        for (int64_t it = 0; it < n_items; it++) item(it);
        return;
    }
    alignas(64) std::atomic<int64_t> next{nth};  // own cache line: workers read `a` meanwhile
    pool.run([&](int ith, int) {
        // The first item is static, so a decode step takes few atomics.
        for (int64_t it = ith; it < n_items; it = next.fetch_add(1, std::memory_order_relaxed)) item(it);
    });
}

}  // namespace kvfit
