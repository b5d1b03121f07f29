// The qwen35 architecture (Qwen3.5 dense hybrid, as llama.cpp's converter
// writes it): most layers are Gated DeltaNet layers (linear attention with a
// fixed-size state per session), every full_attention_interval-th layer
// (or those attention.recurrent_layers marks false) a gated full-attention
// layer; every layer is followed by a SwiGLU FFN behind post_attention_norm.
//
// Gated DeltaNet layer (n tokens): one projection gives the mixed q|k|v
// channels, another the output gate z; a short causal convolution (kernel
// ssm.conv_kernel, with its state) and SiLU over q|k|v; q and k
// L2-normalised per head; per value head the decay g = softplus(alpha +
// dt_bias) * ssm_a (ssm_a = -exp(A_log)) and the write strength beta =
// sigmoid(.); the delta rule S <- exp(g) S (I - beta k k^T) + beta v k^T,
// output S q / sqrt(head_dim) (Stream::delta_net); then RMSNorm(o) * w *
// silu(z) per head and the output projection.
//
// Attention layer: attn_q gives each head's query and output gate side by
// side; per-head RMSNorm of q and k; RoPE on the first rope.dimension_count
// dimensions of each head (NeoX pairs; Qwen3.5's interleaved M-RoPE, which
// for text gives every section the same position, so it is plain NeoX RoPE
// over those dimensions); attention over the session's cache; the output
// multiplied by sigmoid(gate) before attn_output.
//
// The order of operations is llama.cpp's, so the CPU backend gives its bits.
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "model/arch.h"

