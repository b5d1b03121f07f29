// The CPU backend: the reference implementation of the backend interface.
// Weights stay in the model's memory map (zero copy); ops run synchronously on
// the calling thread and the process's shared CPU workers (threadpool.h), so
// synchronize() has nothing to wait for.
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/attention_order.h"
#include "backend/cpu/cpu_features.h"
#include "backend/cpu/ggml_order.h"
#include "backend/cpu/kernels.h"
#include "backend/cpu/recurrent_ops.h"
#include "backend/cpu/repack.h"
#include "backend/cpu/rwkv_ops.h"
#include "backend/cpu/threadpool.h"
#include "alloc_hook.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "kv/codec.h"
#include "kv/fold.h"

namespace kvfit {

using cpu::attention_ggml;
using cpu::rope_ggml;
using cpu::geglu_ggml;
using cpu::swiglu_ggml;

namespace {

// Rotates pairs (2i, 2i+1) of v by the angles whose cos, sin are interleaved
// in cs: the attention-time RoPE of every cached key, so it must be cheap.
void rotate_norm_scalar(float *v, const float *cs, int n_dims) {
    for (int i = 0; i < n_dims / 2; i++) {
        const float x0 = v[2 * i], x1 = v[2 * i + 1];
        v[2 * i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
        v[2 * i + 1] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) inline __m256 rotate8_avx2(__m256 x, const float *cs) {
    const __m256 t = _mm256_loadu_ps(cs);
    const __m256 c = _mm256_moveldup_ps(t), sn = _mm256_movehdup_ps(t);
    const __m256 swapped = _mm256_permute_ps(x, 0xB1);  // (x1, x0) in each pair
    return _mm256_addsub_ps(_mm256_mul_ps(x, c), _mm256_mul_ps(swapped, sn));
}

__attribute__((target("avx2,fma"))) void rotate_norm_avx2(float *v, const float *cs, int n_dims) {
    int i = 0;
    for (; i + 8 <= n_dims; i += 8) _mm256_storeu_ps(v + i, rotate8_avx2(_mm256_loadu_ps(v + i), cs + i));
    if (i < n_dims) rotate_norm_scalar(v + i, cs + i, n_dims - i);
}

// Rotates block keys j = 0 .. nb-1 to the cache positions whose cos/sin rows
// are cs + j * n_dims (pair mode, n_dims a multiple of 8).
__attribute__((target("avx2,fma"))) void rotate_block_avx2(float *keys, int nb, int hd, int n_dims, const float *cs) {
    for (int j = 0; j < nb; j++) {
        float *k = keys + size_t(j) * size_t(hd);
        const float *c = cs + size_t(j) * size_t(n_dims);
        for (int i = 0; i < n_dims; i += 8) _mm256_storeu_ps(k + i, rotate8_avx2(_mm256_loadu_ps(k + i), c + i));
    }
}

#endif

// Weights repacked at load for the matrix kernels (repack.h), by the address
// of the original (which get_rows and everything else keep using). Shared by
// the backend and its streams; filled while the model loads, read-only after.
struct Repacked {
    std::unordered_map<const void *, uint8_t *> by_weight;
    ~Repacked() {
        for (auto &e : by_weight) std::free(e.second);
    }
    const uint8_t *find(const void *w) const {
        const auto it = by_weight.find(w);
        return it == by_weight.end() ? nullptr : it->second;
    }
};

// Drops the whole pages inside [p, p + n) of a read-only file mapping.
void drop_pages(const void *p, size_t n) {
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t b = (uintptr_t(p) + page - 1) / page * page, e = (uintptr_t(p) + n) / page * page;
    if (e > b) madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);  // advice: a failure changes nothing
}

using RotateFn = void (*)(float *, const float *, int);

RotateFn pick_rotate() {
#if defined(__x86_64__)
    if (cpu::has_avx2_fma()) return rotate_norm_avx2;
#endif
    return rotate_norm_scalar;
}

class CpuStream final : public Stream {
public:
    CpuStream(int n_threads, int max_tokens, int64_t max_cols, int max_kv, std::shared_ptr<const Repacked> repacked)
        : pool_(n_threads), k_(kernels_best()), repacked_(std::move(repacked)), rotate_norm_(pick_rotate()),
#if defined(__x86_64__)
          fast_attention_(cpu::has_avx2_fma()),
#endif
          max_kv_(max_kv) {
        size_t scratch = 0;
        for (uint32_t t : {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_Q8_0,
                           TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K})
            scratch = std::max(scratch, matmul_scratch_bytes(t, max_cols, max_tokens));
        resize_checked(matmul_scratch_, scratch, "matrix product scratch");
        max_tokens_ = max_tokens;
    }

    // Rotates one head vector to cache position pos (RoPE from the cache's cos/sin table).
    void rotate(float *v, uint32_t pos, const CacheAttention &a) const {
        const int half = a.rope.n_dims / 2;
        const float *cs = a.rope_cs + size_t(pos) * size_t(half) * 2;
        if (a.rope.mode == RopeMode::Norm) return rotate_norm_(v, cs, a.rope.n_dims);
        for (int i = 0; i < half; i++) {  // Neox: pairs (i, i + half)
            const float x0 = v[i], x1 = v[i + half];
            v[i] = x0 * cs[2 * i] - x1 * cs[2 * i + 1];
            v[i + half] = x0 * cs[2 * i + 1] + x1 * cs[2 * i];
        }
    }
    // Keys of stream positions j0 .. j0 + n - 1 of KV head g, decoded into
    // dst [n][head_dim] before RoPE (a Hadamard rotation undone), from
    // wherever the layout keeps them.
    static void decode_keys(const CacheAttention &a, int g, uint64_t j0, int n, float *dst) {
        const int hd = a.head_dim;
        const uint64_t S = a.n_sink, W = a.n_window;
        const KVCodec kc = a.channel_keys ? KVCodec::F16 : KVCodec(a.codec);
        const size_t krb = a.channel_keys ? size_t(a.n_head_kv) * size_t(hd) * 2 : a.row_bytes;
        const size_t khb = a.channel_keys ? size_t(hd) * 2 : a.head_bytes;
        // Channel keys: positions from res0 on are in the block still being filled.
        const uint64_t res0 = a.pos0 > S ? S + (a.pos0 - S) / KV_CHANNEL_BLOCK * KV_CHANNEL_BLOCK : a.pos0;
        for (int i = 0; i < n;) {
            const uint64_t j = j0 + uint64_t(i);
            float *d = dst + size_t(i) * size_t(hd);
            const uint8_t *row;
            if (j >= a.pos0) {
                row = a.k_new + (j - a.pos0) * krb;
            } else if (!a.channel_keys) {
                row = a.k + a.slot(j) * krb;
            } else if (a.streaming && j < S) {
                row = a.k_sink + j * krb;
            } else if (j >= res0) {
                row = a.k_res + (j - S) % KV_CHANNEL_BLOCK * krb;
            } else {
                // A packed block: decode the run of positions it holds at once.
                const uint64_t w = j - S;
                const int o = int(w % KV_CHANNEL_BLOCK), cnt = std::min(n - i, KV_CHANNEL_BLOCK - o);
                const uint8_t *block = a.k + (w % W) / KV_CHANNEL_BLOCK * a.k_block_bytes;
                channel_block_decode(block + size_t(g) * (a.k_block_bytes / size_t(a.n_head_kv)), hd, o, cnt, d);
                i += cnt;
                continue;
            }
            codec_decode(kc, row + size_t(g) * khb, d, hd);
            if (a.hadamard) hadamard_rotate_inv(d, hd);
            i++;
        }
    }

    // Values of positions j0 .. j0 + n - 1 of KV head g into dst [n][head_dim].
    static void decode_values(const CacheAttention &a, int g, uint64_t j0, int n, float *dst) {
        for (int i = 0; i < n; i++) {
            const uint64_t j = j0 + uint64_t(i);
            const uint8_t *row = j >= a.pos0 ? a.v_new + (j - a.pos0) * a.row_bytes : a.v + a.slot(j) * a.row_bytes;
            codec_decode(KVCodec(a.codec), row + size_t(g) * a.head_bytes, dst + size_t(i) * size_t(a.head_dim),
                         a.head_dim);
        }
    }

    ~CpuStream() override {
        for (void *p : allocs_) std::free(p);
    }

    void *alloc(size_t bytes) override {
        void *p = nullptr;
        const size_t size = std::max<size_t>(bytes, 64);
        check_alloc(size, "a CPU session buffer");
        allocs_.reserve(allocs_.size() + 1);  // so that push_back cannot fail and lose p
        if (posix_memalign(&p, 64, size) != 0 || !p) fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes of CPU memory", bytes);
        allocs_.push_back(p);
        allocated_ += size;
        return p;
    }
    uint64_t allocated_bytes() const override { return allocated_; }
    void upload(void *dst, const void *src, size_t bytes) override { std::memcpy(dst, src, bytes); }
    void download(void *dst, const void *src, size_t bytes) override { std::memcpy(dst, src, bytes); }
    void synchronize() override {}

    void get_rows(const Weight &table, const int32_t *ids, int n, float *x) override {
        for (int i = 0; i < n; i++)
            dequantize_row(table.type, static_cast<const uint8_t *>(table.data) + size_t(ids[i]) * table.row_bytes,
                           x + size_t(i) * size_t(table.n_cols), table.n_cols);
    }

    void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) override {
        const float *g = static_cast<const float *>(w.data);
        const int64_t d = w.n_cols;
        auto row = [&](int64_t t) {
            const float *xr = x + t * d;
            float *yr = y + t * d;
            double ss = 0;  // as ggml: squares rounded to float, summed in double
            for (int64_t i = 0; i < d; i++) ss += double(xr[i] * xr[i]);
            const float scale = 1.0f / std::sqrt(float(ss / double(d)) + eps);
            for (int64_t i = 0; i < d; i++) yr[i] = xr[i] * scale * g[i];
        };
        if (n == 1) {
            row(0);
            return;
        }
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(n, ith, nth, b, e);
            for (int64_t t = b; t < e; t++) row(t);
        });
    }

