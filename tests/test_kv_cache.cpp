// The budgeted attention memory (src/kv/memory.*) on the CPU backend against a plain
// reference written from the layout's definition: for every KV codec, random
// queries, keys and values are streamed through sinks + a ring in batches of
// mixed sizes (ring wrap, batches that straddle blocks), and every attention
// output must match softmax(q . K^T) V over the keys the query may see, each
// key as the layout stores it, rotated to its cache position. For per-channel
// keys that means: sinks and the unfinished block in F16, finished blocks
// quantized per channel, exactly as of the batch's start.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "common.h"
#include "kv/codec.h"
#include "kv/memory.h"

// cmocka.h last: its fail() macro would rewrite kvfit::fail.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>  // its header has no C++ guard of its own
}

using namespace kvfit;

namespace {

constexpr int HD = 64, N_HEAD = 2, SINKS = 4, WINDOW = 64, TOKENS = 300;

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
    float uniform() {  // [-1, 1)
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return float(uint32_t(s >> 32)) / 2147483648.0f - 1.0f;
    }
};

std::vector<float> roundtrip(KVCodec c, const float *x) {
    std::vector<uint8_t> code(codec_row_bytes(c, HD));
    std::vector<float> y(HD);
    codec_encode(c, x, code.data(), HD);
    codec_decode(c, code.data(), y.data(), HD);
    return y;
}

void rope(float *v, uint32_t pos) {
    for (int i = 0; i < HD / 2; i++) {
        const double th = double(pos) * std::pow(10000.0, -2.0 * i / HD);
        const double x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = float(x0 * std::cos(th) - x1 * std::sin(th));
        v[2 * i + 1] = float(x0 * std::sin(th) + x1 * std::cos(th));
    }
}

// N_HEAD query heads sharing one KV head of HD, fully rotated.
std::vector<LayerSpec> one_kv_head(int n_layer) {
    RopeParams rp;
    rp.n_dims = HD;
    return uniform_attention_layers(n_layer, N_HEAD, 1, HD, rp);
}

// Key j as the layout holds it when a batch starting at p0 is attended.
std::vector<float> stored_key(kvfit_kv_codec codec, const std::vector<float> &k, int j, uint64_t p0) {
    const float *x = k.data() + size_t(j) * HD;
    switch (codec) {
        case KVFIT_KV_Q8: return roundtrip(KVCodec::Q8, x);
        case KVFIT_KV_Q4: return roundtrip(KVCodec::Q4, x);
        case KVFIT_KV_Q4_HADAMARD: {
            std::vector<float> h(x, x + HD);
            hadamard_rotate(h.data(), HD);
            std::vector<float> y = roundtrip(KVCodec::Q4, h.data());
            hadamard_rotate_inv(y.data(), HD);
            return y;
        }
        case KVFIT_KV_Q4_CHANNEL: {
            const uint64_t res0 = p0 > SINKS ? SINKS + (p0 - SINKS) / KV_CHANNEL_BLOCK * KV_CHANNEL_BLOCK : p0;
            if (uint64_t(j) < SINKS || uint64_t(j) >= res0) return roundtrip(KVCodec::F16, x);
            const int b0 = SINKS + (j - SINKS) / KV_CHANNEL_BLOCK * KV_CHANNEL_BLOCK;
            std::vector<float> rows(size_t(KV_CHANNEL_BLOCK) * HD), y(HD);
            for (int t = 0; t < KV_CHANNEL_BLOCK; t++) {
                std::vector<float> r = roundtrip(KVCodec::F16, k.data() + size_t(b0 + t) * HD);
                std::copy(r.begin(), r.end(), rows.begin() + size_t(t) * HD);
            }
            std::vector<uint8_t> block(channel_block_bytes(HD));
            channel_block_encode(rows.data(), HD, block.data(), HD);
            channel_block_decode(block.data(), HD, j - b0, 1, y.data());
            return y;
        }
        default: return roundtrip(KVCodec::F16, x);
    }
}

