// The CPU ops of the recurrent layers (src/backend/cpu/recurrent_ops.h)
// against brute-force references computed here in double precision: the
// causal convolution with its state, the gated delta rule as the matrix
// recurrence S <- a S (I - b k k^T) + b v k^T (recurrent form and chunked
// scan), the L2 norm, the gated RMSNorm and the gates; and the properties
// the model relies on: a batch split in two gives the same bits as one batch
// (recurrent form and convolution), and ggml's dot-product order. The delta
// rule with its state kept in F16 or BF16 (StateType): the same brute force
// with the state rounded after every token, and exactly what running the F32
// op one token at a time and rounding the state between tokens gives.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/recurrent_ops.h"
#include "gguf/ggml_types.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include <cmocka.h>
}

using namespace kvfit;

namespace {

std::vector<float> randv(std::mt19937 &rng, size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (float &x : v) x = d(rng);
    return v;
}

std::unique_ptr<Stream> cpu_stream(int threads = 2) {
    static std::unique_ptr<Backend> b = create_cpu_backend();
    return b->create_stream(threads, 64, 1024, 256);
}

// ggml_vec_dot_f32's AVX-512 order, written out independently.
float dot_ref_ggml(const float *x, const float *y, int n) {
    const int np = n & ~63;
    float s[4][16] = {};
    for (int i = 0; i < np; i += 64)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 16; l++) s[j][l] = std::fma(x[i + j * 16 + l], y[i + j * 16 + l], s[j][l]);
    float r = 0.0f;
    if (np) {
        float a[16];
        for (int l = 0; l < 16; l++) a[l] = (s[0][l] + s[2][l]) + (s[1][l] + s[3][l]);
        float b[8], c[4];
        for (int l = 0; l < 8; l++) b[l] = a[l] + a[l + 8];
        for (int l = 0; l < 4; l++) c[l] = b[l] + b[l + 4];
        r = (c[0] + c[2]) + (c[1] + c[3]);
    }
    for (int i = np; i < n; i++) r = std::fma(x[i], y[i], r);
    return r;
}

void test_dot_order(void **) {
    std::mt19937 rng(1);
    for (int n : {1, 7, 64, 100, 128, 256, 300}) {
        auto x = randv(rng, size_t(n)), y = randv(rng, size_t(n));
        const float got = cpu::dot_f32_ggml(x.data(), y.data(), n);
        const float want = dot_ref_ggml(x.data(), y.data(), n);
        assert_memory_equal(&got, &want, sizeof got);
        double d = 0;
        for (int i = 0; i < n; i++) d += double(x[size_t(i)]) * y[size_t(i)];
        assert_true(std::fabs(got - d) < 1e-4 * (1 + std::fabs(d)));
    }
}

// Brute force: explicit inputs [state ; x] per channel.
void test_ssm_conv(void **) {
    std::mt19937 rng(2);
    const int C = 96, K = 4, N = 11;
    auto x = randv(rng, size_t(N) * C), w = randv(rng, size_t(C) * K, 0.5f);
    auto st0 = randv(rng, size_t(K - 1) * C);
    auto s = cpu_stream();
    std::vector<float> st = st0, y(size_t(N) * C);
    s->ssm_conv(x.data(), N, C, K, w.data(), st.data(), y.data());
    for (int c = 0; c < C; c++) {
        std::vector<double> in;
        for (int r = 0; r < K - 1; r++) in.push_back(st0[size_t(r) * C + c]);
        for (int t = 0; t < N; t++) in.push_back(x[size_t(t) * C + c]);
        for (int t = 0; t < N; t++) {
            double ref = 0;
            for (int i = 0; i < K; i++) ref += in[size_t(t + i)] * w[size_t(c) * K + i];
            assert_true(std::fabs(y[size_t(t) * C + c] - ref) < 1e-5 * (1 + std::fabs(ref)));
        }
        for (int r = 0; r < K - 1; r++) assert_true(st[size_t(r) * C + c] == float(in[size_t(N + r)]));
    }
    // split batches (including one shorter than the kernel) give the same bits
    std::vector<float> st2 = st0, y2(size_t(N) * C);
    s->ssm_conv(x.data(), 2, C, K, w.data(), st2.data(), y2.data());
    s->ssm_conv(x.data() + 2 * C, 1, C, K, w.data(), st2.data(), y2.data() + 2 * C);
    s->ssm_conv(x.data() + 3 * C, N - 3, C, K, w.data(), st2.data(), y2.data() + 3 * C);
    assert_memory_equal(y.data(), y2.data(), y.size() * 4);
    assert_memory_equal(st.data(), st2.data(), st.size() * 4);
}

