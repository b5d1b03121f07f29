// Unit tests of the CPU kernels (src/backend/cpu): quantization round trips,
// every dot product of every compiled instruction set against the scalar
// reference and a float reference, matmul for decode and batched shapes on
// one and several threads, and the thread pool's run-each-index-once contract.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/ggml_order.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/kernels_impl.h"
#include "backend/cpu/repack.h"
#include "backend/cpu/threadpool.h"
#include "ggml_ref_cases.h"
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

const uint32_t kWeightTypes[] = {TYPE_F32,  TYPE_F16,  TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0,
                                 TYPE_Q5_1, TYPE_Q8_0, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K};

int block_size(uint32_t type) { return type_info(type)->block_size; }

// Block-quantized weights: every x86 path does llama.cpp's arithmetic, as the
// scalar one, so they must agree bit for bit.
bool exact_type(uint32_t t) { return cpu::is_q_type(t) || cpu::is_k_type(t); }

// Bytes of n activations converted to vec_dot_type(weight_type).
size_t act_bytes(uint32_t weight_type, int64_t n) {
    const uint32_t xt = vec_dot_type(weight_type);
    return xt == TYPE_F32 ? size_t(n) * 4 : row_bytes(xt, n);
}

// Every implementation compiled in and supported by this CPU, scalar first.
std::vector<const cpu::KernelImpl *> impls() {
    std::vector<const cpu::KernelImpl *> v = {&cpu::impl_scalar()};
    for (const cpu::KernelImpl *i : {cpu::impl_avx2(), cpu::impl_avx512(), cpu::impl_neon()})
        if (i) v.push_back(i);
    return v;
}

const KernelTable *impl_avx512_table() { return cpu::impl_avx512() ? &cpu::impl_avx512()->table : nullptr; }

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

// k-quant blocks with random codes, scales and minimums (every bit pattern
// is a valid block) and fp16 factors that give weights of a few hundredths.
void random_kquant_blocks(uint32_t type, uint8_t *dst, int64_t n_blocks, std::mt19937 &rng) {
    const size_t bs = type_info(type)->block_bytes;
    std::uniform_real_distribution<float> u(0.5f, 1.5f);
    for (int64_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = dst + size_t(b) * bs;
        for (size_t i = 0; i < bs; i++) blk[i] = uint8_t(rng());
        if (type == TYPE_Q6_K) {
            const uint16_t d = fp32_to_fp16(u(rng) * 1.2e-5f);
            std::memcpy(blk + offsetof(BlockQ6_K, d), &d, 2);
        } else {
            const uint16_t d = fp32_to_fp16(u(rng) * (type == TYPE_Q4_K ? 1e-4f : 5e-5f));
            const uint16_t m = fp32_to_fp16(u(rng) * 8e-4f);
            std::memcpy(blk, &d, 2);
            std::memcpy(blk + 2, &m, 2);
        }
    }
}

