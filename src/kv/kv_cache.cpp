#include "kv/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.h"

namespace kvfit {

namespace {

constexpr uint32_t kDefaultSinks = 4;
constexpr uint32_t kMinWindow = 16;  // below this a streaming layer sees too little to be useful

// cos/sin table of the positions attention rotates to: rope_dims/2 pairs of
// floats each. A streaming batch of up to W new tokens rotates its window
// keys to positions up to S + 2W (see the CPU attention), a dense cache to
// its capacity.
uint32_t rope_positions(uint32_t sinks, uint32_t window, bool streaming) {
    return streaming ? sinks + 2 * window : window;
}

uint64_t rope_table_bytes(const KVShape &shape, uint32_t positions) {
    return uint64_t(positions) * uint64_t(shape.rope_dims / 2) * 2 * sizeof(float);
}

KVCodec codec_of(kvfit_kv_codec c) {
    switch (c) {
        case KVFIT_KV_Q8: return KVCodec::Q8;
        case KVFIT_KV_Q4:
        case KVFIT_KV_Q4_HADAMARD: return KVCodec::Q4;
        default: return KVCodec::F16;
    }
}

kvfit_kv_codec public_codec(KVCodec c, bool hadamard) {
    switch (c) {
        case KVCodec::Q8: return KVFIT_KV_Q8;
        case KVCodec::Q4: return hadamard ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4;
        default: return KVFIT_KV_F16;
    }
}

// Bytes of a streaming plan (budgets only apply to streaming sessions).
uint64_t plan_bytes(const KVShape &shape, KVCodec codec, uint32_t sinks, uint32_t window) {
    return uint64_t(shape.n_layer) * uint64_t(sinks + window) * kv_token_bytes(shape, codec) +
           rope_table_bytes(shape, rope_positions(sinks, window, true));
}

// Largest window that fits the budget with this codec (0 if none).
uint32_t max_window(const KVShape &shape, KVCodec codec, uint32_t sinks, uint64_t budget) {
    const uint64_t fixed = plan_bytes(shape, codec, sinks, 0);
    const uint64_t per_slot = plan_bytes(shape, codec, sinks, 1) - fixed;
    if (budget <= fixed) return 0;
    return uint32_t(std::min<uint64_t>((budget - fixed) / per_slot, 1u << 30));
}

}  // namespace

uint64_t kv_token_bytes(const KVShape &shape, KVCodec codec) {
    return 2 * uint64_t(shape.n_head_kv) * codec_row_bytes(codec, shape.head_dim);
}

KVPlan plan_kv(const KVShape &shape, const kvfit_session_params &p, uint32_t n_ctx_train) {
    if (p.n_sink < -1 || p.n_sink > 1 << 20) fail(KVFIT_E_ARG, "n_sink must be -1 (default) or 0..2^20, got %d", p.n_sink);
    if (uint32_t(p.kv_codec) > KVFIT_KV_Q4_HADAMARD) fail(KVFIT_E_ARG, "unknown kv_codec %d", int(p.kv_codec));
    if (p.n_window > (1u << 24)) fail(KVFIT_E_ARG, "n_window %u is too large", p.n_window);
    const uint32_t target = p.n_ctx ? p.n_ctx : n_ctx_train;
    if (target > (1u << 24)) fail(KVFIT_E_ARG, "n_ctx %u is too large", target);
    const bool hadamard = p.kv_codec == KVFIT_KV_Q4_HADAMARD;
    // Quantized codecs group 32 values of a head; other head sizes stay F16.
    const bool groups_ok = shape.head_dim % 32 == 0;
    if (!groups_ok && p.kv_codec != KVFIT_KV_AUTO && p.kv_codec != KVFIT_KV_F16)
        fail(KVFIT_E_ARG, "KV codec %d needs a head dimension that is a multiple of 32; this model has %d",
             int(p.kv_codec), shape.head_dim);
    if (hadamard && (shape.head_dim & (shape.head_dim - 1)))
        fail(KVFIT_E_ARG, "the Hadamard codec needs a power-of-two head dimension, this model has %d", shape.head_dim);

    KVPlan plan;
    plan.streaming = p.kv_budget_bytes > 0 || p.n_window > 0;
    LayerPlan lp;
    if (!plan.streaming) {
        // Dense: the whole context at the requested codec (F16 by default).
        if (p.n_sink > 0) fail(KVFIT_E_ARG, "n_sink needs a streaming session (set n_window or kv_budget_bytes)");
        lp.kind = KVFIT_LAYER_DENSE;
        lp.codec = codec_of(p.kv_codec);
        lp.hadamard = hadamard;
        lp.n_window = target;
    } else {
        lp.kind = KVFIT_LAYER_STREAMING;
        lp.n_sink = p.n_sink < 0 ? kDefaultSinks : uint32_t(p.n_sink);
        lp.hadamard = hadamard;
        const uint32_t want = target > lp.n_sink ? target - lp.n_sink : kMinWindow;  // window that covers the target
        if (p.kv_budget_bytes == 0) {
            lp.codec = codec_of(p.kv_codec);
            lp.n_window = p.n_window;
        } else {
            // The precision ladder: the best codec whose window covers the target
            // context; if none does, the cheapest codec and the longest window
            // (a longer window beats finer codes while it is shorter than the
            // target). Pinned fields are kept.
            const KVCodec ladder[] = {KVCodec::F16, KVCodec::Q8, KVCodec::Q4};
            // At 4 bits, keys rotated by a Hadamard transform cost the same bytes
            // and measurably less perplexity (outlier channels spread over the
            // group): the planner's Q4 is that layout when the head size allows.
            const bool pow2 = (shape.head_dim & (shape.head_dim - 1)) == 0;
            for (KVCodec c : ladder) {
                if (p.kv_codec != KVFIT_KV_AUTO && c != codec_of(p.kv_codec)) continue;
                if (c != KVCodec::F16 && !groups_ok) continue;
                const uint32_t w = p.n_window ? p.n_window : std::min(want, max_window(shape, c, lp.n_sink, p.kv_budget_bytes));
                const bool covers = p.n_window ? plan_bytes(shape, c, lp.n_sink, w) <= p.kv_budget_bytes
                                               : w >= want;
                lp.codec = c;
                lp.hadamard = c == KVCodec::Q4 && (hadamard || (p.kv_codec == KVFIT_KV_AUTO && pow2));
                lp.n_window = w;
                if (covers) break;
            }
            // Nothing covered the target: the last codec tried, with its longest window.
            const KVCodec cheapest = p.kv_codec != KVFIT_KV_AUTO ? codec_of(p.kv_codec) : groups_ok ? KVCodec::Q4 : KVCodec::F16;
            const uint64_t need_min = plan_bytes(shape, cheapest,
                                                 lp.n_sink, std::max(kMinWindow, p.n_window));
            if (lp.n_window < kMinWindow || plan_bytes(shape, lp.codec, lp.n_sink, lp.n_window) > p.kv_budget_bytes)
                fail(KVFIT_E_BUDGET,
                     "a KV budget of %llu bytes cannot hold %u sinks and a window of %u tokens in %d layers; the "
                     "smallest budget that works is %llu bytes",
                     (unsigned long long)p.kv_budget_bytes, lp.n_sink, std::max(kMinWindow, p.n_window), shape.n_layer,
                     (unsigned long long)need_min);
        }
        if (lp.n_window == 0) fail(KVFIT_E_ARG, "a streaming session needs n_window > 0");
    }
    lp.bytes = uint64_t(lp.n_sink + lp.n_window) * kv_token_bytes(shape, lp.codec);
    plan.layers.assign(size_t(shape.n_layer), lp);
    plan.rope_table_bytes = rope_table_bytes(shape, rope_positions(lp.n_sink, lp.n_window, plan.streaming));
    plan.total_bytes = lp.bytes * uint64_t(shape.n_layer) + plan.rope_table_bytes;
    if (p.kv_budget_bytes && plan.total_bytes > p.kv_budget_bytes)
        fail(KVFIT_E_BUDGET, "the plan needs %llu bytes, more than the budget of %llu bytes",
             (unsigned long long)plan.total_bytes, (unsigned long long)p.kv_budget_bytes);
    return plan;
}

KVCache::KVCache(Stream &s, const KVShape &shape, const KVPlan &plan, const RopeParams &rope, int max_batch)
    : shape_(shape), plan_(plan), row_elems_(size_t(shape.n_head_kv) * shape.head_dim) {
    const uint32_t slots = plan.capacity();
    const uint32_t positions = rope_positions(plan.layers[0].n_sink, plan.layers[0].n_window, plan.streaming);
    for (const LayerPlan &lp : plan.layers) {
        const size_t rb = size_t(shape.n_head_kv) * codec_row_bytes(lp.codec, shape.head_dim);
        row_bytes_.push_back(rb);
        k_.push_back(static_cast<uint8_t *>(s.alloc(rb * slots)));
        v_.push_back(static_cast<uint8_t *>(s.alloc(rb * slots)));
    }
    // RoPE angles of each cache position, advanced by repeated multiplication
    // in float as ggml does so short contexts round exactly like llama.cpp.
    const int half = shape.rope_dims / 2;
    std::vector<float> cs(size_t(positions) * size_t(half) * 2);
    const float theta_scale = std::pow(rope.freq_base, -2.0f / float(rope.n_dims));
    std::vector<float> factors(size_t(half), 1.0f);
    if (rope.freq_factors) std::memcpy(factors.data(), rope.freq_factors, factors.size() * 4);  // CPU address
    for (uint32_t pos = 0; pos < positions; pos++) {
        float theta = float(pos) * rope.freq_scale;
        for (int i = 0; i < half; i++) {
            const float th = theta / factors[size_t(i)];
            cs[(size_t(pos) * half + i) * 2] = std::cos(th);
            cs[(size_t(pos) * half + i) * 2 + 1] = std::sin(th);
            theta *= theta_scale;
        }
    }
    rope_cs_ = static_cast<float *>(s.alloc(cs.size() * sizeof(float)));
    s.upload(rope_cs_, cs.data(), cs.size() * sizeof(float));
    rope_ = rope;
    // Staging for the new tokens' encoded rows of one layer at a time (scratch,
    // like the activation buffers; not state kept per token).
    size_t max_rb = 0;
    for (size_t rb : row_bytes_) max_rb = std::max(max_rb, rb);
    k_new_ = static_cast<uint8_t *>(s.alloc(max_rb * size_t(max_batch)));
    v_new_ = static_cast<uint8_t *>(s.alloc(max_rb * size_t(max_batch)));
}

void KVCache::attend(Stream &s, int layer, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out) {
    const LayerPlan &lp = plan_.layers[size_t(layer)];
    const size_t rb = row_bytes_[size_t(layer)];
    if (!plan_.streaming && pos0 + uint64_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "dense cache overflow");
    if (plan_.streaming && uint32_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "batch larger than the window");
    // Encode the new rows (keys before RoPE), attend, then move them into their slots.
    s.kv_encode(int(lp.codec), lp.hadamard, k, n, shape_.n_head_kv, shape_.head_dim, k_new_);
    s.kv_encode(int(lp.codec), false, const_cast<float *>(v), n, shape_.n_head_kv, shape_.head_dim, v_new_);
    CacheAttention a;
    a.n_q = n;
    a.n_head = shape_.n_head;
    a.n_head_kv = shape_.n_head_kv;
    a.head_dim = shape_.head_dim;
    a.pos0 = pos0;
    a.n_sink = lp.n_sink;
    a.n_window = lp.n_window;
    a.streaming = plan_.streaming;
    a.codec = int(lp.codec);
    a.hadamard = lp.hadamard;
    a.row_bytes = rb;
    a.head_bytes = codec_row_bytes(lp.codec, shape_.head_dim);
    a.k = k_[size_t(layer)];
    a.v = v_[size_t(layer)];
    a.k_new = k_new_;
    a.v_new = v_new_;
    a.rope_cs = rope_cs_;
    a.rope = rope_;
    a.scale = 1.0f / std::sqrt(float(shape_.head_dim));
    s.cache_attention(a, q, out);
    for (int i = 0; i < n; i++) {
        const uint64_t t = pos0 + uint64_t(i);
        const uint64_t slot = !plan_.streaming || t < lp.n_sink ? t : lp.n_sink + (t - lp.n_sink) % lp.n_window;
        s.copy(k_[size_t(layer)] + slot * rb, k_new_ + size_t(i) * rb, rb);
        s.copy(v_[size_t(layer)] + slot * rb, v_new_ + size_t(i) * rb, rb);
    }
}

size_t KVCache::state_bytes() const {
    size_t n = 0;
    for (size_t rb : row_bytes_) n += 2 * rb * plan_.capacity();
    return n;
}

void KVCache::save(Stream &s, uint8_t *dst) const {
    for (size_t l = 0; l < k_.size(); l++) {
        const size_t bytes = row_bytes_[l] * plan_.capacity();
        s.download(dst, k_[l], bytes);
        s.download(dst + bytes, v_[l], bytes);
        dst += 2 * bytes;
    }
    s.synchronize();
}

void KVCache::load(Stream &s, const uint8_t *src) {
    for (size_t l = 0; l < k_.size(); l++) {
        const size_t bytes = row_bytes_[l] * plan_.capacity();
        s.upload(k_[l], src, bytes);
        s.upload(v_[l], src + bytes, bytes);
        src += 2 * bytes;
    }
    s.synchronize();
}

kvfit_kv_codec layer_codec(const LayerPlan &lp) { return public_codec(lp.codec, lp.hadamard); }

}  // namespace kvfit
