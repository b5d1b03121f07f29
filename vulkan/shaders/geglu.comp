#version 450
// out = gelu(gate) * up (out may alias gate), as the CPU reference computes
// it (cpu::geglu_ggml, after ggml's CPU build): 0 where gate <= -10, gate
// itself where gate >= 10, else the F16 entry of the GELU table at the F16
// bits of gate (rounded to nearest even), as a float; then times up. The
// table is the CPU's own (cpu::gelu_f16_table), two entries per word, entry
// h in the low half of word h / 2 when h is even.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer G { float gate[]; };
layout(std430, binding = 1) readonly buffer U { float up[]; };
layout(std430, binding = 2) writeonly buffer O { float o[]; };
layout(std430, binding = 3) readonly buffer T { uint table[]; };

layout(push_constant) uniform P { uint g_off, u_off, o_off, n, stride, t_off; } p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        const float x = gate[p.g_off + i];
        float r;
        if (x <= -10.0) {
            r = 0.0;
        } else if (x >= 10.0) {
            precise float m = x * up[p.u_off + i];
            r = m;
        } else {
            const uint h = float_to_half(x);
            const uint g = (table[p.t_off + h / 2u] >> ((h & 1u) * 16u)) & 0xffffu;
            precise float m = half_to_float(g) * up[p.u_off + i];
            r = m;
        }
        o[p.o_off + i] = r;
    }
}
