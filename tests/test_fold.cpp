// Fold mode (src/kv/fold.h) on the CPU backend against a brute-force
// computation written here from the definition: streaming layers of several
// query heads over several KV heads (GQA), random queries, keys and values
// streamed in batches of mixed sizes through many ring wraps. Each query's
// output must be
//   (sum_exact e^s v + sum_folded w v) / (sum_exact e^s + sum_folded w)
// over the sinks and window it sees exactly (keys rotated to their cache
// positions) and the tokens whose ring slot was overwritten before its batch
// (keys unrotated, the query rotated to position n_window), with the fold
// weights w of the map under test:
//   Taylor: w_j = e^mu (1 + s_j - mu), mu the mean of the folded s_j;
//   random features: w_j = sum_f phi_f(q) phi_f(k_j), phi_f(x) =
//     exp(w_f . x' - |x'|^2 / 2) / sqrt(F), x' = x scale^(1/2).
// Keys and values are F16 (rounded here with the compiler's _Float16).
// Also: plans with fold stay within the budget, layer by layer no larger than
// without it, and what is allocated is what is planned; save and restore of
// the memory is exact and reset clears it; fold off changes nothing.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "common.h"
#include "kv/fold.h"
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

constexpr int HD = 64, SINKS = 4, WINDOW = 48, TOKENS = 260, MAX_BATCH = 48;

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
    float uniform() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return float(uint32_t(s >> 32)) / 2147483648.0f - 1.0f;
    }
};

// x rounded to the nearest fp16 value (ties to even), from the format's
// definition: 11 significant bits, exponents down to -14, subnormals below
// (written here rather than with a compiler's half type, which not every
// target has). The fold tests stay within the normal range.
float f16(float x) {
    if (x == 0.0f || !std::isfinite(x)) return x;
    int e;
    std::frexp(std::fabs(x), &e);            // |x| = m * 2^e, m in [0.5, 1)
    const int exp = std::max(e - 1, -14);     // the binade's exponent, subnormals share -14
    const double ulp = std::ldexp(1.0, exp - 10);
    return float(std::nearbyint(double(x) / ulp) * ulp);  // the default rounding mode: to nearest even
}

// Pairs (2i, 2i+1) rotated to position pos, base 10000, in double.
std::vector<double> rope(const float *x, uint32_t pos) {
    std::vector<double> v(x, x + HD);
    for (int i = 0; i < HD / 2; i++) {
        const double th = double(pos) * std::pow(10000.0, -2.0 * i / HD);
        const double x0 = v[size_t(2 * i)], x1 = v[size_t(2 * i + 1)];
        v[size_t(2 * i)] = x0 * std::cos(th) - x1 * std::sin(th);
        v[size_t(2 * i + 1)] = x0 * std::sin(th) + x1 * std::cos(th);
    }
    return v;
}

double dot(const std::vector<double> &a, const float *b) {
    double d = 0;
    for (int i = 0; i < HD; i++) d += a[size_t(i)] * b[i];
    return d;
}

