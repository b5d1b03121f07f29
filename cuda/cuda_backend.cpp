// The CUDA backend: weights uploaded once per model and device, one CUDA
// stream per session, kernels in cuda/*.cu. Every CUDA call is checked and a
// failure becomes a kvfit::Error (KVFIT_E_BACKEND, KVFIT_E_NOMEM for memory,
// KVFIT_E_BACKEND_UNAVAILABLE without a usable device); nothing aborts. The
// runtime is linked statically and loads the driver at the first call, so a
// machine without one simply has no CUDA devices.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/ggml_order.h"
#include "alloc_hook.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "kernels.h"
#include "kv/codec.h"

namespace kvfit {

namespace {

static_assert(cuda::kGroup == KV_GROUP && cuda::kGroup == QK && cuda::kChannelBlock == KV_CHANNEL_BLOCK,
              "kernel constants");
static_assert(cuda::kF32 == TYPE_F32 && cuda::kF16 == TYPE_F16 && cuda::kQ4_0 == TYPE_Q4_0 &&
                  cuda::kQ4_1 == TYPE_Q4_1 && cuda::kQ8_0 == TYPE_Q8_0 && cuda::kBF16 == TYPE_BF16 &&
                  cuda::kQ5_0 == TYPE_Q5_0 && cuda::kQ5_1 == TYPE_Q5_1 && cuda::kQ4_K == TYPE_Q4_K &&
                  cuda::kQ5_K == TYPE_Q5_K && cuda::kQ6_K == TYPE_Q6_K && cuda::kSuper == QK_K,
              "type ids");
static_assert(cuda::kCodecF16 == int(KVCodec::F16) && cuda::kCodecQ8 == int(KVCodec::Q8) &&
                  cuda::kCodecQ4 == int(KVCodec::Q4),
              "codec ids");

[[noreturn]] void cuda_fail(cudaError_t e, const char *what) {
    cudaGetLastError();  // clear it unless sticky, so the next call reports its own status
    fail(e == cudaErrorMemoryAllocation ? KVFIT_E_NOMEM : KVFIT_E_BACKEND, "CUDA %s failed: %s (%s)", what,
         cudaGetErrorName(e), cudaGetErrorString(e));
}

inline void check(cudaError_t e, const char *what) {
    if (e != cudaSuccess) cuda_fail(e, what);
}

void use_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

// Number of devices, or 0 with the reason in *why (no driver, no device).
int device_count(std::string *why) {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = strfmt("%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
        return 0;
    }
    if (n == 0 && why) *why = "no CUDA device found";
    return n;
}

bool weight_type_ok(uint32_t t) {
    return t == TYPE_F32 || t == TYPE_F16 || t == TYPE_BF16 || t == TYPE_Q4_0 || t == TYPE_Q4_1 || t == TYPE_Q8_0 ||
           t == TYPE_Q5_0 || t == TYPE_Q5_1 || t == TYPE_Q4_K || t == TYPE_Q5_K || t == TYPE_Q6_K;
}

// The CPU's GELU table (cpu::gelu_f16_table) in device memory, copied at its
// first use and shared by a backend's streams.
class GeluTable {
public:
    explicit GeluTable(int device) : device_(device) {}
    ~GeluTable() {
        if (table_ && cudaSetDevice(device_) == cudaSuccess) cudaFree(table_);
        cudaGetLastError();
    }
    const uint16_t *get() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (table_) return table_;
        constexpr size_t bytes = size_t(1) << 17;
        use_device(device_);
        void *p = nullptr;
        check_alloc(bytes, "CUDA device memory");
        const cudaError_t e = cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(KVFIT_E_NOMEM, "cannot allocate the GELU table in CUDA device memory: %s", cudaGetErrorString(e));
        }
        const cudaError_t c = cudaMemcpy(p, cpu::gelu_f16_table(), bytes, cudaMemcpyHostToDevice);
        if (c != cudaSuccess) {
            cudaFree(p);
            cuda_fail(c, "GELU table upload");
        }
        table_ = static_cast<uint16_t *>(p);
        return table_;
    }

private:
    int device_;
    std::mutex mutex_;
    uint16_t *table_ = nullptr;
};

class CudaStream final : public Stream {
public:
    const char *backend_name() const override { return "CUDA"; }
    CudaStream(int device, int n_sm, int max_tokens, int64_t max_cols, GeluTable &gelu)
        : device_(device), n_sm_(n_sm), max_tokens_(max_tokens), max_cols_(max_cols), gelu_(gelu) {
        use_device(device_);
        check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate");
        try {
            mm_ = cuda::matmul_scratch(alloc(cuda::matmul_scratch_bytes(max_cols, max_tokens)), max_cols, max_tokens);
        } catch (...) {
            release();
            throw;
        }
    }
    ~CudaStream() override { release(); }