    void matmul(const Weight &w, const float *x, int n, float *y) override {
        if (const uint8_t *w4 = repacked_ ? repacked_->find(w.data) : nullptr)
            return kvfit::matmul_x4(pool_, k_, w.type, w4, w.n_rows, w.n_cols, x, n, y, w.n_rows,
                                    matmul_scratch_.data());
        kvfit::matmul(pool_, k_, w.type, w.data, w.row_bytes, w.n_rows, w.n_cols, x, n, y, w.n_rows,
                      matmul_scratch_.data());
    }

    void kv_encode(int codec, bool hadamard, float *x, int n, int n_heads, int head_dim, uint8_t *dst) override {
        const KVCodec c = KVCodec(codec);
        const size_t hb = codec_row_bytes(c, head_dim);
        for (int r = 0; r < n * n_heads; r++) {
            float *h = x + size_t(r) * head_dim;
            if (hadamard) hadamard_rotate(h, head_dim);
            codec_encode(c, h, dst + size_t(r) * hb, head_dim);
        }
    }

    void kv_encode_channels(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) override {
        const size_t width = size_t(n_heads) * size_t(head_dim);
        std::vector<float> &x = channel_scratch_;
        x.resize(width * KV_CHANNEL_BLOCK);
        codec_decode(KVCodec::F16, rows, x.data(), int(x.size()));
        for (int g = 0; g < n_heads; g++)
            channel_block_encode(x.data() + size_t(g) * head_dim, width, dst + size_t(g) * channel_block_bytes(head_dim),
                                 head_dim);
    }

