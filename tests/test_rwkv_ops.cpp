// The RWKV-7 ops of the CPU stream (norm_affine, token_shift_mix, activate,
// rwkv7_prepare, wkv7, rwkv7_bonus_gate) against brute-force double-precision
// references written here from the equations, plus: the AVX2 recurrence gives
// the scalar one's bits, n tokens at once give the same bits and state as one
// at a time, and a backend without the ops fails with KVFIT_E_UNSUPPORTED
// naming the op.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/recurrent_ops.h"
#include "backend/cpu/rwkv_ops.h"
#include "gguf/ggml_types.h"
#include "common.h"

// cmocka.h last: its fail() macro would rewrite kvfit::fail and friends.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace kvfit;

namespace {

std::vector<float> randv(std::mt19937 &g, size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (float &x : v) x = u(g);
    return v;
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

void expect_close(const float *got, const std::vector<double> &want, double tol, const char *what) {
    for (size_t i = 0; i < want.size(); i++) {
        const double err = std::fabs(double(got[i]) - want[i]);
        if (!(err <= tol * (1.0 + std::fabs(want[i])))) {
            print_error("%s[%zu] = %.9g, reference %.9g (tolerance %g)\n", what, i, double(got[i]), want[i], tol);
            fail();
        }
    }
}

std::unique_ptr<Stream> cpu_stream(int threads) {
    static std::unique_ptr<Backend> b = create_cpu_backend();
    return b->create_stream(threads, 64, 1024, 16);
}

void test_norm_affine(void **) {
    std::mt19937 g(1);
    for (int threads : {1, 2})
        for (int groups : {1, 4}) {
            const int n = 5, d = 64;
            auto x = randv(g, size_t(n) * d, -3, 5), w = randv(g, d), b = randv(g, d);
            std::vector<float> y(x.size());
            auto s = cpu_stream(threads);
            const float eps = groups == 1 ? 1e-5f : 64e-5f;
            s->norm_affine(x.data(), w.data(), b.data(), eps, n, d, groups, y.data());
            std::vector<double> ref(x.size());
            const int gs = d / groups;
            for (int t = 0; t < n; t++)
                for (int q = 0; q < groups; q++) {
                    const float *xg = x.data() + t * d + q * gs;
                    double m = 0, v = 0;
                    for (int i = 0; i < gs; i++) m += xg[i];
                    m /= gs;
                    for (int i = 0; i < gs; i++) v += (xg[i] - m) * (xg[i] - m);
                    v /= gs;
                    for (int i = 0; i < gs; i++)
                        ref[size_t(t * d + q * gs + i)] = (xg[i] - m) / std::sqrt(v + eps) * w[q * gs + i] + b[q * gs + i];
                }
            expect_close(y.data(), ref, 2e-6, "norm_affine");
            // in place gives the same bits
            std::vector<float> z = x;
            s->norm_affine(z.data(), w.data(), b.data(), eps, n, d, groups, z.data());
            assert_memory_equal(z.data(), y.data(), y.size() * 4);
        }
}

void test_token_shift_mix(void **) {
    std::mt19937 g(2);
    const int n = 7, d = 48, n_mix = 6;
    auto x = randv(g, size_t(n) * d), mix = randv(g, size_t(n_mix) * d, 0, 1), st0 = randv(g, d);
    std::vector<double> ref(size_t(n_mix) * n * d);
    for (int j = 0; j < n_mix; j++)
        for (int t = 0; t < n; t++)
            for (int i = 0; i < d; i++) {
                const double prev = t ? x[size_t((t - 1) * d + i)] : st0[size_t(i)];
                const double xi = x[size_t(t * d + i)];
                ref[(size_t(j) * n + t) * d + i] = xi + (prev - xi) * mix[size_t(j * d + i)];
            }
    for (int threads : {1, 3}) {
        auto s = cpu_stream(threads);
        std::vector<float> st = st0, out(ref.size());
        s->token_shift_mix(x.data(), st.data(), mix.data(), n_mix, n, d, out.data());
        expect_close(out.data(), ref, 1e-6, "token_shift_mix");
        assert_memory_equal(st.data(), x.data() + (n - 1) * d, size_t(d) * 4);
        // one token at a time: the same bits, the same state
        std::vector<float> st1 = st0, o1(size_t(n_mix) * d);
        for (int t = 0; t < n; t++) {
            s->token_shift_mix(x.data() + t * d, st1.data(), mix.data(), n_mix, 1, d, o1.data());
            for (int j = 0; j < n_mix; j++)
                assert_memory_equal(o1.data() + j * d, out.data() + (size_t(j) * n + t) * d, size_t(d) * 4);
        }
        assert_memory_equal(st1.data(), st.data(), size_t(d) * 4);
    }
}

void test_activate(void **) {
    std::mt19937 g(3);
    auto x = randv(g, 1000, -8, 8);
    auto s = cpu_stream(1);
    for (auto f : {Stream::Activation::Tanh, Stream::Activation::Sigmoid, Stream::Activation::ReluSquare}) {
        std::vector<float> y = x;
        s->activate(f, y.data(), y.size());
        std::vector<double> ref(x.size());
        for (size_t i = 0; i < x.size(); i++) {
            const double v = x[i];
            ref[i] = f == Stream::Activation::Tanh ? std::tanh(v) : f == Stream::Activation::Sigmoid ? sig(v) : v > 0 ? v * v : 0;
        }
        expect_close(y.data(), ref, 1e-6, "activate");
    }
}

void test_rwkv7_prepare(void **) {
    std::mt19937 g(4);
    const int n = 3, H = 2, N = 16, d = H * N;
    const size_t nd = size_t(n) * d;
    auto w = randv(g, nd, -3, 3), a = randv(g, nd, -3, 3), v = randv(g, nd), vf = randv(g, nd), vm = randv(g, nd, -3, 3);
    auto k = randv(g, nd), w0 = randv(g, d, -7, 1), a0 = randv(g, d), v0 = randv(g, d), kk_w = randv(g, d), ka = randv(g, d, 0, 1);
    for (bool mixv : {false, true}) {
        std::vector<float> W = w, A = a, V = v, K = k, ao(nd), bo(nd);
        auto s = cpu_stream(2);
        s->rwkv7_prepare(W.data(), w0.data(), A.data(), a0.data(), V.data(), vf.data(), mixv ? vm.data() : nullptr,
                         v0.data(), K.data(), kk_w.data(), ka.data(), n, H, N, ao.data(), bo.data());
        std::vector<double> rw(nd), ra(nd), rv(nd), rk(nd), rao(nd), rbo(nd);
        for (int t = 0; t < n; t++) {
            for (int i = 0; i < d; i++) {
                const size_t o = size_t(t) * d + i;
                rw[o] = std::exp(-std::exp(-0.5) * sig(double(w[o]) + w0[size_t(i)]));
                ra[o] = sig(double(a[o]) + a0[size_t(i)]);
                rv[o] = mixv ? v[o] + (double(vf[o]) - v[o]) * sig(double(vm[o]) + v0[size_t(i)]) : v[o];
                rk[o] = k[o] * (1.0 + (ra[o] - 1.0) * ka[size_t(i)]);
            }
            for (int h = 0; h < H; h++) {
                double ss = 0;
                for (int i = 0; i < N; i++) {
                    const double q = double(k[size_t(t) * d + h * N + i]) * kk_w[size_t(h * N + i)];
                    ss += q * q;
                }
                for (int i = 0; i < N; i++) {
                    const size_t o = size_t(t) * d + h * N + i;
                    const double q = double(k[o]) * kk_w[size_t(h * N + i)] / std::sqrt(ss);
                    rao[o] = -q;
                    rbo[o] = q * ra[o];
                }
            }
        }
        expect_close(W.data(), rw, 1e-6, "w");
        expect_close(A.data(), ra, 1e-6, "a");
        expect_close(V.data(), rv, 1e-6, "v");
        expect_close(K.data(), rk, 1e-6, "k");
        expect_close(ao.data(), rao, 1e-6, "a_out");
        expect_close(bo.data(), rbo, 1e-6, "b_out");
    }
}

// The recurrence in double, from the equations (S[i][j]: value i, key j).
void wkv7_ref(const std::vector<float> &r, const std::vector<float> &w, const std::vector<float> &k,
              const std::vector<float> &v, const std::vector<float> &a, const std::vector<float> &b, int n, int H, int N,
              std::vector<double> &S, std::vector<double> &out) {
    const int d = H * N;
    out.assign(size_t(n) * d, 0.0);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            const size_t o = size_t(t) * d + size_t(h) * N;
            double *Sh = S.data() + size_t(h) * N * N;
            for (int i = 0; i < N; i++) {
                double sa = 0;
                for (int j = 0; j < N; j++) sa += Sh[i * N + j] * a[o + j];
                double y = 0;
                for (int j = 0; j < N; j++) {
                    Sh[i * N + j] = Sh[i * N + j] * w[o + j] + double(v[o + i]) * k[o + j] + sa * b[o + j];
                    y += Sh[i * N + j] * r[o + j];
                }
                out[o + i] = y;
            }
        }
}

void test_wkv7(void **) {
    std::mt19937 g(5);
    for (int N : {8, 64, 12}) {
        const int H = 3, n = 9, d = H * N;
        const size_t nd = size_t(n) * d;
        auto r = randv(g, nd), w = randv(g, nd, 0.5f, 1.0f), k = randv(g, nd), v = randv(g, nd);
        // a = -kk, b = kk * iclr as the model makes them: the state stays bounded
        std::vector<float> a(nd), b(nd);
        for (int t = 0; t < n; t++)
            for (int h = 0; h < H; h++) {
                auto q = randv(g, size_t(N));
                double ss = 0;
                for (float x : q) ss += double(x) * x;
                for (int i = 0; i < N; i++) {
                    const float kk = float(q[size_t(i)] / std::sqrt(ss));
                    a[size_t(t) * d + h * N + i] = -kk;
                    b[size_t(t) * d + h * N + i] = kk * randv(g, 1, 0, 1)[0];
                }
            }
        auto S0 = randv(g, size_t(H) * N * N, -0.5f, 0.5f);
        std::vector<double> Sref(S0.begin(), S0.end()), ref;
        wkv7_ref(r, w, k, v, a, b, n, H, N, Sref, ref);

        for (int threads : {1, 2}) {
            auto s = cpu_stream(threads);
            std::vector<float> S = S0, out(nd);
            s->wkv7(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), n, H, N, S.data(), out.data());
            expect_close(out.data(), ref, 2e-5, "wkv7 out");
            expect_close(S.data(), Sref, 2e-5, "wkv7 state");
            // token by token: the same bits and state
            std::vector<float> S1 = S0, o1(nd);
            for (int t = 0; t < n; t++)
                s->wkv7(r.data() + t * d, w.data() + t * d, k.data() + t * d, v.data() + t * d, a.data() + t * d,
                        b.data() + t * d, 1, H, N, S1.data(), o1.data() + t * d);
            assert_memory_equal(o1.data(), out.data(), nd * 4);
            assert_memory_equal(S1.data(), S.data(), S.size() * 4);
        }
        // the vector path gives the scalar reference's bits
        std::vector<float> Sa = S0, Sb = S0, oa(nd), ob(nd);
        for (int h = 0; h < H; h++) {
            cpu::wkv7_head_scalar(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), n, H, N, h, Sa.data(), oa.data());
            cpu::wkv7_head_best(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), n, H, N, h, Sb.data(), ob.data());
        }
        assert_memory_equal(oa.data(), ob.data(), nd * 4);
        assert_memory_equal(Sa.data(), Sb.data(), Sa.size() * 4);
    }
}

