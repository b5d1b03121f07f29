// A session's memory, layer by layer, and the planner that sizes it from a
// byte budget.
//
// An architecture describes what each of its layers keeps per session (a
// LayerSpec: attention with its heads, RoPE and scale, or a recurrent layer's
// fixed-size state). The planner turns the specs and the session's parameters into a
// LayerPlan per layer (kind, codec, sinks, window, bytes). SessionMemory then
// allocates one memory object per layer (LayerMemory), each knowing its bytes
// and how to save and load itself, so nothing here assumes that all layers are
// alike.
//
// Layout of an attention layer (see the design notes): n_sink slots hold the
// first tokens of the stream for ever; a ring of n_window slots holds the most
// recent ones. Token t goes to slot t if t < n_sink, else to
// n_sink + (t - n_sink) mod n_window. Keys are stored before RoPE and rotated
// at attention time to their *cache* position (sinks 0..S-1, then the window
// in chronological order), the query to the position after the newest one, so
// relative distances never exceed S + W however long the stream runs. A dense
// layer is the special case S = 0, W = capacity, no eviction.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "kv/codec.h"
#include "kv/fold.h"
#include "kvfit.h"

namespace kvfit {

// What one layer of a model keeps per session, as its architecture defines it.
struct LayerSpec {
    // Attention keeps a list of tokens' keys and values; a recurrent layer
    // (Gated DeltaNet, RWKV) a state whose size does not depend on the context.
    enum class Kind { Attention, Recurrent };
    Kind kind = Kind::Attention;
    // Recurrent: the bytes of each buffer of its state (F32), in the order the
    // architecture addresses them (RecurrentMemory::f32).
    std::vector<uint64_t> state_parts;
    // Recurrent: the part the planner may keep narrower than F32 (the large
    // state matrix: delta-rule or wkv state; LayerPlan::state_type), -1 if
    // none. The other parts (convolution inputs, shifted rows) stay F32.
    int narrow_part = -1;
    int n_head = 0;
    int n_head_kv = 0;  // GQA: query head h reads KV head h / (n_head / n_head_kv)
    int head_dim = 0;
    RopeParams rope;    // this layer's rotation (base, scaling, rotated dimensions)
    float scale = 0.0f; // attention logit scale; 0 = 1 / sqrt(head_dim)
    // > 0: the model's own sliding window; a query sees exactly the
    // native_window most recent tokens, itself included.
    uint32_t native_window = 0;
    float attn_scale() const;
    bool recurrent() const { return kind == Kind::Recurrent; }
};

// A recurrent layer with these state buffers (bytes each).
LayerSpec recurrent_layer(std::vector<uint64_t> state_parts);

// The same attention layer n_layer times (every llama-style model).
std::vector<LayerSpec> uniform_attention_layers(int n_layer, int n_head, int n_head_kv, int head_dim,
                                                const RopeParams &rope);

struct LayerPlan {
    kvfit_layer_kind kind = KVFIT_LAYER_DENSE;
    KVCodec codec = KVCodec::F16;
    bool hadamard = false;      // keys rotated by a fixed Hadamard transform before encoding
    bool channel_keys = false;  // keys in per-channel Q4 blocks of 32 tokens (codec is Q4, for the values)
    uint32_t n_sink = 0;
    uint32_t n_window = 0;      // ring slots; a dense layer's capacity
    // Keys may be kept rotated at their stream positions (dense layers, and
    // native windows in a session of bounded capacity, whose RoPE table then
    // covers every position); see Stream::stores_rotated_keys.
    bool absolute_positions = false;
    // Fold mode (src/kv/fold.h): the evicted tokens' memory (FoldMap::None:
    // none), and the window of the layers whose RoPE table this one shares
    // (a folded layer's window is shorter than theirs; 0: its own).
    FoldMap fold = FoldMap::None;
    uint32_t table_window = 0;
    // Recurrent: how the spec's narrow_part is kept (F32 unless measured
    // harmless; see plan_memory).
    StateType state_type = StateType::F32;
    uint64_t bytes = 0;         // what the layer's memory object allocates
    // A ring that evicts (sinks + window, or a native window).
    bool ring() const { return kind == KVFIT_LAYER_STREAMING || kind == KVFIT_LAYER_WINDOW; }
    // Whether the layer keeps keys and values (not a recurrent state).
    bool attention() const { return kind != KVFIT_LAYER_RECURRENT; }
};

// A cos/sin table of cache positions, shared by the layers with the same
// rotation and number of positions.
struct RopeTablePlan {
    RopeParams rope;
    uint32_t positions = 0;
    uint64_t bytes = 0;
};

struct MemoryPlan {
    std::vector<LayerPlan> layers;
    std::vector<RopeTablePlan> rope_tables;
    std::vector<int> layer_table;  // rope_tables index of each layer (-1: a recurrent layer)
    uint64_t total_bytes = 0;      // everything allocated per session for layer memory
    // Tokens the session can hold: the smallest dense layer's capacity (no
    // limit if every layer streams or is recurrent).
    uint64_t capacity() const;
    bool unbounded() const;
    // The largest batch every layer can take at once (a streaming layer's
    // batch must not evict its own tokens before they are attended).
    uint32_t max_batch() const;
};

// Every buffer of a session's memory is allocated in whole units of this many
// bytes, so that what the planner counts is what the backends allocate (their
// allocators round small or odd sizes up, and Vulkan binds buffers at aligned
// offsets).
constexpr uint64_t kAllocUnit = 256;
inline uint64_t alloc_size(uint64_t bytes) { return (bytes + kAllocUnit - 1) / kAllocUnit * kAllocUnit; }

// The buffers of one attention layer's K and V state for its sinks + window
// (codes, scales, minima, full-precision sink keys and residual rows):
// K, V, the sinks' F16 keys and the residual F16 key rows (the last two only
// with per-channel keys).
std::array<uint64_t, 4> attention_buffer_bytes(const LayerSpec &spec, const LayerPlan &lp);
// What one layer allocates: its buffers, each rounded to kAllocUnit.
uint64_t layer_state_bytes(const LayerSpec &spec, const LayerPlan &lp);
// Bytes of part i of a recurrent layer's state with its narrow part kept as
// `type` (before rounding to kAllocUnit).
uint64_t recurrent_part_bytes(const LayerSpec &spec, size_t i, StateType type);
// A recurrent layer's state buffers, each rounded to kAllocUnit.
uint64_t recurrent_state_bytes(const LayerSpec &spec, StateType type = StateType::F32);
// How recurrent layers keep their narrow part in sessions with these
// parameters, on a backend that takes BF16 states or not (bf16_ok): BF16
// within a budget where the backend takes it (measured: perplexity moves by
// less than 0.01 %, docs/BENCHMARKS.md), else F32 (without a budget the
// states stay as llama.cpp keeps them). The internal setting
// KVFIT_STATE_PRECISION (f32, f16 or bf16; for measuring) overrides it.
// Throws KVFIT_E_ARG for another value.
StateType recurrent_state_type(const kvfit_session_params &params, bool bf16_ok);

// The most tokens a session with these parameters runs through the model at
// once (before the plan's own limits: MemoryPlan::max_batch, the capacity).
uint32_t plan_batch(const kvfit_session_params &params);

// Chooses the plan for a session (throws KVFIT_E_BUDGET with the smallest
// workable budget in the message, or KVFIT_E_ARG for contradictory pins).
// fold_layers (one entry per layer, non-zero: fold) says which layers fold
// with params.fold == KVFIT_FOLD_AUTO (the calibration's choice; empty: none);
// KVFIT_FOLD_ON folds every streaming layer. A layer folds only where its
// window can pay for the memory (see fold_layer).
MemoryPlan plan_memory(const std::vector<LayerSpec> &layers, const kvfit_session_params &params,
                       uint32_t n_ctx_train, bool bf16_states_ok = false,
                       const std::vector<uint8_t> &fold_layers = {});

// The map fold mode uses (docs/BENCHMARKS.md, "Fold mode"): Taylor, or the
// random features where the environment sets KVFIT_FOLD_MAP=rf (kept to
// reproduce the comparison).
FoldMap fold_map();
// A streaming layer's plan with a fold memory (map) in no more bytes than
// lp: per-token keys, and the longest window that pays for the memory. kind
// is left KVFIT_LAYER_STREAMING with fold None if no window of at least
// min_window does.
LayerPlan fold_layer(const LayerSpec &spec, const LayerPlan &lp, FoldMap map, uint32_t min_window);

// The public name of a layer's codec.
kvfit_kv_codec layer_codec(const LayerPlan &lp);

// One layer's per-session memory. Every buffer it keeps is allocated at
// construction and listed by parts(), which is what bytes(), save and load
// iterate over.
class LayerMemory {
public:
    virtual ~LayerMemory() = default;
    const LayerPlan &plan() const { return plan_; }
    // Buffers as the session state stores them, in order (their used bytes;
    // each was allocated in whole kAllocUnit units).
    virtual std::vector<std::pair<uint8_t *, size_t>> parts() const = 0;
    size_t state_bytes() const;
    void save(Stream &s, uint8_t *dst) const;
    void load(Stream &s, const uint8_t *src);
    // Back to the state of a new session (a reset). Attention layers need
    // nothing: the session's position says which of their rows are valid.
    virtual void clear(Stream &s) { (void)s; }

protected:
    explicit LayerMemory(const LayerPlan &plan) : plan_(plan) {}
    LayerPlan plan_;
};

// Scratch the attention layers of one session share: the current batch's
// encoded K/V rows (one layer at a time).
struct AttentionStaging {
    uint8_t *k_new = nullptr, *v_new = nullptr;
    float *stats = nullptr;  // fold mode: the exact part's [batch][n_head][2] maximum and sum
};

// An attention layer's cache: dense, or sinks + ring (see the top of this file).
class AttentionMemory : public LayerMemory {
public:
    AttentionMemory(Stream &s, const LayerSpec &spec, const LayerPlan &plan, const float *rope_cs,
                    uint32_t rope_positions, bool stores_rotated_keys, const AttentionStaging &staging);
    std::vector<std::pair<uint8_t *, size_t>> parts() const override;
    void clear(Stream &s) override;  // the fold memory back to zero
    // Whether this layer stores its keys after RoPE (part of the state's layout).
    bool keys_rotated() const { return keys_rotated_; }
    // This layer's key buffer (the first of parts()) from a saved state whose
    // keys were stored with the other rotation, converted: the keys of the
    // positions the cache holds after n_past tokens are rotated to their
    // positions (as Stream::rope_keys does) or back, through F16.
    std::vector<uint8_t> convert_keys(Stream &s, const uint8_t *src, bool src_keys_rotated, uint64_t n_past) const;
    // One token's K and V rows as staged (for sizing the shared staging).
    static size_t staged_row_bytes(const LayerSpec &spec, const LayerPlan &plan);

