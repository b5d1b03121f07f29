// Tokenizers against llama.cpp: its test-tokenizer-0 vectors for a
// SentencePiece and a byte-level BPE vocabulary, ids llama.cpp gives on the
// real models (Gemma 3's 262K vocabulary through a recorded reference file),
// special-token parsing, UTF-8 handling, streaming and round trips.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// Project headers before cmocka.h: its fail() macro would clash with kvfit::fail.
#include "common.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

extern "C" {
#include <cmocka.h>  // its header has no C++ guard of its own
}

using namespace kvfit;

namespace {

using Ids = std::vector<int32_t>;

std::unique_ptr<Tokenizer> load(const char *path) {
    auto f = GGUFFile::open(path);
    return Tokenizer::create(vocab_spec_from_gguf(*f));
}

// Loads a data file's tokenizer, or skips the test (with the reason) when
// the file is absent.
#define LOAD_OR_SKIP(var, path_expr, what)                                       \
    const char *var##_path = (path_expr);                                        \
    if (!var##_path) {                                                           \
        print_message("skipped: %s not found (set KVFIT_TEST_DATA)\n", what);    \
        skip();                                                                  \
    }                                                                            \
    std::unique_ptr<Tokenizer> var = load(var##_path)

std::string read_text(const char *path) {
    size_t n = 0;
    char *buf = test_read_file(path, &n);
    assert_non_null(buf);
    std::string s(buf, n);
    free(buf);
    return s;
}

std::string ids_str(const Ids &ids) {
    std::string s;
    for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
    return s;
}

void assert_ids(const Ids &got, const Ids &want) {
    if (got != want) {
        print_error("got  [%s]\nwant [%s]\n", ids_str(got).c_str(), ids_str(want).c_str());
        fail_msg("token ids differ");
    }
}

// Where Gemma 3 270M is: $KVFIT_GEMMA3, else where `make models` puts it.
// A plain C string: skip() jumps out of a test without running destructors.
const char *gemma3_path() {
    const char *env = getenv("KVFIT_GEMMA3");
    return env && *env ? env : KVFIT_MODELS_DIR "/gemma-3-270m-q4_k_m.gguf";
}

bool file_exists(const char *path) {
    FILE *f = fopen(path, "rb");
    if (f) fclose(f);
    return f != nullptr;
}

kvfit_status status_of(void (*fn)(const Tokenizer &), const Tokenizer &t) {
    try {
        fn(t);
        return KVFIT_OK;
    } catch (const Error &e) {
        return e.status();
    }
}

// Reads <vocab>.inp/.out the way llama.cpp's test-tokenizer-0 does: inputs
// separated by "\n__ggml_vocab_test__\n", one line of ids per input, kept
// in a std::map (so a repeated input counts once), tokenized with
// add_special = false and parse_special = false.
void run_vocab_vectors(const char *vocab_rel) {
    // test_data_path returns a static buffer: copy each path.
    auto path = [](const std::string &rel) {
        const char *p = test_data_path(rel.c_str());
        return p ? std::string(p) : std::string();
    };
    const std::string vocab = path(vocab_rel), inp = path(std::string(vocab_rel) + ".inp"),
                      outp = path(std::string(vocab_rel) + ".out");
    if (vocab.empty() || inp.empty() || outp.empty()) {
        print_message("skipped: %s(.inp/.out) not found (set KVFIT_TEST_DATA)\n", vocab_rel);
        skip();
    }
    std::unique_ptr<Tokenizer> tok = load(vocab.c_str());
    const std::string raw = read_text(inp.c_str()), outs = read_text(outp.c_str());

    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> inputs;
    for (size_t pos = 0; pos < raw.size();) {
        const size_t next = raw.find(sep, pos);
        if (next == std::string::npos) {
            inputs.push_back(raw.substr(pos));
            break;
        }
        inputs.push_back(raw.substr(pos, next - pos));
        pos = next + sep.size();
    }
    std::vector<std::string> lines;
    std::istringstream os(outs);
    for (std::string line; std::getline(os, line);) lines.push_back(line);
    assert_int_equal(inputs.size(), lines.size());
    assert_true(!inputs.empty());

    std::map<std::string, Ids> tests;
    for (size_t i = 0; i < inputs.size(); i++) {
        Ids ids;
        std::istringstream ls(lines[i]);
        for (int32_t v; ls >> v;) ids.push_back(v);
        tests[inputs[i]] = ids;
    }
    size_t passed = 0;
    for (const auto &t : tests) {
        const Ids got = tok->tokenize(t.first, false, false);
        if (got == t.second) {
            passed++;
        } else {
            print_error("input '%s'\n  got  [%s]\n  want [%s]\n", t.first.c_str(), ids_str(got).c_str(),
                        ids_str(t.second).c_str());
        }
    }
    print_message("%s: %zu/%zu vectors match llama.cpp\n", vocab_rel, passed, tests.size());
    assert_int_equal(passed, tests.size());
}

void test_spm_vectors(void **) { run_vocab_vectors("vocab/ggml-vocab-llama-spm.gguf"); }
void test_bpe_vectors(void **) { run_vocab_vectors("vocab/ggml-vocab-gpt-2.gguf"); }

// ---- SentencePiece ----------------------------------------------------------

void test_spm_special(void **) {
    LOAD_OR_SKIP(tok, test_data_path("vocab/ggml-vocab-llama-spm.gguf"), "vocab/ggml-vocab-llama-spm.gguf");
    const VocabSpec &s = tok->spec();
    assert_string_equal(s.model.c_str(), "llama");
    assert_true(s.add_bos);
    assert_false(s.add_eos);
    assert_true(s.add_space_prefix);
    assert_int_equal(s.bos, 1);
    assert_int_equal(s.eos, 2);
    assert_int_equal(s.unk, 0);

    // add_special: BOS only; an empty text gives just BOS.
    assert_ids(tok->tokenize("", true, false), {1});
    assert_ids(tok->tokenize("", false, false), {});
    const Ids hello = tok->tokenize("Hello", false, false);
    Ids with_bos = {1};
    with_bos.insert(with_bos.end(), hello.begin(), hello.end());
    assert_ids(tok->tokenize("Hello", true, false), with_bos);

    // parse_special: "<s>" and "</s>" become tokens; the text after a
    // special token gets the space prefix again.
    const Ids parsed = tok->tokenize("<s>Hello</s>", false, true);
    Ids want = {1};
    want.insert(want.end(), hello.begin(), hello.end());
    want.push_back(2);
    assert_ids(parsed, want);
    // Without it they are text.
    const Ids plain = tok->tokenize("<s>Hello</s>", false, false);
    for (int32_t id : plain) assert_true(id != 1 && id != 2);
    assert_string_equal(tok->detokenize(plain.data(), plain.size(), false).c_str(), "<s>Hello</s>");
    // The unknown token is special too.
    assert_ids(tok->tokenize("<unk>", false, true), {0});

    assert_true(tok->is_eog(2));
    assert_false(tok->is_eog(1));
    assert_true(tok->is_control(1));
    assert_false(tok->is_control(hello[0]));
    assert_string_equal(tok->token_to_piece(1, false).c_str(), "");
    assert_string_equal(tok->token_to_piece(1, true).c_str(), "<s>");
    // U+2581 is a space in pieces; detokenize drops the first one.
    assert_string_equal(tok->token_to_piece(hello[0], false).c_str(), " Hello");
    assert_string_equal(tok->detokenize(hello.data(), hello.size(), false).c_str(), "Hello");

    // Byte fallback: a character without a token becomes <0xXX> tokens.
    const Ids llama = tok->tokenize("\xF0\x9F\xA6\x99", false, false);  // U+1F999
    assert_int_equal(llama.size(), 5);  // "▁" + 4 byte tokens
    std::string bytes;
    for (size_t i = 1; i < llama.size(); i++) bytes += tok->token_to_piece(llama[i], false);
    assert_string_equal(bytes.c_str(), "\xF0\x9F\xA6\x99");
}

void test_stories260K(void **) {
    LOAD_OR_SKIP(tok, test_data_path("models/stories260K.gguf"), "models/stories260K.gguf");
    assert_int_equal(tok->n_vocab(), 512);
    // Ids llama.cpp gives for these inputs.
    assert_ids(tok->tokenize("Once upon a time, there was a little girl.", true, false),
               {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 426});
    assert_ids(tok->tokenize("<s>Hi</s>", true, true), {1, 1, 320, 417, 2});
    assert_ids(tok->tokenize("<s>Hi</s>", false, false), {410, 504, 419, 505, 440, 417, 504, 492, 419, 505});
    assert_ids(tok->tokenize("\xC3\x9C\xF0\x9F\xA6\x99", false, false), {410, 198, 159, 243, 162, 169, 156});
    assert_true(tok->is_eog(2));
    const std::string text = "One day, Lily saw a big dog in the park. She said: \"Hello!\"";
    const Ids ids = tok->tokenize(text, false, false);
    assert_string_equal(tok->detokenize(ids.data(), ids.size(), false).c_str(), text.c_str());
}

// A hand-made SentencePiece vocabulary: merge order follows the scores.
VocabSpec tiny_spm(float score_a, float score_ab) {
    VocabSpec s;
    s.model = "llama";
    s.tokens = {"<unk>", "<s>", "</s>"};
    s.token_types = {TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL};
    s.scores = {0, 0, 0};
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        s.tokens.push_back(name);
        s.token_types.push_back(TOKEN_BYTE);
        s.scores.push_back(0);
    }
    const std::vector<std::pair<std::string, float>> normal = {
        {"\xE2\x96\x81", -10}, {"a", -20}, {"b", -20}, {"\xE2\x96\x81" "a", score_a}, {"ab", score_ab}};
    for (const auto &p : normal) {
        s.tokens.push_back(p.first);
        s.token_types.push_back(TOKEN_NORMAL);
        s.scores.push_back(p.second);
    }
    // Typed normal, but its text marks it as an end-of-turn token.
    s.tokens.push_back("<|im_end|>");
    s.token_types.push_back(TOKEN_NORMAL);
    s.scores.push_back(0);
    s.bos = 1;
    s.eos = 2;
    s.unk = 0;
    s.add_bos = true;
    s.add_space_prefix = true;
    return s;
}

void test_spm_merge_order(void **) {
    const int32_t SP = 259, B = 261, SPA = 262, AB = 263, IM_END = 264;
    auto t1 = Tokenizer::create(tiny_spm(-1, -5));  // "▁a" wins over "ab"
    assert_ids(t1->tokenize("ab", false, false), {SPA, B});
    auto t2 = Tokenizer::create(tiny_spm(-5, -1));  // "ab" wins over "▁a"
    assert_ids(t2->tokenize("ab", false, false), {SP, AB});
    // "c" has no token: its byte token.
    assert_ids(t2->tokenize("c", true, false), {1, SP, 3 + 'c'});
    // The end-like text promotes the token to control and end-of-generation.
    assert_true(t2->is_control(IM_END));
    assert_true(t2->is_eog(IM_END));
    assert_true(t2->is_eog(2));
    assert_ids(t2->tokenize("<|im_end|>", false, true), {IM_END});
}

// ---- Gemma 3 against llama.cpp ----------------------------------------------

// Text field of tests/data/tokenizer-gemma3.txt: hex bytes, "-" for empty,
// "=" for the same bytes as the record's text field before it.
std::string unhex(const std::string &h, const std::string &previous = std::string()) {
    if (h == "=") return previous;
    if (h == "-") return std::string();
    std::string out;
    for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}

// Prints a text for a failure message: printable ASCII as is, the rest escaped.
std::string shown(const std::string &s) {
    std::string out;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7F && c != '\\') {
            out += char(c);
        } else {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02X", c);
            out += buf;
        }
    }
    return out.size() > 160 ? out.substr(0, 157) + "..." : out;
}

