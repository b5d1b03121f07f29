// Element-wise and row-wise ops: embedding lookup, RMSNorm, SwiGLU, GEGLU, add,
// scale; the Gated DeltaNet ops (qwen35): convolution step, gates, L2 norm,
// SiLU and sigmoid gating, and the delta rule.
#include <cfloat>

#include "common.cuh"

namespace kvfit {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) { return unsigned((n + kThreads - 1) / kThreads); }

__global__ void get_rows_kernel(uint32_t type, const uint8_t *table, size_t row_bytes, int64_t n_cols,
                                const int32_t *ids, float *x) {
    const int t = blockIdx.y;
    const uint8_t *row = table + size_t(ids[t]) * row_bytes;
    for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < n_cols; c += int64_t(gridDim.x) * blockDim.x)
        x[size_t(t) * size_t(n_cols) + size_t(c)] = weight_elem(type, row, c);
}

// One block per row; the sum of squares in double, as the CPU backend (and ggml) does.
__global__ void rmsnorm_kernel(const float *x, const float *w, int64_t d, float eps, float *y) {
    const float *xr = x + size_t(blockIdx.x) * size_t(d);
    float *yr = y + size_t(blockIdx.x) * size_t(d);
    double ss = 0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += double(xr[i]) * double(xr[i]);
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    __shared__ double part[kThreads / 32];
    __shared__ float scale;
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0;
        for (int i = 0; i < int(blockDim.x / 32); i++) tot += part[i];
        scale = 1.0f / sqrtf(float(tot / double(d)) + eps);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = __fmul_rn(__fmul_rn(xr[i], scale), w[i]);
}

__global__ void swiglu_kernel(const float *gate, const float *up, size_t n, float *out) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        out[i] = __fmul_rn(g / (1.0f + expf(-g)), up[i]);
    }
}

// The F16 bits of f rounded to nearest even, NaN kept a (quiet) NaN: the CPU
// backend's fp32_to_fp16, bit for bit (the GELU table is indexed by them).
__device__ __forceinline__ uint32_t f16_bits(float f) {
    const uint32_t x = __float_as_uint(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // rounds up to infinity
    if (a < 0x38800000u)  // a subnormal half: the float addition aligns the half ulp and rounds
        return sign | (__float_as_uint(__fadd_rn(__uint_as_float(a), 0.5f)) - 0x3f000000u);
    a += 0xc8000fffu + ((a >> 13) & 1u);
    return sign | ((a >> 13) & 0xffffu);
}

__global__ void geglu_kernel(const float *gate, const float *up, size_t n, const uint16_t *table, float *out) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const float x = gate[i];
        float r;
        if (x <= -10.0f) r = 0.0f;
        else if (x >= 10.0f) r = __fmul_rn(x, up[i]);
        else r = __fmul_rn(__half2float(__ushort_as_half(table[f16_bits(x)])), up[i]);
        out[i] = r;
    }
}

__global__ void scale_kernel(float *x, size_t n, float v) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        x[i] = __fmul_rn(x[i], v);
}

__global__ void add_kernel(float *y, const float *x, size_t n) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
        y[i] += x[i];
}


// --- Gated DeltaNet (qwen35). The CPU reference's order of operations, with
// CUDA's expf / logf (not the C library's: results within a few ulp).

__device__ __forceinline__ float silu_of(float x) { return __fdiv_rn(x, __fadd_rn(1.0f, expf(-x))); }

// mode 0: c = silu(a); 1: c = a * sigmoid(b); 2: c = a * silu(b). c may be a.
// (The CPU's choice of exp by position in a row, width, does not arise here.)
__global__ void gdn_pointwise_kernel(int mode, const float *a, const float *b, float *c, size_t n) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const float x = a[i];
        float r;
        if (mode == 0) r = silu_of(x);
        else if (mode == 1) r = __fmul_rn(x, __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-b[i]))));
        else r = __fmul_rn(x, silu_of(b[i]));
        c[i] = r;
    }
}

