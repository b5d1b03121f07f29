#version 450
// out[r] = index of the largest of row r's n values, one workgroup per row:
// the lowest index among equals, NaN never wins (as kvfit::argmax).
#include "common.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer O { int o[]; };

layout(push_constant) uniform P { uint x_off, n, o_off; } p;

shared float bv[WG];
shared uint bi[WG];

bool better(float v, uint i, float w, uint j) { return v > w || (v == w && i < j); }

void main() {
    const uint t = gl_LocalInvocationID.x, r = gl_WorkGroupID.x;
    const uint xb = p.x_off + r * p.n;
    const float ninf = uintBitsToFloat(0xff800000u);
    float best = ninf;
    uint at = 0xffffffffu;
    for (uint i = t; i < p.n; i += WG) {
        float v = x[xb + i];
        if (isnan(v)) v = ninf;
        if (at == 0xffffffffu || better(v, i, best, at)) {
            best = v;
            at = i;
        }
    }
    bv[t] = best;
    bi[t] = at;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s && bi[t + s] != 0xffffffffu && (bi[t] == 0xffffffffu || better(bv[t + s], bi[t + s], bv[t], bi[t]))) {
            bv[t] = bv[t + s];
            bi[t] = bi[t + s];
        }
        barrier();
    }
    if (t == 0u) o[p.o_off + r] = int(bi[0]);
}
