// Weight matrices on the device, one row after the other, each row padded to
// 16 bytes (the host repacks GGUF blocks into this at upload, so that every
// load below is 4-byte aligned):
//   F32        : ncols floats
//   F16, BF16  : ncols halfs
//   Q8_0       : ncols int8 codes, then ncols/32 fp16 scales
//   Q4_0       : ncols/2 bytes of nibbles (per block of 32: byte j holds value
//                j low and j + 16 high, as in GGUF), then ncols/32 fp16 scales
//   Q4_1       : the nibbles, then ncols/32 words (fp16 d | fp16 m << 16)
// Type ids are GGUF's.
#define TYPE_F32 0u
#define TYPE_F16 1u
#define TYPE_Q4_0 2u
#define TYPE_Q4_1 3u
#define TYPE_Q8_0 8u
#define TYPE_BF16 30u

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
        } else {                                                                           \
            const uint byte_ = LOAD_U8(w, (base) + 16u * b_ + (j_ % 16u));                 \
            const uint q_ = j_ < 16u ? (byte_ & 15u) : (byte_ >> 4);                       \
            if (type == TYPE_Q4_0) {                                                       \
                const float d_ = half_to_float(LOAD_U16(w, (base) + (ncols) / 2u + 2u * b_)); \
                out = float(int(q_) - 8) * d_;                                             \
            } else {                                                                       \
                const uint dm_ = w[((base) + (ncols) / 2u + 4u * b_) >> 2];                \
                precise float v_ = float(q_) * half_to_float(dm_ & 0xffffu);               \
                precise float r_ = v_ + half_to_float(dm_ >> 16);                          \
                out = r_;                                                                  \
            }                                                                              \
        }                                                                                  \
    }