struct DeltaCase {
    int n, hk, hv, D;
    std::vector<float> q, k, v, g, beta, state0;
};

DeltaCase make_delta(std::mt19937 &rng, int n, int hk, int hv, int D) {
    DeltaCase c{n, hk, hv, D, {}, {}, {}, {}, {}, {}};
    c.q = randv(rng, size_t(n) * hk * D);
    c.k = randv(rng, size_t(n) * hk * D);
    // L2-normalised keys and queries, as the model gives them
    for (auto *m : {&c.q, &c.k})
        for (size_t r = 0; r < size_t(n) * hk; r++) {
            double ss = 0;
            for (int i = 0; i < D; i++) ss += double((*m)[r * D + i]) * (*m)[r * D + i];
            for (int i = 0; i < D; i++) (*m)[r * D + i] = float((*m)[r * D + i] / std::sqrt(ss));
        }
    c.v = randv(rng, size_t(n) * hv * D);
    std::uniform_real_distribution<float> ug(-0.7f, -0.001f), ub(0.05f, 0.95f);
    for (int i = 0; i < n * hv; i++) {
        c.g.push_back(ug(rng));
        c.beta.push_back(ub(rng));
    }
    c.state0 = randv(rng, size_t(hv) * D * D, 0.3f);
    return c;
}

DeltaNetArgs args_of(const DeltaCase &c, float *state, float *out, int t0 = 0, int n = -1) {
    DeltaNetArgs a;
    a.n = n < 0 ? c.n : n;
    a.n_k_heads = c.hk;
    a.n_v_heads = c.hv;
    a.head_dim = c.D;
    a.qk_stride = size_t(c.hk) * c.D;
    a.v_stride = size_t(c.hv) * c.D;
    a.q = c.q.data() + size_t(t0) * a.qk_stride;
    a.k = c.k.data() + size_t(t0) * a.qk_stride;
    a.v = c.v.data() + size_t(t0) * a.v_stride;
    a.g = c.g.data() + size_t(t0) * c.hv;
    a.beta = c.beta.data() + size_t(t0) * c.hv;
    a.state = state;
    a.out = out + size_t(t0) * c.hv * c.D;
    a.scale = 1.0f / std::sqrt(float(c.D));
    return a;
}

// S <- a S (I - b k k^T) + b v k^T with S as a D x D matrix (rows: values),
// o = scale S q, in double.
void delta_brute(const DeltaCase &c, std::vector<double> &S, std::vector<double> &out) {
    const int D = c.D;
    S.assign(c.state0.begin(), c.state0.end());
    out.assign(size_t(c.n) * c.hv * D, 0.0);
    const double scale = 1.0 / std::sqrt(double(D));
    for (int h = 0; h < c.hv; h++) {
        double *M = S.data() + size_t(h) * D * D;
        const int hk = h % c.hk;
        for (int t = 0; t < c.n; t++) {
            const float *q = c.q.data() + (size_t(t) * c.hk + hk) * D, *k = c.k.data() + (size_t(t) * c.hk + hk) * D;
            const float *v = c.v.data() + (size_t(t) * c.hv + h) * D;
            const double a = std::exp(double(c.g[size_t(t) * c.hv + h])), b = c.beta[size_t(t) * c.hv + h];
            // P = I - b k k^T; M = a M P + b v k^T
            std::vector<double> N(size_t(D) * D);
            for (int j = 0; j < D; j++)
                for (int i = 0; i < D; i++) {
                    double mp = 0;
                    for (int l = 0; l < D; l++) mp += M[size_t(j) * D + l] * ((l == i ? 1.0 : 0.0) - b * k[l] * k[i]);
                    N[size_t(j) * D + i] = a * mp + b * v[j] * k[i];
                }
            std::copy(N.begin(), N.end(), M);
            for (int j = 0; j < D; j++) {
                double o = 0;
                for (int i = 0; i < D; i++) o += M[size_t(j) * D + i] * q[i];
                out[(size_t(t) * c.hv + h) * D + j] = scale * o;
            }
        }
    }
}

