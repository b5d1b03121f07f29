// The CUDA backend op by op against the CPU backend (the reference) on random
// inputs: matmul for every weight type in decode and batch shapes (Q5_0,
// Q5_1 and the k-quants included), get_rows,
// RMSNorm, SwiGLU, add, KV encoding in every codec (with and without
// the Hadamard rotation, and per-channel key blocks), and attention over the
// sink + window cache in every layout, driven through SessionMemory so that window
// wrap-around, the residual key block and long windows (split over blocks)
// are all reached, and over a layer with the model's own sliding window; scale
// and GEGLU bit for bit; the RWKV-7 ops (norm_affine, token_shift_mix,
// activate, rwkv7_prepare, wkv7, rwkv7_bonus_gate) and the Gated DeltaNet ops (silu, sigmoid_mul,
// gated_rmsnorm, l2norm, delta_gates, ssm_conv, copy_2d, delta_net and its
// chunked entry) within stated bounds. Exits 77 (ctest's skip) when the CUDA backend is not
// built or has no device.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "kv/codec.h"
#include "kv/memory.h"
#include "testutil.h"

// cmocka.h last: its fail() macro would rewrite kvfit::fail.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
extern "C" {
#include <cmocka.h>
}

using namespace kvfit;

namespace {

// Both made by main before the cases run; without a CUDA device main exits 77.
std::unique_ptr<Backend> g_cpu, g_gpu;

int teardown(void **) {
    g_gpu.reset();
    g_cpu.reset();
    return 0;
}

std::vector<float> randn(size_t n, std::mt19937 &rng, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v) x = d(rng);
    return v;
}

// A weight of `type` from floats, in GGUF bytes, and views of it on both backends.
struct TestWeight {
    std::vector<uint8_t> bytes;
    GGUFTensor t;
    Weight cpu, gpu;
};

std::unique_ptr<TestWeight> make_weight(uint32_t type, const std::vector<float> &x, int64_t cols, int64_t rows) {
    auto w = std::make_unique<TestWeight>();
    const size_t rb = row_bytes(type, cols);
    w->bytes.resize(rb * size_t(rows));
    for (int64_t r = 0; r < rows; r++) {
        const float *src = x.data() + r * cols;
        uint8_t *dst = w->bytes.data() + size_t(r) * rb;
        switch (type) {
            case TYPE_F32: std::memcpy(dst, src, size_t(cols) * 4); break;
            case TYPE_F16:
            case TYPE_BF16:
                for (int64_t i = 0; i < cols; i++) {
                    const uint16_t h = type == TYPE_F16 ? fp32_to_fp16(src[i]) : fp32_to_bf16(src[i]);
                    std::memcpy(dst + 2 * i, &h, 2);
                }
                break;
            case TYPE_Q4_0: quantize_row_q4_0_ref(src, reinterpret_cast<BlockQ4_0 *>(dst), cols); break;
            case TYPE_Q4_1: quantize_row_q4_1_ref(src, reinterpret_cast<BlockQ4_1 *>(dst), cols); break;
            case TYPE_Q8_0: quantize_row_q8_0_ref(src, reinterpret_cast<BlockQ8_0 *>(dst), cols); break;
            case TYPE_Q5_0: quantize_row_q5_0_ref(src, reinterpret_cast<BlockQ5_0 *>(dst), cols); break;
            case TYPE_Q5_1: quantize_row_q5_1_ref(src, reinterpret_cast<BlockQ5_1 *>(dst), cols); break;
            case TYPE_Q4_K:
            case TYPE_Q5_K:
            case TYPE_Q6_K: {
                // no k-quant quantizer here: random super-blocks (any bytes make a
                // valid block), the fp16 factors set so weights are a few hundredths
                std::mt19937 rng(uint32_t(r) * 31u + type);
                std::uniform_real_distribution<float> f(0.5f, 1.5f);
                const size_t bs = type_info(type)->block_bytes;
                for (int64_t b = 0; b < cols / QK_K; b++) {
                    uint8_t *blk = dst + size_t(b) * bs;
                    for (size_t i = 0; i < bs; i++) blk[i] = uint8_t(rng() >> 24);
                    const uint16_t d = fp32_to_fp16(f(rng) * (type == TYPE_Q6_K ? 1.5e-5f : type == TYPE_Q4_K ? 1.2e-4f : 6e-5f));
                    const uint16_t m = fp32_to_fp16(f(rng) * 7e-4f);
                    if (type == TYPE_Q6_K) {
                        std::memcpy(blk + offsetof(BlockQ6_K, d), &d, 2);
                    } else {
                        std::memcpy(blk, &d, 2);
                        std::memcpy(blk + 2, &m, 2);
                    }
                }
                break;
            }
        }
    }
    w->t.name = "test";
    w->t.type = type;
    w->t.n_dims = 2;
    w->t.ne[0] = cols;
    w->t.ne[1] = rows;
    w->t.nbytes = w->bytes.size();
    w->t.data = w->bytes.data();
    w->cpu = g_cpu->upload_weight(w->t);
    w->gpu = g_gpu->upload_weight(w->t);
    return w;
}

// A CPU and a CUDA stream sized for the tests.
struct Pair {
    std::unique_ptr<Stream> cpu, gpu;
    Pair(int max_tokens = 128, int64_t max_cols = 1024, int max_kv = 4096)
        : cpu(g_cpu->create_stream(2, max_tokens, max_cols, max_kv)),
          gpu(g_gpu->create_stream(1, max_tokens, max_cols, max_kv)) {}
    // Device copies of host data on each stream.
    template <class T>
    std::pair<T *, T *> put(const std::vector<T> &h) {
        T *c = static_cast<T *>(cpu->alloc(h.size() * sizeof(T)));
        T *g = static_cast<T *>(gpu->alloc(h.size() * sizeof(T)));
        cpu->upload(c, h.data(), h.size() * sizeof(T));
        gpu->upload(g, h.data(), h.size() * sizeof(T));
        return {c, g};
    }
    template <class T>
    std::vector<T> get_gpu(const T *g, size_t n) {
        std::vector<T> h(n);
        gpu->download(h.data(), g, n * sizeof(T));
        gpu->synchronize();
        return h;
    }
};

