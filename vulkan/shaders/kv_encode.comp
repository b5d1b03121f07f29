#version 450
// KV codecs (src/kv/codec.h): one workgroup encodes one head row of head_dim
// values, optionally Hadamard-rotating it first (then written back to x, as
// the CPU does).
#include "common.glsl"

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) buffer D { uint dst[]; };
layout(std430, binding = 2) readonly buffer S { float signs[]; };  // scaled signs of the rotation
#include "kv_store.glsl"

layout(push_constant) uniform P {
    uint codec;  // 1 F16, 2 Q8, 3 Q4
    uint hadamard, hd, nrows;
    uint x_off, dst_off, head_bytes, signs_off;  // dst_off in bytes
    uint gx;                                     // workgroups along x
} p;

shared float v[512];

void main() {
    const uint r = gl_WorkGroupID.y * p.gx + gl_WorkGroupID.x;
    if (r >= p.nrows) return;  // uniform per workgroup
    const uint t = gl_LocalInvocationID.x, hd = p.hd;
    const uint xb = p.x_off + r * hd;
    for (uint i = t; i < hd; i += WG) v[i] = x[xb + i];
    barrier();
    if (p.hadamard != 0u) {
        // x <- H diag(s) x, stages in the CPU's order so the sums match it exactly
        for (uint i = t; i < hd; i += WG) {
            precise float s = v[i] * signs[p.signs_off + i];
            v[i] = s;
        }
        barrier();
        for (uint h = 1u; h < hd; h *= 2u) {
            for (uint q = t; q < hd / 2u; q += WG) {
                const uint i = (q / h) * 2u * h + (q % h);
                const float a = v[i], b = v[i + h];
                precise float s = a + b;
                precise float d = a - b;
                v[i] = s;
                v[i + h] = d;
            }
            barrier();
        }
        for (uint i = t; i < hd; i += WG) x[xb + i] = v[i];
    }
    const uint base = p.dst_off + r * p.head_bytes;
    uint bytes[36];
    if (p.codec == 1u) {
        for (uint c = t; 2u * c < hd; c += WG) {
            for (uint e = 0; e < 2u; e++) {
                const uint h = float_to_half(clamp(v[2u * c + e], -65504.0, 65504.0));
                bytes[2u * e] = h & 0xffu;
                bytes[2u * e + 1u] = h >> 8;
            }
            store_bytes(base + 4u * c, 4u, bytes);
        }
        return;
    }
    for (uint g = t; g < hd / 32u; g += WG) {
        const uint o = 32u * g;
        if (p.codec == 2u) {
            float amax = 0.0;
            for (uint i = 0; i < 32u; i++) amax = max(amax, abs(v[o + i]));
            const uint dh = half_up(div_rn(amax, 127.0));
            const float d = half_to_float(dh);
            bytes[0] = dh & 0xffu;
            bytes[1] = dh >> 8;
            for (uint i = 0; i < 32u; i++)
                bytes[2u + i] = uint(d > 0.0 ? round_clamp(div_rn(v[o + i], d), -127.0, 127.0) : 0) & 0xffu;
            store_bytes(base + 34u * g, 34u, bytes);
        } else {
            float grp[32];
            for (uint i = 0; i < 32u; i++) grp[i] = v[o + i];
            encode_q4_group(grp, base + 20u * g);
        }
    }
}