void check_close(const float *got, const double *want, size_t n, double tol, const char *what) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = std::max(worst, std::fabs(got[i] - want[i]) / (1 + std::fabs(want[i])));
    printf("%s: largest difference %.3g (bound %.3g)\n", what, worst, tol);
    assert_true(worst < tol);
}

void test_delta_net(void **) {
    std::mt19937 rng(3);
    auto s = cpu_stream();
    for (int D : {32, 64}) {
        const DeltaCase c = make_delta(rng, 37, 2, 4, D);
        std::vector<double> S_ref, o_ref;
        delta_brute(c, S_ref, o_ref);

        // recurrent, one batch
        std::vector<float> S1 = c.state0, o1(size_t(c.n) * c.hv * D);
        s->delta_net(args_of(c, S1.data(), o1.data()));
        check_close(o1.data(), o_ref.data(), o1.size(), 1e-5, "delta_net output vs brute force");
        check_close(S1.data(), S_ref.data(), S1.size(), 1e-5, "delta_net state vs brute force");

        // recurrent, token by token (decode) and split batches: the same bits
        std::vector<float> S2 = c.state0, o2(o1.size());
        for (int t = 0; t < c.n; t++) s->delta_net(args_of(c, S2.data(), o2.data(), t, 1));
        assert_memory_equal(o1.data(), o2.data(), o1.size() * 4);
        assert_memory_equal(S1.data(), S2.data(), S1.size() * 4);

        // chunked scan, several chunk sizes (one of them longer than the batch)
        for (int chunk : {1, 4, 16, 64}) {
            std::vector<float> S3 = c.state0, o3(o1.size());
            s->delta_net_chunked(args_of(c, S3.data(), o3.data()), chunk);
            char what[64];
            snprintf(what, sizeof what, "chunked (%d) output vs brute force", chunk);
            check_close(o3.data(), o_ref.data(), o3.size(), 1e-5, what);
            snprintf(what, sizeof what, "chunked (%d) state vs brute force", chunk);
            check_close(S3.data(), S_ref.data(), S3.size(), 1e-5, what);
        }
    }
}

// The state as `t` stores it and back, in double (what storing rounds to).
double stored(StateType t, double x) {
    const float f = float(x);
    return t == StateType::F16 ? fp16_to_fp32(fp32_to_fp16(f)) : t == StateType::BF16 ? bf16_to_fp32(fp32_to_bf16(f)) : f;
}

std::vector<uint16_t> narrowed(StateType t, const std::vector<float> &x) {
    std::vector<uint16_t> r(x.size());
    for (size_t i = 0; i < x.size(); i++) r[i] = t == StateType::F16 ? fp32_to_fp16(x[i]) : fp32_to_bf16(x[i]);
    return r;
}

std::vector<float> widened(StateType t, const std::vector<uint16_t> &x) {
    std::vector<float> r(x.size());
    for (size_t i = 0; i < x.size(); i++) r[i] = t == StateType::F16 ? fp16_to_fp32(x[i]) : bf16_to_fp32(x[i]);
    return r;
}

