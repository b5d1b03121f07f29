// CPU compute kernels: activation quantization, dot products of a weight row
// with quantized activations, and the threaded matrix product built on them.
// Each kernel has a scalar reference and SIMD versions chosen at run time by
// CPU feature (the SIMD translation units are compiled with their own -m flags).
#pragma once

#include <cstddef>
#include <cstdint>

#include "gguf/ggml_types.h"

namespace kvfit {

class ThreadPool;

// Type the activations are converted to before a dot product with a weight
// row of type `weight_type` (the same pairing llama.cpp uses, so results agree):
// Q4_0/Q8_0 -> Q8_0, Q4_1 -> Q8_1, F16 -> F16, BF16 -> BF16, F32 -> F32.
uint32_t vec_dot_type(uint32_t weight_type);

struct KernelTable {
    const char *name;  // "scalar", "avx2", ...
    // Convert n floats (n multiple of QK for block types) to `type`.
    void (*quantize_row)(uint32_t type, const float *x, void *y, int64_t n);
    // Dot product of a weight row with an activation row already converted to
    // vec_dot_type(weight_type); n elements.
    float (*vec_dot)(uint32_t weight_type, int64_t n, const void *w, const void *x);
};

const KernelTable &kernels_scalar();
const KernelTable &kernels_best();  // the fastest this CPU supports

// Y[t][r] = dot(W row r, X[t]) for t < n_tokens, r < n_rows.
//   W: n_rows rows of n_cols elements of w_type, row stride w_row_bytes
//   X: n_tokens rows of n_cols floats (row stride n_cols)
//   Y: n_tokens rows, row stride ldy floats
// Quantizes X once into `scratch` (see matmul_scratch_bytes) and splits the
// rows over the pool's threads, reusing each weight row for every token.
size_t matmul_scratch_bytes(uint32_t w_type, int64_t n_cols, int64_t n_tokens);
void matmul(ThreadPool &pool, const KernelTable &k, uint32_t w_type, const void *W, size_t w_row_bytes,
            int64_t n_rows, int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy,
            void *scratch);
// The same product (same bits) over weights repacked in groups of four rows
// (repack.h: W4 from x4_repack, for a type and shape x4_wanted accepts).
void matmul_x4(ThreadPool &pool, const KernelTable &k, uint32_t w_type, const void *W4, int64_t n_rows,
               int64_t n_cols, const float *X, int64_t n_tokens, float *Y, int64_t ldy, void *scratch);

}  // namespace kvfit
