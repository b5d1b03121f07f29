#version 450
// Per-channel key blocks (KVFIT_KV_Q4_CHANNEL, src/kv/codec.h): 32 F16 key
// rows of n_heads heads become, per head, one Q4 group per channel holding
// that channel's 32 tokens. One invocation per (head, channel).
#include "common.glsl"

layout(std430, binding = 0) readonly buffer R { uint rows[]; };
layout(std430, binding = 1) buffer D { uint dst[]; };
#include "kv_store.glsl"

layout(push_constant) uniform P {
    uint rows_off, dst_off;  // bytes
    uint width;              // n_heads * head_dim
} p;

void main() {
    const uint c = gl_GlobalInvocationID.x;  // head * head_dim + channel
    if (c >= p.width) return;
    float grp[32];
    for (uint t = 0; t < 32u; t++) grp[t] = half_to_float(LOAD_U16(rows, p.rows_off + 2u * (t * p.width + c)));
    // the head's groups follow one another, so group c of the flat order is at 20 c
    encode_q4_group(grp, p.dst_off + 20u * c);
}
