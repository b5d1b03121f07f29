#version 450
// out = silu(gate) * up (out may alias gate), as the CPU reference computes
// it: x / (1 + exp(-x)) with ggml's vector exp for the first n - n % 16
// values and the C library's for the rest, then times up.
#include "common.glsl"
#include "exact_math.glsl"

layout(std430, binding = 0) readonly buffer G { float gate[]; };
layout(std430, binding = 1) readonly buffer U { float up[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };

layout(push_constant) uniform P { uint g_off, u_off, o_off, n, stride; } p;

void main() {
    const uint nv = p.n & ~15u;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        const float g = gate[p.g_off + i];
        precise float ng = 0.0 - g;
        precise float den = 1.0 + (i < nv ? exp_ggml(ng) : exp_libm(ng));
        precise float r = div_rn(g, den) * up[p.u_off + i];
        o[p.o_off + i] = r;
    }
}
