// The KV side of attention: encoding new K/V rows in each codec (with the
// optional Hadamard rotation of keys), packing per-channel key blocks, and the
// fused attention over the sink + window cache.
#include <cmath>

#include "common.cuh"

namespace kvfit {
namespace cuda {

__constant__ float c_hadamard_signs[kMaxHadamardLog + 1][1 << kMaxHadamardLog];

cudaError_t set_hadamard_signs(const float signs[kMaxHadamardLog + 1][1 << kMaxHadamardLog]) {
    return cudaMemcpyToSymbol(c_hadamard_signs, signs, sizeof c_hadamard_signs);
}

namespace {

// ---------------------------------------------------------------------------
// Encoding: the arithmetic of src/kv/codec.cpp, value for value.

// Smallest fp16 >= v (v >= 0), capped at 65504.
__device__ uint16_t half_up(float v) {
    if (!(v > 0.0f)) return 0;
    if (v >= 65504.0f) return 0x7bff;
    uint16_t h = __half_as_ushort(__float2half_rn(v));
    if (__half2float(__ushort_as_half(h)) < v) h++;
    return h;
}

// Largest fp16 <= v, clamped to +-65504.
__device__ uint16_t half_down(float v) {
    if (v >= 65504.0f) return 0x7bff;
    if (v <= -65504.0f) return 0xfbff;
    uint16_t h = __half_as_ushort(__float2half_rn(v));
    if (__half2float(__ushort_as_half(h)) > v) {
        if ((h & 0x7fff) == 0) h = 0x8001;
        else if (h & 0x8000) h++;
        else h--;
    }
    return h;
}

__device__ int round_clamp(float v, float lo, float hi) {
    if (!(v < hi)) v = hi;
    if (v < lo) v = lo;
    return int(rintf(v));
}

__device__ __forceinline__ void st_half_bits(uint8_t *p, uint16_t h) { *reinterpret_cast<unsigned short *>(p) = h; }
__device__ __forceinline__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// One group of 32 values, lane l holding value l, into a Q8 group at p.
__device__ void encode_q8_group(float v, int lane, uint8_t *p) {
    const float amax = warp_max(fabsf(v));
    const uint16_t dh = half_up(amax / 127.0f);
    const float d = half_bits_to_float(dh);
    if (lane == 0) st_half_bits(p, dh);
    p[2 + lane] = uint8_t(int8_t(d > 0.0f ? round_clamp(v / d, -127.0f, 127.0f) : 0));
}

// One group of 32 values, lane l holding value l, into a Q4 group at p.
__device__ void encode_q4_group(float v, int lane, uint8_t *p) {
    const float mn = warp_min(v), mx = warp_max(v);
    const uint16_t mh = half_down(mn);
    const float m = half_bits_to_float(mh);
    const uint16_t dh = half_up((mx - m) / 15.0f);
    const float d = half_bits_to_float(dh);
    const int q = d > 0.0f ? round_clamp((v - m) / d, 0.0f, 15.0f) : 0;
    const int hi = __shfl_down_sync(0xffffffffu, q, 16);
    if (lane == 0) {
        st_half_bits(p, dh);
        st_half_bits(p + 2, mh);
    }
    if (lane < 16) p[4 + lane] = uint8_t(q | hi << 4);
}

__device__ __forceinline__ size_t codec_head_bytes(int codec, int n) {
    return codec == kCodecQ8 ? size_t(n / kGroup) * (2 + kGroup)
           : codec == kCodecQ4 ? size_t(n / kGroup) * (4 + kGroup / 2)
                               : size_t(n) * 2;
}

constexpr int kEncodeThreads = 128;

// One block per head row: rotate (optionally), then encode group by group, a warp per group.
__global__ void kv_encode_kernel(int codec, int hadamard, float *x, int head_dim, uint8_t *dst) {
    extern __shared__ float xs[];
    float *row = x + size_t(blockIdx.x) * size_t(head_dim);
    uint8_t *out = dst + size_t(blockIdx.x) * codec_head_bytes(codec, head_dim);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nwarps = blockDim.x / 32;
    for (int i = tid; i < head_dim; i += blockDim.x) xs[i] = row[i];
    __syncthreads();
    if (hadamard) {
        const float *sg = c_hadamard_signs[log2_exact(head_dim)];
        for (int i = tid; i < head_dim; i += blockDim.x) xs[i] = __fmul_rn(xs[i], sg[i]);
        __syncthreads();
        fwht(xs, head_dim, tid, blockDim.x, [] { __syncthreads(); });
        for (int i = tid; i < head_dim; i += blockDim.x) row[i] = xs[i];
    }
    if (codec == kCodecF16) {
        for (int i = tid; i < head_dim; i += blockDim.x) {
            // Saturate instead of overflowing to inf, with std::max/min's NaN handling.
            float v = -65504.0f < xs[i] ? xs[i] : -65504.0f;
            v = v < 65504.0f ? v : 65504.0f;
            st_half_bits(out + 2 * i, __half_as_ushort(__float2half_rn(v)));
        }
        return;
    }
    for (int g = warp; g < head_dim / kGroup; g += nwarps) {
        const float v = xs[g * kGroup + lane];
        if (codec == kCodecQ8) encode_q8_group(v, lane, out + size_t(g) * (2 + kGroup));
        else encode_q4_group(v, lane, out + size_t(g) * (4 + kGroup / 2));
    }
}

// One block per KV head; a warp per channel encodes its 32 tokens as one Q4 group.
__global__ void kv_encode_channels_kernel(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) {
    const int g = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const size_t width = size_t(n_heads) * size_t(head_dim);
    const size_t group_bytes = 4 + kChannelBlock / 2;
    uint8_t *block = dst + size_t(g) * size_t(head_dim) * group_bytes;
    for (int c = warp; c < head_dim; c += nwarps) {
        const float v = ld_half(rows + (size_t(lane) * width + size_t(g) * size_t(head_dim) + size_t(c)) * 2);
        encode_q4_group(v, lane, block + size_t(c) * group_bytes);
    }
}

// ---------------------------------------------------------------------------
// Attention

// First window token a query at stream position t sees (dense: everything after the sinks).
__device__ __forceinline__ uint64_t win_start(const AttnParams &p, uint64_t t) {
    const uint64_t S = p.n_sink, W = p.n_window;
    if (!p.streaming) return S;
    const uint64_t w = t + 1 > W ? t + 1 - W : 0;
    return w > S ? w : S;
}

// Rotates pair k of v by the RoPE angle of cache position pos.
__device__ __forceinline__ void rope_pair(const AttnParams &p, float *v, int k, uint64_t pos) {
    const int half = p.rope_dims / 2;
    const float *cs = p.rope_cs + (size_t(pos) * size_t(half) + size_t(k)) * 2;
    const int a = p.rope_neox ? k : 2 * k, b = p.rope_neox ? k + half : 2 * k + 1;
    const float x0 = v[a], x1 = v[b];
    v[a] = __fsub_rn(__fmul_rn(x0, cs[0]), __fmul_rn(x1, cs[1]));
    v[b] = __fadd_rn(__fmul_rn(x0, cs[1]), __fmul_rn(x1, cs[0]));
}

// The key of stream position j, KV head g, decoded by one warp into kb
// [head_dim] before RoPE (a Hadamard rotation undone), from wherever the
// layout keeps it (the same cases as the CPU backend's decode_keys).
__device__ void load_key(const AttnParams &p, int g, uint64_t j, float *kb, int lane) {
    const uint64_t S = p.n_sink, W = p.n_window;
    const int hd = p.head_dim;
    const size_t krb = p.channel_keys ? size_t(p.n_head_kv) * size_t(hd) * 2 : p.row_bytes;
    const size_t khb = p.channel_keys ? size_t(hd) * 2 : p.head_bytes;
    const int kc = p.channel_keys ? kCodecF16 : p.codec;
    // Channel keys: positions from res0 on are in the block still being filled.
    const uint64_t res0 = p.pos0 > S ? S + (p.pos0 - S) / kChannelBlock * kChannelBlock : p.pos0;
    const uint8_t *row = nullptr;
    if (j >= p.pos0) row = p.k_new + (j - p.pos0) * krb;
    else if (!p.channel_keys) row = p.k + (!p.streaming || j < S ? j : S + (j - S) % W) * krb;
    else if (p.streaming && j < S) row = p.k_sink + j * krb;
    else if (j >= res0) row = p.k_res + (j - S) % kChannelBlock * krb;
    if (row) {
        row += size_t(g) * khb;
        for (int i = lane; i < hd; i += 32) kb[i] = codec_elem(kc, row, i);
        if (p.hadamard) {
            __syncwarp();
            fwht(kb, hd, lane, 32, [] { __syncwarp(); });
            const float *sg = c_hadamard_signs[log2_exact(hd)];
            for (int i = lane; i < hd; i += 32) kb[i] = __fmul_rn(kb[i], sg[i]);
        }
    } else {
        const uint64_t w = j - S;
        const uint8_t *block = p.k + (w % W) / kChannelBlock * p.k_block_bytes +
                               size_t(g) * (p.k_block_bytes / size_t(p.n_head_kv));
        for (int i = lane; i < hd; i += 32) kb[i] = channel_elem(block, i, int(w % kChannelBlock));
    }
    __syncwarp();
}

__device__ __forceinline__ const uint8_t *value_row(const AttnParams &p, int g, uint64_t j) {
    const uint64_t S = p.n_sink, W = p.n_window;
    const uint8_t *row = j >= p.pos0 ? p.v_new + (j - p.pos0) * p.row_bytes
                                     : p.v + (!p.streaming || j < S ? j : S + (j - S) % W) * p.row_bytes;
    return row + size_t(g) * p.head_bytes;
}

// Shared memory of one attention block, in floats.
__host__ __device__ __forceinline__ size_t attn_smem_floats(int group, int hd, int nwarps) {
    return 2 * size_t(group) * hd + size_t(nwarps) * (size_t(hd) + size_t(group) * hd + 5 * size_t(group));
}

// Block (split c, KV head g, query i): the queries of the `group` heads that
// read KV head g, over the visible keys [c * chunk, (c + 1) * chunk) of query
// i in cache order (sinks, then the window in order). Each warp runs an online
// softmax over its own keys; the warps are merged here and the splits by
// attn_merge_kernel. Positions: sink keys at 0..S-1 with the query at its own
// cache position; window keys at S + (j - wfirst), wfirst the first window
// token of the batch's first query, with the query at S + (t - wfirst), so
// every query-key distance is the one the cache defines and a decode step
// rotates exactly as the CPU backend does.
__global__ void attn_kernel(AttnParams p, int splits, const float *q, float *partials) {
    extern __shared__ float sm[];
    const int c = blockIdx.x, g = blockIdx.y, qi = blockIdx.z;
    const int hd = p.head_dim, G = p.n_head / p.n_head_kv, half = p.rope_dims / 2;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, nw = blockDim.x / 32;
    float *qs = sm, *qw = qs + size_t(G) * hd;
    float *mine = qw + size_t(G) * hd + size_t(warp) * (size_t(hd) + size_t(G) * hd + 5 * size_t(G));
    float *kb = mine, *acc = kb + hd, *ml = acc + size_t(G) * hd, *re = ml + 2 * G, *sc = re + 2 * G;

    const uint64_t S = p.n_sink, t = p.pos0 + uint64_t(qi);
    const uint32_t sinks_vis = uint32_t(t + 1 < S ? t + 1 : S);
    const uint64_t wb = win_start(p, t), wfirst = win_start(p, p.pos0);
    const uint32_t win_vis = t + 1 > wb ? uint32_t(t + 1 - wb) : 0;
    const uint32_t n_vis = sinks_vis + win_vis;
    const uint64_t qpos_sink = n_vis - 1, qpos_win = S + (t - wfirst);

    const float *qsrc = q + (size_t(qi) * p.n_head + size_t(g) * G) * hd;
    for (int i = tid; i < G * hd; i += blockDim.x) qs[i] = qw[i] = qsrc[i];
    __syncthreads();
    for (int i = tid; i < G * half; i += blockDim.x) {
        rope_pair(p, qs + size_t(i / half) * hd, i % half, qpos_sink);
        if (win_vis) rope_pair(p, qw + size_t(i / half) * hd, i % half, qpos_win);
    }
    for (int i = lane; i < G * hd; i += 32) acc[i] = 0.0f;
    for (int h = lane; h < G; h += 32) ml[2 * h] = -INFINITY, ml[2 * h + 1] = 0.0f;
    __syncthreads();

    const uint32_t chunk = (n_vis + uint32_t(splits) - 1) / uint32_t(splits);
    const uint32_t b0 = uint32_t(c) * chunk, b1 = min(n_vis, b0 + chunk);
    for (uint32_t b = b0 + uint32_t(warp); b < b1; b += uint32_t(nw)) {
        const bool sink = b < sinks_vis;
        const uint64_t j = sink ? b : wb + (b - sinks_vis);
        const float *qb = sink ? qs : qw;
        load_key(p, g, j, kb, lane);
        for (int k = lane; k < half; k += 32) rope_pair(p, kb, k, sink ? j : S + (j - wfirst));
        __syncwarp();
        for (int h = 0; h < G; h++) {
            float d = 0.0f;
            for (int i = lane; i < hd; i += 32) d += kb[i] * qb[size_t(h) * hd + i];
            d = warp_sum(d);
            if (lane == 0) sc[h] = d * p.scale;
        }
        __syncwarp();
        for (int h = lane; h < G; h += 32) {
            const float m_old = ml[2 * h], m_new = fmaxf(m_old, sc[h]);
            const float r = m_old == -INFINITY ? 0.0f : expf(m_old - m_new), e = expf(sc[h] - m_new);
            ml[2 * h] = m_new;
            ml[2 * h + 1] = ml[2 * h + 1] * r + e;
            re[2 * h] = r;
            re[2 * h + 1] = e;
        }
        __syncwarp();
        const uint8_t *vrow = value_row(p, g, j);
        for (int i = lane; i < hd; i += 32) {
            const float v = codec_elem(p.codec, vrow, i);
            for (int h = 0; h < G; h++) acc[size_t(h) * hd + i] = acc[size_t(h) * hd + i] * re[2 * h] + re[2 * h + 1] * v;
        }
        __syncwarp();
    }
    __syncthreads();

    // Merge the warps into this split's (m, l, acc) per query head.
    const size_t per_warp = size_t(hd) + size_t(G) * hd + 5 * size_t(G);
    const float *w0 = qw + size_t(G) * hd;
    for (int h = warp; h < G; h += nw) {
        float M = -INFINITY;
        for (int w = 0; w < nw; w++) M = fmaxf(M, w0[w * per_warp + hd + size_t(G) * hd + 2 * h]);
        float *out = partials + ((size_t(qi) * p.n_head + size_t(g) * G + h) * splits + c) * (size_t(hd) + 2);
        float L = 0.0f;
        for (int i = lane; i < hd; i += 32) {
            float a = 0.0f;
            for (int w = 0; w < nw; w++) {
                const float *wm = w0 + w * per_warp;
                const float m = wm[hd + size_t(G) * hd + 2 * h];
                if (m != -INFINITY) a += expf(m - M) * wm[hd + size_t(h) * hd + i];
            }
            out[2 + i] = a;
        }
        for (int w = 0; w < nw; w++) {
            const float *wm = w0 + w * per_warp + hd + size_t(G) * hd + 2 * h;
            if (wm[0] != -INFINITY) L += wm[1] * expf(wm[0] - M);
        }
        if (lane == 0) out[0] = M, out[1] = L;
    }
}

// One block per (query, head): combines the splits' partial softmax sums.
__global__ void attn_merge_kernel(int head_dim, int splits, const float *partials, float *out) {
    const float *pp = partials + size_t(blockIdx.x) * splits * (size_t(head_dim) + 2);
    float M = -INFINITY;
    for (int c = 0; c < splits; c++) M = fmaxf(M, pp[size_t(c) * (head_dim + 2)]);
    float L = 0.0f;
    for (int c = 0; c < splits; c++) {
        const float *pc = pp + size_t(c) * (head_dim + 2);
        if (pc[0] != -INFINITY) L += pc[1] * expf(pc[0] - M);
    }
    const float inv = 1.0f / L;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        float a = 0.0f;
        for (int c = 0; c < splits; c++) {
            const float *pc = pp + size_t(c) * (head_dim + 2);
            if (pc[0] != -INFINITY) a += expf(pc[0] - M) * pc[2 + i];
        }
        out[size_t(blockIdx.x) * head_dim + i] = a * inv;
    }
}

constexpr size_t kSmemLimit = 48 << 10;  // what every architecture gives without opting in

}  // namespace

cudaError_t kv_encode(cudaStream_t s, int codec, bool hadamard, float *x, int rows, int head_dim, uint8_t *dst) {
    if (rows <= 0) return cudaSuccess;
    if (head_dim <= 0 || (codec != kCodecF16 && head_dim % kGroup) ||
        (hadamard && (head_dim & (head_dim - 1) || head_dim > (1 << kMaxHadamardLog))) || codec < kCodecF16 ||
        codec > kCodecQ4)
        return cudaErrorInvalidValue;
    kv_encode_kernel<<<unsigned(rows), kEncodeThreads, size_t(head_dim) * sizeof(float), s>>>(codec, hadamard, x,
                                                                                               head_dim, dst);
    return cudaGetLastError();
}

cudaError_t kv_encode_channels(cudaStream_t s, const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) {
    if (n_heads <= 0) return cudaSuccess;
    kv_encode_channels_kernel<<<unsigned(n_heads), kEncodeThreads, 0, s>>>(rows, n_heads, head_dim, dst);
    return cudaGetLastError();
}

int attention_splits(const AttnParams &p, int n_sm) {
    const uint64_t end = p.pos0 + uint64_t(p.n_q);
    const uint64_t cap = uint64_t(p.n_sink) + p.n_window;
    const uint64_t max_vis = p.streaming && end > cap ? cap : end;
    // Enough blocks to fill the GPU twice over, each with at least 64 keys.
    const uint64_t blocks = uint64_t(p.n_q) * uint64_t(p.n_head_kv);
    const uint64_t want = (2 * uint64_t(n_sm > 0 ? n_sm : 1) + blocks - 1) / blocks;
    const uint64_t by_keys = (max_vis + 63) / 64;
    uint64_t splits = want < by_keys ? want : by_keys;
    if (splits > 256) splits = 256;
    return int(splits ? splits : 1);
}

size_t attention_scratch_floats(const AttnParams &p, int splits) {
    return size_t(p.n_q) * size_t(p.n_head) * size_t(splits) * (size_t(p.head_dim) + 2);
}

cudaError_t attention(cudaStream_t s, const AttnParams &p, int splits, const float *q, float *partials, float *out) {
    if (p.n_q <= 0) return cudaSuccess;
    if (p.n_head_kv <= 0 || p.n_head % p.n_head_kv || p.head_dim <= 0 || p.n_q > 65535 || p.n_head_kv > 65535 ||
        splits <= 0 || (p.hadamard && (p.head_dim & (p.head_dim - 1) || p.head_dim > (1 << kMaxHadamardLog))))
        return cudaErrorInvalidValue;
    const int group = p.n_head / p.n_head_kv;
    int nw = 4;
    while (nw > 1 && attn_smem_floats(group, p.head_dim, nw) * sizeof(float) > kSmemLimit) nw--;
    const size_t smem = attn_smem_floats(group, p.head_dim, nw) * sizeof(float);
    if (smem > kSmemLimit) return cudaErrorInvalidValue;
    attn_kernel<<<dim3(unsigned(splits), unsigned(p.n_head_kv), unsigned(p.n_q)), unsigned(32 * nw), smem, s>>>(
        p, splits, q, partials);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    attn_merge_kernel<<<unsigned(p.n_q * p.n_head), 128, 0, s>>>(p.head_dim, splits, partials, out);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kvfit
