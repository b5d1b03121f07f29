#version 450
// k-quant weights (Q4_K, Q5_K, Q6_K) times activations already quantized to
// Q8_K blocks (quantize.comp), in the CPU reference's order of float
// operations (src/backend/cpu/kernels_impl.h), so every output has the CPU's
// bits. Per super-block of 256 values, 8 integer lanes: lane k sums, over the
// 8 chunks c of 32 values, the chunk's integer scale times the products of
// its values 4k .. 4k+3 (Q6_K then removes its offset of 32 through the
// activation block sums); acc[k] = fma_rn(d_x * d_w, lane k, acc[k]),
// super-block after super-block; then ((a0+a4) + (a2+a6)) + ((a1+a5) +
// (a3+a7)), plus the minimums: Q4_K four lanes (lane k: sub-blocks 2k and
// 2k+1) chained as fma_rn(-d_x * dmin_w, lane, .) and added as
// ((m0+m2) + (m1+m3)); Q5_K one such chain over all eight sub-blocks.
//
// As in matmul_q.comp, invocation (row, k) owns lane k of one row for NT
// tokens (and, for Q4_K, minimum lane k < 4) and walks the super-blocks in
// order; a workgroup holds WG / 8 rows; the lanes meet in shared memory.
//
// Activation row (words): ncols/4 of int8 codes, ncols/256 float d, then 16
// int sums of 16 codes per super-block.
#include "common.glsl"
#include "weights.glsl"

layout(constant_id = 1) const uint WTYPE = 12;  // weight type (GGUF id)
layout(constant_id = 2) const uint NT = 1;      // tokens per workgroup
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
shared float mins_[WG * NT];   // [row][token][lane]: Q4_K lanes 0..3, Q5_K lane 0

// The sum of the four byte products of a word of weight codes (unsigned)
// and a word of activation codes (signed).
int dot4(uint wq, uint xq) {
    int s = 0;
    for (int e = 0; e < 32; e += 8) s += int(bitfieldExtract(wq, e, 8)) * bitfieldExtract(int(xq), e, 8);
    return s;
}

