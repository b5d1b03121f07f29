#version 450
// Gated DeltaNet's L2 normalisation of q and k heads in place, one workgroup
// per row (x + token * stride + row * dim): x * (1 / sqrt(mean of squares +
// eps / dim)), then times 1 / sqrt(dim) (eps_n and inv_sqrt from the host).
// With doubles, the CPU reference's arithmetic exactly (squares rounded to
// float, summed in double in order by one invocation); without, a float tree.
#include "common.glsl"

layout(std430, binding = 0) buffer X { float x[]; };

layout(push_constant) uniform P { uint x_off, stride, dim; float eps_n, inv_sqrt; } p;

shared float mean_;

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint base = p.x_off + gl_WorkGroupID.y * p.stride + gl_WorkGroupID.x * p.dim;
#ifdef USE_FP64
    if (t == 0u) {
        double ss = 0.0lf;
        for (uint i = 0; i < p.dim; i++) {
            precise float sq = x[base + i] * x[base + i];
            precise double s = ss + double(sq);
            ss = s;
        }
        precise double m = ss / double(p.dim);
        mean_ = float(m);
    }
    barrier();
    const float mean = mean_;
#else
    float ss = 0.0;
    for (uint i = t; i < p.dim; i += WG) ss += x[base + i] * x[base + i];
    const float mean = wg_sum(ss) / float(p.dim);
#endif
    precise float me = mean + p.eps_n;
    const float scale = div_rn(1.0, sqrt_rn(me));
    for (uint i = t; i < p.dim; i += WG) {
        precise float v = x[base + i] * scale;
        precise float r = v * p.inv_sqrt;
        x[base + i] = r;
    }
}
