// The attention memory (src/kv/memory.*) on the CPU backend against a plain
// reference written from the layout's definition: for every KV codec, in
// streaming sessions (sinks + ring) and dense ones, on two layers of four query
// heads over two KV heads (GQA) with two threads, random queries, keys and
// values are streamed through in batches of mixed sizes (ring wrap, batches
// that straddle blocks), and every layer's attention output must match
// softmax(q . K^T) V over the keys the query may see, each key as the layout
// stores it, rotated to its cache position. For per-channel keys that means:
// sinks and the unfinished block in F16, finished blocks quantized per
// channel, exactly as of the batch's start. The reference quantizes with its
// own codecs, written from the formats' definitions (fp16 conversion, Q8, Q4,
// the randomized Hadamard rotation), not with the code under test.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "common.h"
#include "kv/codec.h"
#include "gguf/ggml_types.h"
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

// ---------------------------------------------------------------------------
// The reference codecs, written from the formats' definitions (src/kv/codec.h)
// without calling the code under test. Where the definition leaves a rounding
// open, codec.cpp documents the choice: fp16 round to nearest even (values
// saturated at +-65504), scales rounded up and minima down to fp16, codes
// round to nearest even after clamping, quotients computed in float.

// fp16 of v rounded to nearest even (dir 0), towards +inf (dir 1) or -inf
// (dir -1); all arithmetic exact in double. Magnitudes past 65504 give inf.
uint16_t ref_to_half(double v, int dir) {
    const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    const double a = std::fabs(v);
    // Rounding the magnitude up: towards +inf for positives, -inf for negatives.
    const int mdir = dir == 0 ? 0 : ((dir > 0) == !sign ? 1 : -1);
    auto rnd = [mdir](double x) { return mdir == 0 ? std::nearbyint(x) : mdir > 0 ? std::ceil(x) : std::floor(x); };
    uint32_t h;
    if (a < std::ldexp(1.0, -14)) {
        h = uint32_t(rnd(std::ldexp(a, 24)));  // subnormal units of 2^-24 (1024 is the smallest normal)
    } else {
        int e;
        std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): exponent e - 1
        const double mant = rnd((std::ldexp(a, -(e - 1)) - 1.0) * 1024.0);  // may carry into the exponent
        h = uint32_t(e - 1 + 15) * 1024u + uint32_t(mant);
    }
    if (h >= 0x7c00) h = 0x7c00;
    return uint16_t(sign | h);
}

float ref_from_half(uint16_t h) {
    const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double a;
    if (e == 0) a = std::ldexp(double(m), -24);
    else if (e == 31) a = m ? NAN : INFINITY;
    else a = std::ldexp(double(1024 + m), e - 25);
    return float(h & 0x8000 ? -a : a);
}

float ref_half_round(float v) {  // F16 storage: saturate, then nearest even
    return ref_from_half(ref_to_half(std::min(65504.0f, std::max(-65504.0f, v)), 0));
}
float ref_scale(float v) {  // smallest fp16 >= v (v >= 0), at most 65504
    return v > 0.0f ? ref_from_half(ref_to_half(std::min(v, 65504.0f), 1)) : 0.0f;
}
float ref_min(float v) {  // largest fp16 <= v, within +-65504
    return ref_from_half(ref_to_half(std::min(65504.0f, std::max(-65504.0f, v)), -1));
}
float ref_code(float v, float lo, float hi) {  // clamped, rounded to nearest even
    return std::nearbyint(std::min(hi, std::max(lo, v)));
}

void ref_q8(const float *x, float *y, int n) {  // symmetric int8, fp16 scale per group of 32
    for (int g = 0; g < n; g += 32) {
        float amax = 0.0f;
        for (int i = g; i < g + 32; i++) amax = std::max(amax, std::fabs(x[i]));
        const float d = ref_scale(amax / 127.0f);
        for (int i = g; i < g + 32; i++) y[i] = d > 0.0f ? ref_code(x[i] / d, -127.0f, 127.0f) * d : 0.0f;
    }
}

void ref_q4(const float *x, float *y, int n) {  // asymmetric int4, fp16 scale and minimum per group of 32
    for (int g = 0; g < n; g += 32) {
        float lo = x[g], hi = x[g];
        for (int i = g; i < g + 32; i++) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
        const float m = ref_min(lo), d = ref_scale((hi - m) / 15.0f);  // d from the stored minimum
        for (int i = g; i < g + 32; i++) y[i] = (d > 0.0f ? ref_code((x[i] - m) / d, 0.0f, 15.0f) : 0.0f) * d + m;
    }
}

