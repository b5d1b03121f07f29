// Unit tests of the KV codecs (src/kv/codec.*): row sizes, round-trip error
// bounds per group, edge cases (zeros, constant groups, extremes), this
// machine's decoding against the documented layout, and the Hadamard
// rotation: orthonormality, structure, determinism, and that it lowers the Q4
// score error on keys with outliers.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"
#include "gguf/ggml_types.h"
#include "kv/codec.h"

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

const KVCodec kCodecs[] = {KVCodec::F16, KVCodec::Q8, KVCodec::Q4};

// Small deterministic generator (same numbers on every platform).
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 1) {}
    uint32_t next() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(s >> 32);
    }
    float uniform() { return float((next() >> 8) + 0.5) / 16777216.0f; }  // (0, 1)
    float normal() {
        const double u = uniform(), v = uniform();
        return float(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
    }
};

// Rows of different shapes: plain normal, shifted far from zero (Q4's
// minimum matters), a few outliers, and tiny magnitudes (fp16 subnormal scales).
std::vector<float> make_row(Rng &rng, int n, int kind) {
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) {
        const float g = rng.normal();
        switch (kind % 4) {
            case 0:
                x[i] = g;
                break;
            case 1:
                x[i] = 100.0f + 0.5f * g;
                break;
            case 2:
                x[i] = (rng.next() % 29 == 0) ? 40.0f * g : g;
                break;
            default:
                x[i] = 1e-6f * g;
                break;
        }
    }
    return x;
}

std::vector<uint8_t> encode(KVCodec c, const std::vector<float> &x) {
    std::vector<uint8_t> b(codec_row_bytes(c, int(x.size())));
    codec_encode(c, x.data(), b.data(), int(x.size()));
    return b;
}

std::vector<float> decode(KVCodec c, const uint8_t *b, int n) {
    std::vector<float> x(n);
    codec_decode(c, b, x.data(), n);
    return x;
}

