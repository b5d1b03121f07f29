#version 450
// x *= s, as a plain float product (ggml_scale).
#include "common.glsl"

layout(std430, binding = 0) buffer X { float x[]; };

layout(push_constant) uniform P { uint x_off, n, stride; float s; } p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) {
        precise float r = x[p.x_off + i] * p.s;
        x[p.x_off + i] = r;
    }
}
