#version 450
// The second half of Stream::rwkv7_prepare (after rwkv7_decay.comp made a
// the in-context rate), one workgroup per (head, token):
//   kk = k * k_k / max(|k * k_k|, 1e-12) over the head
//   a_out = -kk, b_out = kk * a, k = k + (a * (k * k_a) - k * k_a)
// With doubles, the CPU reference's bits: the head's sum of squares in
// double in order (one invocation walks the head), a correctly rounded
// square root and division. Without, float ones.
#include "common.glsl"

layout(std430, binding = 0) buffer Kt { float k[]; };
layout(std430, binding = 1) readonly buffer Kk { float kk_w[]; };
layout(std430, binding = 2) readonly buffer Ka { float ka_w[]; };
layout(std430, binding = 3) readonly buffer At { float a[]; };
layout(std430, binding = 4) writeonly buffer Ao { float ao[]; };
layout(std430, binding = 5) writeonly buffer Bo { float bo[]; };

layout(push_constant) uniform P { uint k_off, kk_off, ka_off, a_off, ao_off, bo_off, n_head, head_size; } p;

shared float scale_;

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tok = gl_WorkGroupID.y, h = gl_WorkGroupID.x;
    const uint c0 = h * p.head_size;                 // the head's first channel
    const uint o = tok * p.n_head * p.head_size + c0;  // its offset in the [n][d] rows
    if (tid == 0u) {
#ifdef USE_FP64
        double ss = 0.0lf;
        for (uint i = 0; i < p.head_size; i++) {
            precise float kk = k[p.k_off + o + i] * kk_w[p.kk_off + c0 + i];
            precise float sq = kk * kk;
            precise double s = ss + double(sq);
            ss = s;
        }
#else
        float ss = 0.0;
        for (uint i = 0; i < p.head_size; i++) {
            const float kk = k[p.k_off + o + i] * kk_w[p.kk_off + c0 + i];
            ss += kk * kk;
        }
#endif
        scale_ = div_rn(1.0, max(sqrt_rn(float(ss)), 1e-12));
    }
    barrier();
    const float scale = scale_;
    for (uint i = tid; i < p.head_size; i += WG) {
        const uint c = c0 + i;
        const float ki = k[p.k_off + o + i], an = a[p.a_off + o + i];
        precise float kk0 = ki * kk_w[p.kk_off + c];
        precise float kk = kk0 * scale;
        ao[p.ao_off + o + i] = -kk;
        precise float b = kk * an;
        bo[p.bo_off + o + i] = b;
        precise float ka = ki * ka_w[p.ka_off + c];
        precise float nk = ki + (an * ka - ka);
        k[p.k_off + o + i] = nk;
    }
}
