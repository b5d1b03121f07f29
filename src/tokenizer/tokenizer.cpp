// Tokenizer base: token attribute fix-ups and end-of-generation detection,
// special-token partition of the input and the tokenize/detokenize drivers
// shared by the SentencePiece and byte-level BPE models.
#include <algorithm>

#include "common.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

namespace {

// Roles that llama.cpp recognises by token text because converters often do
// not record them in metadata. The same lists decide which tokens end
// generation and which are promoted to control tokens.
enum Role : unsigned {
    ROLE_EOT = 1u << 0, ROLE_EOM = 1u << 1, ROLE_FIM_PRE = 1u << 2, ROLE_FIM_SUF = 1u << 3,
    ROLE_FIM_MID = 1u << 4, ROLE_FIM_PAD = 1u << 5, ROLE_FIM_REP = 1u << 6, ROLE_FIM_SEP = 1u << 7,
    ROLE_EOG = 1u << 8,
};

const std::unordered_map<std::string_view, unsigned> &role_table() {
    static const std::unordered_map<std::string_view, unsigned> table = [] {
        std::unordered_map<std::string_view, unsigned> t;
        auto add = [&t](unsigned role, std::initializer_list<const char *> texts) {
            for (const char *s : texts) t[s] |= role;
        };
        add(ROLE_EOT, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                       "<EOT>", "_<EOT>", "[EOT]", "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",
                       "<end_of_utterance>"});
        add(ROLE_EOM, {"<|eom_id|>"});
        add(ROLE_FIM_PRE, {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>",
                           "<PRE>", "\xE2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"});
        add(ROLE_FIM_SUF, {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81hole\xEF\xBD\x9C>",
                           "<SUF>", "\xE2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"});
        add(ROLE_FIM_MID, {"<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>",
                           "<MID>", "\xE2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"});
        add(ROLE_FIM_PAD, {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"});
        add(ROLE_FIM_REP, {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"});
        add(ROLE_FIM_SEP, {"<|file_sep|>"});
        add(ROLE_EOG, {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                       "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                       "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                       "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>", "[e~["});
        return t;
    }();
    return table;
}

}  // namespace

Tokenizer::Tokenizer(VocabSpec spec) : spec_(std::move(spec)) {
    const size_t n = spec_.tokens.size();
    if (n == 0) fail(KVFIT_E_FORMAT, "tokenizer vocabulary is empty");
    if (!spec_.scores.empty() && spec_.scores.size() < n)
        fail(KVFIT_E_FORMAT, "tokenizer has %zu scores for %zu tokens", spec_.scores.size(), n);
    if (!spec_.token_types.empty() && spec_.token_types.size() < n)
        fail(KVFIT_E_FORMAT, "tokenizer has %zu token types for %zu tokens", spec_.token_types.size(), n);
    spec_.scores.resize(n, 0.0f);
    spec_.token_types.resize(n, TOKEN_NORMAL);
    for (size_t i = 0; i < n; i++) {
        // llama.cpp renames empty tokens so that every text is a distinct key.
        if (spec_.tokens[i].empty()) spec_.tokens[i] = "[EMPTY_" + std::to_string(i) + "]";
        if (spec_.token_types[i] < TOKEN_UNDEFINED || spec_.token_types[i] > TOKEN_BYTE) spec_.token_types[i] = TOKEN_UNDEFINED;
    }
    for (int32_t *id : {&spec_.bos, &spec_.eos, &spec_.unk, &spec_.pad, &spec_.eot, &spec_.eom})
        if (*id < 0 || size_t(*id) >= n) *id = -1;

    auto &types = spec_.token_types;
    auto make_control = [&types](int32_t id) { types[size_t(id)] = TOKEN_CONTROL; };

    // Roles found by text: the first token (in id order) for each role that
    // metadata did not name; such tokens become control tokens.
    int32_t fim[6] = {-1, -1, -1, -1, -1, -1};  // pre, suf, mid, pad, rep, sep
    const auto &roles = role_table();
    std::vector<int32_t> eog_by_text;
    for (size_t i = 0; i < n; i++) {
        auto it = roles.find(spec_.tokens[i]);
        if (it == roles.end()) continue;
        const int32_t id = int32_t(i);
        const unsigned r = it->second;
        if ((r & ROLE_EOT) && spec_.eot < 0) { spec_.eot = id; make_control(id); }
        if ((r & ROLE_EOM) && spec_.eom < 0) { spec_.eom = id; make_control(id); }
        for (int k = 0; k < 6; k++)
            if ((r & (ROLE_FIM_PRE << k)) && fim[k] < 0) { fim[k] = id; make_control(id); }
        if (r & ROLE_EOG) eog_by_text.push_back(id);
    }

    // End-of-generation set, built in llama.cpp's order: FIM pad/repo/sep,
    // tokens with end-like text, then eos/eot/eom.
    std::vector<int32_t> eog;
    for (int k = 3; k < 6; k++)
        if (fim[k] >= 0) eog.push_back(fim[k]);
    for (int32_t id : eog_by_text) {
        eog.push_back(id);
        make_control(id);
    }
    // gpt-oss marks these as control but expects them rendered as text.
    for (const char *s : {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})
        for (size_t i = 0; i < n; i++)
            if (spec_.tokens[i] == s) types[i] = TOKEN_USER_DEFINED;
    for (int32_t id : {spec_.eos, spec_.eot, spec_.eom})
        if (id >= 0) eog.push_back(id);
    std::sort(eog.begin(), eog.end());
    eog.erase(std::unique(eog.begin(), eog.end()), eog.end());

    auto eog_with_text = [&](const char *s) -> int32_t {
        for (int32_t id : eog)
            if (spec_.tokens[size_t(id)] == s) return id;
        return -1;
    };
    auto eog_remove = [&](int32_t id) { eog.erase(std::find(eog.begin(), eog.end(), id)); };
    // Harmony-style vocabularies: "<|end|>" ends a message, not the generation.
    {
        const bool has_return = eog_with_text("<|return|>") >= 0;
        const bool has_call = eog_with_text("<|call|>") >= 0 || eog_with_text("<|calls|>") >= 0;
        const bool has_flush = eog_with_text("<|flush|>") >= 0;
        const int32_t end_id = eog_with_text("<|end|>");
        if (end_id >= 0 && has_call && (has_return || has_flush)) {
            eog_remove(end_id);
            types[size_t(end_id)] = TOKEN_USER_DEFINED;
        }
    }
    // Gemma 4 style vocabularies use "</s>" as ordinary text.
    {
        const int32_t s_id = eog_with_text("</s>");
        if (s_id >= 0 && eog_with_text("<|tool_response>") >= 0) {
            eog_remove(s_id);
            types[size_t(s_id)] = TOKEN_NORMAL;
        }
    }
    eog_ids_ = std::move(eog);
}

bool Tokenizer::is_eog(int32_t id) const { return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id); }

bool Tokenizer::is_control(int32_t id) const {
    return id >= 0 && id < n_vocab() && spec_.token_types[size_t(id)] == TOKEN_CONTROL;
}

std::unique_ptr<Tokenizer> Tokenizer::create(VocabSpec spec) {
    if (spec.model == "llama") return make_spm_tokenizer(std::move(spec));
    if (spec.model == "rwkv") return make_rwkv_tokenizer(std::move(spec));
    if (spec.model == "gpt2") {
        if (!bpe_pre_supported(spec.pre))
            fail(KVFIT_E_UNSUPPORTED, "unsupported pre-tokenizer '%s' for the gpt2 tokenizer", spec.pre.c_str());
        return make_bpe_tokenizer(std::move(spec));
    }
    fail(KVFIT_E_UNSUPPORTED, "unsupported tokenizer model '%s'", spec.model.c_str());
}

// ---- VocabTokenizer --------------------------------------------------------

VocabTokenizer::VocabTokenizer(VocabSpec spec) : Tokenizer(std::move(spec)) {
    const auto &tokens = spec_.tokens;
    token_to_id_.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); i++) {
        auto res = token_to_id_.emplace(std::string_view(tokens[i]), int32_t(i));
        if (!res.second)
            fail(KVFIT_E_FORMAT, "duplicate token in vocabulary: '%s' has ids %d and %zu", tokens[i].c_str(),
                 res.first->second, i);
    }
    if (spec_.add_bos && spec_.bos < 0) fail(KVFIT_E_FORMAT, "the vocabulary asks for BOS but has no BOS token");
    if (spec_.add_eos && spec_.eos < 0) fail(KVFIT_E_FORMAT, "the vocabulary asks for EOS but has no EOS token");