    // For n new tokens at stream positions [pos0, pos0 + n): q
    // ([n][n_head * head_dim]), k and v ([n][n_head_kv * head_dim]), all
    // before RoPE. Stores K/V (encoded) and writes the attention output of
    // each query over what it may see to out ([n][n_head * head_dim]).
    // k is used as scratch. n must not exceed the window of a streaming
    // layer or the free room of a dense one.
    void attend(Stream &s, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out);

private:
    LayerSpec spec_;
    const float *rope_cs_;      // [positions][rope.n_dims / 2][2] cos, sin of each cache position
    uint32_t rope_positions_;   // how many positions that table holds
    bool keys_rotated_;         // a dense F16 layer keeping keys after RoPE (Stream::stores_rotated_keys)
    AttentionStaging staging_;
    uint8_t *k_ = nullptr;      // (S + W) encoded rows, or W / 32 channel blocks
    uint8_t *v_ = nullptr;      // (S + W) encoded rows
    uint8_t *k_sink_ = nullptr; // channel keys: S F16 rows
    uint8_t *k_res_ = nullptr;  // channel keys: 32 F16 rows, the block being filled
    float *fold_ = nullptr;     // fold mode: the evicted tokens' memory (src/kv/fold.h)
    size_t fold_bytes_ = 0;
    size_t k_row_bytes_ = 0, v_row_bytes_ = 0;  // one token's rows as staged (K: F16 for channel keys)
    size_t k_bytes_ = 0, v_bytes_ = 0, k_sink_bytes_ = 0, k_res_bytes_ = 0;
};

// A recurrent layer's state: fixed-size buffers, zero at the start of a
// stream, carried from token to token by the architecture's ops. Every part
// is F32 except the spec's narrow_part, kept as the plan's state_type.
class RecurrentMemory : public LayerMemory {
public:
    RecurrentMemory(Stream &s, const LayerSpec &spec, const LayerPlan &plan);
    std::vector<std::pair<uint8_t *, size_t>> parts() const override;
    void clear(Stream &s) override;
    // Buffer i of the state, as the layer's spec lists them (device memory);
    // KVFIT_E_INTERNAL if it is not kept in F32.
    float *f32(size_t i) const;
    // Buffer i whatever its type, and its type.
    void *part(size_t i) const;
    StateType part_type(size_t i) const;
    size_t n_parts() const { return parts_.size(); }

private:
    std::vector<std::pair<uint8_t *, size_t>> parts_;
    int narrow_part_ = -1;
};

// All layers' memory of one session, and what they share (RoPE tables, the
// staging rows).
class SessionMemory {
public:
    SessionMemory(Stream &s, const std::vector<LayerSpec> &specs, const MemoryPlan &plan, int max_batch);
    const MemoryPlan &plan() const { return plan_; }
    int n_layer() const { return int(layers_.size()); }
    LayerMemory &layer(int l) { return *layers_[size_t(l)]; }
    const LayerMemory &layer(int l) const { return *layers_[size_t(l)]; }
    // Layer l's attention cache (KVFIT_E_INTERNAL if it is of another kind).
    AttentionMemory &attention(int l);
    // Layer l's recurrent state (KVFIT_E_INTERNAL if it is of another kind).
    RecurrentMemory &recurrent(int l);
    // Every layer back to a new session's state (recurrent states to zero).
    void clear(Stream &s);
    // Shorthand for attention(layer).attend(...).
    void attend(Stream &s, int layer, const float *q, float *k, const float *v, int n, uint64_t pos0, float *out) {
        attention(layer).attend(s, q, k, v, n, pos0, out);
    }
    uint64_t capacity() const { return plan_.capacity(); }
    bool unbounded() const { return plan_.unbounded(); }
    // Bytes the stream allocated for the memory objects and their shared
    // tables, as it counts them (Stream::allocated_bytes), not as planned.
    uint64_t allocated_bytes() const { return allocated_; }

    // Every layer's buffers, one layer after the other (session save/restore).
    size_t state_bytes() const;
    void save(Stream &s, uint8_t *dst) const;
    void load(Stream &s, const uint8_t *src);
    // The same, from a state whose attention layer l kept its keys after RoPE
    // if keys_rotated[l]: layers that keep them the other way convert them.
    void load(Stream &s, const uint8_t *src, const std::vector<bool> &keys_rotated, uint64_t n_past);

private:
    MemoryPlan plan_;
    std::vector<std::unique_ptr<LayerMemory>> layers_;
    uint64_t allocated_ = 0;
};

}  // namespace kvfit
