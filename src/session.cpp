#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
    if (p.n_threads < 0) fail(KVFIT_E_ARG, "n_threads must be >= 0 (0 = all cores), got %d", p.n_threads);
    const HParams &hp = model.hparams();
    const KVShape shape = model.kv_shape();
    const KVPlan plan = plan_kv(shape, p, uint32_t(hp.n_ctx_train));
    // A streaming batch may not exceed the window (its tokens must not evict
    // each other before they are attended); a dense one, the capacity.
    n_batch_ = int(p.n_batch ? std::min<uint32_t>(p.n_batch, 4096) : 512);
    n_batch_ = std::min<int>(n_batch_, int(plan.layers[0].n_window));
    const int n_threads = p.n_threads > 0 ? std::min(p.n_threads, 256) : default_threads();

    const int64_t max_cols = std::max<int64_t>({hp.n_embd, hp.n_ff, int64_t(hp.n_head) * hp.head_dim});
    stream_ = model.backend().create_stream(n_threads, std::max(n_batch_, kLogitRows), max_cols, int(plan.capacity()));
    cache_ = std::make_unique<KVCache>(*stream_, shape, plan, hp.rope, n_batch_);
    bufs_ = alloc_forward_buffers(model, *stream_, n_batch_);
    logits_.resize(size_t(hp.n_vocab));
}

void Session::reset() {
    n_past_ = 0;
    has_logits_ = false;
}

void Session::prefill(const int32_t *tokens, size_t n) { run(tokens, n, nullptr); }

void Session::prefill_nll(const int32_t *tokens, size_t n, float *nll) {
    if (n && !nll) fail(KVFIT_E_ARG, "nll is NULL");
    run(tokens, n, nll);
}

namespace {

// -log softmax(logits)[target], computed stably.
float nll_of(const float *logits, int32_t n_vocab, int32_t target) {
    float mx = logits[0];
    for (int32_t i = 1; i < n_vocab; i++) mx = std::max(mx, logits[i]);
    double sum = 0;
    for (int32_t i = 0; i < n_vocab; i++) sum += std::exp(double(logits[i] - mx));
    return float(std::log(sum) - double(logits[target] - mx));
}

}  // namespace

void Session::run(const int32_t *tokens, size_t n, float *nll) {
    if (n == 0) return;
    if (!tokens) fail(KVFIT_E_ARG, "tokens is NULL");
    const int32_t n_vocab = model_.hparams().n_vocab;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            fail(KVFIT_E_TOKEN, "token %d at index %zu is outside the vocabulary [0, %d)", tokens[i], i, n_vocab);
    if (!has_room(n))
        fail(KVFIT_E_CONTEXT_FULL, "%zu tokens do not fit: the session holds %llu of %u tokens", n,
             (unsigned long long)n_past_, cache_->capacity());
    if (nll) {
        nll[0] = has_logits_ ? nll_of(logits_.data(), n_vocab, tokens[0]) : NAN;
        if (!nll_logits_) {  // first use: a few rows of logits, kept for the session's life
            nll_logits_ = static_cast<float *>(stream_->alloc(size_t(kLogitRows) * size_t(n_vocab) * 4));
            nll_host_.resize(size_t(kLogitRows) * size_t(n_vocab));
        }
    }
    const size_t d = size_t(model_.hparams().n_embd);
    for (size_t done = 0; done < n;) {
        const int c = int(std::min<size_t>(size_t(n_batch_), n - done));
        forward(model_, *stream_, *cache_, bufs_, tokens + done, c, n_past_, nll != nullptr);
        n_past_ += uint64_t(c);
        if (nll) {
            // Row r predicts token done + r + 1; the batch's last row predicts the next batch's first.
            for (int r0 = 0; r0 < c; r0 += kLogitRows) {
                const int rows = std::min(kLogitRows, c - r0);
                output_logits(model_, *stream_, bufs_.xn + size_t(r0) * d, rows, nll_logits_);
                stream_->download(nll_host_.data(), nll_logits_, size_t(rows) * size_t(n_vocab) * 4);
                stream_->synchronize();
                for (int r = 0; r < rows; r++) {
                    const size_t next = done + size_t(r0 + r) + 1;
                    if (next < n) nll[next] = nll_of(nll_host_.data() + size_t(r) * n_vocab, n_vocab, tokens[next]);
                }
            }
        }
        done += size_t(c);
    }
    stream_->download(logits_.data(), bufs_.logits, logits_.size() * sizeof(float));
    stream_->synchronize();
    has_logits_ = true;
}