// FNV-1a 64, as tokenizer-gemma3.txt digests whole files: of the text's
// bytes, or of the ids as int32 little-endian.
std::string fnv1a64(const std::string &bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
    char buf[17];
    snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

std::string fnv1a64(const Ids &ids) {
    std::string bytes;
    for (int32_t id : ids)
        for (int k = 0; k < 4; k++) bytes += char(uint32_t(id) >> (8 * k) & 0xFF);
    return fnv1a64(bytes);
}

// Gemma 3's 262K-token SentencePiece vocabulary (no space prefix, newline,
// tab and space runs as user-defined tokens, byte fallback) against what
// llama.cpp gave on the same file: tokenizer-gemma3.txt, recorded by
// tests/peer/record_tokenizer.py. Every token id, both detokenizations,
// token pieces, the end-of-generation and control sets must match.
void test_gemma3_llamacpp(void **) {
    const char *path = gemma3_path();
    if (!file_exists(path)) {
        print_message("skipped: %s not found (make models, or set KVFIT_GEMMA3)\n", path);
        skip();
    }
    std::unique_ptr<Tokenizer> tok = load(path);
    const VocabSpec &spec = tok->spec();
    const std::string ref = read_text(test_repo_data("tokenizer-gemma3.txt"));

    size_t tok_cases = 0, tok_ok = 0, piece_cases = 0, piece_ok = 0, text_cases = 0, text_ok = 0, failures = 0;
    auto report = [&failures](const std::string &msg) {
        if (++failures <= 12) print_error("%s\n", msg.c_str());
    };
    std::istringstream lines(ref);
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ls(line);
        std::string kind;
        ls >> kind;
        if (kind == "meta") {
            std::string key, value;
            ls >> key >> value;
            if (key == "sha256") print_message("reference recorded on the file with sha256 %s\n", value.c_str());
            else if (key == "n_vocab") assert_int_equal(tok->n_vocab(), std::stoi(value));
            else if (key == "bos") assert_int_equal(spec.bos, std::stoi(value));
            else if (key == "eos") assert_int_equal(spec.eos, std::stoi(value));
            else if (key == "eot") assert_int_equal(spec.eot, std::stoi(value));
            else if (key == "add_bos") assert_int_equal(spec.add_bos, std::stoi(value));
            else if (key == "add_eos") assert_int_equal(spec.add_eos, std::stoi(value));
        } else if (kind == "eog" || kind == "control") {
            size_t n = 0;
            ls >> n;
            std::vector<char> want(size_t(tok->n_vocab()), 0);
            size_t count = 0;
            for (std::string item; ls >> item;) {
                const size_t dash = item.find('-');
                const int a = std::stoi(item.substr(0, dash));
                const int b = dash == std::string::npos ? a : std::stoi(item.substr(dash + 1));
                for (int id = a; id <= b; id++, count++) want[size_t(id)] = 1;
            }
            assert_int_equal(count, n);
            for (int32_t id = 0; id < tok->n_vocab(); id++) {
                const bool got = kind == "eog" ? tok->is_eog(id) : tok->is_control(id);
                if (got != bool(want[size_t(id)]))
                    fail_msg("%s: token %d ('%s') is %s in kvfit but not in llama.cpp", kind.c_str(), id,
                             shown(spec.tokens[size_t(id)]).c_str(), got ? kind.c_str() : "not");
            }
        } else if (kind == "tok") {
            int add_special = 0, parse_special = 0;
            std::string text_hex, detok_hex, detok_special_hex;
            size_t n = 0;
            ls >> add_special >> parse_special >> text_hex >> detok_hex >> detok_special_hex >> n;
            Ids want;
            for (int32_t id; ls >> id;) want.push_back(id);
            assert_int_equal(want.size(), n);
            const std::string text = unhex(text_hex);
            const std::string want_detok = unhex(detok_hex, text);
            const std::string want_detok_special = unhex(detok_special_hex, want_detok);
            const std::string flags = "add_special=" + std::to_string(add_special) +
                                      " parse_special=" + std::to_string(parse_special);
            tok_cases++;
            const Ids got = tok->tokenize(text, add_special != 0, parse_special != 0);
            if (got != want) {
                report("'" + shown(text) + "' (" + flags + ")\n  got  [" + ids_str(got) + "]\n  want [" +
                       ids_str(want) + "]");
                continue;
            }
            const std::string detok = tok->detokenize(got.data(), got.size(), false);
            const std::string detok_special = tok->detokenize(got.data(), got.size(), true);
            if (detok != want_detok) {
                report("'" + shown(text) + "' (" + flags + "): detokenized as '" + shown(detok) +
                       "', llama.cpp gives '" + shown(want_detok) + "'");
                continue;
            }
            if (detok_special != want_detok_special) {
                report("'" + shown(text) + "' (" + flags + "): detokenized with specials as '" +
                       shown(detok_special) + "', llama.cpp gives '" + shown(want_detok_special) + "'");
                continue;
            }
            tok_ok++;
        } else if (kind == "text") {
            // A whole file of the shared test data (skipped where absent).
            std::string rel, want_ids, want_text;
            int add_special = 0, parse_special = 0;
            size_t n = 0;
            ls >> rel >> add_special >> parse_special >> n >> want_ids >> want_text;
            const char *p = test_data_path(rel.c_str());
            if (!p) {
                print_message("note: %s not found (set KVFIT_TEST_DATA), not compared\n", rel.c_str());
                continue;
            }
            const std::string text = read_text(p);
            text_cases++;
            const auto t0 = std::chrono::steady_clock::now();
            const Ids ids = tok->tokenize(text, add_special != 0, parse_special != 0);
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const std::string detok = tok->detokenize(ids.data(), ids.size(), false);
            const std::string got_ids = fnv1a64(ids), got_text = fnv1a64(detok);
            print_message("%s: %zu tokens in %.3f s\n", rel.c_str(), ids.size(), secs);
            if (ids.size() != n || got_ids != want_ids || got_text != want_text) {
                report(rel + ": kvfit gives " + std::to_string(ids.size()) + " tokens (ids " + got_ids + ", text " +
                       got_text + "), llama.cpp " + std::to_string(n) + " (ids " + want_ids + ", text " + want_text + ")");
                continue;
            }
            text_ok++;
        } else if (kind == "piece") {
            int32_t id = 0;
            std::string plain_hex, special_hex;
            ls >> id >> plain_hex >> special_hex;
            piece_cases++;
            const std::string plain = tok->token_to_piece(id, false), special = tok->token_to_piece(id, true);
            const std::string want_plain = unhex(plain_hex), want_special = unhex(special_hex, want_plain);
            if (plain != want_plain || special != want_special) {
                report("piece of " + std::to_string(id) + ": kvfit '" + shown(plain) + "' / '" + shown(special) +
                       "', llama.cpp '" + shown(want_plain) + "' / '" + shown(want_special) + "'");
                continue;
            }
            piece_ok++;
        }
    }
    print_message("tokenizer-gemma3.txt: %zu/%zu tokenizations (ids and both detokenizations), %zu/%zu whole files "
                  "and %zu/%zu pieces match llama.cpp\n", tok_ok, tok_cases, text_ok, text_cases, piece_ok, piece_cases);
    assert_true(tok_cases > 0 && piece_cases > 0);
    assert_int_equal(tok_ok, tok_cases);
    assert_int_equal(piece_ok, piece_cases);
    assert_int_equal(text_ok, text_cases);
}