double stored(StateType t, double x) {
    const float f = float(x);
    return t == StateType::F16 ? fp16_to_fp32(fp32_to_fp16(f)) : bf16_to_fp32(fp32_to_bf16(f));
}

// wkv7 with the state kept in F16 / BF16: the brute force with the state
// rounded after every token; bit for bit the F32 op run one token at a time
// with the state rounded between tokens; batches split any way give the
// same bits.
void test_wkv7_narrow_state(void **) {
    std::mt19937 g(9);
    for (StateType st : {StateType::F16, StateType::BF16})
        for (int N : {8, 64, 12}) {
            const int H = 3, n = 23, d = H * N;
            const size_t nd = size_t(n) * d, nn = size_t(H) * N * N;
            auto r = randv(g, nd), w = randv(g, nd, 0.5f, 1.0f), k = randv(g, nd), v = randv(g, nd);
            std::vector<float> a(nd), b(nd);
            for (int t = 0; t < n; t++)
                for (int h = 0; h < H; h++) {
                    auto q = randv(g, size_t(N));
                    double ss = 0;
                    for (float x : q) ss += double(x) * x;
                    for (int i = 0; i < N; i++) {
                        const float kk = float(q[size_t(i)] / std::sqrt(ss));
                        a[size_t(t) * d + h * N + i] = -kk;
                        b[size_t(t) * d + h * N + i] = kk * randv(g, 1, 0, 1)[0];
                    }
                }
            auto S0f = randv(g, nn, -0.5f, 0.5f);
            std::vector<uint16_t> S0(nn);
            std::vector<float> S0w(nn);
            cpu::narrow_state(st, S0f.data(), S0.data(), nn);
            cpu::widen_state(st, S0.data(), S0w.data(), nn);

            // brute force, token by token, rounding the state between tokens
            std::vector<double> Sref(S0w.begin(), S0w.end()), ref(nd);
            for (int t = 0; t < n; t++) {
                auto tok = [&](const std::vector<float> &x) {
                    return std::vector<float>(x.begin() + size_t(t) * d, x.begin() + size_t(t + 1) * d);
                };
                std::vector<double> o;
                wkv7_ref(tok(r), tok(w), tok(k), tok(v), tok(a), tok(b), 1, H, N, Sref, o);
                std::copy(o.begin(), o.end(), ref.begin() + size_t(t) * d);
                for (double &x : Sref) x = stored(st, x);
            }
            for (int threads : {1, 2}) {
                auto s = cpu_stream(threads);
                assert_true(s->supports_state_type(st));
                std::vector<uint16_t> S = S0;
                std::vector<float> out(nd), Sw(nn);
                s->wkv7_typed(r.data(), w.data(), k.data(), v.data(), a.data(), b.data(), n, H, N, st, S.data(),
                              out.data());
                cpu::widen_state(st, S.data(), Sw.data(), nn);
                const double tol = st == StateType::F16 ? 1e-3 : 8e-3;  // one unit in the last place of the type
                expect_close(out.data(), ref, tol, "narrow wkv7 out");
                expect_close(Sw.data(), Sref, tol, "narrow wkv7 state");

                // exactly: F32 one token at a time, rounded between tokens
                std::vector<float> Sf = S0w, of(nd);
                for (int t = 0; t < n; t++) {
                    s->wkv7(r.data() + t * d, w.data() + t * d, k.data() + t * d, v.data() + t * d, a.data() + t * d,
                            b.data() + t * d, 1, H, N, Sf.data(), of.data() + t * d);
                    cpu::round_state(st, Sf.data(), nn);
                }
                assert_memory_equal(of.data(), out.data(), nd * 4);
                assert_memory_equal(Sf.data(), Sw.data(), nn * 4);

                // split batches
                std::vector<uint16_t> S2 = S0;
                std::vector<float> o2(nd);
                for (int t0 = 0; t0 < n;) {
                    const int m = std::min(n - t0, 1 + t0 % 5);
                    s->wkv7_typed(r.data() + t0 * d, w.data() + t0 * d, k.data() + t0 * d, v.data() + t0 * d,
                                  a.data() + t0 * d, b.data() + t0 * d, m, H, N, st, S2.data(), o2.data() + t0 * d);
                    t0 += m;
                }
                assert_memory_equal(o2.data(), out.data(), nd * 4);
                assert_memory_equal(S2.data(), S.data(), nn * 2);
            }
        }
}

