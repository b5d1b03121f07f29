// What the transformer architectures share: their activation buffers and
// the hyper-parameters every such GGUF names the same way.
#include <algorithm>

#include "common.h"
#include "model/arch.h"

namespace kvfit {

std::unique_ptr<TransformerBuffers> alloc_transformer_buffers(Stream &s, const HParams &hp, int max_tokens) {
    auto b = std::make_unique<TransformerBuffers>();
    b->max_tokens = max_tokens;
    const size_t T = size_t(max_tokens);
    const size_t qd = size_t(hp.n_head) * hp.head_dim, kvd = size_t(hp.n_head_kv) * hp.head_dim;
    auto floats = [&](size_t n) {
        b->bytes += n * 4;
        return static_cast<float *>(s.alloc(n * 4));
    };
    b->ids = static_cast<int32_t *>(s.alloc(T * 4));
    b->bytes += T * 4;
    b->x = floats(T * hp.n_embd);
    b->xn = floats(T * hp.n_embd);
    b->q = floats(T * qd);
    b->k = floats(T * kvd);
    b->v = floats(T * kvd);
    b->att = floats(T * qd);
    b->proj = floats(T * hp.n_embd);
    b->gate = floats(T * hp.n_ff);
    b->up = floats(T * hp.n_ff);
    b->logits = floats(size_t(hp.n_vocab));
    return b;
}

void rmsnorm_logits(Stream &s, ForwardBuffers &b, const Weight &norm, float eps, const Weight &output, int n,
                    size_t d, bool all_hidden) {
    if (all_hidden) {
        s.rmsnorm(b.x, norm, eps, n, b.xn);
        s.matmul(output, b.xn + size_t(n - 1) * d, 1, b.logits);
        return;
    }
    s.rmsnorm(b.x + size_t(n - 1) * d, norm, eps, 1, b.xn);
    s.matmul(output, b.xn, 1, b.logits);
}

int64_t transformer_max_cols(const HParams &hp) {
    return std::max<int64_t>({hp.n_embd, hp.n_ff, int64_t(hp.n_head) * hp.head_dim});
}

void read_transformer_hparams(const ArchMetadata &md, HParams &hp, int default_ctx, double default_eps) {
    hp.n_embd = int(md.require_int("embedding_length"));
    hp.n_layer = int(md.require_int("block_count"));
    hp.n_head = int(md.require_int("attention.head_count"));
    hp.n_head_kv = int(md.get_int("attention.head_count_kv").value_or(hp.n_head));
    hp.n_ff = int(md.require_int("feed_forward_length"));
    hp.n_ctx_train = int(md.get_int("context_length").value_or(default_ctx));
    hp.head_dim = int(md.get_int("attention.key_length").value_or(hp.n_embd / hp.n_head));
    hp.rms_eps = float(md.get_float("attention.layer_norm_rms_epsilon").value_or(default_eps));
    if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv)
        fail(KVFIT_E_FORMAT, "%d attention heads cannot share %d KV heads", hp.n_head, hp.n_head_kv);
    if (hp.head_dim <= 0 || hp.head_dim > 512 || hp.head_dim % 2)
        fail(KVFIT_E_UNSUPPORTED, "head dimension %d is not supported (even, at most 512)", hp.head_dim);
    if (md.get_int("attention.value_length").value_or(hp.head_dim) != hp.head_dim)
        fail(KVFIT_E_UNSUPPORTED, "keys and values of different sizes are not supported");
    if (hp.n_layer > 4096 || hp.n_embd > (1 << 16) || hp.n_ff > (1 << 18) || hp.n_ctx_train <= 0)
        fail(KVFIT_E_FORMAT, "implausible model dimensions");
}

}  // namespace kvfit
