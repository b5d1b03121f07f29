// The CPU backend: the reference implementation of the backend interface.
// Weights stay in the model's memory map (zero copy); ops run synchronously on
// the session's thread pool, so synchronize() has nothing to wait for.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/threadpool.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"

namespace kvfit {

namespace {

// out += w * fp16 row, the inner loop of attention's value sum.
void axpy_f16_scalar(int n, float w, const uint16_t *v, float *out) {
    for (int i = 0; i < n; i++) out[i] += w * fp16_to_fp32(v[i]);
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) void axpy_f16_avx2(int n, float w, const uint16_t *v, float *out) {
    __m256 wv = _mm256_set1_ps(w);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(v + i)));
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(wv, x, _mm256_loadu_ps(out + i)));
    }
    for (; i < n; i++) out[i] += w * fp16_to_fp32(v[i]);
}

using AxpyF16 = void (*)(int, float, const uint16_t *, float *);

#endif

AxpyF16 pick_axpy_f16() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        return axpy_f16_avx2;
#endif
    return axpy_f16_scalar;
}

class CpuStream final : public Stream {
public:
    CpuStream(int n_threads, int max_tokens, int64_t max_cols, int max_kv)
        : pool_(n_threads), k_(kernels_best()), axpy_(pick_axpy_f16()), max_kv_(max_kv) {
        size_t scratch = 0;
        for (uint32_t t : {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q8_0})
            scratch = std::max(scratch, matmul_scratch_bytes(t, max_cols, max_tokens));
        matmul_scratch_.resize(scratch);
        // Per thread: attention scores over the cache, an f16 copy of the query head, an f32 accumulator.
        per_thread_ = size_t(max_kv) + 1024;
        attn_scratch_.resize(per_thread_ * size_t(pool_.size()));
        rope_cs_.resize(1024);  // cos/sin pairs of one position; n_dims <= 512 is checked at load
    }
    ~CpuStream() override {
        for (void *p : allocs_) std::free(p);
    }

    void *alloc(size_t bytes) override {
        void *p = nullptr;
        if (posix_memalign(&p, 64, std::max<size_t>(bytes, 64)) != 0 || !p)
            fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes of CPU memory", bytes);
        allocs_.push_back(p);
        return p;
    }
    void upload(void *dst, const void *src, size_t bytes) override { std::memcpy(dst, src, bytes); }
    void download(void *dst, const void *src, size_t bytes) override { std::memcpy(dst, src, bytes); }
    void synchronize() override {}

    void get_rows(const Weight &table, const int32_t *ids, int n, float *x) override {
        for (int i = 0; i < n; i++)
            dequantize_row(table.type, static_cast<const uint8_t *>(table.data) + size_t(ids[i]) * table.row_bytes,
                           x + size_t(i) * size_t(table.n_cols), table.n_cols);
    }

