// Every op of the Vulkan backend against the CPU backend (the reference) on
// random inputs: get_rows and matmul (decode and batched) for every weight
// type the CPU computes with (Q5_0, Q5_1 and the k-quants included),
// rmsnorm, kv_encode in each codec with and without the Hadamard rotation, cache_attention over dense and streaming caches (sinks filling,
// wrapped ring, batches, stream positions past 2^32, GQA, partial and NeoX
// RoPE), attention over a layer with the model's own sliding window
// (through SessionMemory, keys kept rotated in a ring), swiglu, geglu, scale,
// add, copy and large transfers; the RWKV-7 ops (norm_affine,
// token_shift_mix, activate, rwkv7_prepare, wkv7, rwkv7_bonus_gate) and the
// Gated DeltaNet ops (silu, sigmoid_mul, gated_rmsnorm, l2norm, delta_gates,
// ssm_conv, copy_2d, delta_net and delta_net_chunked). Each runs on the
// device's preferred paths and again with subgroup operations and doubles
// switched off (the fallbacks). The Vulkan validation layer runs throughout
// (when installed) and must report no error. Exits 77 (ctest's skip) when the
// Vulkan backend is not built or there is no Vulkan device.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "kv/codec.h"
#include "testutil.h"
#include "kv/memory.h"

// cmocka.h last: its fail() macro would rewrite kvfit::fail.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace kvfit;

namespace {

const uint32_t kWeightTypes[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0, TYPE_Q4_1};
// Q5_x (activations Q8_0 / Q8_1) and the k-quants (activations Q8_K).
const uint32_t kMoreTypes[] = {TYPE_Q4_K, TYPE_Q6_K, TYPE_Q5_0, TYPE_Q5_K, TYPE_Q5_1};
bool is_kquant(uint32_t t) { return t == TYPE_Q4_K || t == TYPE_Q5_K || t == TYPE_Q6_K; }
const char *type_name(uint32_t t) { return type_info(t)->name; }
bool is_float_type(uint32_t t) { return t == TYPE_F32 || t == TYPE_F16 || t == TYPE_BF16; }

// Validation messages and other warnings, shown with the test's output.
void print_log(kvfit_log_level, const char *msg, void *) { std::printf("%s\n", msg); }

// The backends under test: the device's preferred paths, then the fallbacks.
struct Setup {
    std::unique_ptr<Backend> cpu;
    std::vector<std::pair<std::string, std::unique_ptr<Backend>>> vk;
};
Setup *g;

constexpr int kMaxTokens = 64;
constexpr int64_t kMaxCols = 768;
constexpr int kMaxKv = 1300;

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v) {
        x = dist(rng);
        if (rng() % 97 == 0) x *= 20.0f;  // outliers, as activations have
    }
    return v;
}

// A weight tensor in GGUF layout (kept alive by the caller).
struct HostWeight {
    std::vector<uint8_t> bytes;
    GGUFTensor t;
};

// An F32 vector uploaded as a weight (norm weights).
struct F32Weight {
    std::vector<uint8_t> bytes;
    GGUFTensor t;
    Weight w;
};

// k-quant super-blocks of random bytes (any bytes make a valid block) with
// fp16 factors chosen so that weights come out at a few hundredths.
void random_kquant_row(uint32_t type, uint8_t *dst, int64_t cols, std::mt19937 &rng) {
    const size_t bs = type_info(type)->block_bytes;
    std::uniform_real_distribution<float> f(0.5f, 1.5f);
    for (int64_t b = 0; b < cols / QK_K; b++) {
        uint8_t *blk = dst + size_t(b) * bs;
        for (size_t i = 0; i < bs; i++) blk[i] = uint8_t(rng() >> 24);
        const uint16_t d = fp32_to_fp16(f(rng) * (type == TYPE_Q6_K ? 1.5e-5f : type == TYPE_Q4_K ? 1.2e-4f : 6e-5f));
        if (type == TYPE_Q6_K) {
            std::memcpy(blk + offsetof(BlockQ6_K, d), &d, 2);
        } else {
            const uint16_t m = fp32_to_fp16(f(rng) * 7e-4f);
            std::memcpy(blk, &d, 2);
            std::memcpy(blk + 2, &m, 2);
        }
    }
}

HostWeight make_weight(uint32_t type, int64_t rows, int64_t cols, uint32_t seed) {
    HostWeight w;
    const size_t rb = row_bytes(type, cols);
    w.bytes.resize(rb * size_t(rows));
    if (type == TYPE_Q4_K || type == TYPE_Q5_K || type == TYPE_Q6_K) {
        std::mt19937 rng(seed);
        for (int64_t r = 0; r < rows; r++) random_kquant_row(type, w.bytes.data() + size_t(r) * rb, cols, rng);
    }
    const std::vector<float> f = random_floats(size_t(rows * cols), seed, 0.05f);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = f.data() + r * cols;
        uint8_t *y = w.bytes.data() + size_t(r) * rb;
        switch (type) {
            case TYPE_Q4_0: quantize_row_q4_0_ref(x, reinterpret_cast<BlockQ4_0 *>(y), cols); break;
            case TYPE_Q4_1: quantize_row_q4_1_ref(x, reinterpret_cast<BlockQ4_1 *>(y), cols); break;
            case TYPE_Q8_0: quantize_row_q8_0_ref(x, reinterpret_cast<BlockQ8_0 *>(y), cols); break;
            case TYPE_Q5_0: quantize_row_q5_0_ref(x, reinterpret_cast<BlockQ5_0 *>(y), cols); break;
            case TYPE_Q5_1: quantize_row_q5_1_ref(x, reinterpret_cast<BlockQ5_1 *>(y), cols); break;
            case TYPE_Q4_K:
            case TYPE_Q5_K:
            case TYPE_Q6_K: break;  // random blocks, above
            default: kernels_scalar().quantize_row(type, x, y, cols); break;
        }
    }
    w.t.name = "w";
    w.t.type = type;
    w.t.n_dims = 2;
    w.t.ne[0] = cols;
    w.t.ne[1] = rows;
    w.t.nbytes = w.bytes.size();
    w.t.data = w.bytes.data();
    return w;
}

// The same bytes on both streams.
struct Pair {
    void *c = nullptr, *v = nullptr;
    size_t bytes = 0;
};

Pair pair_of(Stream &cs, Stream &vs, const void *host, size_t bytes) {
    Pair p{cs.alloc(bytes), vs.alloc(bytes), bytes};
    if (host) {
        cs.upload(p.c, host, bytes);
        vs.upload(p.v, host, bytes);
    }
    return p;
}

template <class T>
Pair pair_of(Stream &cs, Stream &vs, const std::vector<T> &v) {
    return pair_of(cs, vs, v.data(), v.size() * sizeof(T));
}

template <class T>
std::vector<T> fetch(Stream &s, const void *p, size_t n) {
    std::vector<T> out(n);
    s.download(out.data(), p, n * sizeof(T));
    s.synchronize();
    return out;
}

// max |a - b| / max |b|: one number per op, as backend-ops tests report it.
double rel_error(const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        num = std::max(num, double(std::fabs(a[i] - b[i])));
        den = std::max(den, double(std::fabs(b[i])));
    }
    return den > 0 ? num / den : num;
}

// Bit for bit where the device reproduces the CPU's arithmetic (exact), else within tol.
void expect_same(bool exact, const char *what, const std::vector<float> &got, const std::vector<float> &ref, double tol);

void expect_close(const char *what, const std::vector<float> &got, const std::vector<float> &ref, double tol) {
    const double e = rel_error(got, ref);
    if (!(e <= tol)) {
        std::printf("%s: relative error %.3g exceeds %.3g\n", what, e, tol);
        fail();
    }
}

void expect_same(bool exact, const char *what, const std::vector<float> &got, const std::vector<float> &ref, double tol) {
    if (!exact) return expect_close(what, got, ref, tol);
    size_t differ = 0;
    for (size_t i = 0; i < ref.size(); i++) differ += std::memcmp(&got[i], &ref[i], sizeof(float)) != 0;
    if (differ) {
        std::printf("%s: %zu of %zu values differ from the CPU's bits (relative error %.3g)\n", what, differ, ref.size(),
                    rel_error(got, ref));
        fail();
    }
}

// Runs body(cpu stream, vulkan stream, label) for every Vulkan configuration.
template <class Body>
void each_backend(Body body) {
    for (auto &vk : g->vk) {
        auto cs = g->cpu->create_stream(2, kMaxTokens, kMaxCols, kMaxKv);
        auto vs = vk.second->create_stream(2, kMaxTokens, kMaxCols, kMaxKv);
        body(*g->cpu, *vk.second, *cs, *vs, vk.first.c_str());
        vs.reset();
    }
    assert_int_equal(vulkan_validation_errors(), 0);
}

// Encoded KV bytes: identical where the device divides
// exactly as the CPU does (with doubles); else a division rounded the other
// way may move a code or scale by one step, rarely.
void compare_codes(const char *what, KVCodec c, const std::vector<uint8_t> &ref, const std::vector<uint8_t> &got) {
    size_t same = 0;
    for (size_t i = 0; i < ref.size(); i++) same += ref[i] == got[i];
    if (same == ref.size()) return;
    std::printf("%s: %zu of %zu bytes differ\n", what, ref.size() - same, ref.size());
    assert_true(c != KVCodec::F16);
    // every value within one step (the group's scale, its first two bytes) of the CPU's
    const size_t gb = codec_row_bytes(c, KV_GROUP);
    for (size_t g = 0; g < ref.size() / gb; g++) {
        float dr[KV_GROUP], dg[KV_GROUP];
        codec_decode(c, ref.data() + g * gb, dr, KV_GROUP);
        codec_decode(c, got.data() + g * gb, dg, KV_GROUP);
        const float step = fp16_to_fp32(uint16_t(ref[g * gb] | ref[g * gb + 1] << 8));
        for (int i = 0; i < KV_GROUP; i++) assert_true(std::fabs(dg[i] - dr[i]) <= 1.01f * step + 1e-6f);
    }
    assert_true(same * 100 >= ref.size() * 99);
}

// ---------------------------------------------------------------------------