// ---- byte-level BPE ---------------------------------------------------------

void test_bpe_smollm(void **) {
    const char *path = test_default_model();
    if (!path) {
        print_message("skipped: default model not found (make models, or set KVFIT_MODEL)\n");
        skip();
    }
    std::unique_ptr<Tokenizer> tok = load(path);
    const VocabSpec &s = tok->spec();
    assert_string_equal(s.model.c_str(), "gpt2");
    assert_string_equal(s.pre.c_str(), "smollm");
    assert_false(s.add_bos);  // this model's metadata says so

    // Ids llama.cpp gives for these inputs.
    assert_ids(tok->tokenize("Hello world", true, false), {19556, 905});
    assert_ids(tok->tokenize("<|im_start|>user\nWhat is 12345?<|im_end|>\n", false, true),
               {1, 4093, 198, 1780, 314, 216, 33, 34, 35, 36, 37, 47, 2, 198});
    assert_ids(tok->tokenize("<|im_start|>user", false, false), {44, 108, 306, 79, 3738, 108, 46, 4093});
    assert_ids(tok->tokenize("\xC3\x87" "a va? \xC3\x9Cn\xC3\xAF" "c\xC3\xB6" "d\xC3\xA9 \xE6\x88\x91\xE6\x83\xB3 \xF0\x9F\xA6\x99", false, false),
               {142, 225, 81, 46316, 47, 5549, 246, 94, 25972, 83, 7466, 84, 2756, 17097, 226, 235, 177, 221, 128, 15107, 116, 243});
    assert_ids(tok->tokenize("  indented\n\n\ttab", false, false), {216, 641, 6574, 1116, 197, 15999});

    // End of generation as llama.cpp decides it: eos, <|endoftext|>, and
    // <reponame> (taken for a fill-in-the-middle repository token).
    assert_true(tok->is_eog(2));
    assert_true(tok->is_eog(0));
    assert_true(tok->is_eog(4));
    assert_false(tok->is_eog(1));
    assert_true(tok->is_control(1));
    assert_string_equal(tok->token_to_piece(2, false).c_str(), "");
    assert_string_equal(tok->token_to_piece(2, true).c_str(), "<|im_end|>");
    assert_string_equal(tok->token_to_piece(216, false).c_str(), " ");

    // Chat text with specials survives a round trip when rendered.
    const std::string chat = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n";
    const Ids ids = tok->tokenize(chat, false, true);
    assert_string_equal(tok->detokenize(ids.data(), ids.size(), true).c_str(), chat.c_str());
    assert_string_equal(tok->detokenize(ids.data(), ids.size(), false).c_str(), "system\nBe brief.\nuser\nHi!\n");
}