// |a - b| <= tol * scale[i] + abs_tol for every i; prints the worst offender.
void expect_close(const char *what, const float *a, const float *b, size_t n, const std::vector<float> &scale,
                  float tol, float abs_tol) {
    size_t bad = 0, worst = 0;
    double worst_excess = 0;
    for (size_t i = 0; i < n; i++) {
        const double lim = double(tol) * (scale.empty() ? std::fabs(a[i]) : scale[i]) + abs_tol;
        const double err = std::fabs(double(a[i]) - double(b[i]));
        if (!(err <= lim)) {
            if (!bad || err - lim > worst_excess) worst = i, worst_excess = err - lim;
            bad++;
        }
    }
    if (bad) {
        printf("%s: %zu of %zu values differ; worst at %zu: CPU %.7g, CUDA %.7g\n", what, bad, n, worst, a[worst],
               b[worst]);
        fail();
    }
}

const uint32_t kTypes[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q8_0};

void test_matmul(void **) {
    std::mt19937 rng(1);
    const int64_t cols = 512, rows = 200;  // rows not a multiple of any tile
    Pair p;
    for (uint32_t type : kTypes) {
        auto w = make_weight(type, randn(size_t(cols * rows), rng, 0.05f), cols, rows);
        std::vector<float> wf(size_t(cols * rows));
        for (int64_t r = 0; r < rows; r++)
            dequantize_row(type, w->bytes.data() + size_t(r) * w->cpu.row_bytes, wf.data() + r * cols, cols);
        for (int n : {1, 2, 5, 8, 9, 33, 100}) {
            const std::vector<float> x = randn(size_t(n * cols), rng);
            auto [xc, xg] = p.put(x);
            float *yc = static_cast<float *>(p.cpu->alloc(size_t(n * rows) * 4));
            float *yg = static_cast<float *>(p.gpu->alloc(size_t(n * rows) * 4));
            p.cpu->matmul(w->cpu, xc, n, yc);
            p.gpu->matmul(w->gpu, xg, n, yg);
            const std::vector<float> got = p.get_gpu(yg, size_t(n * rows));
            // Scale of each output: sum |w| |x|, what rounding in any order is relative to.
            std::vector<float> scale(size_t(n * rows));
            for (int t = 0; t < n; t++)
                for (int64_t r = 0; r < rows; r++) {
                    double s = 0;
                    for (int64_t i = 0; i < cols; i++) s += std::fabs(wf[size_t(r * cols + i)] * x[size_t(t * cols + i)]);
                    scale[size_t(t * rows + r)] = float(s);
                }
            char what[64];
            snprintf(what, sizeof what, "matmul %s n=%d", type_info(type)->name, n);
            expect_close(what, yc, got.data(), got.size(), scale, 1e-4f, 1e-6f);
        }
    }
}

// Q5_0 / Q5_1 meet the CPU's own Q8_0 / Q8_1 activation blocks, so their
// block sums are exact and the tolerance is test_matmul's. The k-quants meet
// 8-bit blocks of 32 where the CPU quantizes activations to Q8_K super-blocks
// of 256 (a coarser scale), so both are 8-bit approximations of the float
// product and differ by the CPU's quantization error: a few 1e-4 of
// sum |w| |x| for random inputs, held here to 3e-3.
void test_matmul_more_types(void **) {
    std::mt19937 rng(11);
    Pair p;
    for (uint32_t type : {TYPE_Q4_K, TYPE_Q6_K, TYPE_Q5_0, TYPE_Q5_K, TYPE_Q5_1}) {
        const bool kq = type == TYPE_Q4_K || type == TYPE_Q5_K || type == TYPE_Q6_K;
        const std::vector<int64_t> col_counts = kq ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{64, 352};
        for (const int64_t c : col_counts) {
            const int64_t rows = c == col_counts[0] ? 201 : 67;
            auto w = make_weight(type, randn(size_t(c * rows), rng, 0.05f), c, rows);
            std::vector<float> wf(size_t(c * rows));
            for (int64_t r = 0; r < rows; r++)
                dequantize_row(type, w->bytes.data() + size_t(r) * w->cpu.row_bytes, wf.data() + r * c, c);
            for (int n : {1, 3, 9, 17, 64}) {
                const std::vector<float> x = randn(size_t(n * c), rng);
                auto [xc, xg] = p.put(x);
                float *yc = static_cast<float *>(p.cpu->alloc(size_t(n * rows) * 4));
                float *yg = static_cast<float *>(p.gpu->alloc(size_t(n * rows) * 4));
                p.cpu->matmul(w->cpu, xc, n, yc);
                p.gpu->matmul(w->gpu, xg, n, yg);
                const std::vector<float> got = p.get_gpu(yg, size_t(n * rows));
                std::vector<float> scale(size_t(n * rows));
                for (int t = 0; t < n; t++)
                    for (int64_t r = 0; r < rows; r++) {
                        double s = 0;
                        for (int64_t i = 0; i < c; i++) s += std::fabs(wf[size_t(r * c + i)] * x[size_t(t * c + i)]);
                        scale[size_t(t * rows + r)] = float(s);
                    }
                char what[80];
                snprintf(what, sizeof what, "matmul %s %lldx%lld n=%d", type_info(type)->name, (long long)rows,
                         (long long)c, n);
                expect_close(what, yc, got.data(), got.size(), scale, kq ? 3e-3f : 1e-4f, 1e-6f);
            }
        }
    }
}

// Dequantized rows of the Q5_x and k-quant types: bit for bit.
void test_get_rows_more_types(void **) {
    std::mt19937 rng(12);
    const int64_t cols = 512, rows = 40;
    Pair p;
    for (uint32_t type : {TYPE_Q4_K, TYPE_Q6_K, TYPE_Q5_0, TYPE_Q5_K, TYPE_Q5_1}) {
        auto w = make_weight(type, randn(size_t(cols * rows), rng), cols, rows);
        const std::vector<int32_t> ids = {3, 0, 39, 3, 17};
        auto [ic, ig] = p.put(ids);
        const size_t n = ids.size() * size_t(cols);
        float *xc = static_cast<float *>(p.cpu->alloc(n * 4));
        float *xg = static_cast<float *>(p.gpu->alloc(n * 4));
        p.cpu->get_rows(w->cpu, ic, int(ids.size()), xc);
        p.gpu->get_rows(w->gpu, ig, int(ids.size()), xg);
        const std::vector<float> got = p.get_gpu(xg, n);
        expect_close(type_info(type)->name, xc, got.data(), n, {}, 0.0f, 0.0f);
    }
}

void test_get_rows(void **) {
    std::mt19937 rng(2);
    const int64_t cols = 96, rows = 50;
    Pair p;
    for (uint32_t type : kTypes) {
        auto w = make_weight(type, randn(size_t(cols * rows), rng), cols, rows);
        const std::vector<int32_t> ids = {3, 0, 49, 3, 17};
        auto [ic, ig] = p.put(ids);
        const size_t n = ids.size() * size_t(cols);
        float *xc = static_cast<float *>(p.cpu->alloc(n * 4));
        float *xg = static_cast<float *>(p.gpu->alloc(n * 4));
        p.cpu->get_rows(w->cpu, ic, int(ids.size()), xc);
        p.gpu->get_rows(w->gpu, ig, int(ids.size()), xg);
        const std::vector<float> got = p.get_gpu(xg, n);
        expect_close(type_info(type)->name, xc, got.data(), n, {}, 0.0f, 0.0f);  // dequantization is exact
    }
}