__global__ void delta_gates_kernel(float *alpha, float *beta, const float *dt_bias, const float *a, int n_heads,
                                   size_t total) {
    const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int h = int(i % size_t(n_heads));
    const float x = __fadd_rn(alpha[i], dt_bias[h]);
    const float sp = x > 20.0f ? x : logf(__fadd_rn(1.0f, expf(x)));
    alpha[i] = __fmul_rn(sp, a[h]);
    beta[i] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-beta[i])));
}

// One block per (row, token); the sum of squares in double (as the CPU).
__global__ void l2norm_kernel(float *x, int dim, size_t stride, float eps_n, float inv_sqrt) {
    float *v = x + size_t(blockIdx.y) * stride + size_t(blockIdx.x) * size_t(dim);
    double ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += double(__fmul_rn(v[i], v[i]));
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    __shared__ double part[kThreads / 32];
    __shared__ float scale;
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double tot = 0;
        for (int i = 0; i < int(blockDim.x / 32); i++) tot += part[i];
        scale = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(float(tot / double(dim)), eps_n)));
    }
    __syncthreads();
    for (int i = threadIdx.x; i < dim; i += blockDim.x) v[i] = __fmul_rn(__fmul_rn(v[i], scale), inv_sqrt);
}

// One thread per channel, the taps in order with fused multiply-adds.
__global__ void ssm_conv_kernel(const float *x, int n, int channels, int kernel, const float *w, float *state,
                                float *y) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= channels) return;
    const int k1 = kernel - 1;
    const size_t C = size_t(channels);
    auto in = [&](int tau) { return tau < k1 ? state[size_t(tau) * C + c] : x[size_t(tau - k1) * C + c]; };
    for (int t = 0; t < n; t++) {
        float sum = 0.0f;
        for (int i = 0; i < kernel; i++) sum = __fmaf_rn(in(t + i), w[size_t(c) * kernel + i], sum);
        y[size_t(t) * C + c] = sum;
    }
    for (int r = 0; r < k1; r++) state[size_t(r) * C + c] = in(n + r);
}

// row . vec in ggml_vec_dot_f32's order (4 x 16 accumulators over blocks of
// 64, the same reduction tree, the rest in order).
__device__ float dot_ggml(const float *row, const float *vec, int D) {
    const int np = D & ~63;
    float sumf = 0.0f;
    if (np) {
        float acc[64];
        for (int l = 0; l < 64; l++) acc[l] = 0.0f;
        for (int i = 0; i < np; i += 64)
            for (int l = 0; l < 64; l++) acc[l] = __fmaf_rn(row[i + l], vec[i + l], acc[l]);
        float t[16];
        for (int l = 0; l < 16; l++) t[l] = __fadd_rn(__fadd_rn(acc[l], acc[32 + l]), __fadd_rn(acc[16 + l], acc[48 + l]));
        float h4[4];
        for (int l = 0; l < 4; l++) h4[l] = __fadd_rn(__fadd_rn(t[l + 12], t[l + 4]), __fadd_rn(t[l + 8], t[l]));
        sumf = __fadd_rn(__fadd_rn(h4[0], h4[2]), __fadd_rn(h4[1], h4[3]));
    }
    for (int i = np; i < D; i++) sumf = __fmaf_rn(row[i], vec[i], sumf);
    return sumf;
}

// One block per value head, one thread per state row (its own arithmetic,
// on its row in global memory); the token's k and q in shared memory.
__global__ void delta_net_kernel(DeltaNetParams p) {
    extern __shared__ float kq[];
    const int D = p.head_dim, j = threadIdx.x, h = blockIdx.x, hk = h % p.n_k_heads;
    float *sk = kq, *sq = kq + D;
    float *row = p.state + (size_t(h) * D + j) * D;
    for (int t = 0; t < p.n; t++) {
        __syncthreads();
        sk[j] = p.k[size_t(t) * p.qk_stride + size_t(hk) * D + j];
        sq[j] = p.q[size_t(t) * p.qk_stride + size_t(hk) * D + j];
        __syncthreads();
        const float eg = expf(p.g[size_t(t) * p.n_v_heads + h]);
        const float b = p.beta[size_t(t) * p.n_v_heads + h];
        for (int i = 0; i < D; i++) row[i] = __fmul_rn(row[i], eg);
        const float dj = __fmul_rn(__fsub_rn(p.v[size_t(t) * p.v_stride + size_t(h) * D + j], dot_ggml(row, sk, D)), b);
        for (int i = 0; i < D; i++) row[i] = __fmaf_rn(sk[i], dj, row[i]);
        p.out[(size_t(t) * p.n_v_heads + h) * D + j] = __fmul_rn(dot_ggml(row, sq, D), p.scale);
    }
}
}  // namespace