// n_head query heads over n_kv KV heads; both maps.
void check_fold(FoldMap map, int n_head, int n_kv, const int *batches, int n_batches) {
    setenv("KVFIT_FOLD_MAP", map == FoldMap::RandomFeatures ? "rf" : "taylor", 1);
    RopeParams rp;
    rp.n_dims = HD;
    const std::vector<LayerSpec> shape = uniform_attention_layers(2, n_head, n_kv, HD, rp);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.kv_codec = KVFIT_KV_F16;
    p.n_sink = SINKS;
    p.n_window = WINDOW;
    p.fold = KVFIT_FOLD_ON;
    const MemoryPlan plan = plan_memory(shape, p, 512);
    for (const LayerPlan &lp : plan.layers) {
        assert_true(lp.fold == map);
        assert_int_equal(lp.n_window, WINDOW);
    }
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(2, MAX_BATCH, n_head * HD, SINKS + WINDOW);
    SessionMemory mem(*stream, shape, plan, MAX_BATCH);
    const int QW = n_head * HD, KW = n_kv * HD, group = n_head / n_kv, F = HD;
    const double scale = 1.0 / std::sqrt(double(HD));
    const float *omega = fold_random_directions(HD);

    Rng rng(uint64_t(map) * 100 + uint64_t(n_head * 10 + n_kv));
    std::vector<std::vector<float>> q(2), k(2), v(2), kr(2), vr(2);
    for (int l = 0; l < 2; l++) {
        q[size_t(l)].resize(size_t(TOKENS) * QW);
        k[size_t(l)].resize(size_t(TOKENS) * KW);
        v[size_t(l)].resize(size_t(TOKENS) * KW);
        // Correlated keys (a shared direction), so folded scores are not all alike.
        for (float &x : q[size_t(l)]) x = rng.uniform() * 1.5f;
        for (size_t i = 0; i < k[size_t(l)].size(); i++) k[size_t(l)][i] = rng.uniform() + (i % 3 == 0 ? 0.5f : 0.0f);
        for (float &x : v[size_t(l)]) x = rng.uniform();
        kr[size_t(l)] = k[size_t(l)];
        vr[size_t(l)] = v[size_t(l)];
        for (float &x : kr[size_t(l)]) x = f16(x);
        for (float &x : vr[size_t(l)]) x = f16(x);
    }
    std::vector<float> out(size_t(MAX_BATCH) * QW), kscratch(size_t(MAX_BATCH) * KW);
    double worst = 0;
    size_t folded_max = 0;
    uint64_t pos = 0;
    for (int b = 0; pos < TOKENS; b = (b + 1) % n_batches) {
        const int n = int(std::min<uint64_t>(uint64_t(batches[b]), TOKENS - pos));
        for (int l = 0; l < 2; l++) {
            std::memcpy(kscratch.data(), k[size_t(l)].data() + pos * KW, size_t(n) * KW * 4);
            mem.attend(*stream, l, q[size_t(l)].data() + pos * QW, kscratch.data(), v[size_t(l)].data() + pos * KW, n,
                       pos, out.data());
            stream->synchronize();
            // Folded: slots overwritten before this batch, tokens S .. pos - W - 1.
            std::vector<uint64_t> folded;
            for (uint64_t j = SINKS; j + WINDOW < pos; j++) folded.push_back(j);
            folded_max = std::max(folded_max, folded.size());
            for (int i = 0; i < n; i++) {
                const uint64_t t = pos + uint64_t(i);
                std::vector<uint64_t> vis;
                for (uint64_t j = 0; j < std::min<uint64_t>(SINKS, t + 1); j++) vis.push_back(j);
                for (uint64_t j = std::max<uint64_t>(SINKS, t + 1 > WINDOW ? t + 1 - WINDOW : 0); j <= t; j++) vis.push_back(j);
                for (int h = 0; h < n_head; h++) {
                    const int g = h / group;
                    const float *qh = q[size_t(l)].data() + t * QW + size_t(h) * HD;
                    auto key = [&](uint64_t j) { return kr[size_t(l)].data() + j * KW + size_t(g) * HD; };
                    auto val = [&](uint64_t j) { return vr[size_t(l)].data() + j * KW + size_t(g) * HD; };
                    // Exact part: cache positions 0 .. |vis| - 1, the query at the last.
                    const std::vector<double> qx = rope(qh, uint32_t(vis.size() - 1));
                    std::vector<double> s, w;
                    std::vector<uint64_t> who;
                    for (size_t c = 0; c < vis.size(); c++) {
                        const std::vector<double> kx = rope(key(vis[c]), uint32_t(c));
                        double d = 0;
                        for (int x = 0; x < HD; x++) d += kx[size_t(x)] * qx[size_t(x)];
                        s.push_back(d * scale);
                        who.push_back(vis[c]);
                    }
                    double mx = *std::max_element(s.begin(), s.end());
                    for (double x : s) w.push_back(std::exp(x - mx));
                    // Folded part, relative to the same e^mx.
                    if (!folded.empty()) {
                        const std::vector<double> qf = rope(qh, WINDOW);
                        if (map == FoldMap::Taylor) {
                            std::vector<double> sf;
                            double mu = 0;
                            for (uint64_t j : folded) sf.push_back(dot(qf, key(j)) * scale), mu += sf.back();
                            mu /= double(folded.size());
                            for (size_t c = 0; c < folded.size(); c++)
                                w.push_back(std::exp(mu - mx) * (1 + sf[c] - mu)), who.push_back(folded[c]);
                        } else {
                            const double rs = std::sqrt(scale);
                            auto phi = [&](const std::vector<double> &x, int f) {
                                double d = 0, nn = 0;
                                for (int i2 = 0; i2 < HD; i2++)
                                    d += double(omega[size_t(f) * HD + size_t(i2)]) * x[size_t(i2)] * rs,
                                        nn += x[size_t(i2)] * x[size_t(i2)] * scale;
                                return d - nn / 2;  // the exponent
                            };
                            std::vector<double> eq(static_cast<size_t>(F));
                            for (int f = 0; f < F; f++) eq[size_t(f)] = phi(qf, f);
                            for (uint64_t j : folded) {
                                const std::vector<double> kx(key(j), key(j) + HD);
                                double sum = 0;
                                for (int f = 0; f < F; f++) sum += std::exp(eq[size_t(f)] + phi(kx, f) - mx) / F;
                                w.push_back(sum);
                                who.push_back(j);
                            }
                        }
                    }
                    double den = 0;
                    std::vector<double> num(HD, 0.0);
                    for (size_t c = 0; c < w.size(); c++) {
                        den += w[c];
                        for (int x = 0; x < HD; x++) num[size_t(x)] += w[c] * val(who[c])[x];
                    }
                    for (int x = 0; x < HD; x++) {
                        const double got = out[size_t(i) * QW + size_t(h) * HD + size_t(x)], want = num[size_t(x)] / den;
                        const double diff = std::fabs(got - want) / std::max(1.0, std::fabs(want));
                        if (diff > 2e-4 && worst <= 2e-4)
                            printf("  layer %d token %llu (batch at %llu of %d) head %d: %g vs %g\n", l,
                                   (unsigned long long)t, (unsigned long long)pos, n, h, got, want);
                        worst = std::max(worst, diff);
                    }
                }
            }
        }
        pos += uint64_t(n);
    }
    printf("fold %s, %d heads over %d KV heads: largest difference from the brute force %.2e (up to %zu tokens folded)\n",
           map == FoldMap::Taylor ? "Taylor" : "random features", n_head, n_kv, worst, folded_max);
    assert_true(folded_max > size_t(3 * WINDOW));
    assert_true(worst < 2e-4);
    unsetenv("KVFIT_FOLD_MAP");
}

