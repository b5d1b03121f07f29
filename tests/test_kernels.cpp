// Unit tests of the CPU kernels (src/backend/cpu): quantization round trips,
// every dot product of every compiled instruction set against the scalar
// reference and a float reference, matmul for decode and batched shapes on
// one and several threads, and the thread pool's run-each-index-once contract.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/ggml_order.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/threadpool.h"
#include "gguf/ggml_types.h"

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

const uint32_t kWeightTypes[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q8_0};

// Every implementation compiled in and supported by this CPU, scalar first.
std::vector<const cpu::KernelImpl *> impls() {
    std::vector<const cpu::KernelImpl *> v = {&cpu::impl_scalar()};
    for (const cpu::KernelImpl *i : {cpu::impl_avx2(), cpu::impl_avx512(), cpu::impl_neon()})
        if (i) v.push_back(i);
    return v;
}

// Activations shaped like a transformer's: mostly small, a few outliers,
// some exact zeros and a whole zero block (amax = 0 must not divide by zero).
std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> g(0.0f, scale);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) {
        v[i] = g(rng);
        if (rng() % 97 == 0) v[i] *= 20.0f;
        if (rng() % 53 == 0) v[i] = 0.0f;
    }
    if (n >= 64) std::fill(v.begin() + 32, v.begin() + 64, 0.0f);
    return v;
}

// Weight row of `type` quantized from random floats with the reference quantizers.
std::vector<uint8_t> make_weights(uint32_t type, int64_t rows, int64_t n, uint32_t seed) {
    const size_t rb = row_bytes(type, n);
    std::vector<uint8_t> w(rb * size_t(rows));
    std::vector<float> f = random_floats(size_t(rows * n), seed, 0.05f);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = f.data() + r * n;
        uint8_t *y = w.data() + size_t(r) * rb;
        switch (type) {
            case TYPE_Q4_0: quantize_row_q4_0_ref(x, reinterpret_cast<BlockQ4_0 *>(y), n); break;
            case TYPE_Q4_1: quantize_row_q4_1_ref(x, reinterpret_cast<BlockQ4_1 *>(y), n); break;
            case TYPE_Q8_0: quantize_row_q8_0_ref(x, reinterpret_cast<BlockQ8_0 *>(y), n); break;
            default: kernels_scalar().quantize_row(type, x, y, n); break;
        }
    }
    return w;
}

std::vector<float> dequant(uint32_t type, const void *src, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    dequantize_row(type, src, v.data(), n);
    return v;
}

// Tolerance of a dot product computed in float with a different summation
// order: a few ulps of the sum of absolute terms. Q4_1 also differs from the
// float reference through s = fp16(d * sum(q)) instead of d_fp16 * sum(q).
double dot_tolerance(uint32_t wt, int64_t n, const uint8_t *w, const uint8_t *xq) {
    const uint32_t xt = vec_dot_type(wt);
    std::vector<float> wf = dequant(wt, w, n), xf = dequant(xt, xq, n);
    double mag = 0;
    for (int64_t i = 0; i < n; i++) mag += std::fabs(double(wf[size_t(i)]) * xf[size_t(i)]);
    double tol = 2e-6 * mag + 1e-6;
    if (wt == TYPE_Q4_1) {
        const BlockQ4_1 *wb = reinterpret_cast<const BlockQ4_1 *>(w);
        const BlockQ8_1 *xb = reinterpret_cast<const BlockQ8_1 *>(xq);
        for (int64_t b = 0; b < n / QK; b++)
            tol += std::fabs(fp16_to_fp32(wb[b].m)) * (std::fabs(fp16_to_fp32(xb[b].s)) * 2e-3 +
                                                        fp16_to_fp32(xb[b].d) * 0.1);
    }
    return tol;
}

