// A session's KV memory, as the forward pass sees it, and the planner that
// sizes it from a byte budget.
//
// Layout of an attention layer (see the design notes): n_sink slots hold the
// first tokens of the stream for ever; a ring of n_window slots holds the most
// recent ones. Token t goes to slot t if t < n_sink, else to
// n_sink + (t - n_sink) mod n_window. Keys are stored before RoPE and rotated
// at attention time to their *cache* position (sinks 0..S-1, then the window
// in chronological order), the query to the position after the newest one, so
// relative distances never exceed S + W however long the stream runs. A dense
// cache is the special case S = 0, W = capacity, no eviction.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "kv/codec.h"
#include "kvfit.h"

namespace kvfit {

struct KVShape {
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int rope_dims = 0;  // rotated dimensions of each head
};

struct LayerPlan {
    kvfit_layer_kind kind = KVFIT_LAYER_DENSE;
    KVCodec codec = KVCodec::F16;
    bool hadamard = false;  // keys rotated by a fixed Hadamard transform before encoding
    bool channel_keys = false;  // keys in per-channel Q4 blocks of 32 tokens (codec is Q4, for the values)
    uint32_t n_sink = 0;
    uint32_t n_window = 0;
    uint64_t bytes = 0;
};

struct KVPlan {
    bool streaming = false;       // evicts (sinks + ring); else dense with a hard capacity
    std::vector<LayerPlan> layers;
    uint64_t rope_table_bytes = 0;  // cos/sin of every cache position, shared by the layers
    uint64_t total_bytes = 0;       // everything allocated per session for KV state
    uint32_t capacity() const { return layers.empty() ? 0 : layers[0].n_sink + layers[0].n_window; }
};

// Bytes of one layer's K and V state for sinks + window (everything counted:
// codes, scales, minima, full-precision sink keys and residual rows).
uint64_t layer_state_bytes(const KVShape &shape, const LayerPlan &lp);

// Chooses the plan for a session (throws KVFIT_E_BUDGET with the smallest
// workable budget in the message, or KVFIT_E_ARG for contradictory pins).
KVPlan plan_kv(const KVShape &shape, const kvfit_session_params &params, uint32_t n_ctx_train);

class KVCache {
public:
    KVCache(Stream &s, const KVShape &shape, const KVPlan &plan, const RopeParams &rope, int max_batch);
    const KVPlan &plan() const { return plan_; }
    uint64_t bytes() const { return plan_.total_bytes; }
    // Tokens a dense cache can hold; a streaming cache holds any number.
    uint32_t capacity() const { return plan_.capacity(); }
    bool streaming() const { return plan_.streaming; }
    // Whether any layer stores its keys after RoPE (part of the state's layout).
    bool keys_rotated() const;

    // For n new tokens at stream positions [pos0, pos0 + n) of one layer:
    // q ([n][n_head * head_dim]), k and v ([n][n_head_kv * head_dim]), all
    // before RoPE. Stores K/V (encoded) and writes the attention output of
    // each query over what it may see to out ([n][n_head * head_dim]).
    // k is used as scratch. n must not exceed the window of a
    // streaming cache or the free room of a dense one.
    void attend(Stream &s, int layer, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out);

    // The stored rows of every layer, K then V, as one byte sequence (for
    // session save/restore); state_bytes() long.
    size_t state_bytes() const;
    void save(Stream &s, uint8_t *dst) const;
    void load(Stream &s, const uint8_t *src);

private:
    KVShape shape_;
    KVPlan plan_;
    size_t row_elems_;  // n_head_kv * head_dim
    struct LayerStore {
        uint8_t *k = nullptr;       // (S + W) encoded rows, or W / 32 channel blocks
        uint8_t *v = nullptr;       // (S + W) encoded rows
        uint8_t *k_sink = nullptr;  // channel keys: S F16 rows
        uint8_t *k_res = nullptr;   // channel keys: 32 F16 rows, the block being filled
        size_t k_row_bytes = 0;     // one token's K row as staged (F16 for channel keys)
        size_t v_row_bytes = 0;
        size_t k_bytes = 0, v_bytes = 0, k_sink_bytes = 0, k_res_bytes = 0;
        // Every buffer with its size, in the order session state stores them.
        std::array<std::pair<uint8_t *, size_t>, 4> parts() const {
            return {{{k, k_bytes}, {v, v_bytes}, {k_sink, k_sink_bytes}, {k_res, k_res_bytes}}};
        }
    };
    std::vector<LayerStore> layers_;
    float *rope_cs_ = nullptr;      // [S + W][rope_dims / 2][2] cos, sin of each cache position
    RopeParams rope_;
    bool keys_rotated_ = false;     // dense F16 layers keep keys after RoPE (Stream::stores_rotated_keys)
    uint8_t *k_new_ = nullptr, *v_new_ = nullptr;  // staging: the current batch's encoded rows
};

// The public name of a layer's codec.
kvfit_kv_codec layer_codec(const LayerPlan &lp);

}  // namespace kvfit
