// Matrix products with weights in their GGUF layout.
//   Q4_0 / Q4_1 / Q5_0 / Q5_1 / Q8_0 weights: activations are first quantized to 8-bit
//     blocks exactly as the CPU backend does; each block's integer sum is
//     exact (dp4a for decode, int8 tensor cores through WMMA for batches), and
//     the float side is the CPU's per-block formula.
//   Q4_K / Q5_K / Q6_K weights: the same 8-bit blocks of 32 meet each 32-value
//     chunk of a super-block (Q4_K / Q5_K as a Q4_1-style block with scale
//     d * sc and minimum dmin * m; Q6_K with its two 16-value scales as
//     integer factors). The CPU quantizes these activations to Q8_K
//     super-blocks instead, so results agree to a tolerance, not bit for bit.
//   F16 / BF16 / F32 weights: activations are rounded to the weight type as
//     on the CPU and products summed in float.
// Decode (n <= kMatvecMaxTokens) reads each weight row once for every token;
// batches use tiles in shared memory so a weight tile serves many tokens.
#include <mma.h>

#include <algorithm>

#include "common.cuh"

namespace kvfit {
namespace cuda {
namespace {

constexpr int kMatvecMaxTokens = 8;

// ---------------------------------------------------------------------------
// Activation quantization: a warp per block of 32 values.

__global__ void quantize_kernel(const float *x, int64_t n_blocks, int8_t *q, float *d_out, float *s_out) {
    const int64_t b = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (b >= n_blocks) return;  // whole warps leave together
    const float v = x[b * kGroup + lane];
    const float amax = warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const int qv = int(rintf(__fmul_rn(v, id)));  // round half to even, as the CPU's nearbyint
    q[b * kGroup + lane] = int8_t(qv);
    int sum = qv;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) {
        d_out[b] = __half2float(__float2half_rn(d));
        s_out[b] = __half2float(__float2half_rn(__fmul_rn(d, float(sum))));
    }
}

// An activation rounded to the weight's type, as the CPU converts it.
__device__ __forceinline__ float round_to(uint32_t type, float v) {
    if (type == kF16) return __half2float(__float2half_rn(v));
    if (type == kBF16) {
        const uint32_t x = __float_as_uint(v);
        if ((x & 0x7fffffffu) > 0x7f800000u) return __uint_as_float((x | 0x00400000u) & 0xffff0000u);
        return bf16_to_float(uint16_t((x + (0x7fffu + ((x >> 16) & 1u))) >> 16));
    }
    return v;
}

// Weight types whose blocks carry a minimum (a term in the activations' sums).
__device__ __forceinline__ bool has_min(uint32_t type) {
    return type == kQ4_1 || type == kQ5_1 || type == kQ4_K || type == kQ5_K;
}

// The fifth bits of values 4k .. 4k+3 (bits 4k .. 4k+3 of qh) moved to bit 4
// of each byte.
__device__ __forceinline__ uint32_t fifth_bits(uint32_t qh, int k) {
    const uint32_t h = qh >> (4 * k);
    return ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}

// Block b (values 32b .. 32b + 31) of a weight row: w[k] holds values 4k ..
// 4k + 3 as signed bytes; h0 / h1 are the integer factors of values 0..15 /
// 16..31 (Q6_K's sub-block scales, else 1); with activation codes of scale dx
// and sum term sx the block's dot is (dw * dx) * (h0 * sum0 + h1 * sum1) + mw * sx.
// The k-quants' sub-blocks of 32 become blocks: Q4_K / Q5_K fold their
// integer scale and minimum into dw = d * sc and mw = -(dmin * m).
struct WBlock {
    uint32_t w[8];
    int h0, h1;
    float dw, mw;
};

__device__ __forceinline__ void weight_block(uint32_t type, const uint8_t *row, int64_t b, WBlock &o) {
    o.h0 = o.h1 = 1;
    o.mw = 0.0f;
    if (type == kQ8_0) {
        const uint8_t *blk = row + b * 34;
        for (int k = 0; k < 8; k++) o.w[k] = ld_u32_a2(blk + 2 + 4 * k);
        o.dw = ld_half(blk);
        return;
    }
    if (type == kQ4_K || type == kQ5_K) {
        const bool q5 = type == kQ5_K;
        const uint8_t *blk = row + (b / 8) * (q5 ? 176 : 144);
        const int j = int(b % 8);
        const uint8_t *sc = blk + 4;
        const int s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 0x0f) | (sc[j - 4] >> 6) << 4;
        const int m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | (sc[j] >> 6) << 4;
        const uint8_t *qs = blk + (q5 ? 48 : 16) + 32 * (j / 2);
        for (int k = 0; k < 8; k++) {
            const uint32_t v = ld_u32_a2(qs + 4 * k);
            o.w[k] = j % 2 ? (v >> 4) & 0x0f0f0f0fu : v & 0x0f0f0f0fu;
            if (q5) o.w[k] |= ((ld_u32_a2(blk + 16 + 4 * k) >> j) & 0x01010101u) << 4;
        }
        o.dw = __fmul_rn(ld_half(blk), float(s));
        o.mw = -__fmul_rn(ld_half(blk + 2), float(m));
        return;
    }
    if (type == kQ6_K) {
        const uint8_t *blk = row + (b / 8) * 210;
        const int j = int(b % 8), h = j / 4, kk = j % 4;
        for (int k = 0; k < 8; k++) {
            const uint32_t lo = ld_u32_a2(blk + 64 * h + 32 * (kk & 1) + 4 * k);
            const uint32_t hi = (ld_u32_a2(blk + 128 + 32 * h + 4 * k) >> (2 * kk)) & 0x03030303u;
            const uint32_t q = (kk < 2 ? lo & 0x0f0f0f0fu : (lo >> 4) & 0x0f0f0f0fu) | hi << 4;
            o.w[k] = __vsub4(q, 0x20202020u);  // q - 32 in each byte, as signed bytes
        }
        o.h0 = int(int8_t(blk[192 + 2 * j]));
        o.h1 = int(int8_t(blk[193 + 2 * j]));
        o.dw = ld_half(blk + 208);
        return;
    }
    // Q4_0, Q4_1, Q5_0, Q5_1: d [m] [qh] then 16 bytes of nibbles
    const bool q5 = type == kQ5_0 || type == kQ5_1;
    const int head = (type == kQ4_1 || type == kQ5_1 ? 4 : 2) + (q5 ? 4 : 0);
    const uint8_t *blk = row + b * (head + 16);
    const uint32_t qh = q5 ? ld_u32_a2(blk + head - 4) : 0u;
    for (int k = 0; k < 4; k++) {
        const uint32_t v = ld_u32_a2(blk + head + 4 * k);
        o.w[k] = v & 0x0f0f0f0fu;
        o.w[4 + k] = (v >> 4) & 0x0f0f0f0fu;
        if (q5) {
            o.w[k] |= fifth_bits(qh, k);
            o.w[4 + k] |= fifth_bits(qh, 4 + k);
        }
        if (type == kQ4_0 || type == kQ5_0) {
            const uint32_t off = type == kQ4_0 ? 0x08080808u : 0x10101010u;  // the code's offset, per byte
            o.w[k] = __vsub4(o.w[k], off);
            o.w[4 + k] = __vsub4(o.w[4 + k], off);
        }
    }
    o.dw = ld_half(blk);
    if (has_min(type)) o.mw = ld_half(blk + 2);
}

// The CPU's block term: (dw * dx) * sum [+ mw * sx].
__device__ __forceinline__ float block_term(uint32_t type, float dw, float mw, float dx, float sx, int si) {
    const float t = __fmul_rn(__fmul_rn(dw, dx), float(si));
    return has_min(type) ? __fadd_rn(t, __fmul_rn(mw, sx)) : t;
}

// ---------------------------------------------------------------------------
// Decode: a warp per weight row, lanes over the row's blocks (or elements).

constexpr int kMatvecWarps = 4;

__global__ void matvec_q_kernel(uint32_t type, const uint8_t *W, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                                int n, const int8_t *xq, const float *xd, const float *xs, float *y) {
    const int64_t r = int64_t(blockIdx.x) * kMatvecWarps + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (r >= n_rows) return;
    const uint8_t *row = W + size_t(r) * row_bytes;
    const int64_t nb = n_cols / kGroup;
    float sum[kMatvecMaxTokens] = {};
    for (int64_t b = lane; b < nb; b += 32) {
        WBlock wb;
        weight_block(type, row, b, wb);
        for (int t = 0; t < n; t++) {
            const int *xv = reinterpret_cast<const int *>(xq + size_t(t) * size_t(n_cols) + size_t(b) * kGroup);
            int s0 = 0, s1 = 0;
            for (int k = 0; k < 4; k++) s0 = __dp4a(int(wb.w[k]), xv[k], s0);
            for (int k = 4; k < 8; k++) s1 = __dp4a(int(wb.w[k]), xv[k], s1);
            const size_t xb = size_t(t) * size_t(nb) + size_t(b);
            sum[t] = __fadd_rn(sum[t], block_term(type, wb.dw, wb.mw, xd[xb], xs[xb], wb.h0 * s0 + wb.h1 * s1));
        }
    }
    for (int t = 0; t < n; t++) {
        const float v = warp_sum(sum[t]);
        if (lane == 0) y[size_t(t) * size_t(n_rows) + size_t(r)] = v;
    }
}

__global__ void matvec_f_kernel(uint32_t type, const uint8_t *W, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                                int n, const float *x, float *y) {
    const int64_t r = int64_t(blockIdx.x) * kMatvecWarps + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (r >= n_rows) return;
    const uint8_t *row = W + size_t(r) * row_bytes;
    float sum[kMatvecMaxTokens] = {};
    for (int64_t i = lane; i < n_cols; i += 32) {
        const float w = weight_elem(type, row, i);
        for (int t = 0; t < n; t++) sum[t] += w * round_to(type, x[size_t(t) * size_t(n_cols) + size_t(i)]);
    }
    for (int t = 0; t < n; t++) {
        const float v = warp_sum(sum[t]);
        if (lane == 0) y[size_t(t) * size_t(n_rows) + size_t(r)] = v;
    }
}

// ---------------------------------------------------------------------------
// Batches with block-quantized weights whose blocks have one integer factor
// (all but Q6_K): tiles of 64 rows x 32 tokens, one 32-value block of K at a time. The integer sums of a block come from int8
// tensor cores (16x16x16 WMMA), are staged in shared memory and scaled per
// row and token, so the float accumulation is the CPU's, block by block.

constexpr int kTileRows = 64, kTileTokens = 32, kGemmWarps = 4;

struct QTile {
    int8_t a[2][kTileRows][16];    // weights: K halves 0..15 and 16..31 (16-byte rows for WMMA)
    int8_t b[2][kTileTokens][16];  // activations, same split
    float dw[kTileRows], mw[kTileRows], dx[kTileTokens], sx[kTileTokens];
    int c[kGemmWarps][16][16];     // a warp's integer sums of one 16x16 sub-tile
};

// c[w] = the 16x16 integer sums of rows 16w.. and tokens 16ts.. over one block.
__device__ __forceinline__ void tile_sums(QTile &s, int w, int ts, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 720
    using namespace nvcuda;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> acc;
    wmma::fill_fragment(acc, 0);
    for (int k = 0; k < 2; k++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, &s.a[k][16 * w][0], 16);
        wmma::load_matrix_sync(fb, &s.b[k][16 * ts][0], 16);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(&s.c[w][0][0], acc, 16, wmma::mem_row_major);
#else
    // No int8 tensor cores: the same sums with dp4a.
    for (int e = lane * 8; e < lane * 8 + 8; e++) {
        const int r = e / 16, t = e % 16;
        int si = 0;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < 4; j++)
                si = __dp4a(reinterpret_cast<const int *>(s.a[k][16 * w + r])[j],
                            reinterpret_cast<const int *>(s.b[k][16 * ts + t])[j], si);
        s.c[w][r][t] = si;
    }
#endif
    __syncwarp();
}

