// Matrix product skeleton of matmul_f.comp (float weights):
// y[t][row] = dot(weight row, activation row t). With subgroups, each
// subgroup computes one row (its lanes split the row, subgroupAdd joins
// them) and a workgroup holds several; without, the whole workgroup computes
// one row and joins through shared memory. Each workgroup also covers NT
// tokens, so a weight block is loaded once for all of them. Workgroups loop
// over rows, so any subgroup size and any row count work with the grid the
// host picked.
//
// The including shader defines accumulate_row() before including this file.

layout(constant_id = 1) const uint WTYPE = 2;  // weight type (GGUF id)
layout(constant_id = 2) const uint NT = 1;     // tokens per workgroup

// Each buffer also seen as 16-byte vectors: weight rows are 16-byte aligned,
// and so are converted activation rows (the host pads their stride).
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; };
layout(std430, binding = 1) readonly buffer X { uint x[]; };
layout(std430, binding = 1) readonly buffer X4 { uvec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform P {
    uint ncols, nrows, ntok;
    uint w_off, w_stride;  // bytes
    uint x_off, x_stride;  // words
    uint y_off, ldy;       // floats
    uint n_wg;             // workgroups along x in this dispatch
} p;

void accumulate_row(uint row, uint t0, uint lane, uint lanes, inout float acc[NT]);

void main() {
#ifdef USE_SUBGROUP
    const uint lane = gl_SubgroupInvocationID, lanes = gl_SubgroupSize;
    const uint slot = gl_SubgroupID, slots = gl_NumSubgroups;
#else
    const uint lane = gl_LocalInvocationID.x, lanes = WG;
    const uint slot = 0u, slots = 1u;
#endif
    const uint t0 = gl_WorkGroupID.y * NT;
    for (uint r0 = gl_WorkGroupID.x * slots; r0 < p.nrows; r0 += p.n_wg * slots) {
        const uint row = r0 + slot;
        float acc[NT];
        for (uint t = 0; t < NT; t++) acc[t] = 0.0;
        if (row < p.nrows) accumulate_row(row, t0, lane, lanes, acc);
        for (uint t = 0; t < NT; t++) {
#ifdef USE_SUBGROUP
            const float s = subgroupAdd(acc[t]);
            if (row < p.nrows && t0 + t < p.ntok && subgroupElect()) y[p.y_off + (t0 + t) * p.ldy + row] = s;
#else
            const float s = wg_sum(acc[t]);
            if (row < p.nrows && t0 + t < p.ntok && lane == 0u) y[p.y_off + (t0 + t) * p.ldy + row] = s;
#endif
        }
    }
}
