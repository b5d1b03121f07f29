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
    for (uint c = lane; 2u * c < p.ncols; c += lanes) {
        const uint ww = w[wrow + c];  // the pad half of an odd row is zero
        const float w0 = wconv(ww & 0xffffu), w1 = wconv(ww >> 16);
        for (uint t = 0; t < NT; t++) {
            if (t0 + t >= p.ntok) break;
            const uint xw = x[p.x_off + (t0 + t) * p.x_stride + c];
            precise float v0 = w0 * wconv(xw & 0xffffu);
            precise float v1 = w1 * wconv(xw >> 16);
            acc[t] += v0;
            acc[t] += v1;
        }
    }
}
