// libFuzzer entry for the tokenizers: tokenize and detokenize arbitrary bytes
// with a SentencePiece vocabulary (llama) and a byte-level BPE one (GPT-2),
// both loaded vocab_only once. Built with -DKVFIT_FUZZ=ON; see
// tests/fuzz/README.md.
//
// The vocabularies come from the shared test data: $KVFIT_TEST_DATA/vocab/
// ggml-vocab-llama-spm.gguf and ggml-vocab-gpt-2.gguf (other files with
// KVFIT_FUZZ_VOCAB_SPM / KVFIT_FUZZ_VOCAB_BPE). Without them the program
// prints "skipped: ..." and exits 77.
//
// Input: one byte of flags (bit 0: which tokenizer; bit 1: add_special; bit 2:
// parse_special; bit 3: render_special; bit 4: the rest is token ids), then
// text (or little-endian int32 token ids). Tokenizing must give ids inside the
// vocabulary or KVFIT_E_UTF8 (for text that is not UTF-8); detokenizing must
// give text or KVFIT_E_TOKEN; the size a KVFIT_E_BUFFER_TOO_SMALL reports must
// be the size that then works. For the byte-level BPE, the pieces of the
// plain tokens of UTF-8 text are that text again.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvfit.h"

namespace {

kvfit_model *g_models[2];  // 0: SentencePiece, 1: byte-level BPE
uint32_t g_n_vocab[2];

[[noreturn]] void bug(const char *what, kvfit_status st) {
    std::fprintf(stderr, "%s: %s: %s\n", what, kvfit_status_str(st), kvfit_last_error());
    std::abort();
}

std::string vocab_path(const char *env, const char *file) {
    if (const char *p = std::getenv(env)) return p;
    const char *dir = std::getenv("KVFIT_TEST_DATA");
    if (!dir) return "";
    return std::string(dir) + "/vocab/" + file;
}

void quiet(kvfit_log_level, const char *, void *) {}

std::string detokenize(kvfit_model *m, const int32_t *ids, size_t n, bool render, kvfit_status *st) {
    size_t len = 0;
    *st = kvfit_detokenize(m, ids, n, render, nullptr, 0, &len);
    if (*st == KVFIT_OK) return std::string();
    if (*st != KVFIT_E_BUFFER_TOO_SMALL) return std::string();
    std::string out(len, '\0');
    size_t len2 = 0;
    *st = kvfit_detokenize(m, ids, n, render, &out[0], out.size(), &len2);
    if (*st != KVFIT_OK || len2 != len) bug("kvfit_detokenize with the size it asked for", *st);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    kvfit_set_log_callback(quiet, KVFIT_LOG_ERROR, nullptr);
    const std::string paths[2] = {vocab_path("KVFIT_FUZZ_VOCAB_SPM", "ggml-vocab-llama-spm.gguf"),
                                  vocab_path("KVFIT_FUZZ_VOCAB_BPE", "ggml-vocab-gpt-2.gguf")};
    for (int i = 0; i < 2; i++) {
        kvfit_model_params p;
        kvfit_model_params_init(&p);
        p.vocab_only = true;
        if (paths[i].empty() || kvfit_model_load(paths[i].c_str(), &p, &g_models[i]) != KVFIT_OK) {
            std::printf("skipped: no vocabulary at '%s' (set KVFIT_TEST_DATA or KVFIT_FUZZ_VOCAB_%s): %s\n",
                        paths[i].c_str(), i ? "BPE" : "SPM", kvfit_last_error());
            std::exit(77);
        }
        kvfit_model_info info;
        std::memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (kvfit_model_get_info(g_models[i], &info) != KVFIT_OK) std::exit(1);
        g_n_vocab[i] = info.n_vocab;
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t flags = data[0];
    const int which = flags & 1;
    const bool add_special = flags & 2, parse_special = flags & 4, render = flags & 8;
    kvfit_model *m = g_models[which];
    const uint32_t n_vocab = g_n_vocab[which];
    const char *text = reinterpret_cast<const char *>(data + 1);
    const size_t text_len = size - 1;

    if (flags & 16) {
        // Arbitrary ids, in the vocabulary or not.
        std::vector<int32_t> ids(text_len / 4);
        if (!ids.empty()) std::memcpy(ids.data(), text, ids.size() * 4);
        bool inside = true;
        for (int32_t id : ids) inside = inside && id >= 0 && uint32_t(id) < n_vocab;
        kvfit_status st;
        detokenize(m, ids.data(), ids.size(), render, &st);
        if (st != KVFIT_OK && !(st == KVFIT_E_TOKEN && !inside)) bug("kvfit_detokenize", st);
        for (int32_t id : ids) {
            char piece[256];
            size_t len = 0;
            st = kvfit_token_to_piece(m, id, render, piece, sizeof piece, &len);
            if (st != KVFIT_OK && st != KVFIT_E_BUFFER_TOO_SMALL && !(st == KVFIT_E_TOKEN && !inside))
                bug("kvfit_token_to_piece", st);
        }
        return 0;
    }

    size_t n = 0;
    kvfit_status st = kvfit_tokenize(m, text, text_len, add_special, parse_special, nullptr, 0, &n);
    if (st == KVFIT_E_UTF8) return 0;
    if (st != KVFIT_OK && st != KVFIT_E_BUFFER_TOO_SMALL) bug("kvfit_tokenize", st);
    std::vector<int32_t> ids(n);
    size_t n2 = 0;
    st = kvfit_tokenize(m, text, text_len, add_special, parse_special, ids.data(), ids.size(), &n2);
    if (st != KVFIT_OK || n2 != n) bug("kvfit_tokenize with the size it asked for", st);
    for (int32_t id : ids)
        if (id < 0 || uint32_t(id) >= n_vocab) bug("kvfit_tokenize gave an id outside the vocabulary", st);
    const std::string back = detokenize(m, ids.data(), ids.size(), render, &st);
    if (st != KVFIT_OK) bug("kvfit_detokenize of tokenize's ids", st);
    if (which == 1 && !add_special && !parse_special) {
        // Byte-level BPE loses nothing: the tokens' pieces are the text's bytes
        // (kvfit_detokenize may differ: it cleans up spaces as llama.cpp does).
        std::string pieces;
        for (int32_t id : ids) {
            char piece[256];
            size_t len = 0;
            st = kvfit_token_to_piece(m, id, false, piece, sizeof piece, &len);
            if (st != KVFIT_OK) bug("kvfit_token_to_piece of tokenize's ids", st);
            pieces.append(piece, len);
        }
        if (pieces != std::string(text, text_len)) {
            std::fprintf(stderr, "byte-level BPE pieces differ from the text (%zu bytes -> %zu)\n", text_len, pieces.size());
            std::abort();
        }
    }
    return 0;
}
