// Forward pass of the llama architecture (SmolLM2, Llama 2/3, TinyLlama,
// Mistral): pre-norm blocks of RoPE GQA attention and a SwiGLU FFN. RoPE is
// applied by the KV cache, which stores keys before rotation.
#include "common.h"
#include "model/model.h"

namespace kvfit {

void forward(const Model &m, Stream &s, KVCache &cache, ForwardBuffers &b, const int32_t *tokens, int n,
             uint64_t pos0, bool all_hidden) {
    const HParams &hp = m.hparams();
    const ModelWeights &w = m.weights();
    if (n <= 0 || n > b.max_tokens) fail(KVFIT_E_INTERNAL, "forward batch of %d tokens (max %d)", n, b.max_tokens);
    s.upload(b.ids, tokens, size_t(n) * 4);

    const size_t d = size_t(hp.n_embd);
    s.get_rows(w.tok_embd, b.ids, n, b.x);
    for (int l = 0; l < hp.n_layer; l++) {
        const LayerWeights &L = w.layers[size_t(l)];
        // attention block
        s.rmsnorm(b.x, L.attn_norm, hp.rms_eps, n, b.xn);
        s.matmul(L.wq, b.xn, n, b.q);
        s.matmul(L.wk, b.xn, n, b.k);
        s.matmul(L.wv, b.xn, n, b.v);
        cache.attend(s, l, b.q, b.k, b.v, n, pos0, b.att);
        s.matmul(L.wo, b.att, n, b.proj);
        s.add(b.x, b.proj, size_t(n) * d);
        // feed-forward block
        s.rmsnorm(b.x, L.ffn_norm, hp.rms_eps, n, b.xn);
        s.matmul(L.ffn_gate, b.xn, n, b.gate);
        s.matmul(L.ffn_up, b.xn, n, b.up);
        s.swiglu(b.gate, b.up, size_t(n) * hp.n_ff, b.gate);
        s.matmul(L.ffn_down, b.gate, n, b.proj);
        s.add(b.x, b.proj, size_t(n) * d);
    }
    if (all_hidden) {
        s.rmsnorm(b.x, w.output_norm, hp.rms_eps, n, b.xn);
        s.matmul(w.output, b.xn + size_t(n - 1) * d, 1, b.logits);
        return;
    }
    // Only the newest token's logits are needed for generation.
    s.rmsnorm(b.x + size_t(n - 1) * d, w.output_norm, hp.rms_eps, 1, b.xn);
    s.matmul(w.output, b.xn, 1, b.logits);
}

void output_logits(const Model &m, Stream &s, const float *hidden, int n, float *logits) {
    s.matmul(m.weights().output, hidden, n, logits);
}

}  // namespace kvfit
