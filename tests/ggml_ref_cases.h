// Inputs of the recorded llama.cpp results in tests/data/kquant-dots.txt: weight
// rows and activation rows made from a seed by a fixed integer generator, so
// that the test re-creates exactly the inputs the file's results were
// computed from (no std:: distributions, whose output may differ between
// standard libraries).
//
// A case is (weight type, kind, n, seed). Kinds:
//   0 typical: activations roughly normal with a few outliers and zeros,
//     weights with the scale factors of a real model;
//   1 wide: activations and fp16 factors over a wide range of magnitudes
//     (fp16 subnormals to 2^15, activations 2^-20 to 2^8: larger ones would
//     overflow Q8_1's fp16 sums), both signs;
//   2 ties: activations that are multiples of 1/2 in blocks whose first value
//     is +-127, so the activation quantizers meet exact halves;
//   3 sparse: mostly zero activations, whole zero blocks, float subnormals,
//     subnormal fp16 factors.
// Weight codes, scales and minimums are random bytes in every kind (every
// bit pattern is a valid block).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gguf/ggml_types.h"

namespace ggml_ref {

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull) {}
    uint64_t next() {  // splitmix64
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float unit() { return float(next() >> 40) * (1.0f / 16777216.0f); }  // [0, 1), exact
    uint32_t below(uint32_t n) { return uint32_t(next() % n); }
};

inline float from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// n activations of the given kind.
inline std::vector<float> activations(int kind, int64_t n, uint64_t seed) {
    Rng r(seed * 2 + 1);
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i++) {
        float v;
        switch (kind) {
            case 0:
                v = (r.unit() + r.unit() + r.unit() + r.unit() - 2.0f) * 1.7f;
                if (r.below(64) == 0) v *= 30.0f;
                if (r.below(50) == 0) v = 0.0f;
                break;
            case 1: {
                // sign, exponent 2^-20 .. 2^8, 23 random mantissa bits
                const uint32_t e = 127 - 20 + r.below(29);
                v = from_bits(uint32_t(r.below(2)) << 31 | e << 23 | uint32_t(r.next() & 0x7fffff));
                break;
            }
            case 2:
                v = (i % 32 == 0) ? (r.below(2) ? 127.0f : -127.0f) : float(int(r.below(509)) - 254) * 0.5f;
                break;
            default: {
                const uint32_t k = r.below(16);
                if ((i / 256) % 3 == 1 || k < 10) v = 0.0f;                                       // zero blocks, zeros
                else if (k < 12) v = from_bits(uint32_t(r.below(2)) << 31 | (r.below(0x7fffff) + 1));  // subnormal
                else if (k < 14) v = (r.unit() - 0.5f) * 1e-30f;
                else v = r.unit() - 0.5f;
                break;
            }
        }
        x[size_t(i)] = v;
    }
    return x;
}

inline uint16_t fp16_factor(int kind, Rng &r, float typical) {
    switch (kind) {
        case 1: return uint16_t(r.below(0x7c00) | (r.below(2) << 15));  // any finite fp16
        case 3: return uint16_t(r.below(0x400) | (r.below(2) << 15));   // subnormal
        default: return kvfit::fp32_to_fp16(typical * (0.5f + r.unit()));
    }
}

// One weight row of n values of `type` (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
inline std::vector<uint8_t> weights(uint32_t type, int kind, int64_t n, uint64_t seed) {
    using namespace kvfit;
    Rng r(seed * 2);
    const TypeInfo *ti = type_info(type);
    std::vector<uint8_t> w(row_bytes(type, n));
    for (uint8_t &b : w) b = uint8_t(r.next() >> 56);
    for (int64_t b = 0; b < n / ti->block_size; b++) {
        uint8_t *blk = w.data() + size_t(b) * ti->block_bytes;
        uint16_t d, m;
        switch (type) {
            case TYPE_Q5_0:
                d = fp16_factor(kind, r, r.below(2) ? 3e-3f : -3e-3f);
                std::memcpy(blk, &d, 2);
                break;
            case TYPE_Q5_1:
                d = fp16_factor(kind, r, 3e-3f);
                m = fp16_factor(kind, r, -0.05f);
                std::memcpy(blk, &d, 2);
                std::memcpy(blk + 2, &m, 2);
                break;
            case TYPE_Q6_K:
                d = fp16_factor(kind, r, 1.2e-5f);
                std::memcpy(blk + offsetof(BlockQ6_K, d), &d, 2);
                break;
            default:  // Q4_K, Q5_K
                d = fp16_factor(kind, r, 1e-4f);
                m = fp16_factor(kind, r, 8e-4f);
                std::memcpy(blk, &d, 2);
                std::memcpy(blk + 2, &m, 2);
                break;
        }
    }
    return w;
}

// FNV-1a of a byte range: the recorded fingerprint of quantized activations.
inline uint64_t fnv1a(const void *p, size_t n) {
    const uint8_t *b = static_cast<const uint8_t *>(p);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

}  // namespace ggml_ref