void test_elementwise(void **) {
    std::mt19937 rng(3);
    Pair p;
    const int64_t d = 576;
    const int n = 7;
    const std::vector<float> x = randn(size_t(d * n), rng, 3.0f), u = randn(size_t(d * n), rng);
    auto g = make_weight(TYPE_F32, randn(size_t(d), rng), d, 1);
    auto [xc, xg] = p.put(x);
    auto [uc, ug] = p.put(u);
    float *yc = static_cast<float *>(p.cpu->alloc(x.size() * 4));
    float *yg = static_cast<float *>(p.gpu->alloc(x.size() * 4));
    p.cpu->rmsnorm(xc, g->cpu, 1e-5f, n, yc);
    p.gpu->rmsnorm(xg, g->gpu, 1e-5f, n, yg);
    expect_close("rmsnorm", yc, p.get_gpu(yg, x.size()).data(), x.size(), {}, 2e-6f, 1e-7f);
    p.cpu->swiglu(xc, uc, x.size(), yc);
    p.gpu->swiglu(xg, ug, x.size(), yg);
    expect_close("swiglu", yc, p.get_gpu(yg, x.size()).data(), x.size(), {}, 2e-6f, 1e-7f);
    p.cpu->add(yc, xc, x.size());
    p.gpu->add(yg, xg, x.size());
    expect_close("add", yc, p.get_gpu(yg, x.size()).data(), x.size(), {}, 2e-6f, 1e-7f);
}

// Equal bits, or NaN on both sides (which NaN an operation returns is not part of its result).
void expect_bits(const char *what, const std::vector<float> &ref, const std::vector<float> &got) {
    size_t differ = 0, first = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const bool same = std::isnan(ref[i]) ? std::isnan(got[i]) : std::memcmp(&got[i], &ref[i], sizeof(float)) == 0;
        if (!same && !differ++) first = i;
    }
    if (differ) {
        printf("%s: %zu of %zu values differ from the CPU's bits; the first at %zu: CPU %.9g, CUDA %.9g\n", what, differ,
               ref.size(), first, double(ref[first]), double(got[first]));
        fail();
    }
}

// Every F16 value (the GELU table's whole domain), midpoints between
// neighbouring F16 values, the +-10 cut-offs and their neighbours, specials
// and random floats: not a multiple of any block size.
std::vector<float> gelu_inputs(std::mt19937 &rng) {
    std::vector<float> x;
    for (uint32_t h = 0; h < 65536; h++) x.push_back(fp16_to_fp32(uint16_t(h)));
    for (uint32_t h : {0x0001u, 0x03feu, 0x3bffu, 0x3c00u, 0x4170u, 0x48ffu, 0x7bfeu, 0x8001u, 0xbc00u, 0xc8ffu, 0xfbfeu})
        for (uint32_t k = 0; k < 40; k++) {
            const double a = fp16_to_fp32(uint16_t(h + k)), b = fp16_to_fp32(uint16_t(h + k + 1));
            x.push_back(float((a + b) / 2));
        }
    for (float e : {-10.0f, 10.0f}) x.insert(x.end(), {e, std::nextafter(e, 0.0f), std::nextafter(e, 2 * e)});
    x.insert(x.end(), {INFINITY, -INFINITY, NAN, -NAN, 0.0f, -0.0f, 1e-40f, -1e-40f, FLT_MIN, FLT_MAX, -FLT_MAX,
                       65519.0f, 65520.0f, -65520.0f, 9.999999f, -9.999999f});
    const std::vector<float> r = randn(2001, rng, 4.0f);
    x.insert(x.end(), r.begin(), r.end());
    return x;
}

// scale and geglu are a product and a table lookup: the CPU's bits exactly.
void test_scale_geglu(void **) {
    std::mt19937 rng(9);
    Pair p;
    const std::vector<float> x = gelu_inputs(rng);
    const size_t n = x.size();
    std::vector<float> up = randn(n, rng);
    const float up_special[] = {INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1e-30f, 1e30f, 1e-45f};
    for (size_t i = 0; i < 8; i++) {
        up[1000 + 7919 * i] = up_special[i];
        up[n - 2002 - i] = up_special[i];
    }
    auto [xc, xg] = p.put(x);
    auto [uc, ug] = p.put(up);
    auto [oc, og] = p.put(std::vector<float>(n, 0.0f));
    auto cpu_vec = [&](const float *c) { return std::vector<float>(c, c + n); };
    p.cpu->geglu(xc, uc, n, oc);
    p.gpu->geglu(xg, ug, n, og);
    expect_bits("geglu", cpu_vec(oc), p.get_gpu(og, n));
    auto [gc, gg] = p.put(x);
    p.cpu->geglu(gc, uc, n, gc);  // in place, as the forward pass calls it
    p.gpu->geglu(gg, ug, n, gg);
    expect_bits("geglu in place", cpu_vec(gc), p.get_gpu(gg, n));
    for (float f : {16.0f, 0.125f, 1.0f / std::sqrt(3.0f), -2.5f, 1e-3f, 0.0f}) {
        auto [sc, sg] = p.put(x);
        p.cpu->scale(sc, n, f);
        p.gpu->scale(sg, n, f);
        char what[64];
        snprintf(what, sizeof what, "scale by %g", double(f));
        expect_bits(what, cpu_vec(sc), p.get_gpu(sg, n));
    }
}

// ---- RWKV-7 ops against the CPU. token_shift_mix, wkv7, rwkv7_bonus_gate,
// the squared ReLU and norm_affine are float (and double) arithmetic in the
// CPU's order: bit for bit. tanh and exp are CUDA's (within 2 ulp of the C
// library's): tanh and the sigmoid within 4 ulp of the CPU's value, and
// rwkv7_prepare's outputs within 1e-6 of the largest magnitude. Each
// comparison prints its measured maximum difference.

std::vector<float> cpu_floats(Stream &s, const float *p, size_t n) {
    s.synchronize();
    return std::vector<float>(p, p + n);
}

double max_abs_diff(const std::vector<float> &ref, const std::vector<float> &got) {
    double md = 0;
    for (size_t i = 0; i < ref.size(); i++)
        if (!std::isnan(ref[i]) || !std::isnan(got[i])) md = std::max(md, double(std::fabs(got[i] - ref[i])));
    return md;
}