const int kMixed[] = {1, 1, 3, 32, 7, 48, 1, 29, 40, 1, 2, 48, 33};
const int kDecode[] = {1};
void test_taylor_gqa(void **) { check_fold(FoldMap::Taylor, 4, 2, kMixed, int(sizeof kMixed / sizeof *kMixed)); }
void test_taylor_mha(void **) { check_fold(FoldMap::Taylor, 3, 3, kMixed, int(sizeof kMixed / sizeof *kMixed)); }
void test_taylor_decode(void **) { check_fold(FoldMap::Taylor, 6, 2, kDecode, 1); }
void test_random_features_gqa(void **) {
    check_fold(FoldMap::RandomFeatures, 4, 2, kMixed, int(sizeof kMixed / sizeof *kMixed));
}

// SmolLM2-135M's attention shape: 30 layers, 9 heads over 3 KV heads of 64.
std::vector<LayerSpec> smollm2() {
    RopeParams rp;
    rp.n_dims = HD;
    return uniform_attention_layers(30, 9, 3, HD, rp);
}

// With a budget, a folded layer pays for its memory with its own window: no
// layer is larger than without fold, the plan fits the budget, and the
// allocation is what was planned. Too small a window folds nothing.
void test_fold_budget(void **) {
    const std::vector<LayerSpec> shape = smollm2();
    for (uint64_t mib : {1, 2, 4, 8, 16}) {
        kvfit_session_params p;
        std::memset(&p, 0, sizeof p);
        p.n_sink = -1;
        p.kv_budget_bytes = mib << 20;
        const MemoryPlan off = plan_memory(shape, p, 8192);
        p.fold = KVFIT_FOLD_ON;
        const MemoryPlan on = plan_memory(shape, p, 8192);
        assert_true(on.total_bytes <= p.kv_budget_bytes);
        int folded = 0;
        for (size_t l = 0; l < shape.size(); l++) {
            assert_true(on.layers[l].bytes <= off.layers[l].bytes);
            if (on.layers[l].fold != FoldMap::None) {
                folded++;
                assert_true(on.layers[l].n_window < off.layers[l].n_window);
                assert_false(on.layers[l].channel_keys);
            }
        }
        // AUTO with a calibration that chose layers 0 and 5 only.
        std::vector<uint8_t> mask(shape.size(), 0);
        mask[0] = mask[5] = 1;
        p.fold = KVFIT_FOLD_AUTO;
        const MemoryPlan some = plan_memory(shape, p, 8192, false, mask);
        for (size_t l = 0; l < shape.size(); l++)
            assert_true((some.layers[l].fold != FoldMap::None) == (mask[l] && folded > 0));
        auto backend = create_cpu_backend();
        auto stream = backend->create_stream(1, 64, 9 * HD, int(off.layers[0].n_sink + off.layers[0].n_window));
        SessionMemory mem(*stream, shape, on, 64);
        printf("budget %llu MiB: window %u without fold, %u with (%d layers fold); allocated %llu of %llu bytes\n",
               (unsigned long long)mib, off.layers[0].n_window, on.layers[0].n_window, folded,
               (unsigned long long)mem.allocated_bytes(), (unsigned long long)p.kv_budget_bytes);
        assert_int_equal(mem.allocated_bytes(), on.total_bytes);
        if (mib == 1) assert_int_equal(folded, 0);  // 130 tokens of window cannot pay for 50 KB
        if (mib >= 4) assert_int_equal(folded, 30);
    }
}

