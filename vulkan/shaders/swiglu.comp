#version 450
// out = silu(gate) * up (out may alias gate).
#include "common.glsl"

layout(std430, binding = 0) readonly buffer G { float gate[]; };
layout(std430, binding = 1) readonly buffer U { float up[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };

layout(push_constant) uniform P { uint g_off, u_off, o_off, n, stride; } p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        const float g = gate[p.g_off + i];
        o[p.o_off + i] = g / (1.0 + exp(-g)) * up[p.u_off + i];
    }
}