void test_get_rows(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        std::vector<uint32_t> types(std::begin(kWeightTypes), std::end(kWeightTypes));
        types.insert(types.end(), std::begin(kMoreTypes), std::end(kMoreTypes));
        for (uint32_t type : types) {
            // 3000 rows: F32 needs more than one 1 MiB binding in the fallback configuration
            const size_t cols = is_kquant(type) ? 512 : 96;
            HostWeight hw = make_weight(type, 3000, int64_t(cols), 11 + type);
            const Weight wc = cb.upload_weight(hw.t), wv = vb.upload_weight(hw.t);
            const std::vector<int32_t> ids = {0, 2999, 5, 5, 2017, 2};
            Pair pi = pair_of(cs, vs, ids);
            Pair px = pair_of(cs, vs, nullptr, ids.size() * cols * 4);
            cs.get_rows(wc, static_cast<int32_t *>(pi.c), int(ids.size()), static_cast<float *>(px.c));
            vs.get_rows(wv, static_cast<int32_t *>(pi.v), int(ids.size()), static_cast<float *>(px.v));
            // dequantization is exact: bit for bit
            if (fetch<float>(cs, px.c, ids.size() * cols) != fetch<float>(vs, px.v, ids.size() * cols)) {
                std::printf("%s: get_rows of %s differs\n", label, type_name(type));
                fail();
            }
        }
    });
}

void test_rmsnorm(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const int n = 5, d = 200;
        std::vector<float> x = random_floats(size_t(n * d), 3), gw = random_floats(size_t(d), 4);
        HostWeight hg;
        hg.bytes.resize(size_t(d) * 4);
        std::memcpy(hg.bytes.data(), gw.data(), hg.bytes.size());
        hg.t.type = TYPE_F32;
        hg.t.ne[0] = d;
        hg.t.data = hg.bytes.data();
        const Weight gc = cb.upload_weight(hg.t), gv = vb.upload_weight(hg.t);
        Pair px = pair_of(cs, vs, x), py = pair_of(cs, vs, nullptr, x.size() * 4);
        cs.rmsnorm(static_cast<float *>(px.c), gc, 1e-5f, n, static_cast<float *>(py.c));
        vs.rmsnorm(static_cast<float *>(px.v), gv, 1e-5f, n, static_cast<float *>(py.v));
        expect_same(vb.reproduces_cpu(), (std::string(label) + " rmsnorm").c_str(), fetch<float>(vs, py.v, x.size()),
                    fetch<float>(cs, py.c, x.size()), 1e-6);
    });
}

void test_matmul(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        for (uint32_t type : kWeightTypes) {
            // an odd row length for the float types, 3 blocks for the quantized ones
            // 2100 F32 rows need more than one 1 MiB binding in the fallback configuration
            const int64_t cols = is_float_type(type) ? 131 : 96, rows = type == TYPE_F32 ? 2100 : 70;
            HostWeight hw = make_weight(type, rows, cols, 21 + type);
            const Weight wc = cb.upload_weight(hw.t), wv = vb.upload_weight(hw.t);
            for (int n : {1, 3, 9, 17}) {
                std::vector<float> x = random_floats(size_t(n * cols), uint32_t(n * 7 + type));
                Pair px = pair_of(cs, vs, x), py = pair_of(cs, vs, nullptr, size_t(n * rows) * 4);
                cs.matmul(wc, static_cast<float *>(px.c), n, static_cast<float *>(py.c));
                vs.matmul(wv, static_cast<float *>(px.v), n, static_cast<float *>(py.v));
                const std::string what = std::string(label) + " matmul " + type_name(type) + " n=" + std::to_string(n);
                // quantized: the CPU's order of operations; float types: the same products summed in another order
                expect_same(vb.reproduces_cpu() && !is_float_type(type), what.c_str(), fetch<float>(vs, py.v, size_t(n * rows)),
                            fetch<float>(cs, py.c, size_t(n * rows)), 2e-6);
            }
        }
    });
}

// Q5_x and the k-quants: decode and batched products, odd row counts,
// several row lengths; the CPU's bits where the device has doubles.
void test_matmul_more_types(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        for (uint32_t type : kMoreTypes) {
            const std::vector<int64_t> col_counts =
                is_kquant(type) ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{96, 352};
            for (int64_t cols : col_counts) {
                const int64_t rows = cols == col_counts[0] ? 67 : 29;
                HostWeight hw = make_weight(type, rows, cols, 31 + type + uint32_t(cols));
                const Weight wc = cb.upload_weight(hw.t), wv = vb.upload_weight(hw.t);
                for (int n : {1, 3, 9, 17, 64}) {
                    std::vector<float> x = random_floats(size_t(n * cols), uint32_t(n * 13 + type + cols));
                    const int64_t block = is_kquant(type) ? QK_K : QK;
                    if (n == 3) std::fill(x.begin() + cols, x.begin() + cols + block, 0.0f);  // an all-zero block
                    Pair px = pair_of(cs, vs, x), py = pair_of(cs, vs, nullptr, size_t(n * rows) * 4);
                    cs.matmul(wc, static_cast<float *>(px.c), n, static_cast<float *>(py.c));
                    vs.matmul(wv, static_cast<float *>(px.v), n, static_cast<float *>(py.v));
                    const std::string what = std::string(label) + " matmul " + type_name(type) + " " +
                                             std::to_string(rows) + "x" + std::to_string(cols) + " n=" + std::to_string(n);
                    expect_same(vb.reproduces_cpu(), what.c_str(), fetch<float>(vs, py.v, size_t(n * rows)),
                                fetch<float>(cs, py.c, size_t(n * rows)), 2e-6);
                }
            }
        }
    });
}

void test_kv_encode(void **) {
    each_backend([](Backend &, Backend &, Stream &cs, Stream &vs, const char *label) {
        const int n = 4, heads = 3, hd = 64;
        for (KVCodec c : {KVCodec::F16, KVCodec::Q8, KVCodec::Q4}) {
            for (bool had : {false, true}) {
                std::vector<float> x = random_floats(size_t(n * heads * hd), 5 + int(c) * 2 + had);
                x[7] = 0.0f;
                std::fill(x.begin() + 64, x.begin() + 96, 0.25f);  // a constant group
                const size_t hb = codec_row_bytes(c, hd), total = size_t(n * heads) * hb;
                Pair px = pair_of(cs, vs, x), pd = pair_of(cs, vs, nullptr, total);
                cs.kv_encode(int(c), had, static_cast<float *>(px.c), n, heads, hd, static_cast<uint8_t *>(pd.c));
                vs.kv_encode(int(c), had, static_cast<float *>(px.v), n, heads, hd, static_cast<uint8_t *>(pd.v));
                // The rotated input is written back identically (same additions in the same order).
                if (had && fetch<float>(cs, px.c, x.size()) != fetch<float>(vs, px.v, x.size())) {
                    std::printf("%s: Hadamard rotation of codec %s differs\n", label, codec_name(c));
                    fail();
                }
                const std::string what = std::string(label) + " kv_encode " + codec_name(c) + (had ? "+H" : "");
                compare_codes(what.c_str(), c, fetch<uint8_t>(cs, pd.c, total), fetch<uint8_t>(vs, pd.v, total));
            }
        }
    });
}

// The RoPE table a KV cache builds (positions 0 .. count-1).
std::vector<float> rope_table(int n_dims, int count, float base) {
    const int half = n_dims / 2;
    std::vector<float> cs(size_t(count) * size_t(half) * 2);
    const float theta_scale = std::pow(base, -2.0f / float(n_dims));
    for (int pos = 0; pos < count; pos++) {
        float theta = float(pos);
        for (int i = 0; i < half; i++) {
            cs[(size_t(pos) * half + i) * 2] = std::cos(theta);
            cs[(size_t(pos) * half + i) * 2 + 1] = std::sin(theta);
            theta *= theta_scale;
        }
    }
    return cs;
}

// A cache's buffers, the same bytes on both streams (k_sink, k_res: channel keys only).
struct CacheBuffers {
    Pair k, v, k_new, v_new, k_sink, k_res;
};

// One attention over the cache on both backends, random queries, compared.
void attend_both(Stream &cs, Stream &vs, const CacheAttention &a, const CacheBuffers &b, uint32_t seed, const char *what,
                 bool exact = false) {
    const int positions = a.streaming ? int(a.n_sink + 2 * a.n_window) : int(a.n_window);
    Pair rc = pair_of(cs, vs, rope_table(a.rope.n_dims, positions, 10000.0f));
    std::vector<float> q = random_floats(size_t(a.n_q * a.n_head * a.head_dim), seed);
    Pair pq = pair_of(cs, vs, q), po = pair_of(cs, vs, nullptr, q.size() * 4);
    for (int side = 0; side < 2; side++) {
        auto on = [&](const Pair &p) { return static_cast<uint8_t *>(side ? p.v : p.c); };
        CacheAttention x = a;
        x.k = on(b.k);
        x.v = on(b.v);
        x.k_new = on(b.k_new);
        x.v_new = on(b.v_new);
        x.k_sink = on(b.k_sink);
        x.k_res = on(b.k_res);
        x.rope_cs = reinterpret_cast<float *>(on(rc));
        (side ? vs : cs).cache_attention(x, reinterpret_cast<float *>(on(pq)), reinterpret_cast<float *>(on(po)));
    }
    expect_same(exact, what, fetch<float>(vs, po.v, q.size()), fetch<float>(cs, po.c, q.size()), 2e-5);
}

struct AttnCase {
    bool streaming;
    uint32_t S, W;
    uint64_t pos0;
    int n_q;
};

// Six query heads over two KV heads of 64 values, RoPE on every pair.
constexpr int kHeads = 6, kHeadsKv = 2, kHeadDim = 64;

CacheAttention attention_of(const AttnCase &ac, KVCodec c, bool hadamard) {
    CacheAttention a;
    a.n_q = ac.n_q;
    a.n_head = kHeads;
    a.n_head_kv = kHeadsKv;
    a.head_dim = kHeadDim;
    a.pos0 = ac.pos0;
    a.n_sink = ac.S;
    a.n_window = ac.W;
    a.streaming = ac.streaming;
    a.codec = int(c);
    a.hadamard = hadamard;
    a.head_bytes = codec_row_bytes(c, kHeadDim);
    a.row_bytes = a.head_bytes * kHeadsKv;
    a.rope.n_dims = kHeadDim;
    a.scale = 1.0f / std::sqrt(float(kHeadDim));
    return a;
}