void test_delta_net_narrow_state(void **) {
    std::mt19937 rng(11);
    auto s = cpu_stream();
    assert_true(s->supports_state_type(StateType::F16));
    assert_true(s->supports_state_type(StateType::BF16));
    for (StateType t : {StateType::F16, StateType::BF16}) {
        for (int D : {32, 64}) {
            DeltaCase c = make_delta(rng, 41, 2, 4, D);
            const std::vector<uint16_t> S0 = narrowed(t, c.state0);
            c.state0 = widened(t, S0);  // the brute force starts from the stored state
            const size_t n_out = size_t(c.n) * c.hv * D;

            // brute force: the matrix recurrence in double, the state rounded
            // to t after every token (the outputs read the unrounded one)
            std::vector<double> S_ref(c.state0.begin(), c.state0.end()), o_ref(n_out);
            {
                DeltaCase one = c;
                for (int tok = 0; tok < c.n; tok++) {
                    one.n = 1;
                    one.q.assign(c.q.begin() + size_t(tok) * c.hk * D, c.q.begin() + size_t(tok + 1) * c.hk * D);
                    one.k.assign(c.k.begin() + size_t(tok) * c.hk * D, c.k.begin() + size_t(tok + 1) * c.hk * D);
                    one.v.assign(c.v.begin() + size_t(tok) * c.hv * D, c.v.begin() + size_t(tok + 1) * c.hv * D);
                    one.g.assign(c.g.begin() + size_t(tok) * c.hv, c.g.begin() + size_t(tok + 1) * c.hv);
                    one.beta.assign(c.beta.begin() + size_t(tok) * c.hv, c.beta.begin() + size_t(tok + 1) * c.hv);
                    one.state0.assign(S_ref.begin(), S_ref.end());  // already rounded: exact in float
                    std::vector<double> o1;
                    delta_brute(one, S_ref, o1);
                    std::copy(o1.begin(), o1.end(), o_ref.begin() + size_t(tok) * c.hv * D);
                    for (double &x : S_ref) x = stored(t, x);
                }
            }

            // the op on the stored state, one batch
            std::vector<uint16_t> S1 = S0;
            std::vector<float> o1(n_out);
            DeltaNetArgs a = args_of(c, reinterpret_cast<float *>(S1.data()), o1.data());
            a.state_type = t;
            s->delta_net(a);
            const double tol = t == StateType::F16 ? 1e-3 : 8e-3;  // one unit in the last place of the type
            char what[96];
            snprintf(what, sizeof what, "%s delta_net output vs brute force (D %d)", state_type_name(t), D);
            check_close(o1.data(), o_ref.data(), n_out, tol, what);
            snprintf(what, sizeof what, "%s delta_net state vs brute force (D %d)", state_type_name(t), D);
            check_close(widened(t, S1).data(), S_ref.data(), S1.size(), tol, what);

            // exactly: the F32 op one token at a time, the state rounded to t between tokens
            std::vector<float> Sf = c.state0, of(n_out);
            for (int tok = 0; tok < c.n; tok++) {
                s->delta_net(args_of(c, Sf.data(), of.data(), tok, 1));
                Sf = widened(t, narrowed(t, Sf));
            }
            assert_memory_equal(of.data(), o1.data(), n_out * 4);
            assert_memory_equal(narrowed(t, Sf).data(), S1.data(), S1.size() * 2);
            // ... which is not what rounding once at the end gives (the state is rounded per token)
            std::vector<float> Sonce = c.state0, oonce(n_out);
            s->delta_net(args_of(c, Sonce.data(), oonce.data()));
            assert_memory_not_equal(narrowed(t, Sonce).data(), S1.data(), S1.size() * 2);

            // token by token and in split batches: the same bits; the chunked
            // scan runs the recurrent form for a narrow state
            std::vector<uint16_t> S2 = S0;
            std::vector<float> o2(n_out);
            for (int t0 = 0; t0 < c.n;) {
                const int m = std::min(c.n - t0, 1 + t0 % 7);
                DeltaNetArgs b = args_of(c, reinterpret_cast<float *>(S2.data()), o2.data(), t0, m);
                b.state_type = t;
                s->delta_net(b);
                t0 += m;
            }
            assert_memory_equal(o1.data(), o2.data(), n_out * 4);
            assert_memory_equal(S1.data(), S2.data(), S1.size() * 2);
            std::vector<uint16_t> S3 = S0;
            std::vector<float> o3(n_out);
            DeltaNetArgs d3 = args_of(c, reinterpret_cast<float *>(S3.data()), o3.data());
            d3.state_type = t;
            s->delta_net_chunked(d3, 16);
            assert_memory_equal(o1.data(), o3.data(), n_out * 4);
            assert_memory_equal(S1.data(), S3.data(), S1.size() * 2);
        }
    }
}

