// Kernel dispatch, the scalar reference kernels, and the threaded matmul
// driver shared by every instruction set.
#include "backend/cpu/kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/repack.h"
#include "backend/cpu/threadpool.h"

namespace kvfit {

uint32_t vec_dot_type(uint32_t weight_type) {
    switch (weight_type) {
        case TYPE_Q4_0:
        case TYPE_Q5_0:
        case TYPE_Q8_0: return TYPE_Q8_0;
        case TYPE_Q4_1:
        case TYPE_Q5_1: return TYPE_Q8_1;
        case TYPE_Q4_K:
        case TYPE_Q5_K:
        case TYPE_Q6_K: return TYPE_Q8_K;
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
        case TYPE_Q8_K: {
            BlockQ8_K *y = static_cast<BlockQ8_K *>(vy);
            for (int64_t b = 0; b < n / QK_K; b++) quantize_block_q8_K(x + b * QK_K, y + b);
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

// One block's weights as 32 ints in natural order.
inline void unpack_q4(const uint8_t *qs, int offset, int8_t *q) {
    for (int j = 0; j < QK / 2; j++) {
        q[j] = int8_t((qs[j] & 0x0f) + offset);
        q[j + QK / 2] = int8_t((qs[j] >> 4) + offset);
    }
}
// Q5_0 / Q5_1: the nibbles with their fifth bits from qh (bit j for value j).
inline void unpack_q5(const uint8_t *qh, const uint8_t *qs, int offset, int8_t *q) {
    uint32_t hi;
    std::memcpy(&hi, qh, 4);
    unpack_q4(qs, offset, q);
    for (int j = 0; j < QK; j++) q[j] = int8_t(q[j] + int((hi >> j) & 1) * 16);
}

// Dot of a block-quantized weight row with activations given per block as
// (quants, scale, Q4_1 s): the arithmetic of GgmlDotAcc.
template <typename XQ, typename XD, typename XS>
float block_dot_scalar(uint32_t wt, int64_t nb, const void *vw, XQ xq, XD xd, XS xs) {
    GgmlDotAcc acc;
    int8_t q[QK];
    for (int64_t b = 0; b < nb; b++) {
        if (wt == TYPE_Q4_0) {
            const BlockQ4_0 &w = static_cast<const BlockQ4_0 *>(vw)[b];
            unpack_q4(w.qs, -8, q);
            acc.block(q, xq(b), fp16_to_fp32(w.d) * xd(b));
        } else if (wt == TYPE_Q4_1) {
            const BlockQ4_1 &w = static_cast<const BlockQ4_1 *>(vw)[b];
            unpack_q4(w.qs, 0, q);
            acc.block(q, xq(b), fp16_to_fp32(w.d) * xd(b));
            acc.min_term(fp16_to_fp32(w.m), xs(b));
        } else if (wt == TYPE_Q5_0) {
            const BlockQ5_0 &w = static_cast<const BlockQ5_0 *>(vw)[b];
            unpack_q5(w.qh, w.qs, -16, q);
            acc.block(q, xq(b), fp16_to_fp32(w.d) * xd(b));
        } else if (wt == TYPE_Q5_1) {
            const BlockQ5_1 &w = static_cast<const BlockQ5_1 *>(vw)[b];
            unpack_q5(w.qh, w.qs, 0, q);
            acc.block(q, xq(b), fp16_to_fp32(w.d) * xd(b));
            acc.min_term(fp16_to_fp32(w.m), xs(b));
        } else {
            const BlockQ8_0 &w = static_cast<const BlockQ8_0 *>(vw)[b];
            acc.block(w.qs, xq(b), fp16_to_fp32(w.d) * xd(b));
        }
    }
    return acc.sum();
}

// Dot of a k-quant weight row with Q8_K activations: the integer lanes of
// kquant_lanes, the float steps of GgmlKDotAcc.
float kquant_dot_scalar(uint32_t wt, int64_t n, const void *vw, const BlockQ8_K *x) {
    const size_t bs = type_info(wt)->block_bytes;
    GgmlKDotAcc acc;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = static_cast<const uint8_t *>(vw) + size_t(b) * bs;
        int32_t lanes[8], mins[4];
        kquant_lanes(wt, blk, x[b], lanes, mins);
        if (wt == TYPE_Q6_K) {
            const BlockQ6_K &w = *reinterpret_cast<const BlockQ6_K *>(blk);
            acc.block(lanes, x[b].d * fp16_to_fp32(w.d));
            continue;
        }
        // Q4_K and Q5_K start alike: d, then dmin
        uint16_t dh, mh;
        std::memcpy(&dh, blk, 2);
        std::memcpy(&mh, blk + 2, 2);
        acc.block(lanes, x[b].d * fp16_to_fp32(dh));
        const float dmin = -x[b].d * fp16_to_fp32(mh);
        if (wt == TYPE_Q4_K) acc.mins4(mins, dmin);
        else acc.mins1((mins[0] + mins[1]) + (mins[2] + mins[3]), dmin);
    }
    return acc.sum(wt);
}

float vec_dot_scalar(uint32_t wt, int64_t n, const void *vw, const void *vx) {
    const int64_t nb = n / QK;
    switch (wt) {
        case TYPE_Q4_K:
        case TYPE_Q5_K:
        case TYPE_Q6_K: return kquant_dot_scalar(wt, n, vw, static_cast<const BlockQ8_K *>(vx));
        case TYPE_Q4_0:
        case TYPE_Q5_0:
        case TYPE_Q8_0: {
            const BlockQ8_0 *x = static_cast<const BlockQ8_0 *>(vx);
            return block_dot_scalar(
                wt, nb, vw, [&](int64_t b) { return x[b].qs; }, [&](int64_t b) { return fp16_to_fp32(x[b].d); },
                [](int64_t) { return 0.0f; });
        }
        case TYPE_Q4_1:
        case TYPE_Q5_1: {
            const BlockQ8_1 *x = static_cast<const BlockQ8_1 *>(vx);
            return block_dot_scalar(
                wt, nb, vw, [&](int64_t b) { return x[b].qs; }, [&](int64_t b) { return fp16_to_fp32(x[b].d); },
                [&](int64_t b) { return fp16_to_fp32(x[b].s); });
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
    if (!is_q_type(wt)) {  // k-quants: the Q8_K row itself
        quantize_row_scalar(vec_dot_type(wt), x, xp, n);
        return;
    }
    const NaturalLayout L = natural_layout(n);
    float *d = reinterpret_cast<float *>(xp + L.d_off);
    float *s = reinterpret_cast<float *>(xp + L.s_off);
    for (int64_t b = 0; b < L.nb; b++) {
        float d_raw;
        int sum;
        d[b] = fp16_to_fp32(quantize_block_q8(x + b * QK, reinterpret_cast<int8_t *>(xp) + b * QK, &d_raw, &sum));
        s[b] = fp16_to_fp32(fp32_to_fp16(d_raw * float(sum)));
    }
}

// Dot of one weight row with one packed activation row; the same arithmetic
// as vec_dot_scalar, so matmul(scalar) == vec_dot(scalar) bit for bit.
float packed_dot_scalar(uint32_t wt, int64_t n, const uint8_t *w, const uint8_t *xp) {
    if (!is_q_type(wt)) return vec_dot_scalar(wt, n, w, xp);
    const NaturalLayout L = natural_layout(n);
    const float *d = reinterpret_cast<const float *>(xp + L.d_off);
    const float *s = reinterpret_cast<const float *>(xp + L.s_off);
    return block_dot_scalar(
        wt, L.nb, w, [&](int64_t b) { return reinterpret_cast<const int8_t *>(xp) + b * QK; },
        [&](int64_t b) { return d[b]; }, [&](int64_t b) { return s[b]; });
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

namespace {

// The threaded driver: gemm runs blocks of rows x tokens; w_stride is what
// it gets as the weights' stride, w_row_bytes the bytes of one row (for
// sizing the blocks).
void matmul_driver(ThreadPool &pool, const cpu::KernelImpl &impl, void (*gemm)(const cpu::GemmArgs &, int64_t, int64_t, int64_t, int64_t),
                   uint32_t w_type, const void *W, size_t w_stride, size_t w_row_bytes, int64_t n_rows,
                   int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy, void *scratch) {
    using namespace cpu;
    if (n_rows <= 0 || n_tokens <= 0) return;
    const int nth = pool.size();

    GemmArgs a;
    a.w_type = w_type;
    a.n = n_cols;
    a.W = static_cast<const uint8_t *>(W);
    a.w_stride = w_stride;
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
        gemm(a, r0, std::min(n_rows, r0 + rc), t0, std::min(n_tokens, t0 + tb));
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

}  // namespace

void matmul(ThreadPool &pool, const KernelTable &k, uint32_t w_type, const void *W, size_t w_row_bytes,
            int64_t n_rows, int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy,
            void *scratch) {
    const cpu::KernelImpl &impl = cpu::impl_of(k);
    matmul_driver(pool, impl, impl.gemm, w_type, W, w_row_bytes, w_row_bytes, n_rows, n_cols, X, n_tokens, Y, ldy,
                  scratch);
}

void matmul_x4(ThreadPool &pool, const KernelTable &k, uint32_t w_type, const void *W4, int64_t n_rows,
               int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy, void *scratch) {
    const size_t group = size_t(n_cols / QK) * cpu::x4_block_bytes(w_type);
    matmul_driver(pool, cpu::impl_of(k), cpu::gemm_x4_avx512(), w_type, W4, group, group / 4, n_rows, n_cols, X,
                  n_tokens, Y, ldy, scratch);
}

}  // namespace kvfit