    void *alloc(size_t bytes) override {
        use_device(device_);
        void *p = nullptr;
        const size_t size = std::max<size_t>(bytes, 256);
        allocs_.reserve(allocs_.size() + 1);  // so that push_back cannot fail and lose p
        check_alloc(size, "CUDA device memory");
        const cudaError_t e = cudaMalloc(&p, size);
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes of CUDA device memory: %s", bytes, cudaGetErrorString(e));
        }
        allocs_.push_back(p);
        allocated_ += size;
        return p;
    }
    uint64_t allocated_bytes() const override { return allocated_; }
    // Pageable sources are staged by the runtime before cudaMemcpyAsync
    // returns, so the caller may reuse src at once, as the interface promises.
    void upload(void *dst, const void *src, size_t bytes) override {
        if (!bytes) return;
        use_device(device_);
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s_), "upload");
    }
    void download(void *dst, const void *src, size_t bytes) override {
        if (!bytes) return;
        use_device(device_);
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s_), "download");
    }
    void synchronize() override {
        use_device(device_);
        check(cudaStreamSynchronize(s_), "kernel execution");
    }

    void get_rows(const Weight &table, const int32_t *ids, int n, float *x) override {
        use_device(device_);
        check(cuda::get_rows(s_, table.type, table.data, table.row_bytes, table.n_cols, ids, n, x), "get_rows");
    }

    void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) override {
        if (w.type != TYPE_F32) fail(KVFIT_E_UNSUPPORTED, "CUDA rmsnorm: norm weights must be F32");
        use_device(device_);
        check(cuda::rmsnorm(s_, x, static_cast<const float *>(w.data), w.n_cols, eps, n, y), "rmsnorm");
    }

    void matmul(const Weight &w, const float *x, int n, float *y) override {
        if (n > max_tokens_ || w.n_cols > max_cols_)
            fail(KVFIT_E_INTERNAL, "CUDA matmul of %d x %lld is larger than the stream's %d x %lld", n,
                 (long long)w.n_cols, max_tokens_, (long long)max_cols_);
        use_device(device_);
        check(cuda::matmul(s_, w.type, w.data, w.row_bytes, w.n_rows, w.n_cols, x, n, y, mm_), "matmul");
    }

    void kv_encode(int codec, bool hadamard, float *x, int n, int n_heads, int head_dim, uint8_t *dst) override {
        use_device(device_);
        check(cuda::kv_encode(s_, codec, hadamard, x, n * n_heads, head_dim, dst), "kv_encode");
    }

    void kv_encode_channels(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) override {
        use_device(device_);
        check(cuda::kv_encode_channels(s_, rows, n_heads, head_dim, dst), "kv_encode_channels");
    }

    void cache_attention(const CacheAttention &a, const float *q, float *out) override {
        cuda::AttnParams p;
        p.n_q = a.n_q;
        p.n_head = a.n_head;
        p.n_head_kv = a.n_head_kv;
        p.head_dim = a.head_dim;
        p.pos0 = a.pos0;
        p.n_sink = a.n_sink;
        p.n_window = a.n_window;
        p.streaming = a.streaming;
        p.codec = a.codec;
        p.hadamard = a.hadamard;
        p.channel_keys = a.channel_keys;
        p.row_bytes = a.row_bytes;
        p.head_bytes = a.head_bytes;
        p.k_block_bytes = a.k_block_bytes;
        p.k = a.k;
        p.v = a.v;
        p.k_new = a.k_new;
        p.v_new = a.v_new;
        p.k_sink = a.k_sink;
        p.k_res = a.k_res;
        p.rope_cs = a.rope_cs;
        p.rope_dims = a.rope.n_dims;
        p.rope_neox = a.rope.mode == RopeMode::Neox;
        p.scale = a.scale;
        const int splits = cuda::attention_splits(p, n_sm_);
        use_device(device_);
        float *partials = partials_for(cuda::attention_scratch_floats(p, splits));
        const cudaError_t e = cuda::attention(s_, p, splits, q, partials, out);
        if (e == cudaErrorInvalidValue)
            fail(KVFIT_E_UNSUPPORTED, "CUDA attention: %d heads over %d KV heads of %d values are not supported",
                 a.n_head, a.n_head_kv, a.head_dim);
        check(e, "attention");
    }

    void copy(void *dst, const void *src, size_t bytes) override {
        if (!bytes || dst == src) return;
        const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
        if (d < s + bytes && s < d + bytes) fail(KVFIT_E_INTERNAL, "CUDA copy between overlapping ranges");
        use_device(device_);
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s_), "copy");
    }

    void swiglu(const float *gate, const float *up, size_t n, float *out) override {
        use_device(device_);
        check(cuda::swiglu(s_, gate, up, n, out), "swiglu");
    }

    void add(float *y, const float *x, size_t n) override {
        use_device(device_);
        check(cuda::add(s_, y, x, n), "add");
    }

    void scale(float *x, size_t n, float v) override {
        use_device(device_);
        check(cuda::scale(s_, x, n, v), "scale");
    }

    void geglu(const float *gate, const float *up, size_t n, float *out) override {
        if (!n) return;
        const uint16_t *table = gelu_.get();
        use_device(device_);
        check(cuda::geglu(s_, gate, up, n, table, out), "geglu");
    }

    // ---- RWKV-7 (cuda/rwkv.cu)
    void norm_affine(const float *x, const float *w, const float *b, float eps, int n, int d, int groups,
                     float *y) override {
        if (groups <= 0 || d % groups) fail(KVFIT_E_INTERNAL, "norm_affine: %d groups in rows of %d", groups, d);
        use_device(device_);
        check(cuda::norm_affine(s_, x, w, b, eps, n, d, groups, y), "norm_affine");
    }
    void token_shift_mix(const float *x, float *state, const float *mix, int n_mix, int n, int d, float *out) override {
        use_device(device_);
        check(cuda::token_shift_mix(s_, x, state, mix, n_mix, n, d, out), "token_shift_mix");
    }
    void activate(Activation f, float *x, size_t n) override {
        use_device(device_);
        const int code = f == Activation::Tanh ? 0 : f == Activation::Sigmoid ? 1 : 2;
        check(cuda::activate(s_, code, x, n), "activate");
    }
    void rwkv7_prepare(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                       const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a, int n,
                       int n_head, int head_size, float *a_out, float *b_out) override {
        use_device(device_);
        check(cuda::rwkv7_prepare(s_, w, w0, a, a0, v, v_first, vmix, v0, k, k_k, k_a, n, n_head, head_size,
                                  -std::exp(-0.5f), a_out, b_out),
              "rwkv7_prepare");
    }
    void wkv7(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b, int n,
              int n_head, int head_size, float *state, float *out) override {
        use_device(device_);
        check(cuda::wkv7(s_, r, w, k, v, a, b, n, n_head, head_size, state, out), "wkv7");
    }
    void rwkv7_bonus_gate(float *y, const float *r, const float *k, const float *v, const float *r_k, const float *g,
                          int n, int n_head, int head_size) override {
        use_device(device_);
        check(cuda::rwkv7_bonus_gate(s_, y, r, k, v, r_k, g, n, n_head, head_size), "rwkv7_bonus_gate");
    }

    // --- Gated DeltaNet (qwen35). delta_net_chunked runs the recurrent
    // kernel (one thread per state row already carries the batch; the
    // chunked form would pay with tensor-core products for long prompts).
    void ssm_conv(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y) override {
        if (n <= 0 || channels <= 0 || kernel < 1) fail(KVFIT_E_INTERNAL, "ssm_conv of %d x %d, kernel %d", n, channels, kernel);
        use_device(device_);
        check(cuda::ssm_conv(s_, x, n, channels, kernel, w, state, y), "ssm_conv");
    }

    void silu(const float *x, size_t n, float *y) override {
        use_device(device_);
        check(cuda::gdn_pointwise(s_, 0, x, x, y, n, n), "silu");
    }

    void sigmoid_mul(float *x, const float *gate, size_t n) override {
        use_device(device_);
        check(cuda::gdn_pointwise(s_, 1, x, gate, x, n, n), "sigmoid_mul");
    }

    void delta_gates(float *alpha, float *beta, const float *dt_bias, const float *a, int n, int n_heads) override {
        use_device(device_);
        check(cuda::delta_gates(s_, alpha, beta, dt_bias, a, n, n_heads), "delta_gates");
    }

    void l2norm(float *x, int n, int rows, int dim, size_t stride, float eps) override {
        use_device(device_);
        check(cuda::l2norm(s_, x, n, rows, dim, stride, eps), "l2norm");
    }

    void gated_rmsnorm(const float *x, const Weight &w, const float *z, float eps, int rows, float *y) override {
        if (rows <= 0) return;
        rmsnorm(x, w, eps, rows, y);
        check(cuda::gdn_pointwise(s_, 2, y, z, y, size_t(rows) * size_t(w.n_cols), size_t(w.n_cols)), "gated_rmsnorm");
    }

    void delta_net(const DeltaNetArgs &a) override {
        if (a.n <= 0 || a.n_k_heads <= 0 || a.n_v_heads <= 0 || a.head_dim <= 0 || !a.q || !a.k || !a.v || !a.g ||
            !a.beta || !a.state || !a.out)
            fail(KVFIT_E_INTERNAL, "delta_net: incomplete arguments");
        if (a.head_dim > 1024) fail(KVFIT_E_UNSUPPORTED, "the CUDA backend does not support delta-rule heads of %d values", a.head_dim);
        const cuda::DeltaNetParams p{a.n, a.n_k_heads, a.n_v_heads, a.head_dim, a.q, a.k, a.v, a.qk_stride,
                                     a.v_stride, a.g, a.beta, a.state, a.out, a.scale};
        use_device(device_);
        check(cuda::delta_net(s_, p), "delta_net");
    }

    void delta_net_chunked(const DeltaNetArgs &a, int chunk) override {
        if (chunk < 1 || chunk > 1024) fail(KVFIT_E_INTERNAL, "delta_net chunk of %d", chunk);
        delta_net(a);
    }

    void copy_2d(void *dst, size_t dst_stride, const void *src, size_t src_stride, size_t rows, size_t width) override {
        if (!rows || !width) return;
        use_device(device_);
        check(cudaMemcpy2DAsync(dst, dst_stride, src, src_stride, width, rows, cudaMemcpyDeviceToDevice, s_), "copy_2d");
    }