void expect_rwkv_bits(const std::string &what, const std::vector<float> &ref, const std::vector<float> &got) {
    printf("%s: max |cuda - cpu| = %.3g over %zu values (bits required)\n", what.c_str(), max_abs_diff(ref, got),
           ref.size());
    expect_bits(what.c_str(), ref, got);
}

// max |got - ref| <= tol * max |ref|
void expect_rwkv_rel(const std::string &what, const std::vector<float> &ref, const std::vector<float> &got, double tol) {
    double den = 0;
    for (float v : ref) den = std::max(den, double(std::fabs(v)));
    const double md = max_abs_diff(ref, got);
    printf("%s: max |cuda - cpu| = %.3g over %zu values (bounded: %.3g of the largest, %.3g)\n", what.c_str(), md,
           ref.size(), tol, den);
    if (!(md <= tol * den)) fail();
}

std::vector<float> uniform(size_t n, std::mt19937 &rng, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (float &x : v) x = u(rng);
    return v;
}

void test_rwkv_norm_shift(void **) {
    std::mt19937 rng(21);
    Pair p;
    const int n = 7;
    for (int d : {192, 1000})
        for (int groups : {1, 4}) {
            std::vector<float> x = randn(size_t(n) * size_t(d), rng, 2.0f);
            for (int i = 0; i < d; i++) x[size_t(i)] += 30.0f;
            auto [xc, xg] = p.put(x);
            auto [wc, wg] = p.put(randn(size_t(d), rng));
            auto [bc, bg] = p.put(randn(size_t(d), rng));
            const float eps = groups == 1 ? 1e-5f : 64e-5f;
            p.cpu->norm_affine(xc, wc, bc, eps, n, d, groups, xc);  // in place, as the model calls it
            p.gpu->norm_affine(xg, wg, bg, eps, n, d, groups, xg);
            char what[96];
            snprintf(what, sizeof what, "norm_affine d=%d groups=%d", d, groups);
            expect_rwkv_bits(what, cpu_floats(*p.cpu, xc, x.size()), p.get_gpu(xg, x.size()));
        }
    const int d = 200;
    for (int n_mix : {6, 1}) {
        auto [sc, sg] = p.put(randn(size_t(d), rng));
        auto [mc, mg] = p.put(uniform(size_t(n_mix) * d, rng, 0, 1));
        for (int nt : {1, 9, 1}) {
            const std::vector<float> x = randn(size_t(nt) * d, rng);
            auto [xc, xg] = p.put(x);
            auto [oc, og] = p.put(std::vector<float>(size_t(n_mix) * x.size(), 0.0f));
            p.cpu->token_shift_mix(xc, sc, mc, n_mix, nt, d, oc);
            p.gpu->token_shift_mix(xg, sg, mg, n_mix, nt, d, og);
            char what[96];
            snprintf(what, sizeof what, "token_shift_mix n_mix=%d n=%d", n_mix, nt);
            expect_rwkv_bits(what, cpu_floats(*p.cpu, oc, size_t(n_mix) * x.size()), p.get_gpu(og, size_t(n_mix) * x.size()));
            expect_rwkv_bits(std::string(what) + " state", cpu_floats(*p.cpu, sc, size_t(d)), p.get_gpu(sg, size_t(d)));
        }
    }
}

void test_rwkv_activate(void **) {
    std::mt19937 rng(22);
    Pair p;
    // every 1021st float bit pattern (all exponents, subnormals, infinities, NaNs), then random floats
    std::vector<float> x;
    for (uint64_t u = 0; u <= 0xffffffffull; u += 1021) {
        const uint32_t b = uint32_t(u);
        float f;
        std::memcpy(&f, &b, 4);
        x.push_back(f);
    }
    const std::vector<float> r = randn(20001, rng, 3.0f);
    x.insert(x.end(), r.begin(), r.end());
    const size_t n = x.size();
    const std::pair<Stream::Activation, const char *> fs[] = {
        {Stream::Activation::Tanh, "tanh"}, {Stream::Activation::Sigmoid, "sigmoid"}, {Stream::Activation::ReluSquare, "relu^2"}};
    for (const auto &f : fs) {
        auto [xc, xg] = p.put(x);
        p.cpu->activate(f.first, xc, n);
        p.gpu->activate(f.first, xg, n);
        const std::vector<float> ref = cpu_floats(*p.cpu, xc, n), got = p.get_gpu(xg, n);
        const std::string what = std::string("activate ") + f.second;
        if (f.first == Stream::Activation::ReluSquare) {
            expect_rwkv_bits(what, ref, got);
            continue;
        }
        // 4 ulp of the CPU's value (and the smallest normal float near zero)
        std::vector<float> ulp(n);
        for (size_t i = 0; i < n; i++) ulp[i] = std::isfinite(ref[i]) ? std::fabs(ref[i]) : 0.0f;
        printf("%s: max |cuda - cpu| = %.3g over %zu values (bounded: 4 ulp)\n", what.c_str(), max_abs_diff(ref, got), n);
        expect_close(what.c_str(), ref.data(), got.data(), n, ulp, 4.0f * FLT_EPSILON, FLT_MIN);
    }
}