    void fold_add(const FoldArgs &f, const uint8_t *k_row, const uint8_t *v_row, int codec, bool hadamard,
                  size_t head_bytes) override {
        fold_add_host(f, k_row, v_row, KVCodec(codec), hadamard, head_bytes);
    }
    void fold_read(const FoldArgs &f, const float *q, int n_q, const float *stats, float *out) override {
        fold_read_host(f, q, n_q, stats, out);
    }

    void copy(void *dst, const void *src, size_t bytes) override { std::memmove(dst, src, bytes); }
    void zero(void *dst, size_t bytes) override { std::memset(dst, 0, bytes); }

    // One new token (decode), in kvfit's attention order (attention_order.h):
    // the visible keys (sinks, then the window in order, indexed by cache
    // position) form chunks of kAttnChunk, and the threads take (KV head,
    // chunk) tasks, so a long cache keeps every thread busy and the result
    // does not depend on how many there are. The chunks are merged in order.
    void decode_attention(const CacheAttention &a, const float *q, float *out) {
        const uint32_t S = a.n_sink, W = a.n_window;
        const int hd = a.head_dim, group = a.n_head / a.n_head_kv;
        const uint64_t t = a.pos0;
        const uint32_t sinks_vis = uint32_t(std::min<uint64_t>(S, t + 1));
        const uint64_t wb = a.streaming ? std::max<uint64_t>(S, t + 1 > W ? t + 1 - W : 0) : uint64_t(S);
        const uint32_t n_vis = sinks_vis + (t + 1 > wb ? uint32_t(t + 1 - wb) : 0);
        const int nc = int((n_vis + cpu::kAttnChunk - 1) / cpu::kAttnChunk);
        const size_t part = size_t(group) * (2 + size_t(hd));  // per task and head: m, l, acc
        constexpr int B = 64;                                   // keys decoded at a time
        const size_t per_thread = size_t(group) * size_t(hd) + 2 * size_t(B) * size_t(hd) + size_t(group) * B + 3 * B;
        const bool fast_rotate = fast_attention_ && a.rope.n_dims % 8 == 0 && a.rope.mode == RopeMode::Norm;
        const size_t need = part * size_t(a.n_head_kv) * size_t(nc) + per_thread * size_t(pool_.size());
        if (attn_scratch_.size() < need) resize_checked(attn_scratch_, need, "attention scratch");
        float *parts = attn_scratch_.data();
        const int64_t tasks = int64_t(a.n_head_kv) * nc;
        pool_.run([&](int ith, int nth) {
            float *scratch = parts + part * size_t(a.n_head_kv) * size_t(nc) + per_thread * size_t(ith);
            float *qr = scratch;                    // [group][hd] rotated queries
            float *keys = qr + size_t(group) * hd;  // [B][hd] a block of keys, rotated
            float *vals = keys + size_t(B) * hd;    // [B][hd] their values
            float *sc = vals + size_t(B) * hd;      // [group][B] scores
            float *tmp = sc + size_t(group) * B;    // [3 B] for attn_chunk_add
            int64_t tb, te;
            split_range(tasks, ith, nth, tb, te);
            for (int64_t task = tb; task < te; task++) {
                const int g = int(task / nc), c = int(task % nc);
                const int64_t kb = int64_t(c) * cpu::kAttnChunk, ke = std::min<int64_t>(n_vis, kb + cpu::kAttnChunk);
                float *p = parts + part * size_t(task);
                for (int h = 0; h < group; h++) {
                    std::memcpy(qr + size_t(h) * hd, q + (size_t(g) * group + h) * hd, size_t(hd) * 4);
                    rotate(qr + size_t(h) * hd, n_vis - 1, a);
                    p[h * (2 + hd)] = -INFINITY;
                    p[h * (2 + hd) + 1] = 0.0f;
                    std::fill(p + h * (2 + hd) + 2, p + (h + 1) * (2 + hd), 0.0f);
                }
                for (int64_t b0 = kb; b0 < ke; b0 += B) {
                    const int nb = int(std::min<int64_t>(B, ke - b0));
                    // Visible indices b0 .. b0 + nb - 1: sinks first, then the window in order.
                    const int n_s = int(std::clamp<int64_t>(int64_t(sinks_vis) - b0, 0, nb));
                    if (n_s) {
                        decode_keys(a, g, uint64_t(b0), n_s, keys);
                        decode_values(a, g, uint64_t(b0), n_s, vals);
                    }
                    if (nb > n_s) {
                        const uint64_t j0 = wb + uint64_t(b0 + n_s - int64_t(sinks_vis));
                        decode_keys(a, g, j0, nb - n_s, keys + size_t(n_s) * hd);
                        decode_values(a, g, j0, nb - n_s, vals + size_t(n_s) * hd);
                    }
#if defined(__x86_64__)
                    if (fast_rotate)
                        rotate_block_avx2(keys, nb, hd, a.rope.n_dims, a.rope_cs + size_t(b0) * size_t(a.rope.n_dims));
                    else
#endif
                        for (int j = 0; j < nb; j++) rotate(keys + size_t(j) * hd, uint32_t(b0 + j), a);
                    for (int h = 0; h < group; h++) {
                        for (int j = 0; j < nb; j++)
                            sc[h * B + j] = cpu::attn_dot(keys + size_t(j) * hd, qr + size_t(h) * hd, hd) * a.scale;
                        float *m = p + h * (2 + hd);
                        cpu::SoftmaxState st{m[0], m[1]};
                        cpu::attn_chunk_add(st, m + 2, sc + h * B, nb, vals, hd, tmp);
                        m[0] = st.m;
                        m[1] = st.l;
                    }
                }
            }
        });
        for (int g = 0; g < a.n_head_kv; g++) {
            for (int h = 0; h < group; h++) {
                float *o = out + (size_t(g) * group + h) * hd;
                std::fill(o, o + hd, 0.0f);
                cpu::SoftmaxState total;
                for (int c = 0; c < nc; c++) {
                    const float *pm = parts + part * size_t(g * nc + c) + h * (2 + hd);
                    cpu::attn_chunk_merge(total, o, cpu::SoftmaxState{pm[0], pm[1]}, pm + 2, hd);
                }
                cpu::attn_finish(total, o, hd, o);
                if (a.stats) {  // fold mode
                    a.stats[(size_t(g) * group + h) * 2] = total.m;
                    a.stats[(size_t(g) * group + h) * 2 + 1] = total.l;
                }
            }
        }
    }

