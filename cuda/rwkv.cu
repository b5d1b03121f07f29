// RWKV-7 kernels (the Stream ops of backend.h: norm_affine, token_shift_mix,
// activate, rwkv7_prepare, wkv7, rwkv7_bonus_gate). The float arithmetic
// follows the CPU reference (src/backend/cpu/rwkv_ops.cpp) operation for
// operation with the _rn intrinsics, so that nothing is contracted into an
// fma: token_shift_mix, wkv7, rwkv7_bonus_gate, the squared ReLU and
// norm_affine (its sums in double, in order; IEEE division and square root)
// give the CPU's bits. tanh and exp are CUDA's (within 2 ulp of the C
// library's), so tanh, the sigmoid and rwkv7_prepare differ in the last bits.
#include "common.cuh"

namespace kvfit {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) { return unsigned((n + kThreads - 1) / kThreads); }

__device__ __forceinline__ float sigmoid_rn(float x) { return __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-x))); }

// One block per (group, row); thread 0 walks the group (the CPU's order of
// double additions), then every thread writes its share.
__global__ void norm_affine_kernel(const float *x, const float *w, const float *b, float eps, int d, int gs, float *y) {
    const int grp = blockIdx.x, row = blockIdx.y;
    const float *xg = x + size_t(row) * size_t(d) + size_t(grp) * size_t(gs);
    float *yg = y + size_t(row) * size_t(d) + size_t(grp) * size_t(gs);
    __shared__ float mean_, scale_;
    if (threadIdx.x == 0) {
        double sum = 0;
        for (int i = 0; i < gs; i++) sum = __dadd_rn(sum, double(xg[i]));
        const float mean = float(__ddiv_rn(sum, double(gs)));
        double var = 0;
        for (int i = 0; i < gs; i++) {
            const float c = __fsub_rn(xg[i], mean);
            var = __dadd_rn(var, double(__fmul_rn(c, c)));
        }
        mean_ = mean;
        scale_ = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(float(__ddiv_rn(var, double(gs))), eps)));
    }
    __syncthreads();
    const float mean = mean_, scale = scale_;
    const int c0 = grp * gs;
    for (int i = threadIdx.x; i < gs; i += blockDim.x)
        yg[i] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xg[i], mean), scale), w[c0 + i]), b[c0 + i]);
}

__global__ void token_shift_kernel(const float *x, const float *state, const float *mix, int n, int d, size_t total,
                                   float *out) {
    const size_t nd = size_t(n) * size_t(d);
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const size_t j = e / nd, r = e % nd, t = r / size_t(d), i = r % size_t(d);
        const float xt = x[r];
        const float prev = t == 0 ? state[i] : x[r - size_t(d)];
        out[e] = __fadd_rn(__fmul_rn(__fsub_rn(prev, xt), mix[j * size_t(d) + i]), xt);
    }
}

__global__ void activate_kernel(int f, float *x, size_t n) {
    for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        const float v = x[i];
        if (f == 0) {
            x[i] = tanhf(v);
        } else if (f == 1) {
            x[i] = sigmoid_rn(v);
        } else {
            const float r = v > 0.0f ? v : 0.0f;
            x[i] = __fmul_rn(r, r);
        }
    }
}

__global__ void rwkv7_decay_kernel(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                                   const float *vmix, const float *v0, int d, size_t total, float decay) {
    for (size_t e = size_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += size_t(gridDim.x) * blockDim.x) {
        const size_t c = e % size_t(d);
        w[e] = expf(__fmul_rn(decay, sigmoid_rn(__fadd_rn(w[e], w0[c]))));
        a[e] = sigmoid_rn(__fadd_rn(a[e], a0[c]));
        if (vmix) {
            const float gate = sigmoid_rn(__fadd_rn(vmix[e], v0[c]));
            const float vi = v[e];
            v[e] = __fadd_rn(vi, __fmul_rn(__fsub_rn(v_first[e], vi), gate));
        }
    }
}

// One block per (head, token), after rwkv7_decay_kernel made a the rate.
__global__ void rwkv7_kk_kernel(float *k, const float *k_k, const float *k_a, const float *a, float *a_out, float *b_out,
                                int n_head, int head_size) {
    const int h = blockIdx.x, tok = blockIdx.y;
    const size_t c0 = size_t(h) * size_t(head_size), o = size_t(tok) * size_t(n_head) * size_t(head_size) + c0;
    __shared__ float scale_;
    if (threadIdx.x == 0) {
        double ss = 0;
        for (int i = 0; i < head_size; i++) {
            const float kk = __fmul_rn(k[o + i], k_k[c0 + i]);
            ss = __dadd_rn(ss, double(__fmul_rn(kk, kk)));
        }
        scale_ = __fdiv_rn(1.0f, fmaxf(__fsqrt_rn(float(ss)), 1e-12f));
    }
    __syncthreads();
    const float scale = scale_;
    for (int i = threadIdx.x; i < head_size; i += blockDim.x) {
        const float ki = k[o + i], an = a[o + i];
        const float kk = __fmul_rn(__fmul_rn(ki, k_k[c0 + i]), scale);
        a_out[o + i] = -kk;
        b_out[o + i] = __fmul_rn(kk, an);
        const float ka = __fmul_rn(ki, k_a[c0 + i]);
        k[o + i] = __fadd_rn(ki, __fsub_rn(__fmul_rn(an, ka), ka));
    }
}

__device__ __forceinline__ float reduce8(const float *l) {
    return __fadd_rn(__fadd_rn(__fadd_rn(l[0], l[1]), __fadd_rn(l[2], l[3])),
                     __fadd_rn(__fadd_rn(l[4], l[5]), __fadd_rn(l[6], l[7])));
}