void test_bonus_gate(void **) {
    std::mt19937 g(6);
    const int n = 4, H = 2, N = 32, d = H * N;
    const size_t nd = size_t(n) * d;
    auto y = randv(g, nd), r = randv(g, nd), k = randv(g, nd), v = randv(g, nd), rk = randv(g, d), gt = randv(g, nd);
    std::vector<double> ref(nd);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < H; h++) {
            double s = 0;
            for (int i = 0; i < N; i++) {
                const size_t o = size_t(t) * d + h * N + i;
                s += double(r[o]) * k[o] * rk[size_t(h * N + i)];
            }
            for (int i = 0; i < N; i++) {
                const size_t o = size_t(t) * d + h * N + i;
                ref[o] = (y[o] + v[o] * s) * gt[o];
            }
        }
    auto s = cpu_stream(2);
    std::vector<float> Y = y;
    s->rwkv7_bonus_gate(Y.data(), r.data(), k.data(), v.data(), rk.data(), gt.data(), n, H, N);
    expect_close(Y.data(), ref, 1e-5, "bonus_gate");
}

// A stream with none of the RWKV-7 ops: the defaults must fail clearly.
class BareStream final : public Stream {
public:
    void *alloc(size_t) override { return nullptr; }
    uint64_t allocated_bytes() const override { return 0; }
    void upload(void *, const void *, size_t) override {}
    void download(void *, const void *, size_t) override {}
    void synchronize() override {}
    void get_rows(const Weight &, const int32_t *, int, float *) override {}
    void rmsnorm(const float *, const Weight &, float, int, float *) override {}
    void matmul(const Weight &, const float *, int, float *) override {}
    void kv_encode(int, bool, float *, int, int, int, uint8_t *) override {}
    void kv_encode_channels(const uint8_t *, int, int, uint8_t *) override {}
    void cache_attention(const CacheAttention &, const float *, float *) override {}
    void copy(void *, const void *, size_t) override {}
    void swiglu(const float *, const float *, size_t, float *) override {}
    void add(float *, const float *, size_t) override {}
};