namespace kvfit {

namespace {

struct Qwen35Layer {
    bool recurrent = false;
    Weight attn_norm, post_norm;          // [n_embd]
    // attention
    Weight wq;                            // [n_head * head_dim * 2][n_embd]: per head q, then gate
    Weight wk, wv;                        // [n_head_kv * head_dim][n_embd]
    Weight q_norm, k_norm;                // [head_dim]
    Weight wo;                            // [n_embd][n_head * head_dim]
    // Gated DeltaNet
    Weight wqkv;                          // [conv_dim][n_embd]
    Weight wz;                            // [value_dim][n_embd] (attn_gate)
    Weight conv;                          // [conv_dim][conv_kernel] F32
    Weight dt_bias, ssm_a;                // [n_v_heads]
    Weight w_beta, w_alpha;               // [n_v_heads][n_embd]
    Weight ssm_norm;                      // [head_v_dim]
    Weight ssm_out;                       // [n_embd][value_dim]
    // FFN
    Weight ffn_gate, ffn_up;              // [n_ff][n_embd]
    Weight ffn_down;                      // [n_embd][n_ff]
};

struct Qwen35Buffers : TransformerBuffers {
    float *qfull = nullptr;   // [T][n_head * head_dim * 2]
    float *agate = nullptr;   // [T][n_head * head_dim]
    float *qkv = nullptr;     // [T][conv_dim]
    float *conv = nullptr;    // [T][conv_dim]
    float *z = nullptr;       // [T][value_dim]
    float *dn = nullptr;      // [T][value_dim]
    float *alpha = nullptr;   // [T][n_v_heads]
    float *beta = nullptr;    // [T][n_v_heads]
};

class Qwen35 : public Architecture {
public:
    void read_hparams(const ArchMetadata &md, HParams &hp) override {
        read_transformer_hparams(md, hp, 262144, 1e-6);
        conv_kernel_ = int(md.require_int("ssm.conv_kernel"));
        dk_ = int(md.require_int("ssm.state_size"));
        hk_ = int(md.require_int("ssm.group_count"));
        hv_ = int(md.require_int("ssm.time_step_rank"));
        const int64_t inner = md.require_int("ssm.inner_size");
        if (inner % hv_ || inner / hv_ != dk_)
            fail(KVFIT_E_UNSUPPORTED, "Gated DeltaNet value heads of %lld (inner size %lld over %d heads) differ from the key heads of %d",
                 (long long)(inner / hv_), (long long)inner, hv_, dk_);
        if (hv_ % hk_) fail(KVFIT_E_FORMAT, "%d value heads cannot share %d key heads", hv_, hk_);
        if (conv_kernel_ < 2 || conv_kernel_ > 64 || dk_ > 1024 || hv_ > 1024)
            fail(KVFIT_E_UNSUPPORTED, "Gated DeltaNet shape not supported (conv kernel %d, state %d, %d heads)", conv_kernel_, dk_, hv_);
        key_dim_ = int64_t(dk_) * hk_;
        value_dim_ = int64_t(dk_) * hv_;
        conv_dim_ = 2 * key_dim_ + value_dim_;

        // which layers are recurrent
        recurrent_.assign(size_t(hp.n_layer), false);
        if (auto arr = md.file().get_int_array(md.key("attention.recurrent_layers"))) {
            if (arr->size() < size_t(hp.n_layer)) fail(KVFIT_E_FORMAT, "attention.recurrent_layers has %zu entries for %d layers", arr->size(), hp.n_layer);
            for (int l = 0; l < hp.n_layer; l++) recurrent_[size_t(l)] = (*arr)[size_t(l)] != 0;
        } else {
            const int64_t interval = md.get_int("full_attention_interval").value_or(4);
            if (interval < 1) fail(KVFIT_E_FORMAT, "full_attention_interval %lld", (long long)interval);
            for (int l = 0; l < hp.n_layer; l++) recurrent_[size_t(l)] = (l + 1) % interval != 0;
        }

        rope_.mode = RopeMode::Neox;
        rope_.n_dims = int(md.get_int("rope.dimension_count").value_or(hp.head_dim));
        if (rope_.n_dims <= 0 || rope_.n_dims > hp.head_dim || rope_.n_dims % 2)
            fail(KVFIT_E_FORMAT, "rope.dimension_count %d does not fit head dimension %d", rope_.n_dims, hp.head_dim);
        rope_.freq_base = float(md.get_float("rope.freq_base").value_or(10000000.0));
        const std::string scaling = md.get_string("rope.scaling.type").value_or("none");
        if (scaling != "none") fail(KVFIT_E_UNSUPPORTED, "RoPE scaling '%s' is not supported for qwen35", scaling.c_str());
        // Interleaved M-RoPE: pair i (i < n_dims / 2) takes the position of
        // section i % 3 while i < 3 * sections[i % 3], else the fourth
        // (always 0 for text: no rotation). Text gives the first three the
        // same position, so this is NeoX RoPE if no pair falls to the fourth.
        if (auto sec = md.file().get_int_array(md.key("rope.dimension_sections"))) {
            if (sec->size() < 3) fail(KVFIT_E_FORMAT, "rope.dimension_sections has %zu entries", sec->size());
            int64_t total = 0;
            for (int64_t v : *sec) total += v;
            if (total <= 0 || total > hp.head_dim) fail(KVFIT_E_FORMAT, "rope.dimension_sections sum to %lld", (long long)total);
            for (int i = 0; i < rope_.n_dims / 2; i++) {
                const int sector = int(i % total);
                if (sector >= 3 * (*sec)[size_t(sector % 3)])
                    fail(KVFIT_E_UNSUPPORTED, "rope.dimension_sections leave rotated pair %d unrotated for text; not supported", i);
            }
        }
        chunked_prefill_ = [] {
            const char *e = std::getenv("KVFIT_DELTA_SCAN");
            return e && !std::strcmp(e, "chunked");
        }();
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
            Qwen35Layer &L = layers_[size_t(l)];
            L.recurrent = recurrent_[size_t(l)];
            L.attn_norm = ld.get_vector(p + "attn_norm.weight", d);
            L.post_norm = ld.get_vector(p + "post_attention_norm.weight", d);
            if (L.recurrent) {
                L.wqkv = ld.get(p + "attn_qkv.weight", d, conv_dim_);
                L.wz = ld.get(p + "attn_gate.weight", d, value_dim_);
                L.conv = ld.get(p + "ssm_conv1d.weight", conv_kernel_, conv_dim_);
                if (L.conv.type != TYPE_F32)
                    fail(KVFIT_E_UNSUPPORTED, "tensor '%sssm_conv1d.weight' must be F32 (as llama.cpp's converter writes it)", p.c_str());
                L.dt_bias = ld.get_vector(p + "ssm_dt.bias", hv_);
                L.ssm_a = ld.get_vector(p + "ssm_a", hv_);
                L.w_beta = ld.get(p + "ssm_beta.weight", d, hv_);
                L.w_alpha = ld.get(p + "ssm_alpha.weight", d, hv_);
                L.ssm_norm = ld.get_vector(p + "ssm_norm.weight", dk_);
                L.ssm_out = ld.get(p + "ssm_out.weight", value_dim_, d);
            } else {
                L.wq = ld.get(p + "attn_q.weight", d, 2 * qd);
                L.wk = ld.get(p + "attn_k.weight", d, kvd);
                L.wv = ld.get(p + "attn_v.weight", d, kvd);
                L.q_norm = ld.get_vector(p + "attn_q_norm.weight", hd);
                L.k_norm = ld.get_vector(p + "attn_k_norm.weight", hd);
                L.wo = ld.get(p + "attn_output.weight", qd, d);
            }
            L.ffn_gate = ld.get(p + "ffn_gate.weight", d, hp.n_ff);
            L.ffn_up = ld.get(p + "ffn_up.weight", d, hp.n_ff);
            L.ffn_down = ld.get(p + "ffn_down.weight", hp.n_ff, d);
            progress(float(l + 1) / float(hp.n_layer + 1));
        }
    }

