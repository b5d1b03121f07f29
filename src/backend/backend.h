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

// How a recurrent layer keeps its large state matrix (Gated DeltaNet's
// delta-rule state, RWKV-7's wkv state) between tokens. The ops that take a
// state of another type than F32 read it into floats, do all their
// arithmetic in F32, and round the state to the type after every token (what
// storing it between tokens gives), so a batch of tokens gives the same bits
// as the same tokens one at a time. F16 and BF16 round to nearest even.
enum class StateType : uint8_t { F32 = 0, F16 = 1, BF16 = 2 };
inline size_t state_type_bytes(StateType t) { return t == StateType::F32 ? 4 : 2; }
const char *state_type_name(StateType t);

// One batch of the gated delta rule (Gated DeltaNet, Qwen3-Next / Qwen3.5
// linear attention), per value head h with state S_h (head_dim x head_dim):
//   S <- exp(g_t) S;  d = beta_t (v_t - S k_t);  S <- S + d k_t^T;  o_t = scale * S q_t
// i.e. S <- a S (I - b k k^T) + b v k^T with a = exp(g), b = beta. Value head
// h reads query/key head h % n_k_heads (llama.cpp's tiled order).
struct DeltaNetArgs {
    int n = 0;                // tokens
    int n_k_heads = 0;        // heads of q and k
    int n_v_heads = 0;        // heads of v, g, beta, the state and the output
    int head_dim = 0;         // of keys and values alike
    // Token t's query head i starts at q + t * qk_stride + i * head_dim (k the
    // same), its value head h at v + t * v_stride + h * head_dim.
    const float *q = nullptr, *k = nullptr, *v = nullptr;
    size_t qk_stride = 0, v_stride = 0;  // floats
    const float *g = nullptr;     // [n][n_v_heads] log of the decay
    const float *beta = nullptr;  // [n][n_v_heads]
    // [n_v_heads][head_dim][head_dim]: row j of head h holds S[j][0..head_dim),
    // j indexing values, the columns keys; updated in place. With a
    // state_type other than F32 it points at values of that type (uint16_t
    // each; see StateType), which only backends whose supports_state_type()
    // says so accept.
    float *state = nullptr;
    StateType state_type = StateType::F32;
    float *out = nullptr;         // [n][n_v_heads][head_dim]
    float scale = 1.0f;
};

struct FoldArgs;  // src/kv/fold.h

class Stream {
public:
    virtual ~Stream() = default;
    // For messages: "CPU", "Vulkan", "CUDA".
    virtual const char *backend_name() const { return "this"; }

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
    // Whether delta_net and wkv7_typed take recurrent states of this type
    // (every backend takes F32; the default says F32 only).
    virtual bool supports_state_type(StateType t) const { return t == StateType::F32; }
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

    // ---- RWKV-7 (linear-state layers). Every op below has a default that
    // throws KVFIT_E_UNSUPPORTED naming the op and the backend, so a backend
    // without them compiles and fails clearly. Rows are [n][d] floats.