cudaError_t get_rows(cudaStream_t s, uint32_t type, const void *table, size_t row_bytes, int64_t n_cols,
                     const int32_t *ids, int n, float *x) {
    if (n <= 0 || n_cols <= 0) return cudaSuccess;
    const dim3 grid(unsigned(std::min<int64_t>((n_cols + kThreads - 1) / kThreads, 1024)), unsigned(n));
    get_rows_kernel<<<grid, kThreads, 0, s>>>(type, static_cast<const uint8_t *>(table), row_bytes, n_cols, ids, x);
    return cudaGetLastError();
}

cudaError_t rmsnorm(cudaStream_t s, const float *x, const float *w, int64_t d, float eps, int n, float *y) {
    if (n <= 0) return cudaSuccess;
    rmsnorm_kernel<<<unsigned(n), kThreads, 0, s>>>(x, w, d, eps, y);
    return cudaGetLastError();
}

cudaError_t swiglu(cudaStream_t s, const float *gate, const float *up, size_t n, float *out) {
    if (!n) return cudaSuccess;
    swiglu_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(gate, up, n, out);
    return cudaGetLastError();
}

cudaError_t add(cudaStream_t s, float *y, const float *x, size_t n) {
    if (!n) return cudaSuccess;
    add_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(y, x, n);
    return cudaGetLastError();
}

cudaError_t scale(cudaStream_t s, float *x, size_t n, float v) {
    if (!n) return cudaSuccess;
    scale_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(x, n, v);
    return cudaGetLastError();
}

cudaError_t geglu(cudaStream_t s, const float *gate, const float *up, size_t n, const uint16_t *table, float *out) {
    if (!n) return cudaSuccess;
    geglu_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(gate, up, n, table, out);
    return cudaGetLastError();
}


// --- Gated DeltaNet

cudaError_t gdn_pointwise(cudaStream_t s, int mode, const float *a, const float *b, float *c, size_t n, size_t width) {
    if (!n) return cudaSuccess;
    gdn_pointwise_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(mode, a, b, c, n);
    (void)width;
    return cudaGetLastError();
}

cudaError_t delta_gates(cudaStream_t s, float *alpha, float *beta, const float *dt_bias, const float *a, int n,
                        int n_heads) {
    if (n <= 0 || n_heads <= 0) return cudaSuccess;
    const size_t total = size_t(n) * size_t(n_heads);
    delta_gates_kernel<<<blocks_for(total), kThreads, 0, s>>>(alpha, beta, dt_bias, a, n_heads, total);
    return cudaGetLastError();
}

cudaError_t l2norm(cudaStream_t s, float *x, int n, int rows, int dim, size_t stride, float eps) {
    if (n <= 0 || rows <= 0 || dim <= 0) return cudaSuccess;
    l2norm_kernel<<<dim3(unsigned(rows), unsigned(n)), kThreads, 0, s>>>(x, dim, stride, eps / float(dim),
                                                                        1.0f / std::sqrt(float(dim)));
    return cudaGetLastError();
}

cudaError_t ssm_conv(cudaStream_t s, const float *x, int n, int channels, int kernel, const float *w, float *state,
                     float *y) {
    if (n <= 0 || channels <= 0) return cudaSuccess;
    ssm_conv_kernel<<<blocks_for(size_t(channels)), kThreads, 0, s>>>(x, n, channels, kernel, w, state, y);
    return cudaGetLastError();
}

cudaError_t delta_net(cudaStream_t s, const DeltaNetParams &p) {
    if (p.n <= 0) return cudaSuccess;
    if (p.head_dim <= 0 || p.head_dim > 1024) return cudaErrorInvalidValue;
    delta_net_kernel<<<unsigned(p.n_v_heads), unsigned(p.head_dim), 2 * size_t(p.head_dim) * sizeof(float), s>>>(p);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kvfit
