// The backend interface every compute device implements (CPU here; CUDA and
// Vulkan in their own directories). Two levels, as in whisper.cpp's model /
// state split:
//   Backend - one per model and device: owns the uploaded weights (uploaded
//             once, shared read-only by every session) and creates streams.
//   Stream  - one per session: device scratch, worker threads / queue, and the
//             ops of a forward pass. Ops are enqueued and may run
//             asynchronously; synchronize() is the only point where results
//             are guaranteed visible to the host.
// Pointers passed to ops are device addresses from Stream::alloc (host
// pointers on the CPU backend). Shapes are row-major: a [n][d] activation is
// n rows of d contiguous floats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kvfit.h"

namespace kvfit {

struct GGUFTensor;

// A weight matrix (or vector) on the device: n_rows rows of n_cols elements.
struct Weight {
    const void *data = nullptr;  // device address
    uint32_t type = 0;           // GgmlType
    int64_t n_cols = 0;          // elements per row (ne[0] in GGUF)
    int64_t n_rows = 0;          // rows (ne[1] * ne[2] * ne[3])
    size_t row_bytes = 0;
    bool valid() const { return data != nullptr; }
};

enum class RopeMode { Norm, Neox };  // Norm: rotate pairs (2i, 2i+1); Neox: (i, i + n/2)

struct RopeParams {
    int n_dims = 0;             // rotated dimensions of each head (<= head_dim)
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;    // linear scaling: positions are multiplied by it
    RopeMode mode = RopeMode::Norm;
    const float *freq_factors = nullptr;  // optional per-pair divisors (n_dims/2), device address
};

// Attention of n_q new queries over a KV cache of encoded, pre-RoPE rows laid
// out as sinks + ring (see src/kv/memory.h). The new tokens' K/V rows are
// read from the staging rows, the older ones from their cache slots; every key
// is rotated to its cache position, each query to its own.
struct CacheAttention {
    int n_q = 0;
    int n_head = 0;
    int n_head_kv = 0;          // GQA: query head h reads KV head h / (n_head / n_head_kv)
    int head_dim = 0;
    uint64_t pos0 = 0;          // stream position of the first query
    uint32_t n_sink = 0;
    uint32_t n_window = 0;      // ring slots (dense: the capacity)
    bool streaming = false;     // dense caches neither evict nor remap positions
    int codec = 1;              // KVCodec of the V rows (and of the K rows unless channel_keys)
    bool hadamard = false;      // keys were Hadamard-rotated before encoding
    size_t row_bytes = 0;       // encoded bytes of one token's V (and K unless channel_keys), all KV heads
    size_t head_bytes = 0;      // encoded bytes of one head's part of a row
    const uint8_t *k = nullptr, *v = nullptr;          // slot-indexed cache rows (K: blocks if channel_keys)
    const uint8_t *k_new = nullptr, *v_new = nullptr;  // the n_q new tokens' rows
    // Per-channel key blocks (KVFIT_KV_Q4_CHANNEL): window token j's key is
    // in block ((j - S) mod W) / 32 of k, unless its block is the one still
    // being filled, whose F16 rows are in k_res (row (j - S) mod 32); sink
    // keys are F16 rows in k_sink, and k_new holds F16 rows.
    bool channel_keys = false;
    const uint8_t *k_sink = nullptr, *k_res = nullptr;
    size_t k_block_bytes = 0;   // one block, all KV heads (head g at g * k_block_bytes / n_head_kv)

    // Cache slot of stream position j (sinks keep theirs; the window is a ring).
    uint64_t slot(uint64_t j) const { return !streaming || j < n_sink ? j : n_sink + (j - n_sink) % n_window; }
    const float *rope_cs = nullptr;  // [n_sink + n_window][rope.n_dims / 2][2] cos, sin per cache position
    RopeParams rope;
    float scale = 1.0f;
    // Dense F16 layer on a stream that stores_rotated_keys(): K rows (cached
    // and new) hold keys already rotated to their position; only queries are
    // rotated here.
    bool keys_rotated = false;
    // Fold mode (src/kv/fold.h): when set, [n_q][n_head][2] receives each
    // query head's running maximum score and sum of exp(score - maximum).
    float *stats = nullptr;
};

struct FoldArgs;  // src/kv/fold.h

class Stream {
public:
    virtual ~Stream() = default;

    // Device memory owned by this stream, freed with it. Throws KVFIT_E_NOMEM.
    virtual void *alloc(size_t bytes) = 0;
    // Bytes this stream has obtained through alloc() so far, as the allocator
    // was asked for them (after its rounding): the session's real footprint
    // on its device, which budget checks compare against.
    virtual uint64_t allocated_bytes() const = 0;
    virtual void upload(void *dst, const void *src, size_t bytes) = 0;    // host -> device (async)
    virtual void download(void *dst, const void *src, size_t bytes) = 0;  // device -> host (complete after synchronize)
    virtual void synchronize() = 0;  // throws KVFIT_E_BACKEND if an op failed