// Weight row of `type` quantized from random floats with the reference
// quantizers (k-quants: random blocks).
std::vector<uint8_t> make_weights(uint32_t type, int64_t rows, int64_t n, uint32_t seed) {
    const size_t rb = row_bytes(type, n);
    std::vector<uint8_t> w(rb * size_t(rows));
    if (cpu::is_k_type(type)) {
        std::mt19937 rng(seed);
        random_kquant_blocks(type, w.data(), rows * n / QK_K, rng);
        return w;
    }
    std::vector<float> f = random_floats(size_t(rows * n), seed, 0.05f);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = f.data() + r * n;
        uint8_t *y = w.data() + size_t(r) * rb;
        switch (type) {
            case TYPE_Q4_0: quantize_row_q4_0_ref(x, reinterpret_cast<BlockQ4_0 *>(y), n); break;
            case TYPE_Q4_1: quantize_row_q4_1_ref(x, reinterpret_cast<BlockQ4_1 *>(y), n); break;
            case TYPE_Q5_0: quantize_row_q5_0_ref(x, reinterpret_cast<BlockQ5_0 *>(y), n); break;
            case TYPE_Q5_1: quantize_row_q5_1_ref(x, reinterpret_cast<BlockQ5_1 *>(y), n); break;
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

// The magnitudes a k-quant weight is the difference of: |d sc q| + |dmin m|.
std::vector<double> kquant_magnitudes(uint32_t type, const uint8_t *w, int64_t n) {
    std::vector<double> mag(static_cast<size_t>(n));
    const size_t bs = type_info(type)->block_bytes;
    for (int64_t b = 0; b < n / QK_K; b++) {
        const uint8_t *blk = w + size_t(b) * bs;
        if (type == TYPE_Q6_K) {
            const BlockQ6_K &k = *reinterpret_cast<const BlockQ6_K *>(blk);
            for (int e = 0; e < QK_K; e++)
                mag[size_t(b * QK_K + e)] = std::fabs(fp16_to_fp32(k.d) * k.scales[e / 16]) * 32.0;
            continue;
        }
        uint16_t dh, mh;
        std::memcpy(&dh, blk, 2);
        std::memcpy(&mh, blk + 2, 2);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            kquant_scale_min(blk + 4, j, &sc, &m);
            for (int l = 0; l < 32; l++)
                mag[size_t(b * QK_K + 32 * j + l)] =
                    std::fabs(fp16_to_fp32(dh)) * sc * 31.0 + std::fabs(fp16_to_fp32(mh)) * m;
        }
    }
    return mag;
}

// Tolerance of a dot product computed in float with a different summation
// order: a few ulps of the sum of absolute terms. Q4_1 and Q5_1 also differ
// from the float reference through s = fp16(d * sum(q)) instead of
// d_fp16 * sum(q); k-quants' terms are differences of larger products.
double dot_tolerance(uint32_t wt, int64_t n, const uint8_t *w, const uint8_t *xq) {
    const uint32_t xt = vec_dot_type(wt);
    std::vector<float> wf = dequant(wt, w, n), xf = dequant(xt, xq, n);
    std::vector<double> km;
    if (cpu::is_k_type(wt)) km = kquant_magnitudes(wt, w, n);
    double mag = 0;
    for (int64_t i = 0; i < n; i++)
        mag += std::fabs(km.empty() ? double(wf[size_t(i)]) : km[size_t(i)]) * std::fabs(xf[size_t(i)]);
    double tol = 2e-6 * mag + 1e-6;
    if (cpu::has_min_term(wt)) {
        const size_t bs = type_info(wt)->block_bytes;
        const BlockQ8_1 *xb = reinterpret_cast<const BlockQ8_1 *>(xq);
        for (int64_t b = 0; b < n / QK; b++) {
            uint16_t m;
            std::memcpy(&m, w + size_t(b) * bs + 2, 2);
            tol += std::fabs(fp16_to_fp32(m)) * (std::fabs(fp16_to_fp32(xb[b].s)) * 2e-3 + fp16_to_fp32(xb[b].d) * 0.1);
        }
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
    assert_int_equal(vec_dot_type(TYPE_Q5_0), TYPE_Q8_0);
    assert_int_equal(vec_dot_type(TYPE_Q5_1), TYPE_Q8_1);
    assert_int_equal(vec_dot_type(TYPE_Q4_K), TYPE_Q8_K);
    assert_int_equal(vec_dot_type(TYPE_Q5_K), TYPE_Q8_K);
    assert_int_equal(vec_dot_type(TYPE_Q6_K), TYPE_Q8_K);
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
    for (uint32_t type :
         {TYPE_Q8_0, TYPE_Q8_1, TYPE_Q8_K, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_F16, TYPE_BF16}) {
        const int bs = block_size(type);
        for (const cpu::KernelImpl *impl : impls()) {
            std::vector<uint8_t> q(row_bytes(type, n));
            if (type == TYPE_Q4_0)
                quantize_row_q4_0_ref(x.data(), reinterpret_cast<BlockQ4_0 *>(q.data()), n);
            else if (type == TYPE_Q4_1)
                quantize_row_q4_1_ref(x.data(), reinterpret_cast<BlockQ4_1 *>(q.data()), n);
            else if (type == TYPE_Q5_0)
                quantize_row_q5_0_ref(x.data(), reinterpret_cast<BlockQ5_0 *>(q.data()), n);
            else if (type == TYPE_Q5_1)
                quantize_row_q5_1_ref(x.data(), reinterpret_cast<BlockQ5_1 *>(q.data()), n);
            else
                impl->table.quantize_row(type, x.data(), q.data(), n);
            std::vector<float> y = dequant(type, q.data(), n);
            for (int64_t b = 0; b < n / bs; b++) {
                float amax = 0, mn = x[size_t(b * bs)], mx = mn;
                for (int j = 0; j < bs; j++) {
                    const float v = x[size_t(b * bs + j)];
                    amax = std::max(amax, std::fabs(v));
                    mn = std::min(mn, v);
                    mx = std::max(mx, v);
                }
                for (int j = 0; j < bs; j++) {
                    const size_t i = size_t(b * bs + j);
                    double bound;
                    switch (type) {
                        case TYPE_Q8_0:
                        case TYPE_Q8_1: bound = 0.57 * amax / 127.0; break;
                        case TYPE_Q8_K: bound = 0.5001 * amax / 127.0; break;
                        case TYPE_Q4_0: bound = 1.01 * amax / 8.0; break;
                        case TYPE_Q5_0: bound = 1.01 * amax / 16.0; break;
                        case TYPE_Q4_1: bound = 0.51 * (mx - mn) / 15.0 + 1e-3 * std::fabs(mn); break;
                        case TYPE_Q5_1: bound = 0.51 * (mx - mn) / 31.0 + 1e-3 * std::fabs(mn); break;
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
    for (int64_t n : {32, 64, 96, 256, 576, 1536, 2304, 4128}) {
        std::vector<float> x = random_floats(size_t(n), uint32_t(n));
        x[3] = 0.5f;  // a tie: 0.5 * 127 / amax may land on k + 0.5
        for (uint32_t type : {TYPE_Q8_0, TYPE_Q8_1, TYPE_Q8_K, TYPE_F16, TYPE_BF16, TYPE_F32}) {
            if (n % block_size(type)) continue;
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

// Q8_K from its definition (llama.cpp's quantize_row_q8_K_ref): the first
// value of largest magnitude sets iscale = -127 / max, q = round half to even
// of iscale * x (at most 127), d = 1 / iscale, bsums the sums of 16.
void test_quantize_q8_K_definition(void **) {
    for (int64_t n : {256, 512, 2304}) {
        std::vector<float> x = random_floats(size_t(n), uint32_t(n + 11));
        x[7] = 1000.0f;          // block 0: the largest magnitude twice, first positive
        x[9] = -1000.0f;
        x[300 % n] = 1e-30f;     // tiny values in a block
        if (n > 256) std::fill(x.begin() + 256, x.begin() + 512, 0.0f);  // a zero block
        std::vector<BlockQ8_K> y(size_t(n / QK_K));
        for (const cpu::KernelImpl *impl : impls()) {
            std::memset(y.data(), 0x55, y.size() * sizeof(BlockQ8_K));
            impl->table.quantize_row(TYPE_Q8_K, x.data(), y.data(), n);
            for (int64_t b = 0; b < n / QK_K; b++) {
                const float *xb = x.data() + b * QK_K;
                float amax = 0, max = 0;
                for (int j = 0; j < QK_K; j++)
                    if (std::fabs(xb[j]) > amax) amax = std::fabs(xb[j]), max = xb[j];
                const BlockQ8_K &q = y[size_t(b)];
                if (amax == 0) {
                    assert_true(q.d == 0.0f);
                    for (int j = 0; j < QK_K; j++) assert_int_equal(q.qs[j], 0);
                    for (int g = 0; g < 16; g++) assert_int_equal(q.bsums[g], 0);
                    continue;
                }
                const float iscale = -127.0f / max;
                assert_true(q.d == 1.0f / iscale);
                for (int j = 0; j < QK_K; j++) {
                    const float p = iscale * xb[j];
                    assert_int_equal(q.qs[j], std::min(127, int(std::nearbyint(p))));
                }
                for (int g = 0; g < 16; g++) {
                    int sum = 0;
                    for (int i = 0; i < 16; i++) sum += q.qs[16 * g + i];
                    assert_int_equal(q.bsums[g], sum);
                }
            }
        }
    }
    // ties to even; a positive max gives a negative d
    std::vector<float> x(QK_K, 0.0f);
    x[0] = -127.0f;  // iscale 1
    x[1] = 2.5f;
    x[2] = -3.5f;
    x[3] = 0.5f;
    for (const cpu::KernelImpl *impl : impls()) {
        BlockQ8_K b;
        impl->table.quantize_row(TYPE_Q8_K, x.data(), &b, QK_K);
        assert_int_equal(b.qs[0], -127);
        assert_int_equal(b.qs[1], 2);
        assert_int_equal(b.qs[2], -4);
        assert_int_equal(b.qs[3], 0);
        assert_true(b.d == 1.0f);
        assert_int_equal(b.bsums[0], -127 + 2 - 4);
        x[0] = 127.0f;
        impl->table.quantize_row(TYPE_Q8_K, x.data(), &b, QK_K);
        assert_int_equal(b.qs[0], -127);
        assert_int_equal(b.qs[1], -2);
        assert_int_equal(b.qs[2], 4);
        assert_true(b.d == -1.0f);
        x[0] = -127.0f;
    }
}

// dequantize_row of the five-bit and k-quant types against each value worked
// out here from the block layout (ggml-common.h's definitions). Every one of
// these values is a single rounding of an exact product or difference, so
// the float of the exact value (in double) is the expected bit pattern.
void test_dequantize_definitions(void **) {
    std::mt19937 rng(1234);
    for (uint32_t type : {TYPE_Q5_0, TYPE_Q5_1, TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K}) {
        const int64_t n = 4 * QK_K;
        const size_t bs = type_info(type)->block_bytes;
        std::vector<uint8_t> w(row_bytes(type, n));
        if (cpu::is_k_type(type)) {
            random_kquant_blocks(type, w.data(), n / QK_K, rng);
        } else {
            for (uint8_t &v : w) v = uint8_t(rng());
            for (int64_t b = 0; b < n / QK; b++) {  // finite, some negative and subnormal fp16 factors
                uint8_t *blk = w.data() + size_t(b) * bs;
                const uint16_t d = uint16_t(rng() % 0x7c00) | uint16_t(b % 3 == 0 ? 0x8000 : 0);
                const uint16_t m = uint16_t(rng() % 0x7c00) | uint16_t(b % 2 ? 0x8000 : 0);
                std::memcpy(blk, &d, 2);
                if (type == TYPE_Q5_1) std::memcpy(blk + 2, &m, 2);
            }
        }
        std::vector<float> got = dequant(type, w.data(), n);
        for (int64_t i = 0; i < n; i++) {
            const int64_t b = i / block_size(type);
            const int e = int(i % block_size(type));
            const uint8_t *blk = w.data() + size_t(b) * bs;
            auto h = [&](size_t off) { return double(fp16_to_fp32(uint16_t(blk[off] | blk[off + 1] << 8))); };
            double want;
            if (type == TYPE_Q5_0 || type == TYPE_Q5_1) {
                const size_t qh = type == TYPE_Q5_0 ? 2 : 4, qs = qh + 4;
                const int low = e < 16 ? blk[qs + e] & 15 : blk[qs + e - 16] >> 4;
                const int q = low + 16 * ((blk[qh + e / 8] >> (e % 8)) & 1);
                want = type == TYPE_Q5_0 ? (q - 16) * h(0) : q * h(0) + h(2);
            } else if (type == TYPE_Q6_K) {
                // value e: half e / 128; within it, quarter k and position l
                const int half = e / 128, k = (e % 128) / 32, l = e % 32;
                const uint8_t lowbyte = blk[64 * half + l + (k == 1 || k == 3 ? 32 : 0)];
                const int low = k < 2 ? lowbyte & 15 : lowbyte >> 4;
                const int high = (blk[128 + 32 * half + l] >> (2 * k)) & 3;
                const int8_t scale = int8_t(blk[192 + e / 16]);
                want = h(208) * scale * (low + 16 * high - 32);
            } else {
                const int j = e / 32, l = e % 32;  // sub-block, position
                const uint8_t *sc = blk + 4;
                const int scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) + 16 * (sc[j - 4] >> 6);
                const int mn = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) + 16 * (sc[j] >> 6);
                const size_t qs = type == TYPE_Q4_K ? 16 : 48;
                const uint8_t byte = blk[qs + 32 * (j / 2) + l];
                int q = j % 2 ? byte >> 4 : byte & 15;
                if (type == TYPE_Q5_K) q += 16 * ((blk[16 + l] >> j) & 1);
                want = h(0) * scale * q - h(2) * mn;
            }
            if (got[size_t(i)] != float(want)) {
                print_error("%s value %lld: %.9g, expected %.9g\n", type_info(type)->name, (long long)i,
                            double(got[size_t(i)]), want);
                fail();
            }
        }
    }
}

// llama.cpp's own results (tests/data/kquant-dots.txt, recorded from its x86
// CPU build; inputs re-created by ggml_ref_cases.h): every implementation
// must quantize the activations to the same bytes, and the scalar and x86
// ones must give the same bits from vec_dot and from matmul. The records of
// one type and length make a matrix (rows: their weights, tokens: their
// activations) whose diagonal is recorded, so the multi-row, multi-token
// tiles are checked too.
void test_ggml_recorded_dots(void **) {
    const std::string path = std::string(KVFIT_SOURCE_DIR) + "/tests/data/kquant-dots.txt";
    FILE *f = std::fopen(path.c_str(), "r");
    if (!f) {
        print_error("cannot open %s\n", path.c_str());
        fail();
    }
    struct Rec {
        int kind;
        uint64_t seed;
        uint32_t bits;
        uint64_t hash;
    };
    std::map<std::pair<uint32_t, int64_t>, std::vector<Rec>> groups;
    char line[256];
    int n_records = 0;
    while (std::fgets(line, sizeof line, f)) {
        char name[16];
        int kind;
        long long n;
        unsigned long long seed, hash;
        unsigned bits;
        if (line[0] == '#' || std::sscanf(line, "dot %15s %d %lld %llu %x %llx", name, &kind, &n, &seed, &bits, &hash) != 6)
            continue;
        uint32_t type = 0;
        while (type < 64 && !(type_info(type) && std::strcmp(type_info(type)->name, name) == 0)) type++;
        assert_true(type < 64);
        groups[{type, int64_t(n)}].push_back(Rec{kind, seed, bits, hash});
        n_records++;
    }
    std::fclose(f);
    assert_true(n_records >= 100);
    for (const auto &g : groups) {
        const uint32_t wt = g.first.first, xt = vec_dot_type(wt);
        const int64_t n = g.first.second;
        const std::vector<Rec> &recs = g.second;
        const int64_t m = int64_t(recs.size());
        const size_t rb = row_bytes(wt, n);
        std::vector<uint8_t> W;
        std::vector<float> X;
        for (const Rec &r : recs) {
            const std::vector<uint8_t> w = ggml_ref::weights(wt, r.kind, n, r.seed);
            const std::vector<float> x = ggml_ref::activations(r.kind, n, r.seed);
            W.insert(W.end(), w.begin(), w.end());
            X.insert(X.end(), x.begin(), x.end());
        }
        for (const cpu::KernelImpl *impl : impls()) {
            const bool exact = std::strcmp(impl->table.name, "neon") != 0;
            for (int64_t i = 0; i < m; i++) {
                const Rec &r = recs[size_t(i)];
                std::vector<uint8_t> xq(row_bytes(xt, n));
                impl->table.quantize_row(xt, X.data() + i * n, xq.data(), n);
                const float want = ggml_ref::from_bits(r.bits);
                const float got = impl->table.vec_dot(wt, n, W.data() + size_t(i) * rb, xq.data());
                const double tol = dot_tolerance(wt, n, W.data() + size_t(i) * rb, xq.data());
                if (ggml_ref::fnv1a(xq.data(), xq.size()) != r.hash || (exact && got != want) ||
                    std::fabs(double(got) - double(want)) > tol) {
                    print_error("%s %s kind %d n %lld seed %llu: vec_dot %.9g, llama.cpp %.9g%s\n", impl->table.name,
                                type_info(wt)->name, r.kind, (long long)n, (unsigned long long)r.seed, double(got),
                                double(want),
                                ggml_ref::fnv1a(xq.data(), xq.size()) != r.hash ? " (activations differ)" : "");
                    fail();
                }
            }
            for (int nth : {1, 2}) {
                ThreadPool pool(nth);
                std::vector<float> Y(size_t(m * m));
                std::vector<uint8_t> scratch(matmul_scratch_bytes(wt, n, m));
                matmul(pool, impl->table, wt, W.data(), rb, m, n, X.data(), m, Y.data(), m, scratch.data());
                for (int64_t i = 0; i < m; i++) {
                    const float want = ggml_ref::from_bits(recs[size_t(i)].bits), got = Y[size_t(i * m + i)];
                    if (exact ? got != want : !(std::fabs(double(got) - double(want)) <= 1e-5 * (1.0 + std::fabs(want)))) {
                        print_error("%s matmul %s n %lld record %lld, %d threads: %.9g, llama.cpp %.9g\n",
                                    impl->table.name, type_info(wt)->name, (long long)n, (long long)i, nth, double(got),
                                    double(want));
                        fail();
                    }
                }
            }
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
    const int64_t sizes[] = {32, 64, 96, 160, 256, 512, 576, 1536, 2080, 2304, 16384};
    for (uint32_t wt : kWeightTypes) {
        const uint32_t xt = vec_dot_type(wt);
        for (int64_t n : sizes) {
            if (n % block_size(wt)) continue;
            std::vector<uint8_t> w = make_weights(wt, 1, n, uint32_t(n * 31 + wt));
            std::vector<float> x = random_floats(size_t(n), uint32_t(n + 5));
            const size_t xbytes = act_bytes(wt, n);
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
            const int xbs = xt == TYPE_Q8_K ? QK_K : QK;
            for (int64_t b = 0; b < n / xbs; b++) {
                double amax = 0, wsum = 0;
                for (int64_t i = b * xbs; i < std::min<int64_t>(n, (b + 1) * xbs); i++) {
                    amax = std::max(amax, double(std::fabs(x[size_t(i)])));
                    wsum += std::fabs(wf[size_t(i)]);
                }
                werr += wsum * (xt == TYPE_Q8_0 || xt == TYPE_Q8_1 || xt == TYPE_Q8_K ? 0.57 * amax / 127
                                : xt == TYPE_BF16                  ? amax / 256
                                : xt == TYPE_F16                   ? amax / 2048
                                                                   : 0.0);
            }
            assert_true(std::fabs(ref - exact) <= werr + tol);
            for (const cpu::KernelImpl *impl : impls()) {
                const float got = impl->table.vec_dot(wt, n, w.data(), xq.data());
                const bool exact = exact_type(wt) && std::strcmp(impl->table.name, "neon") != 0;
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
    const Shape shapes[] = {{1, 32, 1},    {37, 96, 1},    {64, 576, 1},  {576, 1536, 1}, {13, 160, 3},
                            {130, 160, 7}, {256, 576, 33}, {50, 64, 130}, {9, 2080, 5},   {200, 96, 67},
                            // multiples of 256 for the k-quants (and odd super-block counts)
                            {1, 256, 1},   {37, 768, 1},   {13, 512, 3},  {130, 256, 7},  {50, 256, 130},
                            {9, 2304, 5},  {70, 1280, 67}};
    // Under emulation (tests/cross_aarch64.sh: qemu-user runs a hundred times
    // slower) every type and kernel set still runs, on the shapes that cover
    // one token, a few, an odd count of blocks and both block sizes.
    const bool emulated = getenv("KVFIT_TEST_EMULATED") != nullptr;
    const std::set<size_t> emulated_shapes = {0, 4, 8, 12, 15};
    for (uint32_t wt : kWeightTypes) {
        const uint32_t xt = vec_dot_type(wt);
        for (const Shape &s : shapes) {
            if (emulated && !emulated_shapes.count(size_t(&s - shapes))) continue;
            if (s.cols % block_size(wt)) continue;
            const size_t rb = row_bytes(wt, s.cols);
            std::vector<uint8_t> W = make_weights(wt, s.rows, s.cols, uint32_t(s.rows * 7 + s.cols + wt));
            std::vector<float> X = random_floats(size_t(s.cols * s.tokens), uint32_t(s.tokens * 3 + s.cols));
            // Reference per (token, row): scalar vec_dot and the float loop.
            const size_t xb = act_bytes(wt, s.cols);
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
                                               (exact_type(wt) && std::strcmp(impl->table.name, "neon") != 0);
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
    const int64_t rows = 96, tokens = 9;
    ThreadPool pool(2);
    for (uint32_t wt : kWeightTypes) {
        const int64_t cols = cpu::is_k_type(wt) ? 768 : 576;
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


// Weights repacked in groups of four rows (repack.h) give the bits of the
// row-by-row kernels (and of the scalar reference) for every token count.
void test_matmul_repacked(void **) {
    if (!cpu::gemm_x4_avx512() || !impl_avx512_table()) {
        print_message("no AVX-512 VNNI: repacked kernels not tested\n");
        return;
    }
    struct Shape {
        int64_t rows, cols, tokens;
    };
    const Shape shapes[] = {{4, 32, 1}, {64, 576, 1}, {192, 576, 2}, {576, 1536, 1}, {40, 96, 3},
                            {132, 160, 7}, {256, 576, 33}, {48, 64, 130}, {8, 2080, 5}};
    for (uint32_t wt : {uint32_t(TYPE_Q4_1), uint32_t(TYPE_Q8_0)}) {
        for (const Shape &s : shapes) {
            assert_true(cpu::x4_wanted(*impl_avx512_table(), wt, s.rows, s.cols));
            const size_t rb = row_bytes(wt, s.cols);
            std::vector<uint8_t> W = make_weights(wt, s.rows, s.cols, uint32_t(s.rows * 5 + s.cols + wt));
            std::vector<uint8_t> W4(cpu::x4_bytes(wt, s.rows, s.cols));
            cpu::x4_repack(wt, W.data(), rb, s.rows, s.cols, W4.data());
            std::vector<float> X = random_floats(size_t(s.cols * s.tokens), uint32_t(s.tokens * 11 + s.cols));
            for (int nth : {1, 3}) {
                ThreadPool pool(nth);
                const int64_t ldy = s.rows + 5;
                std::vector<float> ref(size_t(ldy * s.tokens), -1.0f), got(ref.size(), -1.0f);
                std::vector<uint8_t> scratch(matmul_scratch_bytes(wt, s.cols, s.tokens) + 1);
                matmul(pool, kernels_scalar(), wt, W.data(), rb, s.rows, s.cols, X.data(), s.tokens, ref.data(), ldy,
                       scratch.data() + 1);
                matmul_x4(pool, *impl_avx512_table(), wt, W4.data(), s.rows, s.cols, X.data(), s.tokens, got.data(),
                          ldy, scratch.data() + 1);
                for (size_t i = 0; i < ref.size(); i++)
                    if (std::memcmp(&ref[i], &got[i], 4) != 0) {
                        print_error("repacked %s %lldx%lld tokens=%lld threads=%d [%zu]: %.9g, scalar %.9g\n",
                                    type_info(wt)->name, (long long)s.rows, (long long)s.cols, (long long)s.tokens,
                                    nth, i, double(got[i]), double(ref[i]));
                        fail();
                    }
            }
        }
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

// exp of NaN is NaN, with no float-to-int conversion of the NaN on the way
// (undefined behaviour; found by fuzzing session states whose cache held NaN).
static void test_exp_ggml_nan(void **) {
    assert_true(std::isnan(kvfit::cpu::exp_ggml(NAN)));
    assert_true(std::isnan(kvfit::cpu::exp_ggml(-NAN)));
    assert_true(kvfit::cpu::exp_ggml(INFINITY) == INFINITY);
    assert_true(kvfit::cpu::exp_ggml(-INFINITY) == 0.0f);
    std::vector<float> x(37, 0.5f), out(37);
    x[3] = NAN;
    x[36] = NAN;
    kvfit::cpu::exp_ggml_n(x.data(), int(x.size()), out.data());
    assert_true(std::isnan(out[3]) && std::isnan(out[36]));
    assert_true(out[0] == kvfit::cpu::exp_ggml(0.5f));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exp_ggml_nan),
        cmocka_unit_test(test_vec_dot_type),
        cmocka_unit_test(test_quantize_roundtrip),
        cmocka_unit_test(test_quantize_matches_scalar),
        cmocka_unit_test(test_quantize_ties),
        cmocka_unit_test(test_quantize_q8_K_definition),
        cmocka_unit_test(test_dequantize_definitions),
        cmocka_unit_test(test_vec_dot_all),
        cmocka_unit_test(test_vec_dot_float_odd_lengths),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_matmul_best_matches_scalar),
        cmocka_unit_test(test_matmul_repacked),
        cmocka_unit_test(test_ggml_recorded_dots),
        cmocka_unit_test(test_ggml_order_ops),
        cmocka_unit_test(test_split_range),
        cmocka_unit_test(test_threadpool),
        cmocka_unit_test(test_threadpool_lifecycle),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
