#version 450
// Attention of new queries over a sinks + ring KV cache with fused
// dequantization and pre-RoPE keys, as the CPU reference
// (CpuStream::cache_attention) defines it. One workgroup per (query, KV
// head), for the GROUP query heads sharing that KV head. Keys are visited in
// tiles of WG, one per invocation: decoded, Hadamard-inverted if they were
// rotated, RoPE-rotated to their cache position and scored; an online softmax
// keeps the running maximum and sum, and each invocation then accumulates
// the value sum for its share of the GROUP x HD outputs.
//
// Positions relative to the batch's first query p0 (stream positions can
// exceed 32 bits, these cannot): query i sees sinks 0 .. min(S, p0+i+1) - 1
// and window tokens p0 + d for d in [rel_wb, i], rel_wb = max(rel_S, i+1-W)
// (rel_S = S - p0, clamped). Tokens at d >= 0 are the batch's own staged
// rows; older window tokens sit in ring slot S + (p0mod + d) mod W. A window
// token is rotated to S + d - rel_wfirst and the query to S + i - rel_wfirst
// (rel_wfirst: the first window token the batch's first query sees), so
// query-key distances are real token distances; sinks are rotated to their
// index and the query to its own cache position for them.
#include "common.glsl"
#include "kv_rows.glsl"

layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint GROUP = 1;
layout(constant_id = 3) const uint CODEC = 1;
layout(constant_id = 4) const bool HADAMARD = false;
layout(constant_id = 5) const bool NEOX = false;
const uint ACC = (GROUP * HD + WG - 1) / WG;

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer KC { uint kc[]; };
layout(std430, binding = 3) readonly buffer VC { uint vc[]; };
layout(std430, binding = 4) readonly buffer KN { uint kn[]; };
layout(std430, binding = 5) readonly buffer VN { uint vn[]; };
layout(std430, binding = 6) readonly buffer CS { float cs[]; };
layout(std430, binding = 7) readonly buffer SG { float signs[]; };

layout(push_constant) uniform P {
    uint q_off, o_off, cs_off, signs_off;  // floats
    uint k_off, v_off, kn_off, vn_off;     // bytes
    uint n_head, S, W, pos0c;              // pos0c = min(p0, S)
    int rel_S, rel_wfirst;
    uint p0mod, row_bytes, head_bytes, n_dims;
    float scale;
} p;

shared float qs[GROUP * HD];  // queries rotated for the sinks
shared float qw[GROUP * HD];  // ... and for the window
shared float sc[GROUP * WG];  // scores, then softmax weights, of the tile
shared uint vrow[WG];         // byte offset of each tile key's value row
shared bool vfresh[WG];       // ... in the staged rows (else in the cache)

// Rotates the pair (a, b) by the angle of cache position pos, pair k.
vec2 rope(float a, float b, uint pos, uint k) {
    const uint c = p.cs_off + (pos * (p.n_dims / 2u) + k) * 2u;
    const float co = cs[c], si = cs[c + 1u];
    precise float x = a * co - b * si;
    precise float y = a * si + b * co;
    return vec2(x, y);
}

uvec2 pair_dims(uint k) { return NEOX ? uvec2(k, k + p.n_dims / 2u) : uvec2(2u * k, 2u * k + 1u); }