// Save, continue, restore, continue again: the same bits; reset zeroes the
// fold memory (a reset session gives a new one's outputs). Fold off: no
// extra buffer in the state.
void test_fold_state(void **) {
    RopeParams rp;
    rp.n_dims = HD;
    const std::vector<LayerSpec> shape = uniform_attention_layers(1, 4, 2, HD, rp);
    kvfit_session_params p;
    std::memset(&p, 0, sizeof p);
    p.kv_codec = KVFIT_KV_Q8;
    p.n_sink = SINKS;
    p.n_window = WINDOW;
    const MemoryPlan plain = plan_memory(shape, p, 512);
    p.fold = KVFIT_FOLD_ON;
    const MemoryPlan plan = plan_memory(shape, p, 512);
    auto backend = create_cpu_backend();
    auto stream = backend->create_stream(2, MAX_BATCH, 4 * HD, SINKS + WINDOW);
    SessionMemory mem(*stream, shape, plan, MAX_BATCH), fresh(*stream, shape, plan, MAX_BATCH),
        off(*stream, shape, plain, MAX_BATCH);
    assert_int_equal(mem.state_bytes(), off.state_bytes() + fold_state_bytes(FoldMap::Taylor, 2, HD));
    Rng rng(5);
    const int QW = 4 * HD, KW = 2 * HD;
    std::vector<float> q(size_t(TOKENS) * QW), k(size_t(TOKENS) * KW), v(size_t(TOKENS) * KW);
    for (float &x : q) x = rng.uniform();
    for (float &x : k) x = rng.uniform();
    for (float &x : v) x = rng.uniform();
    std::vector<float> ks(size_t(MAX_BATCH) * KW), o1(size_t(MAX_BATCH) * QW), o2(o1.size());
    auto run = [&](SessionMemory &m, uint64_t from, uint64_t to, std::vector<float> &o) {
        for (uint64_t pos = from; pos < to;) {
            const int n = int(std::min<uint64_t>(37, to - pos));
            std::memcpy(ks.data(), k.data() + pos * KW, size_t(n) * KW * 4);
            m.attend(*stream, 0, q.data() + pos * QW, ks.data(), v.data() + pos * KW, n, pos, o.data());
            pos += uint64_t(n);
        }
        stream->synchronize();
    };
    run(mem, 0, 200, o1);
    std::vector<uint8_t> saved(mem.state_bytes());
    mem.save(*stream, saved.data());
    run(mem, 200, 260, o1);
    mem.load(*stream, saved.data());
    run(mem, 200, 260, o2);
    assert_memory_equal(o1.data(), o2.data(), o1.size() * 4);
    // Reset: the same as a new memory from token 0.
    mem.clear(*stream);
    run(mem, 0, 150, o1);
    run(fresh, 0, 150, o2);
    assert_memory_equal(o1.data(), o2.data(), o1.size() * 4);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taylor_gqa),  cmocka_unit_test(test_taylor_mha),   cmocka_unit_test(test_taylor_decode),
        cmocka_unit_test(test_random_features_gqa), cmocka_unit_test(test_fold_budget), cmocka_unit_test(test_fold_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
