#version 450
// y[t] = (x[t] * scale) * g, scale = 1 / sqrt(mean of squares + eps), one
// workgroup per row. With doubles, the CPU reference's arithmetic exactly:
// squares rounded to float and summed in double, in order (one invocation
// walks the row: a different order of double additions can round
// differently). Without, a float tree, which rarely differs in the last bit.
#include "common.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer G { float g[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint x_off, g_off, y_off, d;
    float eps;
} p;

shared float mean_;

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = gl_WorkGroupID.x;
    const uint xb = p.x_off + row * p.d, yb = p.y_off + row * p.d;
#ifdef USE_FP64
    if (t == 0u) {
        double ss = 0.0lf;
        for (uint i = 0; i < p.d; i++) {
            precise float sq = x[xb + i] * x[xb + i];
            precise double s = ss + double(sq);
            ss = s;
        }
        precise double m = ss / double(p.d);
        mean_ = float(m);
    }
    barrier();
    const float mean = mean_;
#else
    float ss = 0.0;
    for (uint i = t; i < p.d; i += WG) ss += x[xb + i] * x[xb + i];
    const float mean = wg_sum(ss) / float(p.d);
#endif
    precise float me = mean + p.eps;
    const float scale = div_rn(1.0, sqrt_rn(me));
    for (uint i = t; i < p.d; i += WG) {
        precise float v = x[xb + i] * scale;
        precise float r = v * g[p.g_off + i];
        y[yb + i] = r;
    }
}
