#version 450
// The gated delta rule token by token (Stream::delta_net), one workgroup per
// value head and one invocation per row j of its state (WG = D = head_dim):
//   S <- exp(g) S;  d_j = beta (v_j - S_j . k);  S_j <- S_j + d_j k;  o_j = scale S_j . q
// Every row's arithmetic is its own, so the invocation keeps its row in
// private memory for the whole batch and needs no reductions; k and q of the
// token are shared. The operations are the CPU reference's: exp is the C
// library's (exact_math.glsl), the dot products in ggml_vec_dot_f32's lane
// order (4 x 16 accumulators over blocks of 64, the same reduction tree, then
// the rest in order) with fma_rn, the update with fma_rn.
#include "common.glsl"
#include "exact_math.glsl"

layout(constant_id = 1) const uint D = 64;

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) readonly buffer G { float g[]; };
layout(std430, binding = 4) readonly buffer Bt { float beta[]; };
layout(std430, binding = 5) buffer S { float st[]; };
layout(std430, binding = 6) writeonly buffer O { float o[]; };

layout(push_constant) uniform P {
    uint q_off, k_off, v_off, qk_stride, v_stride, g_off, b_off, s_off, o_off, n, n_k_heads, n_v_heads;
    float scale;
} p;

shared float sk[D];
shared float sq[D];
float srow[D];

// srow . (which == 0 ? sk : sq) as dot_f32_ggml
float dot_row(uint which) {
    const uint np = D & ~63u;
    float sumf = 0.0;
    if (np > 0u) {
        float acc[64];
        for (uint l = 0; l < 64u; l++) acc[l] = 0.0;
        for (uint i = 0; i < np; i += 64u)
            for (uint l = 0; l < 64u; l++) {
                const float y = which == 0u ? sk[i + l] : sq[i + l];
                acc[l] = fma_rn(srow[i + l], y, acc[l]);
            }
        float t[16];
        for (uint l = 0; l < 16u; l++) {
            precise float a = acc[l] + acc[32u + l];
            precise float b = acc[16u + l] + acc[48u + l];
            precise float s = a + b;
            t[l] = s;
        }
        float h4[4];
        for (uint l = 0; l < 4u; l++) {
            precise float a = t[l + 8u] + t[l];
            precise float b = t[l + 12u] + t[l + 4u];
            precise float s = b + a;
            h4[l] = s;
        }
        precise float p0 = h4[0] + h4[2];
        precise float p1 = h4[1] + h4[3];
        precise float s = p0 + p1;
        sumf = s;
    }
    for (uint i = np; i < D; i++) sumf = fma_rn(srow[i], which == 0u ? sk[i] : sq[i], sumf);
    return sumf;
}

void main() {
    const uint j = gl_LocalInvocationID.x;
    const uint h = gl_WorkGroupID.x;
    const uint hk = h % p.n_k_heads;
    const uint sb = p.s_off + (h * D + j) * D;
    for (uint i = 0; i < D; i++) srow[i] = st[sb + i];
    for (uint t = 0; t < p.n; t++) {
        barrier();
        sk[j] = k[p.k_off + t * p.qk_stride + hk * D + j];
        sq[j] = q[p.q_off + t * p.qk_stride + hk * D + j];
        barrier();
        const float eg = exp_libm(g[p.g_off + t * p.n_v_heads + h]);
        const float b = beta[p.b_off + t * p.n_v_heads + h];
        for (uint i = 0; i < D; i++) {
            precise float s = srow[i] * eg;
            srow[i] = s;
        }
        precise float diff = v[p.v_off + t * p.v_stride + h * D + j] - dot_row(0u);
        precise float dj = diff * b;
        for (uint i = 0; i < D; i++) srow[i] = fma_rn(sk[i], dj, srow[i]);
        precise float r = dot_row(1u) * p.scale;
        o[p.o_off + (t * p.n_v_heads + h) * D + j] = r;
    }
    for (uint i = 0; i < D; i++) st[sb + i] = srow[i];
}