void test_rwkv_time_mix(void **) {
    std::mt19937 rng(23);
    Pair p;
    for (int N : {64, 12}) {
        const int H = N == 64 ? 3 : 2;
        const size_t d = size_t(H) * size_t(N);
        // rwkv7_prepare, with and without the value mix
        for (bool vmix : {false, true})
            for (int n : {1, 11}) {
                const size_t nd = size_t(n) * d;
                auto w = p.put(randn(nd, rng, 2.0f)), w0 = p.put(randn(d, rng)), a = p.put(randn(nd, rng)),
                     a0 = p.put(randn(d, rng, 0.5f)), v = p.put(randn(nd, rng)), vf = p.put(randn(nd, rng)),
                     vm = p.put(randn(nd, rng)), v0 = p.put(randn(d, rng, 0.5f)), k = p.put(randn(nd, rng)),
                     kk = p.put(randn(d, rng)), ka = p.put(randn(d, rng)), ao = p.put(std::vector<float>(nd, 0.0f)),
                     bo = p.put(std::vector<float>(nd, 0.0f));
                p.cpu->rwkv7_prepare(w.first, w0.first, a.first, a0.first, v.first, vf.first, vmix ? vm.first : nullptr,
                                     vmix ? v0.first : nullptr, k.first, kk.first, ka.first, n, H, N, ao.first, bo.first);
                p.gpu->rwkv7_prepare(w.second, w0.second, a.second, a0.second, v.second, vf.second,
                                     vmix ? vm.second : nullptr, vmix ? v0.second : nullptr, k.second, kk.second, ka.second,
                                     n, H, N, ao.second, bo.second);
                char what[96];
                snprintf(what, sizeof what, "rwkv7_prepare %dx%d n=%d%s", H, N, n, vmix ? " with the value mix" : "");
                const std::pair<std::pair<float *, float *> *, const char *> outs[] = {
                    {&w, "w"}, {&a, "a"}, {&v, "v"}, {&k, "k"}, {&ao, "a_out"}, {&bo, "b_out"}};
                for (const auto &o : outs)
                    expect_rwkv_rel(std::string(what) + " " + o.second, cpu_floats(*p.cpu, o.first->first, nd),
                                    p.get_gpu(o.first->second, nd), 1e-6);
            }
        // wkv7 over decode steps and batches, the state carried through
        auto st = p.put(randn(d * size_t(N), rng, 0.5f));
        int step = 0;
        for (int n : {1, 1, 17, 1, 40, 2}) {
            const size_t nd = size_t(n) * d;
            const std::vector<float> kk = randn(nd, rng), rate = uniform(nd, rng, 0, 1);
            std::vector<float> av(nd), bv(nd);
            for (size_t h0 = 0; h0 < nd; h0 += size_t(N)) {
                double ss = 0;
                for (int i = 0; i < N; i++) ss += double(kk[h0 + size_t(i)]) * kk[h0 + size_t(i)];
                for (int i = 0; i < N; i++) {
                    const float u = float(kk[h0 + size_t(i)] / std::sqrt(ss));
                    av[h0 + size_t(i)] = -u;
                    bv[h0 + size_t(i)] = u * rate[h0 + size_t(i)];
                }
            }
            auto r = p.put(randn(nd, rng)), w = p.put(uniform(nd, rng, 0.545f, 1.0f)), k = p.put(randn(nd, rng)),
                 v = p.put(randn(nd, rng)), a = p.put(av), b = p.put(bv), o = p.put(std::vector<float>(nd, 0.0f));
            p.cpu->wkv7(r.first, w.first, k.first, v.first, a.first, b.first, n, H, N, st.first, o.first);
            p.gpu->wkv7(r.second, w.second, k.second, v.second, a.second, b.second, n, H, N, st.second, o.second);
            char what[96];
            snprintf(what, sizeof what, "wkv7 %dx%d step %d (n=%d)", H, N, step++, n);
            expect_rwkv_bits(what, cpu_floats(*p.cpu, o.first, nd), p.get_gpu(o.second, nd));
            expect_rwkv_bits(std::string(what) + " state", cpu_floats(*p.cpu, st.first, d * size_t(N)),
                             p.get_gpu(st.second, d * size_t(N)));
            // the bonus and gate on the recurrence's output
            auto rk = p.put(randn(d, rng)), g = p.put(uniform(nd, rng, -1, 1));
            p.cpu->rwkv7_bonus_gate(o.first, r.first, k.first, v.first, rk.first, g.first, n, H, N);
            p.gpu->rwkv7_bonus_gate(o.second, r.second, k.second, v.second, rk.second, g.second, n, H, N);
            expect_rwkv_bits(std::string(what) + " bonus_gate", cpu_floats(*p.cpu, o.first, nd), p.get_gpu(o.second, nd));
        }
    }
}

// Encoded rows are compared by their decoded values: within one step of the
// CPU's codes (they are expected to be identical).
void test_kv_encode(void **) {
    std::mt19937 rng(5);
    Pair p;
    const int n = 5, heads = 3, hd = 128;
    for (int codec = 1; codec <= 3; codec++) {
        for (bool had : {false, true}) {
            const std::vector<float> x = randn(size_t(n * heads * hd), rng, 2.0f);
            auto [xc, xg] = p.put(x);
            const size_t hb = codec_row_bytes(KVCodec(codec), hd), bytes = hb * size_t(n * heads);
            uint8_t *dc = static_cast<uint8_t *>(p.cpu->alloc(bytes));
            uint8_t *dg = static_cast<uint8_t *>(p.gpu->alloc(bytes));
            p.cpu->kv_encode(codec, had, xc, n, heads, hd, dc);
            p.gpu->kv_encode(codec, had, xg, n, heads, hd, dg);
            const std::vector<uint8_t> got = p.get_gpu(dg, bytes);
            const std::vector<float> xr = p.get_gpu(xg, x.size());
            expect_close("kv_encode rotated input", xc, xr.data(), x.size(), {}, 1e-6f, 1e-6f);
    std::vector<float> a(size_t(KV_CHANNEL_BLOCK) * size_t(hd)), b(a.size());
            for (int r = 0; r < n * heads; r++) {
                codec_decode(KVCodec(codec), dc + size_t(r) * hb, a.data(), hd);
                codec_decode(KVCodec(codec), got.data() + size_t(r) * hb, b.data(), hd);
                float amax = 0;
                for (float v : a) amax = std::max(amax, std::fabs(v));
                const float step = codec == 1 ? 1e-3f * amax : codec == 2 ? amax / 127 : 2 * amax / 15;
                char what[64];
                snprintf(what, sizeof what, "kv_encode codec %d hadamard %d row %d", codec, int(had), r);
                expect_close(what, a.data(), b.data(), size_t(hd), {}, 0.0f, step * 1.01f);
            }
        }
    }
}

void test_kv_encode_channels(void **) {
    std::mt19937 rng(6);
    Pair p;
    const int heads = 2, hd = 64;
    const std::vector<float> x = randn(size_t(KV_CHANNEL_BLOCK * heads * hd), rng);
    std::vector<uint8_t> rows(x.size() * 2);
    codec_encode(KVCodec::F16, x.data(), rows.data(), int(x.size()));
    auto [rc, rg] = p.put(rows);
    const size_t bytes = size_t(heads) * channel_block_bytes(hd);
    uint8_t *dc = static_cast<uint8_t *>(p.cpu->alloc(bytes));
    uint8_t *dg = static_cast<uint8_t *>(p.gpu->alloc(bytes));
    p.cpu->kv_encode_channels(rc, heads, hd, dc);
    p.gpu->kv_encode_channels(rg, heads, hd, dg);
    const std::vector<uint8_t> got = p.get_gpu(dg, bytes);
    std::vector<float> a(size_t(KV_CHANNEL_BLOCK * hd)), b(a.size());
    for (int g = 0; g < heads; g++) {
        channel_block_decode(dc + size_t(g) * channel_block_bytes(hd), hd, 0, KV_CHANNEL_BLOCK, a.data());
        channel_block_decode(got.data() + size_t(g) * channel_block_bytes(hd), hd, 0, KV_CHANNEL_BLOCK, b.data());
        expect_close("kv_encode_channels", a.data(), b.data(), a.size(), {}, 0.0f, 0.5f);
        size_t same = 0;
        for (size_t i = 0; i < a.size(); i++) same += a[i] == b[i];
        printf("kv_encode_channels head %d: %zu of %zu values identical\n", g, same, a.size());
    }
}