private:
    // The attention's partial sums: sized on first use (the shapes of a
    // session never change, so this allocates once).
    float *partials_for(size_t floats) {
        if (floats <= partials_floats_) return partials_;
        if (partials_) {
            check(cudaStreamSynchronize(s_), "kernel execution");
            check(cudaFree(partials_), "cudaFree");
            partials_ = nullptr;
            partials_floats_ = 0;
        }
        void *p = nullptr;
        check_alloc(floats * sizeof(float), "CUDA device memory");
        const cudaError_t e = cudaMalloc(&p, floats * sizeof(float));
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes of CUDA device memory for attention: %s",
                 floats * sizeof(float), cudaGetErrorString(e));
        }
        partials_ = static_cast<float *>(p);
        partials_floats_ = floats;
        return partials_;
    }

    // Frees everything; errors are ignored (a failed context frees nothing more).
    void release() {
        if (cudaSetDevice(device_) != cudaSuccess) return;
        if (s_) cudaStreamSynchronize(s_);
        for (void *p : allocs_) cudaFree(p);
        allocs_.clear();
        if (partials_) cudaFree(partials_);
        partials_ = nullptr;
        if (s_) cudaStreamDestroy(s_);
        s_ = nullptr;
        cudaGetLastError();
    }

    int device_;
    int n_sm_;
    int max_tokens_;
    int64_t max_cols_;
    GeluTable &gelu_;
    cudaStream_t s_ = nullptr;
    std::vector<void *> allocs_;
    uint64_t allocated_ = 0;  // what alloc() obtained
    cuda::MatmulScratch mm_;
    float *partials_ = nullptr;
    size_t partials_floats_ = 0;
};

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device), gelu_(device) {
        use_device(device_);
        cudaDeviceProp prop;
        check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
        n_sm_ = prop.multiProcessorCount;
        name_ = strfmt("CUDA (%s, compute %d.%d)", prop.name, prop.major, prop.minor);
        // The Hadamard signs as the CPU codec defines them: the inverse rotation
        // of e0 is diag(signs) * H * e0 = the scaled signs, H's first column being ones.
        static float signs[cuda::kMaxHadamardLog + 1][1 << cuda::kMaxHadamardLog];
        static const bool filled = [] {
            for (int k = 0; k <= cuda::kMaxHadamardLog; k++) {
                std::vector<float> e(size_t(1) << k, 0.0f);
                e[0] = 1.0f;
                hadamard_rotate_inv(e.data(), 1 << k);
                std::copy(e.begin(), e.end(), signs[k]);
            }
            return true;
        }();
        (void)filled;
        const cudaError_t e = cuda::set_hadamard_signs(signs);
        if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction ||
            e == cudaErrorUnsupportedPtxVersion || e == cudaErrorInvalidSymbol) {
            cudaGetLastError();
            fail(KVFIT_E_BACKEND_UNAVAILABLE, "this build has no CUDA kernels for %s (compute %d.%d): %s", prop.name,
                 prop.major, prop.minor, cudaGetErrorString(e));
        }
        check(e, "loading the kernels");
    }

    ~CudaBackend() override {
        if (cudaSetDevice(device_) != cudaSuccess) return;
        for (void *p : weights_) cudaFree(p);
        for (void *p : host_) cudaFreeHost(p);
        cudaGetLastError();
    }

    const char *name() const override { return name_.c_str(); }
    kvfit_backend_kind kind() const override { return KVFIT_BACKEND_CUDA; }

    Weight upload_weight(const GGUFTensor &t) override {
        if (!weight_type_ok(t.type)) {
            const TypeInfo *ti = type_info(t.type);
            fail(KVFIT_E_UNSUPPORTED, "%s: the CUDA backend cannot compute with %s weights", t.name.c_str(),
                 ti ? ti->name : "unknown");
        }
        Weight w;
        w.type = t.type;
        w.n_cols = t.ne[0];
        w.n_rows = t.ne[1] * t.ne[2] * t.ne[3];
        const int block = type_info(t.type)->block_size;
        if (w.n_cols % block)
            fail(KVFIT_E_FORMAT, "tensor '%s' has rows of %lld values, not a multiple of %d", t.name.c_str(),
                 (long long)w.n_cols, block);
        w.row_bytes = row_bytes(t.type, t.ne[0]);
        const size_t bytes = w.row_bytes * size_t(w.n_rows);
        if (bytes > t.nbytes) fail(KVFIT_E_FORMAT, "%s: tensor data is shorter than its shape", t.name.c_str());
        use_device(device_);
        weights_.reserve(weights_.size() + 1);
        void *p = nullptr;
        check_alloc(std::max<size_t>(bytes, 256), "CUDA device memory");
        const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 256));
        if (e != cudaSuccess) {
            cudaGetLastError();
            fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes of CUDA device memory for %s: %s", bytes, t.name.c_str(),
                 cudaGetErrorString(e));
        }
        weights_.push_back(p);
        check(cudaMemcpy(p, t.data, bytes, cudaMemcpyHostToDevice), "weight upload");
        w.data = p;
        return w;
    }

    // Pinned host memory mapped into the device's address space: the arrays are
    // tiny (RoPE factors) and read both by kernels and by host code that builds
    // tables from them, and with unified addressing one pointer serves both.
    const float *upload_floats(const float *data, size_t n) override {
        use_device(device_);
        void *p = nullptr;
        check_alloc(std::max<size_t>(n, 1) * sizeof(float), "pinned host memory");
        host_.reserve(host_.size() + 1);
        check(cudaHostAlloc(&p, std::max<size_t>(n, 1) * sizeof(float), cudaHostAllocMapped | cudaHostAllocPortable),
              "cudaHostAlloc");
        host_.push_back(p);
        std::memcpy(p, data, n * sizeof(float));
        void *dp = nullptr;
        check(cudaHostGetDevicePointer(&dp, p, 0), "cudaHostGetDevicePointer");
        if (dp != p) fail(KVFIT_E_BACKEND, "CUDA: this platform has no unified addressing");
        return static_cast<const float *>(p);
    }

    std::unique_ptr<Stream> create_stream(int n_threads, int max_tokens, int64_t max_cols, int max_kv) override {
        return std::make_unique<CudaStream>(device_, n_sm_, max_tokens, max_cols, gelu_);
    }