    bool stores_rotated_keys() const override { return true; }

    void rope_keys(float *k, int n, int n_heads, int head_dim, uint64_t pos0, const CacheAttention &a) override {
        const size_t half = size_t(a.rope.n_dims / 2);
        for (int i = 0; i < n; i++)
            for (int h = 0; h < n_heads; h++)
                rope_ggml(k + (size_t(i) * n_heads + h) * head_dim, a.rope_cs + (pos0 + uint64_t(i)) * half * 2,
                          a.rope.n_dims, a.rope.mode == RopeMode::Neox);
    }

    static constexpr int kGgmlTiledQueries = 64;  // GGML_FA_TILE_Q

    // Dense F16 layers with rotated keys: llama.cpp's flash attention, one
    // query head at a time over every earlier position (see ggml_order.h).
    void attention_ggml_order(const CacheAttention &a, const float *q, float *out) {
        const int hd = a.head_dim, group = a.n_head / a.n_head_kv;
        const size_t half = size_t(a.rope.n_dims / 2);
        const int64_t tasks = int64_t(a.n_q) * a.n_head;
        if (ggml_scratch_.size() < size_t(pool_.size()) * size_t(hd) * 4)
            resize_checked(ggml_scratch_, size_t(pool_.size()) * size_t(hd) * 4, "attention scratch");
        pool_.run([&](int ith, int nth) {
            float *qf = ggml_scratch_.data() + size_t(ith) * size_t(hd) * 4;
            uint16_t *q16 = reinterpret_cast<uint16_t *>(qf + hd);  // then 2 hd floats for attention_ggml_rows
            int64_t tb, te;
            split_range(tasks, ith, nth, tb, te);
            for (int64_t task = tb; task < te; task++) {
                const int i = int(task / a.n_head), h = int(task % a.n_head);
                const size_t g_off = size_t(h / group) * a.head_bytes;
                const uint64_t pos = a.pos0 + uint64_t(i);
                std::memcpy(qf, q + size_t(task) * hd, size_t(hd) * 4);
                rope_ggml(qf, a.rope_cs + pos * half * 2, a.rope.n_dims, a.rope.mode == RopeMode::Neox);
                codec_encode(KVCodec::F16, qf, q16, hd);
                // Dense: every earlier position, slot = position. A native
                // window (no sinks): the last n_window positions, in a ring.
                const uint64_t first = a.streaming && pos + 1 > a.n_window ? pos + 1 - a.n_window : 0;
                auto rows = [&](const uint8_t *cached, const uint8_t *fresh) {
                    return cpu::F16Rows{reinterpret_cast<const uint16_t *>(cached + g_off),
                                        reinterpret_cast<const uint16_t *>(fresh + g_off), a.row_bytes / 2, a.pos0,
                                        first, a.streaming ? uint64_t(a.n_window) : 0};
                };
                cpu::attention_ggml_rows(q16, hd, int(pos + 1 - first), a.scale, rows(a.k, a.k_new), rows(a.v, a.v_new),
                                         qf + 2 * size_t(hd), out + size_t(task) * hd);
            }
        });
    }

