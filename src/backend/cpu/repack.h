// Weights repacked at load for the AVX-512 VNNI matrix kernels: rows in
// groups of four, each block of 32 columns of the four rows stored together,
// so that one 512-bit register holds the codes of all four rows (Q4_1) or of
// two (Q8_0), and one vector instruction does the work of four (or two)
// 256-bit ones. Only the memory layout changes: every output is computed
// with exactly the float operations of the row-by-row kernels
// (kernels_impl.h, llama.cpp's x86 order), so results are bit-identical.
//
// Layout of group g (rows 4g .. 4g+3), block b at g * group_bytes + b * BB:
//   Q4_1 (BB = 80): qs[4][16] (each row's 16 bytes of nibbles, as in the
//        GGUF block), d[4] fp16, m[4] fp16
//   Q8_0 (BB = 136): qs[4][32] the codes XOR 0x80 (as unsigned bytes, w + 128),
//        d[4] fp16
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/kernels_impl.h"

namespace kvfit {
namespace cpu {

// Bytes of one repacked block of four rows; 0 for a type without a repacked kernel.
size_t x4_block_bytes(uint32_t w_type);

// Whether a matrix of this type and shape is repacked (and its product then
// runs through gemm_x4): the AVX-512 VNNI kernels are the ones in use, the
// type has a repacked kernel, and the rows come in whole groups of four.
bool x4_wanted(const KernelTable &k, uint32_t w_type, int64_t n_rows, int64_t n_cols);

// Bytes of the repacked matrix.
size_t x4_bytes(uint32_t w_type, int64_t n_rows, int64_t n_cols);

// Repacks n_rows (a multiple of 4) rows of row_bytes each into dst (x4_bytes).
void x4_repack(uint32_t w_type, const void *src, size_t row_bytes, int64_t n_rows, int64_t n_cols, uint8_t *dst);

// The product over repacked weights: a.W is the repacked matrix and
// a.w_stride the bytes of one group of four rows; rows [r0, r1) with r0 and
// r1 multiples of 4, tokens [t0, t1), activations in the natural layout.
using GemmFn = void (*)(const GemmArgs &a, int64_t r0, int64_t r1, int64_t t0, int64_t t1);
GemmFn gemm_x4_avx512();  // nullptr where not compiled or not supported

}  // namespace cpu
}  // namespace kvfit