namespace {

// Header of saved session state. Fields that must match for the bytes to be
// meaningful in another session: the model's shape and vocabulary, and the plan.
struct StateHeader {
    char magic[8];  // "KVFITSS\0"
    uint32_t version;
    uint32_t n_layer, n_head_kv, head_dim, n_vocab;
    uint32_t streaming, n_sink, n_window, codec, hadamard;
    uint64_t n_past;
    uint32_t has_logits;
    uint32_t keys_rotated;  // dense F16 keys stored after RoPE (the CPU and Vulkan backends' layout)
    uint64_t kv_bytes;
};
// 2: codec holds the public kvfit_kv_codec; 3: keys_rotated
constexpr uint32_t kStateVersion = 3;

StateHeader header_of(const Model &m, const KVPlan &plan, bool keys_rotated, uint64_t n_past, bool has_logits,
                      uint64_t kv_bytes) {
    StateHeader h;
    std::memset(&h, 0, sizeof h);
    std::memcpy(h.magic, "KVFITSS", 8);
    h.version = kStateVersion;
    h.n_layer = uint32_t(m.hparams().n_layer);
    h.n_head_kv = uint32_t(m.hparams().n_head_kv);
    h.head_dim = uint32_t(m.hparams().head_dim);
    h.n_vocab = uint32_t(m.hparams().n_vocab);
    h.streaming = plan.streaming;
    h.n_sink = plan.layers[0].n_sink;
    h.n_window = plan.layers[0].n_window;
    h.codec = uint32_t(layer_codec(plan.layers[0]));
    h.hadamard = plan.layers[0].hadamard;
    h.n_past = n_past;
    h.has_logits = has_logits;
    h.keys_rotated = keys_rotated;
    h.kv_bytes = kv_bytes;
    return h;
}

}  // namespace

size_t Session::state_size() const {
    return sizeof(StateHeader) + logits_.size() * sizeof(float) + cache_->state_bytes();
}

void Session::save(uint8_t *dst, size_t size) const {
    if (size < state_size()) fail(KVFIT_E_BUFFER_TOO_SMALL, "session state needs %zu bytes, the buffer has %zu", state_size(), size);
    const StateHeader h = header_of(model_, plan(), cache_->keys_rotated(), n_past_, has_logits_, cache_->state_bytes());
    std::memcpy(dst, &h, sizeof h);
    std::memcpy(dst + sizeof h, logits_.data(), logits_.size() * sizeof(float));
    cache_->save(*stream_, dst + sizeof h + logits_.size() * sizeof(float));
}

void Session::load(const uint8_t *src, size_t size) {
    if (size < sizeof(StateHeader)) fail(KVFIT_E_FORMAT, "session state of %zu bytes is too short", size);
    StateHeader h;
    std::memcpy(&h, src, sizeof h);
    if (std::memcmp(h.magic, "KVFITSS", 8) != 0) fail(KVFIT_E_FORMAT, "not kvfit session state (bad magic)");
    if (h.version != kStateVersion) fail(KVFIT_E_FORMAT, "session state version %u, this kvfit reads %u", h.version, kStateVersion);
    const StateHeader mine = header_of(model_, plan(), cache_->keys_rotated(), h.n_past, h.has_logits != 0, cache_->state_bytes());
    if (h.keys_rotated != mine.keys_rotated)
        fail(KVFIT_E_ARG, "the saved state keeps dense keys %s RoPE and this session's backend keeps them %s it; load it "
             "into a session on a backend that keeps them the same way (CPU and Vulkan: after; CUDA: before)", h.keys_rotated ? "after" : "before",
             mine.keys_rotated ? "after" : "before");
    if (std::memcmp(&h, &mine, sizeof h) != 0)
        fail(KVFIT_E_ARG, "the saved state belongs to another model or plan (layers %u, window %u, codec %u; this session: "
             "layers %u, window %u, codec %u)", h.n_layer, h.n_window, h.codec, mine.n_layer, mine.n_window, mine.codec);
    if (size != state_size()) fail(KVFIT_E_FORMAT, "session state is %zu bytes, expected %zu", size, state_size());
    if (!plan().streaming && h.n_past > cache_->capacity()) fail(KVFIT_E_FORMAT, "session state holds more tokens than the cache");
    std::memcpy(logits_.data(), src + sizeof h, logits_.size() * sizeof(float));
    cache_->load(*stream_, src + sizeof h + logits_.size() * sizeof(float));
    n_past_ = h.n_past;
    has_logits_ = h.has_logits != 0;
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
        if (!has_room(1)) {
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
