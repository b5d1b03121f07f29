// The rwkv7 architecture (RWKV-7 "Goose"), as llama.cpp's converter writes
// it: no attention and no positions; every layer is a time mix (a linear
// recurrence over a per-head state matrix, the "wkv7" rule) and a channel mix
// (a squared-ReLU FFN), each behind a LayerNorm and fed the token-shifted
// input. Per session and layer it keeps three fixed-size F32 buffers, planned
// as one recurrent layer: the time mix's and the channel mix's shifted rows
// (n_embd floats each) and the wkv state (n_head x head_size x head_size).
//
//   x = LayerNorm0(embedding)
//   per layer:
//     xa = LN1(x); mix_j = xa + (shift(xa) - xa) * lerp_j, j in r w k v a g
//     r = Wr mix_r; k = Wk mix_k; v = Wv mix_v
//     w = exp(-e^-1/2 sigmoid(w0 + W2 tanh(W1 mix_w)))     (decay)
//     a = sigmoid(a0 + A2 A1 mix_a); g = G2 sigmoid(G1 mix_g)
//     v = v + (v_first - v) sigmoid(v0 + V2 V1 mix_v)        (layers > 0; v_first: layer 0's v)
//     kk = l2norm(k * k_k) per head; k = k + (a - 1) (k * k_a)
//     y = wkv7(r, w, k, v, -kk, kk * a); y = GroupNorm(y) per head
//     y = (y + v sum_head(r k r_k)) g; x += Wo y
//     xf = LN2(x); x += Wvalue relu(Wkey (xf + (shift(xf) - xf) lerp_k))^2
//   logits = Wout LNout(x)
#include <algorithm>
#include <cmath>

#include "common.h"
#include "gguf/gguf.h"
#include "model/arch.h"

namespace kvfit {

namespace {

struct Rwkv7Layer {
    Weight attn_norm, attn_norm_b;      // [n_embd]
    Weight attn_norm_2, attn_norm_2_b;  // [n_embd]
    Weight lerp;                        // [6][n_embd] r w k v a g, F32
    Weight w0, w1, w2;                  // [n_embd], [lora_decay][n_embd], [n_embd][lora_decay]
    Weight a0, a1, a2;                  // iclr
    Weight v0, v1, v2;                  // value residual mix (not in layer 0)
    Weight g1, g2;                      // gate
    Weight k_k, k_a, r_k;               // [n_embd]
    Weight wr, wk, wv, wo;              // [n_embd][n_embd]
    Weight ln_x, ln_x_b;                // [n_embd]
    Weight ffn_lerp_k;                  // [n_embd]
    Weight ffn_key;                     // [n_ff][n_embd]
    Weight ffn_value;                   // [n_embd][n_ff]
};

struct Rwkv7Buffers : ForwardBuffers {
    float *mix = nullptr;      // [6][max_tokens][n_embd] shifted-and-mixed inputs
    float *r = nullptr, *w = nullptr, *k = nullptr, *v = nullptr, *a = nullptr, *g = nullptr;  // [T][n_embd]
    float *v_first = nullptr;  // [T][n_embd] layer 0's values
    float *vmix = nullptr;     // [T][n_embd]
    float *a_out = nullptr, *b_out = nullptr;  // [T][n_embd] the recurrence's a and b
    float *y = nullptr;        // [T][n_embd]
    float *lora = nullptr;     // [T][max lora rank]
    float *ffn = nullptr;      // [T][n_ff]
};

const float *fp(const Weight &w) { return static_cast<const float *>(w.data); }

class Rwkv7 : public Architecture {
public:
    void read_hparams(const ArchMetadata &md, HParams &hp) override {
        hp.n_embd = int(md.require_int("embedding_length"));
        hp.n_layer = int(md.require_int("block_count"));
        hp.n_ff = int(md.require_int("feed_forward_length"));
        hp.n_ctx_train = int(std::min<int64_t>(md.get_int("context_length").value_or(1048576), int64_t(1) << 30));
        head_size_ = int(md.require_int("wkv.head_size"));
        lora_decay_ = int(md.require_int("attention.decay_lora_rank"));
        lora_iclr_ = int(md.require_int("attention.iclr_lora_rank"));
        lora_mix_ = int(md.require_int("attention.value_residual_mix_lora_rank"));
        lora_gate_ = int(md.require_int("attention.gate_lora_rank"));
        eps_ = float(md.get_float("attention.layer_norm_epsilon").value_or(1e-5));
        if (!(eps_ > 0.0f) || eps_ > 1.0f) fail(KVFIT_E_FORMAT, "layer norm epsilon %g is out of range", double(eps_));
        if (auto shifts = md.get_int("token_shift_count"); shifts && *shifts != 2)
            fail(KVFIT_E_FORMAT, "token_shift_count %lld (rwkv7 has 2)", (long long)*shifts);
        if (hp.n_layer > 4096 || hp.n_embd > (1 << 16) || hp.n_ff > (1 << 18) || head_size_ > 1024)
            fail(KVFIT_E_FORMAT, "implausible model dimensions");
        if (hp.n_embd % head_size_)
            fail(KVFIT_E_FORMAT, "wkv.head_size %d does not divide the embedding length %d", head_size_, hp.n_embd);
        for (int r : {lora_decay_, lora_iclr_, lora_mix_, lora_gate_})
            if (r > hp.n_embd * 4) fail(KVFIT_E_FORMAT, "implausible low-rank size %d", r);
        n_head_ = hp.n_embd / head_size_;
        hp.n_head = hp.n_head_kv = n_head_;
        hp.head_dim = head_size_;
        hp.rms_eps = eps_;
        hp_ = hp;
    }