std::vector<float> ref_roundtrip(KVCodec c, const float *x) {
    std::vector<float> y(HD);
    if (c == KVCodec::Q8) ref_q8(x, y.data(), HD);
    else if (c == KVCodec::Q4) ref_q4(x, y.data(), HD);
    else for (int i = 0; i < HD; i++) y[size_t(i)] = ref_half_round(x[i]);
    return y;
}

// The randomized Hadamard rotation's signs for a power of two n: a 64-bit LCG
// (Knuth's MMIX constants) seeded from n, one step per sign, top bit set = -1.
std::vector<float> ref_signs(int n) {
    std::vector<float> s(static_cast<size_t>(n));
    uint64_t st = 0x6b76666974ull ^ (uint64_t(n) * 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        s[size_t(i)] = (st >> 63) ? -1.0f : 1.0f;
    }
    return s;
}

// x <- H diag(s) x / sqrt(n), or its transpose diag(s) H x / sqrt(n), in
// float as codec.cpp documents its order: signs pre-scaled by 1/sqrt(n), then
// the Walsh-Hadamard butterflies with strides 1, 2, 4, ... (Sylvester order).
void ref_hadamard(float *x, int n, bool inverse) {
    const std::vector<float> s = ref_signs(n);
    const float scale = float(1.0 / std::sqrt(double(n)));
    if (!inverse)
        for (int i = 0; i < n; i++) x[i] *= s[size_t(i)] * scale;
    for (int h = 1; h < n; h *= 2)
        for (int i = 0; i < n; i++)
            if (!(i & h)) {
                const float a = x[i], b = x[i + h];
                x[i] = a + b;
                x[i + h] = a - b;
            }
    if (inverse)
        for (int i = 0; i < n; i++) x[i] *= s[size_t(i)] * scale;
}

// ---------------------------------------------------------------------------

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

// The attention check's shape: several layers, GQA with several KV heads.
constexpr int A_LAYERS = 2, A_HEAD = 4, A_KV = 2, A_THREADS = 2;
constexpr int A_Q = A_HEAD * HD, A_K = A_KV * HD;

// One KV head's keys (rows of stride A_K in k) as the layout holds them when
// a batch starting at p0 is attended, for tokens 0 .. upto - 1, before RoPE.
// S is the layer's sinks (0 for a dense layer).
std::vector<std::vector<float>> stored_keys(kvfit_kv_codec codec, const std::vector<float> &k, int kvh, int upto,
                                            uint64_t p0, int S) {
    std::vector<std::vector<float>> out(static_cast<size_t>(upto));
    auto row = [&](int j) { return k.data() + size_t(j) * A_K + size_t(kvh) * HD; };
    if (codec != KVFIT_KV_Q4_CHANNEL) {
        for (int j = 0; j < upto; j++) {
            if (codec == KVFIT_KV_Q4_HADAMARD) {
                std::vector<float> h(row(j), row(j) + HD);
                ref_hadamard(h.data(), HD, false);
                out[size_t(j)] = ref_roundtrip(KVCodec::Q4, h.data());
                ref_hadamard(out[size_t(j)].data(), HD, true);
            } else {
                out[size_t(j)] = ref_roundtrip(codec == KVFIT_KV_Q8 ? KVCodec::Q8 : codec == KVFIT_KV_Q4 ? KVCodec::Q4
                                                                                                     : KVCodec::F16,
                                               row(j));
            }
        }
        return out;
    }
    // Per-channel keys: sinks and the unfinished block in F16; every block of
    // 32 tokens finished before p0, one Q4 group per channel along the tokens
    // (of the F16 rows the residual block held).
    const uint64_t res0 = p0 > uint64_t(S) ? S + (p0 - S) / KV_CHANNEL_BLOCK * KV_CHANNEL_BLOCK : p0;
    for (int j = 0; j < upto; j++)
        if (j < S || uint64_t(j) >= res0) out[size_t(j)] = ref_roundtrip(KVCodec::F16, row(j));
    for (uint64_t b0 = uint64_t(S); b0 + KV_CHANNEL_BLOCK <= res0; b0 += KV_CHANNEL_BLOCK) {
        for (int t = 0; t < KV_CHANNEL_BLOCK && b0 + uint64_t(t) < uint64_t(upto); t++)
            out[size_t(b0) + size_t(t)].assign(HD, 0.0f);
        for (int c = 0; c < HD; c++) {
            float col[KV_CHANNEL_BLOCK], q[KV_CHANNEL_BLOCK];
            for (int t = 0; t < KV_CHANNEL_BLOCK; t++) col[t] = ref_half_round(row(int(b0) + t)[c]);
            ref_q4(col, q, KV_CHANNEL_BLOCK);
            for (int t = 0; t < KV_CHANNEL_BLOCK && b0 + uint64_t(t) < uint64_t(upto); t++)
                out[size_t(b0) + size_t(t)][size_t(c)] = q[t];
        }
    }
    return out;
}