private:
    int device_;
    int n_sm_ = 1;
    GeluTable gelu_;
    std::string name_;
    std::vector<void *> weights_;
    std::vector<void *> host_;
};

}  // namespace

std::vector<DeviceDesc> cuda_devices() {
    std::vector<DeviceDesc> out;
    const int n = device_count(nullptr);
    for (int i = 0; i < n; i++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
            cudaGetLastError();
            continue;
        }
        DeviceDesc d;
        d.backend = KVFIT_BACKEND_CUDA;
        d.index = i;
        d.type = prop.integrated ? KVFIT_DEVICE_INTEGRATED_GPU : KVFIT_DEVICE_DISCRETE_GPU;
        d.name = prop.name;
        d.memory = prop.totalGlobalMem;
        out.push_back(std::move(d));
    }
    return out;
}

std::unique_ptr<Backend> create_cuda_backend(int device) {
    std::string why;
    const int n = device_count(&why);
    if (n == 0) fail(KVFIT_E_BACKEND_UNAVAILABLE, "the CUDA backend has no device: %s", why.c_str());
    if (device >= n) fail(KVFIT_E_BACKEND_UNAVAILABLE, "CUDA device %d does not exist (%d devices)", device, n);
    return std::make_unique<CudaBackend>(device < 0 ? 0 : device);
}

}  // namespace kvfit