double float_dot(uint32_t wt, int64_t n, const uint8_t *w, const uint8_t *xq) {
    std::vector<float> wf = dequant(wt, w, n), xf = dequant(vec_dot_type(wt), xq, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += double(wf[size_t(i)]) * xf[size_t(i)];
    return s;
}

// ---------------------------------------------------------------------------

void test_vec_dot_type(void **) {
    assert_int_equal(vec_dot_type(TYPE_Q4_0), TYPE_Q8_0);
    assert_int_equal(vec_dot_type(TYPE_Q8_0), TYPE_Q8_0);
    assert_int_equal(vec_dot_type(TYPE_Q4_1), TYPE_Q8_1);
    assert_int_equal(vec_dot_type(TYPE_F16), TYPE_F16);
    assert_int_equal(vec_dot_type(TYPE_BF16), TYPE_BF16);
    assert_int_equal(vec_dot_type(TYPE_F32), TYPE_F32);
    assert_non_null(kernels_best().name);
    assert_string_equal(kernels_scalar().name, "scalar");
}

// Quantize, dequantize: the error of each element is bounded by half a step
// (plus the fp16 rounding of the scales); Q4_0 may clamp one end by a full step.
void test_quantize_roundtrip(void **) {
    const int64_t n = 4096;
    std::vector<float> x = random_floats(size_t(n), 7);
    x[100] = 1e-6f;  // tiny values next to large ones in a block
    for (uint32_t type : {TYPE_Q8_0, TYPE_Q8_1, TYPE_Q4_0, TYPE_Q4_1, TYPE_F16, TYPE_BF16}) {
        for (const cpu::KernelImpl *impl : impls()) {
            std::vector<uint8_t> q(row_bytes(type, n));
            if (type == TYPE_Q4_0)
                quantize_row_q4_0_ref(x.data(), reinterpret_cast<BlockQ4_0 *>(q.data()), n);
            else if (type == TYPE_Q4_1)
                quantize_row_q4_1_ref(x.data(), reinterpret_cast<BlockQ4_1 *>(q.data()), n);
            else
                impl->table.quantize_row(type, x.data(), q.data(), n);
            std::vector<float> y = dequant(type, q.data(), n);
            for (int64_t b = 0; b < n / QK; b++) {
                float amax = 0, mn = x[size_t(b * QK)], mx = mn;
                for (int j = 0; j < QK; j++) {
                    const float v = x[size_t(b * QK + j)];
                    amax = std::max(amax, std::fabs(v));
                    mn = std::min(mn, v);
                    mx = std::max(mx, v);
                }
                for (int j = 0; j < QK; j++) {
                    const size_t i = size_t(b * QK + j);
                    double bound;
                    switch (type) {
                        case TYPE_Q8_0:
                        case TYPE_Q8_1: bound = 0.57 * amax / 127.0; break;
                        case TYPE_Q4_0: bound = 1.01 * amax / 8.0; break;
                        case TYPE_Q4_1: bound = 0.51 * (mx - mn) / 15.0 + 1e-3 * std::fabs(mn); break;
                        case TYPE_F16: bound = std::fabs(x[i]) / 2048.0 + 1e-7; break;
                        default: bound = std::fabs(x[i]) / 256.0; break;
                    }
                    if (std::fabs(double(x[i]) - y[i]) > bound + 1e-9) {
                        print_error("%s %s: x[%zu]=%g -> %g (bound %g)\n", impl->table.name, type_info(type)->name,
                                    i, double(x[i]), double(y[i]), bound);
                        fail();
                    }
                }
            }
        }
    }
}

// Every implementation quantizes activations to the same bytes as the scalar
// one; the scalar one agrees with ggml_types' reference quantizer except for
// a possible off-by-one at exact ties (llama.cpp's x86 path rounds half to even
// with multiplier 127/amax, the reference rounds half away with 1/d).
void test_quantize_matches_scalar(void **) {
    for (int64_t n : {32, 64, 96, 576, 1536, 4128}) {
        std::vector<float> x = random_floats(size_t(n), uint32_t(n));
        x[3] = 0.5f;  // a tie: 0.5 * 127 / amax may land on k + 0.5
        for (uint32_t type : {TYPE_Q8_0, TYPE_Q8_1, TYPE_F16, TYPE_BF16, TYPE_F32}) {
            const size_t bytes = type == TYPE_F32 ? size_t(n) * 4 : row_bytes(type, n);
            std::vector<uint8_t> ref(bytes);
            kernels_scalar().quantize_row(type, x.data(), ref.data(), n);
            for (const cpu::KernelImpl *impl : impls()) {
                std::vector<uint8_t> got(bytes, 0xAA);
                impl->table.quantize_row(type, x.data(), got.data(), n);
                if (std::memcmp(ref.data(), got.data(), bytes) != 0) {
                    print_error("%s quantize_row(%s, n=%lld) differs from scalar\n", impl->table.name,
                                type_info(type)->name, (long long)n);
                    fail();
                }
            }
        }
        std::vector<BlockQ8_0> a(size_t(n / QK)), b(size_t(n / QK));
        kernels_scalar().quantize_row(TYPE_Q8_0, x.data(), a.data(), n);
        quantize_row_q8_0_ref(x.data(), b.data(), n);
        for (size_t i = 0; i < a.size(); i++) {
            assert_int_equal(a[i].d, b[i].d);
            for (int j = 0; j < QK; j++) assert_true(std::abs(a[i].qs[j] - b[i].qs[j]) <= 1);
        }
        std::vector<BlockQ8_1> c(size_t(n / QK)), e(size_t(n / QK));
        kernels_scalar().quantize_row(TYPE_Q8_1, x.data(), c.data(), n);
        quantize_row_q8_1_ref(x.data(), e.data(), n);
        for (size_t i = 0; i < c.size(); i++) {
            assert_int_equal(c[i].d, e[i].d);
            for (int j = 0; j < QK; j++) assert_true(std::abs(c[i].qs[j] - e[i].qs[j]) <= 1);
        }
    }
}

// Ties round to even, as _mm256_round_ps does in ggml's quantize_row_q8_0.
void test_quantize_ties(void **) {
    std::vector<float> x(QK, 0.0f);
    x[0] = 127.0f;  // multiplier exactly 1
    x[1] = 2.5f;
    x[2] = -3.5f;
    x[3] = 0.5f;
    for (const cpu::KernelImpl *impl : impls()) {
        BlockQ8_0 b;
        impl->table.quantize_row(TYPE_Q8_0, x.data(), &b, QK);
        assert_int_equal(b.qs[0], 127);
        assert_int_equal(b.qs[1], 2);
        assert_int_equal(b.qs[2], -4);
        assert_int_equal(b.qs[3], 0);
        assert_int_equal(b.d, fp32_to_fp16(1.0f));
    }
}

void test_vec_dot_all(void **) {
    const int64_t sizes[] = {32, 64, 96, 160, 576, 1536, 2080, 16384};
    for (uint32_t wt : kWeightTypes) {
        const uint32_t xt = vec_dot_type(wt);
        for (int64_t n : sizes) {
            std::vector<uint8_t> w = make_weights(wt, 1, n, uint32_t(n * 31 + wt));
            std::vector<float> x = random_floats(size_t(n), uint32_t(n + 5));
            const size_t xbytes = xt == TYPE_F32 ? size_t(n) * 4 : row_bytes(xt, n);
            std::vector<uint8_t> xq(xbytes);
            kernels_scalar().quantize_row(xt, x.data(), xq.data(), n);
            const float ref = kernels_scalar().vec_dot(wt, n, w.data(), xq.data());
            const double fref = float_dot(wt, n, w.data(), xq.data());
            const double tol = dot_tolerance(wt, n, w.data(), xq.data());
            if (std::fabs(ref - fref) > tol) {
                print_error("scalar %s n=%lld: %g vs float %g\n", type_info(wt)->name, (long long)n, double(ref),
                            fref);
                fail();
            }
            // The dot against the unquantized activations: off by at most the
            // activation quantization error.
            std::vector<float> wf = dequant(wt, w.data(), n);
            double exact = 0, werr = 0;
            for (int64_t i = 0; i < n; i++) exact += double(wf[size_t(i)]) * x[size_t(i)];
            for (int64_t b = 0; b < n / QK; b++) {
                double amax = 0, wsum = 0;
                for (int64_t i = b * QK; i < std::min<int64_t>(n, (b + 1) * QK); i++) {
                    amax = std::max(amax, double(std::fabs(x[size_t(i)])));
                    wsum += std::fabs(wf[size_t(i)]);
                }
                werr += wsum * (xt == TYPE_Q8_0 || xt == TYPE_Q8_1 ? 0.57 * amax / 127
                                : xt == TYPE_BF16                  ? amax / 256
                                : xt == TYPE_F16                   ? amax / 2048
                                                                   : 0.0);
            }
            assert_true(std::fabs(ref - exact) <= werr + tol);
            for (const cpu::KernelImpl *impl : impls()) {
                const float got = impl->table.vec_dot(wt, n, w.data(), xq.data());
                // Block types: every x86 path does llama.cpp's arithmetic, as the scalar one.
                const bool exact = cpu::is_q_type(wt) && std::strcmp(impl->table.name, "neon") != 0;
                if ((exact && got != ref) || std::fabs(got - ref) > tol) {
                    print_error("%s vec_dot %s n=%lld: %.9g vs scalar %.9g (tol %g)\n", impl->table.name,
                                type_info(wt)->name, (long long)n, double(got), double(ref), tol);
                    fail();
                }
            }
        }
    }
}

// Float types also take lengths that are not multiples of 8 (attention heads).
void test_vec_dot_float_odd_lengths(void **) {
    for (uint32_t wt : {TYPE_F32, TYPE_F16, TYPE_BF16})
        for (int64_t n : {1, 7, 9, 33, 64, 100, 129}) {
            std::vector<uint8_t> w = make_weights(wt, 1, n, uint32_t(n));
            std::vector<float> x = random_floats(size_t(n), uint32_t(n + 1));
            std::vector<uint8_t> xq(size_t(n) * 4);
            kernels_scalar().quantize_row(wt, x.data(), xq.data(), n);
            const float ref = kernels_scalar().vec_dot(wt, n, w.data(), xq.data());
            const double tol = dot_tolerance(wt, n, w.data(), xq.data());
            for (const cpu::KernelImpl *impl : impls())
                assert_true(std::fabs(impl->table.vec_dot(wt, n, w.data(), xq.data()) - ref) <= tol);
        }
}

// matmul against a naive loop over dequantized weights and activations, and
// against the scalar vec_dot of each (row, token). Shapes cover: one token
// (decode), a few tokens, many tokens (batched prefill); rows not a multiple
// of the tile height; odd block counts; ldy larger than the row count.
void test_matmul(void **) {
    struct Shape {
        int64_t rows, cols, tokens;
    };
    const Shape shapes[] = {{1, 32, 1},    {37, 96, 1},   {64, 576, 1},  {576, 1536, 1}, {13, 160, 3},
                            {130, 160, 7}, {256, 576, 33}, {50, 64, 130}, {9, 2080, 5},   {200, 96, 67}};
    for (uint32_t wt : kWeightTypes) {
        const uint32_t xt = vec_dot_type(wt);
        for (const Shape &s : shapes) {
            const size_t rb = row_bytes(wt, s.cols);
            std::vector<uint8_t> W = make_weights(wt, s.rows, s.cols, uint32_t(s.rows * 7 + s.cols + wt));
            std::vector<float> X = random_floats(size_t(s.cols * s.tokens), uint32_t(s.tokens * 3 + s.cols));
            // Reference per (token, row): scalar vec_dot and the float loop.
            const size_t xb = xt == TYPE_F32 ? size_t(s.cols) * 4 : row_bytes(xt, s.cols);
            std::vector<uint8_t> XQ(xb * size_t(s.tokens));
            for (int64_t t = 0; t < s.tokens; t++)
                kernels_scalar().quantize_row(xt, X.data() + t * s.cols, XQ.data() + size_t(t) * xb, s.cols);
            std::vector<float> ref(size_t(s.rows * s.tokens));
            std::vector<double> fref(ref.size()), tol(ref.size());
            for (int64_t t = 0; t < s.tokens; t++)
                for (int64_t r = 0; r < s.rows; r++) {
                    const uint8_t *w = W.data() + size_t(r) * rb, *x = XQ.data() + size_t(t) * xb;
                    ref[size_t(t * s.rows + r)] = kernels_scalar().vec_dot(wt, s.cols, w, x);
                    fref[size_t(t * s.rows + r)] = float_dot(wt, s.cols, w, x);
                    tol[size_t(t * s.rows + r)] = dot_tolerance(wt, s.cols, w, x);
                }
            for (const cpu::KernelImpl *impl : impls()) {
                for (int nth : {1, 3}) {
                    ThreadPool pool(nth);
                    const int64_t ldy = s.rows + 3;
                    std::vector<float> Y(size_t(ldy * s.tokens), -12345.0f);
                    std::vector<uint8_t> scratch(matmul_scratch_bytes(wt, s.cols, s.tokens) + 1);
                    // +1: an odd start address, matmul must align for itself
                    matmul(pool, impl->table, wt, W.data(), rb, s.rows, s.cols, X.data(), s.tokens, Y.data(), ldy,
                           scratch.data() + 1);
                    for (int64_t t = 0; t < s.tokens; t++) {
                        for (int64_t r = 0; r < s.rows; r++) {
                            const size_t i = size_t(t * s.rows + r);
                            const float got = Y[size_t(t * ldy + r)];
                            const bool exact = impl == &cpu::impl_scalar() ||
                                               (cpu::is_q_type(wt) && std::strcmp(impl->table.name, "neon") != 0);
                            if ((exact && got != ref[i]) || std::fabs(got - ref[i]) > tol[i] ||
                                std::fabs(got - fref[i]) > 2 * tol[i]) {
                                print_error("%s matmul %s %lldx%lld tokens=%lld threads=%d [t=%lld r=%lld]: %.9g, "
                                            "scalar %.9g, float %.9g\n",
                                            impl->table.name, type_info(wt)->name, (long long)s.rows,
                                            (long long)s.cols, (long long)s.tokens, nth, (long long)t, (long long)r,
                                            double(got), double(ref[i]), fref[i]);
                                fail();
                            }
                        }
                        for (int64_t r = s.rows; r < ldy; r++) assert_true(Y[size_t(t * ldy + r)] == -12345.0f);
                    }
                }
            }
        }
    }
}

// The public matmul goes through kernels_best() and the caller's pool.
void test_matmul_best_matches_scalar(void **) {
    const int64_t rows = 96, cols = 576, tokens = 9;
    ThreadPool pool(2);
    for (uint32_t wt : kWeightTypes) {
        std::vector<uint8_t> W = make_weights(wt, rows, cols, 99);
        std::vector<float> X = random_floats(size_t(cols * tokens), 98);
        std::vector<uint8_t> scratch(matmul_scratch_bytes(wt, cols, tokens));
        std::vector<float> a(size_t(rows * tokens)), b(a.size());
        matmul(pool, kernels_scalar(), wt, W.data(), row_bytes(wt, cols), rows, cols, X.data(), tokens, a.data(),
               rows, scratch.data());
        matmul(pool, kernels_best(), wt, W.data(), row_bytes(wt, cols), rows, cols, X.data(), tokens, b.data(),
               rows, scratch.data());
        for (size_t i = 0; i < a.size(); i++)
            assert_true(std::fabs(a[i] - b[i]) <= 1e-4f * (1.0f + std::fabs(a[i])));
    }
}

void test_split_range(void **) {
    for (int64_t n : {0, 1, 5, 64, 1000})
        for (int nth : {1, 2, 3, 7}) {
            int64_t covered = 0, prev_end = 0;
            for (int i = 0; i < nth; i++) {
                int64_t b, e;
                split_range(n, i, nth, b, e);
                assert_true(b == prev_end && e >= b);
                covered += e - b;
                prev_end = e;
            }
            assert_int_equal(covered, n);
        }
}

// Every index runs exactly once per run(), with nth == size(), index 0 on the
// calling thread, and what the workers write is visible to the caller when
// run() returns. Pauses between some runs let the workers fall asleep so the
// wake-up path is exercised too.
void test_threadpool(void **) {
    for (int n : {1, 2, 3, 5}) {
        ThreadPool pool(n);
        assert_int_equal(pool.size(), n);
        std::vector<int64_t> counts(size_t(n), 0);
        std::vector<int64_t> last(size_t(n), -1);
        const int iters = 20000;
        const std::thread::id caller = std::this_thread::get_id();
        for (int it = 0; it < iters; it++) {
            std::atomic<int> calls{0}, bad{0};
            pool.run([&](int ith, int nth) {
                // cmocka's asserts longjmp: only the calling thread may use them
                if (nth != n || ith < 0 || ith >= n) {
                    bad.fetch_add(1);
                    return;
                }
                counts[size_t(ith)]++;  // plain writes: run() must order them
                last[size_t(ith)] = it;
                if (ith == 0 && std::this_thread::get_id() != caller) bad.fetch_add(1);
                calls.fetch_add(1, std::memory_order_relaxed);
            });
            assert_int_equal(bad.load(), 0);
            assert_int_equal(calls.load(), n);
            for (int i = 0; i < n; i++) assert_int_equal(last[size_t(i)], it);
            if (it % 5000 == 4999) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        for (int i = 0; i < n; i++) assert_int_equal(counts[size_t(i)], iters);
    }
}

// Construction and destruction with no job, and right after workers fell asleep.
void test_threadpool_lifecycle(void **) {
    for (int k = 0; k < 50; k++) {
        ThreadPool p(3);
    }
    ThreadPool p(4);
    std::atomic<int> sum{0};
    p.run([&](int ith, int) { sum += ith; });
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    p.run([&](int ith, int) { sum += ith; });
    assert_int_equal(sum.load(), 12);
}

// ggml_vec_dot_f16's AVX-512 order written out lane by lane: whatever
// instructions dot_f16_ggml picks, it must give these bits.
float dot_f16_lanes(const uint16_t *x, const uint16_t *y, int n) {
    const int np = n & ~63;
    float acc[64] = {};
    for (int i = 0; i < np; i++) acc[i % 64] += fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]);  // products are exact
    float v[16];
    for (int l = 0; l < 16; l++) v[l] = (acc[l] + acc[32 + l]) + (acc[16 + l] + acc[48 + l]);
    float t[8];
    for (int i = 0; i < 8; i++) t[i] = v[8 + i] + v[i];
    const float u0 = t[4] + t[0], u1 = t[5] + t[1], u2 = t[6] + t[2], u3 = t[7] + t[3];
    double sum = double((u0 + u2) + (u1 + u3));
    for (int i = np; i < n; i++) sum += double(fp16_to_fp32(x[i]) * fp16_to_fp32(y[i]));
    return float(sum);
}