void test_attention(void **) {
    const AttnCase cases[] = {
        {false, 0, 48, 0, 7},            // dense prefill
        {false, 0, 48, 20, 1},           // dense decode
        {false, 0, 48, 30, 9},           // dense batch after earlier tokens
        {true, 4, 16, 0, 3},             // streaming: the batch fills sinks
        {true, 4, 16, 2, 5},             // ... straddles sinks and window
        {true, 4, 16, 37, 1},            // wrapped ring, decode
        {true, 4, 16, 101, 12},          // wrapped ring, batch
        {true, 4, 16, 5000000000ull, 3}, // stream positions past 2^32
        {true, 0, 24, 77, 1},            // no sinks
        {false, 0, 1200, 1000, 1},       // many keys: split over workgroups and merged
        {true, 4, 600, 5000, 2},         // ... with sinks, a wrapped ring and two queries
    };
    each_backend([&](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const int n_head_kv = kHeadsKv, hd = kHeadDim;
        int seed = 1;
        for (const AttnCase &ac : cases) {
            for (int variant = 0; variant < 5; variant++) {
                // F16, Q8, Q4, Q4 + Hadamard keys; then F16 with partial NeoX rotation
                const KVCodec c = variant == 1 ? KVCodec::Q8 : variant == 2 || variant == 3 ? KVCodec::Q4 : KVCodec::F16;
                const bool had = variant == 3;
                CacheAttention a = attention_of(ac, c, had);
                if (variant == 4) {
                    a.rope.n_dims = 32;
                    a.rope.mode = RopeMode::Neox;
                }
                const int slots = int(ac.S + ac.W);
                // Encoded cache rows and staged rows, the same bytes on both sides.
                auto encoded = [&](int rows, bool keys) {
                    std::vector<float> f = random_floats(size_t(rows * n_head_kv * hd), uint32_t(seed++));
                    std::vector<uint8_t> out(size_t(rows) * a.row_bytes);
                    for (int r = 0; r < rows * n_head_kv; r++) {
                        if (keys && had) hadamard_rotate(f.data() + size_t(r) * hd, hd);
                        codec_encode(c, f.data() + size_t(r) * hd, out.data() + size_t(r) * a.head_bytes, hd);
                    }
                    return out;
                };
                CacheBuffers b;
                b.k = pair_of(cs, vs, encoded(slots, true));
                b.v = pair_of(cs, vs, encoded(slots, false));
                b.k_new = pair_of(cs, vs, encoded(ac.n_q, true));
                b.v_new = pair_of(cs, vs, encoded(ac.n_q, false));
                char what[160];
                std::snprintf(what, sizeof what, "%s attention %s S=%u W=%u pos0=%llu n_q=%d %s%s%s", label,
                              ac.streaming ? "streaming" : "dense", ac.S, ac.W, (unsigned long long)ac.pos0, ac.n_q,
                              codec_name(c), had ? "+H" : "", variant == 4 ? " neox/32" : "");
                attend_both(cs, vs, a, b, uint32_t(seed++), what, vb.reproduces_cpu());
            }
        }
    });
}

// Dense F16 caches whose keys are stored after RoPE (Stream::rope_keys): the
// rotation itself, and attention, which below 64 queries follows llama.cpp's
// order of operations (ggml_order.h) and from 64 on kvfit's own
// (attention_order.h); either way the CPU's bits.
void test_rotated_keys(void **) {
    each_backend([&](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        for (int variant = 0; variant < 2; variant++) {
            AttnCase rc{false, 0, 48, 37, 5};
            CacheAttention a = attention_of(rc, KVCodec::F16, false);
            if (variant) {
                a.rope.n_dims = 32;
                a.rope.mode = RopeMode::Neox;
            }
            Pair tab = pair_of(cs, vs, rope_table(a.rope.n_dims, 48, 10000.0f));
            std::vector<float> k = random_floats(size_t(5 * kHeadsKv * kHeadDim), 31u + uint32_t(variant));
            Pair pk = pair_of(cs, vs, k);
            for (int side = 0; side < 2; side++) {
                CacheAttention x = a;
                x.rope_cs = static_cast<float *>(side ? tab.v : tab.c);
                (side ? vs : cs).rope_keys(static_cast<float *>(side ? pk.v : pk.c), 5, kHeadsKv, kHeadDim, 37, x);
            }
            const std::string what = std::string(label) + " rope_keys" + (variant ? " neox/32" : "");
            // fmas only: bit for bit wherever fma is exact
            expect_same(exact, what.c_str(), fetch<float>(vs, pk.v, k.size()), fetch<float>(cs, pk.c, k.size()), 1e-6);
        }
        const AttnCase cases[] = {
            {false, 0, 48, 0, 7},        // prefill
            {false, 0, 48, 20, 1},       // decode
            {false, 0, 48, 30, 9},       // a batch after earlier tokens
            {false, 0, 1200, 1000, 1},   // many keys
            {false, 0, 1200, 900, 63},   // the largest batch in the CPU's order
            {false, 0, 1200, 900, 64},   // from here kvfit's own order (attention_order.h)
        };
        int seed = 500;
        for (const AttnCase &ac : cases)
            for (int variant = 0; variant < 2; variant++) {
                CacheAttention a = attention_of(ac, KVCodec::F16, false);
                a.keys_rotated = true;
                if (variant) {
                    a.rope.n_dims = 32;
                    a.rope.mode = RopeMode::Neox;
                }
                auto rows = [&](int n) {
                    std::vector<float> f = random_floats(size_t(n * kHeadsKv * kHeadDim), uint32_t(seed++));
                    std::vector<uint8_t> out(f.size() * 2);
                    codec_encode(KVCodec::F16, f.data(), out.data(), int(f.size()));
                    return out;
                };
                CacheBuffers b;
                b.k = pair_of(cs, vs, rows(int(ac.W)));
                b.v = pair_of(cs, vs, rows(int(ac.W)));
                b.k_new = pair_of(cs, vs, rows(ac.n_q));
                b.v_new = pair_of(cs, vs, rows(ac.n_q));
                char what[160];
                std::snprintf(what, sizeof what, "%s rotated-key attention pos0=%llu n_q=%d%s", label,
                              (unsigned long long)ac.pos0, ac.n_q, variant ? " neox/32" : "");
                attend_both(cs, vs, a, b, uint32_t(seed++), what, exact);
            }
    });
}

// Per-channel key blocks (KVFIT_KV_Q4_CHANNEL): packing 32 F16 rows, and
// attention reading sinks, the block being filled and packed blocks.
void test_channel_keys(void **) {
    const AttnCase cases[] = {
        {true, 4, 64, 2, 5},             // the batch fills sinks
        {true, 4, 64, 37, 1},            // decode inside the first block
        {true, 4, 64, 150, 12},          // wrapped ring, batch across a block boundary
        {true, 4, 64, 5000000011ull, 3}, // past 2^32
        {false, 0, 96, 40, 7},           // dense
        {true, 4, 640, 5000, 2},         // many keys: split and merged
    };
    each_backend([&](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const int n_head_kv = kHeadsKv, hd = kHeadDim, width = n_head_kv * hd;
        // packing
        std::vector<float> f = random_floats(size_t(32 * width), 77);
        std::vector<uint8_t> rows(size_t(32 * width) * 2);
        codec_encode(KVCodec::F16, f.data(), rows.data(), 32 * width);
        const size_t block = size_t(n_head_kv) * channel_block_bytes(hd);
        Pair pr = pair_of(cs, vs, rows), pb = pair_of(cs, vs, nullptr, block);
        cs.kv_encode_channels(static_cast<uint8_t *>(pr.c), n_head_kv, hd, static_cast<uint8_t *>(pb.c));
        vs.kv_encode_channels(static_cast<uint8_t *>(pr.v), n_head_kv, hd, static_cast<uint8_t *>(pb.v));
        compare_codes((std::string(label) + " kv_encode_channels").c_str(), KVCodec::Q4, fetch<uint8_t>(cs, pb.c, block),
                      fetch<uint8_t>(vs, pb.v, block));
        int seed = 100;
        for (const AttnCase &ac : cases) {
            CacheAttention a = attention_of(ac, KVCodec::Q4, false);
            a.channel_keys = true;
            a.k_block_bytes = block;
            // every stored row encoded from random floats
            auto f16_rows = [&](int n) {
                std::vector<float> v = random_floats(size_t(n * width), uint32_t(seed++));
                std::vector<uint8_t> out(v.size() * 2);
                codec_encode(KVCodec::F16, v.data(), out.data(), int(v.size()));
                return out;
            };
            auto q4_rows = [&](int n) {
                std::vector<float> v = random_floats(size_t(n * width), uint32_t(seed++));
                std::vector<uint8_t> out(size_t(n) * a.row_bytes);
                for (int r = 0; r < n * n_head_kv; r++)
                    codec_encode(KVCodec::Q4, v.data() + size_t(r) * hd, out.data() + size_t(r) * a.head_bytes, hd);
                return out;
            };
            std::vector<uint8_t> blocks(size_t(ac.W / 32) * block);
            for (size_t b = 0; b < ac.W / 32; b++) {
                std::vector<float> v = random_floats(size_t(32 * width), uint32_t(seed++));
                for (int g = 0; g < n_head_kv; g++)
                    channel_block_encode(v.data() + size_t(g) * hd, size_t(width),
                                         blocks.data() + b * block + size_t(g) * channel_block_bytes(hd), hd);
            }
            CacheBuffers b;
            b.k = pair_of(cs, vs, blocks);
            b.v = pair_of(cs, vs, q4_rows(int(ac.S + ac.W)));
            b.k_sink = pair_of(cs, vs, f16_rows(std::max<int>(1, int(ac.S))));
            b.k_res = pair_of(cs, vs, f16_rows(32));
            b.k_new = pair_of(cs, vs, f16_rows(ac.n_q));
            b.v_new = pair_of(cs, vs, q4_rows(ac.n_q));
            char what[160];
            std::snprintf(what, sizeof what, "%s channel-key attention %s S=%u W=%u pos0=%llu n_q=%d", label,
                          ac.streaming ? "streaming" : "dense", ac.S, ac.W, (unsigned long long)ac.pos0, ac.n_q);
            attend_both(cs, vs, a, b, uint32_t(seed++), what, vb.reproduces_cpu());
        }
    });
}

