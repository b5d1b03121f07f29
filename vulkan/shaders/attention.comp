#version 450
// Attention of new queries over a sinks + ring KV cache with fused
// dequantization and pre-RoPE keys, in kvfit's attention order
// (src/backend/cpu/attention_order.h), so that the results are the CPU's
// bit for bit where fma_rn is exact. A workgroup takes one KV head, a block
// of QB consecutive queries and the GROUP query heads that share the KV
// head: R = QB x GROUP rows. Keys are visited in tiles of WG, one per
// invocation: decoded, Hadamard-inverted if they were rotated, RoPE-rotated
// to their cache position once for all rows, and scored against every row
// that may see them. Invocation r < R then walks the tile's keys in order
// for row r (the online softmax of the row's current chunk of 256 visible
// keys, and the merge of a chunk that ends), and each invocation applies
// the same steps to its share of the output dimensions of every row.
//
// With n_split > 1 (one query: decode over more than one chunk) workgroup z
// takes chunk z alone and writes its maximum, sum and accumulator to o (the
// partials buffer); attention_merge.comp merges the chunks in order.
//
// With CHANNEL (KVFIT_KV_Q4_CHANNEL) keys are F16 rows in the staged rows,
// the sinks (ks) and the block being filled (kr, from relative position
// rel_res0 on), and Q4 groups per channel in the window's packed blocks (kc,
// block (ring slot / 32), token ring slot % 32); values are rows as usual.
//
// Positions relative to the batch's first query p0 (stream positions can
// exceed 32 bits, these cannot): query i sees sinks 0 .. min(S, p0+i+1) - 1
// and window tokens p0 + d for d in [rel_wb(i), i], rel_wb(i) = max(rel_S,
// i+1-W) (rel_S = S - p0, clamped). Tokens at d >= 0 are the batch's own
// staged rows; older window tokens sit in ring slot S + (p0mod + d) mod W. A
// window token is rotated to S + d - rel_wfirst and the query to
// S + i - rel_wfirst (rel_wfirst: the first window token the batch's first
// query sees), so every query-key distance is the real token distance and a
// key's rotation is the same for all queries; sinks are rotated to their
// index, and the query to its own cache position for them.
//
// With ROTATED the keys were stored after RoPE at their stream positions (a
// dense F16 cache, or the ring of a layer with the model's own sliding
// window, S = 0) and are not rotated here; the host sets rel_wfirst = -p0,
// which puts each query at its own stream position p0 + i.
#include "common.glsl"
#include "exact_math.glsl"
#include "kv_rows.glsl"

layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint GROUP = 1;
layout(constant_id = 3) const uint CODEC = 1;
layout(constant_id = 4) const bool HADAMARD = false;
layout(constant_id = 5) const bool NEOX = false;
layout(constant_id = 6) const uint QB = 1;
layout(constant_id = 7) const bool CHANNEL = false;
layout(constant_id = 8) const bool ROTATED = false;  // keys stored after RoPE (dense F16)
const uint R = QB * GROUP;
const uint DPT = (HD + WG - 1) / WG;  // output dimensions per invocation

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer KC { uint kc[]; };
layout(std430, binding = 3) readonly buffer VC { uint vc[]; };
layout(std430, binding = 4) readonly buffer KN { uint kn[]; };
layout(std430, binding = 5) readonly buffer VN { uint vn[]; };
layout(std430, binding = 6) readonly buffer CS { float cs[]; };
layout(std430, binding = 7) readonly buffer SG { float signs[]; };
layout(std430, binding = 8) readonly buffer KS { uint ks[]; };  // CHANNEL: sink keys
layout(std430, binding = 9) readonly buffer KR { uint kr[]; };  // CHANNEL: the block being filled

layout(push_constant) uniform P {
    uint q_off, o_off, cs_off, signs_off;  // floats
    uint k_off, v_off, kn_off, vn_off;     // bytes
    uint n_head, S, W, pos0c;              // pos0c = min(p0, S)
    int rel_S, rel_wfirst;
    uint p0mod, row_bytes, head_bytes, n_dims;
    float scale;
    uint n_q, n_split;
    uint k_row_bytes, k_head_bytes;  // key rows as staged (F16 with CHANNEL)
    uint ks_off, kr_off, k_block_bytes, k_block_head_bytes;  // CHANNEL: bytes
    int rel_res0;  // CHANNEL: the first position in the block being filled, relative to p0
} p;

