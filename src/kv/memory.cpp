#include "kv/memory.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "alloc_hook.h"
#include "backend/cpu/ggml_order.h"
#include "common.h"
#include "gguf/ggml_types.h"

namespace kvfit {

namespace {

// A buffer of the layer memory, in whole allocation units (see kAllocUnit).
uint8_t *alloc_bytes(Stream &s, size_t bytes) { return bytes ? static_cast<uint8_t *>(s.alloc(alloc_size(bytes))) : nullptr; }

// cos/sin of every position of a table, advanced by repeated multiplication
// in float as ggml does so short contexts round exactly like llama.cpp.
std::vector<float> rope_table_values(Stream &s, const RopeTablePlan &t) {
    const RopeParams &rope = t.rope;
    const int half = rope.n_dims / 2;
    std::vector<float> cs;
    resize_checked(cs, size_t(t.positions) * size_t(half) * 2, "a RoPE table");
    const float theta_scale = std::pow(rope.freq_base, -2.0f / float(rope.n_dims));
    std::vector<float> factors(size_t(half), 1.0f);
    if (rope.freq_factors) {  // a device address: read back through the stream
        s.download(factors.data(), rope.freq_factors, factors.size() * 4);
        s.synchronize();
    }
    for (uint32_t pos = 0; pos < t.positions; pos++) {
        float theta = float(pos) * rope.freq_scale;
        for (int i = 0; i < half; i++) {
            const float th = theta / factors[size_t(i)];
            cs[(size_t(pos) * half + i) * 2] = std::cos(th);
            cs[(size_t(pos) * half + i) * 2 + 1] = std::sin(th);
            theta *= theta_scale;
        }
    }
    return cs;
}

float *make_rope_table(Stream &s, const RopeTablePlan &t) {
    const std::vector<float> cs = rope_table_values(s, t);
    float *d = reinterpret_cast<float *>(alloc_bytes(s, cs.size() * sizeof(float)));
    s.upload(d, cs.data(), cs.size() * sizeof(float));
    return d;
}

}  // namespace

size_t LayerMemory::state_bytes() const {
    size_t n = 0;
    for (auto [p, size] : parts()) n += size;
    return n;
}

void LayerMemory::save(Stream &s, uint8_t *dst) const {
    for (auto [p, size] : parts()) {
        if (size) s.download(dst, p, size);
        dst += size;
    }
}

void LayerMemory::load(Stream &s, const uint8_t *src) {
    for (auto [p, size] : parts()) {
        if (size) s.upload(p, src, size);
        src += size;
    }
}

RecurrentMemory::RecurrentMemory(Stream &s, const LayerSpec &spec, const LayerPlan &plan)
    : LayerMemory(plan), narrow_part_(plan.state_type == StateType::F32 ? -1 : spec.narrow_part) {
    if (plan.state_type != StateType::F32 && spec.narrow_part < 0)
        fail(KVFIT_E_INTERNAL, "a %s state planned for a layer without a narrow part", state_type_name(plan.state_type));
    for (size_t i = 0; i < spec.state_parts.size(); i++) {
        const size_t bytes = size_t(recurrent_part_bytes(spec, i, plan.state_type));
        parts_.emplace_back(alloc_bytes(s, bytes), bytes);
    }
    clear(s);
}

std::vector<std::pair<uint8_t *, size_t>> RecurrentMemory::parts() const { return parts_; }

void RecurrentMemory::clear(Stream &s) {
    for (auto [p, size] : parts_)
        if (size) s.zero(p, size);
}

float *RecurrentMemory::f32(size_t i) const {
    if (part_type(i) != StateType::F32)
        fail(KVFIT_E_INTERNAL, "recurrent state part %zu is %s, not F32", i, state_type_name(part_type(i)));
    return reinterpret_cast<float *>(parts_[i].first);
}

void *RecurrentMemory::part(size_t i) const {
    if (i >= parts_.size()) fail(KVFIT_E_INTERNAL, "recurrent state part %zu of %zu", i, parts_.size());
    return parts_[i].first;
}

StateType RecurrentMemory::part_type(size_t i) const {
    if (i >= parts_.size()) fail(KVFIT_E_INTERNAL, "recurrent state part %zu of %zu", i, parts_.size());
    return int(i) == narrow_part_ ? plan_.state_type : StateType::F32;
}

size_t AttentionMemory::staged_row_bytes(const LayerSpec &spec, const LayerPlan &plan) {
    const size_t v_row = size_t(spec.n_head_kv) * codec_row_bytes(plan.codec, spec.head_dim);
    const size_t k_row = plan.channel_keys ? size_t(spec.n_head_kv) * size_t(spec.head_dim) * 2 : v_row;
    return std::max(k_row, v_row);
}

AttentionMemory::AttentionMemory(Stream &s, const LayerSpec &spec, const LayerPlan &plan, const float *rope_cs,
                                 uint32_t rope_positions, bool stores_rotated_keys, const AttentionStaging &staging)
    : LayerMemory(plan), spec_(spec), rope_cs_(rope_cs), rope_positions_(rope_positions), staging_(staging) {
    v_row_bytes_ = size_t(spec.n_head_kv) * codec_row_bytes(plan.codec, spec.head_dim);
    k_row_bytes_ = plan.channel_keys ? size_t(spec.n_head_kv) * size_t(spec.head_dim) * 2 : v_row_bytes_;  // F16 if per channel
    const std::array<uint64_t, 4> sizes = attention_buffer_bytes(spec, plan);
    k_bytes_ = size_t(sizes[0]);
    v_bytes_ = size_t(sizes[1]);
    k_sink_bytes_ = size_t(sizes[2]);
    k_res_bytes_ = size_t(sizes[3]);
    k_ = alloc_bytes(s, k_bytes_);
    v_ = alloc_bytes(s, v_bytes_);
    k_sink_ = alloc_bytes(s, k_sink_bytes_);
    k_res_ = alloc_bytes(s, k_res_bytes_);
    if (plan.fold != FoldMap::None) {
        if (!plan.ring() || plan.channel_keys || (stores_rotated_keys && plan.absolute_positions))
            fail(KVFIT_E_INTERNAL, "fold memory in a layer that is not a ring of per-token keys");
        fold_bytes_ = size_t(fold_state_bytes(plan.fold, spec.n_head_kv, spec.head_dim));
        fold_ = reinterpret_cast<float *>(alloc_bytes(s, fold_bytes_));
        s.zero(fold_, fold_bytes_);
    }
    // Only dense F16 layers keep rotated keys: the others rotate at attention
    // time to cache positions, or encode keys whose rotation must come later.
    keys_rotated_ = stores_rotated_keys && plan.absolute_positions && plan.codec == KVCodec::F16 && !plan.hadamard &&
                    !plan.channel_keys;
}

std::vector<std::pair<uint8_t *, size_t>> AttentionMemory::parts() const {
    std::vector<std::pair<uint8_t *, size_t>> p = {{k_, k_bytes_}, {v_, v_bytes_}, {k_sink_, k_sink_bytes_}, {k_res_, k_res_bytes_}};
    if (fold_bytes_) p.emplace_back(reinterpret_cast<uint8_t *>(fold_), fold_bytes_);
    return p;
}

void AttentionMemory::clear(Stream &s) {
    if (fold_bytes_) s.zero(fold_, fold_bytes_);
}

void AttentionMemory::attend(Stream &s, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out) {
    const LayerPlan &lp = plan_;
    const bool streaming = lp.ring();
    if (!streaming && pos0 + uint64_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "dense cache overflow");
    if (streaming && uint32_t(n) > lp.n_window) fail(KVFIT_E_INTERNAL, "batch larger than the window");
    // The positions this batch rotates to must be in the layer's table.
    const uint64_t last = keys_rotated_ ? pos0 + uint64_t(n) : uint64_t(lp.n_sink) + lp.n_window + uint64_t(n);
    if (streaming && last > rope_positions_)
        fail(KVFIT_E_INTERNAL, "a batch of %d tokens reaches RoPE position %llu of a table of %u", n,
             (unsigned long long)last, rope_positions_);
    // Encode the new rows (keys before RoPE, unless the layer keeps them
    // rotated), attend, then move them into their slots.
    CacheAttention a;
    a.n_q = n;
    a.n_head = spec_.n_head;
    a.n_head_kv = spec_.n_head_kv;
    a.head_dim = spec_.head_dim;
    a.pos0 = pos0;
    a.n_sink = lp.n_sink;
    a.n_window = lp.n_window;
    a.streaming = streaming;
    a.codec = int(lp.codec);
    a.hadamard = lp.hadamard;
    a.row_bytes = v_row_bytes_;
    a.head_bytes = codec_row_bytes(lp.codec, spec_.head_dim);
    a.k = k_;
    a.v = v_;
    a.k_new = staging_.k_new;
    a.v_new = staging_.v_new;
    a.channel_keys = lp.channel_keys;
    a.k_sink = k_sink_;
    a.k_res = k_res_;
    a.k_block_bytes = size_t(spec_.n_head_kv) * channel_block_bytes(spec_.head_dim);
    a.rope_cs = rope_cs_;
    a.rope = spec_.rope;
    a.scale = spec_.attn_scale();
    a.keys_rotated = keys_rotated_;
    FoldArgs f;
    if (fold_) {
        a.stats = staging_.stats;
        f.map = lp.fold;
        f.n_head = spec_.n_head;
        f.n_head_kv = spec_.n_head_kv;
        f.head_dim = spec_.head_dim;
        f.scale = a.scale;
        f.rope_cs = rope_cs_;
        f.rope = spec_.rope;
        f.query_pos = lp.n_window;
        f.mem = fold_;
    }
    if (a.keys_rotated) s.rope_keys(k, n, spec_.n_head_kv, spec_.head_dim, pos0, a);
    const KVCodec k_codec = lp.channel_keys ? KVCodec::F16 : lp.codec;
    s.kv_encode(int(k_codec), lp.hadamard, k, n, spec_.n_head_kv, spec_.head_dim, staging_.k_new);
    s.kv_encode(int(lp.codec), false, const_cast<float *>(v), n, spec_.n_head_kv, spec_.head_dim, staging_.v_new);
    s.cache_attention(a, q, out);
    // The fold memory as of the batch's start, then the tokens this batch evicts.
    if (fold_) s.fold_read(f, q, n, staging_.stats, out);
    const size_t krb = k_row_bytes_, vrb = v_row_bytes_;
    for (int i = 0; i < n; i++) {
        const uint64_t t = pos0 + uint64_t(i);
        const bool sink = streaming && t < lp.n_sink;
        const uint64_t slot = a.slot(t);
        if (fold_ && t >= uint64_t(lp.n_sink) + lp.n_window)  // the slot's token, t - n_window, leaves for good
            s.fold_add(f, k_ + slot * krb, v_ + slot * vrb, int(lp.codec), lp.hadamard, a.head_bytes);
        s.copy(v_ + slot * vrb, staging_.v_new + size_t(i) * vrb, vrb);
        if (!lp.channel_keys) {
            s.copy(k_ + slot * krb, staging_.k_new + size_t(i) * krb, krb);
        } else if (sink) {
            s.copy(k_sink_ + t * krb, staging_.k_new + size_t(i) * krb, krb);
        } else {
            // Fill the residual block; once it is full, pack it over the window's oldest block.
            const uint64_t w = t - lp.n_sink, o = w % KV_CHANNEL_BLOCK;
            s.copy(k_res_ + o * krb, staging_.k_new + size_t(i) * krb, krb);
            if (o == KV_CHANNEL_BLOCK - 1)
                s.kv_encode_channels(k_res_, spec_.n_head_kv, spec_.head_dim,
                                     k_ + (w % lp.n_window) / KV_CHANNEL_BLOCK * a.k_block_bytes);
        }
    }
}

std::vector<uint8_t> AttentionMemory::convert_keys(Stream &s, const uint8_t *src, bool src_keys_rotated,
                                                   uint64_t n_past) const {
    const LayerPlan &lp = plan_;
    if (lp.codec != KVCodec::F16 || lp.hadamard || lp.channel_keys || !lp.absolute_positions)
        fail(KVFIT_E_FORMAT, "session state keeps rotated keys for a layer that cannot hold them");
    std::vector<uint8_t> k;
    resize_checked(k, k_bytes_, "the converted keys");
    std::memcpy(k.data(), src, k_bytes_);
    const RopeTablePlan table{spec_.rope, rope_positions_, 0};
    const std::vector<float> cs = rope_table_values(s, table);
    CacheAttention slots;  // only for its slot mapping
    slots.n_sink = lp.n_sink;
    slots.n_window = lp.n_window;
    slots.streaming = lp.ring();
    const int hd = spec_.head_dim, half = spec_.rope.n_dims / 2;
    const bool neox = spec_.rope.mode == RopeMode::Neox;
    std::vector<float> head(size_t(hd), 0.0f);
    // The positions the cache still holds: the sinks, then the window's newest.
    const uint64_t first_window = lp.ring() && n_past > lp.n_window ? std::max<uint64_t>(lp.n_sink, n_past - lp.n_window) : 0;
    for (uint64_t t = 0; t < n_past; t++) {
        if (t < first_window && t >= lp.n_sink) t = first_window;
        if (t >= rope_positions_)
            fail(KVFIT_E_FORMAT, "session state holds position %llu, beyond this layer's RoPE table of %u",
                 (unsigned long long)t, rope_positions_);
        const float *c = cs.data() + size_t(t) * size_t(half) * 2;
        uint16_t *row = reinterpret_cast<uint16_t *>(k.data() + slots.slot(t) * k_row_bytes_);
        for (int g = 0; g < spec_.n_head_kv; g++) {
            uint16_t *h16 = row + size_t(g) * size_t(hd);
            for (int i = 0; i < hd; i++) head[size_t(i)] = fp16_to_fp32(h16[i]);
            if (!src_keys_rotated) {
                cpu::rope_ggml(head.data(), c, spec_.rope.n_dims, neox);  // as the CPU's rope_keys
            } else {
                for (int i = 0; i < half; i++) {  // the inverse rotation, by -theta
                    float *p0 = neox ? &head[size_t(i)] : &head[size_t(2 * i)];
                    float *p1 = neox ? &head[size_t(i + half)] : &head[size_t(2 * i + 1)];
                    const float y0 = *p0, y1 = *p1, co = c[2 * i], si = c[2 * i + 1];
                    *p0 = y0 * co + y1 * si;
                    *p1 = y1 * co - y0 * si;
                }
            }
            for (int i = 0; i < hd; i++) h16[i] = fp32_to_fp16(head[size_t(i)]);
        }
    }
    return k;
}

SessionMemory::SessionMemory(Stream &s, const std::vector<LayerSpec> &specs, const MemoryPlan &plan, int max_batch)
    : plan_(plan) {
    if (specs.size() != plan.layers.size() || plan.layer_table.size() != specs.size())
        fail(KVFIT_E_INTERNAL, "memory plan for %zu layers, model has %zu", plan.layers.size(), specs.size());
    // Staging for the new tokens' encoded rows of one layer at a time (scratch,
    // like the activation buffers; not state kept per token).
    size_t max_row = 0, max_stats = 0;
    for (size_t l = 0; l < specs.size(); l++) {
        if (!specs[l].recurrent()) max_row = std::max(max_row, AttentionMemory::staged_row_bytes(specs[l], plan.layers[l]));
        if (plan.layers[l].fold != FoldMap::None) max_stats = std::max(max_stats, size_t(specs[l].n_head) * 2);
    }
    AttentionStaging staging;
    if (max_stats) staging.stats = static_cast<float *>(s.alloc(max_stats * size_t(max_batch) * sizeof(float)));
    if (max_row) {
        staging.k_new = static_cast<uint8_t *>(s.alloc(max_row * size_t(max_batch)));
        staging.v_new = static_cast<uint8_t *>(s.alloc(max_row * size_t(max_batch)));
    }
    // What the layers keep, counted as the stream allocates it.
    const uint64_t before = s.allocated_bytes();
    std::vector<const float *> tables;
    for (const RopeTablePlan &t : plan.rope_tables) tables.push_back(make_rope_table(s, t));
    for (size_t l = 0; l < specs.size(); l++) {
        if (specs[l].recurrent()) {
            layers_.push_back(std::make_unique<RecurrentMemory>(s, specs[l], plan.layers[l]));
            continue;
        }
        const size_t t = size_t(plan.layer_table[l]);
        layers_.push_back(std::make_unique<AttentionMemory>(s, specs[l], plan.layers[l], tables[t],
                                                            plan.rope_tables[t].positions, s.stores_rotated_keys(),
                                                            staging));
    }
    allocated_ = s.allocated_bytes() - before;
}

AttentionMemory &SessionMemory::attention(int l) {
    auto *a = dynamic_cast<AttentionMemory *>(layers_.at(size_t(l)).get());
    if (!a) fail(KVFIT_E_INTERNAL, "layer %d has no attention cache", l);
    return *a;
}

RecurrentMemory &SessionMemory::recurrent(int l) {
    auto *r = dynamic_cast<RecurrentMemory *>(layers_.at(size_t(l)).get());
    if (!r) fail(KVFIT_E_INTERNAL, "layer %d has no recurrent state", l);
    return *r;
}

void SessionMemory::clear(Stream &s) {
    for (const auto &m : layers_) m->clear(s);
}

size_t SessionMemory::state_bytes() const {
    size_t n = 0;
    for (const auto &m : layers_) n += m->state_bytes();
    return n;
}

void SessionMemory::save(Stream &s, uint8_t *dst) const {
    for (const auto &m : layers_) {
        m->save(s, dst);
        dst += m->state_bytes();
    }
    s.synchronize();
}

void SessionMemory::load(Stream &s, const uint8_t *src, const std::vector<bool> &keys_rotated, uint64_t n_past) {
    // Every conversion first, so that a failure leaves the memory as it was.
    std::vector<std::vector<uint8_t>> converted(layers_.size());
    const uint8_t *p = src;
    for (size_t l = 0; l < layers_.size(); l++) {
        auto *a = dynamic_cast<AttentionMemory *>(layers_[l].get());
        const size_t bytes = layers_[l]->state_bytes();
        if (a && l < keys_rotated.size() && keys_rotated[l] != a->keys_rotated()) {
            // The keys (the first part) converted, the rest as saved.
            const std::vector<uint8_t> keys = a->convert_keys(s, p, keys_rotated[l], n_past);
            resize_checked(converted[l], bytes, "a converted layer");
            std::memcpy(converted[l].data(), p, bytes);
            std::memcpy(converted[l].data(), keys.data(), keys.size());
        }
        p += bytes;
    }
    for (size_t l = 0; l < layers_.size(); l++) {
        layers_[l]->load(s, converted[l].empty() ? src : converted[l].data());
        src += layers_[l]->state_bytes();
    }
    s.synchronize();  // (the uploads may read `converted` until here)
}

void SessionMemory::load(Stream &s, const uint8_t *src) {
    for (const auto &m : layers_) {
        m->load(s, src);
        src += m->state_bytes();
    }
    s.synchronize();
}

}  // namespace kvfit
