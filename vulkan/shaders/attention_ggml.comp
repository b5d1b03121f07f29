#version 450
// Attention of a dense F16 layer whose keys are stored after RoPE, in the
// CPU reference's order of float operations (attention_ggml in
// src/backend/cpu/ggml_order.h, which follows llama.cpp's flash attention):
// the query rotated as ggml_rope does and rounded to F16; per key, in order,
//   s  = dot(key, query) (64 lanes of fma chains over blocks of 64, reduced
//        in ggml's tree, the rest added in double) * scale;
//   a new maximum M rescales the F16 accumulator by expf(M_old - M), else the
//        value is weighted by expf(s - M); acc = f16(fma_rn(value, weight, acc));
//   S = fma_rn(S, rescale, weight);
// and finally acc / S. A query at stream position t sees every position up to
// t (a dense cache, row p for position p), or with RING > 0 (a layer with the
// model's own sliding window) the last RING of them, position p in ring slot
// p mod RING; either way in chronological order, this batch's own rows taken
// from the staged ones. One workgroup per (query head, query). Keys are taken
// in tiles of WG: invocation j scores key j of the tile and works out its
// rescale and weight from the running maximum (a prefix maximum), then each
// invocation walks the tile's keys in order for its own output dimensions.
#include "common.glsl"
#include "exact_math.glsl"

layout(constant_id = 1) const uint HD = 64;
layout(constant_id = 2) const uint GROUP = 1;
const uint DPT = (HD + WG - 1) / WG;  // output dimensions per invocation
const uint NP = HD / 64u * 64u;       // dimensions in whole blocks of 64

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) writeonly buffer O { float o[]; };
layout(std430, binding = 2) readonly buffer KC { uint kc[]; };
layout(std430, binding = 3) readonly buffer VC { uint vc[]; };
layout(std430, binding = 4) readonly buffer KN { uint kn[]; };
layout(std430, binding = 5) readonly buffer VN { uint vn[]; };
layout(std430, binding = 6) readonly buffer CS { float cs[]; };

layout(push_constant) uniform P {
    uint q_off, o_off, cs_off;          // floats
    uint k_off, v_off, kn_off, vn_off;  // bytes
    uint n_head, pos0, row_bytes, head_bytes, n_dims, neox;
    float scale;
    uint ring;  // ring slots of a native sliding window (0: dense)
} p;

shared float qh[HD];        // the query, rotated and rounded to F16
shared float sc[WG];        // the tile's scores
shared float resc[WG], wt[WG];  // per key: accumulator rescale and value weight
shared float run_max, inv_sum;

float f16r(float v) { return half_to_float(float_to_half(v)); }

// Element e of the key or value of stream position j in this head (positions
// before pos0 in the cache).
float kv_at(bool value, uint j, uint head, uint e) {
    if (j < p.pos0) {
        const uint slot = p.ring != 0u ? j % p.ring : j;
        const uint off = (value ? p.v_off : p.k_off) + slot * p.row_bytes + head + 2u * e;
        return half_to_float(value ? LOAD_U16(vc, off) : LOAD_U16(kc, off));
    }
    const uint off = (value ? p.vn_off : p.kn_off) + (j - p.pos0) * p.row_bytes + head + 2u * e;
    return half_to_float(value ? LOAD_U16(vn, off) : LOAD_U16(kn, off));
}