void check_codec(kvfit_kv_codec codec) {
    const std::vector<LayerSpec> shape = one_kv_head(1);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = SINKS;
    p.n_window = WINDOW;
    p.kv_codec = codec;
    const MemoryPlan plan = plan_memory(shape, p, 512);
    assert_true(plan.unbounded());
    assert_int_equal(layer_codec(plan.layers[0]), codec);
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(1, WINDOW, N_HEAD * HD, SINKS + WINDOW);
    SessionMemory cache(*stream, shape, plan, WINDOW);

    Rng rng(uint64_t(codec) + 7);
    std::vector<float> q(size_t(TOKENS) * N_HEAD * HD), k(size_t(TOKENS) * HD), v(size_t(TOKENS) * HD);
    for (float &x : q) x = rng.uniform();
    for (size_t i = 0; i < k.size(); i++) k[i] = rng.uniform() * (i % HD == 5 ? 8.0f : 1.0f);  // an outlier channel
    for (float &x : v) x = rng.uniform();
    const KVCodec vc = codec == KVFIT_KV_Q8 ? KVCodec::Q8 : codec == KVFIT_KV_F16 ? KVCodec::F16 : KVCodec::Q4;

    const int batches[] = {1, 1, 3, 32, 7, 64, 1, 29, 40, 1, 2, 64, 33};
    std::vector<float> out(size_t(WINDOW) * N_HEAD * HD), kscratch(size_t(WINDOW) * HD);
    float worst = 0.0f;
    uint64_t pos = 0;
    for (int b = 0; pos < TOKENS; b = (b + 1) % int(sizeof batches / sizeof *batches)) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[b]), TOKENS - pos));
        std::memcpy(kscratch.data(), k.data() + pos * HD, size_t(n) * HD * 4);  // attend uses k as scratch
        cache.attend(*stream, 0, q.data() + pos * N_HEAD * HD, kscratch.data(), v.data() + pos * HD, n, pos,
                     out.data());
        stream->synchronize();
        for (int i = 0; i < n; i++) {
            const uint64_t t = pos + uint64_t(i);
            std::vector<int> vis;  // visible keys in cache-position order
            for (uint64_t j = 0; j < std::min<uint64_t>(SINKS, t + 1); j++) vis.push_back(int(j));
            for (uint64_t j = std::max<uint64_t>(SINKS, t + 1 > WINDOW ? t + 1 - WINDOW : 0); j <= t; j++)
                vis.push_back(int(j));
            for (int h = 0; h < N_HEAD; h++) {
                std::vector<float> qr(q.begin() + long((t * N_HEAD + h) * HD), q.begin() + long((t * N_HEAD + h + 1) * HD));
                rope(qr.data(), uint32_t(vis.size() - 1));
                std::vector<double> sc(vis.size());
                double mx = -1e300, sum = 0;
                for (size_t c = 0; c < vis.size(); c++) {
                    std::vector<float> key = stored_key(codec, k, vis[c], pos);
                    rope(key.data(), uint32_t(c));
                    double d = 0;
                    for (int x = 0; x < HD; x++) d += double(key[size_t(x)]) * qr[size_t(x)];
                    sc[c] = d / std::sqrt(double(HD));
                    mx = std::max(mx, sc[c]);
                }
                std::vector<double> o(HD, 0.0);
                for (size_t c = 0; c < vis.size(); c++) {
                    const double e = std::exp(sc[c] - mx);
                    sum += e;
                    std::vector<float> val = roundtrip(vc, v.data() + size_t(vis[c]) * HD);
                    for (int x = 0; x < HD; x++) o[size_t(x)] += e * val[size_t(x)];
                }
                for (int x = 0; x < HD; x++) {
                    const float want = float(o[size_t(x)] / sum);
                    const float got = out[(size_t(i) * N_HEAD + h) * HD + size_t(x)];
                    if (std::fabs(got - want) > 1e-5f && worst <= 1e-5f)
                        printf("  first difference: token %llu (batch at %llu of %d), head %d: %g vs %g\n",
                               (unsigned long long)t, (unsigned long long)pos, n, h, double(got), double(want));
                    worst = std::max(worst, std::fabs(got - want));
                }
            }
        }
        pos += uint64_t(n);
    }
    printf("codec %d: largest difference from the reference %.2e over %d tokens\n", int(codec), double(worst), TOKENS);
    assert_true(worst < 1e-5f);
}

