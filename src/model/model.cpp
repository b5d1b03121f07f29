#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "chat/chat_template.h"
#include "alloc_hook.h"
#include "common.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

namespace kvfit {

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string &path, const kvfit_model_params &params) {
    check_alloc(sizeof(Model), "the model");
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

    check_alloc(f.file_size(), "the tokenizer's tables");
    m->tok_ = Tokenizer::create(vocab_spec_from_gguf(f));
    hp.n_vocab = m->tok_->n_vocab();

    if (auto tmpl = f.get_string("tokenizer.chat_template")) {
        const char *fam = chat_template_detect(*tmpl);
        if (fam && *fam) m->chat_template_ = chat_template_canonical_name(fam);
        else m->chat_template_ = "custom";  // no family kvfit knows; kvfit_chat_apply renders the Jinja itself
        m->chat_default_system_ = chat_template_default_system(*tmpl);
    } else if (hp.arch.rfind("gemma", 0) == 0) {
        m->chat_template_ = "gemma";  // Gemma files often carry no template: their architecture's format
    }

    for (const GGUFTensor &t : f.tensors()) {
        m->n_params_ += uint64_t(t.n_elements());
        m->weight_bytes_ += t.nbytes;
    }

    if (params.vocab_only) {
        progress(1.0f);
        return m;
    }
    m->arch_ = create_architecture(hp.arch);
    if (!m->arch_)
        fail(KVFIT_E_UNSUPPORTED, "%s: architecture '%s' is not supported (supported: %s)", path.c_str(), hp.arch.c_str(),
             supported_architectures().c_str());
    try {
        m->arch_->read_hparams(ArchMetadata(f, hp.arch), hp);
    } catch (const Error &e) {
        fail(e.status(), "%s: %s", path.c_str(), e.what());
    }

    check_alloc(sizeof(void *), "the backend");
    m->backend_ = create_backend(params.backend, params.device);
    WeightLoader ld(f, *m->backend_);
    m->arch_->bind_weights(ld, progress);
    progress(1.0f);
    log(KVFIT_LOG_INFO, "loaded %s: %s, %d layers, %d heads (%d KV), %d vocab, backend %s", path.c_str(), hp.arch.c_str(),
        hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_vocab, m->backend_->name());
    return m;
}

}  // namespace kvfit
