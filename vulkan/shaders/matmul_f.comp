#version 450
// Float weights (F32, F16, BF16). F16 / BF16 rows meet activations already
// rounded to the same type (quantize.comp), as the CPU reference does; F32
// rows read the activations as they are.
#include "common.glsl"
#include "weights.glsl"
#include "matmul_common.glsl"

float wconv(uint h) { return WTYPE == TYPE_F16 ? half_to_float(h) : bf16_to_float(h); }

void accumulate_row(uint row, uint t0, uint lane, uint lanes, inout float acc[NT]) {
    const uint wrow = (p.w_off + row * p.w_stride) >> 2;
    if (WTYPE == TYPE_F32) {
        for (uint c = lane; c < p.ncols; c += lanes) {
            const float wv = uintBitsToFloat(w[wrow + c]);
            for (uint t = 0; t < NT; t++) {
                if (t0 + t >= p.ntok) break;
                precise float v = wv * uintBitsToFloat(x[p.x_off + (t0 + t) * p.x_stride + c]);
                acc[t] += v;
            }
        }
        return;
    }
    // 8 values per load; the zero pad of weight rows meets the zero pad of
    // converted activation rows
    const uint xw4 = p.x_stride / 4u;
    for (uint c = lane; 8u * c < p.ncols; c += lanes) {
        const uvec4 ww = w4[(wrow >> 2) + c];
        for (uint t = 0; t < NT; t++) {
            if (t0 + t >= p.ntok) break;
            const uvec4 xw = x4[p.x_off / 4u + (t0 + t) * xw4 + c];
            for (uint k = 0; k < 4u; k++) {
                precise float v0 = wconv(ww[k] & 0xffffu) * wconv(xw[k] & 0xffffu);
                precise float v1 = wconv(ww[k] >> 16) * wconv(xw[k] >> 16);
                acc[t] += v0;
                acc[t] += v1;
            }
        }
    }
}
