// llama.cpp's "rwkv" tokenizer model (RWKV World vocabularies, and the
// byte-level vocabularies of rwkv.cpp's tiny models): each token's text is
// stored escaped as a Python bytes literal without its quotes ("\n", "\xff",
// "\\"), and text is tokenized greedily, longest matching token first, over
// the unescaped bytes. Like llama.cpp: no space prefix, no BOS/EOS unless the
// metadata names them, and later ids win where two tokens unescape alike.
#include "common.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

namespace {

// The escapes llama.cpp's llama_unescape_rwkv_token undoes: \t \n \r, \xHH
// (lower-case hex, as Python writes it) and \<c> for any other c.
std::string unescape_rwkv(const std::string &s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            out += s[i];
            continue;
        }
        const char c = s[++i];
        if (c == 't') out += '\t';
        else if (c == 'n') out += '\n';
        else if (c == 'r') out += '\r';
        else if (c == 'x') {
            // Two hex digits (a truncated escape at the end of a token ends it).
            auto hex = [](char h) { return h >= 'a' ? h - 'a' + 10 : h >= 'A' ? h - 'A' + 10 : h - '0'; };
            if (i + 2 >= s.size()) break;
            out += char(((hex(s[i + 1]) & 15) << 4) | (hex(s[i + 2]) & 15));
            i += 2;
        } else out += c;
    }
    return out;
}

class RwkvTokenizer final : public VocabTokenizer {
public:
    explicit RwkvTokenizer(VocabSpec spec) : VocabTokenizer(std::move(spec)) {
        const size_t n = spec_.tokens.size();
        bytes_.resize(n);
        ids_.push_back(-1);  // node 0: the root
        for (size_t id = 0; id < n; id++) {
            bytes_[id] = unescape_rwkv(spec_.tokens[id]);
            const std::string &b = bytes_[id];
            if (b.empty()) continue;
            uint32_t node = 0;
            for (unsigned char c : b) {
                auto it = edges_.emplace(uint64_t(node) << 8 | c, uint32_t(ids_.size())).first;
                if (it->second == ids_.size()) ids_.push_back(-1);
                node = it->second;
            }
            ids_[node] = int32_t(id);
        }
    }

    std::string token_to_piece(int32_t id, bool render_special) const override {
        check_id(id);
        const int32_t type = spec_.token_types[size_t(id)];
        if ((type == TOKEN_CONTROL || type == TOKEN_UNKNOWN) && !render_special) return std::string();
        return bytes_[size_t(id)];
    }

protected:
    void encode_fragment(std::string_view text, bool, WordCache &, std::vector<int32_t> &out) const override {
        size_t pos = 0;
        while (pos < text.size()) {
            int32_t best = -1;
            size_t best_len = 0;
            uint32_t node = 0;
            for (size_t i = pos; i < text.size(); i++) {
                auto it = edges_.find(uint64_t(node) << 8 | static_cast<unsigned char>(text[i]));
                if (it == edges_.end()) break;
                node = it->second;
                if (ids_[node] >= 0) {
                    best = ids_[node];
                    best_len = i + 1 - pos;
                }
            }
            if (best < 0) {
                if (spec_.unk < 0)
                    fail(KVFIT_E_TOKEN, "no token of the vocabulary starts with byte 0x%02x, and there is no unknown token",
                         static_cast<unsigned char>(text[pos]));
                out.push_back(spec_.unk);
                pos++;
                continue;
            }
            out.push_back(best);
            pos += best_len;
        }
    }

private:
    // The tokens' bytes as a trie: node 0 is the root, an edge is keyed by
    // (node << 8 | byte), ids_[node] is the token ending there (or -1).
    std::unordered_map<uint64_t, uint32_t> edges_;
    std::vector<int32_t> ids_;
    std::vector<std::string> bytes_;  // each token's unescaped bytes
};

}  // namespace

std::unique_ptr<Tokenizer> make_rwkv_tokenizer(VocabSpec spec) { return std::make_unique<RwkvTokenizer>(std::move(spec)); }

}  // namespace kvfit