// A hand-made byte-level vocabulary: merges apply by rank, not by length.
void test_bpe_merge_rank(void **) {
    VocabSpec s;
    s.model = "gpt2";
    s.pre = "gpt-2";
    s.tokens = {"a", "b", "c", "ab", "bc", "abc", "\xC4\xA0", "<|endoftext|>"};  // \xC4\xA0 = "Ġ" (space)
    s.token_types = {1, 1, 1, 1, 1, 1, 1, TOKEN_CONTROL};
    s.bos = s.eos = 7;
    s.merges = {"b c", "a b", "a bc"};
    auto t = Tokenizer::create(s);
    // "b c" has the best rank, then "a bc".
    assert_ids(t->tokenize("abc", false, false), {5});
    assert_ids(t->tokenize("ab c", false, false), {3, 6, 2});
    s.merges = {"a b", "b c"};
    t = Tokenizer::create(s);
    assert_ids(t->tokenize("abc", false, false), {3, 2});
    assert_true(t->is_eog(7));
    assert_false(s.add_bos);
    assert_ids(t->tokenize("abc", true, false), {3, 2});
}


// llama.cpp's "rwkv" model: escaped token texts, greedy longest match over
// the unescaped bytes (expected ids worked out by hand from that rule).
void test_rwkv_greedy(void **) {
    VocabSpec s;
    s.model = "rwkv";
    s.tokens = {"<s>", "a", "b", "ab", "abc", "\\n", "\\xff", "\\\\", "\\t\\x41", "c", "\\'", "bca"};
    s.token_types = {TOKEN_CONTROL, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    auto t = Tokenizer::create(s);
    assert_false(t->spec().add_bos);
    // "abc" beats "ab"; then "ab" + "ca"? no "ca": "c", "a"
    assert_ids(t->tokenize("abcab", false, false), {4, 3});
    assert_ids(t->tokenize("abca", false, false), {4, 1});
    assert_ids(t->tokenize("bcab", false, false), {11, 2});
    assert_ids(t->tokenize("a\n\\'", false, false), {1, 5, 7, 10});
    assert_ids(t->tokenize("\tA", false, false), {8});
    assert_ids(t->tokenize("<s>a", false, true), {0, 1});
    assert_string_equal(t->token_to_piece(8, false).c_str(), "\tA");
    assert_string_equal(t->token_to_piece(7, false).c_str(), "\\");
    assert_int_equal(t->token_to_piece(6, false).size(), 1);
    assert_int_equal((unsigned char)t->token_to_piece(6, false)[0], 0xff);
    assert_string_equal(t->token_to_piece(0, false).c_str(), "");
    assert_string_equal(t->token_to_piece(0, true).c_str(), "<s>");
    // A byte no token starts with, and no unknown token: an error, not a crash.
    try {
        t->tokenize("z", false, false);
        fail_msg("'z' was tokenized");
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_TOKEN);
    }

    // A byte-level vocabulary as tools/rwkv-to-gguf.py writes it: id = byte.
    VocabSpec bytes;
    bytes.model = "rwkv";
    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (b == '\\') snprintf(buf, sizeof buf, "\\\\");
        else if (b == '\n') snprintf(buf, sizeof buf, "\\n");
        else if (b == '\t') snprintf(buf, sizeof buf, "\\t");
        else if (b == '\r') snprintf(buf, sizeof buf, "\\r");
        else if (b < 32 || b >= 127) snprintf(buf, sizeof buf, "\\x%02x", b);
        else snprintf(buf, sizeof buf, "%c", b);
        bytes.tokens.push_back(buf);
    }
    auto tb = Tokenizer::create(bytes);
    const std::string text = "\"in \\ the\n\xc3\xa9t\xc3\xa9";
    const auto ids = tb->tokenize(text, true, false);
    assert_int_equal(ids.size(), text.size());
    for (size_t i = 0; i < text.size(); i++) assert_int_equal(ids[i], (unsigned char)text[i]);
    assert_true(tb->detokenize(ids.data(), ids.size(), false) == text);
}

