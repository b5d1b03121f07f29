#version 450
// Activations converted to what the CPU reference multiplies a weight row
// with (kvfit::vec_dot_type): Q8_0 / Q8_1 blocks for quantized weights, halfs
// or bfloat16 for F16 / BF16 weights. Per token row, in words:
//   Q8  : ncols/4 words of int8 codes, ncols/32 floats d (the fp16-rounded
//         scale), ncols/32 floats s (fp16-rounded d * sum of codes, Q8_1 only)
//   Q8_K: ncols/4 words of int8 codes, ncols/256 floats d, then per
//         super-block 16 ints (the sums of its codes 16 at a time)
//   F16 / BF16: (ncols + 1)/2 words of two values each, then zeros
// Rows are q_stride words apart (a multiple of 4: matmul loads 16 bytes).
#include "common.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Q { uint q[]; };

layout(push_constant) uniform P {
    uint mode;  // 0 Q8_0, 1 Q8_1, 2 F16, 3 BF16, 4 Q8_K
    uint ncols, x_off, q_off, q_stride;
} p;

void main() {
    const uint i = gl_GlobalInvocationID.x;  // block (Q8, Q8_K) or pair of values
    const uint t = gl_WorkGroupID.y;
    const uint xb = p.x_off + t * p.ncols, qb = p.q_off + t * p.q_stride;
    if (p.mode == 2u || p.mode == 3u) {
        // every word of the padded row, the pad zero
        if (i >= p.q_stride) return;
        const float a = 2u * i < p.ncols ? x[xb + 2u * i] : 0.0;
        const float b = 2u * i + 1u < p.ncols ? x[xb + 2u * i + 1u] : 0.0;
        q[qb + i] = p.mode == 2u ? float_to_half(a) | (float_to_half(b) << 16)
                                 : float_to_bf16(a) | (float_to_bf16(b) << 16);
        return;
    }
    if (p.mode == 4u) {
        // as the CPU's quantize_block_q8_K: the value of largest magnitude (the
        // first on ties) sets iscale = -127 / max; q = min(127, round(iscale x))
        // ties to even; d = 1 / iscale
        const uint nk = p.ncols / 256u;
        if (i >= nk) return;
        const uint xs = xb + 256u * i;
        float amax = 0.0, mx = 0.0;
        for (uint j = 0; j < 256u; j++) {
            const float v = x[xs + j];
            if (abs(v) > amax) {
                amax = abs(v);
                mx = v;
            }
        }
        const float iscale = amax != 0.0 ? div_rn(-127.0, mx) : 0.0;
        const uint sb = qb + p.ncols / 4u + nk + 16u * i;
        for (uint g = 0; g < 16u; g++) {
            int sum = 0;
            for (uint k = 0; k < 4u; k++) {
                uint word = 0u;
                for (uint e = 0; e < 4u; e++) {
                    precise float s = iscale * x[xs + 16u * g + 4u * k + e];
                    const int v = min(127, int(roundEven(s)));
                    sum += v;
                    word |= (uint(v) & 0xffu) << (8u * e);
                }
                q[qb + 64u * i + 4u * g + k] = word;
            }
            q[sb + g] = uint(sum);
        }
        q[qb + p.ncols / 4u + i] = floatBitsToUint(amax != 0.0 ? div_rn(1.0, iscale) : 0.0);
        return;
    }
    const uint nb = p.ncols / 32u;
    if (i >= nb) return;
    float amax = 0.0;
    for (uint j = 0; j < 32u; j++) amax = max(amax, abs(x[xb + 32u * i + j]));
    const float d = div_rn(amax, 127.0);
    const float id = amax != 0.0 ? div_rn(127.0, amax) : 0.0;
    int sum = 0;
    for (uint k = 0; k < 8u; k++) {
        uint word = 0u;
        for (uint e = 0; e < 4u; e++) {
            precise float s = x[xb + 32u * i + 4u * k + e] * id;
            const int v = int(roundEven(s));
            sum += v;
            word |= (uint(v) & 0xffu) << (8u * e);
        }
        q[qb + 8u * i + k] = word;
    }
    q[qb + p.ncols / 4u + i] = floatBitsToUint(half_to_float(float_to_half(d)));
    if (p.mode == 1u) {
        precise float s = d * float(sum);
        q[qb + p.ncols / 4u + nb + i] = floatBitsToUint(half_to_float(float_to_half(s)));
    }
}
