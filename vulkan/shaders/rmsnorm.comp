#version 450
// y[t] = x[t] / rms(x[t]) * g, one workgroup per row. The sum of squares is
// taken in double where the device has it (as the CPU reference does), so the
// scale almost always matches it to the bit.
#include "common.glsl"
#ifdef USE_FP64
#define ACC double
#else
#define ACC float
#endif

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer G { float g[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint x_off, g_off, y_off, d;
    float eps;
} p;

shared ACC part[WG];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = gl_WorkGroupID.x;
    const uint xb = p.x_off + row * p.d, yb = p.y_off + row * p.d;
    ACC ss = ACC(0);
    for (uint i = t; i < p.d; i += WG) {
        const ACC v = ACC(x[xb + i]);
        ss += v * v;
    }
    part[t] = ss;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (t < s) part[t] += part[t + s];
        barrier();
    }
    const float mean = float(part[0] / ACC(p.d));
    precise float me = mean + p.eps;
    const float scale = div_rn(1.0, sqrt_rn(me));
    for (uint i = t; i < p.d; i += WG) {
        precise float v = x[xb + i] * scale;
        precise float r = v * g[p.g_off + i];
        y[yb + i] = r;
    }
}