// Attention through SessionMemory on both backends with the same q/k/v: a prefill,
// decode steps and batches that wrap the window several times.
void run_cache(kvfit_kv_codec codec, bool streaming, uint32_t window, RopeMode mode, const std::vector<int> &batches) {
    std::mt19937 rng(7);
    RopeParams rope;
    rope.n_dims = 64;
    rope.mode = mode;
    const std::vector<LayerSpec> specs = uniform_attention_layers(1, 6, 2, 64, rope);
    const LayerSpec &shape = specs[0];
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.kv_codec = codec;
    if (streaming) {
        sp.n_window = window;
        sp.n_sink = 4;
    } else {
        sp.n_ctx = window;
    }
    const MemoryPlan plan = plan_memory(specs, sp, window);
    int max_batch = 0, total = 0;
    for (int b : batches) max_batch = std::max(max_batch, b), total += b;
    const int qd = shape.n_head * shape.head_dim, kvd = shape.n_head_kv * shape.head_dim;
    Pair p(max_batch, qd, int(plan.layers[0].n_sink + plan.layers[0].n_window));
    SessionMemory cc(*p.cpu, specs, plan, max_batch), cg(*p.gpu, specs, plan, max_batch);
    float *buf_c = static_cast<float *>(p.cpu->alloc(size_t(max_batch) * (2 * qd + 2 * kvd) * 4));
    float *buf_g = static_cast<float *>(p.gpu->alloc(size_t(max_batch) * (2 * qd + 2 * kvd) * 4));
    uint64_t pos = 0;
    for (int n : batches) {
        const std::vector<float> q = randn(size_t(n * qd), rng), k = randn(size_t(n * kvd), rng),
                                 v = randn(size_t(n * kvd), rng);
        float *bufs[2] = {buf_c, buf_g};
        Stream *ss[2] = {p.cpu.get(), p.gpu.get()};
        SessionMemory *caches[2] = {&cc, &cg};
        for (int b = 0; b < 2; b++) {
            float *qq = bufs[b], *kk = qq + size_t(max_batch) * qd, *vv = kk + size_t(max_batch) * kvd,
                  *out = vv + size_t(max_batch) * kvd;
            ss[b]->upload(qq, q.data(), q.size() * 4);
            ss[b]->upload(kk, k.data(), k.size() * 4);
            ss[b]->upload(vv, v.data(), v.size() * 4);
            caches[b]->attend(*ss[b], 0, qq, kk, vv, n, pos, out);
        }
        const float *out_c = buf_c + size_t(max_batch) * (qd + 2 * kvd);
        const std::vector<float> got = p.get_gpu(buf_g + size_t(max_batch) * (qd + 2 * kvd), size_t(n * qd));
        char what[96];
        snprintf(what, sizeof what, "attention codec %d %s W=%u at %llu (+%d)", int(codec),
                 streaming ? "streaming" : "dense", window, (unsigned long long)pos, n);
        expect_close(what, out_c, got.data(), got.size(), {}, 1e-3f, 1e-3f);
        pos += uint64_t(n);
    }
    printf("attention codec %d %s window %u: %d tokens match\n", int(codec), streaming ? "streaming" : "dense", window,
           total);
}

void test_attention(void **) {
    const std::vector<int> steps = {40, 1, 1, 17, 1, 64, 3, 1, 64, 64, 1, 1, 30, 1};
    for (kvfit_kv_codec c : {KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4, KVFIT_KV_Q4_HADAMARD, KVFIT_KV_Q4_CHANNEL}) {
        run_cache(c, true, 64, RopeMode::Norm, steps);
        run_cache(c, false, 512, RopeMode::Norm, steps);
    }
    run_cache(KVFIT_KV_Q8, true, 64, RopeMode::Neox, steps);
    // A long window: decode steps are split over many blocks and merged.
    std::vector<int> longs(6, 512);
    longs.insert(longs.end(), {1, 1, 1, 100, 1});
    run_cache(KVFIT_KV_Q4_HADAMARD, true, 2048, RopeMode::Norm, longs);
    run_cache(KVFIT_KV_Q4_CHANNEL, true, 2048, RopeMode::Norm, longs);
}

// A layer with the model's own sliding window (layer 0 of two; layer 1 is
// global) in a dense and a budgeted session: batches of 1, a few and 64 or
// more over several turns of the ring. This backend keeps keys before RoPE,
// so its attention is the streaming one without sinks; the CPU's dense
// session keeps them rotated and attends in llama.cpp's order (an F16 query
// and accumulator), hence the wider tolerance there.
void run_native_window(bool dense) {
    constexpr int NW = 80, TOKENS = 300;
    std::mt19937 rng(dense ? 11 : 12);
    RopeParams rope;
    rope.n_dims = 64;
    rope.mode = RopeMode::Neox;
    std::vector<LayerSpec> specs = uniform_attention_layers(2, 6, 2, 64, rope);
    specs[0].native_window = NW;
    specs[1].rope.freq_base = 1000000.0f;
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = TOKENS;
    if (!dense) sp.kv_budget_bytes = 1 << 20;
    const MemoryPlan plan = plan_memory(specs, sp, 512);
    assert_int_equal(plan.layers[0].kind, KVFIT_LAYER_WINDOW);
    assert_int_equal(plan.layers[0].n_window, NW);
    assert_int_equal(plan.layers[0].n_sink, 0);
    const int qd = 6 * 64, kvd = 2 * 64;
    Pair p(NW, qd, TOKENS);
    SessionMemory cc(*p.cpu, specs, plan, NW), cg(*p.gpu, specs, plan, NW);
    assert_false(cg.attention(0).keys_rotated());
    float *buf_c = static_cast<float *>(p.cpu->alloc(size_t(NW) * (2 * qd + 2 * kvd) * 4));
    float *buf_g = static_cast<float *>(p.gpu->alloc(size_t(NW) * (2 * qd + 2 * kvd) * 4));
    const int batches[] = {1, 3, 70, 5, 64, 1, 80, 17, 66, 2, 1, 63};
    uint64_t pos = 0;
    for (int bi = 0; pos < TOKENS; bi = (bi + 1) % int(sizeof batches / sizeof *batches)) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[bi]), TOKENS - pos));
        for (int layer = 0; layer < 2; layer++) {
            const std::vector<float> q = randn(size_t(n * qd), rng), k = randn(size_t(n * kvd), rng),
                                     v = randn(size_t(n * kvd), rng);
            float *bufs[2] = {buf_c, buf_g};
            Stream *ss[2] = {p.cpu.get(), p.gpu.get()};
            SessionMemory *caches[2] = {&cc, &cg};
            for (int b = 0; b < 2; b++) {
                float *qq = bufs[b], *kk = qq + size_t(NW) * qd, *vv = kk + size_t(NW) * kvd,
                      *out = vv + size_t(NW) * kvd;
                ss[b]->upload(qq, q.data(), q.size() * 4);
                ss[b]->upload(kk, k.data(), k.size() * 4);
                ss[b]->upload(vv, v.data(), v.size() * 4);
                caches[b]->attend(*ss[b], layer, qq, kk, vv, n, pos, out);
            }
            const float *out_c = buf_c + size_t(NW) * (qd + 2 * kvd);
            const std::vector<float> got = p.get_gpu(buf_g + size_t(NW) * (qd + 2 * kvd), size_t(n * qd));
            char what[128];
            snprintf(what, sizeof what, "%s session, %s layer: attention at %llu (+%d)", dense ? "dense" : "budgeted",
                     layer ? "global" : "native-window", (unsigned long long)pos, n);
            const float tol = dense ? 4e-3f : 1e-3f;
            expect_close(what, out_c, got.data(), got.size(), {}, tol, tol);
        }
        pos += uint64_t(n);
    }
    printf("native window, %s session: %d tokens match\n", dense ? "dense" : "budgeted", TOKENS);
}

