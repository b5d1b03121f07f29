// Byte-level BPE ("gpt2" tokenizer model) as llama.cpp runs it: the text is
// split into words by a chain of regular expressions chosen by
// tokenizer.ggml.pre, each word's bytes are mapped to GPT-2's printable
// code points, and adjacent symbols are merged by merge rank.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cstdlib>
#include <cstring>

#include "common.h"
#include "tokenizer/tokenizer_impl.h"

namespace kvfit {

namespace {

// llama.cpp decides "\s" with Python's Unicode White_Space list
// (U+0009-000D, U+0020, U+0085 and the Z categories); PCRE2's own \s also
// takes U+180E, so the patterns spell the class out.
#define WS "\\t-\\r\\x{85}\\p{Z}"

// The GPT-2 word pattern. llama.cpp runs it without a final "\s+" branch;
// text no branch matches still becomes a word of its own, which gives the
// same split.
const char *const kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])";

// Llama 3: contractions in either case, letters with one leading non-letter,
// digits in groups of up to three, newlines kept with preceding spaces.
const char *const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

// Qwen 2: as Llama 3 but every digit on its own.
const char *const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS "]+(?![^" WS "])|[" WS "]+";

struct PreSpec {
    std::vector<const char *> patterns;
    bool ignore_merges = false;  // a word that is a whole token skips merging
    bool add_bos = false;        // llama.cpp's default when metadata is silent
};

