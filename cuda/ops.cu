// Element-wise and row-wise ops: embedding lookup, RMSNorm, SwiGLU, GEGLU, add,
// scale.
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

}  // namespace cuda
}  // namespace kvfit
