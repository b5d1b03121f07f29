// Internals shared by the tokenizer sources: UTF-8 helpers, the vocabulary
// lookup and special-token partition common to both models, and the two
// concrete tokenizers. Behaviour follows llama.cpp's llama-vocab.cpp so that
// token ids match it exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace kvfit {

// ---- UTF-8 -----------------------------------------------------------------

// Offset of the first byte that is not part of a valid UTF-8 sequence, or
// std::string_view::npos when the whole string is valid.
size_t utf8_invalid_offset(std::string_view s);
// Throws Error(KVFIT_E_UTF8) naming the byte offset of the first bad byte.
void utf8_check(std::string_view s);
// Length of the sequence a lead byte starts, as llama.cpp counts it (1 for
// continuation bytes). Only used on validated text.
inline size_t utf8_seq_len(unsigned char c) {
    return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}
void utf8_append(std::string &out, uint32_t cp);
// Decodes one code point of valid UTF-8 at s[i], advancing i.
uint32_t utf8_decode(std::string_view s, size_t &i);

// ---- common vocabulary machinery -------------------------------------------

// Token ids of the words already encoded during one tokenize call: natural
// text repeats words a lot, and a word's ids do not depend on its neighbours.
class WordCache {
public:
    template <typename Encode>
    void append(const std::string &word, Encode encode, std::vector<int32_t> &out) {
        auto it = ids_.find(word);
        if (it == ids_.end()) {
            std::vector<int32_t> ids;
            encode(word, ids);
            it = ids_.emplace(word, std::move(ids)).first;
        }
        out.insert(out.end(), it->second.begin(), it->second.end());
    }

private:
    std::unordered_map<std::string, std::vector<int32_t>> ids_;
};

// A run of the input: either raw text still to be tokenized or a special
// token already recognised.
struct Fragment {
    int32_t token = -1;  // >= 0: a special token
    size_t offset = 0, length = 0;
};

class VocabTokenizer : public Tokenizer {
public:
    std::vector<int32_t> tokenize(std::string_view text, bool add_special, bool parse_special) const override;
    std::string detokenize(const int32_t *ids, size_t n, bool render_special) const override;

protected:
    explicit VocabTokenizer(VocabSpec spec);

    // Appends the tokens of one raw-text fragment. `after_special` is true
    // for the first fragment and for fragments that follow a special token
    // (SentencePiece adds its space prefix there). `cache` lives for the
    // whole tokenize call, so words repeated across fragments (lines, when
    // newlines are special tokens) are encoded once.
    virtual void encode_fragment(std::string_view text, bool after_special, WordCache &cache,
                                 std::vector<int32_t> &out) const = 0;
    // Whether detokenize drops one leading space of the first piece.
    virtual bool strip_first_space() const { return false; }
    // Whether detokenize removes the spaces that word-level tokenizers put
    // before punctuation and contractions (Hugging Face's
    // clean_up_tokenization_spaces, which llama.cpp applies to most BPE
    // vocabularies): " ." " ," " !" " ?" lose the space, " ' " becomes "'",
    // " 's" " 'm" " 're" " 've" lose the space.
    virtual bool clean_spaces() const { return false; }

    int32_t find_token(std::string_view text) const {
        auto it = token_to_id_.find(text);
        return it == token_to_id_.end() ? -1 : it->second;
    }
    void check_id(int32_t id) const;

    std::unordered_map<std::string_view, int32_t> token_to_id_;  // keys point into spec_.tokens

private:
    void partition_special(std::string_view text, bool parse_special, std::vector<Fragment> &frags) const;
    // Ranks (positions in special_cache_) of the special tokens that occur
    // anywhere in text, ascending.
    std::vector<uint32_t> specials_in(std::string_view text) const;

    std::vector<int32_t> special_cache_;  // control/user-defined/unknown ids, longest text first
    // The special tokens' texts as a byte trie, to find which of them occur
    // in a text in one pass (vocabularies such as Gemma's have thousands).
    // Node 0 is the root; an edge is keyed by (node << 8 | byte).
    std::unordered_map<uint64_t, uint32_t> special_edges_;
    uint32_t special_root_[256] = {};    // the root's edges by byte (0: none)
    std::vector<int64_t> special_rank_;  // per node: rank of the token ending there, or -1
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(VocabSpec spec);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(VocabSpec spec);
std::unique_ptr<Tokenizer> make_rwkv_tokenizer(VocabSpec spec);  // rwkv.cpp

// Whether a GPT-2 style pre-tokenizer name is known (see bpe.cpp).
bool bpe_pre_supported(const std::string &pre);
// BPE pre-tokenizers for which llama.cpp adds BOS by default.
bool bpe_pre_adds_bos(const std::string &pre);

// One piece of a word during BPE merging: the byte range [off, off + n) of
// the word, linked to its neighbours; n == 0 once merged into its left.
struct MergeSymbol {
    int prev, next;
    size_t off, n;
};

// One symbol per UTF-8 character of text.
std::vector<MergeSymbol> split_utf8_symbols(std::string_view text);

// Merges adjacent symbols best pair first, as both BPE flavours do.
// propose(left, right) pushes a candidate {left, right, priority, size} for
// two neighbours (or nothing if the pair is not in the vocabulary); the queue
// orders candidates. A candidate whose sides changed since it was queued is
// skipped: llama.cpp compares the texts, and since the left start and the
// split point never move, comparing the combined length is the same test.
template <typename Candidate, typename Order, typename Propose>
void merge_symbols(std::vector<MergeSymbol> &syms, Order order, Propose propose) {
    std::vector<Candidate> storage;
    storage.reserve(syms.size());
    std::priority_queue<Candidate, std::vector<Candidate>, Order> q(order, std::move(storage));
    auto push = [&](int left, int right) {
        if (left >= 0 && right >= 0) propose(left, right, q);
    };
    for (int i = 1; i < int(syms.size()); i++) push(i - 1, i);
    while (!q.empty()) {
        const Candidate c = q.top();
        q.pop();
        MergeSymbol &l = syms[size_t(c.left)];
        MergeSymbol &r = syms[size_t(c.right)];
        if (l.n == 0 || r.n == 0 || l.n + r.n != c.size) continue;
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) syms[size_t(r.next)].prev = c.left;
        push(l.prev, c.left);
        push(c.left, l.next);
    }
}

}  // namespace kvfit