    void cache_attention(const CacheAttention &a, const float *q, float *out) override {
        if (a.keys_rotated && a.streaming && a.n_sink)
            fail(KVFIT_E_INTERNAL, "rotated keys in a ring with sinks");
        // llama.cpp computes batches of 64 or more queries with a tiled kernel
        // whose order is not reproduced here: those take the fast path below.
        if (a.keys_rotated && a.n_q < kGgmlTiledQueries) return attention_ggml_order(a, q, out);
        if (a.n_q == 1) return decode_attention(a, q, out);
        const uint32_t S = a.n_sink, W = a.n_window;
        const int hd = a.head_dim;
        const int group = a.n_head / a.n_head_kv;
        // Queries are cut into chunks so both the KV heads and the batch spread over the threads.
        const int q_chunks = std::max(1, std::min(a.n_q, (pool_.size() + a.n_head_kv - 1) / a.n_head_kv * 2));
        const int64_t tasks = int64_t(a.n_head_kv) * q_chunks;
        // Keys and values a task decodes: up to S sinks + W + n_q - 1 window tokens.
        const size_t rows = size_t(S) + size_t(W) + size_t(a.n_q);
        if (rows > size_t(max_kv_) + size_t(max_tokens_))
            fail(KVFIT_E_INTERNAL, "attention over more rows than reserved");
        // per thread: keys, values, a tile's scores, its queries (window and sinks), its chunk accumulators,
        // chunk scratch
        constexpr size_t kT = 4;
        const size_t per_thread = 2 * rows * size_t(hd) + kT * rows + kT * size_t(hd) * 2 + kT * size_t(hd) +
                                  3 * kT * size_t(cpu::kAttnChunk);
        if (attn_scratch_.size() < per_thread * size_t(pool_.size()))
            resize_checked(attn_scratch_, per_thread * size_t(pool_.size()), "attention scratch");  // once: sizes do not grow later
        pool_.run([&](int ith, int nth) {
            float *kr = attn_scratch_.data() + per_thread * size_t(ith);  // [rows][hd] rotated keys
            float *vr = kr + rows * size_t(hd);                              // [rows][hd] values
            float *sc = vr + rows * size_t(hd);                              // [kT][rows] scores of a tile's rows
            float *qw = sc + kT * rows;                                      // [kT][hd] queries for the window
            float *qs = qw + kT * size_t(hd);                                // [kT][hd] queries for the sinks
            float *cacc = qs + kT * size_t(hd);                              // [kT][hd] chunk accumulators
            float *tmp = cacc + kT * size_t(hd);                             // [3 kT kAttnChunk]
            int64_t tb, te;
            split_range(tasks, ith, nth, tb, te);
            for (int64_t task = tb; task < te; task++) {
                const int g = int(task / q_chunks), chunk = int(task % q_chunks);
                int64_t qb, qe;
                split_range(a.n_q, chunk, q_chunks, qb, qe);
                if (qb >= qe) continue;
                const uint64_t t1 = a.pos0 + uint64_t(qe) - 1;
                // Window start of a query at stream position t (dense: everything after the sinks).
                auto win_start = [&](uint64_t t) {
                    return a.streaming ? std::max<uint64_t>(S, t + 1 > W ? t + 1 - W : 0) : uint64_t(S);
                };
                // Decode every key and value these queries may see, once. Keys
                // are rotated to positions that keep every query-key distance
                // the cache defines: sinks at 0..S-1 (the query rotated to its
                // own cache position for them), window tokens at S + (j - ws0)
                // (the query at S + (t - ws0)), so distances to window tokens are
                // t - j whatever was evicted in between.
                // (the frame is the whole batch's, whichever queries this task has:
                // rotations, and so the bits, must not depend on the thread count)
                const uint64_t ws0 = win_start(a.pos0);
                const uint32_t n_sinks = uint32_t(std::min<uint64_t>(S, t1 + 1));
                const uint64_t n_win = t1 + 1 > ws0 ? t1 + 1 - std::max<uint64_t>(ws0, S) : 0;
                decode_keys(a, g, 0, int(n_sinks), kr);
                decode_values(a, g, 0, int(n_sinks), vr);
                if (!a.keys_rotated)
                    for (uint32_t j = 0; j < n_sinks; j++) rotate(kr + size_t(j) * hd, j, a);
                const uint64_t wfirst = std::max<uint64_t>(ws0, S);
                decode_keys(a, g, wfirst, int(n_win), kr + size_t(S) * hd);
                decode_values(a, g, wfirst, int(n_win), vr + size_t(S) * hd);
                if (!a.keys_rotated)  // (dense: cache positions are stream positions)
                    for (uint64_t w = 0; w < n_win; w++) rotate(kr + (size_t(S) + w) * hd, uint32_t(S + w), a);
                // Queries in tiles of up to kTile rows of one head: the tile's
                // rows share the keys and values they read (every row keeps
                // its own order of operations, attention_order.h).
                constexpr int kTile = 4;
                for (int64_t i0 = qb; i0 < qe; i0 += kTile) {
                    const int nq = int(std::min<int64_t>(kTile, qe - i0));
                    uint32_t sinks_vis[kTile], win_vis[kTile], qpos_sink[kTile], qpos_win[kTile];
                    int n_vis[kTile];
                    const float *kw[kTile], *vw[kTile];
                    bool same_sinks = true;
                    for (int r = 0; r < nq; r++) {
                        const uint64_t t = a.pos0 + uint64_t(i0 + r);
                        sinks_vis[r] = uint32_t(std::min<uint64_t>(S, t + 1));
                        const uint64_t wb = std::max<uint64_t>(win_start(t), S);  // first window token seen
                        win_vis[r] = t + 1 > wb ? uint32_t(t + 1 - wb) : 0;
                        qpos_sink[r] = sinks_vis[r] + win_vis[r] - 1;    // its own cache position
                        qpos_win[r] = uint32_t(S + (t - wfirst));        // in the batch's window frame
                        kw[r] = kr + (size_t(S) + (wb - wfirst)) * hd;  // its first window key
                        vw[r] = vr + (size_t(S) + (wb - wfirst)) * hd;
                        n_vis[r] = int(sinks_vis[r] + win_vis[r]);
                        same_sinks = same_sinks && sinks_vis[r] == sinks_vis[0];
                    }
                    for (int h = 0; h < group; h++) {
                        float *o[kTile], *cacc_r[kTile];
                        const float *sc_r[kTile];
                        for (int r = 0; r < nq; r++) {
                            const int64_t i = i0 + r;
                            const uint64_t t = a.pos0 + uint64_t(i);
                            const float *qsrc = q + (size_t(i) * a.n_head + size_t(g) * group + h) * hd;
                            float *a_w = qw + size_t(r) * hd, *a_s = qs + size_t(r) * hd;
                            std::memcpy(a_w, qsrc, size_t(hd) * 4);
                            // (keys kept rotated at their stream positions: the query at its own)
                            rotate(a_w, a.keys_rotated ? uint32_t(t) : win_vis[r] ? qpos_win[r] : qpos_sink[r], a);
                            if (sinks_vis[r]) {
                                std::memcpy(a_s, qsrc, size_t(hd) * 4);
                                rotate(a_s, qpos_sink[r], a);
                            }
                            o[r] = out + (size_t(i) * a.n_head + size_t(g) * group + h) * hd;
                            sc_r[r] = sc + size_t(r) * rows;
                            cacc_r[r] = cacc + size_t(r) * hd;
                            std::fill(o[r], o[r] + hd, 0.0f);
                        }
                        // Scores: the keys the rows share scored for all of them at once.
                        {
                            const float *qa[kTile], *qb_[kTile];
                            float *os[kTile], *ow[kTile];
                            bool same_win = same_sinks;
                            uint32_t win_common = win_vis[0];
                            for (int r = 0; r < nq; r++) {
                                qa[r] = qs + size_t(r) * hd;
                                qb_[r] = qw + size_t(r) * hd;
                                os[r] = const_cast<float *>(sc_r[r]);
                                ow[r] = const_cast<float *>(sc_r[r]) + sinks_vis[r];
                                same_win = same_win && kw[r] == kw[0];
                                win_common = std::min(win_common, win_vis[r]);
                            }
                            if (!same_win) win_common = 0;
                            if (same_sinks && sinks_vis[0])
                                cpu::attn_scores_multi(nq, kr, int(sinks_vis[0]), qa, hd, a.scale, os);
                            if (win_common) cpu::attn_scores_multi(nq, kw[0], int(win_common), qb_, hd, a.scale, ow);
                            for (int r = 0; r < nq; r++) {
                                if (!same_sinks) cpu::attn_scores(kr, int(sinks_vis[r]), qa[r], hd, a.scale, os[r]);
                                if (win_vis[r] > win_common)
                                    cpu::attn_scores(kw[r] + size_t(win_common) * hd, int(win_vis[r] - win_common),
                                                     qb_[r], hd, a.scale, ow[r] + win_common);
                            }
                        }
                        // Keys [v0, v1) of the visible lists of the rows in `idx`
                        // (all with v1 <= n_vis), added to their chunks' states:
                        // the part among the sinks, then the part in the window.
                        cpu::SoftmaxState st[kTile], total[kTile];
                        auto add = [&](const int *idx, int m, int v0, int v1) {
                            const int s_vis = int(sinks_vis[idx[0]]);
                            cpu::SoftmaxState sts[kTile];
                            float *accs[kTile];
                            const float *ss[kTile], *vs[kTile];
                            for (int k = 0; k < m; k++) {
                                sts[k] = st[idx[k]];
                                accs[k] = cacc_r[idx[k]];
                            }
                            const int s1 = std::min(v1, s_vis);
                            if (v0 < s1) {
                                for (int k = 0; k < m; k++) {
                                    ss[k] = sc_r[idx[k]] + v0;
                                    vs[k] = vr + size_t(v0) * hd;
                                }
                                cpu::attn_chunk_add_multi(m, sts, accs, ss, s1 - v0, vs, hd, tmp);
                            }
                            const int w0 = std::max(v0, s_vis);
                            if (w0 < v1) {
                                for (int k = 0; k < m; k++) {
                                    ss[k] = sc_r[idx[k]] + w0;
                                    vs[k] = vw[idx[k]] + size_t(w0 - s_vis) * hd;
                                }
                                cpu::attn_chunk_add_multi(m, sts, accs, ss, v1 - w0, vs, hd, tmp);
                            }
                            for (int k = 0; k < m; k++) st[idx[k]] = sts[k];
                        };
                        int n_max = 0;
                        for (int r = 0; r < nq; r++) n_max = std::max(n_max, n_vis[r]);
                        // Chunks of the visible lists, merged in order (attention_order.h).
                        for (int v0 = 0; v0 < n_max; v0 += cpu::kAttnChunk) {
                            const int v1 = v0 + cpu::kAttnChunk;
                            int act[kTile], m = 0, common = v1;
                            for (int r = 0; r < nq; r++)
                                if (v0 < n_vis[r]) {
                                    act[m++] = r;
                                    st[r] = cpu::SoftmaxState{};
                                    std::fill(cacc_r[r], cacc_r[r] + hd, 0.0f);
                                    common = std::min(common, n_vis[r]);
                                }
                            if (same_sinks) {
                                add(act, m, v0, common);
                            } else {
                                common = v0;
                            }
                            for (int k = 0; k < m; k++) {
                                const int r = act[k];
                                const int e1 = std::min(v1, n_vis[r]);
                                if (common < e1) add(&act[k], 1, common, e1);
                                cpu::attn_chunk_merge(total[r], o[r], st[r], cacc_r[r], hd);
                            }
                        }
                        for (int r = 0; r < nq; r++) {
                            cpu::attn_finish(total[r], o[r], hd, o[r]);
                            if (a.stats) {  // fold mode: the normaliser the folded memory shares
                                float *st2 = a.stats + (size_t(i0 + r) * a.n_head + size_t(g) * group + h) * 2;
                                st2[0] = total[r].m;
                                st2[1] = total[r].l;
                            }
                        }
                    }
                }
            }
        });
    }

