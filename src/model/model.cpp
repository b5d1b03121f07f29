#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "chat_template.h"
#include "common.h"
#include "gguf/ggml_types.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace kvfit {

namespace {

const char *const SUPPORTED_ARCHS[] = {"llama"};

bool arch_supported(const std::string &arch) {
    for (const char *a : SUPPORTED_ARCHS)
        if (arch == a) return true;
    return false;
}

// Required integer metadata "<arch>.<key>".
int64_t require_int(const GGUFFile &f, const std::string &arch, const char *key) {
    std::string full = arch + "." + key;
    auto v = f.get_int(full);
    if (!v) fail(KVFIT_E_FORMAT, "missing metadata '%s'", full.c_str());
    if (*v <= 0 || *v > (int64_t(1) << 31)) fail(KVFIT_E_FORMAT, "metadata '%s' = %lld is out of range", full.c_str(), (long long)*v);
    return *v;
}

class WeightLoader {
public:
    WeightLoader(const GGUFFile &f, Backend &b) : f_(f), b_(b) {}

    // A tensor that must exist with the given shape and a type kvfit computes with.
    Weight get(const std::string &name, int64_t ne0, int64_t ne1) {
        const GGUFTensor *t = f_.tensor(name);
        if (!t) fail(KVFIT_E_FORMAT, "missing tensor '%s'", name.c_str());
        check(*t, ne0, ne1);
        return b_.upload_weight(*t);
    }
    // A 1-D float vector (norm weights): F32 on the device whatever the file stores.
    Weight get_vector(const std::string &name, int64_t n) {
        const GGUFTensor *t = f_.tensor(name);
        if (!t) fail(KVFIT_E_FORMAT, "missing tensor '%s'", name.c_str());
        check(*t, n, 1);
        if (t->type == TYPE_F32) return b_.upload_weight(*t);
        std::vector<float> tmp(static_cast<size_t>(n));
        dequantize_row(t->type, t->data, tmp.data(), n);
        Weight w;
        w.data = b_.upload_floats(tmp.data(), tmp.size());
        w.type = TYPE_F32;
        w.n_cols = n;
        w.n_rows = 1;
        w.row_bytes = size_t(n) * 4;
        return w;
    }
    bool has(const std::string &name) const { return f_.tensor(name) != nullptr; }

private:
    void check(const GGUFTensor &t, int64_t ne0, int64_t ne1) {
        if (t.ne[0] != ne0 || t.ne[1] != ne1 || t.ne[2] != 1 || t.ne[3] != 1)
            fail(KVFIT_E_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", t.name.c_str(),
                 (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], (long long)t.ne[3], (long long)ne0,
                 (long long)ne1);
        const TypeInfo *ti = type_info(t.type);
        if (!ti || !ti->supported)
            fail(KVFIT_E_UNSUPPORTED, "tensor '%s' has type %s, which kvfit does not support (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                 t.name.c_str(), ti ? ti->name : "unknown");
    }
    const GGUFFile &f_;
    Backend &b_;
};

}  // namespace

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string &path, const kvfit_model_params &params) {
    std::unique_ptr<Model> m(new Model());
    m->file_ = GGUFFile::open(path);
    const GGUFFile &f = *m->file_;
    auto progress = [&](float p) {
        if (params.progress && !params.progress(p, params.progress_user_data))
            fail(KVFIT_E_CANCELLED, "model loading cancelled by the progress callback");
    };
    progress(0.0f);

    HParams &hp = m->hp_;
    hp.arch = f.get_string("general.architecture").value_or("");
    if (hp.arch.empty()) fail(KVFIT_E_FORMAT, "%s: missing metadata 'general.architecture'", path.c_str());
    m->name_ = f.get_string("general.name").value_or("");

    m->tok_ = Tokenizer::create(vocab_spec_from_gguf(f));
    hp.n_vocab = m->tok_->n_vocab();

    if (auto tmpl = f.get_string("tokenizer.chat_template")) {
        const char *fam = chat_template_detect(*tmpl);
        if (fam && *fam) m->chat_template_ = chat_template_canonical_name(fam);
        else m->chat_template_ = "custom";  // no family kvfit knows; kvfit_chat_apply renders the Jinja itself
        m->chat_default_system_ = chat_template_default_system(*tmpl);
    }

    for (const GGUFTensor &t : f.tensors()) {
        m->n_params_ += uint64_t(t.n_elements());
        m->weight_bytes_ += t.nbytes;
    }

    if (params.vocab_only) {
        progress(1.0f);
        return m;
    }
    if (!arch_supported(hp.arch))
        fail(KVFIT_E_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: llama)", path.c_str(), hp.arch.c_str());

    const std::string &a = hp.arch;
    hp.n_embd = int(require_int(f, a, "embedding_length"));
    hp.n_layer = int(require_int(f, a, "block_count"));
    hp.n_head = int(require_int(f, a, "attention.head_count"));
    hp.n_head_kv = int(f.get_int(a + ".attention.head_count_kv").value_or(hp.n_head));
    hp.n_ff = int(require_int(f, a, "feed_forward_length"));
    hp.n_ctx_train = int(f.get_int(a + ".context_length").value_or(2048));
    hp.head_dim = int(f.get_int(a + ".attention.key_length").value_or(hp.n_embd / hp.n_head));
    hp.rms_eps = float(f.get_float(a + ".attention.layer_norm_rms_epsilon").value_or(1e-5));
    if (hp.n_head_kv <= 0 || hp.n_head % hp.n_head_kv)
        fail(KVFIT_E_FORMAT, "%s: %d attention heads cannot share %d KV heads", path.c_str(), hp.n_head, hp.n_head_kv);
    if (hp.head_dim <= 0 || hp.head_dim > 512 || hp.head_dim % 2)
        fail(KVFIT_E_UNSUPPORTED, "%s: head dimension %d is not supported (even, at most 512)", path.c_str(), hp.head_dim);
    if (hp.n_layer > 4096 || hp.n_embd > (1 << 16) || hp.n_ff > (1 << 18) || hp.n_ctx_train <= 0)
        fail(KVFIT_E_FORMAT, "%s: implausible model dimensions", path.c_str());

    hp.rope.mode = RopeMode::Norm;  // llama stores Q/K permuted for pairwise rotation
    hp.rope.n_dims = int(f.get_int(a + ".rope.dimension_count").value_or(hp.head_dim));
    if (hp.rope.n_dims <= 0 || hp.rope.n_dims > hp.head_dim || hp.rope.n_dims % 2)
        fail(KVFIT_E_FORMAT, "%s: rope.dimension_count %d does not fit head dimension %d", path.c_str(), hp.rope.n_dims, hp.head_dim);
    hp.rope.freq_base = float(f.get_float(a + ".rope.freq_base").value_or(10000.0));
    std::string scaling = f.get_string(a + ".rope.scaling.type").value_or("none");
    double factor = f.get_float(a + ".rope.scaling.factor").value_or(0.0);
    if (scaling == "linear" && factor > 0) hp.rope.freq_scale = float(1.0 / factor);
    else if (auto fs = f.get_float(a + ".rope.scale_linear")) hp.rope.freq_scale = float(1.0 / *fs);
    else if (scaling != "none" && scaling != "linear")
        fail(KVFIT_E_UNSUPPORTED, "%s: RoPE scaling '%s' is not supported", path.c_str(), scaling.c_str());

    m->backend_ = create_backend(params.backend, params.device);
    WeightLoader ld(f, *m->backend_);
    const int64_t d = hp.n_embd, qd = int64_t(hp.n_head) * hp.head_dim, kvd = int64_t(hp.n_head_kv) * hp.head_dim;
    ModelWeights &w = m->w_;
    w.tok_embd = ld.get("token_embd.weight", d, hp.n_vocab);
    w.output_norm = ld.get_vector("output_norm.weight", d);
    w.output = ld.has("output.weight") ? ld.get("output.weight", d, hp.n_vocab) : w.tok_embd;
    if (ld.has("rope_freqs.weight")) {
        Weight rf = ld.get_vector("rope_freqs.weight", hp.rope.n_dims / 2);
        hp.rope.freq_factors = static_cast<const float *>(rf.data);
    }
    w.layers.resize(size_t(hp.n_layer));
    for (int l = 0; l < hp.n_layer; l++) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LayerWeights &L = w.layers[size_t(l)];
        L.attn_norm = ld.get_vector(p + "attn_norm.weight", d);
        L.wq = ld.get(p + "attn_q.weight", d, qd);
        L.wk = ld.get(p + "attn_k.weight", d, kvd);
        L.wv = ld.get(p + "attn_v.weight", d, kvd);
        L.wo = ld.get(p + "attn_output.weight", qd, d);
        L.ffn_norm = ld.get_vector(p + "ffn_norm.weight", d);
        L.ffn_gate = ld.get(p + "ffn_gate.weight", d, hp.n_ff);
        L.ffn_up = ld.get(p + "ffn_up.weight", d, hp.n_ff);
        L.ffn_down = ld.get(p + "ffn_down.weight", hp.n_ff, d);
        progress(float(l + 1) / float(hp.n_layer + 1));
    }
    progress(1.0f);
    log(KVFIT_LOG_INFO, "loaded %s: %s, %d layers, %d heads (%d KV), %d vocab, backend %s", path.c_str(), hp.arch.c_str(),
        hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_vocab, m->backend_->name());
    return m;
}

ForwardBuffers alloc_forward_buffers(const Model &m, Stream &s, int max_tokens) {
    const HParams &hp = m.hparams();
    ForwardBuffers b;
    b.max_tokens = max_tokens;
    const size_t T = size_t(max_tokens);
    const size_t qd = size_t(hp.n_head) * hp.head_dim, kvd = size_t(hp.n_head_kv) * hp.head_dim;
    auto floats = [&](size_t n) {
        b.bytes += n * 4;
        return static_cast<float *>(s.alloc(n * 4));
    };
    b.ids = static_cast<int32_t *>(s.alloc(T * 4));
    b.bytes += T * 4;
    b.x = floats(T * hp.n_embd);
    b.xn = floats(T * hp.n_embd);
    b.q = floats(T * qd);
    b.k = floats(T * kvd);
    b.v = floats(T * kvd);
    b.att = floats(T * qd);
    b.proj = floats(T * hp.n_embd);
    b.gate = floats(T * hp.n_ff);
    b.up = floats(T * hp.n_ff);
    b.logits = floats(size_t(hp.n_vocab));
    return b;
}

}  // namespace kvfit