template <typename F>
void expect_unsupported(F f, const char *op) {
    try {
        f();
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_UNSUPPORTED);
        assert_non_null(std::strstr(e.what(), op));
        return;
    }
    print_error("%s did not fail\n", op);
    fail();
}

void test_default_ops_unsupported(void **) {
    BareStream s;
    float x[64] = {};
    expect_unsupported([&] { s.norm_affine(x, x, x, 1e-5f, 1, 64, 1, x); }, "norm_affine");
    expect_unsupported([&] { s.token_shift_mix(x, x, x, 1, 1, 64, x); }, "token_shift_mix");
    expect_unsupported([&] { s.activate(Stream::Activation::Tanh, x, 64); }, "activate");
    expect_unsupported([&] { s.rwkv7_prepare(x, x, x, x, x, x, nullptr, x, x, x, x, 1, 1, 8, x, x); }, "rwkv7_prepare");
    expect_unsupported([&] { s.wkv7(x, x, x, x, x, x, 1, 1, 8, x, x); }, "wkv7");
    expect_unsupported([&] { s.rwkv7_bonus_gate(x, x, x, x, x, x, 1, 1, 8); }, "rwkv7_bonus_gate");
    // a backend says which state types it takes: F32 only by default
    assert_true(s.supports_state_type(StateType::F32));
    assert_false(s.supports_state_type(StateType::F16));
    assert_false(s.supports_state_type(StateType::BF16));
    expect_unsupported([&] { s.wkv7_typed(x, x, x, x, x, x, 1, 1, 8, StateType::F16, x, x); }, "F16");
    expect_unsupported([&] { s.wkv7_typed(x, x, x, x, x, x, 1, 1, 8, StateType::F32, x, x); }, "wkv7");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_affine),    cmocka_unit_test(test_token_shift_mix),
        cmocka_unit_test(test_activate),       cmocka_unit_test(test_rwkv7_prepare),
        cmocka_unit_test(test_wkv7),           cmocka_unit_test(test_wkv7_narrow_state),
        cmocka_unit_test(test_bonus_gate),
        cmocka_unit_test(test_default_ops_unsupported),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
