#version 450
// Causal depthwise convolution over time (Stream::ssm_conv), one invocation
// per channel: token t's output is sum_i w[c][i] * in(t + i) over [state ;
// x], summed in order with fused multiply-adds (fma_rn: rounded once, as the
// CPU reference's std::fma); then the state keeps the last kernel - 1 inputs.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) buffer S { float st[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P { uint x_off, w_off, s_off, y_off, n, channels, kernel; } p;

float input_at(uint tau, uint c) {
    const uint k1 = p.kernel - 1u;
    return tau < k1 ? st[p.s_off + tau * p.channels + c] : x[p.x_off + (tau - k1) * p.channels + c];
}

void main() {
    const uint c = gl_GlobalInvocationID.x;
    if (c >= p.channels) return;
    const uint k1 = p.kernel - 1u;
    for (uint t = 0; t < p.n; t++) {
        float sum = 0.0;
        for (uint i = 0; i < p.kernel; i++) sum = fma_rn(input_at(t + i, c), w[p.w_off + c * p.kernel + i], sum);
        y[p.y_off + t * p.channels + c] = sum;
    }
    // rows n .. n + k1 - 1 of [state ; x], in increasing order (a row read
    // from the state lies above the one written)
    for (uint r = 0; r < k1; r++) st[p.s_off + r * p.channels + c] = input_at(p.n + r, c);
}