void test_ggml_order_ops(void **) {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 2.0f);
    for (int n : {64, 128, 80, 200, 8}) {
        const size_t un = static_cast<size_t>(n);
        std::vector<uint16_t> x(un), y(un), a(un), b(un);
        for (int i = 0; i < n; i++) {
            x[size_t(i)] = fp32_to_fp16(nd(rng));
            y[size_t(i)] = fp32_to_fp16(nd(rng));
            a[size_t(i)] = b[size_t(i)] = fp32_to_fp16(nd(rng));
        }
        assert_true(cpu::dot_f16_ggml(x.data(), y.data(), n) == dot_f16_lanes(x.data(), y.data(), n));
        // element-wise F16 updates: one rounding to F16 per element
        cpu::mad_f16_ggml(a.data(), x.data(), n, 0.37f);
        cpu::scale_f16_ggml(a.data(), n, 0.81f);
        for (int i = 0; i < n; i++) {
            const float m = fp16_to_fp32(fp32_to_fp16(std::fma(fp16_to_fp32(x[size_t(i)]), 0.37f, fp16_to_fp32(b[size_t(i)]))));
            assert_true(a[size_t(i)] == fp32_to_fp16(m * 0.81f));
        }
    }
    // swiglu: ggml's vector exp is within 2 ulp of expf; the tail uses expf.
    std::vector<float> g(100), u(100), out(100);
    for (int i = 0; i < 100; i++) {
        g[size_t(i)] = float(i - 50) * 0.37f;
        u[size_t(i)] = nd(rng);
    }
    g[3] = -200.0f;  // exp(200) overflows: silu is -0
    g[4] = 100.0f;
    cpu::swiglu_ggml(g.data(), u.data(), g.size(), out.data());
    for (size_t i = 0; i < g.size(); i++) {
        const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * double(u[i]);
        assert_true(std::fabs(double(out[i]) - ref) <= 4e-7 * std::fabs(ref) + 1e-30);
    }
    // attention: the F16 accumulator stays within F16 precision of the exact softmax.
    const int hd = 64, nk = 300;
    std::vector<uint16_t> q(hd), k(size_t(hd) * nk), v(size_t(hd) * nk), acc(hd);
    for (auto &e : q) e = fp32_to_fp16(nd(rng) * 0.3f);
    for (auto &e : k) e = fp32_to_fp16(nd(rng));
    for (auto &e : v) e = fp32_to_fp16(nd(rng));
    std::vector<float> o(hd);
    cpu::attention_ggml(
        q.data(), hd, nk, 0.125f, [&](int j) { return k.data() + size_t(j) * hd; },
        [&](int j) { return v.data() + size_t(j) * hd; }, acc.data(), o.data());
    // the blocked version over cached + fresh rows: the same bits
    std::vector<float> o2(hd), scratch(2 * size_t(hd));
    const cpu::F16Rows kr{k.data(), k.data() + size_t(250) * hd, size_t(hd), 250};
    const cpu::F16Rows vr{v.data(), v.data() + size_t(250) * hd, size_t(hd), 250};
    cpu::attention_ggml_rows(q.data(), hd, nk, 0.125f, kr, vr, scratch.data(), o2.data());
    assert_memory_equal(o.data(), o2.data(), size_t(hd) * sizeof(float));
    std::vector<double> s(nk);
    double mx = -1e30, den = 0;
    for (int j = 0; j < nk; j++) {
        double d = 0;
        for (int i = 0; i < hd; i++) d += double(fp16_to_fp32(q[size_t(i)])) * fp16_to_fp32(k[size_t(j) * hd + i]);
        s[size_t(j)] = d * 0.125;
        mx = std::max(mx, s[size_t(j)]);
    }
    for (int j = 0; j < nk; j++) den += std::exp(s[size_t(j)] - mx);
    for (int i = 0; i < hd; i++) {
        double r = 0;
        for (int j = 0; j < nk; j++) r += std::exp(s[size_t(j)] - mx) / den * fp16_to_fp32(v[size_t(j) * hd + i]);
        assert_true(std::fabs(double(o[size_t(i)]) - r) < 0.02);
    }
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vec_dot_type),
        cmocka_unit_test(test_quantize_roundtrip),
        cmocka_unit_test(test_quantize_matches_scalar),
        cmocka_unit_test(test_quantize_ties),
        cmocka_unit_test(test_vec_dot_all),
        cmocka_unit_test(test_vec_dot_float_odd_lengths),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_best_matches_scalar),
        cmocka_unit_test(test_ggml_order_ops),
        cmocka_unit_test(test_split_range),
        cmocka_unit_test(test_threadpool),
        cmocka_unit_test(test_threadpool_lifecycle),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
