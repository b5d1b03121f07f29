#version 450
// Joins the key splits of attention.comp: per output row, the splits'
// running maxima m, sums l and unnormalised outputs give
// out = sum_s acc_s exp(m_s - M) / sum_s l_s exp(m_s - M), M = max_s m_s.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer PT { float part[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };

layout(push_constant) uniform P { uint part_off, o_off, n_split, hd; } p;

void main() {
    const uint row = gl_WorkGroupID.x, t = gl_LocalInvocationID.x;
    const uint base = p.part_off + row * p.n_split * (p.hd + 2u);
    float M = uintBitsToFloat(0xff800000u);
    for (uint s = 0; s < p.n_split; s++) M = max(M, part[base + s * (p.hd + 2u)]);
    float L = 0.0;
    for (uint s = 0; s < p.n_split; s++) {
        const float m = part[base + s * (p.hd + 2u)];
        if (m != uintBitsToFloat(0xff800000u)) L += part[base + s * (p.hd + 2u) + 1u] * exp(m - M);
    }
    const float inv = 1.0 / L;
    for (uint d = t; d < p.hd; d += WG) {
        float acc = 0.0;
        for (uint s = 0; s < p.n_split; s++) {
            const float m = part[base + s * (p.hd + 2u)];
            if (m != uintBitsToFloat(0xff800000u)) acc += part[base + s * (p.hd + 2u) + 2u + d] * exp(m - M);
        }
        o[p.o_off + row * p.hd + d] = acc * inv;
    }
}