__global__ void __launch_bounds__(32 * kGemmWarps)
    gemm_q_kernel(uint32_t type, const uint8_t *W, size_t row_bytes, int64_t n_rows, int64_t n_cols, int n,
                  const int8_t *xq, const float *xd, const float *xs, float *y) {
    __shared__ __align__(32) QTile s;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int64_t row0 = int64_t(blockIdx.x) * kTileRows;
    const int tok0 = int(blockIdx.y) * kTileTokens;
    const int64_t nb = n_cols / kGroup;
    float acc[2][8] = {};
    for (int64_t b = 0; b < nb; b++) {
        {  // weights: thread -> (row tid / 2, K half tid % 2)
            const int rr = tid / 2, hk = tid % 2;
            const int64_t r = row0 + rr;
            uint32_t v[4] = {0, 0, 0, 0};
            float dw = 0.0f, mw = 0.0f;
            if (r < n_rows) {
                WBlock wb;
                weight_block(type, W + size_t(r) * row_bytes, b, wb);
                for (int k = 0; k < 4; k++) v[k] = wb.w[4 * hk + k];
                dw = wb.dw;
                mw = wb.mw;
            }
            *reinterpret_cast<uint4 *>(&s.a[hk][rr][0]) = make_uint4(v[0], v[1], v[2], v[3]);
            if (hk == 0) s.dw[rr] = dw, s.mw[rr] = mw;
        }
        {  // activations: thread -> (token tid / 4, 8 bytes at 8 * (tid % 4))
            const int tt = tid / 4, part = tid % 4;
            const int t = tok0 + tt;
            uint2 v = make_uint2(0, 0);
            if (t < n) v = *reinterpret_cast<const uint2 *>(xq + size_t(t) * size_t(n_cols) + size_t(b) * kGroup + 8 * part);
            *reinterpret_cast<uint2 *>(&s.b[part / 2][tt][8 * (part % 2)]) = v;
            if (part == 0) {
                s.dx[tt] = t < n ? xd[size_t(t) * size_t(nb) + size_t(b)] : 0.0f;
                s.sx[tt] = t < n ? xs[size_t(t) * size_t(nb) + size_t(b)] : 0.0f;
            }
        }
        __syncthreads();
        for (int ts = 0; ts < 2; ts++) {
            tile_sums(s, warp, ts, lane);
            for (int i = 0; i < 8; i++) {
                const int e = lane * 8 + i, r = 16 * warp + e / 16, t = 16 * ts + e % 16;
                acc[ts][i] = __fadd_rn(acc[ts][i], block_term(type, s.dw[r], s.mw[r], s.dx[t], s.sx[t], s.c[warp][e / 16][e % 16]));
            }
            __syncwarp();
        }
        __syncthreads();
    }
    for (int ts = 0; ts < 2; ts++) {
        for (int i = 0; i < 8; i++) {
            const int e = lane * 8 + i;
            const int64_t r = row0 + 16 * warp + e / 16;
            const int t = tok0 + 16 * ts + e % 16;
            if (r < n_rows && t < n) y[size_t(t) * size_t(n_rows) + size_t(r)] = acc[ts][i];
        }
    }
}