    std::vector<LayerSpec> memory_layers() const override {
        std::vector<LayerSpec> specs;
        for (int l = 0; l < hp_.n_layer; l++) {
            LayerSpec s;
            if (recurrent_[size_t(l)]) {
                s.kind = LayerSpec::Kind::Recurrent;
                // part 0: the convolution's last kernel - 1 inputs; part 1:
                // the delta-rule state of every value head
                s.state_parts = {uint64_t(conv_kernel_ - 1) * uint64_t(conv_dim_) * 4,
                                 uint64_t(hv_) * uint64_t(dk_) * uint64_t(dk_) * 4};
                s.narrow_part = 1;  // the delta-rule state may be kept in F16 / BF16
            } else {
                s.n_head = hp_.n_head;
                s.n_head_kv = hp_.n_head_kv;
                s.head_dim = hp_.head_dim;
                s.rope = rope_;
            }
            specs.push_back(s);
        }
        return specs;
    }

    int64_t max_cols() const override { return std::max<int64_t>(transformer_max_cols(hp_), value_dim_); }

    std::unique_ptr<ForwardBuffers> alloc_buffers(Stream &s, int max_tokens) const override {
        auto b = std::make_unique<Qwen35Buffers>();
        std::unique_ptr<TransformerBuffers> t = alloc_transformer_buffers(s, hp_, max_tokens);
        static_cast<TransformerBuffers &>(*b) = *t;
        const size_t T = size_t(max_tokens), qd = size_t(hp_.n_head) * size_t(hp_.head_dim);
        auto floats = [&](size_t n) {
            b->bytes += n * 4;
            return static_cast<float *>(s.alloc(n * 4));
        };
        b->qfull = floats(T * 2 * qd);
        b->agate = floats(T * qd);
        b->qkv = floats(T * size_t(conv_dim_));
        b->conv = floats(T * size_t(conv_dim_));
        b->z = floats(T * size_t(value_dim_));
        b->dn = floats(T * size_t(value_dim_));
        b->alpha = floats(T * size_t(hv_));
        b->beta = floats(T * size_t(hv_));
        return b;
    }

    void forward(Stream &s, SessionMemory &mem, ForwardBuffers &fb, const int32_t *tokens, int n, uint64_t pos0,
                 bool all_hidden) const override {
        Qwen35Buffers &b = static_cast<Qwen35Buffers &>(fb);
        if (n <= 0 || n > b.max_tokens) fail(KVFIT_E_INTERNAL, "forward batch of %d tokens (max %d)", n, b.max_tokens);
        s.upload(b.ids, tokens, size_t(n) * 4);
        const size_t d = size_t(hp_.n_embd), hd = size_t(hp_.head_dim);
        const float eps = hp_.rms_eps;
        s.get_rows(tok_embd_, b.ids, n, b.x);
        for (int l = 0; l < hp_.n_layer; l++) {
            const Qwen35Layer &L = layers_[size_t(l)];
            s.rmsnorm(b.x, L.attn_norm, eps, n, b.xn);
            if (L.recurrent) delta_block(s, mem, b, L, l, n);
            else attention_block(s, mem, b, L, l, n, pos0);
            s.add(b.x, b.proj, size_t(n) * d);
            // feed-forward block
            s.rmsnorm(b.x, L.post_norm, eps, n, b.xn);
            s.matmul(L.ffn_gate, b.xn, n, b.gate);
            s.matmul(L.ffn_up, b.xn, n, b.up);
            s.swiglu(b.gate, b.up, size_t(n) * hp_.n_ff, b.gate);
            s.matmul(L.ffn_down, b.gate, n, b.proj);
            s.add(b.x, b.proj, size_t(n) * d);
        }
        (void)hd;
        rmsnorm_logits(s, b, output_norm_, eps, output_, n, size_t(d), all_hidden);
    }

