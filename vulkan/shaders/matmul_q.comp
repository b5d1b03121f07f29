#version 450
// Quantized weights (Q8_0, Q4_0, Q4_1) times activations already quantized to
// Q8 blocks (quantize.comp): per block an exact integer dot product, then the
// CPU reference's float terms (d_w * d_x) * isum [+ m_w * s_x]. Each lane
// takes whole blocks and loads their codes 16 bytes at a time: on lavapipe
// that is about twice as fast as lanes splitting a block, and again as fast
// as word loads.
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
            const uvec4 w0 = w4[(wrow >> 4) + 2u * b], w1 = w4[(wrow >> 4) + 2u * b + 1u];
            wq[0] = w0.x; wq[1] = w0.y; wq[2] = w0.z; wq[3] = w0.w;
            wq[4] = w1.x; wq[5] = w1.y; wq[6] = w1.z; wq[7] = w1.w;
            dw = half_to_float(LOAD_U16(w, wrow + qbytes + 2u * b));
        } else {
            const uvec4 wv = w4[(wrow >> 4) + b];
            wq[0] = wv.x; wq[1] = wv.y; wq[2] = wv.z; wq[3] = wv.w;
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
            // the block's 32 activation codes: two 16-byte loads
            const uvec4 xlo = x4[(xb >> 2) + 2u * b], xhi = x4[(xb >> 2) + 2u * b + 1u];
            int isum = 0;
            if (WTYPE == TYPE_Q8_0) {
                for (uint k = 0; k < 8u; k++) {
                    const int a = int(wq[k]), c = int(k < 4u ? xlo[k] : xhi[k - 4u]);
                    for (int e = 0; e < 32; e += 8) isum += bitfieldExtract(a, e, 8) * bitfieldExtract(c, e, 8);
                }
            } else {
                const int off = WTYPE == TYPE_Q4_0 ? 8 : 0;
                for (uint k = 0; k < 4u; k++) {
                    const int lo = int(xlo[k]), hi = int(xhi[k]);
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
