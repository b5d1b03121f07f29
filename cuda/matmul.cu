// Matrix products with weights in their GGUF layout.
//   Q4_0 / Q4_1 / Q8_0 weights: activations are first quantized to 8-bit
//     blocks exactly as the CPU backend does; each block's integer sum is
//     exact (dp4a for decode, int8 tensor cores through WMMA for batches), and
//     the float side is the CPU's per-block formula.
//   F16 / BF16 / F32 weights: activations are rounded to the weight type as
//     on the CPU and products summed in float.
// Decode (n <= kMatvecMaxTokens) reads each weight row once for every token;
// batches use tiles in shared memory so a weight tile serves many tokens.
#include <mma.h>

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

// The 32 weights of block b of a row as 8 words of signed bytes: word k
// holds values 4k .. 4k + 3.
__device__ __forceinline__ void weight_block_i8(uint32_t type, const uint8_t *row, int64_t b, uint32_t w[8]) {
    if (type == kQ8_0) {
        const uint8_t *qs = row + b * 34 + 2;
        for (int k = 0; k < 8; k++) w[k] = ld_u32_a2(qs + 4 * k);
        return;
    }
    const uint8_t *qs = type == kQ4_0 ? row + b * 18 + 2 : row + b * 20 + 4;
    for (int k = 0; k < 4; k++) {
        const uint32_t v = ld_u32_a2(qs + 4 * k);
        w[k] = v & 0x0f0f0f0fu;
        w[4 + k] = (v >> 4) & 0x0f0f0f0fu;
        if (type == kQ4_0) {
            w[k] = __vsub4(w[k], 0x08080808u);  // nibble - 8 in each byte, as signed bytes
            w[4 + k] = __vsub4(w[4 + k], 0x08080808u);
        }
    }
}

// Float scale and minimum of block b (minimum only for Q4_1).
__device__ __forceinline__ void weight_block_scale(uint32_t type, const uint8_t *row, int64_t b, float &d, float &m) {
    const uint8_t *p = row + b * (type == kQ8_0 ? 34 : type == kQ4_0 ? 18 : 20);
    d = ld_half(p);
    m = type == kQ4_1 ? ld_half(p + 2) : 0.0f;
}

// The CPU's block term: (dw * dx) * sum [+ mw * sx].
__device__ __forceinline__ float block_term(uint32_t type, float dw, float mw, float dx, float sx, int si) {
    const float t = __fmul_rn(__fmul_rn(dw, dx), float(si));
    return type == kQ4_1 ? __fadd_rn(t, __fmul_rn(mw, sx)) : t;
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
        uint32_t w[8];
        weight_block_i8(type, row, b, w);
        float dw, mw;
        weight_block_scale(type, row, b, dw, mw);
        for (int t = 0; t < n; t++) {
            const int *xv = reinterpret_cast<const int *>(xq + size_t(t) * size_t(n_cols) + size_t(b) * kGroup);
            int si = 0;
            for (int k = 0; k < 8; k++) si = __dp4a(int(w[k]), xv[k], si);
            const size_t xb = size_t(t) * size_t(nb) + size_t(b);
            sum[t] = __fadd_rn(sum[t], block_term(type, dw, mw, xd[xb], xs[xb], si));
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
// Batches with block-quantized weights: tiles of 64 rows x 32 tokens, one
// 32-value block of K at a time. The integer sums of a block come from int8
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
                const uint8_t *row = W + size_t(r) * row_bytes;
                uint32_t w[8];
                weight_block_i8(type, row, b, w);
                for (int k = 0; k < 4; k++) v[k] = w[4 * hk + k];
                weight_block_scale(type, row, b, dw, mw);
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

bool is_q(uint32_t type) { return type == kQ4_0 || type == kQ4_1 || type == kQ8_0; }

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
        if (n_cols % kGroup) return cudaErrorInvalidValue;
        const int64_t blocks = n_cols / kGroup * n;
        quantize_kernel<<<unsigned((blocks + 7) / 8), 256, 0, s>>>(x, blocks, scratch.q, scratch.d, scratch.s);
        if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
        if (n <= kMatvecMaxTokens) {
            matvec_q_kernel<<<unsigned((n_rows + kMatvecWarps - 1) / kMatvecWarps), 32 * kMatvecWarps, 0, s>>>(
                type, W, row_bytes, n_rows, n_cols, n, scratch.q, scratch.d, scratch.s, y);
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
