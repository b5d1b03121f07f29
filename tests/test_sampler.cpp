// Unit tests of the sampling chain (src/sampler.cpp): greedy and its ties,
// determinism per seed, the distribution it draws from, each truncation
// step, the repetition penalty, parameter checks, and no per-call
// allocations after the first call.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <vector>

#include "common.h"
#include "sampler.h"

// cmocka.h last: its fail() macro would rewrite the declaration of
// kvfit::fail in common.h (and anything else named fail).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {  // cmocka 1.1 does not declare all of its functions extern "C"
#include <cmocka.h>
}

// Counts operator new calls while `g_count_allocs` is set, to check that the
// sampler reuses its scratch memory.
static std::atomic<bool> g_count_allocs{false};
static std::atomic<long> g_allocs{0};

void *operator new(size_t n) {
    if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
    void *p = std::malloc(n ? n : 1);
    if (!p) throw std::bad_alloc();
    return p;
}
// GCC cannot see that operator new above is malloc-based.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

using kvfit::Sampler;

static const int32_t kBigVocab = 49152;  // SmolLM2's vocabulary size

// The documented defaults, spelled out so these tests do not depend on the C API.
static kvfit_sampler_params defaults() {
    kvfit_sampler_params p{};
    p.struct_size = sizeof p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.seed = 0;
    return p;
}

// Temperature 1 and no truncation: draws follow softmax(logits) exactly.
static kvfit_sampler_params plain(float temperature, uint64_t seed) {
    kvfit_sampler_params p = defaults();
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

// Deterministic pseudo-random logits in [-8, 8) (a fixed LCG, not <random>,
// so the inputs are the same everywhere).
static std::vector<float> random_logits(int32_t n, uint32_t seed) {
    std::vector<float> v(static_cast<size_t>(n));
    uint32_t s = seed * 2654435761u + 1;
    for (auto &x : v) {
        s = s * 1664525u + 1013904223u;
        x = float(s >> 8) / float(1u << 24) * 16.0f - 8.0f;
    }
    return v;
}

static std::vector<double> softmax(const std::vector<float> &l, double temperature) {
    double mx = -INFINITY;
    for (float x : l) mx = std::max(mx, double(x));
    std::vector<double> p(l.size());
    double sum = 0;
    for (size_t i = 0; i < l.size(); ++i) sum += p[i] = std::exp((l[i] - mx) / temperature);
    for (auto &x : p) x /= sum;
    return p;
}

static std::vector<long> histogram(Sampler &s, const std::vector<float> &logits, int draws) {
    std::vector<long> h(logits.size(), 0);
    for (int i = 0; i < draws; ++i) {
        int32_t t = s.sample(logits.data(), int32_t(logits.size()));
        assert_true(t >= 0 && size_t(t) < logits.size());
        h[size_t(t)]++;
    }
    return h;
}

static void test_argmax_ties_and_nan(void **state) {
    (void)state;
    const float a[] = {1.0f, 3.0f, 3.0f, 2.0f};
    assert_int_equal(kvfit::argmax(a, 4), 1);
    const float b[] = {5.0f, 5.0f, 5.0f};
    assert_int_equal(kvfit::argmax(b, 3), 0);
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float c[] = {nan, -1.0f, nan, 0.5f, 0.5f};
    assert_int_equal(kvfit::argmax(c, 5), 3);
    const float d[] = {-INFINITY, -INFINITY, -2.0f};
    assert_int_equal(kvfit::argmax(d, 3), 2);
    assert_int_equal(kvfit::argmax(a, 0), -1);
}

static void test_greedy_is_argmax(void **state) {
    (void)state;
    for (float t : {0.0f, -1.0f}) {
        kvfit_sampler_params p = defaults();
        p.temperature = t;
        Sampler s(p);
        for (uint32_t k = 0; k < 20; ++k) {
            std::vector<float> l = random_logits(kBigVocab, k);
            assert_int_equal(s.sample(l.data(), kBigVocab), kvfit::argmax(l.data(), kBigVocab));
        }
        const float tie[] = {0.0f, 7.0f, 2.0f, 7.0f, 7.0f};
        assert_int_equal(s.sample(tie, 5), 1);
    }
}

static void test_top_k_1_is_greedy(void **state) {
    (void)state;
    for (float t : {0.01f, 0.7f, 1.0f, 5.0f, 1000.0f}) {
        kvfit_sampler_params p = defaults();
        p.temperature = t;
        p.top_k = 1;
        p.top_p = 1.0f;
        p.min_p = 0.0f;
        Sampler s(p);
        for (uint32_t k = 0; k < 10; ++k) {
            std::vector<float> l = random_logits(kBigVocab, 100 + k);
            assert_int_equal(s.sample(l.data(), kBigVocab), kvfit::argmax(l.data(), kBigVocab));
        }
        // Ties: the lowest index, exactly as greedy.
        std::vector<float> tie(1000, 0.0f);
        tie[700] = tie[300] = tie[900] = 4.0f;
        for (int i = 0; i < 50; ++i) assert_int_equal(s.sample(tie.data(), 1000), 300);
    }
}

static std::vector<int32_t> draw_sequence(Sampler &s, int n) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
        std::vector<float> l = random_logits(kBigVocab, uint32_t(i % 7));
        out.push_back(s.sample(l.data(), kBigVocab));
    }
    return out;
}