// Every KV codec, streaming (sinks + ring) or dense, on A_LAYERS layers of
// A_HEAD query heads over A_KV KV heads, with A_THREADS threads. Each layer
// gets its own queries, keys and values; every layer's output is checked.
void check_attention(kvfit_kv_codec codec, bool dense) {
    RopeParams rp;
    rp.n_dims = HD;
    const std::vector<LayerSpec> shape = uniform_attention_layers(A_LAYERS, A_HEAD, A_KV, HD, rp);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.kv_codec = codec;
    if (dense) {
        p.n_ctx = TOKENS;
    } else {
        p.n_sink = SINKS;
        p.n_window = WINDOW;
    }
    const MemoryPlan plan = plan_memory(shape, p, 512);
    const int S = dense ? 0 : SINKS;
    for (const LayerPlan &lp : plan.layers) {
        assert_int_equal(layer_codec(lp), codec);
        assert_int_equal(lp.kind, dense ? KVFIT_LAYER_DENSE : KVFIT_LAYER_STREAMING);
        assert_int_equal(lp.n_sink, S);
    }
    if (dense) assert_true(plan.capacity() >= TOKENS);
    else assert_true(plan.unbounded());
    constexpr int MAX_BATCH = 64;
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(A_THREADS, MAX_BATCH, A_Q, dense ? int(plan.capacity()) : SINKS + WINDOW);
    SessionMemory cache(*stream, shape, plan, MAX_BATCH);
    const bool rotated = cache.attention(0).keys_rotated();
    assert_true(!rotated || (dense && codec == KVFIT_KV_F16));

    Rng rng(uint64_t(codec) * 2 + (dense ? 1 : 0) + 7);
    std::vector<std::vector<float>> q(A_LAYERS), k(A_LAYERS), v(A_LAYERS), sv(A_LAYERS * A_KV);
    for (int l = 0; l < A_LAYERS; l++) {
        q[size_t(l)].resize(size_t(TOKENS) * A_Q);
        k[size_t(l)].resize(size_t(TOKENS) * A_K);
        v[size_t(l)].resize(size_t(TOKENS) * A_K);
        for (float &x : q[size_t(l)]) x = rng.uniform();
        for (size_t i = 0; i < k[size_t(l)].size(); i++)  // an outlier channel per KV head
            k[size_t(l)][i] = rng.uniform() * (i % HD == size_t(5 + 7 * l) ? 8.0f : 1.0f);
        for (float &x : v[size_t(l)]) x = rng.uniform() * (l ? 2.0f : 1.0f);
    }
    const KVCodec vc = codec == KVFIT_KV_Q8 ? KVCodec::Q8 : codec == KVFIT_KV_F16 ? KVCodec::F16 : KVCodec::Q4;
    std::vector<std::vector<std::vector<float>>> vals(size_t(A_LAYERS * A_KV));  // values as stored
    for (int l = 0; l < A_LAYERS; l++)
        for (int g = 0; g < A_KV; g++)
            for (int j = 0; j < TOKENS; j++)
                vals[size_t(l * A_KV + g)].push_back(ref_roundtrip(vc, v[size_t(l)].data() + size_t(j) * A_K + size_t(g) * HD));

    const int batches[] = {1, 1, 3, 32, 7, 64, 1, 29, 40, 1, 2, 64, 33};
    std::vector<float> out(size_t(MAX_BATCH) * A_Q), kscratch(size_t(MAX_BATCH) * A_K);
    float worst[A_LAYERS] = {};
    const float tol = rotated ? 4e-3f : 1e-5f;  // rotated keys: llama.cpp's F16 query and accumulator
    uint64_t pos = 0;
    for (int b = 0; pos < TOKENS; b = (b + 1) % int(sizeof batches / sizeof *batches)) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[b]), TOKENS - pos));
        for (int l = 0; l < A_LAYERS; l++) {
            const std::vector<float> &ql = q[size_t(l)], &kl = k[size_t(l)];
            std::memcpy(kscratch.data(), kl.data() + pos * A_K, size_t(n) * A_K * 4);  // attend uses k as scratch
            cache.attend(*stream, l, ql.data() + pos * A_Q, kscratch.data(), v[size_t(l)].data() + pos * A_K, n, pos,
                         out.data());
            stream->synchronize();
            std::vector<std::vector<std::vector<float>>> keys(A_KV);
            for (int g = 0; g < A_KV; g++) keys[size_t(g)] = stored_keys(codec, kl, g, int(pos) + n, pos, S);
            for (int i = 0; i < n; i++) {
                const uint64_t t = pos + uint64_t(i);
                std::vector<int> vis;  // visible keys in cache-position order
                if (dense) {
                    for (uint64_t j = 0; j <= t; j++) vis.push_back(int(j));
                } else {
                    for (uint64_t j = 0; j < std::min<uint64_t>(SINKS, t + 1); j++) vis.push_back(int(j));
                    for (uint64_t j = std::max<uint64_t>(SINKS, t + 1 > WINDOW ? t + 1 - WINDOW : 0); j <= t; j++)
                        vis.push_back(int(j));
                }
                for (int g = 0; g < A_KV; g++) {
                    std::vector<std::vector<float>> rk(vis.size());  // keys rotated to their cache positions
                    for (size_t c = 0; c < vis.size(); c++) {
                        rk[c] = keys[size_t(g)][size_t(vis[c])];
                        rope(rk[c].data(), uint32_t(c));
                    }
                    for (int h = g * (A_HEAD / A_KV); h < (g + 1) * (A_HEAD / A_KV); h++) {
                        std::vector<float> qr(ql.begin() + long(t * A_Q + size_t(h) * HD),
                                              ql.begin() + long(t * A_Q + size_t(h + 1) * HD));
                        rope(qr.data(), uint32_t(vis.size() - 1));
                        std::vector<double> sc(vis.size());
                        double mx = -1e300, sum = 0;
                        for (size_t c = 0; c < vis.size(); c++) {
                            double d = 0;
                            for (int x = 0; x < HD; x++) d += double(rk[c][size_t(x)]) * qr[size_t(x)];
                            sc[c] = d / std::sqrt(double(HD));
                            mx = std::max(mx, sc[c]);
                        }
                        std::vector<double> o(HD, 0.0);
                        for (size_t c = 0; c < vis.size(); c++) {
                            const double e = std::exp(sc[c] - mx);
                            sum += e;
                            const std::vector<float> &val = vals[size_t(l * A_KV + g)][size_t(vis[c])];
                            for (int x = 0; x < HD; x++) o[size_t(x)] += e * val[size_t(x)];
                        }
                        for (int x = 0; x < HD; x++) {
                            const float want = float(o[size_t(x)] / sum);
                            const float got = out[size_t(i) * A_Q + size_t(h) * HD + size_t(x)];
                            if (std::fabs(got - want) > tol && worst[l] <= tol)
                                printf("  layer %d first difference: token %llu (batch at %llu of %d), head %d: %g vs %g\n",
                                       l, (unsigned long long)t, (unsigned long long)pos, n, h, double(got), double(want));
                            worst[l] = std::max(worst[l], std::fabs(got - want));
                        }
                    }
                }
            }
        }
        pos += uint64_t(n);
    }
    for (int l = 0; l < A_LAYERS; l++) {
        printf("codec %d %s layer %d: largest difference from the reference %.2e over %d tokens\n", int(codec),
               dense ? "dense" : "streaming", l, double(worst[l]), TOKENS);
        assert_true(worst[l] < tol);
    }
}