// ---- errors, UTF-8, streaming --------------------------------------------------

void test_errors(void **) {
    VocabSpec s = tiny_spm(-1, -5);
    auto t = Tokenizer::create(s);
    assert_int_equal(status_of([](const Tokenizer &k) { k.token_to_piece(-1, false); }, *t), KVFIT_E_TOKEN);
    assert_int_equal(status_of([](const Tokenizer &k) { k.token_to_piece(k.n_vocab(), false); }, *t), KVFIT_E_TOKEN);
    assert_int_equal(status_of([](const Tokenizer &k) {
                         const int32_t ids[] = {1, 99999};
                         k.detokenize(ids, 2, false);
                     }, *t),
                     KVFIT_E_TOKEN);

    auto create_status = [](VocabSpec spec) {
        try {
            Tokenizer::create(std::move(spec));
            return KVFIT_OK;
        } catch (const Error &e) {
            return e.status();
        }
    };
    VocabSpec bert = s;
    bert.model = "bert";
    assert_int_equal(create_status(bert), KVFIT_E_UNSUPPORTED);
    VocabSpec bad_pre = s;
    bad_pre.model = "gpt2";
    bad_pre.pre = "no-such-pre-tokenizer";
    assert_int_equal(create_status(bad_pre), KVFIT_E_UNSUPPORTED);
    VocabSpec dup = s;
    dup.tokens.back() = "a";
    assert_int_equal(create_status(dup), KVFIT_E_FORMAT);

    // A GGUF file without tokenizer metadata.
    std::vector<uint8_t> g = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
    g.resize(g.size() + 16, 0);  // no tensors, no metadata
    auto f = GGUFFile::from_memory(g.data(), g.size());
    try {
        vocab_spec_from_gguf(*f);
        fail_msg("a file without tokenizer was accepted");
    } catch (const Error &e) {
        assert_int_equal(e.status(), KVFIT_E_FORMAT);
    }
}