static void test_seed_determinism(void **state) {
    (void)state;
    kvfit_sampler_params p = defaults();
    p.temperature = 1.5f;  // flat enough that many tokens are in play
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 42;
    Sampler a(p), b(p);
    std::vector<int32_t> sa = draw_sequence(a, 200), sb = draw_sequence(b, 200);
    assert_true(sa == sb);

    // reset() reseeds: the same sequence again.
    a.reset();
    assert_true(draw_sequence(a, 200) == sa);

    // Another seed gives another sequence (almost every draw differs here).
    p.seed = 43;
    Sampler c(p);
    std::vector<int32_t> sc = draw_sequence(c, 200);
    int same = 0;
    for (size_t i = 0; i < sa.size(); ++i) same += sa[i] == sc[i];
    assert_true(same < 20);

    // The same holds through the full default chain.
    kvfit_sampler_params d = defaults();
    d.seed = 7;
    Sampler e(d), f(d);
    assert_true(draw_sequence(e, 100) == draw_sequence(f, 100));
}

static void check_frequencies(const std::vector<float> &logits, float temperature, uint64_t seed) {
    const int draws = 20000;
    Sampler s(plain(temperature, seed));
    std::vector<long> h = histogram(s, logits, draws);
    std::vector<double> p = softmax(logits, temperature);
    for (size_t i = 0; i < logits.size(); ++i) {
        double f = double(h[i]) / draws;
        // 0.015 is at least 4 standard deviations for any p at 20000 draws.
        if (std::fabs(f - p[i]) > 0.015) fail_msg("token %zu: frequency %.4f, softmax %.4f", i, f, p[i]);
    }
}

static void test_frequencies_match_softmax(void **state) {
    (void)state;
    check_frequencies({0.0f, 1.0f, 2.0f, -1.0f, 0.5f}, 1.0f, 1);
    check_frequencies({1.0f, 1.0f, 1.0f, 1.0f}, 1.0f, 2);
    // Temperature divides the logits before the softmax.
    check_frequencies({0.0f, 1.0f, 2.0f, -1.0f, 0.5f}, 2.0f, 3);
    check_frequencies({0.0f, 1.0f, 2.0f, -1.0f, 0.5f}, 0.5f, 4);
}

static void test_top_k_excludes(void **state) {
    (void)state;
    kvfit_sampler_params p = plain(1.0f, 5);
    p.top_k = 3;
    Sampler s(p);
    // Tokens 4, 1, 6 are the top 3; the rest must never come out.
    std::vector<float> l = {0.0f, 2.0f, 0.5f, 0.9f, 3.0f, -1.0f, 1.5f, 1.0f};
    std::vector<long> h = histogram(s, l, 5000);
    for (size_t i = 0; i < l.size(); ++i) {
        bool kept = i == 4 || i == 1 || i == 6;
        if (kept)
            assert_true(h[i] > 0);
        else
            assert_int_equal(h[i], 0);
    }
    // Renormalised over the kept three.
    std::vector<double> q = softmax({3.0f, 2.0f, 1.5f}, 1.0);
    assert_true(std::fabs(double(h[4]) / 5000 - q[0]) < 0.03);
}

