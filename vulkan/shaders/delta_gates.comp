#version 450
// Gated DeltaNet gates, in place over n tokens of n_heads heads:
//   alpha <- softplus(alpha + dt_bias[h]) * a[h]  (softplus(x) = x above 20)
//   beta  <- 1 / (1 + exp(-beta))
// as the CPU reference: the C library's exp (exact_math.glsl); the logarithm
// of softplus is the shader's (GLSL has no correctly rounded log), so alpha
// can differ from the CPU's in its last bits.
#include "common.glsl"
#include "exact_math.glsl"

layout(std430, binding = 0) buffer Al { float alpha[]; };
layout(std430, binding = 1) buffer Be { float beta[]; };
layout(std430, binding = 2) readonly buffer Dt { float dt[]; };
layout(std430, binding = 3) readonly buffer Aa { float aa[]; };

layout(push_constant) uniform P { uint al_off, be_off, dt_off, a_off, n_heads, total; } p;

void main() {
    const uint i = gl_GlobalInvocationID.x;
    if (i >= p.total) return;
    const uint h = i % p.n_heads;
    precise float x = alpha[p.al_off + i] + dt[p.dt_off + h];
    float sp = x;
    if (!(x > 20.0)) {
        precise float e1 = 1.0 + exp_libm(x);
        sp = log(e1);
    }
    precise float g = sp * aa[p.a_off + h];
    alpha[p.al_off + i] = g;
    precise float den = 1.0 + exp_libm(0.0 - beta[p.be_off + i]);
    beta[p.be_off + i] = div_rn(1.0, den);
}