void main() {
    const uint k = gl_LocalInvocationID.x % 8u, rl = gl_LocalInvocationID.x / 8u;
    const uint t0 = gl_WorkGroupID.y * NT;
    const uint nb = p.ncols / 256u;
    const uint bbytes = WTYPE == TYPE_Q4_K ? 144u : WTYPE == TYPE_Q5_K ? 176u : 208u;
    for (uint r0 = gl_WorkGroupID.x * ROWS; r0 < p.nrows; r0 += p.n_wg * ROWS) {
        const uint row = r0 + rl;
        float acc[NT], am[NT];
        for (uint t = 0; t < NT; t++) {
            acc[t] = 0.0;
            am[t] = 0.0;
        }
        if (row < p.nrows) {
            const uint wrow = p.w_off + row * p.w_stride;
            for (uint b = 0; b < nb; b++) {
                const uint blk = wrow + bbytes * b;
                uint qw[8];  // chunk c: the codes of values 32c + 4k .. 32c + 4k + 3
                int sc[8];   // chunk c's scale for this lane
                int mn[8];   // Q4_K / Q5_K: the minimum of sub-block c
                int sc0 = 0, sc1 = 0;  // Q6_K: the scales of sub-blocks 2k and 2k + 1
                float dw, dmw = 0.0;
                if (WTYPE == TYPE_Q6_K) {
                    for (uint c = 0; c < 8u; c++) {
                        const uint h = c >> 2, kk = c & 3u;
                        const uint lo = w[((blk + 64u * h + 32u * (kk & 1u)) >> 2) + k];
                        const uint hi = w[((blk + 128u + 32u * h) >> 2) + k];
                        qw[c] = (kk < 2u ? lo & 0x0f0f0f0fu : (lo >> 4) & 0x0f0f0f0fu) |
                                (((hi >> (2u * kk)) & 0x03030303u) << 4);
                        sc[c] = LOAD_I8(w, blk + 192u + 2u * c + (k >= 4u ? 1u : 0u));
                    }
                    sc0 = LOAD_I8(w, blk + 192u + 2u * k);
                    sc1 = LOAD_I8(w, blk + 193u + 2u * k);
                    dw = half_to_float(LOAD_U16(w, wrow + 208u * nb + 2u * b));
                } else {
                    const uint dm = w[blk >> 2];
                    dw = half_to_float(dm & 0xffffu);
                    dmw = half_to_float(dm >> 16);
                    const uint s0 = w[(blk >> 2) + 1u], s1 = w[(blk >> 2) + 2u], s2 = w[(blk >> 2) + 3u];
                    for (uint j = 0; j < 4u; j++) {
                        const uint a = bitfieldExtract(s0, int(8u * j), 8), m = bitfieldExtract(s1, int(8u * j), 8);
                        const uint hh = bitfieldExtract(s2, int(8u * j), 8);
                        sc[j] = int(a & 63u);
                        mn[j] = int(m & 63u);
                        sc[j + 4u] = int((hh & 15u) | ((a >> 6) << 4));
                        mn[j + 4u] = int((hh >> 4) | ((m >> 6) << 4));
                    }
                    const uint qoff = WTYPE == TYPE_Q5_K ? 48u : 16u;
                    const uint hi = WTYPE == TYPE_Q5_K ? w[((blk + 16u) >> 2) + k] : 0u;
                    for (uint c = 0; c < 8u; c++) {
                        const uint lo = w[((blk + qoff + 32u * (c >> 1)) >> 2) + k];
                        qw[c] = ((c & 1u) != 0u ? (lo >> 4) & 0x0f0f0f0fu : lo & 0x0f0f0f0fu) |
                                (((hi >> c) & 0x01010101u) << 4);
                    }
                }
                for (uint t = 0; t < NT; t++) {
                    if (t0 + t >= p.ntok) break;
                    const uint xb = p.x_off + (t0 + t) * p.x_stride;
                    const uint sb = xb + p.ncols / 4u + nb + 16u * b;  // this super-block's 16 sums
                    int lane = 0;
                    for (uint c = 0; c < 8u; c++) lane += sc[c] * dot4(qw[c], x[xb + 64u * b + 8u * c + k]);
                    if (WTYPE == TYPE_Q6_K) lane -= 32 * (int(x[sb + 2u * k]) * sc0 + int(x[sb + 2u * k + 1u]) * sc1);
                    const float dx = uintBitsToFloat(x[xb + p.ncols / 4u + b]);
                    precise float d = dx * dw;
                    precise float a = fma_rn(d, float(lane), acc[t]);
                    acc[t] = a;
                    if (WTYPE == TYPE_Q4_K && k < 4u) {
                        const int ml = mn[2u * k] * (int(x[sb + 4u * k]) + int(x[sb + 4u * k + 1u])) +
                                       mn[2u * k + 1u] * (int(x[sb + 4u * k + 2u]) + int(x[sb + 4u * k + 3u]));
                        precise float dmin = -dx * dmw;
                        precise float m = fma_rn(dmin, float(ml), am[t]);
                        am[t] = m;
                    }
                    if (WTYPE == TYPE_Q5_K && t % 8u == k) {
                        int ml = 0;
                        for (uint j = 0; j < 8u; j++) ml += mn[j] * (int(x[sb + 2u * j]) + int(x[sb + 2u * j + 1u]));
                        precise float dmin = -dx * dmw;
                        precise float m = fma_rn(dmin, float(ml), am[t]);
                        am[t] = m;
                    }
                }
            }
        }
        for (uint t = 0; t < NT; t++) {
            lanes_[(rl * NT + t) * 8u + k] = acc[t];
            mins_[(rl * NT + t) * 8u + k] = am[t];
        }
        barrier();
        for (uint t = k; t < NT; t += 8u) {
            if (row >= p.nrows || t0 + t >= p.ntok) break;
            const uint o = (rl * NT + t) * 8u;
            precise float s0 = lanes_[o + 4u] + lanes_[o];
            precise float s1 = lanes_[o + 5u] + lanes_[o + 1u];
            precise float s2 = lanes_[o + 6u] + lanes_[o + 2u];
            precise float s3 = lanes_[o + 7u] + lanes_[o + 3u];
            precise float s = (s0 + s2) + (s1 + s3);
            if (WTYPE == TYPE_Q4_K) {
                precise float m = (mins_[o] + mins_[o + 2u]) + (mins_[o + 1u] + mins_[o + 3u]);
                s += m;
            } else if (WTYPE == TYPE_Q5_K) {
                s += mins_[o + t % 8u];
            }
            y[p.y_off + (t0 + t) * p.ldy + row] = s;
        }
        barrier();
    }
}
