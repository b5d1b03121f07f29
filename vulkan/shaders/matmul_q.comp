#version 450
// Quantized weights (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) times activations already quantized to
// Q8 blocks (quantize.comp), in the CPU reference's order of float operations
// (src/backend/cpu/kernels_impl.h), so every output has the CPU's bits: per
// block, 8 integer lane sums (lane k: elements 4k .. 4k+3), each added into
// its own float accumulator as acc[k] = fma_rn(d_w * d_x, lane k, acc[k]), block
// after block; then ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)), plus, for
// Q4_1 and Q5_1, the chain fma_rn(m_w, s_x, .) over the blocks.
//
// The lane accumulators are independent, the blocks are not: invocation
// (row, k) owns lane k of one row for NT tokens and walks the blocks in
// order, loading one word of weights and one of activations per block and
// token (consecutive invocations read consecutive words). A workgroup holds
// WG / 8 rows; the lanes meet in shared memory.
#include "common.glsl"
#include "weights.glsl"

layout(constant_id = 1) const uint WTYPE = 2;  // weight type (GGUF id)
layout(constant_id = 2) const uint NT = 1;     // tokens per workgroup
const uint ROWS = WG / 8u;

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 1) readonly buffer X { uint x[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint ncols, nrows, ntok;
    uint w_off, w_stride;  // bytes
    uint x_off, x_stride;  // words
    uint y_off, ldy;       // floats
    uint n_wg;             // workgroups along x in this dispatch
} p;

shared float lanes_[WG * NT];  // [row][token][lane]
shared float mins_[WG * NT];   // Q4_1, Q5_1: [row][token] min chains, one per (row, token)

void main() {
    const uint k = gl_LocalInvocationID.x % 8u, rl = gl_LocalInvocationID.x / 8u;
    const uint t0 = gl_WorkGroupID.y * NT;
    const uint nb = p.ncols / 32u;
    const uint qbytes = WTYPE == TYPE_Q8_0 ? p.ncols : p.ncols / 2u;
    const bool q5 = WTYPE == TYPE_Q5_0 || WTYPE == TYPE_Q5_1;
    const bool has_min = WTYPE == TYPE_Q4_1 || WTYPE == TYPE_Q5_1;
    // Q5_0 / Q5_1: the words of fifth bits sit between codes and scales
    const uint sbytes = qbytes + (q5 ? 4u * nb : 0u);
    for (uint r0 = gl_WorkGroupID.x * ROWS; r0 < p.nrows; r0 += p.n_wg * ROWS) {
        const uint row = r0 + rl;
        float acc[NT], ms[NT];
        for (uint t = 0; t < NT; t++) {
            acc[t] = 0.0;
            ms[t] = 0.0;
        }
        if (row < p.nrows) {
            const uint wrow = p.w_off + row * p.w_stride;
            for (uint b = 0; b < nb; b++) {
                uint wq;
                float dw, mw = 0.0;
                if (WTYPE == TYPE_Q8_0) {
                    wq = w[((wrow + 32u * b) >> 2) + k];
                    dw = half_to_float(LOAD_U16(w, wrow + qbytes + 2u * b));
                } else {
                    wq = w[((wrow + 16u * b) >> 2) + (k & 3u)];
                    wq = k < 4u ? wq & 0x0f0f0f0fu : (wq >> 4) & 0x0f0f0f0fu;
                    if (q5) {
                        // lane k holds values 4k .. 4k+3: bits 4k .. 4k+3 of the block's word
                        const uint hb = w[((wrow + qbytes) >> 2) + b] >> (4u * k);
                        wq |= ((hb & 1u) << 4) | ((hb & 2u) << 11) | ((hb & 4u) << 18) | ((hb & 8u) << 25);
                    }
                    if (WTYPE == TYPE_Q4_0 || WTYPE == TYPE_Q5_0) {
                        dw = half_to_float(LOAD_U16(w, wrow + sbytes + 2u * b));
                    } else {
                        const uint dm = w[(wrow + sbytes + 4u * b) >> 2];
                        dw = half_to_float(dm & 0xffffu);
                        mw = half_to_float(dm >> 16);
                    }
                }
                for (uint t = 0; t < NT; t++) {
                    if (t0 + t >= p.ntok) break;
                    const uint xb = p.x_off + (t0 + t) * p.x_stride;
                    const int xq = int(x[xb + 8u * b + k]);
                    int lane = 0;
                    for (int e = 0; e < 32; e += 8) {
                        const int wv = WTYPE == TYPE_Q8_0 ? bitfieldExtract(int(wq), e, 8)
                                                          : int(bitfieldExtract(wq, e, 8)) - (WTYPE == TYPE_Q4_0 ? 8 : WTYPE == TYPE_Q5_0 ? 16 : 0);
                        lane += wv * bitfieldExtract(xq, e, 8);
                    }
                    const float dx = uintBitsToFloat(x[xb + p.ncols / 4u + b]);
                    precise float dd = dw * dx;
                    precise float a = fma_rn(dd, float(lane), acc[t]);
                    acc[t] = a;
                    if (has_min && t % 8u == k) {
                        precise float m = fma_rn(mw, uintBitsToFloat(x[xb + p.ncols / 4u + nb + b]), ms[t]);
                        ms[t] = m;
                    }
                }
            }
        }
        for (uint t = 0; t < NT; t++) {
            lanes_[(rl * NT + t) * 8u + k] = acc[t];
            if (t % 8u == k) mins_[rl * NT + t] = ms[t];
        }
        barrier();
        for (uint t = k; t < NT; t += 8u) {
            if (row >= p.nrows || t0 + t >= p.ntok) break;
            const uint o = (rl * NT + t) * 8u;
            precise float s0 = lanes_[o + 4u] + lanes_[o];
            precise float s1 = lanes_[o + 5u] + lanes_[o + 1u];
            precise float s2 = lanes_[o + 6u] + lanes_[o + 2u];
            precise float s3 = lanes_[o + 7u] + lanes_[o + 3u];
            precise float s = ((s0 + s2) + (s1 + s3)) + mins_[rl * NT + t];
            y[p.y_off + (t0 + t) * p.ldy + row] = s;
        }
        barrier();
    }
}