void test_utf8_rejection(void **) {
    auto t = Tokenizer::create(tiny_spm(-1, -5));
    struct Case {
        std::string text;
        size_t offset;
    };
    const Case bad[] = {
        {"\xFF", 0},                 // never valid
        {"abc\xC3", 3},              // truncated
        {"ok \x80 no", 3},           // stray continuation byte
        {"\xC0\xAF", 0},             // overlong "/"
        {"x\xE0\x80\xAF", 1},        // overlong, 3 bytes
        {"\xED\xA0\x80", 0},         // surrogate U+D800
        {"ab\xF4\x90\x80\x80", 2},   // above U+10FFFF
        {"\xC3\xA9\xE2\x82", 2},     // valid "é", then a truncated "€"
    };
    for (const Case &c : bad) {
        assert_false(utf8_valid(c.text));
        try {
            t->tokenize(c.text, false, false);
            fail_msg("invalid UTF-8 accepted");
        } catch (const Error &e) {
            assert_int_equal(e.status(), KVFIT_E_UTF8);
            const std::string want = "offset " + std::to_string(c.offset);
            if (std::string(e.what()).find(want) == std::string::npos) fail_msg("message '%s' lacks '%s'", e.what(), want.c_str());
        }
    }
    for (const char *good : {"", "plain", "\xC3\xA9\xE2\x82\xAC\xF0\x9F\xA6\x99", "\xEF\xBF\xBD", "\xF4\x8F\xBF\xBF", "a\0b"})
        assert_true(utf8_valid(good));
    assert_true(utf8_valid(std::string("a\0b", 3)));
}