    void output_logits(Stream &s, const float *hidden, int n, float *logits) const override {
        s.matmul(output_, hidden, n, logits);
    }

private:
    // b.xn (normalised input) -> b.proj (the layer's output before the residual add)
    void delta_block(Stream &s, SessionMemory &mem, Qwen35Buffers &b, const Qwen35Layer &L, int l, int n) const {
        RecurrentMemory &rm = mem.recurrent(l);
        float *conv_state = rm.f32(0);
        s.matmul(L.wqkv, b.xn, n, b.qkv);
        s.matmul(L.wz, b.xn, n, b.z);
        s.matmul(L.w_beta, b.xn, n, b.beta);
        s.matmul(L.w_alpha, b.xn, n, b.alpha);
        s.delta_gates(b.alpha, b.beta, static_cast<const float *>(L.dt_bias.data), static_cast<const float *>(L.ssm_a.data), n, hv_);
        s.ssm_conv(b.qkv, n, int(conv_dim_), conv_kernel_, static_cast<const float *>(L.conv.data), conv_state, b.conv);
        s.silu(b.conv, size_t(n) * size_t(conv_dim_), b.conv);
        // q and k heads are the first 2 * hk rows of each token's channels
        s.l2norm(b.conv, n, 2 * hk_, dk_, size_t(conv_dim_), hp_.rms_eps);
        DeltaNetArgs a;
        a.n = n;
        a.n_k_heads = hk_;
        a.n_v_heads = hv_;
        a.head_dim = dk_;
        a.q = b.conv;
        a.k = b.conv + key_dim_;
        a.v = b.conv + 2 * key_dim_;
        a.qk_stride = a.v_stride = size_t(conv_dim_);
        a.g = b.alpha;
        a.beta = b.beta;
        a.state = static_cast<float *>(rm.part(1));  // F32, or F16 / BF16 values (DeltaNetArgs)
        a.state_type = rm.part_type(1);
        a.out = b.dn;
        a.scale = 1.0f / std::sqrt(float(dk_));
        // (a narrower state runs the recurrent form: it is rounded per token)
        if (chunked_prefill_ && n > 1 && a.state_type == StateType::F32) s.delta_net_chunked(a, kDeltaChunk);
        else s.delta_net(a);
        s.gated_rmsnorm(b.dn, L.ssm_norm, b.z, hp_.rms_eps, n * hv_, b.dn);
        s.matmul(L.ssm_out, b.dn, n, b.proj);
    }

    void attention_block(Stream &s, SessionMemory &mem, Qwen35Buffers &b, const Qwen35Layer &L, int l, int n,
                         uint64_t pos0) const {
        const size_t hd = size_t(hp_.head_dim), rows = size_t(n) * size_t(hp_.n_head);
        s.matmul(L.wq, b.xn, n, b.qfull);
        s.copy_2d(b.q, hd * 4, b.qfull, 2 * hd * 4, rows, hd * 4);
        s.copy_2d(b.agate, hd * 4, b.qfull + hd, 2 * hd * 4, rows, hd * 4);
        s.matmul(L.wk, b.xn, n, b.k);
        s.matmul(L.wv, b.xn, n, b.v);
        s.rmsnorm(b.q, L.q_norm, hp_.rms_eps, n * hp_.n_head, b.q);
        s.rmsnorm(b.k, L.k_norm, hp_.rms_eps, n * hp_.n_head_kv, b.k);
        mem.attend(s, l, b.q, b.k, b.v, n, pos0, b.att);
        s.sigmoid_mul(b.att, b.agate, rows * hd);
        s.matmul(L.wo, b.att, n, b.proj);
    }

    static constexpr int kDeltaChunk = 64;
    HParams hp_;
    RopeParams rope_;
    int conv_kernel_ = 0, dk_ = 0, hk_ = 0, hv_ = 0;
    int64_t key_dim_ = 0, value_dim_ = 0, conv_dim_ = 0;
    std::vector<bool> recurrent_;
    bool chunked_prefill_ = false;
    Weight tok_embd_, output_norm_, output_;
    std::vector<Qwen35Layer> layers_;
};

}  // namespace

std::unique_ptr<Architecture> create_qwen35() { return std::make_unique<Qwen35>(); }

}  // namespace kvfit