// A layer with the model's own sliding window of NW tokens: every query sees
// exactly the NW most recent tokens (itself included), with RoPE at stream
// positions, whether the session is dense (keys kept rotated, llama.cpp's F16
// attention order; batches of 64 or more take the fast path) or streaming
// (keys before RoPE, rotated to cache positions). The reference is a plain
// softmax over those keys, each as F16 stores it.
void check_native_window(bool dense) {
    constexpr int NW = 80;
    std::vector<LayerSpec> specs = one_kv_head(2);  // layer 0 local, layer 1 global (bounds a dense session)
    specs[0].native_window = NW;
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    p.n_ctx = TOKENS;
    p.kv_codec = KVFIT_KV_F16;  // the reference below keeps F16 keys and values
    if (!dense) p.kv_budget_bytes = 1 << 20;
    const MemoryPlan plan = plan_memory(specs, p, 512);
    assert_int_equal(plan.layers[0].kind, KVFIT_LAYER_WINDOW);
    assert_int_equal(plan.layers[0].n_window, NW);
    assert_int_equal(plan.layers[0].n_sink, 0);
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(2, NW, N_HEAD * HD, TOKENS);
    SessionMemory mem(*stream, specs, plan, NW);
    assert_int_equal(mem.attention(0).keys_rotated(), dense);

    Rng rng(dense ? 11 : 12);
    std::vector<float> q(size_t(TOKENS) * N_HEAD * HD), k(size_t(TOKENS) * HD), v(size_t(TOKENS) * HD);
    for (float &x : q) x = rng.uniform();
    for (float &x : k) x = rng.uniform();
    for (float &x : v) x = rng.uniform();
    const int batches[] = {1, 3, 70, 5, 64, 1, 80, 17, 66, 2};
    std::vector<float> out(size_t(NW) * N_HEAD * HD), kscratch(size_t(NW) * HD);
    float worst = 0.0f;
    uint64_t pos = 0;
    for (int b = 0; pos < TOKENS; b = (b + 1) % int(sizeof batches / sizeof *batches)) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[b]), TOKENS - pos));
        std::memcpy(kscratch.data(), k.data() + pos * HD, size_t(n) * HD * 4);
        mem.attend(*stream, 0, q.data() + pos * N_HEAD * HD, kscratch.data(), v.data() + pos * HD, n, pos, out.data());
        stream->synchronize();
        for (int i = 0; i < n; i++) {
            const uint64_t t = pos + uint64_t(i), first = t + 1 > NW ? t + 1 - NW : 0;
            for (int h = 0; h < N_HEAD; h++) {
                std::vector<float> qr(q.begin() + long((t * N_HEAD + h) * HD), q.begin() + long((t * N_HEAD + h + 1) * HD));
                rope(qr.data(), uint32_t(t));
                std::vector<double> sc;
                double mx = -1e300, sum = 0;
                for (uint64_t j = first; j <= t; j++) {
                    std::vector<float> key = roundtrip(KVCodec::F16, k.data() + j * HD);
                    rope(key.data(), uint32_t(j));
                    double d = 0;
                    for (int x = 0; x < HD; x++) d += double(key[size_t(x)]) * qr[size_t(x)];
                    sc.push_back(d / std::sqrt(double(HD)));
                    mx = std::max(mx, sc.back());
                }
                std::vector<double> o(HD, 0.0);
                for (uint64_t j = first; j <= t; j++) {
                    const double e = std::exp(sc[size_t(j - first)] - mx);
                    sum += e;
                    std::vector<float> val = roundtrip(KVCodec::F16, v.data() + j * HD);
                    for (int x = 0; x < HD; x++) o[size_t(x)] += e * val[size_t(x)];
                }
                for (int x = 0; x < HD; x++)
                    worst = std::max(worst, std::fabs(out[(size_t(i) * N_HEAD + h) * HD + size_t(x)] - float(o[size_t(x)] / sum)));
            }
        }
        pos += uint64_t(n);
    }
    printf("native window (%s): largest difference from the reference %.2e over %d tokens\n",
           dense ? "dense session, rotated keys" : "streaming session", double(worst), TOKENS);
    // Rotated keys attend in llama.cpp's order: F16 query and accumulator.
    assert_true(worst < (dense ? 4e-3f : 1e-5f));
}

void test_native_window_dense(void **) { check_native_window(true); }
void test_native_window_streaming(void **) { check_native_window(false); }

void test_f16(void **) { check_codec(KVFIT_KV_F16); }
void test_q8(void **) { check_codec(KVFIT_KV_Q8); }
void test_q4(void **) { check_codec(KVFIT_KV_Q4); }
void test_q4_hadamard(void **) { check_codec(KVFIT_KV_Q4_HADAMARD); }
void test_q4_channel(void **) { check_codec(KVFIT_KV_Q4_CHANNEL); }

