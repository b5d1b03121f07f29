// libFuzzer entry for kvfit_session_load on damaged session states. Built
// with -DKVFIT_FUZZ=ON; see tests/fuzz/README.md.
//
// Once: stories260K ($KVFIT_TEST_DATA/models/stories260K.gguf, or the file
// KVFIT_FUZZ_MODEL names; without it the program prints "skipped: ..." and
// exits 77) gets two sessions, a dense F16 one and a streaming F16 one whose
// ring has wrapped, and each one's state is saved.
//
// Input: byte 0 picks the state (bit 0) and what to do with it (bits 1-2):
//   0  xor edits: the rest is 5-byte records, a little-endian 32-bit offset
//      (modulo the state's size) and a byte to xor there
//   1  the same edits, then truncated to a length taken from the next 4 bytes
//   2  the same edits, then the remaining bytes appended
//   3  the rest of the input is the whole state
// Bit 3 set: after the change, the checksum is recomputed (as the format
// defines it), so that the checks behind it are reached too.
//
// Every load of changed bytes must be refused with KVFIT_E_FORMAT or
// KVFIT_E_ARG, leaving the session as it was (same n_past and logits), unless
// the checksum was recomputed: then a load may succeed, and the session must
// still decode. An unchanged state must load.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kvfit.h"

namespace {

struct Target {
    kvfit_session *session = nullptr;
    std::vector<uint8_t> state;
    std::vector<float> logits;
    uint64_t n_past = 0;
};

kvfit_model *g_model;
Target g_targets[2];

[[noreturn]] void bug(const char *what, kvfit_status st) {
    std::fprintf(stderr, "%s: %s: %s\n", what, kvfit_status_str(st), kvfit_last_error());
    std::abort();
}

void quiet(kvfit_log_level, const char *, void *) {}

// The state's checksum (src/session.cpp, format 5): FNV-1a over the 56-byte
// header with its last 8 bytes (the checksum) zero, then over the rest.
uint64_t fnv1a(const uint8_t *p, size_t n, uint64_t h) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
constexpr size_t kHeader = 56;
void fix_checksum(std::vector<uint8_t> &s) {
    if (s.size() < kHeader) return;
    uint8_t head[kHeader];
    std::memcpy(head, s.data(), kHeader);
    std::memset(head + kHeader - 8, 0, 8);
    const uint64_t h = fnv1a(s.data() + kHeader, s.size() - kHeader, fnv1a(head, kHeader, 0xcbf29ce484222325ull));
    std::memcpy(s.data() + kHeader - 8, &h, 8);
}

void snapshot(const Target &t, std::vector<float> &logits, uint64_t &n_past) {
    n_past = kvfit_session_n_past(t.session);
    const float *l = nullptr;
    size_t n = 0;
    const kvfit_status st = kvfit_session_logits(t.session, &l, &n);
    if (st != KVFIT_OK) bug("kvfit_session_logits", st);
    logits.assign(l, l + n);
}

void restore(Target &t) {
    const kvfit_status st = kvfit_session_load(t.session, t.state.data(), t.state.size());
    if (st != KVFIT_OK) bug("loading the unchanged state", st);
}

void setup(Target &t, const kvfit_session_params &p, const int32_t *tokens, size_t n) {
    kvfit_status st = kvfit_session_create(g_model, &p, &t.session);
    if (st != KVFIT_OK) bug("kvfit_session_create", st);
    st = kvfit_session_prefill(t.session, tokens, n);
    if (st != KVFIT_OK) bug("kvfit_session_prefill", st);
    size_t size = 0;
    kvfit_session_state_size(t.session, &size);
    t.state.resize(size);
    st = kvfit_session_save(t.session, t.state.data(), size, nullptr);
    if (st != KVFIT_OK) bug("kvfit_session_save", st);
    snapshot(t, t.logits, t.n_past);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    kvfit_set_log_callback(quiet, KVFIT_LOG_ERROR, nullptr);
    std::string path;
    if (const char *p = std::getenv("KVFIT_FUZZ_MODEL")) path = p;
    else if (const char *d = std::getenv("KVFIT_TEST_DATA")) path = std::string(d) + "/models/stories260K.gguf";
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    if (path.empty() || kvfit_model_load(path.c_str(), &mp, &g_model) != KVFIT_OK) {
        std::printf("skipped: no model at '%s' (set KVFIT_TEST_DATA or KVFIT_FUZZ_MODEL): %s\n", path.c_str(),
                    kvfit_last_error());
        std::exit(77);
    }
    std::vector<int32_t> tokens(200);
    for (size_t i = 0; i < tokens.size(); i++) tokens[i] = int32_t(1 + (i * 37) % 500);

    kvfit_session_params p;
    kvfit_session_params_init(&p);
    p.n_ctx = 256;
    p.n_threads = 1;
    p.kv_codec = KVFIT_KV_F16;
    setup(g_targets[0], p, tokens.data(), 150);

    kvfit_session_params_init(&p);
    p.n_threads = 1;
    p.n_sink = 4;
    p.n_window = 64;
    p.kv_codec = KVFIT_KV_F16;  // stories260K's 8-wide heads: no quantized codec
    setup(g_targets[1], p, tokens.data(), tokens.size());  // the ring has wrapped
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    const uint8_t flags = data[0];
    Target &t = g_targets[flags & 1];
    const int op = (flags >> 1) & 3;
    const bool fix = flags & 8;
    const uint8_t *rest = data + 1;
    size_t n_rest = size - 1;

    std::vector<uint8_t> s;
    if (op == 3) {
        s.assign(rest, rest + n_rest);
    } else {
        s = t.state;
        size_t n_edits = n_rest / 5;
        if (op == 1 && n_rest >= 4) n_edits = (n_rest - 4) / 5;
        for (size_t i = 0; i < n_edits && op != 2; i++) {
            uint32_t off;
            std::memcpy(&off, rest + 5 * i, 4);
            s[off % s.size()] ^= rest[5 * i + 4];
        }
        if (op == 1 && n_rest >= 4) {
            uint32_t len;
            std::memcpy(&len, rest + n_rest - 4, 4);
            s.resize(len % (s.size() + 1));
        } else if (op == 2) {
            s.insert(s.end(), rest, rest + n_rest);
        }
    }
    if (fix) fix_checksum(s);
    const bool same = s == t.state;

    const kvfit_status st = kvfit_session_load(t.session, s.data(), s.size());
    if (same) {
        if (st != KVFIT_OK) bug("loading the unchanged state", st);
        return 0;
    }
    if (st == KVFIT_OK) {
        if (!fix) bug("a damaged state loaded", st);
        // A state whose checksum was made to match may load; the session must
        // then still work (or refuse cleanly), and the saved state comes back.
        const kvfit_status d = kvfit_session_decode(t.session, 1);
        if (d != KVFIT_OK && d != KVFIT_E_CONTEXT_FULL && d != KVFIT_E_STATE) bug("decode after a load", d);
        restore(t);
        return 0;
    }
    if (st != KVFIT_E_FORMAT && st != KVFIT_E_ARG) bug("kvfit_session_load", st);
    const char *msg = kvfit_last_error();
    if (!msg || !*msg) bug("kvfit_session_load without a message", st);
    std::vector<float> logits;
    uint64_t n_past = 0;
    snapshot(t, logits, n_past);
    if (n_past != t.n_past || logits != t.logits) bug("a refused load changed the session", st);
    return 0;
}