    // x[i] = dequantize(table row ids[i]); ids is a device array of n ints.
    virtual void get_rows(const Weight &table, const int32_t *ids, int n, float *x) = 0;
    // y[t] = x[t] / rms(x[t]) * w, for n rows of w.n_cols floats.
    virtual void rmsnorm(const float *x, const Weight &w, float eps, int n, float *y) = 0;
    // y[t][r] = dot(w row r, x[t]); x is [n][w.n_cols], y is [n][w.n_rows].
    virtual void matmul(const Weight &w, const float *x, int n, float *y) = 0;
    // Encodes n rows of n_heads heads of head_dim floats with a KV codec
    // (optionally Hadamard-rotating each head first; x is then modified).
    virtual void kv_encode(int codec, bool hadamard, float *x, int n, int n_heads, int head_dim, uint8_t *dst) = 0;
    // Packs 32 F16 key rows (n_heads heads of head_dim each) into one
    // per-channel Q4 block per head, written one after the other to dst.
    virtual void kv_encode_channels(const uint8_t *rows, int n_heads, int head_dim, uint8_t *dst) = 0;
    // out[i] = softmax(scale * q_i . K^T) V over what query i may see; q is
    // [n_q][n_head * head_dim] before RoPE (left unchanged).
    virtual void cache_attention(const CacheAttention &a, const float *q, float *out) = 0;
    // Whether dense F16 caches on this stream keep keys after RoPE, as
    // llama.cpp does (the CPU: so that its attention can follow llama.cpp's
    // arithmetic exactly). If so the cache passes each layer's new keys through
    // rope_keys before encoding them; rows are at positions pos0, pos0 + 1, ...
    virtual bool stores_rotated_keys() const { return false; }
    virtual void rope_keys(float *k, int n, int n_heads, int head_dim, uint64_t pos0, const CacheAttention &a);
    // Fold mode (src/kv/fold.h): fold one evicted token's encoded K and V
    // rows into the memory, and merge the memory's part into the exact
    // attention output. The defaults refuse (KVFIT_E_UNSUPPORTED).
    virtual void fold_add(const FoldArgs &f, const uint8_t *k_row, const uint8_t *v_row, int codec, bool hadamard,
                          size_t head_bytes);
    virtual void fold_read(const FoldArgs &f, const float *q, int n_q, const float *stats, float *out);
    // Device-to-device copy.
    virtual void copy(void *dst, const void *src, size_t bytes) = 0;
    // dst[0, bytes) = 0 (recurrent states at the start of a stream). The
    // default uploads zeros.
    virtual void zero(void *dst, size_t bytes);
    // out = silu(gate) * up, n floats.
    virtual void swiglu(const float *gate, const float *up, size_t n, float *out) = 0;
    // y += x, n floats.
    virtual void add(float *y, const float *x, size_t n) = 0;
    // y[t][i] += b[i] for n rows of d floats (a bias; b on the device). The
    // default adds row by row.
    virtual void add_rows(float *y, const float *b, int n, size_t d);
    // x *= s, n floats (a float product, as ggml_scale).
    virtual void scale(float *x, size_t n, float s);
    // out = gelu(gate) * up, n floats, GELU in its tanh form through ggml's
    // F16 table (see cpu::gelu_f16_table); out may be gate.
    virtual void geglu(const float *gate, const float *up, size_t n, float *out);
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char *name() const = 0;
    virtual kvfit_backend_kind kind() const = 0;
    // Makes a GGUF tensor usable by ops (copies to the device where needed;
    // the CPU backend uses the memory map directly). Called once per tensor.
    virtual Weight upload_weight(const GGUFTensor &t) = 0;
    // Small float arrays the model needs on the device (e.g. RoPE factors).
    virtual const float *upload_floats(const float *data, size_t n) = 0;
    // A stream for one session; n_threads applies to CPU work. Ops will see at
    // most max_tokens rows of at most max_cols elements and attention over at
    // most max_kv cache rows: scratch is sized once, here.
    virtual std::unique_ptr<Stream> create_stream(int n_threads, int max_tokens, int64_t max_cols, int max_kv) = 0;
    // Whether this backend's ops give the CPU backend's bits wherever the CPU
    // follows llama.cpp's order of operations (quantized matrix products,
    // RMSNorm, SwiGLU, RoPE of stored keys, attention over dense F16 caches
    // for fewer than 64 queries), so that greedy tokens match. A GPU needs a
    // fused fma and doubles for that.
    virtual bool reproduces_cpu() const { return false; }
};

// The backend for a requested kind (AUTO consults $KVFIT_BACKEND, then picks
// the best available) on device `device` of that backend (-1: $KVFIT_DEVICE,
// else the best). Throws KVFIT_E_BACKEND_UNAVAILABLE for a kind that is not
// built or has no such device.
std::unique_ptr<Backend> create_backend(kvfit_backend_kind kind, int device = -1);
std::unique_ptr<Backend> create_cpu_backend();

// A device a backend can run on (see kvfit_device_info).
struct DeviceDesc {
    kvfit_backend_kind backend = KVFIT_BACKEND_CPU;
    int index = 0;
    kvfit_device_type type = KVFIT_DEVICE_CPU;
    std::string name;
    uint64_t memory = 0;
};
// Every device of every backend built in, the CPU first; enumerated once.
const std::vector<DeviceDesc> &list_devices();

#if defined(KVFIT_WITH_CUDA)
// cuda/: the CUDA devices (empty without a driver or a device), and a backend
// on one of them (-1: device 0).
std::vector<DeviceDesc> cuda_devices();
std::unique_ptr<Backend> create_cuda_backend(int device);
#endif
#if defined(KVFIT_WITH_VULKAN)
// vulkan/: the usable Vulkan devices (empty without a loader), and a backend
// on one of them (-1: the best GPU; with allow_cpu, a CPU implementation too).
std::vector<DeviceDesc> vulkan_devices();
std::unique_ptr<Backend> create_vulkan_backend(int device, bool allow_cpu);
#endif
// Errors the Vulkan validation layer reported in this process (it runs when
// KVFIT_VULKAN_VALIDATION=1); 0 without the Vulkan backend.
uint64_t vulkan_validation_errors();

}  // namespace kvfit