    void bind_weights(WeightLoader &ld, const std::function<void(float)> &progress) override {
        const HParams &hp = hp_;
        const int64_t d = hp.n_embd, V = hp.n_vocab;
        tok_embd_ = ld.get("token_embd.weight", d, V);
        tok_norm_ = ld.get_vector("token_embd_norm.weight", d);
        tok_norm_b_ = ld.get_vector("token_embd_norm.bias", d);
        output_norm_ = ld.get_vector("output_norm.weight", d);
        output_norm_b_ = ld.get_vector("output_norm.bias", d);
        output_ = ld.get("output.weight", d, V);
        layers_.resize(size_t(hp.n_layer));
        for (int l = 0; l < hp.n_layer; l++) {
            const std::string p = "blk." + std::to_string(l) + ".";
            Rwkv7Layer &L = layers_[size_t(l)];
            L.attn_norm = ld.get_vector(p + "attn_norm.weight", d);
            L.attn_norm_b = ld.get_vector(p + "attn_norm.bias", d);
            L.attn_norm_2 = ld.get_vector(p + "attn_norm_2.weight", d);
            L.attn_norm_2_b = ld.get_vector(p + "attn_norm_2.bias", d);
            L.lerp = ld.get_floats(p + "time_mix_lerp_fused.weight", {d, 1, 1, 6});
            L.w0 = ld.get_vector(p + "time_mix_w0.weight", d);
            L.w1 = ld.get(p + "time_mix_w1.weight", d, lora_decay_);
            L.w2 = ld.get(p + "time_mix_w2.weight", lora_decay_, d);
            L.a0 = ld.get_vector(p + "time_mix_a0.weight", d);
            L.a1 = ld.get(p + "time_mix_a1.weight", d, lora_iclr_);
            L.a2 = ld.get(p + "time_mix_a2.weight", lora_iclr_, d);
            if (l > 0) {  // layer 0's v tensors are placeholders, never used
                L.v0 = ld.get_vector(p + "time_mix_v0.weight", d);
                L.v1 = ld.get(p + "time_mix_v1.weight", d, lora_mix_);
                L.v2 = ld.get(p + "time_mix_v2.weight", lora_mix_, d);
            }
            L.g1 = ld.get(p + "time_mix_g1.weight", d, lora_gate_);
            L.g2 = ld.get(p + "time_mix_g2.weight", lora_gate_, d);
            L.k_k = ld.get_vector(p + "time_mix_k_k.weight", d);
            L.k_a = ld.get_vector(p + "time_mix_k_a.weight", d);
            L.r_k = ld.get_vector(p + "time_mix_r_k.weight", d);
            L.wr = ld.get(p + "time_mix_receptance.weight", d, d);
            L.wk = ld.get(p + "time_mix_key.weight", d, d);
            L.wv = ld.get(p + "time_mix_value.weight", d, d);
            L.wo = ld.get(p + "time_mix_output.weight", d, d);
            L.ln_x = ld.get_vector(p + "time_mix_ln.weight", d);
            L.ln_x_b = ld.get_vector(p + "time_mix_ln.bias", d);
            L.ffn_lerp_k = ld.get_vector(p + "channel_mix_lerp_k.weight", d);
            L.ffn_key = ld.get(p + "channel_mix_key.weight", d, hp.n_ff);
            L.ffn_value = ld.get(p + "channel_mix_value.weight", hp.n_ff, d);
            progress(float(l + 1) / float(hp.n_layer + 1));
        }
    }