// ---------------------------------------------------------------------------
// Batches with F16 / BF16 / F32 weights: 64 x 64 tiles, 4 x 4 outputs per thread.

constexpr int kFTile = 64, kFK = 32;

__global__ void __launch_bounds__(256)
    gemm_f_kernel(uint32_t type, const uint8_t *W, size_t row_bytes, int64_t n_rows, int64_t n_cols, int n,
                  const float *x, float *y) {
    __shared__ float ws[kFK][kFTile + 1], xs[kFK][kFTile + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t row0 = int64_t(blockIdx.x) * kFTile;
    const int tok0 = int(blockIdx.y) * kFTile;
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < n_cols; k0 += kFK) {
        for (int e = tid; e < kFTile * kFK; e += 256) {
            const int i = e / kFK, kk = e % kFK;
            const int64_t k = k0 + kk, r = row0 + i;
            const int t = tok0 + i;
            ws[kk][i] = r < n_rows && k < n_cols ? weight_elem(type, W + size_t(r) * row_bytes, k) : 0.0f;
            xs[kk][i] = t < n && k < n_cols ? round_to(type, x[size_t(t) * size_t(n_cols) + size_t(k)]) : 0.0f;
        }
        __syncthreads();
        for (int kk = 0; kk < kFK; kk++) {
            float a[4], bv[4];
            for (int i = 0; i < 4; i++) a[i] = ws[kk][ty * 4 + i], bv[i] = xs[kk][tx * 4 + i];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * bv[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            const int64_t r = row0 + ty * 4 + i;
            const int t = tok0 + tx * 4 + j;
            if (r < n_rows && t < n) y[size_t(t) * size_t(n_rows) + size_t(r)] = acc[i][j];
        }
    }
}

bool is_q(uint32_t type) {
    return type == kQ4_0 || type == kQ4_1 || type == kQ5_0 || type == kQ5_1 || type == kQ8_0 || type == kQ4_K ||
           type == kQ5_K || type == kQ6_K;
}
bool is_k(uint32_t type) { return type == kQ4_K || type == kQ5_K || type == kQ6_K; }

size_t align256(size_t v) { return (v + 255) & ~size_t(255); }

}  // namespace

