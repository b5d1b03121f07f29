#version 450
// Token shift and interpolation (Stream::token_shift_mix): with prev[0] =
// state and prev[t] = x[t - 1], out[j][t][i] = (prev[t][i] - x[t][i]) *
// mix[j][i] + x[t][i], for j < n_mix; the float operations of the CPU
// reference in its order, so the same bits. The host then copies x[n - 1]
// into the state.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer S { float st[]; };
layout(std430, binding = 2) readonly buffer M { float mix[]; };
layout(std430, binding = 3) writeonly buffer O { float o[]; };

layout(push_constant) uniform P { uint x_off, s_off, m_off, o_off, n, d, total, stride; } p;

void main() {
    for (uint e = gl_GlobalInvocationID.x; e < p.total; e += p.stride) {
        const uint nd = p.n * p.d;
        const uint j = e / nd, r = e % nd, t = r / p.d, i = r % p.d;
        const float xt = x[p.x_off + r];
        const float prev = t == 0u ? st[p.s_off + i] : x[p.x_off + r - p.d];
        precise float sx = prev - xt;
        precise float ms = sx * mix[p.m_off + j * p.d + i];
        precise float v = ms + xt;
        o[p.o_off + e] = v;
    }
}
