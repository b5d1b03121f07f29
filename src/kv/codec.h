// KV codecs: how one row of the KV cache (one token's K or V of one KV head)
// is stored, per-channel key blocks, and the randomized Hadamard rotation that
// spreads outlier channels before quantization. Rows have no alignment
// requirement.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvfit {

enum class KVCodec : int { F16 = 1, Q8 = 2, Q4 = 3 };

// Values are grouped per row (n = head_dim, n a multiple of 32) in groups of 32.
//   F16: n halfs.
//   Q8 : per group: fp16 scale d + 32 int8 (x = q*d, symmetric, d = amax/127, round to nearest).
//   Q4 : per group: fp16 scale d + fp16 min m + 16 bytes of nibbles (x = q*d + m, q in 0..15,
//        asymmetric). Byte j holds value j in its low nibble and value j + 16 in its high one.
// Scales are rounded up and minima down when narrowed to fp16, so every value
// stays within d/2 of its input (d the stored scale) for finite input of
// magnitude up to 65504; larger input saturates, never to inf or NaN.
// Misuse (unknown codec, n <= 0, or for Q8 and Q4 n not a multiple of 32)
// throws kvfit::Error with KVFIT_E_INTERNAL.
constexpr int KV_GROUP = 32;

size_t codec_row_bytes(KVCodec c, int n);  // exact bytes, everything counted; 0 if c or n is invalid
const char *codec_name(KVCodec c);         // "F16", "Q8", "Q4" ("?" if invalid)
void codec_encode(KVCodec c, const float *x, void *dst, int n);
void codec_decode(KVCodec c, const void *src, float *x, int n);

// Per-channel key blocks (KIVI / KVQuant style): 32 consecutive tokens of a
// KV head are quantized along the token axis, one Q4 group per channel, so an
// outlier channel gets its own scale instead of stretching every token's.
// A block of n channels is n Q4 groups (codec_row_bytes(Q4, 32) bytes each),
// channel c's group holding that channel's value for tokens 0..31.
constexpr int KV_CHANNEL_BLOCK = 32;
size_t channel_block_bytes(int n);  // bytes of one block of n channels
// Encodes rows [32][n] (row stride `stride` floats) into one block.
void channel_block_encode(const float *rows, size_t stride, void *dst, int n);
// Decodes tokens first .. first + count - 1 of a block into dst [count][n].
void channel_block_decode(const void *block, int n, int first, int count, float *dst);

// Fixed randomized Hadamard rotation of one head vector (n a power of two, <= 512):
// x <- H * diag(signs) * x / sqrt(n), signs = +-1 from a fixed seed per n
// (deterministic across platforms). Orthonormal, so dot(R a, R b) == dot(a, b):
// keys rotated before quantization and the query rotated the same way give the
// same scores while outlier channels are spread out. O(n log n), in place.
// Any other n throws kvfit::Error with KVFIT_E_INTERNAL.
void hadamard_rotate(float *x, int n);
// The inverse (= transpose): x <- diag(signs) * H * x / sqrt(n). Values rotated
// before quantization give a rotated attention output; this undoes it.
void hadamard_rotate_inv(float *x, int n);

}  // namespace kvfit