static void test_top_p_excludes(void **state) {
    (void)state;
    // Probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.7 keeps the first two
    // (0.5 < 0.7 <= 0.8), in any index order.
    std::vector<float> l = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
    kvfit_sampler_params p = plain(1.0f, 9);
    p.top_p = 0.7f;
    Sampler s(p);
    std::vector<long> h = histogram(s, l, 5000);
    assert_int_equal(h[0], 0);
    assert_int_equal(h[2], 0);
    assert_true(h[1] > 0 && h[3] > 0);
    assert_true(std::fabs(double(h[1]) / 5000 - 0.5 / 0.8) < 0.03);

    // top_p = 0 keeps exactly the most likely token.
    p.top_p = 0.0f;
    Sampler g(p);
    for (int i = 0; i < 100; ++i) assert_int_equal(g.sample(l.data(), 4), 1);

    // A nucleus larger than one ranking chunk, over the full vocabulary: 300
    // equal high tokens hold ~98% of the mass; ties rank by index, so the
    // nucleus is the lowest-indexed `need` of them.
    std::vector<float> big(size_t(kBigVocab), 0.0f);
    std::vector<int32_t> high;
    for (int32_t i = 0; i < 300; ++i) {
        int32_t id = (i * 7919) % kBigVocab;
        big[size_t(id)] = 9.0f;
        high.push_back(id);
    }
    std::sort(high.begin(), high.end());
    const double z = 300.0 * std::exp(9.0) + double(kBigVocab - 300);
    const double p_high = std::exp(9.0) / z;
    const float top_p = 0.9f;
    size_t need = size_t(std::ceil(double(top_p) / p_high));
    assert_true(need > 64 && need < 300);
    assert_true(need * p_high - top_p > 1e-4 && top_p - (need - 1) * p_high > 1e-4);  // clear of rounding
    p.top_p = top_p;
    Sampler n(p);
    std::vector<long> hb = histogram(n, big, 1000);
    long inside = 0;
    for (size_t k = 0; k < high.size(); ++k) {
        long c = hb[size_t(high[k])];
        if (k >= need) assert_int_equal(c, 0);
        inside += c;
    }
    assert_int_equal(inside, 1000);  // never a low token
}