// One thread per state row (head h, value channel i); its sums in the CPU's
// 8 lanes (element j in lane j mod 8) and fixed reduction tree.
__global__ void wkv7_kernel(const float *r, const float *w, const float *k, const float *v, const float *a,
                            const float *b, int n, int n_head, int N, float *state, float *out) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n_head * N) return;
    const int h = row / N, i = row % N;
    const size_t d = size_t(n_head) * size_t(N);
    float *S = state + size_t(row) * size_t(N);
    for (int t = 0; t < n; t++) {
        const size_t vb = size_t(t) * d + size_t(h) * size_t(N);
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < N; j++) lanes[j % 8] = __fadd_rn(lanes[j % 8], __fmul_rn(a[vb + j], S[j]));
        const float sa = reduce8(lanes);
        const float vi = v[vb + i];
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int j = 0; j < N; j++) {
            const float s = __fadd_rn(__fadd_rn(__fmul_rn(S[j], w[vb + j]), __fmul_rn(vi, k[vb + j])),
                                      __fmul_rn(sa, b[vb + j]));
            S[j] = s;
            acc[j % 8] = __fadd_rn(acc[j % 8], __fmul_rn(s, r[vb + j]));
        }
        out[vb + i] = reduce8(acc);
    }
}

// One block per (head, token); the head's sum in float, in order (thread 0).
__global__ void rwkv7_bonus_kernel(float *y, const float *r, const float *k, const float *v, const float *r_k,
                                   const float *g, int n_head, int head_size) {
    const int h = blockIdx.x, tok = blockIdx.y;
    const size_t c0 = size_t(h) * size_t(head_size), o = size_t(tok) * size_t(n_head) * size_t(head_size) + c0;
    __shared__ float sum_;
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < head_size; i++) s = __fadd_rn(s, __fmul_rn(__fmul_rn(r[o + i], k[o + i]), r_k[c0 + i]));
        sum_ = s;
    }
    __syncthreads();
    const float s = sum_;
    for (int i = threadIdx.x; i < head_size; i += blockDim.x)
        y[o + i] = __fmul_rn(__fadd_rn(y[o + i], __fmul_rn(v[o + i], s)), g[o + i]);
}

}  // namespace

cudaError_t norm_affine(cudaStream_t s, const float *x, const float *w, const float *b, float eps, int n, int d,
                        int groups, float *y) {
    if (n <= 0) return cudaSuccess;
    if (groups <= 0 || d % groups || n > 65535) return cudaErrorInvalidValue;
    norm_affine_kernel<<<dim3(unsigned(groups), unsigned(n)), 64, 0, s>>>(x, w, b, eps, d, d / groups, y);
    return cudaGetLastError();
}

cudaError_t token_shift_mix(cudaStream_t s, const float *x, float *state, const float *mix, int n_mix, int n, int d,
                            float *out) {
    if (n <= 0) return cudaSuccess;
    const size_t nd = size_t(n) * size_t(d), total = size_t(n_mix) * nd;
    token_shift_kernel<<<std::min(blocks_for(total), 65535u), kThreads, 0, s>>>(x, state, mix, n, d, total, out);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    // in stream order, after the kernel's reads of the state
    return cudaMemcpyAsync(state, x + nd - size_t(d), size_t(d) * 4, cudaMemcpyDeviceToDevice, s);
}

cudaError_t activate(cudaStream_t s, int f, float *x, size_t n) {
    if (!n) return cudaSuccess;
    activate_kernel<<<std::min(blocks_for(n), 65535u), kThreads, 0, s>>>(f, x, n);
    return cudaGetLastError();
}

cudaError_t rwkv7_prepare(cudaStream_t s, float *w, const float *w0, float *a, const float *a0, float *v,
                          const float *v_first, const float *vmix, const float *v0, float *k, const float *k_k,
                          const float *k_a, int n, int n_head, int head_size, float decay, float *a_out,
                          float *b_out) {
    if (n <= 0) return cudaSuccess;
    if (n > 65535) return cudaErrorInvalidValue;
    const int d = n_head * head_size;
    const size_t total = size_t(n) * size_t(d);
    rwkv7_decay_kernel<<<std::min(blocks_for(total), 65535u), kThreads, 0, s>>>(w, w0, a, a0, v, v_first, vmix, v0, d,
                                                                                total, decay);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    rwkv7_kk_kernel<<<dim3(unsigned(n_head), unsigned(n)), 64, 0, s>>>(k, k_k, k_a, a, a_out, b_out, n_head, head_size);
    return cudaGetLastError();
}

cudaError_t wkv7(cudaStream_t s, const float *r, const float *w, const float *k, const float *v, const float *a,
                 const float *b, int n, int n_head, int head_size, float *state, float *out) {
    if (n <= 0) return cudaSuccess;
    const int rows = n_head * head_size;
    wkv7_kernel<<<unsigned((rows + 63) / 64), 64, 0, s>>>(r, w, k, v, a, b, n, n_head, head_size, state, out);
    return cudaGetLastError();
}

cudaError_t rwkv7_bonus_gate(cudaStream_t s, float *y, const float *r, const float *k, const float *v,
                             const float *r_k, const float *g, int n, int n_head, int head_size) {
    if (n <= 0) return cudaSuccess;
    if (n > 65535) return cudaErrorInvalidValue;
    rwkv7_bonus_kernel<<<dim3(unsigned(n_head), unsigned(n)), 64, 0, s>>>(y, r, k, v, r_k, g, n_head, head_size);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kvfit