// The reference's fp16 conversion agrees with the library's (checked against
// known values in test_gguf) on every half and on the floats around each
// rounding boundary; its directed roundings bracket the value.
void test_reference_fp16(void **) {
    for (uint32_t h = 0; h < 0x10000; h++) {
        const float f = ref_from_half(uint16_t(h));
        if (std::isnan(f)) continue;
        const float lib = fp16_to_fp32(uint16_t(h));
        assert_memory_equal(&f, &lib, 4);
        if (std::isinf(f) || (h & 0x7fff) == 0x7bff) continue;
        const float next = ref_from_half(uint16_t(h + 1));  // away from zero
        const float mid = (f + next) / 2;                    // exact: halves have 11 bits
        const float probes[] = {f, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 2 * mid), (f + 3 * next) / 4};
        for (float x : probes) {
            assert_int_equal(ref_to_half(x, 0), fp32_to_fp16(x));
            const float up = ref_from_half(ref_to_half(x, 1)), down = ref_from_half(ref_to_half(x, -1));
            assert_true(down <= x && x <= up);
            const uint16_t hu = ref_to_half(x, 1), hd = ref_to_half(x, -1);
            if (up == down) assert_true(up == x);
            else assert_int_equal(x > 0 ? hu - hd : hd - hu, 1);  // neighbours
        }
    }
    assert_true(ref_from_half(ref_to_half(1e-9, -1)) == 0.0f && ref_to_half(-1e-9, -1) == 0x8001);
    assert_true(ref_scale(1e-9f) == ref_from_half(1) && ref_scale(1e6f) == 65504.0f && ref_min(-1e6f) == -65504.0f);
}

