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


// How a public codec lays out a layer (codec, sinks and window not set).
LayerPlan layout_of(kvfit_kv_codec c) {
    LayerPlan lp;
    switch (c) {
        case KVFIT_KV_Q8: lp.codec = KVCodec::Q8; break;
        case KVFIT_KV_Q4: lp.codec = KVCodec::Q4; break;
        case KVFIT_KV_Q4_HADAMARD: lp.codec = KVCodec::Q4; lp.hadamard = true; break;
        case KVFIT_KV_Q4_CHANNEL: lp.codec = KVCodec::Q4; lp.channel_keys = true; break;
        default: lp.codec = KVCodec::F16; break;
    }
    return lp;
}

// Windows of per-channel key blocks come in whole blocks.
uint32_t window_step(const LayerPlan &lp) { return lp.channel_keys ? uint32_t(KV_CHANNEL_BLOCK) : 1u; }

// Bytes of a streaming plan with this layout (budgets only apply to streaming sessions).
uint64_t plan_bytes(const KVShape &shape, LayerPlan lp, uint32_t sinks, uint32_t window) {
    lp.n_sink = sinks;
    lp.n_window = window;
    return uint64_t(shape.n_layer) * layer_state_bytes(shape, lp) +
           rope_table_bytes(shape, rope_positions(sinks, window, true));
}

// Largest window (a whole number of steps) that fits the budget with this layout (0 if none).
uint32_t max_window(const KVShape &shape, const LayerPlan &lp, uint32_t sinks, uint64_t budget) {
    const uint32_t step = window_step(lp);
    const uint64_t fixed = plan_bytes(shape, lp, sinks, 0);
    const uint64_t per_step = plan_bytes(shape, lp, sinks, step) - fixed;
    if (budget <= fixed) return 0;
    return uint32_t(std::min<uint64_t>((budget - fixed) / per_step, (1u << 30) / step) * step);
}

uint32_t round_up(uint32_t x, uint32_t step) { return (x + step - 1) / step * step; }

}  // namespace

uint64_t layer_state_bytes(const KVShape &shape, const LayerPlan &lp) {
    const uint64_t hk = uint64_t(shape.n_head_kv), hd = uint64_t(shape.head_dim);
    const uint64_t row = hk * codec_row_bytes(lp.codec, shape.head_dim);  // one token's V (or K)
    const uint64_t slots = uint64_t(lp.n_sink) + lp.n_window;
    if (!lp.channel_keys) return 2 * slots * row;
    const uint64_t f16_row = hk * hd * 2;
    return slots * row + (uint64_t(lp.n_sink) + KV_CHANNEL_BLOCK) * f16_row +
           uint64_t(lp.n_window / KV_CHANNEL_BLOCK) * hk * channel_block_bytes(shape.head_dim);
}

