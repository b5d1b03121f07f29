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
    TYPE_Q8_0 = 8,
    TYPE_Q8_1 = 9,  // activations only (the partner of Q4_1 in dot products)
    TYPE_BF16 = 30,
};

constexpr int QK = 32;  // values per block of every block-quantized type here

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
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block");
static_assert(sizeof(BlockQ8_1) == 36, "Q8_1 block");

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

// Scalar reference conversions of one row of n elements (n multiple of QK for
// block types). dequantize_row works for every supported weight type.
void dequantize_row(uint32_t type, const void *src, float *dst, int64_t n);
void quantize_row_q8_0_ref(const float *x, BlockQ8_0 *y, int64_t n);
void quantize_row_q8_1_ref(const float *x, BlockQ8_1 *y, int64_t n);
void quantize_row_q4_0_ref(const float *x, BlockQ4_0 *y, int64_t n);
void quantize_row_q4_1_ref(const float *x, BlockQ4_1 *y, int64_t n);

}  // namespace kvfit
