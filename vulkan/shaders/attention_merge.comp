#version 450
// Merges the chunks of attention.comp's split decode in order, as
// attn_chunk_merge (src/backend/cpu/attention_order.h): per output row,
// M' = max(M, m), a = exp(M - M'), b = exp(m - M'), L = fma(L, a, l b),
// ACC = fma(ACC, a, acc b); out = ACC (1 / L). One workgroup per row; every
// invocation works out the factors itself (the same bits) for its dimensions.
#include "common.glsl"
#include "exact_math.glsl"

layout(std430, binding = 0) readonly buffer PT { float part[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform P { uint part_off, o_off, n_split, hd; } p;

void main() {
    const uint row = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
    const uint base = p.part_off + row * p.n_split * (p.hd + 2u);
    for (uint d = t; d < p.hd; d += WG) {
        float M = uintBitsToFloat(0xff800000u), L = 0.0, acc = 0.0;
        for (uint s = 0; s < p.n_split; s++) {
            const uint c = base + s * (p.hd + 2u);
            const float m = max(M, part[c]);
            precise float da = M - m;
            precise float db = part[c] - m;
            const float a = exp_ggml(da), b = exp_ggml(db);
            precise float lb = part[c + 1u] * b;
            precise float cb = part[c + 2u + d] * b;
            L = fma_rn(L, a, lb);
            acc = fma_rn(acc, a, cb);
            M = m;
        }
        const float inv = L == 0.0 ? 0.0 : div_rn(1.0, L);
        precise float res = acc * inv;
        o[p.o_off + row * p.hd + d] = res;
    }
}