void test_native_window(void **) {
    run_native_window(true);
    run_native_window(false);
}

// Errors are status codes, not aborts.
void test_errors(void **) {
    Pair p;
    bool threw = false;
    try {
        p.gpu->alloc(size_t(1) << 62);
    } catch (const Error &e) {
        threw = e.status() == KVFIT_E_NOMEM;
    }
    assert_true(threw);
}


// ---------------------------------------------------------------------------
// Gated DeltaNet (qwen35). CUDA's expf / logf are not the C library's, so
// each op is compared within a stated relative bound (max |CUDA - CPU| over
// max |CPU|); the measured error is printed.

void expect_rel(const std::string &what, const std::vector<float> &ref, const std::vector<float> &got, double tol) {
    double num = 0, den = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        num = std::max(num, std::fabs(double(ref[i]) - double(got[i])));
        den = std::max(den, std::fabs(double(ref[i])));
    }
    const double e = den > 0 ? num / den : num;
    printf("  %s: relative error %.3g (bound %.3g)\n", what.c_str(), e, tol);
    if (!(e <= tol)) fail();
}

template <class T>
std::vector<T> get_cpu(Pair &p, const T *c, size_t n) {
    std::vector<T> h(n);
    p.cpu->download(h.data(), c, n * sizeof(T));
    p.cpu->synchronize();
    return h;
}

void test_gdn_ops(void **) {
    std::mt19937 rng(71);
    Pair p;
    // silu, sigmoid_mul (1000 values: the CPU's last 8 take the C library's exp)
    const size_t n = 1000;
    const std::vector<float> x = randn(n, rng, 4.0f), gt = randn(n, rng, 3.0f);
    auto [xc, xg] = p.put(x);
    auto [gc, gg] = p.put(gt);
    float *yc = static_cast<float *>(p.cpu->alloc(n * 4)), *yg = static_cast<float *>(p.gpu->alloc(n * 4));
    p.cpu->silu(xc, n, yc);
    p.gpu->silu(xg, n, yg);
    expect_rel("silu", get_cpu(p, yc, n), p.get_gpu(yg, n), 2e-6);
    p.cpu->sigmoid_mul(xc, gc, n);
    p.gpu->sigmoid_mul(xg, gg, n);
    expect_rel("sigmoid_mul", get_cpu(p, xc, n), p.get_gpu(xg, n), 2e-6);
    // gated_rmsnorm over rows of 72 and 128
    for (int d : {72, 128}) {
        const int rows = 7;
        const size_t m = size_t(rows) * d;
        const std::vector<float> a = randn(m, rng), z = randn(m, rng, 2.0f);
        auto w = make_weight(TYPE_F32, randn(size_t(d), rng), d, 1);
        auto [ac, ag] = p.put(a);
        auto [zc, zg] = p.put(z);
        p.cpu->gated_rmsnorm(ac, w->cpu, zc, 1e-6f, rows, ac);
        p.gpu->gated_rmsnorm(ag, w->gpu, zg, 1e-6f, rows, ag);
        expect_rel("gated_rmsnorm of " + std::to_string(d), get_cpu(p, ac, m), p.get_gpu(ag, m), 4e-6);
    }
    // l2norm: 9 tokens, 6 heads of 32 in rows of 300
    {
        const size_t stride = 300, m = 9 * stride;
        const std::vector<float> a = randn(m, rng);
        auto [ac, ag] = p.put(a);
        p.cpu->l2norm(ac, 9, 6, 32, stride, 1e-6f);
        p.gpu->l2norm(ag, 9, 6, 32, stride, 1e-6f);
        expect_rel("l2norm", get_cpu(p, ac, m), p.get_gpu(ag, m), 2e-6);
    }
    // gates: 11 tokens of 6 heads
    {
        const int T = 11, H = 6;
        std::vector<float> al = randn(size_t(T) * H, rng, 3.0f), be = randn(size_t(T) * H, rng, 3.0f);
        al[3] = 25.0f;
        be[5] = -90.0f;
        auto [alc, alg] = p.put(al);
        auto [bec, beg] = p.put(be);
        auto [dtc, dtg] = p.put(randn(H, rng));
        auto [ac, ag] = p.put(randn(H, rng));
        p.cpu->delta_gates(alc, bec, dtc, ac, T, H);
        p.gpu->delta_gates(alg, beg, dtg, ag, T, H);
        expect_rel("delta_gates g", get_cpu(p, alc, al.size()), p.get_gpu(alg, al.size()), 4e-6);
        expect_rel("delta_gates beta", get_cpu(p, bec, be.size()), p.get_gpu(beg, be.size()), 2e-6);
    }
    // ssm_conv: kernel 4 over 200 channels, batches carrying the state (fused multiply-adds in order: exact)
    {
        const int C = 200, K = 4;
        auto [wc, wg] = p.put(randn(size_t(C) * K, rng));
        auto [sc, sg] = p.put(randn(size_t(K - 1) * C, rng));
        for (int t : {1, 2, 13, 1}) {
            const std::vector<float> a = randn(size_t(t) * C, rng);
            auto [ac, ag] = p.put(a);
            float *oc = static_cast<float *>(p.cpu->alloc(a.size() * 4)), *og = static_cast<float *>(p.gpu->alloc(a.size() * 4));
            p.cpu->ssm_conv(ac, t, C, K, wc, sc, oc);
            p.gpu->ssm_conv(ag, t, C, K, wg, sg, og);
            expect_bits(("ssm_conv of " + std::to_string(t)).c_str(), get_cpu(p, oc, a.size()), p.get_gpu(og, a.size()));
            expect_bits("ssm_conv state", get_cpu(p, sc, size_t(K - 1) * C), p.get_gpu(sg, size_t(K - 1) * C));
        }
    }
    // copy_2d: every other half row
    {
        const size_t rows = 37, hd = 24;
        const std::vector<float> src = randn(rows * 2 * hd, rng);
        auto [scp, sgp] = p.put(src);
        (void)scp;
        float *dg = static_cast<float *>(p.gpu->alloc(rows * hd * 4));
        p.gpu->copy_2d(dg, hd * 4, sgp + hd, 2 * hd * 4, rows, hd * 4);
        const std::vector<float> got = p.get_gpu(dg, rows * hd);
        for (size_t r = 0; r < rows; r++) assert_memory_equal(&got[r * hd], &src[r * 2 * hd + hd], hd * 4);
    }
}