void main() {
    const uint g = gl_WorkGroupID.x, i = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
    const uint S = p.S;
    const uint sinks_vis = p.pos0c >= S ? S : min(S, p.pos0c + i + 1u);
    const int rel_wb = max(p.rel_S, int(i) + 1 - int(p.W));
    const uint win_vis = uint(max(int(i) + 1 - rel_wb, 0));
    const uint n_vis = sinks_vis + win_vis;
    const uint qpos_sink = n_vis - 1u;
    // (with no window token visible the window query is never used; keep it in the table)
    const uint qpos_win = win_vis > 0u ? uint(int(S) + int(i) - p.rel_wfirst) : qpos_sink;

    // Queries of the group, rotated both ways.
    const uint qb = p.q_off + (i * p.n_head + g * GROUP) * HD;
    for (uint e = t; e < GROUP * HD; e += WG) {
        qs[e] = q[qb + e];
        qw[e] = q[qb + e];
    }
    barrier();
    for (uint e = t; e < GROUP * (p.n_dims / 2u); e += WG) {
        const uint h = e / (p.n_dims / 2u), k = e % (p.n_dims / 2u);
        const uvec2 d = pair_dims(k) + h * HD;
        const float a = qs[d.x], b = qs[d.y];
        const vec2 rs = rope(a, b, qpos_sink, k), rw = rope(a, b, qpos_win, k);
        qs[d.x] = rs.x;
        qs[d.y] = rs.y;
        qw[d.x] = rw.x;
        qw[d.y] = rw.y;
    }
    barrier();

    float m[GROUP], l[GROUP], acc[ACC];
    for (uint h = 0; h < GROUP; h++) {
        m[h] = uintBitsToFloat(0xff800000u);  // -inf
        l[h] = 0.0;
    }
    for (uint k = 0; k < ACC; k++) acc[k] = 0.0;
    const uint head = g * p.head_bytes;

    for (uint base = 0; base < n_vis; base += WG) {
        const uint idx = base + t;
        const bool valid = idx < n_vis;
        if (valid) {
            uint row, pos;
            bool fresh, sink = idx < sinks_vis;
            if (sink) {
                fresh = p.pos0c < S && idx >= p.pos0c;
                row = fresh ? idx - p.pos0c : idx;
                pos = idx;
            } else {
                const int d = rel_wb + int(idx - sinks_vis);
                fresh = d >= 0;
                int slot = int(p.p0mod) + d;
                if (slot < 0) slot += int(p.W);
                row = fresh ? uint(d) : S + uint(slot);
                pos = uint(int(S) + d - p.rel_wfirst);
            }
            const uint koff = (fresh ? p.kn_off : p.k_off) + row * p.row_bytes + head;
            vrow[t] = (fresh ? p.vn_off : p.v_off) + row * p.row_bytes + head;
            vfresh[t] = fresh;
            float kk[HD];
            for (uint e = 0; e < HD; e++) {
                if (fresh) DECODE_KV(kn, CODEC, koff, e, kk[e])
                else DECODE_KV(kc, CODEC, koff, e, kk[e])
            }
            if (HADAMARD) {
                // inverse rotation: diag(s) H x, stages in the CPU's order
                for (uint hs = 1u; hs < HD; hs *= 2u)
                    for (uint a = 0; a < HD; a += 2u * hs)
                        for (uint j = a; j < a + hs; j++) {
                            precise float s0 = kk[j] + kk[j + hs];
                            precise float s1 = kk[j] - kk[j + hs];
                            kk[j] = s0;
                            kk[j + hs] = s1;
                        }
                for (uint e = 0; e < HD; e++) {
                    precise float s = kk[e] * signs[p.signs_off + e];
                    kk[e] = s;
                }
            }
            for (uint k = 0; k < p.n_dims / 2u; k++) {
                const uvec2 d = pair_dims(k);
                const vec2 r = rope(kk[d.x], kk[d.y], pos, k);
                kk[d.x] = r.x;
                kk[d.y] = r.y;
            }
            for (uint h = 0; h < GROUP; h++) {
                float s = 0.0;
                for (uint e = 0; e < HD; e++) s += kk[e] * (sink ? qs[h * HD + e] : qw[h * HD + e]);
                sc[h * WG + t] = s * p.scale;
            }
        }
        barrier();

        // Online softmax over the tile (uniform: every invocation gets the same m, l).
        float resc[GROUP];
        for (uint h = 0; h < GROUP; h++) {
            const float mt = wg_max(valid ? sc[h * WG + t] : uintBitsToFloat(0xff800000u));
            const float mn = max(m[h], mt);
            const float e = valid ? exp(sc[h * WG + t] - mn) : 0.0;
            const float sum = wg_sum(e);
            sc[h * WG + t] = e;
            resc[h] = exp(m[h] - mn);
            l[h] = l[h] * resc[h] + sum;
            m[h] = mn;
        }
        barrier();

        const uint n_tile = min(WG, n_vis - base);
        for (uint k = 0; k < ACC; k++) {
            const uint e = t + k * WG;
            if (e >= GROUP * HD) break;
            const uint h = e / HD, dd = e % HD;
            float a = acc[k] * resc[h];
            for (uint j = 0; j < n_tile; j++) {
                float v;
                if (vfresh[j]) DECODE_KV(vn, CODEC, vrow[j], dd, v)
                else DECODE_KV(vc, CODEC, vrow[j], dd, v)
                a += sc[h * WG + j] * v;
            }
            acc[k] = a;
        }
        barrier();
    }

    const uint ob = p.o_off + (i * p.n_head + g * GROUP) * HD;
    for (uint k = 0; k < ACC; k++) {
        const uint e = t + k * WG;
        if (e >= GROUP * HD) break;
        o[ob + e] = acc[k] * (1.0 / l[e / HD]);
    }
}