    // y = (x - mean) / sqrt(var + eps) * w + b over each group of d / groups
    // consecutive floats of each of n rows (groups = 1: LayerNorm; one group
    // per head: RWKV's GroupNorm); w and b are d floats. y may be x.
    virtual void norm_affine(const float *x, const float *w, const float *b, float eps, int n, int d, int groups,
                             float *y);
    // Token shift and interpolation: with prev[0] = state and prev[t] =
    // x[t - 1], out[j][t] = x[t] + (prev[t] - x[t]) * mix[j] for j < n_mix
    // (out is [n_mix][n][d], mix [n_mix][d]); then state = x[n - 1].
    virtual void token_shift_mix(const float *x, float *state, const float *mix, int n_mix, int n, int d, float *out);
    enum class Activation { Tanh, Sigmoid, ReluSquare };
    // x = f(x), n floats.
    virtual void activate(Activation f, float *x, size_t n);
    // The RWKV-7 time-mix inputs from the projections, n rows of d = n_head *
    // head_size floats each, in place:
    //   w     = exp(-exp(-1/2) * sigmoid(w + w0))                  (decay)
    //   a     = sigmoid(a + a0)                                     (in-context rate)
    //   v     = v + (v_first - v) * sigmoid(vmix + v0)  if vmix (not layer 0)
    //   kk    = l2-normalised (k * k_k) per head; then
    //   k     = k + (a * (k * k_a) - k * k_a)
    //   a_out = -kk, b_out = kk * a                                 (for wkv7)
    virtual void rwkv7_prepare(float *w, const float *w0, float *a, const float *a0, float *v, const float *v_first,
                               const float *vmix, const float *v0, float *k, const float *k_k, const float *k_a,
                               int n, int n_head, int head_size, float *a_out, float *b_out);
    // The RWKV-7 recurrence over n tokens, per head h and token t, with the
    // state S[h] (head_size x head_size, row i = value channel, column j = key
    // channel; [n_head][head_size][head_size] floats, updated in place):
    //   S[i][j] = S[i][j] * w[j] + v[i] * k[j] + (sum_j' S[i][j'] a[j']) * b[j]
    //   out[i]  = sum_j S[i][j] * r[j]                   (the updated S)
    // All vectors are [n][n_head * head_size].
    virtual void wkv7(const float *r, const float *w, const float *k, const float *v, const float *a, const float *b,
                      int n, int n_head, int head_size, float *state, float *out);
    // wkv7 with the state kept as `type` (void *: F32 floats, or the uint16_t
    // values of F16 / BF16; see StateType). The default runs wkv7 for F32 and
    // throws KVFIT_E_UNSUPPORTED for the others.
    virtual void wkv7_typed(const float *r, const float *w, const float *k, const float *v, const float *a,
                            const float *b, int n, int n_head, int head_size, StateType type, void *state, float *out);
    // y = (y + v * sum_head(r * k * r_k)) * g per head, n rows of n_head *
    // head_size floats (r_k is [n_head * head_size]).
    virtual void rwkv7_bonus_gate(float *y, const float *r, const float *k, const float *v, const float *r_k,
                                  const float *g, int n, int n_head, int head_size);
    // --- Recurrent (linear-state) layers. The defaults throw
    // KVFIT_E_UNSUPPORTED naming the op and the backend.
    // Causal depthwise convolution over time, one step per token: token t's
    // channel c is sum_i w[c][i] * in(t + i, c) for i < kernel, where the
    // inputs are the kernel - 1 previous ones (state, [kernel - 1][channels],
    // oldest first) followed by x ([n][channels]); the products are summed in
    // order with fused multiply-adds (as llama.cpp's ssm_conv compiles). The
    // state then holds the last kernel - 1 inputs. w: channels rows of kernel
    // floats (F32). y: [n][channels].
    virtual void ssm_conv(const float *x, int n, int channels, int kernel, const float *w, float *state, float *y);
    // y = x * sigmoid(x), n floats (y may be x); as ggml_vec_silu_f32 with the
    // vector exp for each whole group of 16 from x.
    virtual void silu(const float *x, size_t n, float *y);
    // x *= sigmoid(gate), n floats, sigmoid = 1 / (1 + expf(-gate)).
    virtual void sigmoid_mul(float *x, const float *gate, size_t n);
    // The gates of a Gated DeltaNet layer for n tokens of n_heads heads:
    // g = softplus(alpha + dt_bias) * a (softplus(x) = x above 20) and
    // beta = sigmoid(beta), in place. dt_bias, a: [n_heads] on the device.
    virtual void delta_gates(float *alpha, float *beta, const float *dt_bias, const float *a, int n, int n_heads);
    // L2 normalisation of rows of dim floats in place: for t < n and r < rows,
    // the row at x + t * stride + r * dim becomes x / sqrt(sum x^2 + eps),
    // computed as llama.cpp's Gated DeltaNet graph does: RMS-normalised with
    // eps / dim, then scaled by 1 / sqrt(dim).
    virtual void l2norm(float *x, int n, int rows, int dim, size_t stride, float eps);
    // y = rmsnorm(x) * w * silu(z) for rows of w.n_cols floats (the gated
    // RMSNorm of Gated DeltaNet's output); y may be x.
    virtual void gated_rmsnorm(const float *x, const Weight &w, const float *z, float eps, int rows, float *y);
    // The gated delta rule token by token (the recurrent form; decode).
    virtual void delta_net(const DeltaNetArgs &a);
    // The same in chunks of `chunk` tokens (the chunked / WY form: per chunk,
    // the triangular system of the chunk's writes is solved, then the outputs
    // and the state follow from matrix products). Equal to delta_net up to
    // rounding. A state narrower than F32 is rounded after every token, which
    // the chunked form cannot do: such a state runs the recurrent form.
    virtual void delta_net_chunked(const DeltaNetArgs &a, int chunk);
    // rows rows of width bytes from src (rows src_stride bytes apart) to dst
    // (dst_stride apart). The default copies row by row.
    virtual void copy_2d(void *dst, size_t dst_stride, const void *src, size_t src_stride, size_t rows, size_t width);
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
    // Whether its streams take recurrent states of this type (Stream::
    // supports_state_type; the planner asks before it chooses one).
    virtual bool supports_state_type(StateType t) const { return t == StateType::F32; }
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