// Channel blocks: an outlier channel keeps its own scale, so the other
// channels round as finely as they would alone.
void test_channel_block_roundtrip(void **) {
    Rng rng(3);
    std::vector<float> rows(size_t(KV_CHANNEL_BLOCK) * HD), back(rows.size());
    for (size_t i = 0; i < rows.size(); i++) rows[i] = rng.uniform() * (i % HD == 9 ? 50.0f : 1.0f);
    std::vector<uint8_t> block(channel_block_bytes(HD));
    assert_int_equal(block.size(), size_t(HD) * 20);
    channel_block_encode(rows.data(), HD, block.data(), HD);
    channel_block_decode(block.data(), HD, 0, KV_CHANNEL_BLOCK, back.data());
    float worst_plain = 0, worst_outlier = 0;
    for (size_t i = 0; i < rows.size(); i++) {
        const float e = std::fabs(rows[i] - back[i]);
        (i % HD == 9 ? worst_outlier : worst_plain) = std::max(i % HD == 9 ? worst_outlier : worst_plain, e);
    }
    assert_true(worst_plain <= 2.0f / 15.0f * 0.5f * 1.01f);  // half a step of a [-1, 1] channel
    assert_true(worst_outlier <= 100.0f / 15.0f * 0.5f * 1.01f);
    // A run in the middle decodes to the same values as the whole block.
    std::vector<float> part(size_t(5) * HD);
    channel_block_decode(block.data(), HD, 11, 5, part.data());
    assert_memory_equal(part.data(), back.data() + size_t(11) * HD, part.size() * sizeof(float));
}

// The planner keeps per-channel windows in whole blocks and counts the F16
// sink keys and residual block.
void test_channel_plan_bytes(void **) {
    const std::vector<LayerSpec> shape = one_kv_head(2);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = SINKS;
    p.kv_codec = KVFIT_KV_Q4_CHANNEL;
    p.kv_budget_bytes = 200000;
    const MemoryPlan plan = plan_memory(shape, p, 100000);
    const LayerPlan &lp = plan.layers[0];
    assert_int_equal(lp.n_window % KV_CHANNEL_BLOCK, 0);
    const uint64_t v_row = codec_row_bytes(KVCodec::Q4, HD), f16_row = HD * 2;
    // Four buffers, each allocated in whole 256-byte units.
    auto unit = [](uint64_t b) { return (b + 255) / 256 * 256; };
    assert_int_equal(lp.bytes, unit((SINKS + lp.n_window) * v_row) + unit(SINKS * f16_row) +
                                   unit(KV_CHANNEL_BLOCK * f16_row) +
                                   unit(lp.n_window / KV_CHANNEL_BLOCK * channel_block_bytes(HD)));
    assert_true(plan.total_bytes <= p.kv_budget_bytes);
    // One more block would not fit.
    kvfit_session_params bigger = p;
    bigger.kv_budget_bytes = 0;
    bigger.n_window = lp.n_window + KV_CHANNEL_BLOCK;
    assert_true(plan_memory(shape, bigger, 100000).total_bytes > p.kv_budget_bytes);
    // A pinned window must be whole blocks.
    bigger.n_window = 100;
    bool refused = false;
    try {
        plan_memory(shape, bigger, 100000);
    } catch (const Error &e) {
        refused = e.status() == KVFIT_E_ARG;
    }
    assert_true(refused);
}

