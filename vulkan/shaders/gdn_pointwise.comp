#version 450
// Gated DeltaNet: the element-wise ops around the delta rule, as the CPU
// reference computes them (Stream::silu, sigmoid_mul and the gate of
// gated_rmsnorm). mode
//   0  c = silu(a): a / (1 + exp(-a)), ggml's vector exp for the whole groups
//      of 16 of each row of `width` values and the C library's for the rest
//      (silu over n values is one row of n);
//   1  c = a * (1 / (1 + exp(-b))), the C library's exp (sigmoid_mul);
//   2  c = a * silu(b), silu of b as in mode 0 (the gate of gated_rmsnorm).
// c may alias a.
#include "common.glsl"
#include "exact_math.glsl"

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer C { float c[]; };

layout(push_constant) uniform P { uint a_off, b_off, c_off, n, stride, mode, width; } p;

float silu_at(float x, uint i) {
    const uint col = i % p.width;
    precise float nx = 0.0 - x;
    precise float den = 1.0 + (col < (p.width & ~15u) ? exp_ggml(nx) : exp_libm(nx));
    return div_rn(x, den);
}

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        const float x = a[p.a_off + i];
        float r;
        if (p.mode == 0u) {
            r = silu_at(x, i);
        } else if (p.mode == 1u) {
            const float g = b[p.b_off + i];
            precise float den = 1.0 + exp_libm(0.0 - g);
            precise float m = x * div_rn(1.0, den);
            r = m;
        } else {
            precise float m = x * silu_at(b[p.b_off + i], i);
            r = m;
        }
        c[p.c_off + i] = r;
    }
}