const uint CHUNK = 256u;  // kAttnChunk; a multiple of WG, so a tile ends at most one chunk of a row

shared float qs[R * HD];  // rows' queries rotated for the sinks
shared float qw[R * HD];  // ... and for the window
shared float sc[R * WG];  // the tile's scores (-inf: not visible to the row), then value weights
shared float rs[R * WG];  // accumulator rescale per key (-1: not visible)
shared uint kidx[WG];     // each tile key's index in the block's list of keys
shared uint vrow[WG];     // byte offset of each tile key's value row
shared bool vfresh[WG];   // ... in the staged rows (else in the cache)
shared float row_m[R], row_l[R];  // the current chunk's maximum and sum
shared float tot_m[R], tot_l[R];  // the chunks merged so far
shared uint row_end[R];           // the tile key that ends the row's chunk (WG: none)
shared float row_a[R], row_b[R];  // the merge's factors for the merged and the chunk's sums
shared bool row_tail[R];          // at the end: the row's last chunk is merged there

#define NEG_INF uintBitsToFloat(0xff800000u)

uint sinks_vis(uint i) { return p.pos0c >= p.S ? p.S : min(p.S, p.pos0c + i + 1u); }
int rel_wb(uint i) { return max(p.rel_S, int(i) + 1 - int(p.W)); }

// Rotates the pair (a, b) by the angle of cache position pos, pair k.
vec2 rope(float a, float b, uint pos, uint k) {
    const uint c = p.cs_off + (pos * (p.n_dims / 2u) + k) * 2u;
    const float co = cs[c], si = cs[c + 1u];
    precise float x = a * co - b * si;
    precise float y = a * si + b * co;
    return vec2(x, y);
}

uvec2 pair_dims(uint k) { return NEOX ? uvec2(k, k + p.n_dims / 2u) : uvec2(2u * k, 2u * k + 1u); }

// The merge of row r's current chunk into its merged result (invocation r).
void merge_row(uint r) {
    const float m = max(tot_m[r], row_m[r]);
    precise float da = tot_m[r] - m;
    precise float db = row_m[r] - m;
    const float a = exp_ggml(da), b = exp_ggml(db);
    precise float lb = row_l[r] * b;
    tot_l[r] = fma_rn(tot_l[r], a, lb);
    tot_m[r] = m;
    row_a[r] = a;
    row_b[r] = b;
    row_m[r] = NEG_INF;
    row_l[r] = 0.0;
}

