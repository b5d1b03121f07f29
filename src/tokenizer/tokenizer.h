// Tokenizers built from GGUF metadata: "llama" (SentencePiece BPE with byte
// fallback) and "gpt2" (byte-level BPE with per-model pre-tokenizer splits).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvfit {

class GGUFFile;

// Token types as GGUF stores them in tokenizer.ggml.token_type.
enum TokenType : int32_t {
    TOKEN_UNDEFINED = 0, TOKEN_NORMAL = 1, TOKEN_UNKNOWN = 2, TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5, TOKEN_BYTE = 6,
};

// Everything a tokenizer needs, as read from tokenizer.ggml.* metadata.
struct VocabSpec {
    std::string model;                  // "llama" | "gpt2"
    std::string pre;                    // tokenizer.ggml.pre ("" = default)
    std::vector<std::string> tokens;
    std::vector<float> scores;          // may be empty
    std::vector<int32_t> token_types;   // may be empty (all normal)
    std::vector<std::string> merges;    // gpt2: "a b" pairs in rank order
    int32_t bos = -1, eos = -1, unk = -1, pad = -1, eot = -1, eom = -1;
    bool add_bos = false, add_eos = false, add_space_prefix = false;
};

// Reads VocabSpec from a GGUF file's metadata (defaults as llama.cpp applies
// them per tokenizer model). Throws kvfit::Error on missing/invalid metadata.
VocabSpec vocab_spec_from_gguf(const GGUFFile &file);

class Tokenizer {
public:
    virtual ~Tokenizer() = default;
    // Throws kvfit::Error(KVFIT_E_UNSUPPORTED) for an unknown model/pre.
    static std::unique_ptr<Tokenizer> create(VocabSpec spec);

    // Throws kvfit::Error(KVFIT_E_UTF8) on invalid UTF-8.
    virtual std::vector<int32_t> tokenize(std::string_view text, bool add_special, bool parse_special) const = 0;
    // Raw bytes of one token (byte tokens become their byte, SentencePiece's
    // U+2581 a space, byte-level BPE symbols their bytes). Control tokens give
    // "" unless render_special. Throws KVFIT_E_TOKEN for an id out of range.
    virtual std::string token_to_piece(int32_t id, bool render_special) const = 0;
    // Whole-sequence text: like concatenated pieces, except that a
    // SentencePiece model drops the leading space of the first token when it
    // adds a space prefix (as llama.cpp does).
    virtual std::string detokenize(const int32_t *ids, size_t n, bool render_special) const = 0;

    const VocabSpec &spec() const { return spec_; }
    int32_t n_vocab() const { return int32_t(spec_.tokens.size()); }
    bool is_eog(int32_t id) const;     // eos, eot, eom and tokens such as <|im_end|>, <|eot_id|>
    bool is_control(int32_t id) const;

protected:
    explicit Tokenizer(VocabSpec spec);
    VocabSpec spec_;
    std::vector<int32_t> eog_ids_;
};

// Joins byte pieces into text for streaming: returns only complete UTF-8
// characters and keeps an incomplete tail for the next push. Invalid bytes
// come out as U+FFFD so a stream never stalls.
class Utf8Stream {
public:
    std::string push(std::string_view bytes);
    std::string flush();  // whatever is pending, invalid tail as U+FFFD
private:
    std::string pending_;
};

// True if s is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool utf8_valid(std::string_view s);

}  // namespace kvfit