void test_elementwise(void **) {
    each_backend([](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        // 1000 values: the last 8 (past the whole groups of 16) take the C library's exp on the CPU
        const size_t n = 1000;
        std::vector<float> a = random_floats(n, 1, 4.0f), b = random_floats(n, 2);
        const float extremes[] = {0.0f, -0.0f, 88.0f, -88.0f, 104.0f, -104.0f, 200.0f, -200.0f, 1e-30f, -1e-30f};
        for (size_t i = 0; i < 10; i++) a[100 + i] = a[990 + i] = extremes[i];
        Pair pa = pair_of(cs, vs, a), pb = pair_of(cs, vs, b), pc = pair_of(cs, vs, nullptr, n * 4);
        cs.swiglu(static_cast<float *>(pa.c), static_cast<float *>(pb.c), n, static_cast<float *>(pc.c));
        vs.swiglu(static_cast<float *>(pa.v), static_cast<float *>(pb.v), n, static_cast<float *>(pc.v));
        const bool exact = vb.reproduces_cpu();
        expect_same(exact, (std::string(label) + " swiglu").c_str(), fetch<float>(vs, pc.v, n), fetch<float>(cs, pc.c, n), 1e-6);
        // in place, as the forward pass calls it
        cs.swiglu(static_cast<float *>(pa.c), static_cast<float *>(pb.c), n, static_cast<float *>(pa.c));
        vs.swiglu(static_cast<float *>(pa.v), static_cast<float *>(pb.v), n, static_cast<float *>(pa.v));
        expect_same(exact, (std::string(label) + " swiglu in place").c_str(), fetch<float>(vs, pa.v, n),
                    fetch<float>(cs, pa.c, n), 1e-6);
        // add is exact: inputs that are the same on both sides
        Pair pd = pair_of(cs, vs, a);
        cs.add(static_cast<float *>(pb.c), static_cast<float *>(pd.c), n);
        vs.add(static_cast<float *>(pb.v), static_cast<float *>(pd.v), n);
        if (fetch<float>(vs, pb.v, n) != fetch<float>(cs, pb.c, n)) {
            std::printf("%s: add differs\n", label);
            fail();
        }
        // device copy between unaligned offsets of two buffers
        vs.copy(static_cast<uint8_t *>(pc.v) + 6, static_cast<uint8_t *>(pb.v) + 10, 333);
        const auto src = fetch<uint8_t>(vs, pb.v, n * 4), dst = fetch<uint8_t>(vs, pc.v, n * 4);
        assert_memory_equal(dst.data() + 6, src.data() + 10, 333);
    });
}

// Equal bits, or NaN on both sides (which NaN an operation returns is not
// part of its result).
void expect_bits(const char *what, const std::vector<float> &got, const std::vector<float> &ref) {
    size_t differ = 0, first = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        const bool same = std::isnan(ref[i]) ? std::isnan(got[i]) : std::memcmp(&got[i], &ref[i], sizeof(float)) == 0;
        if (!same && !differ++) first = i;
    }
    if (differ) {
        std::printf("%s: %zu of %zu values differ from the CPU's bits; the first at %zu: %.9g vs %.9g\n", what, differ,
                    ref.size(), first, double(got[first]), double(ref[first]));
        fail();
    }
}

// Inputs for scale and geglu: every F16 value (the whole domain of the GELU
// table), the midpoints between neighbouring F16 values (rounding to even),
// the +-10 cut-offs and their float neighbours, infinities, NaN, signed
// zeros, float subnormals and extremes, then random floats; 68000-odd values,
// not a multiple of the workgroup size.
std::vector<float> gelu_inputs() {
    std::vector<float> x;
    for (uint32_t h = 0; h < 65536; h++) x.push_back(fp16_to_fp32(uint16_t(h)));
    for (uint32_t h : {0x0001u, 0x03feu, 0x3bffu, 0x3c00u, 0x4170u, 0x48ffu, 0x7bfeu, 0x8001u, 0xbc00u, 0xc8ffu, 0xfbfeu})
        for (uint32_t k = 0; k < 40; k++) {
            const double a = fp16_to_fp32(uint16_t(h + k)), b = fp16_to_fp32(uint16_t(h + k + 1));
            x.push_back(float((a + b) / 2));  // exact: one bit more than a half
        }
    for (float e : {-10.0f, 10.0f})
        x.insert(x.end(), {e, std::nextafter(e, 0.0f), std::nextafter(e, 2 * e)});
    x.insert(x.end(), {INFINITY, -INFINITY, NAN, -NAN, 0.0f, -0.0f, 1e-40f, -1e-40f, FLT_MIN, FLT_MAX, -FLT_MAX,
                       65519.0f, 65520.0f, -65520.0f, 9.999999f, -9.999999f});
    const std::vector<float> r = random_floats(2001, 41, 4.0f);
    x.insert(x.end(), r.begin(), r.end());
    return x;
}

void test_scale_geglu(void **) {
    each_backend([](Backend &, Backend &, Stream &cs, Stream &vs, const char *label) {
        const std::vector<float> x = gelu_inputs();
        const size_t n = x.size();
        assert_true(n % 64 != 0);
        std::vector<float> up = random_floats(n, 42);
        // special factors on random positions of the table's range, and on the specials
        const float up_special[] = {INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1e-30f, 1e30f, 1e-45f};
        for (size_t i = 0; i < 8; i++) {
            up[1000 + 7919 * i] = up_special[i];
            up[n - 2001 - 1 - i] = up_special[i];
        }
        Pair px = pair_of(cs, vs, x), pu = pair_of(cs, vs, up), po = pair_of(cs, vs, nullptr, n * 4);
        // Every F16 input reaches the table: the GELU (up = 1) alone, then with the factors.
        const std::vector<float> ones(n, 1.0f);
        Pair p1 = pair_of(cs, vs, ones);
        for (const Pair *f : {&p1, &pu}) {
            cs.geglu(static_cast<float *>(px.c), static_cast<float *>(f->c), n, static_cast<float *>(po.c));
            vs.geglu(static_cast<float *>(px.v), static_cast<float *>(f->v), n, static_cast<float *>(po.v));
            const std::string what = std::string(label) + (f == &p1 ? " geglu (up = 1)" : " geglu");
            expect_bits(what.c_str(), fetch<float>(vs, po.v, n), fetch<float>(cs, po.c, n));
        }
        // in place (out = gate), as the forward pass calls it
        Pair pg = pair_of(cs, vs, x);
        cs.geglu(static_cast<float *>(pg.c), static_cast<float *>(pu.c), n, static_cast<float *>(pg.c));
        vs.geglu(static_cast<float *>(pg.v), static_cast<float *>(pu.v), n, static_cast<float *>(pg.v));
        expect_bits((std::string(label) + " geglu in place").c_str(), fetch<float>(vs, pg.v, n), fetch<float>(cs, pg.c, n));
        // scale: a plain product; factors exact and inexact, and results that underflow
        for (float f : {16.0f, 0.125f, 1.0f / std::sqrt(3.0f), -2.5f, 1e-3f, 0.0f}) {
            Pair ps = pair_of(cs, vs, x);
            cs.scale(static_cast<float *>(ps.c), n, f);
            vs.scale(static_cast<float *>(ps.v), n, f);
            char what[96];
            std::snprintf(what, sizeof what, "%s scale by %g", label, double(f));
            expect_bits(what, fetch<float>(vs, ps.v, n), fetch<float>(cs, ps.c, n));
        }
        // nothing to do for n = 0
        vs.scale(static_cast<float *>(px.v), 0, 2.0f);
        vs.geglu(static_cast<float *>(px.v), static_cast<float *>(pu.v), 0, static_cast<float *>(po.v));
        vs.synchronize();
    });
}


// ---------------------------------------------------------------------------
// Gated DeltaNet (qwen35): the recurrent layers' ops against the CPU's. Where
// the device reproduces the CPU (doubles), bit for bit, except the gates'
// softplus (the shader's logarithm; within 2e-6 relative). Without doubles
// (fma not fused, float exp and division), within the stated bounds.

F32Weight f32_weight(Backend &b, const std::vector<float> &v) {
    F32Weight w;
    w.bytes.resize(v.size() * 4);
    std::memcpy(w.bytes.data(), v.data(), w.bytes.size());
    w.t.type = TYPE_F32;
    w.t.n_dims = 1;
    w.t.ne[0] = int64_t(v.size());
    w.t.nbytes = w.bytes.size();
    w.t.data = w.bytes.data();
    w.w = b.upload_weight(w.t);
    return w;
}

// Reports the op's relative error (for the record), then compares.
void expect_gdn(bool exact, const std::string &what, const std::vector<float> &got, const std::vector<float> &ref,
                double tol) {
    std::printf("  %s: relative error %.3g%s\n", what.c_str(), rel_error(got, ref), exact ? " (must be 0)" : "");
    if (exact) expect_bits(what.c_str(), got, ref);
    else expect_close(what.c_str(), got, ref, tol);
}

