// The memory planner: from the layers' specs and the session's parameters to
// a plan per layer that fits the budget.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "kv/memory.h"

namespace kvfit {

namespace {

constexpr uint32_t kDefaultSinks = 4;
constexpr uint32_t kMinWindow = 16;  // below this a streaming layer sees too little to be useful

// What bounds the positions a table must hold: a dense session's capacity,
// and the most tokens a session runs at once.
struct TableBounds {
    uint32_t capacity = 0;
    uint32_t batch = 0;
};

// Positions a layer's cos/sin table holds: a ring's batch of n new tokens
// rotates its window keys to positions below S + W + n (see the CPU
// attention), and n is at most the session's batch and the window; a dense
// cache rotates to its capacity, and so does a native window whose keys stay
// rotated at stream positions.
uint32_t rope_positions(const LayerPlan &lp, const TableBounds &b) {
    if (!lp.ring()) return lp.n_window;
    const uint32_t w = std::max(lp.n_window, lp.table_window);
    const uint32_t ring = lp.n_sink + w + std::min(b.batch, w);
    return lp.absolute_positions ? std::max(ring, b.capacity) : ring;
}

bool same_rotation(const RopeParams &a, const RopeParams &b) {
    return a.n_dims == b.n_dims && a.freq_base == b.freq_base && a.freq_scale == b.freq_scale &&
           a.freq_factors == b.freq_factors;
}

// The tables a set of layer plans needs (one per distinct rotation and
// number of positions), and which one each layer uses.
void plan_tables(const std::vector<LayerSpec> &specs, MemoryPlan &plan, const TableBounds &bounds) {
    plan.rope_tables.clear();
    plan.layer_table.assign(specs.size(), -1);
    for (size_t l = 0; l < specs.size(); l++) {
        if (specs[l].recurrent()) continue;  // no positions, no table
        const uint32_t positions = rope_positions(plan.layers[l], bounds);
        int found = -1;
        for (size_t t = 0; t < plan.rope_tables.size() && found < 0; t++)
            if (plan.rope_tables[t].positions == positions && same_rotation(plan.rope_tables[t].rope, specs[l].rope))
                found = int(t);
        if (found < 0) {
            RopeTablePlan t;
            t.rope = specs[l].rope;
            t.positions = positions;
            t.bytes = alloc_size(uint64_t(positions) * uint64_t(specs[l].rope.n_dims / 2) * 2 * sizeof(float));
            plan.rope_tables.push_back(t);
            found = int(plan.rope_tables.size() - 1);
        }
        plan.layer_table[l] = found;
    }
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

// The layers' plans with their bytes filled in, and the shared tables.
MemoryPlan finish_plan(const std::vector<LayerSpec> &specs, std::vector<LayerPlan> layers, const TableBounds &bounds) {
    MemoryPlan plan;
    plan.layers = std::move(layers);
    for (size_t l = 0; l < specs.size(); l++) {
        plan.layers[l].bytes = layer_state_bytes(specs[l], plan.layers[l]);
        plan.total_bytes += plan.layers[l].bytes;
    }
    plan_tables(specs, plan, bounds);
    for (const RopeTablePlan &t : plan.rope_tables) plan.total_bytes += t.bytes;
    return plan;
}

// Every layer with this layout.
MemoryPlan uniform_plan(const std::vector<LayerSpec> &specs, const LayerPlan &lp, const TableBounds &bounds) {
    return finish_plan(specs, std::vector<LayerPlan>(specs.size(), lp), bounds);
}

// Bytes of a streaming plan with this layout in every layer.
uint64_t plan_bytes(const std::vector<LayerSpec> &specs, LayerPlan lp, uint32_t sinks, uint32_t window,
                    const TableBounds &bounds) {
    lp.kind = KVFIT_LAYER_STREAMING;
    lp.n_sink = sinks;
    lp.n_window = window;
    return uniform_plan(specs, lp, bounds).total_bytes;
}

// Largest window (a whole number of steps) that fits the budget with this
// layout (0 if none). Bytes grow with the window (by whole allocation units),
// so a binary search finds it.
uint32_t max_window(const std::vector<LayerSpec> &specs, const LayerPlan &lp, uint32_t sinks, uint64_t budget,
                    const TableBounds &bounds) {
    const uint32_t step = window_step(lp);
    if (plan_bytes(specs, lp, sinks, step, bounds) > budget) return 0;
    uint64_t lo = 1, hi = (1u << 30) / step;  // in steps: lo fits, above hi is never considered
    if (plan_bytes(specs, lp, sinks, uint32_t(hi * step), bounds) <= budget) return uint32_t(hi * step);
    while (hi - lo > 1) {
        const uint64_t mid = (lo + hi) / 2;
        (plan_bytes(specs, lp, sinks, uint32_t(mid * step), bounds) <= budget ? lo : hi) = mid;
    }
    return uint32_t(lo * step);
}

uint32_t round_up(uint32_t x, uint32_t step) { return (x + step - 1) / step * step; }

}  // namespace

uint32_t plan_batch(const kvfit_session_params &p) { return p.n_batch ? std::min<uint32_t>(p.n_batch, 4096) : 512; }

namespace {

}  // namespace

float LayerSpec::attn_scale() const { return scale > 0.0f ? scale : 1.0f / std::sqrt(float(head_dim)); }

LayerSpec recurrent_layer(std::vector<uint64_t> state_parts) {
    LayerSpec s;
    s.kind = LayerSpec::Kind::Recurrent;
    s.state_parts = std::move(state_parts);
    return s;
}

std::vector<LayerSpec> uniform_attention_layers(int n_layer, int n_head, int n_head_kv, int head_dim,
                                                const RopeParams &rope) {
    LayerSpec s;
    s.n_head = n_head;
    s.n_head_kv = n_head_kv;
    s.head_dim = head_dim;
    s.rope = rope;
    return std::vector<LayerSpec>(size_t(n_layer), s);
}

uint64_t MemoryPlan::capacity() const {
    uint64_t c = UINT64_MAX;
    for (const LayerPlan &lp : layers)
        if (lp.kind == KVFIT_LAYER_DENSE) c = std::min<uint64_t>(c, lp.n_window);
    return c;
}

bool MemoryPlan::unbounded() const { return capacity() == UINT64_MAX; }

uint32_t MemoryPlan::max_batch() const {
    uint32_t b = UINT32_MAX;
    for (const LayerPlan &lp : layers)
        if (lp.ring()) b = std::min(b, lp.n_window);
    return b;
}

std::array<uint64_t, 4> attention_buffer_bytes(const LayerSpec &spec, const LayerPlan &lp) {
    const uint64_t hk = uint64_t(spec.n_head_kv), hd = uint64_t(spec.head_dim);
    const uint64_t row = hk * codec_row_bytes(lp.codec, spec.head_dim);  // one token's V (or K)
    const uint64_t slots = uint64_t(lp.n_sink) + lp.n_window;
    if (!lp.channel_keys) return {slots * row, slots * row, 0, 0};
    const uint64_t f16_row = hk * hd * 2;
    return {uint64_t(lp.n_window / KV_CHANNEL_BLOCK) * hk * channel_block_bytes(spec.head_dim), slots * row,
            uint64_t(lp.n_sink) * f16_row, uint64_t(KV_CHANNEL_BLOCK) * f16_row};
}

uint64_t recurrent_part_bytes(const LayerSpec &spec, size_t i, StateType type) {
    const uint64_t b = spec.state_parts.at(i);
    return int(i) == spec.narrow_part ? b / 4 * state_type_bytes(type) : b;
}

uint64_t recurrent_state_bytes(const LayerSpec &spec, StateType type) {
    uint64_t n = 0;
    for (size_t i = 0; i < spec.state_parts.size(); i++) {
        const uint64_t b = recurrent_part_bytes(spec, i, type);
        n += b ? alloc_size(b) : 0;
    }
    return n;
}

StateType recurrent_state_type(const kvfit_session_params &p, bool bf16_ok) {
    const char *e = std::getenv("KVFIT_STATE_PRECISION");
    if (!e || !*e) return p.kv_budget_bytes && bf16_ok ? StateType::BF16 : StateType::F32;
    if (!std::strcmp(e, "f32")) return StateType::F32;
    if (!std::strcmp(e, "f16")) return StateType::F16;
    if (!std::strcmp(e, "bf16")) return StateType::BF16;
    fail(KVFIT_E_ARG, "KVFIT_STATE_PRECISION must be f32, f16 or bf16, not '%s'", e);
}

uint64_t layer_state_bytes(const LayerSpec &spec, const LayerPlan &lp) {
    if (spec.recurrent()) return recurrent_state_bytes(spec, lp.state_type);
    uint64_t n = 0;
    for (uint64_t b : attention_buffer_bytes(spec, lp)) n += b ? alloc_size(b) : 0;
    if (lp.fold != FoldMap::None) n += alloc_size(fold_state_bytes(lp.fold, spec.n_head_kv, spec.head_dim));
    return n;
}

FoldMap fold_map() {
    const char *e = std::getenv("KVFIT_FOLD_MAP");
    return e && std::strcmp(e, "rf") == 0 ? FoldMap::RandomFeatures : FoldMap::Taylor;
}

LayerPlan fold_layer(const LayerSpec &spec, const LayerPlan &lp, FoldMap map, uint32_t min_window) {
    if (!lp.ring() || lp.absolute_positions || map == FoldMap::None) return lp;
    // Per-token keys (folding dequantizes a row as its slot is overwritten);
    // per-channel blocks become Q4 rows (Hadamard-rotated where they can be).
    LayerPlan f = lp;
    if (f.channel_keys) {
        f.channel_keys = false;
        f.hadamard = (spec.head_dim & (spec.head_dim - 1)) == 0;
    }
    f.fold = map;
    f.table_window = std::max(lp.n_window, lp.table_window);
    const uint64_t bytes = layer_state_bytes(spec, lp);
    // The longest window whose bytes, with the memory, are at most lp's.
    uint32_t lo = 0, hi = lp.n_window;
    while (lo < hi) {
        const uint32_t mid = lo + (hi - lo + 1) / 2;
        f.n_window = mid;
        if (layer_state_bytes(spec, f) <= bytes) lo = mid; else hi = mid - 1;
    }
    if (lo < min_window) return lp;
    f.n_window = lo;
    return f;
}

MemoryPlan plan_memory(const std::vector<LayerSpec> &specs, const kvfit_session_params &p, uint32_t n_ctx_train,
                       bool bf16_states_ok, const std::vector<uint8_t> &fold_layers) {
    if (specs.empty()) fail(KVFIT_E_INTERNAL, "a model without layers");
    if (uint32_t(p.fold) > KVFIT_FOLD_ON) fail(KVFIT_E_ARG, "unknown fold mode %d", int(p.fold));
    if (p.fold != KVFIT_FOLD_OFF && p.kv_budget_bytes == 0 && p.n_window == 0)
        fail(KVFIT_E_ARG, "fold mode needs a streaming session (set kv_budget_bytes or n_window)");
    if (p.fold != KVFIT_FOLD_OFF && p.kv_codec == KVFIT_KV_Q4_CHANNEL)
        fail(KVFIT_E_ARG, "fold mode needs per-token keys; the per-channel Q4 codec has none");
    if (p.n_sink < -1 || p.n_sink > 1 << 20) fail(KVFIT_E_ARG, "n_sink must be -1 (default) or 0..2^20, got %d", p.n_sink);
    if (uint32_t(p.kv_codec) > KVFIT_KV_Q4_CHANNEL) fail(KVFIT_E_ARG, "unknown kv_codec %d", int(p.kv_codec));
    if (p.n_window > (1u << 24)) fail(KVFIT_E_ARG, "n_window %u is too large", p.n_window);
    const uint32_t target = p.n_ctx ? p.n_ctx : n_ctx_train;
    if (target > (1u << 24)) fail(KVFIT_E_ARG, "n_ctx %u is too large", target);
    // Quantized codecs group 32 values of a head; other head sizes stay F16.
    bool groups_ok = true, pow2 = true;
    int odd_head = 0;
    for (const LayerSpec &s : specs) {
        if (s.recurrent()) continue;
        if (s.head_dim % 32) groups_ok = false, odd_head = s.head_dim;
        if (s.head_dim & (s.head_dim - 1)) pow2 = false, odd_head = odd_head ? odd_head : s.head_dim;
    }
    if (!groups_ok && p.kv_codec != KVFIT_KV_AUTO && p.kv_codec != KVFIT_KV_F16)
        fail(KVFIT_E_ARG, "KV codec %d needs a head dimension that is a multiple of 32; this model has %d",
             int(p.kv_codec), odd_head);
    if (p.kv_codec == KVFIT_KV_Q4_HADAMARD && !pow2)
        fail(KVFIT_E_ARG, "the Hadamard codec needs a power-of-two head dimension, this model has %d", odd_head);
    if (p.kv_codec == KVFIT_KV_Q4_CHANNEL && p.n_window % KV_CHANNEL_BLOCK)
        fail(KVFIT_E_ARG, "the per-channel Q4 codec needs a window that is a multiple of %d, got %u",
             KV_CHANNEL_BLOCK, p.n_window);

    const bool streaming = p.kv_budget_bytes > 0 || p.n_window > 0;
    if (!streaming && p.n_sink > 0) fail(KVFIT_E_ARG, "n_sink needs a streaming session (set n_window or kv_budget_bytes)");
    const uint32_t dense_capacity = round_up(target, p.kv_codec == KVFIT_KV_Q4_CHANNEL ? KV_CHANNEL_BLOCK : 1);
    // The session runs at most this many tokens at once (see Session).
    const TableBounds bounds{dense_capacity, plan_batch(p)};

    // Layers with a native window keep exactly it (no sinks), at the pinned
    // codec or F16; per-channel key blocks need whole blocks, so such a
    // window takes per-token 4-bit keys instead. Their bytes come off the
    // budget first; the other layers share the rest.
    // Recurrent layers keep a state of fixed size, in F32; within a budget
    // their large state matrix in BF16 where the backend takes it (half its
    // bytes; measured on a trained RWKV-7 and a trained Qwen3.5-shaped model
    // over 36K-200K tokens, perplexity moved by at most 0.003 %, see
    // docs/BENCHMARKS.md); it comes off the budget before anything else.
    std::vector<LayerSpec> budgeted;
    std::vector<LayerPlan> layers(specs.size());
    std::vector<LayerSpec> native_specs;
    std::vector<LayerPlan> native_plans;
    uint64_t recurrent_bytes = 0;
    size_t n_recurrent = 0;
    const StateType state_type = recurrent_state_type(p, bf16_states_ok);
    for (size_t l = 0; l < specs.size(); l++) {
        if (specs[l].recurrent()) {
            layers[l].kind = KVFIT_LAYER_RECURRENT;
            layers[l].state_type = specs[l].narrow_part >= 0 ? state_type : StateType::F32;
            recurrent_bytes += recurrent_state_bytes(specs[l], layers[l].state_type);
            n_recurrent++;
        } else if (!specs[l].native_window) {
            budgeted.push_back(specs[l]);
        }
    }

    // The native windows at one codec, and what they cost.
    auto native_at = [&](kvfit_kv_codec codec) {
        native_specs.clear();
        native_plans.clear();
        for (size_t l = 0; l < specs.size(); l++) {
            if (specs[l].recurrent() || !specs[l].native_window) continue;
            kvfit_kv_codec c = codec;
            const uint32_t window = streaming ? specs[l].native_window : std::min(specs[l].native_window, dense_capacity);
            if (c == KVFIT_KV_Q4_CHANNEL && window % KV_CHANNEL_BLOCK) c = pow2 ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4;
            LayerPlan w = layout_of(c);
            w.kind = KVFIT_LAYER_WINDOW;
            w.n_window = window;
            // Rotated at stream positions only where the session's capacity bounds them.
            w.absolute_positions = !streaming && !budgeted.empty();
            layers[l] = w;
            native_specs.push_back(specs[l]);
            native_plans.push_back(w);
        }
        return recurrent_bytes +
               (native_specs.empty() ? uint64_t(0) : finish_plan(native_specs, native_plans, bounds).total_bytes);
    };
    // The least the other layers can do with: the default sinks and the
    // shortest window at the smallest codec.
    const uint32_t least_sinks = p.n_sink < 0 ? kDefaultSinks : uint32_t(p.n_sink);
    const LayerPlan least = layout_of(p.kv_codec != KVFIT_KV_AUTO ? p.kv_codec
                                      : groups_ok                 ? (pow2 ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4)
                                                                  : KVFIT_KV_F16);
    const uint64_t least_rest =
        budgeted.empty() || !streaming
            ? 0
            : plan_bytes(budgeted, least, least_sinks, std::max(p.n_window, round_up(kMinWindow, window_step(least))), bounds);
    // Without a budget (or with a pinned codec) the windows take the session's
    // codec, F16 by default. Within a budget they take 8 bits, which cost
    // Gemma 3 no measurable perplexity (docs/BENCHMARKS.md) and half the bytes
    // of F16, and 4 bits only where 8 would leave the other layers too little.
    uint64_t fixed = native_at(p.kv_codec);
    if (p.kv_budget_bytes && p.kv_codec == KVFIT_KV_AUTO && groups_ok && !native_specs.empty()) {
        fixed = native_at(KVFIT_KV_Q8);
        if (fixed + least_rest > p.kv_budget_bytes) fixed = native_at(pow2 ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4);
    }
    // What the fixed layers are, for messages.
    const char *fixed_what = native_specs.empty() ? "the model's recurrent states"
                             : n_recurrent        ? "the model's recurrent states and own sliding windows"
                                                  : "the model's own sliding windows";
    if (p.kv_budget_bytes && fixed && fixed + least_rest > p.kv_budget_bytes)
        fail(KVFIT_E_BUDGET,
             "a KV budget of %llu bytes cannot hold %s (%zu layers, %llu bytes)%s; the smallest budget that works is "
             "%llu bytes",
             (unsigned long long)p.kv_budget_bytes, fixed_what, n_recurrent + native_specs.size(),
             (unsigned long long)fixed, budgeted.empty() ? "" : " and the other layers' sinks and window",
             (unsigned long long)(fixed + least_rest));
    const uint64_t budget = p.kv_budget_bytes ? p.kv_budget_bytes - fixed : 0;

    LayerPlan lp = layout_of(p.kv_codec);
    if (budgeted.empty()) {
        // Every layer has a native window: nothing to share.
    } else if (!streaming) {
        // Dense: the whole context at the requested codec (F16 by default).
        lp.kind = KVFIT_LAYER_DENSE;
        lp.n_window = dense_capacity;
        lp.absolute_positions = true;
    } else {
        const uint32_t sinks = p.n_sink < 0 ? kDefaultSinks : uint32_t(p.n_sink);
        const uint32_t want = target > sinks ? target - sinks : kMinWindow;  // window that covers the target
        if (budget == 0) {
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
                                                   max_window(budgeted, l, sinks, budget, bounds));
                return l;
            };
            auto covers = [&](const LayerPlan &l) {
                return p.n_window ? plan_bytes(budgeted, l, sinks, l.n_window, bounds) <= budget : l.n_window >= want;
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
            if (lp.n_window < min_window || plan_bytes(budgeted, lp, sinks, lp.n_window, bounds) > budget)
                fail(KVFIT_E_BUDGET,
                     "a KV budget of %llu bytes cannot hold %u sinks and a window of %u tokens in %zu layers%s%s; the "
                     "smallest budget that works is %llu bytes",
                     (unsigned long long)p.kv_budget_bytes, sinks, min_window, budgeted.size(), fixed ? " besides " : "",
                     fixed ? fixed_what : "",
                     (unsigned long long)(fixed + plan_bytes(budgeted, lp, sinks, min_window, bounds)));
        }
        lp.kind = KVFIT_LAYER_STREAMING;
        lp.n_sink = sinks;
        if (lp.n_window == 0) fail(KVFIT_E_ARG, "a streaming session needs n_window > 0");
    }
    for (size_t l = 0; l < specs.size(); l++) {
        if (specs[l].recurrent() || specs[l].native_window) continue;
        layers[l] = lp;
        // Fold mode: the layer's own window pays for its memory (with a
        // pinned window and no budget, the memory comes on top).
        const bool fold = p.fold == KVFIT_FOLD_ON || (p.fold == KVFIT_FOLD_AUTO && l < fold_layers.size() && fold_layers[l]);
        if (!fold || !lp.ring()) continue;
        if (p.n_window && !p.kv_budget_bytes) {
            layers[l].fold = fold_map();
        } else {
            LayerPlan f = fold_layer(specs[l], lp, fold_map(), std::max(p.n_window ? p.n_window : 1u,
                                                                         round_up(kMinWindow, window_step(lp))));
            if (p.n_window && f.n_window != p.n_window) f = lp;  // a pinned window does not shrink
            layers[l] = f;
        }
    }
    MemoryPlan plan = finish_plan(specs, layers, bounds);
    if (p.kv_budget_bytes && plan.total_bytes > p.kv_budget_bytes)
        fail(KVFIT_E_BUDGET, "the plan needs %llu bytes, more than the budget of %llu bytes",
             (unsigned long long)plan.total_bytes, (unsigned long long)p.kv_budget_bytes);
    return plan;
}

kvfit_kv_codec layer_codec(const LayerPlan &lp) {
    if (lp.kind == KVFIT_LAYER_RECURRENT)
        return lp.state_type == StateType::F16    ? KVFIT_KV_F16
               : lp.state_type == StateType::BF16 ? KVFIT_KV_BF16
                                                  : KVFIT_KV_F32;
    switch (lp.codec) {
        case KVCodec::Q8: return KVFIT_KV_Q8;
        case KVCodec::Q4: return lp.channel_keys ? KVFIT_KV_Q4_CHANNEL : lp.hadamard ? KVFIT_KV_Q4_HADAMARD : KVFIT_KV_Q4;
        default: return KVFIT_KV_F16;
    }
}

}  // namespace kvfit
