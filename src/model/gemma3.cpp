// The gemma3 architecture (Gemma 3 text models): embeddings scaled by
// sqrt(n_embd); blocks whose attention and feed-forward outputs are RMS-normed
// again before the residual add; per-head RMSNorm of queries and keys; NeoX
// RoPE; a GELU-gated FFN; and local layers (5 of every 6 by default) that see
// only the model's sliding window, with their own RoPE base, besides global
// layers that see everything. The converter stores the norms' weights as the
// model uses them (1 + w), so plain RMSNorm applies.
#include <cmath>

#include "common.h"
#include "gguf/gguf.h"
#include "model/arch.h"

namespace kvfit {

namespace {

struct Gemma3Layer {
    Weight attn_norm;       // [n_embd]
    Weight wq;              // [n_head * head_dim][n_embd]
    Weight wk;              // [n_head_kv * head_dim][n_embd]
    Weight wv;              // [n_head_kv * head_dim][n_embd]
    Weight q_norm;          // [head_dim]
    Weight k_norm;          // [head_dim]
    Weight wo;              // [n_embd][n_head * head_dim]
    Weight attn_post_norm;  // [n_embd]
    Weight ffn_norm;        // [n_embd]
    Weight ffn_gate;        // [n_ff][n_embd]
    Weight ffn_up;          // [n_ff][n_embd]
    Weight ffn_down;        // [n_embd][n_ff]
    Weight ffn_post_norm;   // [n_embd]
};


// RoPE scaling as llama.cpp reads it: linear only.
float linear_freq_scale(const ArchMetadata &md) {
    const std::string scaling = md.get_string("rope.scaling.type").value_or("none");
    const double factor = md.get_float("rope.scaling.factor").value_or(0.0);
    if (scaling == "linear" && factor > 0) return float(1.0 / factor);
    if (scaling != "none" && scaling != "linear") fail(KVFIT_E_UNSUPPORTED, "RoPE scaling '%s' is not supported", scaling.c_str());
    return 1.0f;
}

class Gemma3 : public Architecture {
public:
    void read_hparams(const ArchMetadata &md, HParams &hp) override {
        read_transformer_hparams(md, hp, 32768, 1e-6);
        if (md.get_float("final_logit_softcapping").value_or(0.0) != 0.0)
            fail(KVFIT_E_UNSUPPORTED, "final logit soft-capping is not supported");

        // Global layers: the file's RoPE; local ones: their own base (10000
        // unless the file says), unscaled, as llama.cpp reads them.
        global_rope_.mode = local_rope_.mode = RopeMode::Neox;
        global_rope_.n_dims = local_rope_.n_dims = int(md.get_int("rope.dimension_count").value_or(hp.head_dim));
        if (global_rope_.n_dims <= 0 || global_rope_.n_dims > hp.head_dim || global_rope_.n_dims % 2)
            fail(KVFIT_E_FORMAT, "rope.dimension_count %d does not fit head dimension %d", global_rope_.n_dims, hp.head_dim);
        global_rope_.freq_base = float(md.get_float("rope.freq_base").value_or(10000.0));
        global_rope_.freq_scale = linear_freq_scale(md);
        local_rope_.freq_base = float(md.get_float("rope.freq_base_swa").value_or(10000.0));

        // The sliding window, on every layer but each n_pattern-th (llama.cpp's
        // default of 6 unless the file gives a pattern).
        window_ = uint32_t(md.get_int("attention.sliding_window").value_or(0));
        const int64_t pattern = md.get_int("attention.sliding_window_pattern").value_or(6);
        if (md.file().get_int_array(md.key("attention.sliding_window_pattern")))
            fail(KVFIT_E_UNSUPPORTED, "a per-layer sliding window pattern is not supported");
        if (window_ && (pattern < 1 || pattern > hp.n_layer + 1)) fail(KVFIT_E_FORMAT, "sliding window pattern %lld", (long long)pattern);
        local_.assign(size_t(hp.n_layer), false);
        for (int l = 0; l < hp.n_layer; l++) local_[size_t(l)] = window_ > 0 && l % pattern < pattern - 1;

        // Gemma 3 scales queries by 1 / sqrt(head_dim) (27B: 1 / sqrt(n_embd / n_head)).
        q_scale_ = hp.n_layer == 62 ? 1.0f / std::sqrt(float(hp.n_embd / hp.n_head)) : 1.0f / std::sqrt(float(hp.head_dim));
        embd_scale_ = std::sqrt(float(hp.n_embd));
        hp_ = hp;
    }