// The reference rotation is the definition's matrix H diag(s) / sqrt(n)
// (H[i][j] = (-1)^popcount(i & j)), and its inverse undoes it.
void test_reference_hadamard(void **) {
    for (int n : {1, 2, 8, 64, 128}) {
        const std::vector<float> s = ref_signs(n);
        Rng rng(static_cast<uint64_t>(n));
        std::vector<float> x(static_cast<size_t>(n)), y;
        for (float &a : x) a = rng.uniform();
        y = x;
        ref_hadamard(y.data(), n, false);
        for (int i = 0; i < n; i++) {
            double want = 0;
            for (int j = 0; j < n; j++)
                want += (__builtin_popcount(unsigned(i & j)) & 1 ? -1.0 : 1.0) * s[size_t(j)] * x[size_t(j)];
            assert_true(std::fabs(y[size_t(i)] - want / std::sqrt(double(n))) < 1e-5);
        }
        ref_hadamard(y.data(), n, true);
        for (int i = 0; i < n; i++) assert_true(std::fabs(y[size_t(i)] - x[size_t(i)]) < 1e-5f);
    }
}

void test_f16(void **) { check_attention(KVFIT_KV_F16, false); }
void test_q8(void **) { check_attention(KVFIT_KV_Q8, false); }
void test_q4(void **) { check_attention(KVFIT_KV_Q4, false); }
void test_q4_hadamard(void **) { check_attention(KVFIT_KV_Q4_HADAMARD, false); }
void test_q4_channel(void **) { check_attention(KVFIT_KV_Q4_CHANNEL, false); }
void test_dense_f16(void **) { check_attention(KVFIT_KV_F16, true); }
void test_dense_q8(void **) { check_attention(KVFIT_KV_Q8, true); }
void test_dense_q4(void **) { check_attention(KVFIT_KV_Q4, true); }
void test_dense_q4_hadamard(void **) { check_attention(KVFIT_KV_Q4_HADAMARD, true); }
void test_dense_q4_channel(void **) { check_attention(KVFIT_KV_Q4_CHANNEL, true); }

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
                    std::vector<float> key = ref_roundtrip(KVCodec::F16, k.data() + j * HD);
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
                    std::vector<float> val = ref_roundtrip(KVCodec::F16, v.data() + j * HD);
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

// The CPU stream with keys kept before RoPE in every layer, as the CUDA
// backend keeps them: the other layout of a saved state's dense keys.
class PreRopeStream final : public Stream {
public:
    explicit PreRopeStream(std::unique_ptr<Stream> s) : s_(std::move(s)) {}
    bool stores_rotated_keys() const override { return false; }
    void *alloc(size_t bytes) override { return s_->alloc(bytes); }
    uint64_t allocated_bytes() const override { return s_->allocated_bytes(); }
    void upload(void *dst, const void *src, size_t bytes) override { s_->upload(dst, src, bytes); }
    void download(void *dst, const void *src, size_t bytes) override { s_->download(dst, src, bytes); }
    void synchronize() override { s_->synchronize(); }
    void get_rows(const Weight &t, const int32_t *ids, int n, float *x) override { s_->get_rows(t, ids, n, x); }
    void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) override { s_->rmsnorm(x, w, eps, n, y); }
    void matmul(const Weight &w, const float *x, int n, float *y) override { s_->matmul(w, x, n, y); }
    void kv_encode(int codec, bool hadamard, float *x, int n, int n_heads, int head_dim, uint8_t *dst) override {
        s_->kv_encode(codec, hadamard, x, n, n_heads, head_dim, dst);
    }
    void kv_encode_channels(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) override {
        s_->kv_encode_channels(rows, n_heads, head_dim, dst);
    }
    void cache_attention(const CacheAttention &a, const float *q, float *out) override { s_->cache_attention(a, q, out); }
    void copy(void *dst, const void *src, size_t bytes) override { s_->copy(dst, src, bytes); }
    void swiglu(const float *gate, const float *up, size_t n, float *out) override { s_->swiglu(gate, up, n, out); }
    void add(float *y, const float *x, size_t n) override { s_->add(y, x, n); }

private:
    std::unique_ptr<Stream> s_;
};