void main() {
    const uint g = gl_WorkGroupID.x, t = gl_LocalInvocationID.x, split = gl_WorkGroupID.z;
    const uint i0 = gl_WorkGroupID.y * QB;
    const uint nqb = min(QB, p.n_q - i0), i_last = i0 + nqb - 1u;
    const uint S = p.S;
    // The keys any query of the block sees: sinks, then window tokens from
    // the first query's window start to the last query.
    const uint sinks_u = sinks_vis(i_last);
    const int wb0 = rel_wb(i0);
    const uint n_union = sinks_u + uint(max(int(i_last) + 1 - wb0, 0));
    const uint chunk = p.n_split == 1u ? n_union : CHUNK;
    const uint k_begin = split * chunk, k_end = min(n_union, k_begin + chunk);

    for (uint e = t; e < R * HD; e += WG) {
        const uint r = e / HD, qi = r / GROUP, h = r % GROUP;
        const float v = qi < nqb ? q[p.q_off + ((i0 + qi) * p.n_head + g * GROUP + h) * HD + e % HD] : 0.0;
        qs[e] = v;
        qw[e] = v;
    }
    if (t < R) {
        row_m[t] = NEG_INF;
        row_l[t] = 0.0;
        tot_m[t] = NEG_INF;
        tot_l[t] = 0.0;
    }
    barrier();
    const uint half_dims = p.n_dims / 2u;
    for (uint e = t; e < R * half_dims; e += WG) {
        const uint r = e / half_dims, k = e % half_dims, qi = r / GROUP;
        if (qi >= nqb) continue;
        const uint i = i0 + qi;
        const uint win_vis = uint(max(int(i) + 1 - rel_wb(i), 0));
        const uint qpos_sink = sinks_vis(i) + win_vis - 1u;
        // (with no window token visible the window query is unused; keep it in the table)
        const uint qpos_win = win_vis > 0u ? uint(int(S) + int(i) - p.rel_wfirst) : qpos_sink;
        const uvec2 d = pair_dims(k) + r * HD;
        const float a = qs[d.x], b = qs[d.y];
        const vec2 rsk = rope(a, b, qpos_sink, k), rw = rope(a, b, qpos_win, k);
        qs[d.x] = rsk.x;
        qs[d.y] = rsk.y;
        qw[d.x] = rw.x;
        qw[d.y] = rw.y;
    }
    barrier();

    float acc[R * DPT], macc[R * DPT];  // the current chunk's and the merged accumulators
    for (uint k = 0; k < R * DPT; k++) {
        acc[k] = 0.0;
        macc[k] = 0.0;
    }
    const uint head = g * p.head_bytes;

    for (uint base = k_begin; base < k_end; base += WG) {
        const uint idx = base + t;
        if (idx < k_end) {
            uint row, pos;
            bool fresh;
            const bool sink = idx < sinks_u;
            const int d = sink ? 0 : wb0 + int(idx - sinks_u);
            if (sink) {
                fresh = p.pos0c < S && idx >= p.pos0c;
                row = fresh ? idx - p.pos0c : idx;
                pos = idx;
            } else {
                fresh = d >= 0;
                int slot = int(p.p0mod) + d;
                if (slot < 0) slot += int(p.W);
                row = fresh ? uint(d) : S + uint(slot);
                pos = uint(int(S) + d - p.rel_wfirst);
            }
            kidx[t] = idx;
            vrow[t] = (fresh ? p.vn_off : p.v_off) + row * p.row_bytes + head;
            vfresh[t] = fresh;
            float kk[HD];
            const uint khead = g * p.k_head_bytes;
            if (fresh) {
                const uint koff = p.kn_off + row * p.k_row_bytes + khead;
                for (uint e = 0; e < HD; e++) DECODE_KV(kn, (CHANNEL ? KV_F16 : CODEC), koff, e, kk[e])
            } else if (!CHANNEL) {
                const uint koff = p.k_off + row * p.row_bytes + head;
                for (uint e = 0; e < HD; e++) DECODE_KV(kc, CODEC, koff, e, kk[e])
            } else if (sink) {
                const uint koff = p.ks_off + idx * p.k_row_bytes + khead;
                for (uint e = 0; e < HD; e++) DECODE_KV(ks, KV_F16, koff, e, kk[e])
            } else {
                const uint ring = row - S, o = ring % 32u;
                if (d >= p.rel_res0) {
                    const uint koff = p.kr_off + o * p.k_row_bytes + khead;
                    for (uint e = 0; e < HD; e++) DECODE_KV(kr, KV_F16, koff, e, kk[e])
                } else {
                    // channel e of this token: element o of the block's group e
                    const uint boff = p.k_off + (ring / 32u) * p.k_block_bytes + g * p.k_block_head_bytes;
                    for (uint e = 0; e < HD; e++) DECODE_KV(kc, KV_Q4, boff + 20u * e, o, kk[e])
                }
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
            for (uint k = 0; k < (ROTATED ? 0u : half_dims); k++) {
                const uvec2 dd = pair_dims(k);
                const vec2 r = rope(kk[dd.x], kk[dd.y], pos, k);
                kk[dd.x] = r.x;
                kk[dd.y] = r.y;
            }
            for (uint r = 0; r < R; r++) {
                const uint qi = r / GROUP, i = i0 + qi;
                const bool seen = qi < nqb && (sink ? idx < sinks_vis(i) : d >= rel_wb(i) && d <= int(i));
                float s = NEG_INF;
                if (seen) {
                    // 16 lanes of fma chains, reduced in a fixed tree (attn_dot)
                    float x[16];
                    for (uint l = 0; l < 16u; l++) x[l] = 0.0;
                    for (uint e = 0; e < HD; e++) {
                        precise float f = fma_rn(kk[e], sink ? qs[r * HD + e] : qw[r * HD + e], x[e % 16u]);
                        x[e % 16u] = f;
                    }
                    for (uint w = 8u; w > 0u; w /= 2u)
                        for (uint l = 0; l < w; l++) {
                            precise float f = x[l] + x[l + w];
                            x[l] = f;
                        }
                    precise float sv = x[0] * p.scale;
                    s = sv;
                }
                sc[r * WG + t] = s;
            }
        }
        barrier();

        // Row r's online softmax over the tile, key by key (attn_chunk_add);
        // a chunk that ends here is merged (attn_chunk_merge).
        const uint n_tile = min(WG, k_end - base);
        if (t < R) {
            const uint qi = t / GROUP, i = i0 + qi;
            const uint svis = qi < nqb ? sinks_vis(i) : 0u;
            const int wbi = rel_wb(i);
            row_end[t] = WG;
            for (uint j = 0; j < n_tile; j++) {
                const float s = sc[t * WG + j];
                if (s == NEG_INF) {
                    rs[t * WG + j] = -1.0;
                    continue;
                }
                const float m = row_m[t];
                float e, w;
                if (s > m) {
                    precise float arg = m - s;
                    e = exp_ggml(arg);
                    rs[t * WG + j] = e;
                    w = 1.0;
                    row_m[t] = s;
                    row_l[t] = fma_rn(row_l[t], e, 1.0);
                } else {
                    precise float arg = s - m;
                    e = exp_ggml(arg);
                    rs[t * WG + j] = 1.0;
                    w = e;
                    row_l[t] = fma_rn(row_l[t], 1.0, e);
                }
                sc[t * WG + j] = w;
                // the key's index among the keys this row sees
                const uint idx = kidx[j];
                const uint v = idx < sinks_u ? idx : svis + uint(wb0 + int(idx - sinks_u) - wbi);
                if (p.n_split == 1u && (v + 1u) % CHUNK == 0u) {
                    merge_row(t);
                    row_end[t] = j;
                }
            }
        }
        barrier();

        for (uint k = 0; k < DPT; k++) {
            const uint dd = t + k * WG;
            if (dd >= HD) break;
            for (uint j = 0; j < n_tile; j++) {
                float v;
                if (vfresh[j]) DECODE_KV(vn, CODEC, vrow[j], dd, v)
                else DECODE_KV(vc, CODEC, vrow[j], dd, v)
                for (uint r = 0; r < R; r++) {
                    const float rr = rs[r * WG + j];
                    if (rr < 0.0) continue;
                    float a = acc[r * DPT + k];
                    if (rr != 1.0) {
                        precise float sa = a * rr;
                        a = sa;
                    }
                    acc[r * DPT + k] = fma_rn(v, sc[r * WG + j], a);
                    if (row_end[r] == j) {
                        precise float cb = acc[r * DPT + k] * row_b[r];
                        macc[r * DPT + k] = fma_rn(macc[r * DPT + k], row_a[r], cb);
                        acc[r * DPT + k] = 0.0;
                    }
                }
            }
        }
        barrier();
    }

    // The last chunk: merged here, or (split) written as it is.
    if (p.n_split == 1u) {
        if (t < R) {
            row_tail[t] = row_m[t] != NEG_INF;  // keys since the last merge
            if (row_tail[t]) merge_row(t);
        }
        barrier();
    }
    for (uint k = 0; k < DPT; k++) {
        const uint dd = t + k * WG;
        if (dd >= HD) break;
        for (uint r = 0; r < R; r++) {
            const uint qi = r / GROUP;
            if (qi >= nqb) break;
            const uint orow = (i0 + qi) * p.n_head + g * GROUP + r % GROUP;
            if (p.n_split == 1u) {
                float m = macc[r * DPT + k];
                if (row_tail[r]) {
                    precise float cb = acc[r * DPT + k] * row_b[r];
                    m = fma_rn(m, row_a[r], cb);
                }
                const float inv = tot_l[r] == 0.0 ? 0.0 : div_rn(1.0, tot_l[r]);
                precise float res = m * inv;
                o[p.o_off + orow * HD + dd] = res;
            } else {
                const uint part = p.o_off + (orow * p.n_split + split) * (HD + 2u);
                if (dd == 0u) {
                    o[part] = row_m[r];
                    o[part + 1u] = row_l[r];
                }
                o[part + 2u + dd] = acc[r * DPT + k];
            }
        }
    }
}