// Pre-tokenizer names as llama.cpp's vocabulary loader maps them. Only the
// families below are implemented; others are rejected at load.
bool lookup_pre(const std::string &pre, PreSpec &out) {
    auto in = [&pre](std::initializer_list<const char *> names) {
        for (const char *n : names)
            if (pre == n) return true;
        return false;
    };
    if (in({"", "default"})) {
        out = {{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false};
    } else if (in({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                   "jina-v5-nano"})) {
        out = {{kLlama3}, true, true};
    } else if (in({"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"})) {
        out = {{kLlama3}, false, false};
    } else if (in({"gpt-2", "phi-2", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais", "trillion",
                   "granite-docling", "exaone4"})) {
        out = {{kGpt2}, false, false};
    } else if (in({"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"})) {
        out = {{"\\p{N}", kGpt2}, false, false};
    } else if (in({"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"})) {
        out = {{kQwen2}, false, false};
    } else if (in({"falcon"})) {
        out = {{"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}, false, false};
    } else {
        return false;
    }
    return true;
}

// GPT-2's reversible byte <-> code point table: printable Latin-1 bytes map
// to themselves, the others to U+0100 upwards in byte order.
struct ByteMap {
    std::string enc[256];      // UTF-8 of the code point for each byte
    int16_t dec[512];          // code point -> byte, -1 if none
    ByteMap() {
        for (auto &d : dec) d = -1;
        int extra = 0;
        for (int b = 0; b < 256; b++) {
            const bool keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = keep ? uint32_t(b) : uint32_t(256 + extra++);
            utf8_append(enc[b], cp);
            dec[cp] = int16_t(b);
        }
    }
};

const ByteMap &byte_map() {
    static const ByteMap m;
    return m;
}

// Compiled pattern, shared read-only by all threads.
struct Regex {
    pcre2_code *code = nullptr;
    explicit Regex(const char *pattern) {
        int err = 0;
        PCRE2_SIZE erroff = 0;
        code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                             &erroff, nullptr);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            fail(KVFIT_E_INTERNAL, "pre-tokenizer pattern does not compile at %zu: %s", size_t(erroff),
                 reinterpret_cast<const char *>(msg));
        }
        // Without JIT support PCRE2 falls back to its interpreter.
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    }
    ~Regex() { pcre2_code_free(code); }
    Regex(const Regex &) = delete;
    Regex &operator=(const Regex &) = delete;
};

// Per-call matching state (match data and a JIT stack are not shareable).
struct MatchState {
    pcre2_match_data *md = nullptr;
    pcre2_match_context *mc = nullptr;
    pcre2_jit_stack *js = nullptr;
    MatchState() {
        md = pcre2_match_data_create(16, nullptr);
        mc = pcre2_match_context_create(nullptr);
        // Room for long runs in patterns with repeated groups.
        js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
        if (!md || !mc) fail(KVFIT_E_NOMEM, "out of memory for the pre-tokenizer");
        if (js) pcre2_jit_stack_assign(mc, nullptr, js);
    }
    ~MatchState() {
        pcre2_jit_stack_free(js);
        pcre2_match_context_free(mc);
        pcre2_match_data_free(md);
    }
    MatchState(const MatchState &) = delete;
    MatchState &operator=(const MatchState &) = delete;
};

struct Span {
    size_t off, len;
};

class BpeTokenizer final : public VocabTokenizer {
public:
    explicit BpeTokenizer(VocabSpec spec) : VocabTokenizer(std::move(spec)) {
        if (!lookup_pre(spec_.pre, pre_))
            fail(KVFIT_E_UNSUPPORTED, "unsupported pre-tokenizer '%s' for the gpt2 tokenizer", spec_.pre.c_str());
        for (const char *p : pre_.patterns) regexes_.emplace_back(new Regex(p));
        // Keys are the merge lines themselves ("left right"); the first
        // occurrence of a pair wins, as with llama.cpp's emplace.
        ranks_.reserve(spec_.merges.size());
        for (size_t i = 0; i < spec_.merges.size(); i++) {
            const std::string &m = spec_.merges[i];
            if (m.size() < 2 || m.find(' ', 1) == std::string::npos) continue;
            ranks_.emplace(std::string_view(m), int32_t(i));
        }
    }

    // As llama.cpp: on for byte-level BPE except the pre-tokenizers whose
    // loader turns it off.
    bool clean_spaces() const override {
        for (const char *p : {"trillion", "granite-docling", "command-r", "smollm", "qwen2", "deepseek-r1-qwen", "kormo",
                              "f2llmv2", "hunyuan", "solar-open"})
            if (spec_.pre == p) return false;
        return true;
    }

    std::string token_to_piece(int32_t id, bool render_special) const override {
        check_id(id);
        const int32_t type = spec_.token_types[size_t(id)];
        const std::string &text = spec_.tokens[size_t(id)];
        if (type == TOKEN_CONTROL || type == TOKEN_UNKNOWN) return render_special ? text : std::string();
        if (type == TOKEN_USER_DEFINED) return text;
        if (type == TOKEN_NORMAL) return decode_bytes(text);
        if (type == TOKEN_BYTE) {
            if (text.size() < 6) return std::string();
            return std::string(1, char(std::strtol(text.substr(3, 2).c_str(), nullptr, 16)));
        }
        return std::string();
    }

protected:
    void encode_fragment(std::string_view text, bool, WordCache &cache, std::vector<int32_t> &out) const override {
        std::vector<Span> words = split(text);
        const ByteMap &bm = byte_map();
        std::string word;
        auto encode = [this](const std::string &wd, std::vector<int32_t> &ids) { encode_word(wd, ids); };
        for (const Span &w : words) {
            word.clear();
            for (size_t i = 0; i < w.len; i++) word += bm.enc[static_cast<unsigned char>(text[w.off + i])];
            cache.append(word, encode, out);
        }
    }

private:
    // Applies the pattern chain: each pattern splits every piece so far into
    // its matches and the text between them (both kept).
    std::vector<Span> split(std::string_view text) const {
        std::vector<Span> pieces{{0, text.size()}}, next;
        if (text.empty()) return {};
        // One per thread: creating the JIT stack per call would cost a mapping each time.
        thread_local MatchState st;
        for (const auto &re : regexes_) {
            next.clear();
            for (const Span &p : pieces) split_piece(*re, text, p, st, next);
            pieces.swap(next);
        }
        return pieces;
    }

    static void split_piece(const Regex &re, std::string_view text, const Span &p, MatchState &st, std::vector<Span> &out) {
        // The piece is the whole subject: lookaheads stop at its end, as in
        // llama.cpp, which matches each piece separately.
        const auto *subject = reinterpret_cast<PCRE2_SPTR>(text.data() + p.off);
        const PCRE2_SIZE len = p.len;
        PCRE2_SIZE pos = 0, last = 0;
        uint32_t opts = 0;
        while (pos <= len) {
            const int rc = pcre2_match(re.code, subject, len, pos, opts | PCRE2_NO_UTF_CHECK, st.md, st.mc);
            if (rc == PCRE2_ERROR_NOMATCH) {
                if (opts == 0) break;
                // No non-empty match at an empty match's position: step one
                // character on, as std::regex_iterator does.
                opts = 0;
                pos += utf8_seq_len(pos < len ? subject[pos] : 0);
                continue;
            }
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                fail(KVFIT_E_INTERNAL, "pre-tokenizer match failed: %s", reinterpret_cast<const char *>(msg));
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st.md);
            const PCRE2_SIZE ms = ov[0], me = ov[1];
            if (me == ms) {
                // Empty matches yield no word; look for a non-empty one here.
                pos = ms;
                opts = PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED;
                continue;
            }
            opts = 0;
            if (ms > last) out.push_back({p.off + last, ms - last});
            out.push_back({p.off + ms, me - ms});
            last = pos = me;
        }
        if (last < len) out.push_back({p.off + last, len - last});
    }

    int32_t rank(std::string_view left, std::string_view right, std::string &key) const {
        key.assign(left.data(), left.size());
        key += ' ';
        key.append(right.data(), right.size());
        auto it = ranks_.find(std::string_view(key));
        return it == ranks_.end() ? -1 : it->second;
    }

    struct Bigram {
        int left, right;
        int32_t rank;
        size_t size;
    };
    // Lowest rank first; on equal ranks the leftmost pair.
    struct BigramLess {
        bool operator()(const Bigram &a, const Bigram &b) const {
            return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
        }
    };

    void encode_word(const std::string &word, std::vector<int32_t> &out) const {
        if (pre_.ignore_merges) {
            const int32_t id = find_token(word);
            if (id >= 0) {
                out.push_back(id);
                return;
            }
        }
        std::vector<MergeSymbol> syms = split_utf8_symbols(word);
        const std::string_view w(word);
        std::string key;
        merge_symbols<Bigram>(syms, BigramLess(), [&](int left, int right, auto &q) {
            const MergeSymbol &l = syms[size_t(left)], &r = syms[size_t(right)];
            const int32_t rk = rank(w.substr(l.off, l.n), w.substr(r.off, r.n), key);
            if (rk >= 0) q.push({left, right, rk, l.n + r.n});
        });
        for (int i = syms.empty() ? -1 : 0; i != -1; i = syms[size_t(i)].next) {
            const MergeSymbol &s = syms[size_t(i)];
            const int32_t id = find_token(w.substr(s.off, s.n));
            if (id >= 0) {
                out.push_back(id);
                continue;
            }
            // No such token: llama.cpp looks up each raw byte of the symbol
            // and silently drops bytes that are not tokens either.
            for (size_t k = 0; k < s.n; k++) {
                const int32_t b = find_token(w.substr(s.off + k, 1));
                if (b >= 0) out.push_back(b);
            }
        }
    }

    // Token text back to bytes through the byte map. A code point outside
    // the map gives llama.cpp's "[UNK_BYTE_0x..]" marker.
    static std::string decode_bytes(const std::string &text) {
        const ByteMap &bm = byte_map();
        std::string out;
        out.reserve(text.size());
        for (size_t i = 0; i < text.size();) {
            const size_t start = i;
            const uint32_t cp = utf8_decode(text, i);
            if (i > text.size()) i = text.size();
            if (cp < 512 && bm.dec[cp] >= 0) {
                out += char(bm.dec[cp]);
            } else {
                out += "[UNK_BYTE_0x";
                static const char hex[] = "0123456789abcdef";
                for (size_t k = start; k < i; k++) {
                    const auto c = static_cast<unsigned char>(text[k]);
                    out += hex[c >> 4];
                    out += hex[c & 15];
                }
                out += text;
                out += ']';
            }
        }
        return out;
    }

    PreSpec pre_;
    std::vector<std::unique_ptr<Regex>> regexes_;
    std::unordered_map<std::string_view, int32_t> ranks_;  // keys point into spec_.merges
};

}  // namespace

bool bpe_pre_supported(const std::string &pre) {
    PreSpec p;
    return lookup_pre(pre, p);
}

bool bpe_pre_adds_bos(const std::string &pre) {
    PreSpec p;
    return lookup_pre(pre, p) && p.add_bos;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(VocabSpec spec) {
    return std::unique_ptr<Tokenizer>(new BpeTokenizer(std::move(spec)));
}

}  // namespace kvfit
