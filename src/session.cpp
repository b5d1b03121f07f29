#include "session.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "backend/cpu/threadpool.h"
#include "alloc_hook.h"
#include "common.h"
#include "gguf/gguf.h"
#include "sampler.h"
#include "tokenizer/tokenizer.h"

namespace kvfit {

namespace {

int default_threads() { return default_thread_count(); }

// Mean -log p over tokens 1 .. n-1 of a trial session on the calibration
// tokens, folding in the layers marked in fold_layers.
double trial_nll(const Model &model, const kvfit_session_params &p, const std::vector<uint8_t> &fold_layers) {
    kvfit_session_params t = p;
    t.fold = KVFIT_FOLD_AUTO;
    t.fold_calib_tokens = nullptr;
    t.n_fold_calib_tokens = 0;
    Session s(model, t, &fold_layers);
    const size_t n = p.n_fold_calib_tokens;
    std::vector<float> nll(n);
    s.prefill_nll(p.fold_calib_tokens, n, nll.data());
    double sum = 0;
    for (size_t i = 1; i < n; i++) sum += double(nll[i]);
    return sum / double(n - 1);
}

// KVFIT_FOLD_AUTO: which layers fold. Trial sessions at the same budget run
// the calibration tokens: none folding, then each group of consecutive
// streaming layers (at most kGroups groups) folding alone. The groups whose
// trial lowers the mean -log p fold; if that is more than one group, their
// union must lower it too, else only the best group folds. Nothing folds
// without calibration tokens.
std::vector<uint8_t> calibrate_fold(const Model &model, const kvfit_session_params &p, const std::vector<LayerSpec> &specs) {
    constexpr size_t kGroups = 6;
    std::vector<uint8_t> none(specs.size(), 0);
    if (p.n_fold_calib_tokens < 2) return none;
    if (!p.fold_calib_tokens) fail(KVFIT_E_ARG, "fold_calib_tokens is NULL");
    // The layers that could fold: streaming layers that are not the model's own windows.
    const MemoryPlan probe = plan_memory(specs, p, uint32_t(model.hparams().n_ctx_train),
                                           model.backend().supports_state_type(StateType::BF16),
                                           std::vector<uint8_t>(specs.size(), 1));
    std::vector<size_t> foldable;
    for (size_t l = 0; l < specs.size(); l++)
        if (probe.layers[l].fold != FoldMap::None) foldable.push_back(l);
    if (foldable.empty()) return none;
    const double base = trial_nll(model, p, none);
    const size_t groups = std::min(kGroups, foldable.size());
    std::vector<uint8_t> chosen = none, best_group;
    double best = base;
    size_t n_chosen = 0;
    for (size_t g = 0; g < groups; g++) {
        std::vector<uint8_t> mask = none;
        for (size_t i = foldable.size() * g / groups; i < foldable.size() * (g + 1) / groups; i++) mask[foldable[i]] = 1;
        const double nll = trial_nll(model, p, mask);
        log(KVFIT_LOG_INFO, "fold calibration: layers %zu..%zu folding: mean nll %.5f (none: %.5f)",
                foldable[foldable.size() * g / groups], foldable[foldable.size() * (g + 1) / groups - 1], nll, base);
        if (nll < base) {
            for (size_t l = 0; l < mask.size(); l++) chosen[l] |= mask[l];
            n_chosen++;
        }
        if (nll < best) best = nll, best_group = mask;
    }
    if (n_chosen > 1 && trial_nll(model, p, chosen) >= best) chosen = best_group;
    return chosen;
}

}  // namespace

Session::Session(const Model &model, const kvfit_session_params &p, const std::vector<uint8_t> *fold_layers)
    : model_(model) {
    if (model.vocab_only()) fail(KVFIT_E_ARG, "the model was loaded with vocab_only; sessions need weights");
    if (p.n_threads < 0) fail(KVFIT_E_ARG, "n_threads must be >= 0 (0 = all cores), got %d", p.n_threads);
    const HParams &hp = model.hparams();
    const Architecture &arch = model.arch();
    const std::vector<LayerSpec> specs = arch.memory_layers();
    if (p.fold != KVFIT_FOLD_OFF && model.backend().kind() != KVFIT_BACKEND_CPU)
        fail(KVFIT_E_UNSUPPORTED, "fold mode (kvfit_session_params.fold) is implemented on the CPU backend only; this "
             "session's backend is %s", model.backend().name());
    const bool bf16_states = model.backend().supports_state_type(StateType::BF16);
    std::vector<uint8_t> calibrated;
    if (p.fold == KVFIT_FOLD_AUTO && !fold_layers) {
        plan_memory(specs, p, uint32_t(hp.n_ctx_train), bf16_states);  // the parameters' errors before any trial
        calibrated = calibrate_fold(model, p, specs);
        fold_layers = &calibrated;
    }
    const MemoryPlan plan = plan_memory(specs, p, uint32_t(hp.n_ctx_train), bf16_states,
                                        fold_layers ? *fold_layers : std::vector<uint8_t>());
    // A streaming batch may not exceed the window (its tokens must not evict
    // each other before they are attended); a dense one, the capacity.
    n_batch_ = int(plan_batch(p));
    n_batch_ = int(std::min<uint64_t>({uint64_t(n_batch_), plan.max_batch(), plan.capacity()}));
    const int n_threads = p.n_threads > 0 ? std::min(p.n_threads, 256) : default_threads();

    uint32_t max_slots = 0;
    for (const LayerPlan &lp : plan.layers) max_slots = std::max(max_slots, lp.n_sink + lp.n_window);
    stream_ = model.backend().create_stream(n_threads, std::max(n_batch_, kLogitRows), arch.max_cols(), int(max_slots));
    for (const LayerPlan &lp : plan.layers)
        if (lp.kind == KVFIT_LAYER_RECURRENT && !stream_->supports_state_type(lp.state_type))
            fail(KVFIT_E_UNSUPPORTED, "the %s backend keeps recurrent states in F32 only, not %s (KVFIT_STATE_PRECISION)",
                 stream_->backend_name(), state_type_name(lp.state_type));
    memory_ = std::make_unique<SessionMemory>(*stream_, specs, plan, n_batch_);
    bufs_ = arch.alloc_buffers(*stream_, n_batch_);
    resize_checked(logits_, size_t(hp.n_vocab), "the logits");
}

void Session::reset() {
    memory_->clear(*stream_);
    stream_->synchronize();
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
        fail(KVFIT_E_CONTEXT_FULL, "%zu tokens do not fit: the session holds %llu of %llu tokens", n,
             (unsigned long long)n_past_, (unsigned long long)memory_->capacity());
    if (nll) {
        nll[0] = has_logits_ ? nll_of(logits_.data(), n_vocab, tokens[0]) : NAN;
        if (!nll_logits_) {  // first use: a few rows of logits, kept for the session's life
            resize_checked(nll_host_, size_t(kLogitRows) * size_t(n_vocab), "the logits");  // first: nll_logits_ marks both done
            nll_logits_ = static_cast<float *>(stream_->alloc(size_t(kLogitRows) * size_t(n_vocab) * 4));
        }
    }
    const size_t d = size_t(model_.hparams().n_embd);
    const Architecture &arch = model_.arch();
    for (size_t done = 0; done < n;) {
        const int c = int(std::min<size_t>(size_t(n_batch_), n - done));
        arch.forward(*stream_, *memory_, *bufs_, tokens + done, c, n_past_, nll != nullptr);
        n_past_ += uint64_t(c);
        if (nll) {
            // Row r predicts token done + r + 1; the batch's last row predicts the next batch's first.
            for (int r0 = 0; r0 < c; r0 += kLogitRows) {
                const int rows = std::min(kLogitRows, c - r0);
                arch.output_logits(*stream_, bufs_->xn + size_t(r0) * d, rows, nll_logits_);
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
    stream_->download(logits_.data(), bufs_->logits, logits_.size() * sizeof(float));
    stream_->synchronize();
    has_logits_ = true;
}

namespace {

// Saved session state, format 6:
//   StateHeader
//   LayerRecord x n_layer   what each layer keeps and how (kind, codec, window)
//   float logits[n_vocab]
//   each layer's buffers, layer after layer (LayerMemory::parts order)
// The header carries a fingerprint of the model (architecture, shapes and the
// tensor table) and a checksum of the whole state (the header with its
// checksum field zero, then everything after it), so a state of another
// model, a truncated buffer or a flipped byte anywhere is refused.
struct StateHeader {
    char magic[8];  // "KVFITSS\0"
    uint32_t version;
    uint32_t n_layer;
    uint32_t n_vocab;
    uint32_t has_logits;
    uint64_t n_past;
    uint64_t model_fingerprint;
    uint64_t payload_bytes;  // records + logits + layer buffers
    uint64_t checksum;       // FNV-1a of the header (this field 0) and the payload
};
struct LayerRecord {
    uint32_t kind;      // kvfit_layer_kind
    uint32_t codec;     // kvfit_kv_codec
    uint32_t n_sink;
    uint32_t n_window;
    uint32_t keys_rotated;  // dense F16 keys stored after RoPE (the CPU and Vulkan backends' layout; CUDA's
                            // is before: load converts)
    uint32_t fold;          // FoldMap of the layer's fold memory (0: none)
    uint64_t bytes;     // this layer's buffers
};
// 2: codec holds the public kvfit_kv_codec; 3: keys_rotated; 4: a record per
// layer, model fingerprint and payload checksum; 5: the checksum covers the
// header too (n_past and has_logits were unprotected), has_logits is 0 or 1;
// 6: fold mode (the record's fold field, a fold layer's memory after its
// other buffers).
constexpr uint32_t kStateVersion = 6;

// FNV-1a, 64 bits: a checksum against damage, not an authenticator.
uint64_t fnv1a(const void *data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
    const uint8_t *p = static_cast<const uint8_t *>(data);
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

uint64_t model_fingerprint(const Model &m) {
    const HParams &hp = m.hparams();
    uint64_t h = fnv1a(hp.arch.data(), hp.arch.size());
    const int32_t dims[] = {hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff};
    h = fnv1a(dims, sizeof dims, h);
    for (const GGUFTensor &t : m.file().tensors()) {
        h = fnv1a(t.name.data(), t.name.size(), h);
        h = fnv1a(&t.type, sizeof t.type, h);
        h = fnv1a(t.ne, sizeof t.ne, h);
    }
    return h;
}

LayerRecord record_of(const LayerMemory &mem) {
    LayerRecord r;
    std::memset(&r, 0, sizeof r);
    const LayerPlan &lp = mem.plan();
    r.kind = uint32_t(lp.kind);
    r.codec = uint32_t(layer_codec(lp));
    r.n_sink = lp.n_sink;
    r.n_window = lp.n_window;
    auto *att = dynamic_cast<const AttentionMemory *>(&mem);
    r.keys_rotated = att && att->keys_rotated();
    r.fold = uint32_t(lp.fold);
    r.bytes = mem.state_bytes();
    return r;
}

const char *kind_name(uint32_t k) {
    switch (k) {
        case KVFIT_LAYER_DENSE: return "dense";
        case KVFIT_LAYER_STREAMING: return "streaming";
        case KVFIT_LAYER_WINDOW: return "window";
        case KVFIT_LAYER_RECURRENT: return "recurrent";
        case KVFIT_LAYER_STREAMING_FOLD: return "streaming+fold";
        default: return "unknown";
    }
}

const char *codec_name(uint32_t c) {
    switch (c) {
        case KVFIT_KV_F16: return "F16";
        case KVFIT_KV_Q8: return "Q8";
        case KVFIT_KV_Q4: return "Q4";
        case KVFIT_KV_Q4_HADAMARD: return "Q4_HADAMARD";
        case KVFIT_KV_Q4_CHANNEL: return "Q4_CHANNEL";
        case KVFIT_KV_F32: return "F32";
        case KVFIT_KV_BF16: return "BF16";
        default: return "unknown";
    }
}

}  // namespace

size_t Session::state_size() const {
    return sizeof(StateHeader) + size_t(memory_->n_layer()) * sizeof(LayerRecord) + logits_.size() * sizeof(float) +
           memory_->state_bytes();
}

void Session::save(uint8_t *dst, size_t size) const {
    if (size < state_size()) fail(KVFIT_E_BUFFER_TOO_SMALL, "session state needs %zu bytes, the buffer has %zu", state_size(), size);
    StateHeader h;
    std::memset(&h, 0, sizeof h);
    std::memcpy(h.magic, "KVFITSS", 8);
    h.version = kStateVersion;
    h.n_layer = uint32_t(memory_->n_layer());
    h.n_vocab = uint32_t(logits_.size());
    h.has_logits = has_logits_;
    h.n_past = n_past_;
    h.model_fingerprint = model_fingerprint(model_);
    h.payload_bytes = state_size() - sizeof h;
    uint8_t *p = dst + sizeof h;
    for (int l = 0; l < memory_->n_layer(); l++) {
        const LayerRecord r = record_of(memory_->layer(l));
        std::memcpy(p, &r, sizeof r);
        p += sizeof r;
    }
    std::memcpy(p, logits_.data(), logits_.size() * sizeof(float));
    p += logits_.size() * sizeof(float);
    memory_->save(*stream_, p);
    h.checksum = 0;
    h.checksum = fnv1a(dst + sizeof h, h.payload_bytes, fnv1a(&h, sizeof h));
    std::memcpy(dst, &h, sizeof h);
}

void Session::load(const uint8_t *src, size_t size) {
    if (size < sizeof(StateHeader)) fail(KVFIT_E_FORMAT, "session state of %zu bytes is too short for its header", size);
    StateHeader h;
    std::memcpy(&h, src, sizeof h);
    if (std::memcmp(h.magic, "KVFITSS", 8) != 0) fail(KVFIT_E_FORMAT, "not kvfit session state (bad magic)");
    if (h.version != kStateVersion)
        fail(KVFIT_E_FORMAT, "session state format %u is not readable by this kvfit, which reads format %u%s", h.version,
             kStateVersion, h.version < kStateVersion ? " (the state was saved by an older kvfit)" : "");
    if (h.model_fingerprint != model_fingerprint(model_) || h.n_layer != uint32_t(memory_->n_layer()) ||
        h.n_vocab != logits_.size())
        fail(KVFIT_E_FORMAT, "the session state belongs to another model");
    if (h.payload_bytes != size - sizeof h)
        fail(KVFIT_E_FORMAT, "session state is %zu bytes, its header says %llu%s", size,
             (unsigned long long)(h.payload_bytes + sizeof h), size < h.payload_bytes + sizeof h ? " (truncated)" : "");
    StateHeader unsummed = h;
    unsummed.checksum = 0;
    if (fnv1a(src + sizeof h, size - sizeof h, fnv1a(&unsummed, sizeof unsummed)) != h.checksum)
        fail(KVFIT_E_FORMAT, "session state is damaged (checksum mismatch)");
    if (h.has_logits > 1) fail(KVFIT_E_FORMAT, "session state is damaged (has_logits is %u)", h.has_logits);
    const uint8_t *p = src + sizeof h;
    // Whether each saved layer kept its keys after RoPE: a backend that keeps
    // them the other way converts them as it loads (SessionMemory::load).
    std::vector<bool> saved_keys_rotated(size_t(memory_->n_layer()));
    for (int l = 0; l < memory_->n_layer(); l++, p += sizeof(LayerRecord)) {
        LayerRecord r;
        std::memcpy(&r, p, sizeof r);
        LayerRecord mine = record_of(memory_->layer(l));
        if (r.keys_rotated > 1) fail(KVFIT_E_FORMAT, "session state is damaged (layer %d: keys_rotated is %u)", l, r.keys_rotated);
        saved_keys_rotated[size_t(l)] = r.keys_rotated != 0;
        mine.keys_rotated = r.keys_rotated;
        if (std::memcmp(&r, &mine, sizeof r) != 0)
            fail(KVFIT_E_ARG, "layer %d of the saved state is %s %s with %u sinks and a window of %u%s; this session's is "
                 "%s %s with %u sinks and a window of %u%s: create the session with the same parameters", l,
                 kind_name(r.kind), codec_name(r.codec), r.n_sink, r.n_window, r.fold ? " and a fold memory" : "",
                 kind_name(mine.kind), codec_name(mine.codec), mine.n_sink, mine.n_window,
                 mine.fold ? " and a fold memory" : "");
    }
    if (size != state_size()) fail(KVFIT_E_FORMAT, "session state is %zu bytes, expected %zu", size, state_size());
    if (!memory_->unbounded() && h.n_past > memory_->capacity())
        fail(KVFIT_E_FORMAT, "session state holds more tokens than the cache");
    // The logits change only once the memory has loaded (a failure there,
    // e.g. out of memory converting keys, leaves the session as it was).
    std::vector<float> logits(logits_.size());
    std::memcpy(logits.data(), p, logits.size() * sizeof(float));
    p += logits.size() * sizeof(float);
    memory_->load(*stream_, p, saved_keys_rotated, h.n_past);
    logits_.swap(logits);
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
