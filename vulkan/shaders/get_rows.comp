#version 450
// x[i] = dequantized row ids[i] of a weight table (token embeddings). Rows
// outside [row0, row1) belong to another dispatch (tables larger than one
// storage-buffer binding are bound in chunks).
#include "common.glsl"
#include "weights.glsl"

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer I { int ids[]; };
layout(std430, binding = 2) writeonly buffer X { float x[]; };

layout(push_constant) uniform P {
    uint type, ncols, stride;  // stride: bytes per row
    uint w_off;                // bytes: row row0 of the binding
    uint ids_off, x_off;       // elements
    uint row0, row1;
} p;

void main() {
    const uint c = gl_GlobalInvocationID.x;
    const uint i = gl_WorkGroupID.y;
    if (c >= p.ncols) return;
    const int row = ids[p.ids_off + i];
    if (row < int(p.row0) || row >= int(p.row1)) return;
    const uint base = p.w_off + uint(row - int(p.row0)) * p.stride;
    float v;
    DEQUANT_WEIGHT(w, p.type, base, p.ncols, c, v);
    x[p.x_off + i * p.ncols + c] = v;
}