void test_l2norm_and_gates(void **) {
    std::mt19937 rng(4);
    auto s = cpu_stream();
    const int n = 3, rows = 4, dim = 64;
    const size_t stride = size_t(rows) * dim + 32;  // rows of a token, then something else
    auto x = randv(rng, size_t(n) * stride, 2.0f);
    auto x0 = x;
    s->l2norm(x.data(), n, rows, dim, stride, 1e-6f);
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            const size_t o = size_t(t) * stride + size_t(r) * dim;
            for (int i = 0; i < dim; i++) ss += double(x0[o + i]) * x0[o + i];
            for (int i = 0; i < dim; i++) assert_true(std::fabs(x[o + i] - x0[o + i] / std::sqrt(ss + 1e-6)) < 1e-6);
        }
        for (size_t i = size_t(rows) * dim; i < stride; i++) assert_true(x[size_t(t) * stride + i] == x0[size_t(t) * stride + i]);
    }

    // gated RMSNorm: rmsnorm(x) * w * silu(z)
    const int rr = 5, d = 64;
    auto gx = randv(rng, size_t(rr) * d), gz = randv(rng, size_t(rr) * d, 3.0f), gw = randv(rng, size_t(d));
    Weight w;
    w.data = gw.data();
    w.type = TYPE_F32;
    w.n_cols = d;
    w.n_rows = 1;
    w.row_bytes = size_t(d) * 4;
    std::vector<float> gy(gx.size());
    s->gated_rmsnorm(gx.data(), w, gz.data(), 1e-6f, rr, gy.data());
    for (int r = 0; r < rr; r++) {
        double ss = 0;
        for (int i = 0; i < d; i++) ss += double(gx[size_t(r) * d + i]) * gx[size_t(r) * d + i];
        const double inv = 1.0 / std::sqrt(ss / d + 1e-6);
        for (int i = 0; i < d; i++) {
            const double z = gz[size_t(r) * d + i];
            const double want = gx[size_t(r) * d + i] * inv * gw[size_t(i)] * z / (1 + std::exp(-z));
            assert_true(std::fabs(gy[size_t(r) * d + i] - want) < 1e-5 * (1 + std::fabs(want)));
        }
    }

    // gates: g = softplus(alpha + dt) * a, beta = sigmoid(beta); sigmoid_mul
    const int nt = 4, nh = 3;
    std::vector<float> alpha = randv(rng, size_t(nt) * nh, 8.0f), beta = randv(rng, size_t(nt) * nh, 3.0f);
    alpha[0] = 30.0f;  // past softplus's threshold
    const std::vector<float> alpha0 = alpha, beta0 = beta, dt = {0.5f, -1.0f, 2.0f}, A = {-1.0f, -4.0f, -12.0f};
    s->delta_gates(alpha.data(), beta.data(), dt.data(), A.data(), nt, nh);
    for (int t = 0; t < nt; t++)
        for (int h = 0; h < nh; h++) {
            const size_t i = size_t(t) * nh + h;
            const double xx = double(alpha0[i]) + dt[size_t(h)];
            const double g = (xx > 20 ? xx : std::log1p(std::exp(xx))) * A[size_t(h)];
            assert_true(std::fabs(alpha[i] - g) < 1e-5 * (1 + std::fabs(g)));
            assert_true(std::fabs(beta[i] - 1 / (1 + std::exp(-double(beta0[i])))) < 1e-6);
        }
    std::vector<float> m = randv(rng, 40), gate = randv(rng, 40, 4.0f), m0 = m;
    s->sigmoid_mul(m.data(), gate.data(), m.size());
    for (size_t i = 0; i < m.size(); i++) assert_true(std::fabs(m[i] - m0[i] / (1 + std::exp(-double(gate[i])))) < 1e-6 * (1 + std::fabs(m0[i])));
    std::vector<float> sx = randv(rng, 45, 5.0f), sy(45);
    s->silu(sx.data(), sx.size(), sy.data());
    for (size_t i = 0; i < sx.size(); i++) assert_true(std::fabs(sy[i] - sx[i] / (1 + std::exp(-double(sx[i])))) < 1e-5 * (1 + std::fabs(sx[i])));
}

void test_copy_2d(void **) {
    auto s = cpu_stream();
    std::vector<float> src(24), dst(8, -1.0f);
    for (size_t i = 0; i < src.size(); i++) src[i] = float(i);
    // every second half-row of 2: rows of 4 floats, take floats 2..3
    s->copy_2d(dst.data(), 2 * 4, src.data() + 2, 4 * 4, 4, 2 * 4);
    const float want[8] = {2, 3, 6, 7, 10, 11, 14, 15};
    assert_memory_equal(dst.data(), want, sizeof want);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dot_order),        cmocka_unit_test(test_ssm_conv), cmocka_unit_test(test_delta_net),
        cmocka_unit_test(test_delta_net_narrow_state),
        cmocka_unit_test(test_l2norm_and_gates), cmocka_unit_test(test_copy_2d),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
