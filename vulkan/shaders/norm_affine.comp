#version 450
// y = (x - mean) / sqrt(var + eps) * w + b over each group of gs consecutive
// floats of each row (LayerNorm: one group; RWKV's GroupNorm: one per head),
// one workgroup per (group, row); y may be x. With doubles, the CPU
// reference's arithmetic exactly (cpu::norm_affine_row): the sum of the
// floats and of the squared float deviations each in double, in order (one
// invocation walks the group), the means rounded to float, the scale a
// correctly rounded 1 / sqrt. Without, float trees, which differ in the last
// bits.
#include "common.glsl"

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint x_off, w_off, b_off, y_off, d, gs;
    float eps;
} p;

shared float mean_, var_;

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint row = gl_WorkGroupID.y, grp = gl_WorkGroupID.x;
    const uint c0 = grp * p.gs;
    const uint xb = p.x_off + row * p.d + c0, yb = p.y_off + row * p.d + c0;
#ifdef USE_FP64
    if (t == 0u) {
        double sum = 0.0lf;
        for (uint i = 0; i < p.gs; i++) {
            precise double s = sum + double(x[xb + i]);
            sum = s;
        }
        precise double m = sum / double(p.gs);
        const float mean = float(m);
        double var = 0.0lf;
        for (uint i = 0; i < p.gs; i++) {
            precise float c = x[xb + i] - mean;
            precise float sq = c * c;
            precise double s = var + double(sq);
            var = s;
        }
        precise double v = var / double(p.gs);
        mean_ = mean;
        var_ = float(v);
    }
    barrier();
    const float mean = mean_, var = var_;
#else
    float s = 0.0;
    for (uint i = t; i < p.gs; i += WG) s += x[xb + i];
    const float mean = wg_sum(s) / float(p.gs);
    float q = 0.0;
    for (uint i = t; i < p.gs; i += WG) {
        const float c = x[xb + i] - mean;
        q += c * c;
    }
    const float var = wg_sum(q) / float(p.gs);
#endif
    precise float ve = var + p.eps;
    const float scale = div_rn(1.0, sqrt_rn(ve));
    for (uint i = t; i < p.gs; i += WG) {
        precise float c = x[xb + i] - mean;
        precise float r = c * scale * w[p.w_off + c0 + i] + b[p.b_off + c0 + i];
        y[yb + i] = r;
    }
}