    // Parts of each layer's state, in this order.
    enum Part { kAttShift = 0, kFfnShift = 1, kWkv = 2 };

    std::vector<LayerSpec> memory_layers() const override {
        std::vector<LayerSpec> specs;
        const uint64_t row = uint64_t(hp_.n_embd) * 4;
        const uint64_t wkv = uint64_t(n_head_) * uint64_t(head_size_) * uint64_t(head_size_) * 4;
        for (int l = 0; l < hp_.n_layer; l++) {
            LayerSpec s;
            s.kind = LayerSpec::Kind::Recurrent;
            s.state_parts = {row, row, wkv};
            s.narrow_part = kWkv;  // the wkv state may be kept in F16 / BF16
            specs.push_back(s);
        }
        return specs;
    }

    int64_t max_cols() const override {
        return std::max<int64_t>({hp_.n_embd, hp_.n_ff, lora_decay_, lora_iclr_, lora_mix_, lora_gate_});
    }

    std::unique_ptr<ForwardBuffers> alloc_buffers(Stream &s, int max_tokens) const override {
        auto b = std::make_unique<Rwkv7Buffers>();
        b->max_tokens = max_tokens;
        const size_t T = size_t(max_tokens), d = size_t(hp_.n_embd);
        const size_t lora = size_t(std::max({lora_decay_, lora_iclr_, lora_mix_, lora_gate_}));
        auto floats = [&](size_t n) {
            b->bytes += n * 4;
            return static_cast<float *>(s.alloc(n * 4));
        };
        b->ids = static_cast<int32_t *>(s.alloc(T * 4));
        b->bytes += T * 4;
        b->x = floats(T * d);
        b->xn = floats(T * d);
        b->mix = floats(6 * T * d);
        for (float **p : {&b->r, &b->w, &b->k, &b->v, &b->a, &b->g, &b->v_first, &b->vmix, &b->a_out, &b->b_out, &b->y})
            *p = floats(T * d);
        b->lora = floats(T * lora);
        b->ffn = floats(T * size_t(hp_.n_ff));
        b->logits = floats(size_t(hp_.n_vocab));
        return b;
    }

    void forward(Stream &s, SessionMemory &mem, ForwardBuffers &fb, const int32_t *tokens, int n, uint64_t,
                 bool all_hidden) const override {
        run(s, mem, static_cast<Rwkv7Buffers &>(fb), tokens, n, all_hidden);
    }

    void output_logits(Stream &s, const float *hidden, int n, float *logits) const override {
        s.matmul(output_, hidden, n, logits);
    }

private:
    // A low-rank projection: out = W2 f(W1 x), through the lora scratch.
    void lora(Stream &s, const Weight &w1, const Weight &w2, const float *x, int n, float *tmp, float *out,
              const Stream::Activation *f) const {
        s.matmul(w1, x, n, tmp);
        if (f) s.activate(*f, tmp, size_t(n) * size_t(w1.n_rows));
        s.matmul(w2, tmp, n, out);
    }

