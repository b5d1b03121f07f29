// The KV cache seen by a forward pass: it stores each new token's K and V and
// answers attention queries over what it holds. The forward pass knows nothing
// else about it, so the budgeted cache (sinks + ring, quantized codecs) can
// replace the plain one without touching the model code.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvfit {

class Stream;

struct KVShape {
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
};

class KVCache {
public:
    virtual ~KVCache() = default;
    // Tokens the cache can hold in total.
    virtual uint32_t capacity() const = 0;
    // Bytes of device memory the cache allocated (all of it, at creation).
    virtual size_t bytes() const = 0;
    // Stores K and V ([n][n_head_kv * head_dim], K after RoPE) of tokens at
    // stream positions [pos0, pos0 + n) for one layer.
    virtual void store(Stream &s, int layer, const float *k, const float *v, int n, uint32_t pos0) = 0;
    // Causal attention of n queries at positions [pos0, pos0 + n) over every
    // stored token up to each query; q and out are [n][n_head * head_dim].
    virtual void attend(Stream &s, int layer, const float *q, int n, uint32_t pos0, float *out) = 0;
};

// Full-precision (F16) cache holding `capacity` tokens of every layer.
class PlainKVCache final : public KVCache {
public:
    PlainKVCache(Stream &s, const KVShape &shape, uint32_t capacity);
    uint32_t capacity() const override { return capacity_; }
    size_t bytes() const override { return bytes_; }
    void store(Stream &s, int layer, const float *k, const float *v, int n, uint32_t pos0) override;
    void attend(Stream &s, int layer, const float *q, int n, uint32_t pos0, float *out) override;

private:
    KVShape shape_;
    uint32_t capacity_;
    size_t row_elems_;   // n_head_kv * head_dim
    size_t bytes_;
    uint16_t *k_ = nullptr;  // [n_layer][capacity][row_elems] F16
    uint16_t *v_ = nullptr;
};

}  // namespace kvfit