    void swiglu(const float *gate, const float *up, size_t n, float *out) override { swiglu_ggml(gate, up, n, out); }

    void add(float *y, const float *x, size_t n) override {
        for (size_t i = 0; i < n; i++) y[i] += x[i];
    }

    void scale(float *x, size_t n, float s) override {
        for (size_t i = 0; i < n; i++) x[i] *= s;
    }

    void geglu(const float *gate, const float *up, size_t n, float *out) override { geglu_ggml(gate, up, n, out); }

    // ---- RWKV-7 (backend/cpu/rwkv_ops.h); rows, or heads, over the workers.
    template <typename F>
    void rows(int n, F &&f) {
        if (n <= 1) return f(0, n);
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(n, ith, nth, b, e);
            if (b < e) f(int(b), int(e));
        });
    }

    void norm_affine(const float *x, const float *w, const float *b, float eps, int n, int d, int groups,
                     float *y) override {
        if (groups <= 0 || d % groups) fail(KVFIT_E_INTERNAL, "norm_affine: %d groups in rows of %d", groups, d);
        rows(n, [&](int t0, int t1) {
            for (int t = t0; t < t1; t++)
                cpu::norm_affine_row(x + size_t(t) * size_t(d), w, b, eps, d, groups, y + size_t(t) * size_t(d));
        });
    }

    void token_shift_mix(const float *x, float *state, const float *mix, int n_mix, int n, int d, float *out) override {
        if (n <= 0) return;
        rows(n, [&](int t0, int t1) { cpu::token_shift_mix_rows(x, state, mix, n_mix, n, d, t0, t1, out); });
        std::memcpy(state, x + size_t(n - 1) * size_t(d), size_t(d) * 4);
    }

    void activate(Activation f, float *x, size_t n) override {
        switch (f) {
        case Activation::Tanh:
            for (size_t i = 0; i < n; i++) x[i] = std::tanh(x[i]);
            break;
        case Activation::Sigmoid:
            for (size_t i = 0; i < n; i++) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
            break;
        case Activation::ReluSquare:
            for (size_t i = 0; i < n; i++) {
                const float r = x[i] > 0.0f ? x[i] : 0.0f;
                x[i] = r * r;
            }
            break;
        }
    }

    void rwkv7_prepare(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                       const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a, int n,
                       int n_head, int head_size, float *a_out, float *b_out) override {
        rows(n, [&](int t0, int t1) {
            cpu::rwkv7_prepare_rows(w, w0, a, a0, v, v_first, vmix, v0, k, k_k, k_a, n_head, head_size, t0, t1, a_out,
                                    b_out);
        });
    }

    void wkv7(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b, int n,
              int n_head, int head_size, float *state, float *out) override {
        if (n <= 0) return;
        if (n_head == 1) return cpu::wkv7_head_best(r, w, k, v, a, b, n, n_head, head_size, 0, state, out);
        pool_.run([&](int ith, int nth) {
            int64_t h0, h1;
            split_range(n_head, ith, nth, h0, h1);
            for (int64_t h = h0; h < h1; h++)
                cpu::wkv7_head_best(r, w, k, v, a, b, n, n_head, head_size, int(h), state, out);
        });
    }

    bool supports_state_type(StateType) const override { return true; }

    void wkv7_typed(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                    int n, int n_head, int head_size, StateType type, void *state, float *out) override {
        if (n <= 0) return;
        if (type == StateType::F32) return wkv7(r, w, k, v, a, b, n, n_head, head_size, static_cast<float *>(state), out);
        pool_.run([&](int ith, int nth) {
            int64_t h0, h1;
            split_range(n_head, ith, nth, h0, h1);
            for (int64_t h = h0; h < h1; h++)
                cpu::wkv7_head_typed(r, w, k, v, a, b, n, n_head, head_size, int(h), type, state, out);
        });
    }

    void rwkv7_bonus_gate(float *y, const float *r, const float *k, const float *v, const float *r_k, const float *g,
                          int n, int n_head, int head_size) override {
        const size_t d = size_t(n_head) * size_t(head_size);
        rows(n, [&](int t0, int t1) {
            for (int t = t0; t < t1; t++) {
                const size_t o = size_t(t) * d;
                cpu::rwkv7_bonus_gate_row(y + o, r + o, k + o, v + o, r_k, g + o, n_head, head_size);
            }
        });
    }

    // --- recurrent layers (recurrent_ops.h)
    const char *backend_name() const override { return "CPU"; }

    void ssm_conv(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y) override {
        if (n <= 0 || channels <= 0 || kernel < 1) fail(KVFIT_E_INTERNAL, "ssm_conv of %d x %d, kernel %d", n, channels, kernel);
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(channels, ith, nth, b, e);
            if (b < e) cpu::ssm_conv_channels(x, n, channels, kernel, w, state, y, int(b), int(e));
        });
    }

    void silu(const float *x, size_t n, float *y) override { cpu::silu_ggml(x, n, y); }

    void sigmoid_mul(float *x, const float *gate, size_t n) override {
        for (size_t i = 0; i < n; i++) x[i] = x[i] * (1.0f / (1.0f + std::exp(-gate[i])));
    }

    void delta_gates(float *alpha, float *beta, const float *dt_bias, const float *a, int n, int n_heads) override {
        for (int t = 0; t < n; t++)
            for (int h = 0; h < n_heads; h++) {
                const size_t i = size_t(t) * size_t(n_heads) + size_t(h);
                const float x = alpha[i] + dt_bias[h];
                const float sp = x > 20.0f ? x : std::log(1.0f + std::exp(x));
                alpha[i] = sp * a[h];
                beta[i] = 1.0f / (1.0f + std::exp(-beta[i]));
            }
    }

    void l2norm(float *x, int n, int rows, int dim, size_t stride, float eps) override {
        const float eps_n = eps / float(dim), inv_sqrt = 1.0f / std::sqrt(float(dim));
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++) {
                float *v = x + size_t(t) * stride + size_t(r) * size_t(dim);
                double ss = 0;
                for (int i = 0; i < dim; i++) ss += double(v[i] * v[i]);
                const float scale = 1.0f / std::sqrt(float(ss / double(dim)) + eps_n);
                for (int i = 0; i < dim; i++) v[i] = v[i] * scale;
                for (int i = 0; i < dim; i++) v[i] = v[i] * inv_sqrt;
            }
    }

    void gated_rmsnorm(const float *x, const Weight &w, const float *z, float eps, int rows, float *y) override {
        rmsnorm(x, w, eps, rows, y);
        const size_t d = size_t(w.n_cols);
        std::vector<float> sz(d);
        for (int r = 0; r < rows; r++) {
            float *yr = y + size_t(r) * d;
            cpu::silu_ggml(z + size_t(r) * d, d, sz.data());
            for (size_t i = 0; i < d; i++) yr[i] = yr[i] * sz[i];
        }
    }

    void delta_net(const DeltaNetArgs &a) override {
        check_delta(a);
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(a.n_v_heads, ith, nth, b, e);
            for (int64_t h = b; h < e; h++) cpu::delta_net_head(a, int(h));
        });
    }

    void delta_net_chunked(const DeltaNetArgs &a, int chunk) override {
        check_delta(a);
        // A state kept narrower than F32 is rounded after every token, which
        // the chunked scan (no state between a chunk's tokens) cannot do.
        if (a.state_type != StateType::F32) return delta_net(a);
        if (chunk < 1 || chunk > 1024) fail(KVFIT_E_INTERNAL, "delta_net chunk of %d", chunk);
        const size_t per = cpu::delta_net_chunk_scratch(a.head_dim, chunk);
        pool_.run([&](int ith, int nth) {
            int64_t b, e;
            split_range(a.n_v_heads, ith, nth, b, e);
            if (b >= e) return;
            std::vector<float> scratch(per);
            for (int64_t h = b; h < e; h++) cpu::delta_net_head_chunked(a, int(h), chunk, scratch.data());
        });
    }

    void copy_2d(void *dst, size_t dst_stride, const void *src, size_t src_stride, size_t rows, size_t width) override {
        for (size_t r = 0; r < rows; r++)
            std::memcpy(static_cast<uint8_t *>(dst) + r * dst_stride, static_cast<const uint8_t *>(src) + r * src_stride, width);
    }

