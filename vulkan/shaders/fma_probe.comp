#version 450
// r[i] = fma(a[i], b[i], c[i]) with the shader's own fma(): the host checks
// whether this device fuses it (one rounding), to choose between it and the
// emulated fma_rn (common.glsl).
#include "common.glsl"

layout(std430, binding = 0) buffer V { float v[]; };  // n triples, then n results

layout(push_constant) uniform P { uint n; } p;

void main() {
    const uint i = gl_GlobalInvocationID.x;
    if (i >= p.n) return;
    precise float r = fma(v[3u * i], v[3u * i + 1u], v[3u * i + 2u]);
    v[3u * p.n + i] = r;
}