    void bind_weights(WeightLoader &ld, const std::function<void(float)> &progress) override {
        const HParams &hp = hp_;
        const int64_t d = hp.n_embd, hd = hp.head_dim, qd = int64_t(hp.n_head) * hd, kvd = int64_t(hp.n_head_kv) * hd;
        tok_embd_ = ld.get("token_embd.weight", d, hp.n_vocab);
        output_norm_ = ld.get_vector("output_norm.weight", d);
        output_ = ld.has("output.weight") ? ld.get("output.weight", d, hp.n_vocab) : tok_embd_;
        layers_.resize(size_t(hp.n_layer));
        for (int l = 0; l < hp.n_layer; l++) {
            const std::string p = "blk." + std::to_string(l) + ".";
            Gemma3Layer &L = layers_[size_t(l)];
            L.attn_norm = ld.get_vector(p + "attn_norm.weight", d);
            L.wq = ld.get(p + "attn_q.weight", d, qd);
            L.wk = ld.get(p + "attn_k.weight", d, kvd);
            L.wv = ld.get(p + "attn_v.weight", d, kvd);
            L.q_norm = ld.get_vector(p + "attn_q_norm.weight", hd);
            L.k_norm = ld.get_vector(p + "attn_k_norm.weight", hd);
            L.wo = ld.get(p + "attn_output.weight", qd, d);
            L.attn_post_norm = ld.get_vector(p + "post_attention_norm.weight", d);
            L.ffn_norm = ld.get_vector(p + "ffn_norm.weight", d);
            L.ffn_gate = ld.get(p + "ffn_gate.weight", d, hp.n_ff);
            L.ffn_up = ld.get(p + "ffn_up.weight", d, hp.n_ff);
            L.ffn_down = ld.get(p + "ffn_down.weight", hp.n_ff, d);
            L.ffn_post_norm = ld.get_vector(p + "post_ffw_norm.weight", d);
            progress(float(l + 1) / float(hp.n_layer + 1));
        }
    }

    std::vector<LayerSpec> memory_layers() const override {
        std::vector<LayerSpec> specs;
        for (int l = 0; l < hp_.n_layer; l++) {
            LayerSpec s;
            s.n_head = hp_.n_head;
            s.n_head_kv = hp_.n_head_kv;
            s.head_dim = hp_.head_dim;
            s.rope = local_[size_t(l)] ? local_rope_ : global_rope_;
            s.scale = 1.0f;  // the queries come scaled (see forward)
            s.native_window = local_[size_t(l)] ? window_ : 0;
            specs.push_back(s);
        }
        return specs;
    }

    int64_t max_cols() const override { return transformer_max_cols(hp_); }

    std::unique_ptr<ForwardBuffers> alloc_buffers(Stream &s, int max_tokens) const override {
        return alloc_transformer_buffers(s, hp_, max_tokens);
    }

    void forward(Stream &s, SessionMemory &mem, ForwardBuffers &fb, const int32_t *tokens, int n, uint64_t pos0,
                 bool all_hidden) const override {
        TransformerBuffers &b = static_cast<TransformerBuffers &>(fb);
        if (n <= 0 || n > b.max_tokens) fail(KVFIT_E_INTERNAL, "forward batch of %d tokens (max %d)", n, b.max_tokens);
        s.upload(b.ids, tokens, size_t(n) * 4);

        const size_t d = size_t(hp_.n_embd), hd = size_t(hp_.head_dim);
        const float eps = hp_.rms_eps;
        s.get_rows(tok_embd_, b.ids, n, b.x);
        s.scale(b.x, size_t(n) * d, embd_scale_);
        for (int l = 0; l < hp_.n_layer; l++) {
            const Gemma3Layer &L = layers_[size_t(l)];
            // attention block: q and k normed per head; q scaled here, before
            // RoPE (which the attention memory applies), where llama.cpp
            // scales it after: the same bits while the scale is a power of two
            // (1/16 for head_dim 256).
            s.rmsnorm(b.x, L.attn_norm, eps, n, b.xn);
            s.matmul(L.wq, b.xn, n, b.q);
            s.matmul(L.wk, b.xn, n, b.k);
            s.matmul(L.wv, b.xn, n, b.v);
            s.rmsnorm(b.q, L.q_norm, eps, n * hp_.n_head, b.q);
            s.rmsnorm(b.k, L.k_norm, eps, n * hp_.n_head_kv, b.k);
            s.scale(b.q, size_t(n) * size_t(hp_.n_head) * hd, q_scale_);
            mem.attend(s, l, b.q, b.k, b.v, n, pos0, b.att);
            s.matmul(L.wo, b.att, n, b.proj);
            s.rmsnorm(b.proj, L.attn_post_norm, eps, n, b.proj);
            s.add(b.x, b.proj, size_t(n) * d);
            // feed-forward block
            s.rmsnorm(b.x, L.ffn_norm, eps, n, b.xn);
            s.matmul(L.ffn_gate, b.xn, n, b.gate);
            s.matmul(L.ffn_up, b.xn, n, b.up);
            s.geglu(b.gate, b.up, size_t(n) * hp_.n_ff, b.gate);
            s.matmul(L.ffn_down, b.gate, n, b.proj);
            s.rmsnorm(b.proj, L.ffn_post_norm, eps, n, b.proj);
            s.add(b.x, b.proj, size_t(n) * d);
        }
        rmsnorm_logits(s, b, output_norm_, eps, output_, n, size_t(d), all_hidden);
    }

    void output_logits(Stream &s, const float *hidden, int n, float *logits) const override {
        s.matmul(output_, hidden, n, logits);
    }

private:
    HParams hp_;
    RopeParams global_rope_, local_rope_;
    uint32_t window_ = 0;
    std::vector<bool> local_;
    float q_scale_ = 1.0f, embd_scale_ = 1.0f;
    Weight tok_embd_;     // [n_vocab][n_embd]
    Weight output_norm_;  // [n_embd]
    Weight output_;       // [n_vocab][n_embd]; the embedding table when tied
    std::vector<Gemma3Layer> layers_;
};

}  // namespace

std::unique_ptr<Architecture> create_gemma3() { return std::make_unique<Gemma3>(); }

}  // namespace kvfit
