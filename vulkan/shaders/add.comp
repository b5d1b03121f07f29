#version 450
// y += x.
#include "common.glsl"

layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };

layout(push_constant) uniform P { uint y_off, x_off, n, stride; } p;

void main() {
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += p.stride) y[p.y_off + i] += x[p.x_off + i];
}
