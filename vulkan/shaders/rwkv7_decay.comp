#version 450
// The element-wise half of Stream::rwkv7_prepare, in place (rwkv7_kk.comp
// does the rest, after it):
//   w = exp(decay * sigmoid(w + w0)), decay = -exp(-1/2) (from the host)
//   a = sigmoid(a + a0)
//   v = v + (v_first - v) * sigmoid(vmix + v0)           (if has_vmix)
// over n rows of d floats (w0, a0, v0: d floats). With doubles, the CPU
// reference's bits: its C library exp (exp_libm) and correctly rounded
// divisions; without, the shader's exp and division.
#include "common.glsl"
#include "exact_math.glsl"

layout(std430, binding = 0) buffer Wt { float w[]; };
layout(std430, binding = 1) readonly buffer W0 { float w0[]; };
layout(std430, binding = 2) buffer At { float a[]; };
layout(std430, binding = 3) readonly buffer A0 { float a0[]; };
layout(std430, binding = 4) buffer Vt { float v[]; };
layout(std430, binding = 5) readonly buffer Vf { float vf[]; };
layout(std430, binding = 6) readonly buffer Vm { float vm[]; };
layout(std430, binding = 7) readonly buffer V0 { float v0[]; };

layout(push_constant) uniform P {
    uint w_off, w0_off, a_off, a0_off, v_off, vf_off, vm_off, v0_off, d, total, stride, has_vmix;
    float decay;
} p;

float sigmoid_rn(float x) {
    precise float den = 1.0 + exp_libm(-x);
    return div_rn(1.0, den);
}

void main() {
    for (uint e = gl_GlobalInvocationID.x; e < p.total; e += p.stride) {
        const uint c = e % p.d;
        precise float wi = w[p.w_off + e] + w0[p.w0_off + c];
        precise float de = p.decay * sigmoid_rn(wi);
        w[p.w_off + e] = exp_libm(de);
        precise float ai = a[p.a_off + e] + a0[p.a0_off + c];
        a[p.a_off + e] = sigmoid_rn(ai);
        if (p.has_vmix != 0u) {
            precise float gi = vm[p.vm_off + e] + v0[p.v0_off + c];
            const float gate = sigmoid_rn(gi);
            const float vi = v[p.v_off + e];
            precise float nv = vi + (vf[p.vf_off + e] - vi) * gate;
            v[p.v_off + e] = nv;
        }
    }
}
