#version 450
// y = (y + v * sum_head(r * k * r_k)) * g (Stream::rwkv7_bonus_gate), in
// place, one workgroup per (head, token); the head's sum in float, in order
// (one invocation walks it), as the CPU reference: its bits.
#include "common.glsl"

layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer R { float r[]; };
layout(std430, binding = 2) readonly buffer K { float k[]; };
layout(std430, binding = 3) readonly buffer V { float v[]; };
layout(std430, binding = 4) readonly buffer Rk { float rk[]; };
layout(std430, binding = 5) readonly buffer G { float g[]; };

layout(push_constant) uniform P { uint y_off, r_off, k_off, v_off, rk_off, g_off, n_head, head_size; } p;

shared float sum_;

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tok = gl_WorkGroupID.y, h = gl_WorkGroupID.x;
    const uint c0 = h * p.head_size, o = tok * p.n_head * p.head_size + c0;
    if (tid == 0u) {
        float s = 0.0;
        for (uint i = 0; i < p.head_size; i++) {
            precise float rk_ = r[p.r_off + o + i] * k[p.k_off + o + i];
            precise float m = rk_ * rk[p.rk_off + c0 + i];
            precise float ns = s + m;
            s = ns;
        }
        sum_ = s;
    }
    barrier();
    const float s = sum_;
    for (uint i = tid; i < p.head_size; i += WG) {
        precise float vs = v[p.v_off + o + i] * s;
        precise float yv = (y[p.y_off + o + i] + vs) * g[p.g_off + o + i];
        y[p.y_off + o + i] = yv;
    }
}