// A state saved with dense keys after RoPE loads into memory that keeps them
// before (and the other way round): SessionMemory::load rotates them back or
// forth. Two layers: one with the model's own window of NW tokens (a ring at
// stream positions, wrapped) and a global one; 150 tokens, saved, loaded into
// memory of the other layout, then 150 more through both. The converted
// memory must attend as the memory that kept that layout from the start,
// within what the F16 rounding of the rotated (or unrotated) keys allows;
// without the conversion it would be far off.
void test_key_layout_conversion(void **) {
    constexpr int NW = 80, SAVE_AT = 150;
    std::vector<LayerSpec> specs = one_kv_head(2);
    specs[0].native_window = NW;
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    p.n_ctx = TOKENS;
    const MemoryPlan plan = plan_memory(specs, p, 512);
    auto backend = create_cpu_backend();
    auto cpu_stream = [&] { return backend->create_stream(2, NW, N_HEAD * HD, TOKENS); };
    std::unique_ptr<Stream> rot_s = cpu_stream(), rot2_s = cpu_stream();
    PreRopeStream pre_s(cpu_stream()), pre2_s(cpu_stream());
    SessionMemory rot(*rot_s, specs, plan, NW), rot2(*rot2_s, specs, plan, NW);
    SessionMemory pre(pre_s, specs, plan, NW), pre2(pre2_s, specs, plan, NW);
    for (int l = 0; l < 2; l++) {
        assert_true(rot.attention(l).keys_rotated());
        assert_false(pre.attention(l).keys_rotated());
    }

    Rng rng(21);
    std::vector<float> q(size_t(TOKENS) * N_HEAD * HD), k(size_t(TOKENS) * HD), v(size_t(TOKENS) * HD);
    for (float &x : q) x = rng.uniform();
    for (float &x : k) x = rng.uniform();
    for (float &x : v) x = rng.uniform();
    std::vector<float> kscratch(size_t(NW) * HD);
    // Tokens [from, to) through one memory, in batches of up to 64; every
    // output row of both layers, one after the other.
    auto feed = [&](SessionMemory &m, Stream &s, int from, int to) {
        std::vector<float> outs, out(size_t(NW) * N_HEAD * HD);
        for (int pos = from; pos < to;) {
            const int n = std::min(to - pos, 64);
            for (int l = 0; l < 2; l++) {
                std::memcpy(kscratch.data(), k.data() + size_t(pos) * HD, size_t(n) * HD * 4);
                m.attend(s, l, q.data() + size_t(pos) * N_HEAD * HD, kscratch.data(), v.data() + size_t(pos) * HD, n,
                         uint64_t(pos), out.data());
                s.synchronize();
                outs.insert(outs.end(), out.begin(), out.begin() + long(n) * N_HEAD * HD);
            }
            pos += n;
        }
        return outs;
    };
    feed(rot, *rot_s, 0, SAVE_AT);
    feed(pre, pre_s, 0, SAVE_AT);
    std::vector<uint8_t> rot_state(rot.state_bytes()), pre_state(pre.state_bytes());
    rot.save(*rot_s, rot_state.data());
    pre.save(pre_s, pre_state.data());
    pre2.load(pre2_s, rot_state.data(), {true, true}, SAVE_AT);   // un-rotated on the way in
    rot2.load(*rot2_s, pre_state.data(), {false, false}, SAVE_AT);  // rotated on the way in

    // The converted keys: the same F16 values as the memory that kept that
    // layout, but for the rounding of one more F16 conversion.
    // (CPU memory: the buffers are host memory; the window's ring is full,
    // the global layer holds SAVE_AT rows.)
    float worst_key = 0.0f;
    for (auto [a, b] : {std::make_pair(&pre2, &pre), std::make_pair(&rot2, &rot)})
        for (int l = 0; l < 2; l++) {
            const auto *x = reinterpret_cast<const uint16_t *>(a->attention(l).parts()[0].first);
            const auto *y = reinterpret_cast<const uint16_t *>(b->attention(l).parts()[0].first);
            for (size_t i = 0; i < size_t(l == 0 ? NW : SAVE_AT) * HD; i++)
                worst_key = std::max(worst_key, std::fabs(ref_from_half(x[i]) - ref_from_half(y[i])));
        }

    const std::vector<float> want_pre = feed(pre, pre_s, SAVE_AT, TOKENS), got_pre = feed(pre2, pre2_s, SAVE_AT, TOKENS);
    const std::vector<float> want_rot = feed(rot, *rot_s, SAVE_AT, TOKENS), got_rot = feed(rot2, *rot2_s, SAVE_AT, TOKENS);
    float worst_pre = 0.0f, worst_rot = 0.0f, unconverted = 0.0f;
    for (size_t i = 0; i < want_pre.size(); i++) {
        worst_pre = std::max(worst_pre, std::fabs(want_pre[i] - got_pre[i]));
        worst_rot = std::max(worst_rot, std::fabs(want_rot[i] - got_rot[i]));
    }
    // The same state loaded as if the layouts were the same: what the
    // conversion prevents.
    SessionMemory wrong(pre_s, specs, plan, NW);
    wrong.load(pre_s, rot_state.data());
    const std::vector<float> got_wrong = feed(wrong, pre_s, SAVE_AT, TOKENS);
    for (size_t i = 0; i < want_pre.size(); i++) unconverted = std::max(unconverted, std::fabs(want_pre[i] - got_wrong[i]));
    printf("key layout conversion: keys within %.2e of the other layout's; attention within %.2e (to pre-RoPE), "
           "%.2e (to rotated); unconverted %.2e\n", double(worst_key), double(worst_pre), double(worst_rot),
           double(unconverted));
    // Rotated keys stay below 2 in magnitude, where an F16 step is at most
    // 2^-10: the extra rounding moves a key by no more than two steps.
    assert_true(worst_key <= 2.0f / 1024.0f);
    assert_true(worst_pre < 2e-3f && worst_rot < 2e-3f);
    assert_true(unconverted > 0.05f);
}

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