KVPlan plan_kv(const KVShape &shape, const kvfit_session_params &p, uint32_t n_ctx_train) {
    if (p.n_sink < -1 || p.n_sink > 1 << 20) fail(KVFIT_E_ARG, "n_sink must be -1 (default) or 0..2^20, got %d", p.n_sink);
    if (uint32_t(p.kv_codec) > KVFIT_KV_Q4_CHANNEL) fail(KVFIT_E_ARG, "unknown kv_codec %d", int(p.kv_codec));
    if (p.n_window > (1u << 24)) fail(KVFIT_E_ARG, "n_window %u is too large", p.n_window);
    const uint32_t target = p.n_ctx ? p.n_ctx : n_ctx_train;
    if (target > (1u << 24)) fail(KVFIT_E_ARG, "n_ctx %u is too large", target);
    // Quantized codecs group 32 values of a head; other head sizes stay F16.
    const bool groups_ok = shape.head_dim % 32 == 0;
    const bool pow2 = (shape.head_dim & (shape.head_dim - 1)) == 0;
    if (!groups_ok && p.kv_codec != KVFIT_KV_AUTO && p.kv_codec != KVFIT_KV_F16)
        fail(KVFIT_E_ARG, "KV codec %d needs a head dimension that is a multiple of 32; this model has %d",
             int(p.kv_codec), shape.head_dim);
    if (p.kv_codec == KVFIT_KV_Q4_HADAMARD && !pow2)
        fail(KVFIT_E_ARG, "the Hadamard codec needs a power-of-two head dimension, this model has %d", shape.head_dim);
    if (p.kv_codec == KVFIT_KV_Q4_CHANNEL && p.n_window % KV_CHANNEL_BLOCK)
        fail(KVFIT_E_ARG, "the per-channel Q4 codec needs a window that is a multiple of %d, got %u",
             KV_CHANNEL_BLOCK, p.n_window);

    KVPlan plan;
    plan.streaming = p.kv_budget_bytes > 0 || p.n_window > 0;
    LayerPlan lp = layout_of(p.kv_codec);
    if (!plan.streaming) {
        // Dense: the whole context at the requested codec (F16 by default).
        if (p.n_sink > 0) fail(KVFIT_E_ARG, "n_sink needs a streaming session (set n_window or kv_budget_bytes)");
        lp.kind = KVFIT_LAYER_DENSE;
        lp.n_window = round_up(target, window_step(lp));
    } else {
        const uint32_t sinks = p.n_sink < 0 ? kDefaultSinks : uint32_t(p.n_sink);
        const uint32_t want = target > sinks ? target - sinks : kMinWindow;  // window that covers the target
        if (p.kv_budget_bytes == 0) {
            lp.n_window = p.n_window;
        } else {
            // The precision ladder: the best codec whose window covers the target
            // context (F16, then Q8, which measures lossless). If none does, 4 bits
            // with keys per channel (+0.2 % perplexity, measured) and the longest
            // window, since a longer window beats finer codes while it is shorter
            // than the target; and if even that window is short, whichever 4-bit
            // layout gives the longest window. Pinned fields are kept.
            auto fit = [&](kvfit_kv_codec c) {
                LayerPlan l = layout_of(c);
                l.n_window = p.n_window ? p.n_window
                                        : std::min(round_up(want, window_step(l)),
                                                   max_window(shape, l, sinks, p.kv_budget_bytes));
                return l;
            };
            auto covers = [&](const LayerPlan &l) {
                return p.n_window ? plan_bytes(shape, l, sinks, l.n_window) <= p.kv_budget_bytes : l.n_window >= want;
            };
            if (p.kv_codec != KVFIT_KV_AUTO) {
                lp = fit(p.kv_codec);
            } else {
                const kvfit_kv_codec ladder[] = {KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4_CHANNEL};
                for (kvfit_kv_codec c : ladder) {
                    if (c != KVFIT_KV_F16 && !groups_ok) break;
                    lp = fit(c);
                    if (covers(lp)) break;
                }
                // Per-channel keys keep their sinks' keys and newest block in F16,
                // which eats into small budgets; a short window gains more from
                // length than per-channel keys save. Measured on SmolLM2 over two
                // texts (docs/BENCHMARKS.md, the budget table): per-token keys
                // with a 1.125x longer window lose on both, 1.40x wins on one
                // (by 6.4 %) and loses on the other (by 1.1 %), 1.56x and more
                // win on both; hence per-token keys from 1.25x.
                if (lp.channel_keys && !covers(lp)) {
                    const LayerPlan per_token = fit(pow2 ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4);
                    if (4 * uint64_t(per_token.n_window) >= 5 * uint64_t(lp.n_window)) lp = per_token;
                }
            }
            // Nothing covered the target: the last codec tried, with its longest window.
            const uint32_t min_window = std::max(p.n_window, round_up(kMinWindow, window_step(lp)));
            if (lp.n_window < min_window || plan_bytes(shape, lp, sinks, lp.n_window) > p.kv_budget_bytes)
                fail(KVFIT_E_BUDGET,
                     "a KV budget of %llu bytes cannot hold %u sinks and a window of %u tokens in %d layers; the "
                     "smallest budget that works is %llu bytes",
                     (unsigned long long)p.kv_budget_bytes, sinks, min_window, shape.n_layer,
                     (unsigned long long)plan_bytes(shape, lp, sinks, min_window));
        }
        lp.kind = KVFIT_LAYER_STREAMING;
        lp.n_sink = sinks;
        if (lp.n_window == 0) fail(KVFIT_E_ARG, "a streaming session needs n_window > 0");
    }
    lp.bytes = layer_state_bytes(shape, lp);
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
    auto alloc = [&](size_t bytes) { return bytes ? static_cast<uint8_t *>(s.alloc(bytes)) : nullptr; };
    size_t max_row = 0;
    for (const LayerPlan &lp : plan.layers) {
        LayerStore st;
        st.v_row_bytes = size_t(shape.n_head_kv) * codec_row_bytes(lp.codec, shape.head_dim);
        st.v_bytes = st.v_row_bytes * slots;
        if (lp.channel_keys) {
            st.k_row_bytes = row_elems_ * 2;  // F16
            st.k_bytes = size_t(lp.n_window / KV_CHANNEL_BLOCK) * size_t(shape.n_head_kv) *
                         channel_block_bytes(shape.head_dim);
            st.k_sink_bytes = st.k_row_bytes * lp.n_sink;
            st.k_res_bytes = st.k_row_bytes * KV_CHANNEL_BLOCK;
        } else {
            st.k_row_bytes = st.v_row_bytes;
            st.k_bytes = st.v_bytes;
        }
        st.k = alloc(st.k_bytes);
        st.v = alloc(st.v_bytes);
        st.k_sink = alloc(st.k_sink_bytes);
        st.k_res = alloc(st.k_res_bytes);
        max_row = std::max({max_row, st.k_row_bytes, st.v_row_bytes});
        layers_.push_back(st);
    }
    // RoPE angles of each cache position, advanced by repeated multiplication
    // in float as ggml does so short contexts round exactly like llama.cpp.
    const int half = shape.rope_dims / 2;
    std::vector<float> cs(size_t(positions) * size_t(half) * 2);
    const float theta_scale = std::pow(rope.freq_base, -2.0f / float(rope.n_dims));
    std::vector<float> factors(size_t(half), 1.0f);
    if (rope.freq_factors) {  // a device address: read back through the stream
        s.download(factors.data(), rope.freq_factors, factors.size() * 4);
        s.synchronize();
    }
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
    keys_rotated_ = !plan.streaming && s.stores_rotated_keys();
    // Staging for the new tokens' encoded rows of one layer at a time (scratch,
    // like the activation buffers; not state kept per token).
    k_new_ = static_cast<uint8_t *>(s.alloc(max_row * size_t(max_batch)));
    v_new_ = static_cast<uint8_t *>(s.alloc(max_row * size_t(max_batch)));
}