void test_utf8_stream(void **) {
    Utf8Stream s;
    assert_string_equal(s.push("ab").c_str(), "ab");
    // "é" split across two pushes.
    assert_string_equal(s.push("\xC3").c_str(), "");
    assert_string_equal(s.push("\xA9x").c_str(), "\xC3\xA9x");
    // A 4-byte character one byte at a time.
    const char llama[] = "\xF0\x9F\xA6\x99";
    std::string got;
    for (int i = 0; i < 4; i++) {
        const std::string out = s.push(std::string(1, llama[i]));
        if (i < 3) assert_string_equal(out.c_str(), "");
        got += out;
    }
    assert_string_equal(got.c_str(), llama);
    // An invalid byte becomes U+FFFD and the stream goes on.
    assert_string_equal(s.push("\xFFz").c_str(), "\xEF\xBF\xBDz");
    // A lead byte followed by a non-continuation byte.
    assert_string_equal(s.push("\xE2(").c_str(), "\xEF\xBF\xBD(");
    // A truncated character at the end is flushed as U+FFFD.
    assert_string_equal(s.push("\xE2\x82").c_str(), "");
    assert_string_equal(s.flush().c_str(), "\xEF\xBF\xBD");
    assert_string_equal(s.flush().c_str(), "");

    // Byte-fallback pieces of a real vocabulary through the stream.
    const char *path = test_data_path("vocab/ggml-vocab-llama-spm.gguf");
    if (!path) return;
    auto tok = load(path);
    const std::string text = "caf\xC3\xA9 \xF0\x9F\xA6\x99\xF0\x9F\x98\xB6 \xE6\x88\x91";
    const Ids ids = tok->tokenize(text, false, false);
    Utf8Stream st;
    std::string joined;
    for (int32_t id : ids) {
        const std::string out = st.push(tok->token_to_piece(id, false));
        assert_true(utf8_valid(out));
        joined += out;
    }
    joined += st.flush();
    assert_string_equal(joined.c_str(), (" " + text).c_str());
}

// ---- round trips, speed -------------------------------------------------------------

const char *const kRoundTrip[] = {
    "",
    "Hello world",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n",
    "\n starts with a newline",
    "numbers 3 33 333 3333 12345.678 \xC2\xBD \xC2\xB2",
    "contractions: I'm, you're, it's, we'll, they've, he'd, DON'T",
    "punctuation!?.,;:-()[]{}<>@#$%^&*_+=|\\/~`\"'",
    "\xC3\xA4\xC3\xB6\xC3\xBC \xC3\x9F \xC3\x87" "a va \xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8 \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
    "emoji \xF0\x9F\xA6\x99\xF0\x9F\x9A\x80 \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F \xE2\x9C\x85",
    "odd spaces:\xC2\xA0nbsp\xE2\x80\x89thin\xE3\x80\x80ideographic\xC2\x85nel",
    "combining e\xCC\x81 and private use \xEE\x80\x80",
    "<s> </s> <unk> <|im_start|> <|im_end|> <|endoftext|> look like specials",
};

void round_trip(const Tokenizer &tok, const char *name) {
    for (const char *text : kRoundTrip) {
        const Ids ids = tok.tokenize(text, false, false);
        const std::string back = tok.detokenize(ids.data(), ids.size(), false);
        if (back != text) fail_msg("%s: '%s' came back as '%s'", name, text, back.c_str());
    }
}