    for (size_t i = 0; i < tokens.size(); i++) {
        const int32_t t = spec_.token_types[i];
        if (t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED || t == TOKEN_UNKNOWN) special_cache_.push_back(int32_t(i));
    }
    // Longest text first, as llama.cpp orders them (same std::sort call, so
    // ties come out in the same order with the same standard library).
    std::sort(special_cache_.begin(), special_cache_.end(),
              [&tokens](int32_t a, int32_t b) { return tokens[size_t(a)].size() > tokens[size_t(b)].size(); });

    special_rank_.assign(1, -1);
    for (size_t r = 0; r < special_cache_.size(); r++) {
        uint32_t node = 0;
        for (char c : tokens[size_t(special_cache_[r])]) {
            const uint64_t key = uint64_t(node) << 8 | static_cast<unsigned char>(c);
            auto it = special_edges_.find(key);
            if (it == special_edges_.end()) {
                it = special_edges_.emplace(key, uint32_t(special_rank_.size())).first;
                special_rank_.push_back(-1);
            }
            node = it->second;
        }
        special_rank_[node] = int64_t(r);
    }
    for (int b = 0; b < 256; b++) {
        auto it = special_edges_.find(uint64_t(b));
        special_root_[b] = it == special_edges_.end() ? 0 : it->second;
    }
}