void test_gdn_pointwise(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        const std::string L(label);
        // silu over 1000 values (the last 8 take the C library's exp), with extremes; out of place and in place
        const size_t n = 1000;
        std::vector<float> x = random_floats(n, 51, 4.0f), gte = random_floats(n, 52, 3.0f);
        const float extremes[] = {0.0f, -0.0f, 88.0f, -88.0f, 104.0f, -104.0f, 200.0f, -200.0f, 1e-30f, -1e-30f};
        for (size_t i = 0; i < 10; i++) x[100 + i] = x[990 + i] = gte[200 + i] = gte[991 + i / 2] = extremes[i];
        Pair px = pair_of(cs, vs, x), py = pair_of(cs, vs, nullptr, n * 4);
        cs.silu(static_cast<float *>(px.c), n, static_cast<float *>(py.c));
        vs.silu(static_cast<float *>(px.v), n, static_cast<float *>(py.v));
        expect_gdn(exact, L + " silu", fetch<float>(vs, py.v, n), fetch<float>(cs, py.c, n), 1e-6);
        cs.silu(static_cast<float *>(px.c), n, static_cast<float *>(px.c));
        vs.silu(static_cast<float *>(px.v), n, static_cast<float *>(px.v));
        expect_gdn(exact, L + " silu in place", fetch<float>(vs, px.v, n), fetch<float>(cs, px.c, n), 1e-6);
        // sigmoid_mul
        Pair pa = pair_of(cs, vs, x), pg = pair_of(cs, vs, gte);
        cs.sigmoid_mul(static_cast<float *>(pa.c), static_cast<float *>(pg.c), n);
        vs.sigmoid_mul(static_cast<float *>(pa.v), static_cast<float *>(pg.v), n);
        expect_gdn(exact, L + " sigmoid_mul", fetch<float>(vs, pa.v, n), fetch<float>(cs, pa.c, n), 1e-6);
        // gated_rmsnorm: rows of 72 (four whole groups of 16 and 8 more) and of 128; out of place and in place
        for (int d : {72, 128}) {
            const int rows = 7;
            const size_t m = size_t(rows) * size_t(d);
            const std::vector<float> xs = random_floats(m, 53 + d), zs = random_floats(m, 54 + d, 2.0f),
                                     ws = random_floats(size_t(d), 55 + d);
            const F32Weight wc = f32_weight(cb, ws), wv = f32_weight(vb, ws);
            Pair qx = pair_of(cs, vs, xs), qz = pair_of(cs, vs, zs), qy = pair_of(cs, vs, nullptr, m * 4);
            cs.gated_rmsnorm(static_cast<float *>(qx.c), wc.w, static_cast<float *>(qz.c), 1e-6f, rows, static_cast<float *>(qy.c));
            vs.gated_rmsnorm(static_cast<float *>(qx.v), wv.w, static_cast<float *>(qz.v), 1e-6f, rows, static_cast<float *>(qy.v));
            expect_gdn(exact, L + " gated_rmsnorm of " + std::to_string(d), fetch<float>(vs, qy.v, m),
                       fetch<float>(cs, qy.c, m), 2e-6);
            cs.gated_rmsnorm(static_cast<float *>(qx.c), wc.w, static_cast<float *>(qz.c), 1e-6f, rows, static_cast<float *>(qx.c));
            vs.gated_rmsnorm(static_cast<float *>(qx.v), wv.w, static_cast<float *>(qz.v), 1e-6f, rows, static_cast<float *>(qx.v));
            expect_gdn(exact, L + " gated_rmsnorm in place", fetch<float>(vs, qx.v, m), fetch<float>(cs, qx.c, m), 2e-6);
        }
    });
}

void test_gdn_norm_gates_conv(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        const std::string L(label);
        // l2norm of q and k heads inside rows of channels (the rest untouched): 9 tokens, 6 heads of 32, stride 300
        {
            const int n = 9, rows = 6, dim = 32;
            const size_t stride = 300, m = size_t(n) * stride;
            std::vector<float> x = random_floats(m, 61);
            for (int i = 0; i < dim; i++) x[stride + size_t(dim) + size_t(i)] = 0.0f;  // a zero row: eps keeps it finite
            Pair px = pair_of(cs, vs, x);
            cs.l2norm(static_cast<float *>(px.c), n, rows, dim, stride, 1e-6f);
            vs.l2norm(static_cast<float *>(px.v), n, rows, dim, stride, 1e-6f);
            expect_gdn(exact, L + " l2norm", fetch<float>(vs, px.v, m), fetch<float>(cs, px.c, m), 2e-6);
        }
        // gates: 11 tokens of 6 heads, softplus arguments on both sides of 20
        {
            const int n = 11, H = 6;
            const size_t m = size_t(n) * H;
            std::vector<float> al = random_floats(m, 62, 3.0f), be = random_floats(m, 63, 3.0f), dt = random_floats(H, 64),
                               aa = random_floats(H, 65);
            al[3] = 25.0f;
            al[4] = -30.0f;
            be[5] = 90.0f;
            be[6] = -90.0f;
            dt[3 % H] = 0.5f;
            Pair pal = pair_of(cs, vs, al), pbe = pair_of(cs, vs, be), pdt = pair_of(cs, vs, dt), paa = pair_of(cs, vs, aa);
            cs.delta_gates(static_cast<float *>(pal.c), static_cast<float *>(pbe.c), static_cast<float *>(pdt.c),
                           static_cast<float *>(paa.c), n, H);
            vs.delta_gates(static_cast<float *>(pal.v), static_cast<float *>(pbe.v), static_cast<float *>(pdt.v),
                           static_cast<float *>(paa.v), n, H);
            // the decay through the shader's log: a stated bound on every backend
            expect_gdn(false, L + " delta_gates g", fetch<float>(vs, pal.v, m), fetch<float>(cs, pal.c, m), 2e-6);
            expect_gdn(exact, L + " delta_gates beta", fetch<float>(vs, pbe.v, m), fetch<float>(cs, pbe.c, m), 1e-6);
        }
        // the causal convolution: kernel 4 over 200 channels, batches of 1, 2, 13 and 1 carrying the state
        {
            const int C = 200, K = 4;
            const std::vector<float> w = random_floats(size_t(C) * K, 66), st0 = random_floats(size_t(K - 1) * C, 67);
            Pair pw = pair_of(cs, vs, w), pst = pair_of(cs, vs, st0);
            uint32_t seed = 68;
            for (int n : {1, 2, 13, 1}) {
                const std::vector<float> x = random_floats(size_t(n) * C, seed++);
                Pair px = pair_of(cs, vs, x), py = pair_of(cs, vs, nullptr, x.size() * 4);
                cs.ssm_conv(static_cast<float *>(px.c), n, C, K, static_cast<float *>(pw.c), static_cast<float *>(pst.c),
                            static_cast<float *>(py.c));
                vs.ssm_conv(static_cast<float *>(px.v), n, C, K, static_cast<float *>(pw.v), static_cast<float *>(pst.v),
                            static_cast<float *>(py.v));
                expect_gdn(exact, L + " ssm_conv of " + std::to_string(n), fetch<float>(vs, py.v, x.size()),
                           fetch<float>(cs, py.c, x.size()), 1e-6);
                expect_gdn(exact, L + " ssm_conv state", fetch<float>(vs, pst.v, st0.size()), fetch<float>(cs, pst.c, st0.size()),
                           1e-6);
            }
        }
        // copy_2d: the q and gate halves of interleaved rows
        {
            const size_t rows = 37, hd = 24;
            const std::vector<float> src = random_floats(rows * 2 * hd, 69);
            Pair ps = pair_of(cs, vs, src), pd = pair_of(cs, vs, nullptr, rows * hd * 4);
            vs.copy_2d(pd.v, hd * 4, static_cast<float *>(ps.v) + hd, 2 * hd * 4, rows, hd * 4);
            const std::vector<float> got = fetch<float>(vs, pd.v, rows * hd);
            for (size_t r = 0; r < rows; r++) assert_memory_equal(&got[r * hd], &src[r * 2 * hd + hd], hd * 4);
        }
    });
}

// The delta rule over q, k, v laid out as the model's channels (q heads, k
// heads, v heads per token), unit-norm q and k, decays in (0.13, 1) and
// betas in (0, 1); batches carried through the state. Vulkan's recurrent form
// against the CPU's (bit for bit with doubles); its chunked entry (the
// recurrent kernel) against the CPU's recurrent form likewise, and the CPU's
// chunked scan within 2e-5.
void test_gdn_delta_net(void **) {
    each_backend([](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        struct Shape { int hk, hv, D; };
        for (const Shape sh : {Shape{2, 4, 16}, Shape{1, 2, 64}, Shape{2, 2, 128}, Shape{3, 6, 40}}) {
            const int D = sh.D, hk = sh.hk, hv = sh.hv;
            const size_t ch = size_t(2 * hk + hv) * size_t(D), S = size_t(hv) * D * D;
            std::mt19937 rng(uint32_t(D * 7 + hv));
            std::uniform_real_distribution<float> ug(-2.0f, -0.002f), ub(0.02f, 0.98f);
            const std::vector<float> s0 = random_floats(S, uint32_t(70 + D), 0.1f);
            Pair st_c = pair_of(cs, vs, s0), st_k = pair_of(cs, vs, s0), st_r = pair_of(cs, vs, s0);
            char what[160];
            for (int n : {1, 37, 1, 64, 3}) {
                std::vector<float> qkv = random_floats(size_t(n) * ch, uint32_t(rng()));
                for (int t = 0; t < n; t++)
                    for (int r = 0; r < 2 * hk; r++) {
                        float *v = &qkv[size_t(t) * ch + size_t(r) * D];
                        double ss = 0;
                        for (int i = 0; i < D; i++) ss += double(v[i]) * v[i];
                        for (int i = 0; i < D; i++) v[i] = float(v[i] / std::sqrt(ss + 1e-6));
                    }
                std::vector<float> g(size_t(n) * hv), b(size_t(n) * hv);
                for (float &x : g) x = ug(rng);
                for (float &x : b) x = ub(rng);
                Pair px = pair_of(cs, vs, qkv), pg = pair_of(cs, vs, g), pb = pair_of(cs, vs, b);
                const size_t no = size_t(n) * hv * D;
                Pair o1 = pair_of(cs, vs, nullptr, no * 4), o2 = pair_of(cs, vs, nullptr, no * 4),
                     o3 = pair_of(cs, vs, nullptr, no * 4);
                auto args = [&](bool dev, Pair &st, Pair &o) {
                    DeltaNetArgs a;
                    const float *base = static_cast<const float *>(dev ? px.v : px.c);
                    a.n = n;
                    a.n_k_heads = hk;
                    a.n_v_heads = hv;
                    a.head_dim = D;
                    a.q = base;
                    a.k = base + size_t(hk) * D;
                    a.v = base + size_t(2 * hk) * D;
                    a.qk_stride = a.v_stride = ch;
                    a.g = static_cast<const float *>(dev ? pg.v : pg.c);
                    a.beta = static_cast<const float *>(dev ? pb.v : pb.c);
                    a.state = static_cast<float *>(dev ? st.v : st.c);
                    a.out = static_cast<float *>(dev ? o.v : o.c);
                    a.scale = 1.0f / std::sqrt(float(D));
                    return a;
                };
                cs.delta_net(args(false, st_r, o1));
                vs.delta_net(args(true, st_r, o1));
                cs.delta_net_chunked(args(false, st_k, o2), 16);
                vs.delta_net_chunked(args(true, st_k, o2), 16);
                const std::vector<float> ref = fetch<float>(cs, o1.c, no), sref = fetch<float>(cs, st_r.c, S);
                std::snprintf(what, sizeof what, "%s delta_net (%d k heads, %d v heads of %d) batch of %d", label, hk, hv, D, n);
                expect_gdn(exact, what, fetch<float>(vs, o1.v, no), ref, 2e-5);
                expect_gdn(exact, std::string(what) + " state", fetch<float>(vs, st_r.v, S), sref, 2e-5);
                std::snprintf(what, sizeof what, "%s delta_net_chunked (%d, %d, %d) batch of %d vs the CPU's recurrent form",
                              label, hk, hv, D, n);
                expect_gdn(exact, what, fetch<float>(vs, o2.v, no), ref, 2e-5);
                std::snprintf(what, sizeof what, "%s delta_net_chunked (%d, %d, %d) batch of %d vs the CPU's chunked scan",
                              label, hk, hv, D, n);
                expect_gdn(false, what, fetch<float>(vs, o2.v, no), fetch<float>(cs, o2.c, no), 2e-5);
                expect_gdn(false, std::string(what) + ", state", fetch<float>(vs, st_k.v, S), fetch<float>(cs, st_k.c, S), 2e-5);
            }
            (void)st_c;
        }
    });
}

