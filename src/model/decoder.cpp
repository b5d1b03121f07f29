// The pre-norm decoder that llama, qwen2 and qwen3 share: blocks of RoPE GQA
// attention and a SwiGLU FFN, each behind an RMSNorm, with the variations
// DecoderOptions names. RoPE is applied by the attention memory.
#include "model/decoder.h"

#include "common.h"
#include "gguf/gguf.h"

namespace kvfit {

namespace {

struct DecoderLayer {
    Weight attn_norm;  // [n_embd]
    Weight wq;         // [n_head * head_dim][n_embd]
    Weight wk;         // [n_head_kv * head_dim][n_embd]
    Weight wv;         // [n_head_kv * head_dim][n_embd]
    Weight bq, bk, bv; // [n_head * head_dim], [n_head_kv * head_dim] x2 (qkv_bias)
    Weight q_norm;     // [head_dim] (qk_norm)
    Weight k_norm;     // [head_dim] (qk_norm)
    Weight wo;         // [n_embd][n_head * head_dim]
    Weight ffn_norm;   // [n_embd]
    Weight ffn_gate;   // [n_ff][n_embd]
    Weight ffn_up;     // [n_ff][n_embd]
    Weight ffn_down;   // [n_embd][n_ff]
};


class Decoder : public Architecture {
public:
    explicit Decoder(const DecoderOptions &o) : opt_(o) {}

    void read_hparams(const ArchMetadata &md, HParams &hp) override {
        read_transformer_hparams(md, hp, 2048, 1e-5);

        rope_.mode = opt_.rope_mode;
        rope_.n_dims = int(md.get_int("rope.dimension_count").value_or(hp.head_dim));
        if (rope_.n_dims <= 0 || rope_.n_dims > hp.head_dim || rope_.n_dims % 2)
            fail(KVFIT_E_FORMAT, "rope.dimension_count %d does not fit head dimension %d", rope_.n_dims, hp.head_dim);
        rope_.freq_base = float(md.get_float("rope.freq_base").value_or(10000.0));
        const std::string scaling = md.get_string("rope.scaling.type").value_or("none");
        const double factor = md.get_float("rope.scaling.factor").value_or(0.0);
        if (scaling == "linear" && factor > 0) rope_.freq_scale = float(1.0 / factor);
        else if (auto fs = md.get_float("rope.scale_linear")) rope_.freq_scale = float(1.0 / *fs);
        else if (scaling != "none" && scaling != "linear")
            fail(KVFIT_E_UNSUPPORTED, "RoPE scaling '%s' is not supported", scaling.c_str());
        hp_ = hp;
    }

    void bind_weights(WeightLoader &ld, const std::function<void(float)> &progress) override {
        const HParams &hp = hp_;
        const int64_t d = hp.n_embd, qd = int64_t(hp.n_head) * hp.head_dim, kvd = int64_t(hp.n_head_kv) * hp.head_dim;
        tok_embd_ = ld.get("token_embd.weight", d, hp.n_vocab);
        output_norm_ = ld.get_vector("output_norm.weight", d);
        output_ = ld.has("output.weight") ? ld.get("output.weight", d, hp.n_vocab) : tok_embd_;
        if (ld.has("rope_freqs.weight")) {
            const Weight rf = ld.get_vector("rope_freqs.weight", rope_.n_dims / 2);
            rope_.freq_factors = static_cast<const float *>(rf.data);
        }
        layers_.resize(size_t(hp.n_layer));
        for (int l = 0; l < hp.n_layer; l++) {
            const std::string p = "blk." + std::to_string(l) + ".";
            DecoderLayer &L = layers_[size_t(l)];
            L.attn_norm = ld.get_vector(p + "attn_norm.weight", d);
            L.wq = ld.get(p + "attn_q.weight", d, qd);
            L.wk = ld.get(p + "attn_k.weight", d, kvd);
            L.wv = ld.get(p + "attn_v.weight", d, kvd);
            if (opt_.qkv_bias) {
                L.bq = ld.get_vector(p + "attn_q.bias", qd);
                L.bk = ld.get_vector(p + "attn_k.bias", kvd);
                L.bv = ld.get_vector(p + "attn_v.bias", kvd);
            }
            if (opt_.qk_norm) {
                L.q_norm = ld.get_vector(p + "attn_q_norm.weight", hp.head_dim);
                L.k_norm = ld.get_vector(p + "attn_k_norm.weight", hp.head_dim);
            }
            L.wo = ld.get(p + "attn_output.weight", qd, d);
            L.ffn_norm = ld.get_vector(p + "ffn_norm.weight", d);
            L.ffn_gate = ld.get(p + "ffn_gate.weight", d, hp.n_ff);
            L.ffn_up = ld.get(p + "ffn_up.weight", d, hp.n_ff);
            L.ffn_down = ld.get(p + "ffn_down.weight", hp.n_ff, d);
            progress(float(l + 1) / float(hp.n_layer + 1));
        }
    }