// The delta rule (recurrent, and the chunked entry, which runs the same
// kernel) against the CPU's recurrent form and chunked scan, over batches
// carried through the state; unit-norm q and k, decays in (0.13, 1).
void test_gdn_delta_net(void **) {
    struct Shape { int hk, hv, D; };
    for (const Shape sh : {Shape{2, 4, 16}, Shape{1, 2, 64}, Shape{2, 2, 128}, Shape{3, 6, 40}}) {
        std::mt19937 rng(uint32_t(sh.D * 7 + sh.hv));
        Pair p;
        const int D = sh.D, hk = sh.hk, hv = sh.hv;
        const size_t ch = size_t(2 * hk + hv) * D, S = size_t(hv) * D * D;
        const std::vector<float> s0 = randn(S, rng, 0.1f);
        auto [src, srg] = p.put(s0);
        auto [skc, skg] = p.put(s0);
        std::uniform_real_distribution<float> ug(-2.0f, -0.002f), ub(0.02f, 0.98f);
        for (int n : {1, 37, 1, 64, 3}) {
            std::vector<float> qkv = randn(size_t(n) * ch, rng);
            for (int t = 0; t < n; t++)
                for (int r = 0; r < 2 * hk; r++) {
                    float *v = &qkv[size_t(t) * ch + size_t(r) * D];
                    double ss = 0;
                    for (int i = 0; i < D; i++) ss += double(v[i]) * v[i];
                    for (int i = 0; i < D; i++) v[i] = float(v[i] / std::sqrt(ss + 1e-6));
                }
            std::vector<float> g(size_t(n) * hv), b(size_t(n) * hv);
            for (float &v : g) v = ug(rng);
            for (float &v : b) v = ub(rng);
            auto [xc, xg] = p.put(qkv);
            auto [gc, gg] = p.put(g);
            auto [bc, bg] = p.put(b);
            const size_t no = size_t(n) * hv * D;
            float *o1c = static_cast<float *>(p.cpu->alloc(no * 4)), *o1g = static_cast<float *>(p.gpu->alloc(no * 4));
            float *o2c = static_cast<float *>(p.cpu->alloc(no * 4)), *o2g = static_cast<float *>(p.gpu->alloc(no * 4));
            auto args = [&](const float *base, const float *gp, const float *bp, float *st, float *o) {
                DeltaNetArgs a;
                a.n = n;
                a.n_k_heads = hk;
                a.n_v_heads = hv;
                a.head_dim = D;
                a.q = base;
                a.k = base + size_t(hk) * D;
                a.v = base + size_t(2 * hk) * D;
                a.qk_stride = a.v_stride = ch;
                a.g = gp;
                a.beta = bp;
                a.state = st;
                a.out = o;
                a.scale = 1.0f / std::sqrt(float(D));
                return a;
            };
            p.cpu->delta_net(args(xc, gc, bc, src, o1c));
            p.gpu->delta_net(args(xg, gg, bg, srg, o1g));
            p.cpu->delta_net_chunked(args(xc, gc, bc, skc, o2c), 16);
            p.gpu->delta_net_chunked(args(xg, gg, bg, skg, o2g), 16);
            char what[128];
            std::snprintf(what, sizeof what, "delta_net (%d, %d, %d) batch of %d", hk, hv, D, n);
            expect_rel(what, get_cpu(p, o1c, no), p.get_gpu(o1g, no), 2e-5);
            expect_rel(std::string(what) + " state", get_cpu(p, src, S), p.get_gpu(srg, S), 2e-5);
            std::snprintf(what, sizeof what, "delta_net_chunked (%d, %d, %d) batch of %d vs the CPU's chunked scan", hk, hv, D, n);
            expect_rel(what, get_cpu(p, o2c, no), p.get_gpu(o2g, no), 2e-5);
            expect_rel(std::string(what) + " state", get_cpu(p, skc, S), p.get_gpu(skg, S), 2e-5);
        }
    }
}
}  // namespace

int main(void) {
    try {
        g_gpu = create_backend(KVFIT_BACKEND_CUDA, -1);
    } catch (const Error &e) {
        if (e.status() == KVFIT_E_BACKEND_UNAVAILABLE) test_skip_all("the CUDA backend is unavailable: %s", e.what());
        std::printf("creating the CUDA backend: %s\n", e.what());
        return 1;
    }
    g_cpu = create_cpu_backend();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),          cmocka_unit_test(test_get_rows),
        cmocka_unit_test(test_matmul_more_types), cmocka_unit_test(test_get_rows_more_types),
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_kv_encode),       cmocka_unit_test(test_kv_encode_channels),
        cmocka_unit_test(test_attention),       cmocka_unit_test(test_native_window),
        cmocka_unit_test(test_scale_geglu),     cmocka_unit_test(test_errors),
        cmocka_unit_test(test_rwkv_norm_shift), cmocka_unit_test(test_rwkv_activate),
        cmocka_unit_test(test_rwkv_time_mix),
        // Gated DeltaNet
        cmocka_unit_test(test_gdn_ops),         cmocka_unit_test(test_gdn_delta_net),
    };
    return test_run(tests, nullptr, teardown);
}
