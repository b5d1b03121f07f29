// The interface every architecture implements, one file each under
// src/model/ (llama.cpp, ...). An architecture reads its hyper-parameters and
// binds its weights by the tensor names llama.cpp's converter writes, says
// what each layer keeps per session, and runs the forward pass of a batch.
// Model (model.h) does what is common: the GGUF file, the tokenizer, the chat
// template, the backend.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kv/memory.h"

namespace kvfit {

class GGUFFile;

// What every architecture reports about itself (kvfit_model_info, sizes).
struct HParams {
    std::string arch;
    int n_vocab = 0;
    int n_embd = 0;
    int n_layer = 0;
    int n_head = 0;     // of the attention layers
    int n_head_kv = 0;
    int head_dim = 0;
    int n_ff = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-5f;
};

// Metadata helpers for architectures: "<arch>.<key>".
class ArchMetadata {
public:
    ArchMetadata(const GGUFFile &f, const std::string &arch) : f_(f), arch_(arch) {}
    const GGUFFile &file() const { return f_; }
    std::string key(const char *k) const { return arch_ + "." + k; }
    // A required positive integer (KVFIT_E_FORMAT when missing or out of range).
    int64_t require_int(const char *key) const;
    std::optional<int64_t> get_int(const char *key) const;
    std::optional<double> get_float(const char *key) const;
    std::optional<std::string> get_string(const char *key) const;

private:
    const GGUFFile &f_;
    std::string arch_;
};

// Binds weights to the backend by tensor name, checking shapes and types.
class WeightLoader {
public:
    WeightLoader(const GGUFFile &f, Backend &b) : f_(f), b_(b) {}
    // A tensor that must exist with the given shape and a type kvfit computes with.
    Weight get(const std::string &name, int64_t ne0, int64_t ne1);
    // A 1-D float vector (norm weights): F32 on the device whatever the file stores.
    Weight get_vector(const std::string &name, int64_t n);
    // get_vector's floats with f applied to each (e.g. Gemma's 1 + w norms).
    Weight get_vector_mapped(const std::string &name, int64_t n, const std::function<float(float)> &f);
    // A float tensor of shape ne (ggml order, up to 4 dimensions; trailing
    // ones may be left out in the file), F32 on the device whatever the file
    // stores: n_cols = ne[0], n_rows = the product of the others.
    Weight get_floats(const std::string &name, std::initializer_list<int64_t> ne);
    bool has(const std::string &name) const;
    Backend &backend() const { return b_; }

private:
    const GGUFFile &f_;
    Backend &b_;
};

// The activation buffers of one session's forward pass; each architecture
// extends it with what its layers need.
struct ForwardBuffers {
    virtual ~ForwardBuffers() = default;
    int max_tokens = 0;
    int32_t *ids = nullptr;   // [max_tokens]
    float *x = nullptr;       // [max_tokens][n_embd] residual stream
    float *xn = nullptr;      // [max_tokens][n_embd] normalised input; after forward(all_hidden) the final hidden rows
    float *logits = nullptr;  // [n_vocab] of the last token
    size_t bytes = 0;
};

// The activations of a stack of attention + gated-FFN blocks, which every
// architecture here has.
struct TransformerBuffers : ForwardBuffers {
    float *q = nullptr;     // [max_tokens][n_head * head_dim]
    float *k = nullptr;     // [max_tokens][n_head_kv * head_dim]
    float *v = nullptr;     // [max_tokens][n_head_kv * head_dim]
    float *att = nullptr;   // [max_tokens][n_head * head_dim]
    float *proj = nullptr;  // [max_tokens][n_embd]
    float *gate = nullptr;  // [max_tokens][n_ff]
    float *up = nullptr;    // [max_tokens][n_ff]
};
std::unique_ptr<TransformerBuffers> alloc_transformer_buffers(Stream &s, const HParams &hp, int max_tokens);
// The widest activation row such a stack's matrix products read.
int64_t transformer_max_cols(const HParams &hp);
// The final RMSNorm and output projection of n rows of b.x (width d): the
// newest row's logits into b.logits; with all_hidden every row's normalised
// state stays in b.xn (for Architecture::output_logits), else only the newest
// row is normalised.
void rmsnorm_logits(Stream &s, ForwardBuffers &b, const Weight &norm, float eps, const Weight &output, int n,
                    size_t d, bool all_hidden);
// Reads and checks the hyper-parameters such a stack has under llama.cpp's
// usual keys (embedding_length, block_count, attention.head_count, ...).
void read_transformer_hparams(const ArchMetadata &md, HParams &hp, int default_ctx, double default_eps);

// Rows of logits computed at once when every position's logits are wanted
// (perplexity), so the buffer stays small whatever the batch.
constexpr int kLogitRows = 32;

class Architecture {
public:
    virtual ~Architecture() = default;
    // Reads and checks the hyper-parameters (no backend yet: cheap, and a
    // file that cannot run fails before any weight is touched).
    virtual void read_hparams(const ArchMetadata &md, HParams &hp) = 0;
    // Binds every weight; progress(f) after each layer.
    virtual void bind_weights(WeightLoader &ld, const std::function<void(float)> &progress) = 0;
    // What each layer keeps per session, in layer order.
    virtual std::vector<LayerSpec> memory_layers() const = 0;
    // The widest activation row a matrix product reads (stream scratch size).
    virtual int64_t max_cols() const = 0;
    virtual std::unique_ptr<ForwardBuffers> alloc_buffers(Stream &s, int max_tokens) const = 0;
    // Runs n tokens (n <= bufs.max_tokens) at stream positions [pos0, pos0 + n)
    // through the model, keeping what the layers remember in mem, and leaves
    // the last token's logits in bufs.logits (device). With all_hidden,
    // bufs.xn holds the final normalised hidden state of every token (for
    // output_logits). Asynchronous until s.synchronize().
    virtual void forward(Stream &s, SessionMemory &mem, ForwardBuffers &bufs, const int32_t *tokens, int n,
                         uint64_t pos0, bool all_hidden) const = 0;
    // logits ([n][n_vocab], device) of n <= kLogitRows final hidden rows.
    virtual void output_logits(Stream &s, const float *hidden, int n, float *logits) const = 0;
};

// The architecture named by general.architecture; nullptr if kvfit has none.
std::unique_ptr<Architecture> create_architecture(const std::string &name);
// "llama, ..." for messages.
std::string supported_architectures();

// One entry per architecture file (see arch_registry.cpp).
std::unique_ptr<Architecture> create_llama();
std::unique_ptr<Architecture> create_gemma3();
std::unique_ptr<Architecture> create_qwen2();
std::unique_ptr<Architecture> create_qwen3();
std::unique_ptr<Architecture> create_rwkv7();
std::unique_ptr<Architecture> create_qwen35();

}  // namespace kvfit