    std::vector<LayerSpec> memory_layers() const override {
        return uniform_attention_layers(hp_.n_layer, hp_.n_head, hp_.n_head_kv, hp_.head_dim, rope_);
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

        const size_t d = size_t(hp_.n_embd);
        s.get_rows(tok_embd_, b.ids, n, b.x);
        for (int l = 0; l < hp_.n_layer; l++) {
            const DecoderLayer &L = layers_[size_t(l)];
            // attention block
            s.rmsnorm(b.x, L.attn_norm, hp_.rms_eps, n, b.xn);
            s.matmul(L.wq, b.xn, n, b.q);
            s.matmul(L.wk, b.xn, n, b.k);
            s.matmul(L.wv, b.xn, n, b.v);
            if (opt_.qkv_bias) {
                s.add_rows(b.q, static_cast<const float *>(L.bq.data), n, size_t(L.bq.n_cols));
                s.add_rows(b.k, static_cast<const float *>(L.bk.data), n, size_t(L.bk.n_cols));
                s.add_rows(b.v, static_cast<const float *>(L.bv.data), n, size_t(L.bv.n_cols));
            }
            if (opt_.qk_norm) {
                s.rmsnorm(b.q, L.q_norm, hp_.rms_eps, n * hp_.n_head, b.q);
                s.rmsnorm(b.k, L.k_norm, hp_.rms_eps, n * hp_.n_head_kv, b.k);
            }
            mem.attend(s, l, b.q, b.k, b.v, n, pos0, b.att);
            s.matmul(L.wo, b.att, n, b.proj);
            s.add(b.x, b.proj, size_t(n) * d);
            // feed-forward block
            s.rmsnorm(b.x, L.ffn_norm, hp_.rms_eps, n, b.xn);
            s.matmul(L.ffn_gate, b.xn, n, b.gate);
            s.matmul(L.ffn_up, b.xn, n, b.up);
            s.swiglu(b.gate, b.up, size_t(n) * hp_.n_ff, b.gate);
            s.matmul(L.ffn_down, b.gate, n, b.proj);
            s.add(b.x, b.proj, size_t(n) * d);
        }
        rmsnorm_logits(s, b, output_norm_, hp_.rms_eps, output_, n, size_t(d), all_hidden);
    }

    void output_logits(Stream &s, const float *hidden, int n, float *logits) const override {
        s.matmul(output_, hidden, n, logits);
    }

private:
    DecoderOptions opt_;
    HParams hp_;
    RopeParams rope_;
    Weight tok_embd_;     // [n_vocab][n_embd]
    Weight output_norm_;  // [n_embd]
    Weight output_;       // [n_vocab][n_embd]; the embedding table when tied
    std::vector<DecoderLayer> layers_;
};

}  // namespace

std::unique_ptr<Architecture> create_decoder(const DecoderOptions &o) { return std::make_unique<Decoder>(o); }

}  // namespace kvfit
