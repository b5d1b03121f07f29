#include "session.h"

#include <algorithm>
#include <thread>

#include "common.h"
#include "sampler.h"
#include "tokenizer/tokenizer.h"

namespace kvfit {

namespace {

int default_threads() {
    unsigned hc = std::thread::hardware_concurrency();
    return int(std::clamp(hc, 1u, 16u));
}

}  // namespace

Session::Session(const Model &model, const kvfit_session_params &p) : model_(model) {
    if (model.vocab_only()) fail(KVFIT_E_ARG, "the model was loaded with vocab_only; sessions need weights");
    const HParams &hp = model.hparams();
    uint32_t n_ctx = p.n_ctx ? p.n_ctx : uint32_t(hp.n_ctx_train);
    if (n_ctx > (1u << 24)) fail(KVFIT_E_ARG, "n_ctx %u is too large", n_ctx);
    n_batch_ = int(p.n_batch ? std::min<uint32_t>(p.n_batch, 4096) : 512);
    n_batch_ = std::min<int>(n_batch_, int(n_ctx));
    int n_threads = p.n_threads > 0 ? std::min(p.n_threads, 256) : default_threads();
    if (p.n_threads < 0) fail(KVFIT_E_ARG, "n_threads must be >= 0 (0 = all cores), got %d", p.n_threads);

    const KVShape shape = model.kv_shape();
    const uint64_t need = 2ull * n_ctx * uint64_t(shape.n_layer) * shape.n_head_kv * shape.head_dim * sizeof(uint16_t);
    if (p.kv_budget_bytes && need > p.kv_budget_bytes)
        fail(KVFIT_E_BUDGET,
             "a full-precision cache of %u tokens needs %llu bytes, more than the budget of %llu bytes "
             "(lower n_ctx, or raise kv_budget_bytes to at least %llu)",
             n_ctx, (unsigned long long)need, (unsigned long long)p.kv_budget_bytes, (unsigned long long)need);

    const int64_t max_cols = std::max<int64_t>({hp.n_embd, hp.n_ff, int64_t(hp.n_head) * hp.head_dim});
    stream_ = model.backend().create_stream(n_threads, n_batch_, max_cols, int(n_ctx));
    cache_ = std::make_unique<PlainKVCache>(*stream_, shape, n_ctx);
    bufs_ = alloc_forward_buffers(model, *stream_, n_batch_);
    logits_.resize(size_t(hp.n_vocab));
}

void Session::reset() {
    n_past_ = 0;
    has_logits_ = false;
}

void Session::prefill(const int32_t *tokens, size_t n) {
    if (n == 0) return;
    if (!tokens) fail(KVFIT_E_ARG, "tokens is NULL");
    const int32_t n_vocab = model_.hparams().n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail(KVFIT_E_TOKEN, "token %d at index %zu is outside the vocabulary [0, %d)", tokens[i], i, n_vocab);
    if (n_past_ + n > n_ctx())
        fail(KVFIT_E_CONTEXT_FULL, "%zu tokens do not fit: the session holds %llu of %u tokens", n,
             (unsigned long long)n_past_, n_ctx());
    for (size_t done = 0; done < n;) {
        const int c = int(std::min<size_t>(size_t(n_batch_), n - done));
        forward(model_, *stream_, *cache_, bufs_, tokens + done, c, uint32_t(n_past_));
        n_past_ += uint64_t(c);
        done += size_t(c);
    }
    stream_->download(logits_.data(), bufs_.logits, logits_.size() * sizeof(float));
    stream_->synchronize();
    has_logits_ = true;
}

const std::vector<float> &Session::logits() const {
    if (!has_logits_) fail(KVFIT_E_STATE, "no logits yet: prefill or decode a token first");
    return logits_;
}

void Session::generate(const int32_t *prompt, size_t n_prompt, Sampler *sampler, const kvfit_generate_params &gp,
                       kvfit_generate_result &result) {
    result.n_generated = 0;
    result.stop_reason = KVFIT_STOP_LENGTH;
    if (n_prompt > 0) {
        prefill(prompt, n_prompt);
        if (sampler)
            for (size_t i = 0; i < n_prompt; i++) sampler->accept(prompt[i]);
    } else if (!has_logits_) {
        fail(KVFIT_E_STATE, "empty prompt and no logits to continue from");
    }
    // Every generated token except an end-of-generation one is appended to the
    // session, so after this call the session holds prompt + output and can
    // continue (a chat's next turn) from there.
    const Tokenizer &tok = model_.tokenizer();
    const int32_t n_vocab = model_.hparams().n_vocab;
    Utf8Stream utf8;
    while (result.n_generated < gp.max_tokens) {
        if (n_past_ >= n_ctx()) {
            result.stop_reason = KVFIT_STOP_CONTEXT;
            break;
        }
        const int32_t t = sampler ? sampler->sample(logits_.data(), n_vocab) : argmax(logits_.data(), n_vocab);
        if (tok.is_eog(t)) {
            result.stop_reason = KVFIT_STOP_EOG;
            break;
        }
        if (sampler) sampler->accept(t);
        prefill(&t, 1);
        result.n_generated++;
        if (gp.on_token) {
            std::string text = utf8.push(tok.token_to_piece(t, gp.render_special));
            if (!gp.on_token(t, text.data(), text.size(), gp.user_data)) {
                result.stop_reason = KVFIT_STOP_CALLBACK;
                break;
            }
        }
    }
    std::string rest = utf8.flush();
    if (gp.on_token && !rest.empty()) gp.on_token(-1, rest.data(), rest.size(), gp.user_data);
}

}  // namespace kvfit