private:
    static void check_delta(const DeltaNetArgs &a) {
        if (a.n <= 0 || a.n_k_heads <= 0 || a.n_v_heads <= 0 || a.head_dim <= 0 || !a.q || !a.k || !a.v || !a.g ||
            !a.beta || !a.state || !a.out)
            fail(KVFIT_E_INTERNAL, "delta_net: incomplete arguments");
    }

    ThreadPool pool_;
    const KernelTable &k_;
    std::shared_ptr<const Repacked> repacked_;
    RotateFn rotate_norm_;
    bool fast_attention_ = false;  // AVX2 + FMA key rotation in decode attention
    int max_kv_;
    std::vector<uint8_t> matmul_scratch_;
    std::vector<float> attn_scratch_;
    std::vector<float> channel_scratch_;
    std::vector<float> ggml_scratch_;  // per thread: query, F16 query, attention_ggml_rows scratch
    int max_tokens_ = 0;
    std::vector<void *> allocs_;
    uint64_t allocated_ = 0;  // what alloc() obtained
};

class CpuBackend final : public Backend {
public:
    const char *name() const override { return "CPU"; }
    kvfit_backend_kind kind() const override { return KVFIT_BACKEND_CPU; }
    bool reproduces_cpu() const override { return true; }
    bool supports_state_type(StateType) const override { return true; }