// A layer with the model's own sliding window (layer 0; layer 1 is global)
// through SessionMemory on both backends, the same queries, keys and values:
// a dense session keeps the window's keys rotated at their stream positions
// in a ring (batches under 64 queries in llama.cpp's order, from 64 on the
// batched path, both with each query at its own position); a budgeted one
// keeps them before RoPE (streaming attention without sinks). Batches of 1,
// a few and 64 or more, over several turns of the ring.
void check_native_window(Backend &cb, Backend &vb, const char *label, bool dense, RopeMode mode) {
    constexpr int NW = 80, TOKENS = 300, HD = kHeadDim;
    RopeParams rope;
    rope.n_dims = HD;
    rope.mode = mode;
    std::vector<LayerSpec> specs = uniform_attention_layers(2, kHeads, kHeadsKv, HD, rope);
    specs[0].native_window = NW;
    specs[0].rope.freq_base = 10000.0f;
    specs[1].rope.freq_base = 1000000.0f;
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    p.n_ctx = TOKENS;
    if (!dense) p.kv_budget_bytes = 1 << 20;
    const MemoryPlan plan = plan_memory(specs, p, 512);
    assert_int_equal(plan.layers[0].kind, KVFIT_LAYER_WINDOW);
    assert_int_equal(plan.layers[0].n_window, NW);
    assert_int_equal(plan.layers[0].n_sink, 0);
    const int qd = kHeads * HD, kvd = kHeadsKv * HD;
    auto cs = cb.create_stream(2, NW, qd, TOKENS), vs = vb.create_stream(2, NW, qd, TOKENS);
    SessionMemory mc(*cs, specs, plan, NW), mv(*vs, specs, plan, NW);
    assert_int_equal(mc.attention(0).keys_rotated(), dense);
    assert_int_equal(mv.attention(0).keys_rotated(), dense);
    // per side: q, k (attend's scratch), v, out
    float *bufs[2];
    Stream *ss[2] = {cs.get(), vs.get()};
    SessionMemory *mem[2] = {&mc, &mv};
    for (int b = 0; b < 2; b++) bufs[b] = static_cast<float *>(ss[b]->alloc(size_t(NW) * (2 * qd + 2 * kvd) * 4));
    const int batches[] = {1, 3, 70, 5, 64, 1, 80, 17, 66, 2, 1, 63};
    uint64_t pos = 0;
    uint32_t seed = dense ? 900 : 950;
    for (int bi = 0; pos < TOKENS; bi = (bi + 1) % int(sizeof batches / sizeof *batches)) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[bi]), TOKENS - pos));
        for (int layer = 0; layer < 2; layer++) {
            const std::vector<float> q = random_floats(size_t(n * qd), seed++), k = random_floats(size_t(n * kvd), seed++),
                                     v = random_floats(size_t(n * kvd), seed++);
            std::vector<float> out[2];
            for (int b = 0; b < 2; b++) {
                float *qq = bufs[b], *kk = qq + size_t(NW) * qd, *vv = kk + size_t(NW) * kvd, *oo = vv + size_t(NW) * kvd;
                ss[b]->upload(qq, q.data(), q.size() * 4);
                ss[b]->upload(kk, k.data(), k.size() * 4);
                ss[b]->upload(vv, v.data(), v.size() * 4);
                mem[b]->attend(*ss[b], layer, qq, kk, vv, n, pos, oo);
                out[b] = fetch<float>(*ss[b], oo, q.size());
            }
            char what[192];
            std::snprintf(what, sizeof what, "%s %s session, %s layer, %s RoPE: attention at %llu (+%d)", label,
                          dense ? "dense" : "budgeted", layer ? "global" : "native-window",
                          mode == RopeMode::Neox ? "NeoX" : "pair", (unsigned long long)pos, n);
            // (without doubles fma() need not be fused: lavapipe's is not, and 80
            // queries of the batched path have been seen 2.3e-5 off)
            expect_same(vb.reproduces_cpu(), what, out[1], out[0], 5e-5);
        }
        pos += uint64_t(n);
    }
}

void test_native_window(void **) {
    each_backend([](Backend &cb, Backend &vb, Stream &, Stream &, const char *label) {
        for (bool dense : {true, false}) check_native_window(cb, vb, label, dense, RopeMode::Neox);
        check_native_window(cb, vb, label, true, RopeMode::Norm);
    });
}

// ---- RWKV-7 ops (Stream::norm_affine, token_shift_mix, activate,
// rwkv7_prepare, wkv7, rwkv7_bonus_gate) against the CPU. token_shift_mix,
// wkv7, rwkv7_bonus_gate and the squared ReLU are float arithmetic in the
// CPU's order in every configuration: bit for bit always. norm_affine, tanh,
// the sigmoid and rwkv7_prepare take the C library's tanh and exp, correctly
// rounded divisions and square roots, and sums in double: bit for bit where
// the device has doubles (reproduces_cpu), else within the stated bounds
// (relative to the largest magnitude, as rel_error). Every comparison
// prints its measured maximum difference.

// Bits where `exact`, else within tol; prints the maximum absolute difference either way.
void expect_rwkv(bool exact, const std::string &what, const std::vector<float> &got, const std::vector<float> &ref,
                 double tol) {
    double md = 0;
    for (size_t i = 0; i < ref.size(); i++)
        if (!std::isnan(ref[i]) || !std::isnan(got[i])) md = std::max(md, double(std::fabs(got[i] - ref[i])));
    std::printf("%s: max |vulkan - cpu| = %.3g over %zu values (%s)\n", what.c_str(), md, ref.size(),
                exact ? "bits required" : "bounded");
    if (exact) return expect_bits(what.c_str(), got, ref);
    expect_close(what.c_str(), got, ref, tol);
}

std::vector<float> uniform_floats(size_t n, uint32_t seed, float lo, float hi) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (float &x : v) x = u(rng);
    return v;
}

// Head shapes: the tiny model's (64), and one the CPU computes on its scalar path (12).
struct RwkvShape {
    int n_head, head_size;
};
const RwkvShape kRwkvShapes[] = {{3, 64}, {2, 12}};

void test_rwkv_norm_affine(void **) {
    each_backend([](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        const int n = 7;
        for (int d : {192, 24, 1000})
            for (int groups : {1, 4, d == 192 ? 12 : 8}) {
                std::vector<float> x = random_floats(size_t(n) * size_t(d), uint32_t(50 + d + groups), 2.0f);
                for (size_t i = 0; i < size_t(d); i++) x[i] += 30.0f;  // a row far from zero mean
                const std::vector<float> w = random_floats(size_t(d), 51), b = random_floats(size_t(d), 52);
                Pair px = pair_of(cs, vs, x), pw = pair_of(cs, vs, w), pb = pair_of(cs, vs, b);
                Pair py = pair_of(cs, vs, nullptr, x.size() * 4);
                const float eps = groups == 1 ? 1e-5f : 64e-5f;
                cs.norm_affine(static_cast<float *>(px.c), static_cast<float *>(pw.c), static_cast<float *>(pb.c), eps, n,
                               d, groups, static_cast<float *>(py.c));
                vs.norm_affine(static_cast<float *>(px.v), static_cast<float *>(pw.v), static_cast<float *>(pb.v), eps, n,
                               d, groups, static_cast<float *>(py.v));
                char what[160];
                std::snprintf(what, sizeof what, "%s norm_affine d=%d groups=%d", label, d, groups);
                expect_rwkv(exact, what, fetch<float>(vs, py.v, x.size()), fetch<float>(cs, py.c, x.size()), 2e-6);
                // in place, as the forward pass calls it
                cs.norm_affine(static_cast<float *>(px.c), static_cast<float *>(pw.c), static_cast<float *>(pb.c), eps, n,
                               d, groups, static_cast<float *>(px.c));
                vs.norm_affine(static_cast<float *>(px.v), static_cast<float *>(pw.v), static_cast<float *>(pb.v), eps, n,
                               d, groups, static_cast<float *>(px.v));
                expect_rwkv(exact, std::string(what) + " in place", fetch<float>(vs, px.v, x.size()),
                            fetch<float>(cs, px.c, x.size()), 2e-6);
            }
    });
}