    void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) override {
        const float *g = static_cast<const float *>(w.data);
        const int64_t d = w.n_cols;
        auto row = [&](int64_t t) {
            const float *xr = x + t * d;
            float *yr = y + t * d;
            double ss = 0;  // double accumulation, as ggml does
            for (int64_t i = 0; i < d; i++) ss += double(xr[i]) * double(xr[i]);
            const float scale = 1.0f / std::sqrt(float(ss / double(d)) + eps);
            for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * scale * g[i];
        };
        if (n == 1) {
            row(0);
            return;
        }
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(n, ith, nth, b, e);
            for (int64_t t = b; t < e; t++) row(t);
        });
    }

    void matmul(const Weight &w, const float *x, int n, float *y) override {
        kvfit::matmul(pool_, k_, w.type, w.data, w.row_bytes, w.n_rows, w.n_cols, x, n, y, w.n_rows,
                      matmul_scratch_.data());
    }

    void rope(float *x, int n, int n_head, int head_dim, const int32_t *pos, const RopeParams &p) override {
        const int half = p.n_dims / 2;
        // Angles advance by repeated multiplication in float, the way ggml computes them,
        // so positions far into the context round the same way.
        const float theta_scale = std::pow(p.freq_base, -2.0f / float(p.n_dims));
        float *cs = rope_cs_.data();
        for (int t = 0; t < n; t++) {
            float theta = float(pos[t]) * p.freq_scale;
            for (int i = 0; i < half; i++) {
                float th = p.freq_factors ? theta / p.freq_factors[i] : theta;
                cs[2 * i] = std::cos(th);
                cs[2 * i + 1] = std::sin(th);
                theta *= theta_scale;
            }
            for (int h = 0; h < n_head; h++) {
                float *v = x + (size_t(t) * n_head + h) * head_dim;
                for (int i = 0; i < half; i++) {
                    int a = p.mode == RopeMode::Norm ? 2 * i : i;
                    int b = p.mode == RopeMode::Norm ? 2 * i + 1 : i + half;
                    float x0 = v[a], x1 = v[b];
                    v[a] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
                    v[b] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
                }
            }
        }
    }

    void kv_store_f16(const float *k, const float *v, int n, size_t row_elems, uint16_t *k_cache, uint16_t *v_cache,
                      int row0) override {
        const size_t total = size_t(n) * row_elems;
        uint16_t *kd = k_cache + size_t(row0) * row_elems;
        uint16_t *vd = v_cache + size_t(row0) * row_elems;
        k_.quantize_row(TYPE_F16, k, kd, int64_t(total));
        k_.quantize_row(TYPE_F16, v, vd, int64_t(total));
    }

    void attention_f16(const float *q, const uint16_t *k_cache, const uint16_t *v_cache, const AttentionParams &p,
                       float *out) override {
        if (p.q_offset + p.n_q > max_kv_) fail(KVFIT_E_INTERNAL, "attention over more rows than reserved");
        const int hd = p.head_dim;
        const int group = p.n_head / p.n_head_kv;
        const int64_t tasks = int64_t(p.n_q) * p.n_head;
        pool_.run([&](int ith, int nth) {
            float *scores = attn_scratch_.data() + per_thread_ * size_t(ith);
            uint16_t qh[512];  // head_dim <= 512 is checked at model load
            int64_t b, e;
            split_range(tasks, ith, nth, b, e);
            for (int64_t task = b; task < e; task++) {
                const int i = int(task / p.n_head), h = int(task % p.n_head);
                const int kvh = h / group;
                const int n_vis = p.q_offset + i + 1;
                const float *qv = q + (size_t(i) * p.n_head + h) * hd;
                // K is F16, so the query is rounded to F16 for the dot product as ggml does.
                k_.quantize_row(TYPE_F16, qv, qh, hd);
                float mx = -INFINITY;
                for (int j = 0; j < n_vis; j++) {
                    const uint16_t *kr = k_cache + size_t(j) * p.kv_row_stride + size_t(kvh) * hd;
                    scores[j] = k_.vec_dot(TYPE_F16, hd, kr, qh) * p.scale;
                    mx = std::max(mx, scores[j]);
                }
                double sum = 0;
                for (int j = 0; j < n_vis; j++) {
                    scores[j] = std::exp(scores[j] - mx);
                    sum += scores[j];
                }
                const float inv = float(1.0 / sum);
                float *o = out + (size_t(i) * p.n_head + h) * hd;
                std::fill(o, o + hd, 0.0f);
                for (int j = 0; j < n_vis; j++)
                    axpy_(hd, scores[j] * inv, v_cache + size_t(j) * p.kv_row_stride + size_t(kvh) * hd, o);
            }
        });
    }

    void swiglu(const float *gate, const float *up, size_t n, float *out) override {
        for (size_t i = 0; i < n; i++) {
            const float g = gate[i];
            out[i] = g / (1.0f + std::exp(-g)) * up[i];
        }
    }

    void add(float *y, const float *x, size_t n) override {
        for (size_t i = 0; i < n; i++) y[i] += x[i];
    }

private:
    ThreadPool pool_;
    const KernelTable &k_;
    AxpyF16 axpy_;
    int max_kv_;
    std::vector<uint8_t> matmul_scratch_;
    size_t per_thread_ = 0;
    std::vector<float> attn_scratch_;
    std::vector<float> rope_cs_;
    std::vector<void *> allocs_;
};

class CpuBackend final : public Backend {
public:
    const char *name() const override { return "CPU"; }
    kvfit_backend_kind kind() const override { return KVFIT_BACKEND_CPU; }

    Weight upload_weight(const GGUFTensor &t) override {
        Weight w;
        w.data = t.data;
        w.type = t.type;
        w.n_cols = t.ne[0];
        w.n_rows = t.ne[1] * t.ne[2] * t.ne[3];
        w.row_bytes = row_bytes(t.type, t.ne[0]);
        return w;
    }

    const float *upload_floats(const float *data, size_t n) override {
        owned_.emplace_back(data, data + n);
        return owned_.back().data();
    }

    std::unique_ptr<Stream> create_stream(int n_threads, int max_tokens, int64_t max_cols, int max_kv) override {
        return std::make_unique<CpuStream>(n_threads, max_tokens, max_cols, max_kv);
    }

private:
    std::vector<std::vector<float>> owned_;
};

}  // namespace

std::unique_ptr<Backend> create_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace kvfit
