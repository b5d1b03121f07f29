// SentencePiece BPE ("llama" tokenizer model) as llama.cpp runs it: spaces
// become U+2581, a space prefix is added at the start and after special
// tokens, characters are merged pairwise by the score of the merged token,
// and what no token covers falls back to <0xXX> byte tokens.
#include <cstdlib>

#include "common.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

namespace {

const char kSpace[] = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

class SpmTokenizer final : public VocabTokenizer {
public:
    explicit SpmTokenizer(VocabSpec spec) : VocabTokenizer(std::move(spec)) {
        static const char hex[] = "0123456789ABCDEF";
        for (int b = 0; b < 256; b++) {
            const char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
            int32_t id = find_token(name);
            // Some vocabularies hold plain single-byte tokens instead.
            if (id < 0) id = find_token(std::string(1, char(b)));
            byte_tokens_[b] = id;
        }
        // Words can be tokenized one by one (and cached) where no merge can
        // cross from one word into the next, i.e. where no token holds the
        // byte before a word's leading U+2581 followed by that U+2581.
        // joins_[b]: some token has U+2581 right after byte b, where b does
        // not end another U+2581. Llama-style vocabularies have none; Gemma's
        // has one (">▁</"), so text is cut everywhere but after '>'.
        for (bool &j : joins_) j = false;
        for (const std::string &t : spec_.tokens)
            for (size_t i = t.find(kSpace, 1); i != std::string::npos; i = t.find(kSpace, i + 1))
                if (i < 3 || t.compare(i - 3, 3, kSpace) != 0) joins_[static_cast<unsigned char>(t[i - 1])] = true;
    }

    std::string token_to_piece(int32_t id, bool render_special) const override {
        check_id(id);
        const int32_t type = spec_.token_types[size_t(id)];
        const std::string &text = spec_.tokens[size_t(id)];
        if (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN) return render_special ? text : std::string();
        if (type == TOKEN_USER_DEFINED) return text;
        if (type == TOKEN_NORMAL) {
            std::string out;
            out.reserve(text.size());
            for (size_t i = 0; i < text.size();) {
                if (text.compare(i, 3, kSpace) == 0) { out += ' '; i += 3; }
                else out += text[i++];
            }
            return out;
        }
        if (type == TOKEN_BYTE) {
            // "<0xXX>": parse the two hex digits.
            if (text.size() < 6) return std::string();
            return std::string(1, char(std::strtol(text.substr(3, 2).c_str(), nullptr, 16)));
        }
        return std::string();  // unused / undefined tokens render as nothing
    }

protected:
    bool strip_first_space() const override { return spec_.add_space_prefix; }

    void encode_fragment(std::string_view raw, bool after_special, WordCache &cache,
                         std::vector<int32_t> &out) const override {
        std::string text;
        text.reserve(raw.size() * 2 + 3);
        if (spec_.add_space_prefix && after_special) text += kSpace;
        for (char c : raw) {
            if (c == ' ') text += kSpace;
            else text += c;
        }
        // A word: a run of U+2581 (possibly empty) and the text up to the
        // next U+2581 after which a cut is safe (see joins_). Merges never
        // cross such a cut, and merge order restricted to one word is the
        // same as in the whole text, so word-wise results are identical.
        auto encode_word = [this](const std::string &wd, std::vector<int32_t> &ids) { encode(wd, ids); };
        auto skip_spaces = [&text](size_t i) {
            while (i < text.size() && text.compare(i, 3, kSpace) == 0) i += 3;
            return i;
        };
        std::string word;
        size_t start = 0;
        while (start < text.size()) {
            size_t end = skip_spaces(start);
            for (;;) {
                end = text.find(kSpace, end);
                if (end == std::string::npos) {
                    end = text.size();
                    break;
                }
                // The byte before is not part of a U+2581: this is the first
                // one after other text.
                if (!joins_[static_cast<unsigned char>(text[end - 1])]) break;
                end = skip_spaces(end);
            }
            word.assign(text, start, end - start);
            cache.append(word, encode_word, out);
            start = end;
        }
    }

private:
    struct Bigram {
        int left, right;
        float score;
        size_t size;
    };
    // Highest score first; on equal scores the leftmost pair.
    struct BigramLess {
        bool operator()(const Bigram &a, const Bigram &b) const {
            return a.score < b.score || (a.score == b.score && a.left > b.left);
        }
    };

    void encode(const std::string &text, std::vector<int32_t> &out) const {
        std::vector<MergeSymbol> syms = split_utf8_symbols(text);
        if (syms.empty()) return;
        merge_symbols<Bigram>(syms, BigramLess(), [&](int left, int right, auto &q) {
            const size_t size = syms[size_t(left)].n + syms[size_t(right)].n;
            const int32_t id = find_token(std::string_view(text).substr(syms[size_t(left)].off, size));
            if (id >= 0) q.push({left, right, spec_.scores[size_t(id)], size});
        });

        for (int i = 0; i != -1; i = syms[size_t(i)].next) {
            const MergeSymbol &s = syms[size_t(i)];
            const int32_t id = find_token(std::string_view(text).substr(s.off, s.n));
            if (id >= 0) {
                out.push_back(id);
                continue;
            }
            // Not in the vocabulary: one byte token per byte.
            for (size_t k = 0; k < s.n; k++) {
                const int32_t b = byte_tokens_[static_cast<unsigned char>(text[s.off + k])];
                if (b >= 0) out.push_back(b);
                else if (spec_.unk >= 0) out.push_back(spec_.unk);
                else fail(KVFIT_E_UNSUPPORTED, "vocabulary has no byte token for 0x%02X and no unknown token",
                          unsigned(static_cast<unsigned char>(text[s.off + k])));
            }
        }
    }

    int32_t byte_tokens_[256];
    bool joins_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(VocabSpec spec) {
    return std::unique_ptr<Tokenizer>(new SpmTokenizer(std::move(spec)));
}

}  // namespace kvfit