void test_rwkv_token_shift(void **) {
    each_backend([](Backend &, Backend &, Stream &cs, Stream &vs, const char *label) {
        const int d = 200;
        for (int n_mix : {6, 1}) {
            const std::vector<float> st0 = random_floats(size_t(d), 60), mix = uniform_floats(size_t(n_mix) * d, 61, 0, 1);
            Pair ps = pair_of(cs, vs, st0), pm = pair_of(cs, vs, mix);
            // batches of 1, 9 and 1 tokens: the state carries over
            uint32_t seed = 62;
            for (int n : {1, 9, 1}) {
                const std::vector<float> x = random_floats(size_t(n) * d, seed++);
                Pair px = pair_of(cs, vs, x), po = pair_of(cs, vs, nullptr, size_t(n_mix) * x.size() * 4);
                cs.token_shift_mix(static_cast<float *>(px.c), static_cast<float *>(ps.c), static_cast<float *>(pm.c),
                                   n_mix, n, d, static_cast<float *>(po.c));
                vs.token_shift_mix(static_cast<float *>(px.v), static_cast<float *>(ps.v), static_cast<float *>(pm.v),
                                   n_mix, n, d, static_cast<float *>(po.v));
                char what[160];
                std::snprintf(what, sizeof what, "%s token_shift_mix n_mix=%d n=%d", label, n_mix, n);
                expect_rwkv(true, what, fetch<float>(vs, po.v, size_t(n_mix) * x.size()),
                            fetch<float>(cs, po.c, size_t(n_mix) * x.size()), 0);
                expect_rwkv(true, std::string(what) + " state", fetch<float>(vs, ps.v, size_t(d)),
                            fetch<float>(cs, ps.c, size_t(d)), 0);
                assert_true(fetch<float>(vs, ps.v, size_t(d)) == std::vector<float>(x.end() - d, x.end()));
            }
        }
    });
}

// Activation inputs: every 1021st float bit pattern (all exponents: zeros,
// subnormals, the ranges where tanh's algorithm changes, infinities, NaNs),
// tanh's and the sigmoid's thresholds and their neighbours, and random floats.
std::vector<float> activation_inputs() {
    std::vector<float> x;
    for (uint64_t u = 0; u <= 0xffffffffull; u += 1021) {
        uint32_t b = uint32_t(u);
        float f;
        std::memcpy(&f, &b, 4);
        x.push_back(f);
    }
    for (float e : {22.0f, 1.0f, 0.34657359f, 1.03972077f, 18.7149f, 88.7228f, 103.97f, 0.0f, 1e-38f, 2.7755576e-17f})
        for (float s : {1.0f, -1.0f}) {
            float v = s * e;
            for (int k = 0; k < 4; k++) {
                x.push_back(v);
                v = std::nextafter(v, 2 * v + s);
            }
        }
    const std::vector<float> r = random_floats(20001, 70, 3.0f);
    x.insert(x.end(), r.begin(), r.end());
    return x;
}

void test_rwkv_activate(void **) {
    each_backend([](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const std::vector<float> x = activation_inputs();
        const size_t n = x.size();
        const std::pair<Stream::Activation, const char *> fs[] = {{Stream::Activation::Tanh, "tanh"},
                                                                  {Stream::Activation::Sigmoid, "sigmoid"},
                                                                  {Stream::Activation::ReluSquare, "relu^2"}};
        for (const auto &f : fs) {
            Pair px = pair_of(cs, vs, x);
            cs.activate(f.first, static_cast<float *>(px.c), n);
            vs.activate(f.first, static_cast<float *>(px.v), n);
            const bool exact = vb.reproduces_cpu() || f.first == Stream::Activation::ReluSquare;
            // (without doubles the shader's exp and division: a few ulp)
            expect_rwkv(exact, std::string(label) + " activate " + f.second, fetch<float>(vs, px.v, n),
                        fetch<float>(cs, px.c, n), 1e-6);
        }
        vs.activate(Stream::Activation::Tanh, static_cast<float *>(pair_of(cs, vs, x).v), 0);  // nothing to do
        vs.synchronize();
    });
}

void test_rwkv_prepare(void **) {
    each_backend([](Backend &, Backend &vb, Stream &cs, Stream &vs, const char *label) {
        const bool exact = vb.reproduces_cpu();
        for (const RwkvShape &sh : kRwkvShapes)
            for (bool vmix : {false, true})
                for (int n : {1, 11}) {
                    const size_t d = size_t(sh.n_head) * size_t(sh.head_size), nd = size_t(n) * d;
                    uint32_t seed = 80 + uint32_t(n) + (vmix ? 7 : 0);
                    auto rows = [&](float scale) { return random_floats(nd, seed++, scale); };
                    auto vec = [&](float scale) { return random_floats(d, seed++, scale); };
                    const std::vector<float> w = rows(2.0f), w0 = vec(1.0f), a = rows(1.0f), a0 = vec(0.5f), v = rows(1.0f),
                                             vf = rows(1.0f), vm = rows(1.0f), v0 = vec(0.5f), k = rows(1.0f),
                                             k_k = vec(1.0f), k_a = vec(1.0f);
                    Pair pw = pair_of(cs, vs, w), pw0 = pair_of(cs, vs, w0), pa = pair_of(cs, vs, a),
                         pa0 = pair_of(cs, vs, a0), pv = pair_of(cs, vs, v), pvf = pair_of(cs, vs, vf),
                         pvm = pair_of(cs, vs, vm), pv0 = pair_of(cs, vs, v0), pk = pair_of(cs, vs, k),
                         pkk = pair_of(cs, vs, k_k), pka = pair_of(cs, vs, k_a), pao = pair_of(cs, vs, nullptr, nd * 4),
                         pbo = pair_of(cs, vs, nullptr, nd * 4);
                    auto f = [](const Pair &p, bool gpu) { return static_cast<float *>(gpu ? p.v : p.c); };
                    for (bool gpu : {false, true})
                        (gpu ? vs : cs)
                            .rwkv7_prepare(f(pw, gpu), f(pw0, gpu), f(pa, gpu), f(pa0, gpu), f(pv, gpu), f(pvf, gpu),
                                           vmix ? f(pvm, gpu) : nullptr, vmix ? f(pv0, gpu) : nullptr, f(pk, gpu),
                                           f(pkk, gpu), f(pka, gpu), n, sh.n_head, sh.head_size, f(pao, gpu), f(pbo, gpu));
                    char what[160];
                    std::snprintf(what, sizeof what, "%s rwkv7_prepare %dx%d n=%d%s", label, sh.n_head, sh.head_size, n,
                                  vmix ? " with the value mix" : "");
                    const std::pair<const Pair *, const char *> outs[] = {{&pw, "w"}, {&pa, "a"},      {&pv, "v"},
                                                                         {&pk, "k"}, {&pao, "a_out"}, {&pbo, "b_out"}};
                    for (const auto &o : outs)
                        expect_rwkv(exact, std::string(what) + " " + o.second, fetch<float>(vs, o.first->v, nd),
                                    fetch<float>(cs, o.first->c, nd), 2e-6);
                }
    });
}

// Realistic recurrence inputs, as rwkv7_prepare makes them: w in (0.54, 1),
// a = -kk and b = kk * rate with kk unit per head.
struct Wkv7Inputs {
    std::vector<float> r, w, k, v, a, b;
};
Wkv7Inputs wkv7_inputs(int n, const RwkvShape &sh, uint32_t seed) {
    const size_t N = size_t(sh.head_size), nd = size_t(n) * size_t(sh.n_head) * N;
    Wkv7Inputs in;
    in.r = random_floats(nd, seed);
    in.k = random_floats(nd, seed + 1);
    in.v = random_floats(nd, seed + 2);
    in.w = uniform_floats(nd, seed + 3, 0.545f, 1.0f);
    const std::vector<float> kk = random_floats(nd, seed + 4), rate = uniform_floats(nd, seed + 5, 0.0f, 1.0f);
    in.a.resize(nd);
    in.b.resize(nd);
    for (size_t h0 = 0; h0 < nd; h0 += N) {
        double ss = 0;
        for (size_t i = 0; i < N; i++) ss += double(kk[h0 + i]) * kk[h0 + i];
        for (size_t i = 0; i < N; i++) {
            const float u = float(kk[h0 + i] / std::sqrt(ss));
            in.a[h0 + i] = -u;
            in.b[h0 + i] = u * rate[h0 + i];
        }
    }
    return in;
}

void test_rwkv_wkv7(void **) {
    each_backend([](Backend &, Backend &, Stream &cs, Stream &vs, const char *label) {
        for (const RwkvShape &sh : kRwkvShapes) {
            const size_t N = size_t(sh.head_size), d = size_t(sh.n_head) * N, sn = d * N;
            Pair ps = pair_of(cs, vs, random_floats(sn, 90, 0.5f));
            // decode steps and batches, the state carried through all of them
            uint32_t seed = 91;
            int step = 0;
            for (int n : {1, 1, 17, 1, 40, 2}) {
                const Wkv7Inputs in = wkv7_inputs(n, sh, seed);
                seed += 10;
                Pair pr = pair_of(cs, vs, in.r), pw = pair_of(cs, vs, in.w), pk = pair_of(cs, vs, in.k),
                     pv = pair_of(cs, vs, in.v), pa = pair_of(cs, vs, in.a), pb = pair_of(cs, vs, in.b),
                     po = pair_of(cs, vs, nullptr, size_t(n) * d * 4);
                auto f = [](const Pair &p, bool gpu) { return static_cast<float *>(gpu ? p.v : p.c); };
                for (bool gpu : {false, true})
                    (gpu ? vs : cs)
                        .wkv7(f(pr, gpu), f(pw, gpu), f(pk, gpu), f(pv, gpu), f(pa, gpu), f(pb, gpu), n, sh.n_head,
                              sh.head_size, f(ps, gpu), f(po, gpu));
                char what[160];
                std::snprintf(what, sizeof what, "%s wkv7 %dx%d step %d (n=%d)", label, sh.n_head, sh.head_size, step++, n);
                expect_rwkv(true, what, fetch<float>(vs, po.v, size_t(n) * d), fetch<float>(cs, po.c, size_t(n) * d), 0);
                expect_rwkv(true, std::string(what) + " state", fetch<float>(vs, ps.v, sn), fetch<float>(cs, ps.c, sn), 0);
            }
        }
    });
}

