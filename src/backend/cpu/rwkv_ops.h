// The CPU kernels of RWKV-7's layers (see the Stream ops of the same names in
// backend/backend.h for what each computes): a scalar reference of each, and
// an AVX2 version of the recurrence, which is where the time goes. Single
// threaded; the stream splits rows or heads over its workers.
#pragma once

#include <cstddef>

#include "backend/backend.h"

namespace kvfit::cpu {

// One row of d floats in groups of d / groups.
void norm_affine_row(const float *x, const float *w, const float *b, float eps, int d, int groups, float *y);
// Rows [t0, t1) of token_shift_mix (the state is read, not written).
void token_shift_mix_rows(const float *x, const float *state, const float *mix, int n_mix, int n, int d, int t0,
                          int t1, float *out);
// Rows [t0, t1) of rwkv7_prepare.
void rwkv7_prepare_rows(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                        const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a, int n_head,
                        int head_size, int t0, int t1, float *a_out, float *b_out);
// Head h of wkv7 over n tokens (rows of stride n_head * head_size).
void wkv7_head_scalar(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                      int n, int n_head, int head_size, int h, float *state, float *out);
// The same with AVX2 (head_size a multiple of 8); falls back to the scalar
// version where the CPU or the size does not allow it. Its sums run in
// another order than the scalar version's.
void wkv7_head_best(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                    int n, int n_head, int head_size, int h, float *state, float *out);
// Head h of Stream::wkv7_typed: the state (all heads) kept as `type`; F32
// is wkv7_head_best, the others are read into floats, rounded after every
// token (see StateType) and written back.
void wkv7_head_typed(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                     int n, int n_head, int head_size, int h, StateType type, void *state, float *out);
void rwkv7_bonus_gate_row(float *y, const float *r, const float *k, const float *v, const float *r_k, const float *g,
                          int n_head, int head_size);

}  // namespace kvfit::cpu