    void run(Stream &s, SessionMemory &mem, Rwkv7Buffers &b, const int32_t *tokens, int n, bool all_hidden) const {
        if (n <= 0 || n > b.max_tokens) fail(KVFIT_E_INTERNAL, "forward batch of %d tokens (max %d)", n, b.max_tokens);
        s.upload(b.ids, tokens, size_t(n) * 4);
        const int d = hp_.n_embd, H = n_head_, N = head_size_;
        const size_t nd = size_t(n) * size_t(d);
        const Stream::Activation tanh_f = Stream::Activation::Tanh, sigmoid_f = Stream::Activation::Sigmoid;

        s.get_rows(tok_embd_, b.ids, n, b.x);
        s.norm_affine(b.x, fp(tok_norm_), fp(tok_norm_b_), eps_, n, d, 1, b.x);
        for (int l = 0; l < hp_.n_layer; l++) {
            const Rwkv7Layer &L = layers_[size_t(l)];
            RecurrentMemory &st = mem.recurrent(l);
            // time mix
            s.norm_affine(b.x, fp(L.attn_norm), fp(L.attn_norm_b), eps_, n, d, 1, b.xn);
            s.token_shift_mix(b.xn, st.f32(kAttShift), fp(L.lerp), 6, n, d, b.mix);
            const float *xr = b.mix, *xw = b.mix + nd, *xk = b.mix + 2 * nd, *xv = b.mix + 3 * nd,
                        *xa = b.mix + 4 * nd, *xg = b.mix + 5 * nd;
            s.matmul(L.wr, xr, n, b.r);
            lora(s, L.w1, L.w2, xw, n, b.lora, b.w, &tanh_f);
            s.matmul(L.wk, xk, n, b.k);
            s.matmul(L.wv, xv, n, b.v);
            if (l > 0) lora(s, L.v1, L.v2, xv, n, b.lora, b.vmix, nullptr);
            lora(s, L.a1, L.a2, xa, n, b.lora, b.a, nullptr);
            lora(s, L.g1, L.g2, xg, n, b.lora, b.g, &sigmoid_f);
            s.rwkv7_prepare(b.w, fp(L.w0), b.a, fp(L.a0), b.v, b.v_first, l > 0 ? b.vmix : nullptr,
                            l > 0 ? fp(L.v0) : nullptr, b.k, fp(L.k_k), fp(L.k_a), n, H, N, b.a_out, b.b_out);
            if (l == 0) s.copy(b.v_first, b.v, nd * 4);
            if (st.part_type(kWkv) == StateType::F32)
                s.wkv7(b.r, b.w, b.k, b.v, b.a_out, b.b_out, n, H, N, st.f32(kWkv), b.y);
            else
                s.wkv7_typed(b.r, b.w, b.k, b.v, b.a_out, b.b_out, n, H, N, st.part_type(kWkv), st.part(kWkv), b.y);
            s.norm_affine(b.y, fp(L.ln_x), fp(L.ln_x_b), 64e-5f, n, d, H, b.y);
            s.rwkv7_bonus_gate(b.y, b.r, b.k, b.v, fp(L.r_k), b.g, n, H, N);
            s.matmul(L.wo, b.y, n, b.xn);
            s.add(b.x, b.xn, nd);
            // channel mix
            s.norm_affine(b.x, fp(L.attn_norm_2), fp(L.attn_norm_2_b), eps_, n, d, 1, b.xn);
            s.token_shift_mix(b.xn, st.f32(kFfnShift), fp(L.ffn_lerp_k), 1, n, d, b.mix);
            s.matmul(L.ffn_key, b.mix, n, b.ffn);
            s.activate(Stream::Activation::ReluSquare, b.ffn, size_t(n) * size_t(hp_.n_ff));
            s.matmul(L.ffn_value, b.ffn, n, b.xn);
            s.add(b.x, b.xn, nd);
        }
        if (all_hidden) {
            s.norm_affine(b.x, fp(output_norm_), fp(output_norm_b_), eps_, n, d, 1, b.xn);
            s.matmul(output_, b.xn + size_t(n - 1) * size_t(d), 1, b.logits);
            return;
        }
        s.norm_affine(b.x + size_t(n - 1) * size_t(d), fp(output_norm_), fp(output_norm_b_), eps_, 1, d, 1, b.xn);
        s.matmul(output_, b.xn, 1, b.logits);
    }

    HParams hp_;
    int n_head_ = 0, head_size_ = 0;
    int lora_decay_ = 0, lora_iclr_ = 0, lora_mix_ = 0, lora_gate_ = 0;
    float eps_ = 1e-5f;
    Weight tok_embd_, tok_norm_, tok_norm_b_;
    Weight output_norm_, output_norm_b_, output_;
    std::vector<Rwkv7Layer> layers_;
};

}  // namespace

std::unique_ptr<Architecture> create_rwkv7() { return std::make_unique<Rwkv7>(); }

}  // namespace kvfit