// Top-p over a whole vocabulary of distinct values, where the nucleus spans
// many probability levels: tokens outside the nucleus computed here by a full
// sort never come out.
static void test_top_p_full_vocabulary(void **state) {
    (void)state;
    std::vector<float> l = random_logits(kBigVocab, 4242);
    for (auto &x : l) x *= 1.5f;  // a peakier distribution, as language models give
    for (float top_p : {0.3f, 0.8f}) {
        std::vector<double> pr = softmax(l, 1.0);
        std::vector<int32_t> order(pr.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
        std::sort(order.begin(), order.end(),
                  [&](int32_t a, int32_t b) { return pr[a] > pr[b] || (pr[a] == pr[b] && a < b); });
        double cum = 0;
        size_t need = 0;
        while (cum < top_p) cum += pr[size_t(order[need++])];
        assert_true(cum - top_p > 1e-6 && top_p - (cum - pr[size_t(order[need - 1])]) > 1e-6);  // clear of rounding
        std::vector<char> in(pr.size(), 0);
        for (size_t i = 0; i < need; ++i) in[size_t(order[i])] = 1;

        kvfit_sampler_params p = plain(1.0f, 21);
        p.top_p = top_p;
        Sampler s(p);
        std::vector<long> h = histogram(s, l, 800);
        long outside = 0, distinct = 0;
        for (size_t i = 0; i < h.size(); ++i) {
            if (!in[i]) outside += h[i];
            distinct += h[i] > 0;
        }
        assert_int_equal(outside, 0);
        assert_true(distinct > 10);  // a real nucleus, not just the top token
    }

    // Twelve head tokens 0.06 apart in logit (so adjacent probability
    // buckets are all populated) over a flat tail: the nucleus is the first
    // nine, each drawn as often as its renormalised probability says.
    std::vector<float> v(size_t(kBigVocab), 0.0f);
    std::vector<int32_t> head;
    for (int32_t j = 0; j < 12; ++j) {
        int32_t id = 40000 - 3001 * j;
        v[size_t(id)] = 10.0f - 0.06f * float(j);
        head.push_back(id);
    }
    std::vector<double> pr = softmax(v, 1.0);
    const int n_in = 9;
    double cum_in = 0;
    for (int j = 0; j < n_in; ++j) cum_in += pr[size_t(head[size_t(j)])];
    const double cum_before = cum_in - pr[size_t(head[n_in - 1])];
    const float top_p = float((cum_before + cum_in) / 2);  // in the middle of the last token's step
    kvfit_sampler_params p = plain(1.0f, 23);
    p.top_p = top_p;
    Sampler s(p);
    const int draws = 2500;
    std::vector<long> h = histogram(s, v, draws);
    long in_head = 0;
    for (int j = 0; j < n_in; ++j) {
        double f = double(h[size_t(head[size_t(j)])]) / draws, e = pr[size_t(head[size_t(j)])] / cum_in;
        if (std::fabs(f - e) > 0.03) fail_msg("head token %d: frequency %.4f, expected %.4f", j, f, e);
        in_head += h[size_t(head[size_t(j)])];
    }
    assert_int_equal(in_head, draws);
}

static void test_min_p_excludes(void **state) {
    (void)state;
    // Probabilities 0.6, 0.25, 0.1, 0.04, 0.01; min_p 0.1 drops p < 0.06.
    std::vector<float> l = {std::log(0.04f), std::log(0.6f), std::log(0.01f), std::log(0.25f), std::log(0.1f)};
    kvfit_sampler_params p = plain(1.0f, 11);
    p.min_p = 0.1f;
    Sampler s(p);
    std::vector<long> h = histogram(s, l, 10000);
    assert_int_equal(h[0], 0);
    assert_int_equal(h[2], 0);
    assert_true(h[1] > 0 && h[3] > 0 && h[4] > 0);
    assert_true(std::fabs(double(h[4]) / 10000 - 0.1 / 0.95) < 0.02);

    // min_p 1 keeps only the top token.
    p.min_p = 1.0f;
    Sampler t(p);
    for (int i = 0; i < 100; ++i) assert_int_equal(t.sample(l.data(), 5), 1);

    // Combined with top-p, the stricter of the two wins.
    p.min_p = 0.3f;  // drops p < 0.18: keeps 0.6 and 0.25
    p.top_p = 0.5f;  // keeps only 0.6
    Sampler u(p);
    for (int i = 0; i < 200; ++i) assert_int_equal(u.sample(l.data(), 5), 1);
}

static void test_repetition_penalty(void **state) {
    (void)state;
    kvfit_sampler_params p = defaults();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    Sampler s(p);

    // Positive logit divided: 2.0 -> 1.33 < 1.9.
    const float pos[] = {2.0f, 1.9f, -1.0f};
    assert_int_equal(s.sample(pos, 3), 0);
    s.accept(0);
    assert_int_equal(s.sample(pos, 3), 1);

    // Penalised once however often it occurs: 2.0 -> 1.33 > 1.0.
    const float once[] = {2.0f, 1.0f};
    s.accept(0);
    assert_int_equal(s.sample(once, 2), 0);

    // Negative logit multiplied: -1.0 -> -1.5 < -1.2.
    const float neg[] = {-1.0f, -1.2f};
    assert_int_equal(s.sample(neg, 2), 1);

    // Only the last repeat_last_n tokens count.
    s.accept(5);
    s.accept(6);
    assert_int_equal(s.sample(pos, 3), 0);

    // reset() forgets the history; out-of-vocabulary history is ignored.
    s.accept(0);
    s.accept(100000);
    assert_int_equal(s.sample(pos, 3), 1);
    s.reset();
    assert_int_equal(s.sample(pos, 3), 0);

    // In sampling: equal logits 1, 1 -> penalised 0.5, 1.
    kvfit_sampler_params q = plain(1.0f, 13);
    q.repeat_penalty = 2.0f;
    Sampler r(q);
    r.accept(0);
    std::vector<long> h = histogram(r, {1.0f, 1.0f}, 20000);
    double expect = std::exp(0.5) / (std::exp(0.5) + std::exp(1.0));
    assert_true(std::fabs(double(h[0]) / 20000 - expect) < 0.015);

    // repeat_last_n = 0 disables it.
    p.repeat_last_n = 0;
    Sampler off(p);
    off.accept(0);
    assert_int_equal(off.sample(pos, 3), 0);
}

static void test_bad_logits(void **state) {
    (void)state;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    Sampler s(plain(1.0f, 17));
    const float l[] = {nan, 0.0f, nan, 0.0f};
    for (int i = 0; i < 500; ++i) {
        int32_t t = s.sample(l, 4);
        assert_true(t == 1 || t == 3);
    }
    // An infinite logit wins outright; all -inf still yields a token.
    const float inf[] = {0.0f, INFINITY, 3.0f};
    assert_int_equal(s.sample(inf, 3), 1);
    const float none[] = {-INFINITY, -INFINITY};
    assert_int_equal(s.sample(none, 2), 0);
}

static void expect_arg_error(const kvfit_sampler_params &p, const char *what) {
    try {
        Sampler s(p);
        fail_msg("accepted invalid %s", what);
    } catch (const kvfit::Error &e) {
        assert_int_equal(e.status(), KVFIT_E_ARG);
        assert_true(e.what()[0] != '\0');
    }
}

static void test_invalid_params(void **state) {
    (void)state;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    kvfit_sampler_params p;
    p = defaults();
    p.temperature = nan;
    expect_arg_error(p, "temperature NaN");
    p = defaults();
    p.temperature = INFINITY;
    expect_arg_error(p, "temperature inf");
    p = defaults();
    p.top_p = -0.1f;
    expect_arg_error(p, "top_p < 0");
    p = defaults();
    p.top_p = nan;
    expect_arg_error(p, "top_p NaN");
    p = defaults();
    p.min_p = nan;
    expect_arg_error(p, "min_p NaN");
    p = defaults();
    p.min_p = 1.5f;
    expect_arg_error(p, "min_p > 1");
    p = defaults();
    p.repeat_penalty = 0.0f;
    expect_arg_error(p, "repeat_penalty 0");
    p = defaults();
    p.repeat_penalty = -1.0f;
    expect_arg_error(p, "repeat_penalty < 0");
    p = defaults();
    p.repeat_penalty = nan;
    expect_arg_error(p, "repeat_penalty NaN");
    p = defaults();
    p.repeat_penalty = INFINITY;
    expect_arg_error(p, "repeat_penalty inf");
    p = defaults();
    p.repeat_last_n = -1;
    expect_arg_error(p, "repeat_last_n < 0");

    // The "off" values are valid.
    p = defaults();
    p.top_k = -5;
    p.top_p = 2.0f;
    p.min_p = -1.0f;
    p.temperature = -3.0f;
    Sampler ok(p);

    // No logits is an argument error too.
    try {
        Sampler s(defaults());
        s.sample(nullptr, 10);
        fail_msg("sampled from nothing");
    } catch (const kvfit::Error &e) {
        assert_int_equal(e.status(), KVFIT_E_ARG);
    }
    try {
        Sampler s(defaults());
        const float one = 1.0f;
        s.sample(&one, 0);
        fail_msg("sampled from an empty vocabulary");
    } catch (const kvfit::Error &e) {
        assert_int_equal(e.status(), KVFIT_E_ARG);
    }
}

static void test_no_allocation_after_first_call(void **state) {
    (void)state;
    std::vector<float> l = random_logits(kBigVocab, 99);
    kvfit_sampler_params configs[4] = {defaults(), plain(1.0f, 1), plain(0.9f, 2), defaults()};
    configs[2].top_p = 0.9f;  // top-p over the whole vocabulary
    configs[3].repeat_penalty = 1.3f;
    for (auto &c : configs) {
        Sampler s(c);
        s.accept(3);
        s.accept(500);
        s.sample(l.data(), kBigVocab);
        g_allocs = 0;
        g_count_allocs = true;
        for (int i = 0; i < 20; ++i) s.sample(l.data(), kBigVocab);
        g_count_allocs = false;
        assert_int_equal(g_allocs.load(), 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_ties_and_nan),
        cmocka_unit_test(test_greedy_is_argmax),
        cmocka_unit_test(test_top_k_1_is_greedy),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_frequencies_match_softmax),
        cmocka_unit_test(test_top_k_excludes),
        cmocka_unit_test(test_top_p_excludes),
        cmocka_unit_test(test_top_p_full_vocabulary),
        cmocka_unit_test(test_min_p_excludes),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_bad_logits),
        cmocka_unit_test(test_invalid_params),
        cmocka_unit_test(test_no_allocation_after_first_call),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
