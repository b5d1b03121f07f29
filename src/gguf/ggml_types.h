// Tensor element types as numbered in GGUF files (the ggml type ids), their
// block layouts, and scalar conversions. The block structs match the bytes in
// the file exactly; SIMD kernels live in src/backend/cpu/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvfit {

enum GgmlType : uint32_t {
    TYPE_F32 = 0,
    TYPE_F16 = 1,
    TYPE_Q4_0 = 2,
    TYPE_Q4_1 = 3,
    TYPE_Q5_0 = 6,
    TYPE_Q5_1 = 7,
    TYPE_Q8_0 = 8,
    TYPE_Q8_1 = 9,  // activations only (the partner of Q4_1 and Q5_1 in dot products)
    TYPE_Q4_K = 12,
    TYPE_Q5_K = 13,
    TYPE_Q6_K = 14,
    TYPE_Q8_K = 15,  // activations only (the partner of the k-quants)
    TYPE_BF16 = 30,
};

constexpr int QK = 32;     // values per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1
constexpr int QK_K = 256;  // values per super-block of the k-quants (Q4_K, Q5_K, Q6_K, Q8_K)

struct BlockQ4_0 {
    uint16_t d;           // fp16 scale
    uint8_t qs[QK / 2];   // low nibbles: values 0..15, high nibbles: 16..31; x = (q - 8) * d
};
struct BlockQ4_1 {
    uint16_t d;           // fp16 scale
    uint16_t m;           // fp16 minimum; x = q * d + m
    uint8_t qs[QK / 2];
};
struct BlockQ8_0 {
    uint16_t d;           // fp16 scale; x = q * d
    int8_t qs[QK];
};
struct BlockQ8_1 {
    uint16_t d;           // fp16 scale
    uint16_t s;           // fp16 of d * sum(qs)
    int8_t qs[QK];
};
// Five-bit types: the low four bits as in Q4_0/Q4_1, the fifth bit of value j
// in bit j of qh (read as a little-endian 32-bit word).
struct BlockQ5_0 {
    uint16_t d;          // fp16 scale; x = (q - 16) * d
    uint8_t qh[4];
    uint8_t qs[QK / 2];  // low nibbles: values 0..15, high nibbles: 16..31
};
struct BlockQ5_1 {
    uint16_t d;  // fp16 scale
    uint16_t m;  // fp16 minimum; x = q * d + m
    uint8_t qh[4];
    uint8_t qs[QK / 2];
};

// k-quants: a super-block of 256 values in sub-blocks, each with its own
// small integer scale (and, for Q4_K/Q5_K, minimum) relative to fp16
// super-block factors.
//
// Q4_K / Q5_K: 8 sub-blocks of 32. Sub-block j has a 6-bit scale sc_j and a
// 6-bit minimum m_j packed into `scales` (see kquant_scale_min) and value
// x = d * sc_j * q - dmin * m_j. The 4-bit codes: qs[32 p + l] holds value l
// of sub-block 2p in its low nibble and value l of sub-block 2p + 1 in its
// high nibble (p = 0..3, l = 0..31). Q5_K's fifth bit of value l of
// sub-block j is bit j of qh[l].
struct BlockQ4_K {
    uint16_t d;     // fp16 factor of the scales
    uint16_t dmin;  // fp16 factor of the minimums
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
};
struct BlockQ5_K {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
};
// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; x = d * scales[e / 16]
// * (q - 32), q in 0..63. Per half h = 0, 1 of the super-block (128 values,
// ql + 64 h, qh + 32 h), value e = 32 k + l (k = 0..3, l = 0..31) has its low
// four bits in the low (k = 0, 1) or high (k = 2, 3) nibble of ql[l + 32 (k & 1)]
// and its high two bits in bits 2k, 2k + 1 of qh[l].
struct BlockQ6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;  // fp16
};
// Q8_K (activations): x = d * qs; bsums[i] = the sum of qs[16 i .. 16 i + 15].
struct BlockQ8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block");
static_assert(sizeof(BlockQ8_1) == 36, "Q8_1 block");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block");
static_assert(sizeof(BlockQ5_K) == 176, "Q5_K block");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block");
static_assert(sizeof(BlockQ8_K) == 292, "Q8_K block");

// The 6-bit scale and minimum of sub-block j (0..7) of a Q4_K / Q5_K block:
// sub-blocks 0..3 in the low 6 bits of bytes j and j + 4; sub-blocks 4..7 in
// the nibbles of byte j + 4 with their top two bits in the top bits of bytes
// j - 4 (scale) and j (minimum).
inline void kquant_scale_min(const uint8_t *scales, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = scales[j] & 63;
        *m = scales[j + 4] & 63;
    } else {
        *sc = (scales[j + 4] & 0x0f) | (scales[j - 4] >> 6) << 4;
        *m = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4;
    }
}

struct TypeInfo {
    const char *name;
    int block_size;      // elements per block (1 for plain floats)
    size_t block_bytes;  // bytes per block
    bool supported;      // kvfit can compute with this type as a weight
};

// nullptr for ids kvfit does not know at all.
const TypeInfo *type_info(uint32_t type);

// Bytes of a row of n elements; n must be a multiple of the block size.
size_t row_bytes(uint32_t type, int64_t n);

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
inline float bf16_to_fp32(uint16_t h) {
    union { uint32_t u; float f; } v;
    v.u = uint32_t(h) << 16;
    return v.f;
}
uint16_t fp32_to_bf16(float f);  // round to nearest even, NaN kept quiet

// Scalar reference conversions of one row of n elements (n a multiple of the
// type's block size). dequantize_row works for every supported weight type
// and gives the bits of ggml's dequantize_row_* (the conversion llama.cpp's
// CPU get_rows uses).
void dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
void quantize_row_q8_0_ref(const float *x, BlockQ8_0 *y, int64_t n);
void quantize_row_q8_1_ref(const float *x, BlockQ8_1 *y, int64_t n);
void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n);
void quantize_row_q4_1_ref(const float *x, BlockQ4_1 *y, int64_t n);
void quantize_row_q5_0_ref(const float *x, BlockQ5_0 *y, int64_t n);
void quantize_row_q5_1_ref(const float *x, BlockQ5_1 *y, int64_t n);

}  // namespace kvfit
