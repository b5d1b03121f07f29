#version 450
// x = f(x) in place (Stream::activate): f = 0 tanh, 1 sigmoid 1 / (1 +
// exp(-x)), 2 squared ReLU. With doubles, the CPU reference's C library
// functions bit for bit (tanh_libm, exp_libm, div_rn); without, tanh and the
// sigmoid differ in the last bits.
#include "common.glsl"
#include "exact_math.glsl"
#include "tanh_libm.glsl"

layout(std430, binding = 0) buffer X { float x[]; };

layout(push_constant) uniform P { uint x_off, n, stride, f; } p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        const float v = x[p.x_off + i];
        precise float r;
        if (p.f == 0u) {
            r = tanh_libm(v);
        } else if (p.f == 1u) {
            precise float den = 1.0 + exp_libm(-v);
            r = div_rn(1.0, den);
        } else {
            const float q = v > 0.0 ? v : 0.0;
            r = q * q;
        }
        x[p.x_off + i] = r;
    }
}
