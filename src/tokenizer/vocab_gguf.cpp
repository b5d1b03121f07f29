// VocabSpec from GGUF metadata, with the defaults llama.cpp applies per
// tokenizer model when a key is absent.
#include "common.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

VocabSpec vocab_spec_from_gguf(const GGUFFile &f) {
    VocabSpec s;
    auto model = f.get_string("tokenizer.ggml.model");
    if (!model) fail(KVFIT_E_FORMAT, "GGUF file has no tokenizer (tokenizer.ggml.model is missing)");
    s.model = *model;
    s.pre = f.get_string("tokenizer.ggml.pre").value_or("");

    auto tokens = f.get_string_array("tokenizer.ggml.tokens");
    if (!tokens || tokens->empty()) fail(KVFIT_E_FORMAT, "GGUF file has no tokenizer.ggml.tokens");
    s.tokens = std::move(*tokens);
    const size_t n = s.tokens.size();

    if (auto scores = f.get_float_array("tokenizer.ggml.scores")) {
        if (scores->size() < n) fail(KVFIT_E_FORMAT, "tokenizer.ggml.scores has %zu entries for %zu tokens", scores->size(), n);
        s.scores = std::move(*scores);
        s.scores.resize(n);
    }
    if (auto types = f.get_int_array("tokenizer.ggml.token_type")) {
        if (types->size() < n) fail(KVFIT_E_FORMAT, "tokenizer.ggml.token_type has %zu entries for %zu tokens", types->size(), n);
        s.token_types.resize(n);
        for (size_t i = 0; i < n; i++) s.token_types[i] = int32_t((*types)[i]);
    }

    if (s.model == "llama") {
        s.bos = 1;
        s.eos = 2;
        s.unk = 0;
        s.add_bos = true;
        s.add_eos = false;
        s.add_space_prefix = true;
    } else if (s.model == "gpt2") {
        auto merges = f.get_string_array("tokenizer.ggml.merges");
        if (!merges) fail(KVFIT_E_FORMAT, "gpt2 tokenizer without tokenizer.ggml.merges");
        s.merges = std::move(*merges);
        // llama.cpp's defaults for BPE vocabularies (11 is GPT-NeoX's id).
        s.bos = 11;
        s.eos = 11;
        s.add_bos = bpe_pre_adds_bos(s.pre);
        s.add_space_prefix = false;
        if (s.pre == "glm4" || s.pre == "chatglm-bpe") s.bos = -1;
    }
    // Other models keep everything unset; Tokenizer::create rejects them.

    for (int32_t *id : {&s.bos, &s.eos, &s.unk, &s.pad})
        if (*id >= 0 && size_t(*id) >= n) *id = -1;

    // A metadata id outside the vocabulary (e.g. 0xFFFFFFFF for "none")
    // keeps the default, as in llama.cpp.
    auto read_id = [&](const char *key, int32_t &id) {
        if (auto v = f.get_int(key))
            if (*v >= 0 && uint64_t(*v) < n) id = int32_t(*v);
    };
    read_id("tokenizer.ggml.bos_token_id", s.bos);
    read_id("tokenizer.ggml.eos_token_id", s.eos);
    read_id("tokenizer.ggml.eot_token_id", s.eot);
    read_id("tokenizer.ggml.eom_token_id", s.eom);
    read_id("tokenizer.ggml.unknown_token_id", s.unk);
    read_id("tokenizer.ggml.padding_token_id", s.pad);

    if (auto v = f.get_bool("tokenizer.ggml.add_space_prefix")) s.add_space_prefix = *v;
    if (auto v = f.get_bool("tokenizer.ggml.add_bos_token")) s.add_bos = *v;
    if (auto v = f.get_bool("tokenizer.ggml.add_eos_token")) s.add_eos = *v;
    if (s.add_bos && s.bos < 0) fail(KVFIT_E_FORMAT, "tokenizer.ggml.add_bos_token is true, but there is no BOS token");
    if (s.add_eos && s.eos < 0) fail(KVFIT_E_FORMAT, "tokenizer.ggml.add_eos_token is true, but there is no EOS token");
    return s;
}

}  // namespace kvfit
