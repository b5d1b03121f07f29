#version 450
// The RWKV-7 recurrence (Stream::wkv7) over n tokens: one invocation per
// state row (head h, value channel i), which depends on nothing but its own
// row and the token's vectors:
//   sa = sum_j S[i][j] a[j]
//   S[i][j] = (S[i][j] w[j] + v[i] k[j]) + sa b[j];  out[i] = sum_j S[i][j] r[j]
// The sums run in 8 lanes (element j in lane j mod 8) reduced in a fixed
// tree, as the CPU's scalar and AVX2 versions do, and no operation is
// contracted: the CPU's bits, with or without doubles.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer R { float r[]; };
layout(std430, binding = 1) readonly buffer Wd { float w[]; };
layout(std430, binding = 2) readonly buffer K { float k[]; };
layout(std430, binding = 3) readonly buffer V { float v[]; };
layout(std430, binding = 4) readonly buffer A { float a[]; };
layout(std430, binding = 5) readonly buffer Bb { float b[]; };
layout(std430, binding = 6) buffer S { float s[]; };
layout(std430, binding = 7) writeonly buffer O { float o[]; };

layout(push_constant) uniform P {
    uint r_off, w_off, k_off, v_off, a_off, b_off, s_off, o_off, n, n_head, head_size;
} p;

float reduce8(float l[8]) {
    precise float r = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    return r;
}

void main() {
    const uint N = p.head_size;
    const uint row = gl_GlobalInvocationID.x;  // h * N + i
    if (row >= p.n_head * N) return;
    const uint h = row / N, i = row % N;
    const uint d = p.n_head * N;
    const uint sb = p.s_off + row * N;  // S[h][i][0]
    for (uint t = 0; t < p.n; t++) {
        const uint vb = t * d + h * N;
        float lanes[8] = float[8](0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (uint j = 0; j < N; j++) {
            precise float m = a[p.a_off + vb + j] * s[sb + j];
            precise float l = lanes[j % 8u] + m;
            lanes[j % 8u] = l;
        }
        const float sa = reduce8(lanes);
        const float vi = v[p.v_off + vb + i];
        float acc[8] = float[8](0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (uint j = 0; j < N; j++) {
            precise float sw = s[sb + j] * w[p.w_off + vb + j];
            precise float vk = vi * k[p.k_off + vb + j];
            precise float ab = sa * b[p.b_off + vb + j];
            precise float sn = (sw + vk) + ab;
            s[sb + j] = sn;
            precise float m = sn * r[p.r_off + vb + j];
            precise float l = acc[j % 8u] + m;
            acc[j % 8u] = l;
        }
        o[p.o_off + vb + i] = reduce8(acc);
    }
}