namespace {
bool layer_keys_rotated(bool cache_rotates, const LayerPlan &lp) {
    return cache_rotates && lp.codec == KVCodec::F16 && !lp.hadamard && !lp.channel_keys;
}
}  // namespace

bool KVCache::keys_rotated() const {
    for (const LayerPlan &lp : plan_.layers)
        if (layer_keys_rotated(keys_rotated_, lp)) return true;
    return false;
}

void KVCache::attend(Stream &s, int layer, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out) {
    const LayerPlan &lp = plan_.layers[size_t(layer)];
    const LayerStore &st = layers_[size_t(layer)];
    if (!plan_.streaming && pos0 + uint64_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "dense cache overflow");
    if (plan_.streaming && uint32_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "batch larger than the window");
    // Encode the new rows (keys before RoPE, unless the layer keeps them
    // rotated), attend, then move them into their slots.
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
    a.row_bytes = st.v_row_bytes;
    a.head_bytes = codec_row_bytes(lp.codec, shape_.head_dim);
    a.k = st.k;
    a.v = st.v;
    a.k_new = k_new_;
    a.v_new = v_new_;
    a.channel_keys = lp.channel_keys;
    a.k_sink = st.k_sink;
    a.k_res = st.k_res;
    a.k_block_bytes = size_t(shape_.n_head_kv) * channel_block_bytes(shape_.head_dim);
    a.rope_cs = rope_cs_;
    a.rope = rope_;
    a.scale = 1.0f / std::sqrt(float(shape_.head_dim));
    a.keys_rotated = layer_keys_rotated(keys_rotated_, lp);
    if (a.keys_rotated) s.rope_keys(k, n, shape_.n_head_kv, shape_.head_dim, pos0, a);
    const KVCodec k_codec = lp.channel_keys ? KVCodec::F16 : lp.codec;
    s.kv_encode(int(k_codec), lp.hadamard, k, n, shape_.n_head_kv, shape_.head_dim, k_new_);
    s.kv_encode(int(lp.codec), false, const_cast<float *>(v), n, shape_.n_head_kv, shape_.head_dim, v_new_);
    s.cache_attention(a, q, out);
    const size_t krb = st.k_row_bytes, vrb = st.v_row_bytes;
    for (int i = 0; i < n; i++) {
        const uint64_t t = pos0 + uint64_t(i);
        const bool sink = plan_.streaming && t < lp.n_sink;
        const uint64_t slot = a.slot(t);
        s.copy(st.v + slot * vrb, v_new_ + size_t(i) * vrb, vrb);
        if (!lp.channel_keys) {
            s.copy(st.k + slot * krb, k_new_ + size_t(i) * krb, krb);
        } else if (sink) {
            s.copy(st.k_sink + t * krb, k_new_ + size_t(i) * krb, krb);
        } else {
            // Fill the residual block; once it is full, pack it over the window's oldest block.
            const uint64_t w = t - lp.n_sink, o = w % KV_CHANNEL_BLOCK;
            s.copy(st.k_res + o * krb, k_new_ + size_t(i) * krb, krb);
            if (o == KV_CHANNEL_BLOCK - 1)
                s.kv_encode_channels(st.k_res, shape_.n_head_kv, shape_.head_dim,
                                     st.k + (w % lp.n_window) / KV_CHANNEL_BLOCK * a.k_block_bytes);
        }
    }
}

size_t KVCache::state_bytes() const {
    size_t n = 0;
    for (const LayerStore &st : layers_)
        for (auto [p, bytes] : st.parts()) n += bytes;
    return n;
}

void KVCache::save(Stream &s, uint8_t *dst) const {
    for (const LayerStore &st : layers_) {
        for (auto [p, bytes] : st.parts()) {
            if (bytes) s.download(dst, p, bytes);
            dst += bytes;
        }
    }
    s.synchronize();
}

void KVCache::load(Stream &s, const uint8_t *src) {
    for (const LayerStore &st : layers_) {
        for (auto [p, bytes] : st.parts()) {
            if (bytes) s.upload(p, src, bytes);
            src += bytes;
        }
    }
    s.synchronize();
}

kvfit_kv_codec layer_codec(const LayerPlan &lp) {
    switch (lp.codec) {
        case KVCodec::Q8: return KVFIT_KV_Q8;
        case KVCodec::Q4: return lp.channel_keys ? KVFIT_KV_Q4_CHANNEL : lp.hadamard ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4;
        default: return KVFIT_KV_F16;
    }
}

}  // namespace kvfit