float half_at(const uint8_t *p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

// Checks every value of a decoded row against the codec's bound, reading the
// stored scale (and minimum) of each group from the documented layout.
// tight: also check that the scale is not inflated beyond fp16 rounding.
void check_roundtrip(KVCodec c, const std::vector<float> &x, bool tight) {
    const int n = int(x.size());
    const std::vector<uint8_t> b = encode(c, x);
    const std::vector<float> y = decode(c, b.data(), n);
    for (int g = 0; g < n / 32; g++) {
        const float *xg = &x[32 * g];
        const float *yg = &y[32 * g];
        float mn = xg[0], mx = xg[0], amax = 0.0f;
        for (int i = 0; i < 32; i++) {
            mn = std::min(mn, xg[i]);
            mx = std::max(mx, xg[i]);
            amax = std::max(amax, std::fabs(xg[i]));
        }
        for (int i = 0; i < 32; i++) assert_true(std::isfinite(yg[i]));
        if (c == KVCodec::F16) {
            for (int i = 0; i < 32; i++) {
                const float err = std::fabs(xg[i] - yg[i]);
                // half an fp16 ulp, relative to the group's range; 2^-25 where fp16 is subnormal
                if (!(err <= 1e-3f * amax + 3e-8f)) {
                    fprintf(stderr, "F16 group %d value %d: %g -> %g\n", g, i, xg[i], yg[i]);
                    assert_true(false);
                }
            }
        } else if (c == KVCodec::Q8) {
            const float d = half_at(&b[34 * g]);
            if (tight) assert_true(d <= amax / 127.0f * (1.0f + 1.0f / 1024) + 6e-8f);
            for (int i = 0; i < 32; i++) {
                const float err = std::fabs(xg[i] - yg[i]);
                if (!(err <= 0.5f * d + 4 * FLT_EPSILON * std::fabs(xg[i]))) {
                    fprintf(stderr, "Q8 group %d value %d: %g -> %g (d %g)\n", g, i, xg[i], yg[i], d);
                    assert_true(false);
                }
            }
        } else {
            const float d = half_at(&b[20 * g]), m = half_at(&b[20 * g + 2]);
            assert_true(m <= mn);
            // m loses at most one fp16 ulp of |min| (2^-10 relative) when rounded down
            if (tight) assert_true(d <= ((mx - mn) + std::fabs(mn) / 1024) / 15.0f * (1.0f + 1.0f / 1024) + 6e-8f);
            for (int i = 0; i < 32; i++) {
                const float err = std::fabs(xg[i] - yg[i]);
                if (!(err <= 0.5f * d + 4 * FLT_EPSILON * (std::fabs(xg[i]) + std::fabs(m)))) {
                    fprintf(stderr, "Q4 group %d value %d: %g -> %g (d %g m %g)\n", g, i, xg[i], yg[i], d, m);
                    assert_true(false);
                }
            }
        }
    }
}

void test_row_bytes_and_names(void **) {
    for (int n : {32, 64, 96, 128, 256, 512}) {
        assert_int_equal(codec_row_bytes(KVCodec::F16, n), 2 * n);
        assert_int_equal(codec_row_bytes(KVCodec::Q8, n), n / 32 * 34);
        assert_int_equal(codec_row_bytes(KVCodec::Q4, n), n / 32 * 20);
    }
    assert_int_equal(codec_row_bytes(KVCodec::Q8, 64), 68);
    assert_int_equal(codec_row_bytes(KVCodec::Q4, 64), 40);
    assert_int_equal(codec_row_bytes(KVCodec::Q4, 48), 0);
    assert_int_equal(codec_row_bytes(KVCodec::F16, 0), 0);
    assert_int_equal(codec_row_bytes(KVCodec(7), 64), 0);
    assert_string_equal(codec_name(KVCodec::F16), "F16");
    assert_string_equal(codec_name(KVCodec::Q8), "Q8");
    assert_string_equal(codec_name(KVCodec::Q4), "Q4");
    assert_string_equal(codec_name(KVCodec(0)), "?");
    // Misuse is an internal error, not a silent partial row.
    float x[64] = {};
    uint8_t b[128];
    for (int bad_n : {0, 48, -32}) {
        bool threw = false;
        try {
            codec_encode(KVCodec::Q8, x, b, bad_n);
        } catch (const Error &e) {
            threw = e.status() == KVFIT_E_INTERNAL;
        }
        assert_true(threw);
    }
    bool threw = false;
    try {
        codec_decode(KVCodec(9), b, x, 64);
    } catch (const Error &e) {
        threw = e.status() == KVFIT_E_INTERNAL;
    }
    assert_true(threw);
}

void test_roundtrip_bounds(void **) {
    Rng rng(1);
    for (KVCodec c : kCodecs)
        for (int n : {32, 64, 128, 256})
            for (int kind = 0; kind < 40; kind++) check_roundtrip(c, make_row(rng, n, kind), true);
}

// Q8 and Q4 codes are as documented: Q8 x = q*d, Q4 nibble j low / j+16 high.
void test_layout(void **) {
    std::vector<float> x(32);
    for (int i = 0; i < 32; i++) x[i] = float(i % 16);  // 0..15 twice: m = 0, d = 1
    std::vector<uint8_t> b = encode(KVCodec::Q4, x);
    assert_float_equal(half_at(&b[0]), 1.0f, 0.0f);
    assert_float_equal(half_at(&b[2]), 0.0f, 0.0f);
    for (int j = 0; j < 16; j++) assert_int_equal(b[4 + j], j | j << 4);

    for (int i = 0; i < 32; i++) x[i] = float(i - 16);
    x[0] = -127.0f;
    b = encode(KVCodec::Q8, x);
    assert_float_equal(half_at(&b[0]), 1.0f, 0.0f);
    assert_int_equal(int8_t(b[2]), -127);
    for (int i = 1; i < 32; i++) assert_int_equal(int8_t(b[2 + i]), i - 16);
}

void test_edge_cases(void **) {
    const int n = 64;
    std::vector<std::vector<float>> rows;
    rows.push_back(std::vector<float>(n, 0.0f));
    for (float c : {0.1f, -3.7f, 1e4f, -1e4f, 65504.0f, -65504.0f, 1e-6f, 3e-9f, 7.0f})
        rows.push_back(std::vector<float>(n, c));
    {
        std::vector<float> x(n, 0.0f);  // one spike per group
        x[3] = 1e4f;
        x[40] = -1e4f;
        rows.push_back(x);
    }
    {
        std::vector<float> x(n);  // alternating extremes and tiny values
        for (int i = 0; i < n; i++) x[i] = (i % 3 == 0) ? ((i & 1) ? 1e4f : -1e4f) : 1e-7f * float(i);
        rows.push_back(x);
    }
    {
        std::vector<float> x(n);  // large offset, small spread
        for (int i = 0; i < n; i++) x[i] = 1000.0f + 0.01f * float(i % 7);
        rows.push_back(x);
    }
    {
        std::vector<float> x(n, 0.0f);  // -0 and float subnormals
        for (int i = 0; i < n; i++) x[i] = (i & 1) ? -0.0f : 1e-40f * float(i);
        rows.push_back(x);
    }
    for (KVCodec c : kCodecs)
        for (const auto &x : rows) check_roundtrip(c, x, false);

    // Zeros decode to exact zeros.
    for (KVCodec c : kCodecs) {
        const std::vector<float> y = decode(c, encode(c, rows[0]).data(), n);
        for (float v : y) assert_true(v == 0.0f);
    }
    // Beyond fp16's range: saturated, but never inf or NaN.
    std::vector<float> big(n);
    for (int i = 0; i < n; i++)
        big[i] = (i % 4 == 0) ? FLT_MAX : (i % 4 == 1) ? -FLT_MAX : (i % 4 == 2) ? 1e30f : -3e5f;
    for (KVCodec c : kCodecs) {
        const std::vector<float> y = decode(c, encode(c, big).data(), n);
        for (float v : y) assert_true(std::isfinite(v));
    }
    std::vector<float> allbig(n, -FLT_MAX);
    for (KVCodec c : kCodecs)
        for (float v : decode(c, encode(c, allbig).data(), n)) assert_true(std::isfinite(v) && v < 0);
}

// Decoding (this machine's path: AVX2 where the CPU has it) gives what the
// layout says of any bytes with finite scales: F16 the halfs, Q8 q*d, Q4
// q*d + m (to float rounding: the paths may or may not fuse the multiply-add),
// for every head size and rows at odd addresses, as the cache stores them.
void test_decode_matches_layout(void **) {
    Rng rng(2);
    // a random finite half of either sign, not too large, so that q*d + m stays finite
    auto random_half = [&rng]() {
        uint16_t h;
        do h = uint16_t(rng.next());
        while ((h & 0x7c00) >= 0x6000);  // exponent below 2^9
        return h;
    };
    for (KVCodec c : kCodecs) {
        for (int n : {32, 64, 96, 128, 160, 256, 512}) {
            const size_t rb = codec_row_bytes(c, n);
            std::vector<uint8_t> buf(rb + 1);
            uint8_t *row = buf.data() + 1;
            for (int t = 0; t < 20; t++) {
                for (size_t i = 0; i < rb; i++) row[i] = uint8_t(rng.next());
                const int gb = c == KVCodec::F16 ? 64 : int(codec_row_bytes(c, 32));
                for (int g = 0; g < n / 32; g++) {
                    uint8_t *p = row + g * gb;
                    if (c == KVCodec::F16) {
                        for (int i = 0; i < 32; i++) {
                            const uint16_t h = random_half();
                            std::memcpy(p + 2 * i, &h, 2);
                        }
                    } else {
                        const uint16_t d = random_half(), m = random_half();
                        std::memcpy(p, &d, 2);
                        if (c == KVCodec::Q4) std::memcpy(p + 2, &m, 2);
                    }
                }
                const std::vector<float> got = decode(c, row, n);
                for (int i = 0; i < n; i++) {
                    const uint8_t *p = row + (i / 32) * gb;
                    const int j = i % 32;
                    if (c == KVCodec::F16) {
                        assert_true(got[i] == half_at(p + 2 * j));
                    } else if (c == KVCodec::Q8) {
                        assert_true(got[i] == float(int8_t(p[2 + j])) * half_at(p));
                    } else {
                        const int q = j < 16 ? (p[4 + j] & 0x0f) : (p[4 + j - 16] >> 4);
                        const double d = half_at(p), m = half_at(p + 2), want = q * d + m;
                        const double tol = 1.2e-7 * (std::fabs(q * d) + std::fabs(m)) + 1e-45;
                        if (!(std::fabs(got[i] - want) <= tol)) {
                            fprintf(stderr, "Q4 n=%d value %d: %.9g, want %.9g\n", n, i, got[i], want);
                            fail();
                        }
                    }
                }
            }
        }
    }
}

void test_hadamard_orthonormal(void **) {
    Rng rng(4);
    for (int n = 1; n <= 512; n *= 2) {
        std::vector<float> a(n), b(n);
        for (int i = 0; i < n; i++) {
            a[i] = rng.normal();
            b[i] = rng.normal() + (i == n / 2 ? 30.0f : 0.0f);
        }
        std::vector<float> ra = a, rb = b;
        hadamard_rotate(ra.data(), n);
        hadamard_rotate(rb.data(), n);
        double dab = 0, drab = 0, naa = 0, nraa = 0, scale = 0;
        for (int i = 0; i < n; i++) {
            dab += double(a[i]) * b[i];
            drab += double(ra[i]) * rb[i];
            naa += double(a[i]) * a[i];
            nraa += double(ra[i]) * ra[i];
            scale += std::fabs(double(a[i]) * b[i]);
        }
        assert_true(std::fabs(nraa - naa) <= 1e-5 * naa);
        assert_true(std::fabs(drab - dab) <= 1e-5 * std::sqrt(naa * scale) + 1e-5 * scale);
        // the inverse undoes it
        hadamard_rotate_inv(ra.data(), n);
        for (int i = 0; i < n; i++) assert_true(std::fabs(ra[i] - a[i]) <= 1e-5f * (1.0f + std::fabs(a[i])));
    }
    // not a power of two, or too large: an internal error, not memory corruption
    float x[1024] = {};
    for (int bad : {0, 3, 48, 1024}) {
        bool threw = false;
        try {
            hadamard_rotate(x, bad);
        } catch (const Error &e) {
            threw = e.status() == KVFIT_E_INTERNAL;
        }
        assert_true(threw);
    }
}

// R e_j = s_j * H[:, j] / sqrt(n) with H[i][j] = (-1)^popcount(i & j): the fast
// transform is exactly the Sylvester Hadamard matrix times fixed +-1 signs.
void test_hadamard_structure(void **) {
    for (int n : {2, 8, 64, 256}) {
        const float inv = 1.0f / std::sqrt(float(n));
        int plus = 0;
        for (int j = 0; j < n; j++) {
            std::vector<float> e(n, 0.0f);
            e[j] = 1.0f;
            hadamard_rotate(e.data(), n);
            const float s = e[0] > 0 ? 1.0f : -1.0f;
            plus += s > 0;
            for (int i = 0; i < n; i++) {
                const float h = (__builtin_popcount(unsigned(i & j)) & 1) ? -1.0f : 1.0f;
                assert_true(std::fabs(e[i] - s * h * inv) <= 1e-6f);
            }
        }
        if (n >= 64) assert_true(plus > n / 4 && plus < 3 * n / 4);  // random-looking signs
    }
}

// Fixed output for n = 64 on every platform and build: the rotation is part
// of what a stored key means. Integer input keeps every intermediate exact
// (multiples of 1/8), so the values are compared exactly.
void test_hadamard_determinism(void **) {
    std::vector<float> x(64);
    for (int i = 0; i < 64; i++) x[i] = float(i + 1) * (i % 3 == 0 ? -1.0f : 1.0f);
    std::vector<float> y = x;
    hadamard_rotate(y.data(), 64);
    const float expected[8] = {-8.0f, 3.0f, 13.5f, 40.5f, 34.0f, 79.0f, 17.5f, -49.5f};
    for (int i = 0; i < 8; i++) {
        if (y[i] != expected[i]) {
            fprintf(stderr, "hadamard[%d] = %.6f, expected %.6f\n", i, y[i], expected[i]);
            assert_true(false);
        }
    }
    std::vector<float> z = x;
    hadamard_rotate(z.data(), 64);
    assert_memory_equal(y.data(), z.data(), 64 * sizeof(float));

    // The signs themselves (first entry of R e_j is s_j / 8): bit j set where s_j = -1.
    uint64_t neg = 0;
    for (int j = 0; j < 64; j++) {
        std::vector<float> e(64, 0.0f);
        e[j] = 1.0f;
        hadamard_rotate(e.data(), 64);
        if (e[0] < 0) neg |= uint64_t(1) << j;
    }
    assert_int_equal(neg, 0xeab360d0766f7ff1ull);
}

// The score of a query against a stored Q4 key.
double dot_decoded(const uint8_t *key, const std::vector<float> &q, int n) {
    const std::vector<float> k = decode(KVCodec::Q4, key, n);
    double s = 0;
    for (int i = 0; i < n; i++) s += double(k[i]) * q[i];
    return s;
}

// Keys with a few large channels (as real pre-RoPE keys have): Q4 spends its
// 16 levels on the outliers' range and the other channels round to mush.
// Rotating keys and query first spreads the outliers over all channels, so
// the same Q4 bytes give clearly better scores.
void test_hadamard_helps_q4_outliers(void **) {
    const int n = 64, n_keys = 256, n_q = 16;
    Rng rng(5);
    std::vector<std::vector<float>> keys(n_keys), queries(n_q);
    for (auto &k : keys) {
        k.resize(n);
        for (int i = 0; i < n; i++) k[i] = rng.normal();
        k[7] += 12.0f;
        k[20] -= 10.0f;
        k[45] += 8.0f;
    }
    for (auto &q : queries) {
        q.resize(n);
        for (float &v : q) v = rng.normal();
    }
    double se_plain = 0, se_rot = 0;
    std::vector<uint8_t> b(codec_row_bytes(KVCodec::Q4, n));
    for (const auto &k : keys) {
        std::vector<float> rk = k;
        hadamard_rotate(rk.data(), n);
        std::vector<uint8_t> bp(b.size()), br(b.size());
        codec_encode(KVCodec::Q4, k.data(), bp.data(), n);
        codec_encode(KVCodec::Q4, rk.data(), br.data(), n);
        for (const auto &q : queries) {
            std::vector<float> rq = q;
            hadamard_rotate(rq.data(), n);
            double exact = 0;
            for (int i = 0; i < n; i++) exact += double(k[i]) * q[i];
            const double ep = dot_decoded(bp.data(), q, n) - exact;
            const double er = dot_decoded(br.data(), rq, n) - exact;
            se_plain += ep * ep;
            se_rot += er * er;
        }
    }
    const double rms_plain = std::sqrt(se_plain / (n_keys * n_q)), rms_rot = std::sqrt(se_rot / (n_keys * n_q));
    fprintf(stderr, "Q4 score rms error: plain %.4f, rotated %.4f\n", rms_plain, rms_rot);
    // about 0.57 with these numbers (0.98 without outliers, where it neither helps nor hurts)
    assert_true(rms_rot < 0.75 * rms_plain);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_bytes_and_names),
        cmocka_unit_test(test_roundtrip_bounds),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_decode_matches_layout),
        cmocka_unit_test(test_hadamard_orthonormal),
        cmocka_unit_test(test_hadamard_structure),
        cmocka_unit_test(test_hadamard_determinism),
        cmocka_unit_test(test_hadamard_helps_q4_outliers),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