size_t matmul_scratch_bytes(int64_t max_cols, int max_tokens) {
    const size_t codes = size_t(max_cols) * size_t(max_tokens);
    const size_t scales = size_t(max_cols / kGroup + 1) * size_t(max_tokens) * sizeof(float);
    return align256(codes) + 2 * align256(scales);
}

MatmulScratch matmul_scratch(void *base, int64_t max_cols, int max_tokens) {
    const size_t codes = size_t(max_cols) * size_t(max_tokens);
    const size_t scales = size_t(max_cols / kGroup + 1) * size_t(max_tokens) * sizeof(float);
    uint8_t *p = static_cast<uint8_t *>(base);
    MatmulScratch s;
    s.q = reinterpret_cast<int8_t *>(p);
    s.d = reinterpret_cast<float *>(p + align256(codes));
    s.s = reinterpret_cast<float *>(p + align256(codes) + align256(scales));
    return s;
}

cudaError_t matmul(cudaStream_t s, uint32_t type, const void *w, size_t row_bytes, int64_t n_rows, int64_t n_cols,
                   const float *x, int n, float *y, const MatmulScratch &scratch) {
    if (n <= 0 || n_rows <= 0) return cudaSuccess;
    const uint8_t *W = static_cast<const uint8_t *>(w);
    if (n_rows > int64_t(65535) * kTileRows || n > 65535 * kTileTokens) return cudaErrorInvalidValue;
    if (is_q(type)) {
        if (n_cols % (is_k(type) ? kSuper : kGroup)) return cudaErrorInvalidValue;
        const int64_t blocks = n_cols / kGroup * n;
        quantize_kernel<<<unsigned((blocks + 7) / 8), 256, 0, s>>>(x, blocks, scratch.q, scratch.d, scratch.s);
        if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
        if (n <= kMatvecMaxTokens || type == kQ6_K) {
            // Q6_K batches too, kMatvecMaxTokens tokens at a time (its two
            // scales per block do not fit the tensor-core tile's single one)
            const int64_t nb = n_cols / kGroup;
            for (int t0 = 0; t0 < n; t0 += kMatvecMaxTokens) {
                matvec_q_kernel<<<unsigned((n_rows + kMatvecWarps - 1) / kMatvecWarps), 32 * kMatvecWarps, 0, s>>>(
                    type, W, row_bytes, n_rows, n_cols, std::min(n - t0, kMatvecMaxTokens),
                    scratch.q + size_t(t0) * size_t(n_cols), scratch.d + size_t(t0) * size_t(nb),
                    scratch.s + size_t(t0) * size_t(nb), y + size_t(t0) * size_t(n_rows));
                if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
            }
        } else {
            const dim3 grid(unsigned((n_rows + kTileRows - 1) / kTileRows), unsigned((n + kTileTokens - 1) / kTileTokens));
            gemm_q_kernel<<<grid, 32 * kGemmWarps, 0, s>>>(type, W, row_bytes, n_rows, n_cols, n, scratch.q, scratch.d,
                                                           scratch.s, y);
        }
        return cudaGetLastError();
    }
    if (type != kF32 && type != kF16 && type != kBF16) return cudaErrorInvalidValue;
    if (n <= kMatvecMaxTokens) {
        matvec_f_kernel<<<unsigned((n_rows + kMatvecWarps - 1) / kMatvecWarps), 32 * kMatvecWarps, 0, s>>>(
            type, W, row_bytes, n_rows, n_cols, n, x, y);
    } else {
        const dim3 grid(unsigned((n_rows + kFTile - 1) / kFTile), unsigned((n + kFTile - 1) / kFTile));
        gemm_f_kernel<<<grid, 256, 0, s>>>(type, W, row_bytes, n_rows, n_cols, n, x, y);
    }
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kvfit
