// libFuzzer entry for GGUF loading (src/gguf/gguf.cpp and what reads a model
// on top of it: metadata, tokenizer, architecture hyper-parameters, the
// tensor table and the weights' bounds). Built with -DKVFIT_FUZZ=ON; see
// tests/fuzz/README.md.
//
// Input: the bytes of a file. They are parsed from memory, then written to an
// in-memory file and loaded through the C API twice, vocab_only and with the
// weights (CPU backend). Whatever the bytes, each step must succeed or fail
// with a status and a message; KVFIT_E_INTERNAL (an exception kvfit did not
// expect), a crash, a hang or a sanitizer report is a bug.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common.h"
#include "gguf/gguf.h"
#include "kvfit.h"

namespace {

void check(kvfit_status st, const char *what) {
    if (st == KVFIT_OK) return;
    const char *msg = kvfit_last_error();
    if (st == KVFIT_E_INTERNAL || !msg || !*msg) {
        std::fprintf(stderr, "%s: %s: %s\n", what, kvfit_status_str(st), msg ? msg : "(no message)");
        std::abort();
    }
}

void use_model(kvfit_model *m) {
    kvfit_model_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    check(kvfit_model_get_info(m, &info), "kvfit_model_get_info");
    // A few tokens through the tokenizer the file describes.
    int32_t ids[64];
    size_t n = 0;
    check(kvfit_tokenize(m, "Hello <s> world", 15, true, true, ids, 64, &n), "kvfit_tokenize");
    char text[256];
    size_t len = 0;
    if (n <= 64) check(kvfit_detokenize(m, ids, n, true, text, sizeof text, &len), "kvfit_detokenize");
}

void quiet(kvfit_log_level, const char *, void *) {}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    kvfit_set_log_callback(quiet, KVFIT_LOG_ERROR, nullptr);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // 1. The parser alone, on the bytes in memory.
    try {
        auto f = kvfit::GGUFFile::from_memory(data, size);
        for (const auto &kv : f->metadata()) {
            (void)kv.second.to_text();
            if (kv.second.type == kvfit::GGUFValueType::ARRAY) {
                try {
                    if (kv.second.arr_type == kvfit::GGUFValueType::STRING) (void)f->get_string_array(kv.first);
                    else (void)f->get_float_array(kv.first);
                } catch (const kvfit::Error &) {
                }
            }
        }
        for (const auto &t : f->tensors()) {
            // Every tensor's data must lie inside the buffer.
            if (t.data < data || t.nbytes > size || t.data + t.nbytes > data + size) std::abort();
            if (t.nbytes) {
                volatile uint8_t x = t.data[0];
                x = t.data[t.nbytes - 1];
                (void)x;
            }
        }
    } catch (const kvfit::Error &e) {
        if (!*e.what()) std::abort();
    }

    // 2. Through the C API from a file (an anonymous in-memory one).
    const int fd = memfd_create("fuzz.gguf", 0);
    if (fd < 0) return 0;
    size_t done = 0;
    while (done < size) {
        const ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) break;
        done += size_t(w);
    }
    char path[64];
    std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    for (int vocab_only = 1; vocab_only >= 0; vocab_only--) {
        kvfit_model_params p;
        kvfit_model_params_init(&p);
        p.vocab_only = vocab_only != 0;
        p.backend = KVFIT_BACKEND_CPU;
        kvfit_model *m = nullptr;
        const kvfit_status st = kvfit_model_load(path, &p, &m);
        check(st, vocab_only ? "kvfit_model_load (vocab_only)" : "kvfit_model_load");
        if (st != KVFIT_OK) {
            if (m) std::abort();  // nothing is handed out on failure
            continue;
        }
        use_model(m);
        kvfit_model_free(m);
    }
    close(fd);
    return 0;
}