std::vector<uint32_t> VocabTokenizer::specials_in(std::string_view text) const {
    std::vector<uint32_t> ranks;
    if (special_cache_.empty()) return ranks;
    // A mark per token, not a list of every match: runs such as a megabyte
    // of newlines match dozens of run tokens at every position.
    std::vector<char> seen(special_cache_.size(), 0);
    for (size_t start = 0; start < text.size(); start++) {
        uint32_t node = special_root_[static_cast<unsigned char>(text[start])];
        for (size_t i = start + 1; node != 0; i++) {
            if (special_rank_[node] >= 0) seen[size_t(special_rank_[node])] = 1;
            if (i == text.size()) break;
            auto it = special_edges_.find(uint64_t(node) << 8 | static_cast<unsigned char>(text[i]));
            node = it == special_edges_.end() ? 0 : it->second;
        }
    }
    for (size_t r = 0; r < seen.size(); r++)
        if (seen[r]) ranks.push_back(uint32_t(r));
    return ranks;
}

void VocabTokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab()) fail(KVFIT_E_TOKEN, "token id %d is outside the vocabulary [0, %d)", id, n_vocab());
}

// Splits the text at occurrences of special tokens: each special token in
// turn (longest first) is cut out of every fragment that is still raw text.
// Without parse_special only user-defined tokens are cut out, as in
// llama.cpp (and Hugging Face tokenizers for added tokens).
void VocabTokenizer::partition_special(std::string_view text, bool parse_special, std::vector<Fragment> &frags) const {
    frags.clear();
    if (text.empty()) return;
    frags.push_back({-1, 0, text.size()});
    std::vector<Fragment> next;
    // Most special tokens never occur in the input: only those that do can
    // cut a fragment, and they are taken in the same order.
    for (uint32_t rank : specials_in(text)) {
        const int32_t id = special_cache_[rank];
        const int32_t type = spec_.token_types[size_t(id)];
        if (!parse_special && (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN)) continue;
        const std::string &tok = spec_.tokens[size_t(id)];
        next.clear();
        for (const Fragment &f : frags) {
            if (f.token >= 0) { next.push_back(f); continue; }
            const std::string_view region = text.substr(0, f.offset + f.length);
            size_t cur = f.offset;
            for (;;) {
                const size_t m = region.find(tok, cur);
                if (m == std::string_view::npos) break;
                if (m > cur) next.push_back({-1, cur, m - cur});
                next.push_back({id, 0, 0});
                cur = m + tok.size();
            }
            if (cur < f.offset + f.length) next.push_back({-1, cur, f.offset + f.length - cur});
        }
        frags.swap(next);
    }
}

std::vector<int32_t> VocabTokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
    utf8_check(text);
    std::vector<Fragment> frags;
    partition_special(text, parse_special, frags);

    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    if (add_special && spec_.add_bos) out.push_back(spec_.bos);
    bool after_special = true;
    WordCache cache;
    for (const Fragment &f : frags) {
        if (f.token >= 0) {
            out.push_back(f.token);
            after_special = true;
        } else {
            encode_fragment(text.substr(f.offset, f.length), after_special, cache, out);
            after_special = false;
        }
    }
    if (add_special && spec_.add_eos) out.push_back(spec_.eos);
    return out;
}

namespace {

// The three passes of clean_spaces(), each over the previous one's output,
// in the order llama.cpp runs them (the order matters: " ' s" is not a
// contraction once the second pass has joined it to "'s").
std::string clean_tokenization_spaces(const std::string &in) {
    std::string a;  // 1: no space before . , ! ?
    a.reserve(in.size());
    for (size_t i = 0; i < in.size(); i++) {
        const char c = in[i];
        if (i > 0 && in[i - 1] == ' ' && !a.empty() && (c == '.' || c == ',' || c == '!' || c == '?')) a.pop_back();
        a += c;
    }
    std::string b;  // 2: " ' " -> "'"
    b.reserve(a.size());
    for (size_t i = 0; i < a.size(); i++) {
        // b.back(), not a[i - 1]: a space already joined to an apostrophe is gone.
        if (a[i] == '\'' && !b.empty() && b.back() == ' ' && i + 1 < a.size() && a[i + 1] == ' ') {
            b.pop_back();
            b += '\'';
            i++;  // and the space after it
            continue;
        }
        b += a[i];
    }
    std::string c;  // 3: " 's" " 'm" " 're" " 've" -> no space
    c.reserve(b.size());
    for (size_t i = 0; i < b.size(); i++) {
        if (b[i] == '\'' && i > 0 && b[i - 1] == ' ' && i + 1 < b.size()) {
            const char x1 = b[i + 1];
            const bool two = i + 2 < b.size() && b[i + 2] == 'e' && (x1 == 'r' || x1 == 'v');
            if (x1 == 's' || x1 == 'm' || two) c.pop_back();
        }
        c += b[i];
    }
    return c;
}

}  // namespace

std::string VocabTokenizer::detokenize(const int32_t *ids, size_t n, bool render_special) const {
    std::string out;
    for (size_t i = 0; i < n; i++) {
        std::string piece = token_to_piece(ids[i], render_special);
        // llama.cpp strips one leading space of the first token only, even
        // when that token renders as nothing.
        if (i == 0 && strip_first_space() && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
        out += piece;
    }
    return clean_spaces() ? clean_tokenization_spaces(out) : out;
}

}  // namespace kvfit