void test_rwkv_bonus_gate(void **) {
    each_backend([](Backend &, Backend &, Stream &cs, Stream &vs, const char *label) {
        for (const RwkvShape &sh : kRwkvShapes)
            for (int n : {1, 13}) {
                const size_t d = size_t(sh.n_head) * size_t(sh.head_size), nd = size_t(n) * d;
                Pair py = pair_of(cs, vs, random_floats(nd, 100)), pr = pair_of(cs, vs, random_floats(nd, 101)),
                     pk = pair_of(cs, vs, random_floats(nd, 102)), pv = pair_of(cs, vs, random_floats(nd, 103)),
                     prk = pair_of(cs, vs, random_floats(d, 104)), pg = pair_of(cs, vs, uniform_floats(nd, 105, -1, 1));
                auto f = [](const Pair &p, bool gpu) { return static_cast<float *>(gpu ? p.v : p.c); };
                for (bool gpu : {false, true})
                    (gpu ? vs : cs)
                        .rwkv7_bonus_gate(f(py, gpu), f(pr, gpu), f(pk, gpu), f(pv, gpu), f(prk, gpu), f(pg, gpu), n,
                                          sh.n_head, sh.head_size);
                char what[160];
                std::snprintf(what, sizeof what, "%s rwkv7_bonus_gate %dx%d n=%d", label, sh.n_head, sh.head_size, n);
                expect_rwkv(true, what, fetch<float>(vs, py.v, nd), fetch<float>(cs, py.c, nd), 0);
            }
    });
}

// Transfers larger than the staging buffers, interleaved with compute.
void test_transfers(void **) {
    each_backend([](Backend &, Backend &, Stream &, Stream &vs, const char *) {
        const size_t n = (11u << 20) / 4 + 13;
        std::vector<float> a = random_floats(n, 4), back(n);
        float *d = static_cast<float *>(vs.alloc(n * 4));
        vs.upload(d, a.data(), n * 4);
        vs.add(d, d + 1, 1);  // d[0] += d[1]
        vs.download(back.data(), d, n * 4);
        vs.synchronize();
        a[0] += a[1];
        assert_true(back == a);
    });
}

// Sessions share a model's backend from several threads: streams used at
// the same time give the same results as one after the other.
void test_concurrent_streams(void **) {
    each_backend([](Backend &, Backend &vb, Stream &, Stream &, const char *label) {
        HostWeight hw = make_weight(TYPE_Q4_1, 300, 256, 5);
        const Weight w = vb.upload_weight(hw.t);
        const int n = 9, rounds = 20;
        std::vector<float> x = random_floats(size_t(n * 256), 6);
        auto work = [&](std::vector<float> *out) {
            auto s = vb.create_stream(1, kMaxTokens, kMaxCols, kMaxKv);
            float *dx = static_cast<float *>(s->alloc(x.size() * 4)), *dy = static_cast<float *>(s->alloc(size_t(n) * 300 * 4));
            s->upload(dx, x.data(), x.size() * 4);
            out->resize(size_t(n) * 300);
            for (int r = 0; r < rounds; r++) {
                s->matmul(w, dx, n, dy);
                s->swiglu(dy, dy, size_t(n) * 300, dy);
                s->download(out->data(), dy, out->size() * 4);
                s->synchronize();
            }
        };
        std::vector<float> alone, a, b;
        work(&alone);
        std::thread t1(work, &a), t2(work, &b);
        t1.join();
        t2.join();
        if (a != alone || b != alone) {
            std::printf("%s: streams running at the same time gave other results\n", label);
            fail();
        }
    });
}

void test_errors(void **) {
    each_backend([](Backend &, Backend &, Stream &, Stream &vs, const char *) {
        float *x = static_cast<float *>(vs.alloc(64 * 4));
        uint8_t *dst = static_cast<uint8_t *>(vs.alloc(1024));
        try {
            vs.kv_encode(42, false, x, 1, 1, 64, dst);  // a codec this backend does not know
            fail();
        } catch (const Error &e) {
            assert_int_equal(e.status(), KVFIT_E_UNSUPPORTED);
        }
        int host = 0;
        try {
            vs.copy(dst, &host, 4);  // a host pointer is not a device address
            fail();
        } catch (const Error &e) {
            assert_int_equal(e.status(), KVFIT_E_INTERNAL);
        }
        try {
            vs.copy(dst, x + 60, 64);  // past the end of its allocation
            fail();
        } catch (const Error &e) {
            assert_int_equal(e.status(), KVFIT_E_INTERNAL);
        }
        vs.synchronize();  // the stream still works
    });
    // Weight types the shaders do not compute with (activation-only block
    // types) are refused at upload, naming tensor and type, rather than read
    // as another type.
    each_backend([](Backend &, Backend &vb, Stream &, Stream &, const char *) {
        for (uint32_t type : {TYPE_Q8_1, TYPE_Q8_K}) {
            HostWeight w;
            w.bytes.assign(row_bytes(type, 256) * 4, 0);
            w.t.name = "blk.0.ffn_up.weight";
            w.t.type = type;
            w.t.n_dims = 2;
            w.t.ne[0] = 256;
            w.t.ne[1] = 4;
            w.t.nbytes = w.bytes.size();
            w.t.data = w.bytes.data();
            try {
                vb.upload_weight(w.t);
                fail();
            } catch (const Error &e) {
                assert_int_equal(e.status(), KVFIT_E_UNSUPPORTED);
                assert_non_null(std::strstr(e.what(), type_info(type)->name));
                assert_non_null(std::strstr(e.what(), "blk.0.ffn_up.weight"));
            }
        }
    });
}

void test_devices(void **) {
    size_t n = 0;
    assert_int_equal(kvfit_device_count(&n), KVFIT_OK);
    assert_true(n >= 2);
    kvfit_device_info di;
    di.struct_size = sizeof di;
    assert_int_equal(kvfit_device_get_info(0, &di), KVFIT_OK);
    assert_int_equal(di.backend, KVFIT_BACKEND_CPU);
    assert_int_equal(di.type, KVFIT_DEVICE_CPU);
    size_t first = 1;  // the first Vulkan device (CUDA devices, if any, come before)
    while (first < n && kvfit_device_get_info(first, &di) == KVFIT_OK && di.backend != KVFIT_BACKEND_VULKAN) first++;
    assert_true(first < n);
    assert_int_equal(di.index, 0);
    assert_true(di.name && *di.name && di.memory_bytes > 0);
    std::printf("Vulkan device 0: %s, type %d, %llu MiB\n", di.name, int(di.type), (unsigned long long)(di.memory_bytes >> 20));
    assert_int_equal(kvfit_device_get_info(n, &di), KVFIT_E_ARG);
    try {
        create_backend(KVFIT_BACKEND_VULKAN, 1000);
        fail();
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_BACKEND_UNAVAILABLE);
    }
}

// The second configuration; main made the first (or exited 77 without a device).
int setup(void **) {
    setenv("KVFIT_VULKAN_NO_SUBGROUP", "1", 1);
    setenv("KVFIT_VULKAN_NO_FP64", "1", 1);
    setenv("KVFIT_VULKAN_MAX_RANGE", "1048576", 1);  // the large F32 weights below are bound in pieces
    setenv("KVFIT_VULKAN_NO_UMA", "1", 1);            // weights go through staging, as on a discrete GPU
    int rc = 0;
    try {
        g->vk.emplace_back("vulkan (no subgroups, no fp64, 1 MiB bindings, staged weights)",
                           create_backend(KVFIT_BACKEND_VULKAN));
    } catch (const Error &e) {
        std::printf("creating the Vulkan backend with its fallbacks: %s\n", e.what());
        rc = -1;
    }
    unsetenv("KVFIT_VULKAN_NO_SUBGROUP");
    unsetenv("KVFIT_VULKAN_NO_FP64");
    unsetenv("KVFIT_VULKAN_MAX_RANGE");
    unsetenv("KVFIT_VULKAN_NO_UMA");
    return rc;
}

int teardown(void **) {
    delete g;
    return 0;
}

}  // namespace

int main() {
    setenv("KVFIT_VULKAN_VALIDATION", "1", 0);  // unless the caller chose otherwise
    kvfit_set_log_callback(print_log, KVFIT_LOG_WARN, nullptr);
    g = new Setup();
    try {
        g->vk.emplace_back("vulkan", create_backend(KVFIT_BACKEND_VULKAN));
    } catch (const Error &e) {
        if (e.status() == KVFIT_E_BACKEND_UNAVAILABLE) test_skip_all("no Vulkan device: %s", e.what());
        std::printf("creating the Vulkan backend: %s\n", e.what());
        return 1;
    }
    g->cpu = create_cpu_backend();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_devices),  cmocka_unit_test(test_get_rows),    cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_matmul),   cmocka_unit_test(test_matmul_more_types), cmocka_unit_test(test_kv_encode),   cmocka_unit_test(test_attention),
        cmocka_unit_test(test_rotated_keys),     cmocka_unit_test(test_channel_keys),
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_transfers),
        cmocka_unit_test(test_rotated_keys),     cmocka_unit_test(test_native_window),
        cmocka_unit_test(test_channel_keys),     cmocka_unit_test(test_scale_geglu),
        cmocka_unit_test(test_elementwise), cmocka_unit_test(test_transfers),
        cmocka_unit_test(test_concurrent_streams), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_rwkv_norm_affine), cmocka_unit_test(test_rwkv_token_shift),
        cmocka_unit_test(test_rwkv_activate),    cmocka_unit_test(test_rwkv_prepare),
        cmocka_unit_test(test_rwkv_wkv7),        cmocka_unit_test(test_rwkv_bonus_gate),
        // Gated DeltaNet
        cmocka_unit_test(test_gdn_pointwise), cmocka_unit_test(test_gdn_norm_gates_conv),
        cmocka_unit_test(test_gdn_delta_net),
    };
    return test_run(tests, setup, teardown);
}