// A model with its own sliding window on 5 of every 6 layers (Gemma 3's
// shape): those layers keep exactly their window whatever the session, their
// bytes come off the budget first, and each rotation gets one table.
void test_native_window_plan(void **) {
    RopeParams local, global;
    local.n_dims = global.n_dims = HD;
    local.freq_base = 10000.0f;
    global.freq_base = 1000000.0f;
    std::vector<LayerSpec> specs;
    for (int l = 0; l < 12; l++) {
        LayerSpec s = uniform_attention_layers(1, N_HEAD, 1, HD, l % 6 < 5 ? local : global)[0];
        s.native_window = l % 6 < 5 ? 128 : 0;
        specs.push_back(s);
    }
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    // Dense: global layers hold the context, local ones their window (or the
    // context, if shorter), both at stream positions.
    p.n_ctx = 1000;
    MemoryPlan plan = plan_memory(specs, p, 4096);
    assert_int_equal(plan.capacity(), 1000);
    for (int l = 0; l < 12; l++) {
        const LayerPlan &lp = plan.layers[size_t(l)];
        assert_int_equal(lp.kind, l % 6 < 5 ? KVFIT_LAYER_WINDOW : KVFIT_LAYER_DENSE);
        assert_int_equal(lp.n_window, l % 6 < 5 ? 128 : 1000);
        assert_int_equal(lp.n_sink, 0);
        assert_true(lp.absolute_positions);
        assert_int_equal(lp.bytes, layer_state_bytes(specs[size_t(l)], lp));
    }
    assert_int_equal(plan.rope_tables.size(), 2);
    uint64_t sum = 0;
    for (const LayerPlan &lp : plan.layers) sum += lp.bytes;
    for (const RopeTablePlan &t : plan.rope_tables) sum += t.bytes;
    assert_int_equal(plan.total_bytes, sum);
    p.n_ctx = 100;
    assert_int_equal(plan_memory(specs, p, 4096).layers[0].n_window, 100);

    // Budgeted: the local windows stay whole, at 8 bits; the global layers
    // stream in what is left.
    p.n_ctx = 100000;
    p.kv_budget_bytes = 600000;
    plan = plan_memory(specs, p, 4096);
    assert_true(plan.total_bytes <= p.kv_budget_bytes);
    for (int l = 0; l < 12; l++) {
        const LayerPlan &lp = plan.layers[size_t(l)];
        if (l % 6 < 5) {
            assert_int_equal(lp.kind, KVFIT_LAYER_WINDOW);
            assert_int_equal(lp.n_window, 128);
            assert_int_equal(layer_codec(lp), KVFIT_KV_Q8);
            assert_false(lp.absolute_positions);
        } else {
            assert_int_equal(lp.kind, KVFIT_LAYER_STREAMING);
            assert_int_equal(lp.n_sink, 4);
            assert_true(lp.n_window > 128);
        }
    }
    assert_true(plan.unbounded());
    assert_int_equal(plan.max_batch(), 128);
    // Where 8-bit windows would leave the global layers less than their
    // minimum, the windows take 4 bits (Hadamard-rotated keys: heads of 64).
    const uint64_t q8_windows = 10 * layer_state_bytes(specs[0], plan.layers[0]) +
                                plan.rope_tables[size_t(plan.layer_table[0])].bytes;
    p.kv_budget_bytes = q8_windows;
    plan = plan_memory(specs, p, 4096);
    assert_int_equal(layer_codec(plan.layers[0]), KVFIT_KV_Q4_HADAMARD);
    assert_int_equal(plan.layers[0].n_window, 128);
    assert_true(plan.total_bytes <= p.kv_budget_bytes);
    // A pinned codec holds for the windows too.
    p.kv_codec = KVFIT_KV_F16;
    p.kv_budget_bytes = 600000;
    assert_int_equal(layer_codec(plan_memory(specs, p, 4096).layers[0]), KVFIT_KV_F16);
    p.kv_codec = KVFIT_KV_AUTO;

    // Too small for the windows plus a minimal streaming window: the message
    // names a budget, and that budget works.
    p.kv_budget_bytes = 100000;
    uint64_t named = 0;
    try {
        plan_memory(specs, p, 4096);
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_BUDGET);
        const char *at = std::strstr(e.what(), "smallest budget that works is ");
        assert_non_null(at);
        named = std::strtoull(at + std::strlen("smallest budget that works is "), nullptr, 10);
    }
    assert_true(named > 100000);
    p.kv_budget_bytes = named;
    plan = plan_memory(specs, p, 4096);
    assert_true(plan.total_bytes <= named);
    p.kv_budget_bytes = named - 1;
    bool refused = false;
    try {
        plan_memory(specs, p, 4096);
    } catch (const Error &e) {
        refused = e.status() == KVFIT_E_BUDGET;
    }
    assert_true(refused);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),          cmocka_unit_test(test_q8),
        cmocka_unit_test(test_q4),           cmocka_unit_test(test_q4_hadamard),
        cmocka_unit_test(test_q4_channel),   cmocka_unit_test(test_channel_block_roundtrip),
        cmocka_unit_test(test_channel_plan_bytes), cmocka_unit_test(test_native_window_plan),
        cmocka_unit_test(test_native_window_dense), cmocka_unit_test(test_native_window_streaming),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