    Weight upload_weight(const GGUFTensor &t) override {
        Weight w;
        w.data = t.data;
        w.type = t.type;
        w.n_cols = t.ne[0];
        w.n_rows = t.ne[1] * t.ne[2] * t.ne[3];
        w.row_bytes = row_bytes(t.type, t.ne[0]);
        // Matrices also get a copy in the layout of the fastest kernels; the
        // original stays for get_rows (a tied embedding is both).
        if (w.n_rows > 1 && cpu::x4_wanted(kernels_best(), w.type, w.n_rows, w.n_cols) &&
            !repacked_->find(w.data)) {
            void *p = nullptr;
            if (posix_memalign(&p, 64, std::max<size_t>(cpu::x4_bytes(w.type, w.n_rows, w.n_cols), 64)) != 0 || !p)
                fail(KVFIT_E_NOMEM, "cannot allocate repacked weights");
            cpu::x4_repack(w.type, w.data, w.row_bytes, w.n_rows, w.n_cols, static_cast<uint8_t *>(p));
            try {
                repacked_->by_weight.emplace(w.data, static_cast<uint8_t *>(p));
            } catch (...) {
                std::free(p);
                throw;
            }
            // Products read the copy from now on: the original's pages leave
            // the process's memory (get_rows of a tied embedding reads back the
            // few rows it needs), so repacking does not double what a model
            // keeps resident.
            if (t.file_pages) drop_pages(t.data, t.nbytes);
        }
        return w;
    }

    const float *upload_floats(const float *data, size_t n) override {
        check_alloc(n * sizeof(float), "a model table");
        owned_.emplace_back(data, data + n);
        return owned_.back().data();
    }

    std::unique_ptr<Stream> create_stream(int n_threads, int max_tokens, int64_t max_cols, int max_kv) override {
        return std::make_unique<CpuStream>(n_threads, max_tokens, max_cols, max_kv, repacked_);
    }

private:
    std::shared_ptr<Repacked> repacked_ = std::make_shared<Repacked>();
    std::vector<std::vector<float>> owned_;
};

}  // namespace

std::unique_ptr<Backend> create_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace kvfit
