// Element `i` of an encoded KV head row starting at byte `off` of `buf`
// (codecs as in src/kv/codec.h: F16; Q8 groups of fp16 d + 32 int8; Q4 groups
// of fp16 d, fp16 m + 16 bytes of nibbles, byte j holding values j and j + 16).
#define KV_F16 1u
#define KV_Q8 2u
#define KV_Q4 3u
#define DECODE_KV(buf, codec, off, i, out)                                          \
    {                                                                               \
        if (codec == KV_F16) {                                                      \
            out = half_to_float(LOAD_U16(buf, (off) + 2u * (i)));                   \
        } else if (codec == KV_Q8) {                                                \
            const uint g_ = (off) + 34u * ((i) / 32u);                              \
            out = float(LOAD_I8(buf, g_ + 2u + (i) % 32u)) * half_to_float(LOAD_U16(buf, g_)); \
        } else {                                                                    \
            const uint g_ = (off) + 20u * ((i) / 32u), j_ = (i) % 32u;              \
            const uint b_ = LOAD_U8(buf, g_ + 4u + j_ % 16u);                       \
            const float q_ = float(j_ < 16u ? (b_ & 15u) : (b_ >> 4));              \
            out = fma(q_, half_to_float(LOAD_U16(buf, g_)), half_to_float(LOAD_U16(buf, g_ + 2u))); \
        }                                                                           \
    }