void test_round_trip(void **) {
    int n = 0;
    for (const char *rel : {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-gpt-2.gguf", "models/stories260K.gguf"}) {
        if (const char *p = test_data_path(rel)) {
            round_trip(*load(p), rel);
            n++;
        }
    }
    if (const char *p = test_default_model()) {
        round_trip(*load(p), "default model");
        n++;
    }
    round_trip(*Tokenizer::create(tiny_spm(-1, -5)), "hand-made SentencePiece");
    print_message("round trips on %d vocabulary files and a hand-made one\n", n);
}

// llama.cpp's detokenize drops the spaces a word-level tokenizer leaves
// before punctuation and contractions for most byte-level BPE vocabularies
// (the GPT-2 one here), and not for others (SmolLM2's). Expected strings are
// llama.cpp's (llama_detokenize on the same vocabulary and ids).
void test_bpe_clean_spaces(void **) {
    const char *p = test_data_path("vocab/ggml-vocab-gpt-2.gguf");
    if (!p) {
        print_message("skipped: vocab/ggml-vocab-gpt-2.gguf not found under $KVFIT_TEST_DATA or ../shared/data\n");
        skip();
    }
    const std::pair<const char *, const char *> cases[] = {
        {"a , b . c ! d ? e ' f it 's I 'm we 're you 've x 'll y 'd",
         "a, b. c! d? e'f it's I'm we're you've x 'll y 'd"},
        {"x ' ' y", "x'' y"},
        {" ' s", "'s"},
        {"Hello , world ! ! .", "Hello, world!!."},
        {"' s 'm", "' s'm"},
        {"a 're", "a're"},
    };
    std::unique_ptr<Tokenizer> gpt2 = load(p);
    for (const auto &c : cases) {
        const Ids ids = gpt2->tokenize(c.first, false, false);
        assert_string_equal(gpt2->detokenize(ids.data(), ids.size(), false).c_str(), c.second);
    }
    if (const char *m = test_default_model()) {  // pre-tokenizer "smollm": spaces kept
        std::unique_ptr<Tokenizer> smol = load(m);
        const Ids ids = smol->tokenize(cases[0].first, false, false);
        assert_string_equal(smol->detokenize(ids.data(), ids.size(), false).c_str(), cases[0].first);
    }
}

void test_long_text_speed(void **) {
    const char *text_path = test_data_path("text/pride_and_prejudice.txt");
    if (!text_path) {
        print_message("skipped: text/pride_and_prejudice.txt not found\n");
        skip();
    }
    const std::string text = read_text(text_path);
    std::vector<std::pair<std::string, std::string>> vocabs;  // name, path (copied from static buffers)
    for (const char *rel : {"vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-gpt-2.gguf"})
        if (const char *p = test_data_path(rel)) vocabs.emplace_back(rel, p);
    if (file_exists(gemma3_path())) vocabs.emplace_back("Gemma 3 (262K vocabulary)", gemma3_path());
    for (const auto &v : vocabs) {
        auto tok = load(v.second.c_str());
        for (bool parse_special : {false, true}) {
            const auto t0 = std::chrono::steady_clock::now();
            const Ids ids = tok->tokenize(text, false, parse_special);
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            print_message("%s: %zu bytes -> %zu tokens in %.3f s (parse_special %d)\n", v.first.c_str(), text.size(),
                          ids.size(), s, int(parse_special));
            // Generous: only catches a pathological slowdown (sanitizer builds, busy machines).
            assert_true(s < 10.0);
            assert_true(tok->detokenize(ids.data(), ids.size(), false) == text);
        }
    }
}

// A tokenizer is shared by all sessions of a model: concurrent calls must
// give the same results as serial ones.
void test_concurrent(void **) {
    int n = 0;
    for (const char *rel : {"vocab/ggml-vocab-gpt-2.gguf", "vocab/ggml-vocab-llama-spm.gguf"}) {
        const char *p = test_data_path(rel);
        if (!p) continue;
        auto tok = load(p);
        std::vector<Ids> want;
        for (const char *text : kRoundTrip) want.push_back(tok->tokenize(text, true, true));
        std::vector<int> ok(4, 0);
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++)
            threads.emplace_back([&, t] {
                int good = 1;
                for (int rep = 0; rep < 50; rep++)
                    for (size_t i = 0; i < want.size(); i++)
                        if (tok->tokenize(kRoundTrip[i], true, true) != want[i]) good = 0;
                ok[size_t(t)] = good;
            });
        for (auto &th : threads) th.join();
        for (int good : ok) assert_int_equal(good, 1);
        n++;
    }
    if (n == 0) {
        print_message("skipped: no vocabulary files found (set KVFIT_TEST_DATA)\n");
        skip();
    }
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_vectors),
        cmocka_unit_test(test_bpe_vectors),
        cmocka_unit_test(test_spm_special),
        cmocka_unit_test(test_stories260K),
        cmocka_unit_test(test_spm_merge_order),
        cmocka_unit_test(test_gemma3_llamacpp),
        cmocka_unit_test(test_bpe_smollm),
        cmocka_unit_test(test_bpe_merge_rank),
        cmocka_unit_test(test_rwkv_greedy),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_utf8_rejection),
        cmocka_unit_test(test_utf8_stream),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bpe_clean_spaces),
        cmocka_unit_test(test_long_text_speed),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