// The smallest budget a KVFIT_E_BUDGET message names (0 if none was refused).
uint64_t named_budget(const std::vector<LayerSpec> &specs, const kvfit_session_params &p) {
    try {
        plan_memory(specs, p, 4096);
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_BUDGET);
        const char *at = std::strstr(e.what(), "smallest budget that works is ");
        assert_non_null(at);
        return std::strtoull(at + std::strlen("smallest budget that works is "), nullptr, 10);
    }
    return 0;
}

bool budget_refused(const std::vector<LayerSpec> &specs, const kvfit_session_params &p) {
    try {
        plan_memory(specs, p, 4096);
    } catch (const Error &e) {
        return e.status() == KVFIT_E_BUDGET;
    }
    return false;
}

// Recurrent state buffers of odd sizes, so that the allocation unit shows.
const std::vector<uint64_t> kStateParts = {4 * 64 * 64 * 2 + 12, 3 * 4 * 96};

uint64_t rounded(const std::vector<uint64_t> &parts) {
    uint64_t n = 0;
    for (uint64_t b : parts) n += (b + kAllocUnit - 1) / kAllocUnit * kAllocUnit;
    return n;
}

// Three recurrent layers to one attention layer (Qwen3.5's pattern): the
// states are fixed bytes, off the budget first, and the attention layers
// share what is left.
void test_recurrent_plan(void **) {
    RopeParams rope;
    rope.n_dims = HD;
    std::vector<LayerSpec> specs;
    for (int l = 0; l < 8; l++)
        specs.push_back(l % 4 < 3 ? recurrent_layer(kStateParts) : uniform_attention_layers(1, N_HEAD, 1, HD, rope)[0]);
    const uint64_t state = rounded(kStateParts);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    p.n_ctx = 1000;
    MemoryPlan plan = plan_memory(specs, p, 4096);
    uint64_t sum = 0;
    for (int l = 0; l < 8; l++) {
        const LayerPlan &lp = plan.layers[size_t(l)];
        if (l % 4 < 3) {
            assert_int_equal(lp.kind, KVFIT_LAYER_RECURRENT);
            assert_int_equal(layer_codec(lp), KVFIT_KV_F32);
            assert_int_equal(lp.bytes, state);
            assert_int_equal(lp.n_sink + lp.n_window, 0);
            assert_int_equal(plan.layer_table[size_t(l)], -1);
        } else {
            assert_int_equal(lp.kind, KVFIT_LAYER_DENSE);
            assert_int_equal(lp.n_window, 1000);
        }
        sum += lp.bytes;
    }
    assert_int_equal(plan.rope_tables.size(), 1);
    assert_int_equal(plan.total_bytes, sum + plan.rope_tables[0].bytes);
    assert_int_equal(plan.capacity(), 1000);

    // Budgeted: the states whole, the attention layers streaming in the rest.
    p.n_ctx = 100000;
    p.kv_budget_bytes = 300000;
    plan = plan_memory(specs, p, 4096);
    assert_true(plan.total_bytes <= p.kv_budget_bytes);
    assert_true(plan.unbounded());
    for (int l = 0; l < 8; l++) {
        const LayerPlan &lp = plan.layers[size_t(l)];
        if (l % 4 < 3) {
            assert_int_equal(lp.kind, KVFIT_LAYER_RECURRENT);
            assert_int_equal(lp.bytes, state);
        } else {
            assert_int_equal(lp.kind, KVFIT_LAYER_STREAMING);
            assert_int_equal(lp.n_sink, 4);
            assert_true(lp.n_window >= 16);
        }
    }
    assert_int_equal(plan.max_batch(), plan.layers[3].n_window);

    // Too small for the states and a minimal window: the named budget works,
    // one byte less does not.
    p.kv_budget_bytes = 6 * state;
    const uint64_t named = named_budget(specs, p);
    assert_true(named > 6 * state);
    p.kv_budget_bytes = named;
    assert_true(plan_memory(specs, p, 4096).total_bytes <= named);
    p.kv_budget_bytes = named - 1;
    assert_true(budget_refused(specs, p));
    // Smaller than the states alone.
    p.kv_budget_bytes = state;
    assert_int_equal(named_budget(specs, p), named);
}

