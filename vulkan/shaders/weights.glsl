// Weight matrices on the device, one row after the other, each row padded to
// 16 bytes (the host repacks GGUF blocks into this at upload, so that every
// load below is 4-byte aligned):
//   F32        : ncols floats
//   F16, BF16  : ncols halfs
//   Q8_0       : ncols int8 codes, then ncols/32 fp16 scales
//   Q4_0       : ncols/2 bytes of nibbles (per block of 32: byte j holds value
//                j low and j + 16 high, as in GGUF), then ncols/32 fp16 scales
//   Q4_1       : the nibbles, then ncols/32 words (fp16 d | fp16 m << 16)
//   Q5_0, Q5_1 : the nibbles as Q4_0, then ncols/32 words of fifth bits (bit j
//                of word b: value j of block b), then the scales as Q4_0 / Q4_1
//   Q4_K, Q5_K : the GGUF super-blocks as they are (144 / 176 bytes: d|dmin,
//                scales, [qh,] qs; every field 4-byte aligned)
//   Q6_K       : per super-block its first 208 bytes (ql, qh, scales), then
//                ncols/256 fp16 factors d
// Type ids are GGUF's.
#define TYPE_F32 0u
#define TYPE_F16 1u
#define TYPE_Q4_0 2u
#define TYPE_Q4_1 3u
#define TYPE_Q5_0 6u
#define TYPE_Q5_1 7u
#define TYPE_Q8_0 8u
#define TYPE_Q4_K 12u
#define TYPE_Q5_K 13u
#define TYPE_Q6_K 14u
#define TYPE_BF16 30u

// Element c of the k-quant row (Q4_K, Q5_K, Q6_K) starting at byte `base`,
// with the CPU dequantize_row's float operations: (d * sc) * q - dmin * m for
// Q4_K / Q5_K (no fma), (d * sc) * (q - 32) for Q6_K.
#define DEQUANT_KQUANT(w, type, base, ncols, c, out)                                        \
    {                                                                                       \
        const uint B_ = (c) / 256u, e_ = (c) % 256u;                                        \
        if (type == TYPE_Q6_K) {                                                            \
            const uint blk_ = (base) + 208u * B_;                                           \
            const uint h_ = e_ / 128u, kk_ = (e_ % 128u) / 32u, l_ = e_ % 32u;              \
            const uint lo_ = LOAD_U8(w, blk_ + 64u * h_ + l_ + 32u * (kk_ & 1u));          \
            const uint hi_ = (LOAD_U8(w, blk_ + 128u + 32u * h_ + l_) >> (2u * kk_)) & 3u; \
            const int q_ = int((kk_ < 2u ? lo_ & 15u : lo_ >> 4) | (hi_ << 4)) - 32;       \
            const float d_ = half_to_float(LOAD_U16(w, (base) + 208u * ((ncols) / 256u) + 2u * B_)); \
            precise float ds_ = d_ * float(LOAD_I8(w, blk_ + 192u + e_ / 16u));            \
            precise float r_ = ds_ * float(q_);                                             \
            out = r_;                                                                       \
        } else {                                                                            \
            const bool q5_ = type == TYPE_Q5_K;                                             \
            const uint blk_ = (base) + (q5_ ? 176u : 144u) * B_;                            \
            const uint j_ = e_ / 32u, l_ = e_ % 32u;                                        \
            uint sc_, m_;                                                                   \
            if (j_ < 4u) {                                                                  \
                sc_ = LOAD_U8(w, blk_ + 4u + j_) & 63u;                                     \
                m_ = LOAD_U8(w, blk_ + 8u + j_) & 63u;                                      \
            } else {                                                                        \
                const uint s2_ = LOAD_U8(w, blk_ + 8u + j_);                                \
                sc_ = (s2_ & 15u) | ((LOAD_U8(w, blk_ + j_) >> 6) << 4);                    \
                m_ = (s2_ >> 4) | ((LOAD_U8(w, blk_ + 4u + j_) >> 6) << 4);                 \
            }                                                                               \
            const uint byte_ = LOAD_U8(w, blk_ + (q5_ ? 48u : 16u) + 32u * (j_ / 2u) + l_); \
            uint q_ = (j_ % 2u) != 0u ? byte_ >> 4 : byte_ & 15u;                           \
            if (q5_) q_ |= ((LOAD_U8(w, blk_ + 16u + l_) >> j_) & 1u) << 4;                 \
            const uint dm_ = w[blk_ >> 2];                                                  \
            precise float ds_ = half_to_float(dm_ & 0xffffu) * float(sc_);                  \
            precise float mm_ = half_to_float(dm_ >> 16) * float(m_);                       \
            precise float r_ = ds_ * float(q_) - mm_;                                       \
            out = r_;                                                                       \
        }                                                                                   \
    }

// Element c of the row starting at byte `base` of buffer `w`, as the CPU's
// dequantize_row computes it.
#define DEQUANT_WEIGHT(w, type, base, ncols, c, out)                                       \
    {                                                                                      \
        const uint b_ = (c) / 32u, j_ = (c) % 32u;                                         \
        if (type == TYPE_F32) {                                                            \
            out = uintBitsToFloat(w[((base) >> 2) + (c)]);                                 \
        } else if (type == TYPE_F16) {                                                     \
            out = half_to_float(LOAD_U16(w, (base) + 2u * (c)));                           \
        } else if (type == TYPE_BF16) {                                                    \
            out = bf16_to_float(LOAD_U16(w, (base) + 2u * (c)));                           \
        } else if (type == TYPE_Q8_0) {                                                    \
            const float d_ = half_to_float(LOAD_U16(w, (base) + (ncols) + 2u * b_));       \
            out = float(LOAD_I8(w, (base) + (c))) * d_;                                    \
        } else if (type == TYPE_Q4_K || type == TYPE_Q5_K || type == TYPE_Q6_K) {          \
            DEQUANT_KQUANT(w, type, base, ncols, c, out)                                   \
        } else {                                                                           \
            const uint byte_ = LOAD_U8(w, (base) + 16u * b_ + (j_ % 16u));                 \
            uint q_ = j_ < 16u ? (byte_ & 15u) : (byte_ >> 4);                             \
            const bool q5_ = type == TYPE_Q5_0 || type == TYPE_Q5_1;                       \
            uint sb_ = (base) + (ncols) / 2u;                                              \
            if (q5_) {                                                                     \
                q_ |= ((w[(sb_ >> 2) + b_] >> j_) & 1u) << 4;                              \
                sb_ += 4u * ((ncols) / 32u);                                               \
            }                                                                              \
            if (type == TYPE_Q4_0 || type == TYPE_Q5_0) {                                  \
                const float d_ = half_to_float(LOAD_U16(w, sb_ + 2u * b_));                \
                out = float(int(q_) - (q5_ ? 16 : 8)) * d_;                                \
            } else {                                                                       \
                const uint dm_ = w[(sb_ + 4u * b_) >> 2];                                  \
                precise float v_ = float(q_) * half_to_float(dm_ & 0xffffu);               \
                precise float r_ = v_ + half_to_float(dm_ >> 16);                          \
                out = r_;                                                                  \
            }                                                                              \
        }                                                                                  \
    }