void main() {
    const uint h = gl_WorkGroupID.x, i = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
    const uint head = (h / GROUP) * p.head_bytes;
    const uint pos = p.pos0 + i;
    const uint first = p.ring != 0u && pos >= p.ring ? pos + 1u - p.ring : 0u;  // the first position seen
    const uint n = pos + 1u - first;
    const uint qb = p.q_off + (i * p.n_head + h) * HD;
    for (uint e = t; e < HD; e += WG) qh[e] = q[qb + e];
    if (t == 0u) run_max = uintBitsToFloat(0xff800000u);
    barrier();
    const uint half_dims = p.n_dims / 2u;
    for (uint k = t; k < half_dims; k += WG) {
        const uint i0 = p.neox != 0u ? k : 2u * k, i1 = i0 + (p.neox != 0u ? half_dims : 1u);
        const uint c = p.cs_off + (pos * half_dims + k) * 2u;
        const float x0 = qh[i0], x1 = qh[i1], co = cs[c], si = cs[c + 1u];
        precise float a = x1 * si;
        precise float b = x1 * co;
        precise float y0 = fma_rn(x0, co, -a);
        precise float y1 = fma_rn(x0, si, b);
        qh[i0] = y0;
        qh[i1] = y1;
    }
    barrier();
    for (uint e = t; e < HD; e += WG) qh[e] = f16r(qh[e]);
    barrier();

    float acc[DPT];
    for (uint k = 0; k < DPT; k++) acc[k] = 0.0;
    float S = 0.0;  // invocation 0's running sum
    for (uint base = 0; base < n; base += WG) {
        const uint nt = min(WG, n - base), j = first + base + t;
        if (t < nt) {
            float lane[64];
            for (uint l = 0; l < 64u; l++) lane[l] = 0.0;
            for (uint d = 0; d < NP; d += 64u)
                for (uint l = 0; l < 64u; l++) {
                    precise float f = fma_rn(kv_at(false, j, head, d + l), qh[d + l], lane[l]);
                    lane[l] = f;
                }
            float v[16];
            for (uint l = 0; l < 16u; l++) {
                precise float a = lane[l] + lane[32u + l];
                precise float b = lane[16u + l] + lane[48u + l];
                precise float c = a + b;
                v[l] = c;
            }
            for (uint l = 0; l < 8u; l++) {
                precise float a = v[8u + l] + v[l];
                v[l] = a;
            }
            for (uint l = 0; l < 4u; l++) {
                precise float a = v[4u + l] + v[l];
                v[l] = a;
            }
            precise float s0 = v[0] + v[2];
            precise float s1 = v[1] + v[3];
            precise float s2 = s0 + s1;
#ifdef USE_FP64
            double sum = double(s2);
            for (uint d = NP; d < HD; d++) {
                precise float pr = kv_at(false, j, head, d) * qh[d];
                precise double a = sum + double(pr);
                sum = a;
            }
            const float dot = float(sum);
#else
            float dot = s2;
            for (uint d = NP; d < HD; d++) dot += kv_at(false, j, head, d) * qh[d];
#endif
            precise float sv = dot * p.scale;
            sc[t] = sv;
        }
        barrier();
        if (t < nt) {
            float m = run_max;  // the maximum before this key
            for (uint u = 0; u < t; u++) m = sc[u] > m ? sc[u] : m;
            const float s = sc[t];
            if (s > m) {
                precise float d = m - s;
                resc[t] = exp_libm(d);
                wt[t] = 1.0;
            } else {
                precise float d = s - m;
                resc[t] = 1.0;
                wt[t] = exp_libm(d);
            }
        }
        barrier();
        for (uint u = 0; u < nt; u++) {
            const float r = resc[u], w = wt[u];
            for (uint k = 0; k < DPT; k++) {
                const uint d = t + k * WG;
                if (d >= HD) break;
                precise float a = acc[k] * r;
                precise float b = fma_rn(kv_at(true, first + base + u, head, d), w, f16r(a));
                acc[k] = f16r(b);
            }
            if (t == 0u) {
                precise float s = fma_rn(S, r, w);
                S = s;
            }
        }
        if (t == 0u) {
            float m = run_max;
            for (uint u = 0; u < nt; u++) m = sc[u] > m ? sc[u] : m;
            run_max = m;
        }
        barrier();
    }
    if (t == 0u) inv_sum = S == 0.0 ? 0.0 : div_rn(1.0, S);
    barrier();
    const uint ob = p.o_off + (i * p.n_head + h) * HD;
    for (uint k = 0; k < DPT; k++) {
        const uint d = t + k * WG;
        if (d >= HD) break;
        precise float r = acc[k] * inv_sum;
        o[ob + d] = r;
    }
}
