#include <cmath>

#include "backend/backend.h"
#include "common.h"
#include "kv/kv_cache.h"

namespace kvfit {

PlainKVCache::PlainKVCache(Stream &s, const KVShape &shape, uint32_t capacity)
    : shape_(shape), capacity_(capacity), row_elems_(size_t(shape.n_head_kv) * shape.head_dim) {
    const size_t per_layer = size_t(capacity) * row_elems_ * sizeof(uint16_t);
    bytes_ = 2 * per_layer * size_t(shape.n_layer);
    k_ = static_cast<uint16_t *>(s.alloc(per_layer * shape.n_layer));
    v_ = static_cast<uint16_t *>(s.alloc(per_layer * shape.n_layer));
}

void PlainKVCache::store(Stream &s, int layer, const float *k, const float *v, int n, uint32_t pos0) {
    if (pos0 + uint32_t(n) > capacity_) fail(KVFIT_E_INTERNAL, "KV store past the cache capacity");
    const size_t off = size_t(layer) * capacity_ * row_elems_;
    s.kv_store_f16(k, v, n, row_elems_, k_ + off, v_ + off, int(pos0));
}

void PlainKVCache::attend(Stream &s, int layer, const float *q, int n, uint32_t pos0, float *out) {
    AttentionParams p;
    p.n_q = n;
    p.n_head = shape_.n_head;
    p.n_head_kv = shape_.n_head_kv;
    p.head_dim = shape_.head_dim;
    p.n_kv = int(pos0) + n;
    p.q_offset = int(pos0);
    p.scale = 1.0f / std::sqrt(float(shape_.head_dim));
    p.kv_row_stride = row_elems_;
    const size_t off = size_t(layer) * capacity_ * row_elems_;
    s.attention_f16(q, k_ + off, v_ + off, p, out);
}

}  // namespace kvfit
