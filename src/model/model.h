// A loaded model: the GGUF mapping, hyper-parameters, weights on the backend,
// tokenizer and chat template. Immutable after load; shared by sessions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kv/kv_cache.h"
#include "kvfit.h"

namespace kvfit {

class GGUFFile;
class Tokenizer;

struct HParams {
    std::string arch;
    int n_vocab = 0;
    int n_embd = 0;
    int n_layer = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_ff = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-5f;
    RopeParams rope;
};

struct LayerWeights {
    Weight attn_norm;   // [n_embd]
    Weight wq;          // [n_head * head_dim][n_embd]
    Weight wk;          // [n_head_kv * head_dim][n_embd]
    Weight wv;          // [n_head_kv * head_dim][n_embd]
    Weight wo;          // [n_embd][n_head * head_dim]
    Weight ffn_norm;    // [n_embd]
    Weight ffn_gate;    // [n_ff][n_embd]
    Weight ffn_up;      // [n_ff][n_embd]
    Weight ffn_down;    // [n_embd][n_ff]
};

struct ModelWeights {
    Weight tok_embd;    // [n_vocab][n_embd]
    Weight output_norm; // [n_embd]
    Weight output;      // [n_vocab][n_embd]; the embedding table when tied
    std::vector<LayerWeights> layers;
};

class Model {
public:
    static std::unique_ptr<Model> load(const std::string &path, const kvfit_model_params &params);
    ~Model();

    const HParams &hparams() const { return hp_; }
    const ModelWeights &weights() const { return w_; }
    const Tokenizer &tokenizer() const { return *tok_; }
    const GGUFFile &file() const { return *file_; }
    Backend &backend() const { return *backend_; }
    bool vocab_only() const { return !backend_; }
    KVShape kv_shape() const { return {hp_.n_layer, hp_.n_head, hp_.n_head_kv, hp_.head_dim, hp_.rope.n_dims}; }

    const std::string &name() const { return name_; }
    const char *chat_template() const { return chat_template_; }
    const std::string &chat_default_system() const { return chat_default_system_; }
    uint64_t n_params() const { return n_params_; }
    uint64_t weight_bytes() const { return weight_bytes_; }

private:
    Model() = default;
    std::unique_ptr<GGUFFile> file_;
    std::unique_ptr<Tokenizer> tok_;
    std::unique_ptr<Backend> backend_;
    HParams hp_;
    ModelWeights w_;
    std::string name_;
    const char *chat_template_ = "chatml";
    std::string chat_default_system_;
    uint64_t n_params_ = 0;
    uint64_t weight_bytes_ = 0;
};

// Per-session activation buffers of the forward pass, on the session's stream.
struct ForwardBuffers {
    int max_tokens = 0;
    int32_t *ids = nullptr;  // [max_tokens]
    float *x = nullptr;      // [max_tokens][n_embd] residual stream
    float *xn = nullptr;     // [max_tokens][n_embd] normalised input
    float *q = nullptr;      // [max_tokens][n_head * head_dim]
    float *k = nullptr;      // [max_tokens][n_head_kv * head_dim]
    float *v = nullptr;      // [max_tokens][n_head_kv * head_dim]
    float *att = nullptr;    // [max_tokens][n_head * head_dim]
    float *proj = nullptr;   // [max_tokens][n_embd]
    float *gate = nullptr;   // [max_tokens][n_ff]
    float *up = nullptr;     // [max_tokens][n_ff]
    float *logits = nullptr; // [n_vocab] of the last token
    size_t bytes = 0;
};

// Rows of logits computed at once when every position's logits are wanted
// (perplexity), so the buffer stays small whatever the batch.
constexpr int kLogitRows = 32;

ForwardBuffers alloc_forward_buffers(const Model &m, Stream &s, int max_tokens);

// Runs n tokens (n <= bufs.max_tokens) at stream positions [pos0, pos0 + n)
// through the model, storing their K/V in the cache, and leaves the last
// token's logits in bufs.logits (device). With all_hidden, bufs.xn holds the
// final normalised hidden state of every token (for output_logits).
// Asynchronous until s.synchronize().
void forward(const Model &m, Stream &s, KVCache &cache, ForwardBuffers &bufs, const int32_t *tokens, int n,
             uint64_t pos0, bool all_hidden = false);

// logits ([n][n_vocab], device) of n <= kLogitRows normalised hidden rows.
void output_logits(const Model &m, Stream &s, const float *hidden, int n, float *logits);

}  // namespace kvfit