// A model that is recurrent in every layer (RWKV): no tokens are kept, so no
// capacity or batch limit, and the budget is the states' bytes.
void test_all_recurrent_plan(void **) {
    const std::vector<LayerSpec> specs(4, recurrent_layer(kStateParts));
    const uint64_t state = rounded(kStateParts);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    MemoryPlan plan = plan_memory(specs, p, 4096);
    assert_true(plan.unbounded());
    assert_int_equal(plan.max_batch(), UINT32_MAX);
    assert_int_equal(plan.total_bytes, 4 * state);
    assert_true(plan.rope_tables.empty());
    p.kv_budget_bytes = 4 * state;
    assert_int_equal(plan_memory(specs, p, 4096).total_bytes, 4 * state);
    p.kv_budget_bytes = 4 * state - 1;
    assert_int_equal(named_budget(specs, p), 4 * state);
}

// A recurrent layer's memory: zero at creation, saved and loaded whole,
// zero again after clear, and allocated as planned.
void test_recurrent_memory(void **) {
    RopeParams rope;
    rope.n_dims = HD;
    const std::vector<LayerSpec> specs = {recurrent_layer(kStateParts), uniform_attention_layers(1, N_HEAD, 1, HD, rope)[0]};
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.n_sink = -1;
    p.n_ctx = 64;
    const MemoryPlan plan = plan_memory(specs, p, 4096);
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(1, 8, N_HEAD * HD, 64);
    SessionMemory mem(*stream, specs, plan, 8);
    assert_int_equal(mem.allocated_bytes(), plan.total_bytes);
    RecurrentMemory &r = mem.recurrent(0);
    assert_int_equal(r.n_parts(), 2);
    assert_int_equal(r.state_bytes(), kStateParts[0] + kStateParts[1]);
    for (size_t i = 0; i < 2; i++) {
        const float *f = r.f32(i);
        for (size_t j = 0; j < kStateParts[i] / 4; j++) assert_true(f[j] == 0.0f);
    }
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < kStateParts[i] / 4; j++) r.f32(i)[j] = float(i * 1000 + j) * 0.5f;
    std::vector<uint8_t> saved(mem.state_bytes());
    mem.save(*stream, saved.data());
    mem.clear(*stream);
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < kStateParts[i] / 4; j++) assert_true(r.f32(i)[j] == 0.0f);
    mem.load(*stream, saved.data());
    for (size_t i = 0; i < 2; i++)
        for (size_t j = 0; j < kStateParts[i] / 4; j++) assert_true(r.f32(i)[j] == float(i * 1000 + j) * 0.5f);
    bool wrong_kind = false;
    try {
        mem.attention(0);
    } catch (const Error &e) {
        wrong_kind = e.status() == KVFIT_E_INTERNAL;
    }
    assert_true(wrong_kind);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16),          cmocka_unit_test(test_q8),
        cmocka_unit_test(test_q4),           cmocka_unit_test(test_q4_hadamard),
        cmocka_unit_test(test_q4_channel),   cmocka_unit_test(test_channel_block_roundtrip),
        cmocka_unit_test(test_channel_plan_bytes), cmocka_unit_test(test_native_window_plan),
        cmocka_unit_test(test_recurrent_plan),     cmocka_unit_test(test_all_recurrent_plan),
        cmocka_unit_test(test_recurrent_memory),
        cmocka_unit_test(test_native_window_dense), cmocka_unit_test(test_native_window_streaming),
        cmocka_unit_test(test_reference_fp16),     cmocka_unit_test(test_reference_hadamard),
        cmocka_unit_test(test_dense_f16),          cmocka_unit_test(test_dense_q8),
        cmocka_unit_test(test_dense_q4),           cmocka_unit_test(test_dense_q4_hadamard),
        cmocka_unit_test(test_dense_q4_channel),   cmocka_unit_test(test_key_layout_conversion),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
