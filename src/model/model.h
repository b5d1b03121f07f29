// A loaded model: the GGUF mapping, its architecture (hyper-parameters,
// weights on the backend, forward pass), tokenizer and chat template.
// Immutable after load; shared by sessions.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "kvfit.h"
#include "model/arch.h"

namespace kvfit {

class GGUFFile;
class Tokenizer;

class Model {
public:
    static std::unique_ptr<Model> load(const std::string &path, const kvfit_model_params &params);
    ~Model();

    const HParams &hparams() const { return hp_; }
    const Architecture &arch() const { return *arch_; }
    const Tokenizer &tokenizer() const { return *tok_; }
    const GGUFFile &file() const { return *file_; }
    Backend &backend() const { return *backend_; }
    bool vocab_only() const { return !backend_; }

    const std::string &name() const { return name_; }
    const char *chat_template() const { return chat_template_; }
    const std::string &chat_default_system() const { return chat_default_system_; }
    uint64_t n_params() const { return n_params_; }
    uint64_t weight_bytes() const { return weight_bytes_; }

private:
    Model() = default;
    std::unique_ptr<GGUFFile> file_;
    std::unique_ptr<Tokenizer> tok_;
    std::unique_ptr<Backend> backend_;
    HParams hp_;
    std::unique_ptr<Architecture> arch_;  // null for a vocab-only model
    std::string name_;
    const char *chat_template_ = "chatml";
    std::string chat_default_system_;
    uint64_t n_params_ = 0;
    uint64_t weight_bytes_ = 0;
};

}  // namespace kvfit
