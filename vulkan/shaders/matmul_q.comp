#version 450
// Quantized weights (Q8_0, Q4_0, Q4_1) times activations already quantized to
// Q8 blocks (quantize.comp): per block an exact integer dot product, then the
// CPU reference's float terms (d_w * d_x) * isum [+ m_w * s_x]. Each lane
// takes whole blocks (contiguous 16 or 32 bytes of codes): on lavapipe this
// is about twice as fast as lanes splitting a block.
#include "common.glsl"
#include "weights.glsl"
#include "matmul_common.glsl"

void accumulate_row(uint row, uint t0, uint lane, uint lanes, inout float acc[NT]) {
    const uint nb = p.ncols / 32u;
    const uint wrow = p.w_off + row * p.w_stride;
    const uint qbytes = WTYPE == TYPE_Q8_0 ? p.ncols : p.ncols / 2u;
    for (uint b = lane; b < nb; b += lanes) {
        uint wq[8];
        float dw, mw = 0.0;
        if (WTYPE == TYPE_Q8_0) {
            for (uint k = 0; k < 8u; k++) wq[k] = w[(wrow >> 2) + 8u * b + k];
            dw = half_to_float(LOAD_U16(w, wrow + qbytes + 2u * b));
        } else {
            for (uint k = 0; k < 4u; k++) wq[k] = w[(wrow >> 2) + 4u * b + k];
            if (WTYPE == TYPE_Q4_0) {
                dw = half_to_float(LOAD_U16(w, wrow + qbytes + 2u * b));
            } else {
                const uint dm = w[(wrow + qbytes + 4u * b) >> 2];
                dw = half_to_float(dm & 0xffffu);
                mw = half_to_float(dm >> 16);
            }
        }
        for (uint t = 0; t < NT; t++) {
            if (t0 + t >= p.ntok) break;
            const uint xb = p.x_off + (t0 + t) * p.x_stride;
            int isum = 0;
            if (WTYPE == TYPE_Q8_0) {
                for (uint k = 0; k < 8u; k++) {
                    const int a = int(wq[k]), c = int(x[xb + 8u * b + k]);
                    for (int e = 0; e < 32; e += 8) isum += bitfieldExtract(a, e, 8) * bitfieldExtract(c, e, 8);
                }
            } else {
                const int off = WTYPE == TYPE_Q4_0 ? 8 : 0;
                for (uint k = 0; k < 4u; k++) {
                    const int lo = int(x[xb + 8u * b + k]), hi = int(x[xb + 8u * b + 4u + k]);
                    for (int e = 0; e < 32; e += 8) {
                        isum += (int(bitfieldExtract(wq[k], e, 4)) - off) * bitfieldExtract(lo, e, 8);
                        isum += (int(bitfieldExtract(wq[k], e + 4, 4)) - off) * bitfieldExtract(hi, e, 8);
                    }
                }
            }
            const float dx = uintBitsToFloat(x[xb + p.ncols / 4u + b]);
            precise float v = (dw * dx) * float(isum);
            if (WTYPE == TYPE_Q4_1) {
                precise float m = mw * uintBitsToFloat(x[xb + p.ncols / 4u + nb + b]);
                precise float vm = v + m;
                acc[t] += vm;
            } else {
                acc[t] += v;
            }
        }
    }
}
