#version 450
// RoPE of n rows of n_heads key heads in place, row i at position pos0 + i,
// as the CPU reference's rope_ggml (ggml_rope's float operations): pairs
// (x0, x1) become fma_rn(x0, c, -(x1 s)) and fma_rn(x0, s, x1 c). One invocation
// per pair; cos, sin from the cache's table.
#include "common.glsl"

layout(std430, binding = 0) buffer K { float k[]; };
layout(std430, binding = 1) readonly buffer CS { float cs[]; };

layout(push_constant) uniform P {
    uint k_off, cs_off, n_rows, n_heads, head_dim, n_dims, neox, pos0;
} p;

void main() {
    const uint half_dims = p.n_dims / 2u;
    const uint e = gl_GlobalInvocationID.x, r = gl_GlobalInvocationID.y;
    if (e >= half_dims || r >= p.n_rows) return;
    const uint pos = p.pos0 + r / p.n_heads;
    const uint c = p.cs_off + (pos * half_dims + e) * 2u;
    const uint base = p.k_off + r * p.head_dim;
    const uint i0 = base + (p.neox != 0u ? e : 2u * e), i1 = i0 + (p.neox != 0u ? half_dims : 1u);
    const float x0 = k[i0], x1 = k[i1], co = cs[c], si = cs[c + 1u];
    precise float a = x1 * si;
    precise float b = x1 * co;
    precise float y0 = fma_rn(x0, co, -a);
    precise float y1 = fma_rn(x0, si, b);
    k[i0] = y0;
    k[i1] = y1;
}
