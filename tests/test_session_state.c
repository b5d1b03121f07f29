/* Session state mutation sweep: real states (a few hundred tokens; streaming
 * and dense sessions; F16 on stories260K, whose 8-wide heads the quantized
 * codecs cannot hold, and Q4_CHANNEL and Q8 on the default model) are damaged
 * in many ways (single bit flips across the header, the layer records, the
 * logits and the cached keys and values; truncations; extensions; swapped
 * header bytes; a state of another model) and every damaged state must be
 * refused with KVFIT_E_FORMAT (KVFIT_E_ARG for an intact state of another
 * plan), leaving the session exactly as it was: same n_past, same logits, and
 * it goes on decoding like an undamaged copy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvfit.h"
#include "testutil.h"

/* The layout of a state (src/session.cpp): a 56-byte header, one 32-byte
 * record per layer, n_vocab float logits, then the layers' buffers. */
#define HEADER_BYTES 56
#define RECORD_BYTES 32

static kvfit_model *g_models[2]; /* stories260K, the default model */
static uint32_t g_n_layer[2], g_n_vocab[2];
static int32_t g_tokens[2][400];

enum { N_CONFIGS = 4 };
typedef struct {
    const char *name;
    int model;
    int sinks;
    uint32_t window;  /* 0: dense */
    kvfit_kv_codec codec;
} config;
static const config g_configs[N_CONFIGS] = {
    {"stories260K streaming F16", 0, 4, 96, KVFIT_KV_F16},
    {"stories260K dense F16", 0, -1, 0, KVFIT_KV_F16},
    {"default model streaming Q4_CHANNEL", 1, 4, 64, KVFIT_KV_Q4_CHANNEL},
    {"default model dense Q8", 1, -1, 0, KVFIT_KV_Q8},
};

/* xorshift64*: a fixed sequence, so that a failure can be replayed */
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

static int setup(void **state) {
    (void)state;
    const char *paths[2] = {test_data_path("models/stories260K.gguf"), NULL};
    paths[1] = test_default_model();
    for (int m = 0; m < 2; m++) {
        if (!paths[m]) continue;
        if (kvfit_model_load(paths[m], NULL, &g_models[m]) != KVFIT_OK) return -1;
        kvfit_model_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        if (kvfit_model_get_info(g_models[m], &info) != KVFIT_OK) return -1;
        g_n_layer[m] = info.n_layer;
        g_n_vocab[m] = info.n_vocab;
        for (size_t i = 0; i < 400; i++) g_tokens[m][i] = (int32_t)(3 + (i * 7919) % (g_n_vocab[m] - 3));
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_models[0]);
    kvfit_model_free(g_models[1]);
    return 0;
}

static kvfit_session *open_session(int m, const config *c) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_sink = c->sinks;
    sp.n_window = c->window;
    sp.kv_codec = c->codec;
    sp.n_ctx = 512;
    sp.n_threads = 2;
    kvfit_session *s = NULL;
    kvfit_status st = kvfit_session_create(g_models[m], &sp, &s);
    if (st != KVFIT_OK) fprintf(stderr, "session (%s): %s\n", c->name, kvfit_last_error());
    assert_int_equal(st, KVFIT_OK);
    return s;
}

static unsigned char *save(kvfit_session *s, size_t *size) {
    assert_int_equal(kvfit_session_state_size(s, size), KVFIT_OK);
    unsigned char *buf = malloc(*size);
    assert_non_null(buf);
    assert_int_equal(kvfit_session_save(s, buf, *size, NULL), KVFIT_OK);
    return buf;
}

static const float *logits_of(kvfit_session *s, int m) {
    const float *l = NULL;
    size_t n = 0;
    assert_int_equal(kvfit_session_logits(s, &l, &n), KVFIT_OK);
    assert_int_equal(n, g_n_vocab[m]);
    return l;
}

/* What a refused load must leave: the session's n_past and logits. */
typedef struct {
    int m;
    kvfit_session *s;
    uint64_t n_past;
    float *logits;
    size_t n_refused, n_format, n_arg;
} victim;

static void expect_refused(victim *v, const unsigned char *buf, size_t size, kvfit_status want, const char *what,
                           size_t where) {
    const kvfit_status st = kvfit_session_load(v->s, buf, size);
    if (st != want)
        fail_msg("%s at %zu (state of %zu bytes): load returned %s, expected %s (%s)", what, where, size,
                 kvfit_status_str(st), kvfit_status_str(want), kvfit_last_error());
    if (kvfit_session_n_past(v->s) != v->n_past) fail_msg("%s at %zu: n_past changed", what, where);
    if (memcmp(logits_of(v->s, v->m), v->logits, sizeof(float) * g_n_vocab[v->m]) != 0)
        fail_msg("%s at %zu: logits changed", what, where);
    v->n_refused++;
    if (st == KVFIT_E_FORMAT) v->n_format++;
    else v->n_arg++;
}

static void sweep_one(const config *c, victim *v, unsigned char *buf, size_t size) {
    const size_t rec_end = HEADER_BYTES + (size_t)g_n_layer[c->model] * RECORD_BYTES;
    const size_t logits_end = rec_end + (size_t)g_n_vocab[c->model] * sizeof(float);
    assert_true(logits_end < size);
    /* region: [lo, hi) and how many single bit flips in it */
    const struct {
        const char *name;
        size_t lo, hi, n;
    } regions[] = {
        {"bit flip in the header", 0, HEADER_BYTES, 120},
        {"bit flip in a layer record", HEADER_BYTES, rec_end, 60},
        {"bit flip in the logits", rec_end, logits_end, 60},
        {"bit flip in the layers' buffers", logits_end, size, 160},
    };
    for (size_t r = 0; r < sizeof regions / sizeof regions[0]; r++) {
        for (size_t i = 0; i < regions[r].n; i++) {
            const size_t off = regions[r].lo + rnd_below(regions[r].hi - regions[r].lo);
            const unsigned char bit = (unsigned char)(1u << rnd_below(8));
            buf[off] ^= bit;
            expect_refused(v, buf, size, KVFIT_E_FORMAT, regions[r].name, off);
            buf[off] ^= bit;
        }
    }
    /* every bit of the header, once each */
    for (size_t off = 0; off < HEADER_BYTES; off++)
        for (int b = 0; b < 8; b++) {
            buf[off] ^= (unsigned char)(1u << b);
            expect_refused(v, buf, size, KVFIT_E_FORMAT, "flip of each header bit", off * 8 + (size_t)b);
            buf[off] ^= (unsigned char)(1u << b);
        }
    /* truncations: the empty state, inside the header, and anywhere */
    expect_refused(v, buf, 0, KVFIT_E_FORMAT, "truncation", 0);
    for (size_t i = 0; i < 30; i++) {
        const size_t n = i < 10 ? rnd_below(HEADER_BYTES) : rnd_below(size);
        expect_refused(v, buf, n, KVFIT_E_FORMAT, "truncation", n);
    }
    expect_refused(v, buf, size - 1, KVFIT_E_FORMAT, "truncation", size - 1);
    /* extensions: random bytes after the state */
    unsigned char *longer = malloc(size + 4096);
    assert_non_null(longer);
    memcpy(longer, buf, size);
    for (size_t i = 0; i < 30; i++) {
        const size_t extra = 1 + rnd_below(i < 20 ? 64 : 4096);
        for (size_t j = 0; j < extra; j++) longer[size + j] = (unsigned char)rnd();
        expect_refused(v, longer, size + extra, KVFIT_E_FORMAT, "extension", extra);
    }
    free(longer);
    /* two different header bytes swapped */
    for (size_t i = 0; i < 40; i++) {
        size_t a = rnd_below(HEADER_BYTES), b = rnd_below(HEADER_BYTES);
        if (buf[a] == buf[b]) continue;
        unsigned char t = buf[a];
        buf[a] = buf[b];
        buf[b] = t;
        expect_refused(v, buf, size, KVFIT_E_FORMAT, "header byte swap", a * 100 + b);
        buf[b] = buf[a];
        buf[a] = t;
    }
}

static void test_mutation_sweep(void **state) {
    (void)state;
    if (!g_models[0] && !g_models[1]) test_skip("neither stories260K (test data) nor the default model is available");
    kvfit_session *sessions[N_CONFIGS] = {NULL};
    unsigned char *states[N_CONFIGS] = {NULL};
    size_t sizes[N_CONFIGS] = {0};
    const size_t n_prompt = 300;
    for (int i = 0; i < N_CONFIGS; i++) {
        const int m = g_configs[i].model;
        if (!g_models[m]) continue;
        sessions[i] = open_session(m, &g_configs[i]);
        assert_int_equal(kvfit_session_prefill(sessions[i], g_tokens[m], n_prompt), KVFIT_OK);
        states[i] = save(sessions[i], &sizes[i]);
    }
    size_t total = 0, total_format = 0, total_arg = 0;
    for (int i = 0; i < N_CONFIGS; i++) {
        const int m = g_configs[i].model;
        if (!g_models[m]) {
            test_note_skip("%s: model not available", g_configs[i].name);
            continue;
        }
        /* The victim: a session of the same plan holding something else, which
         * every refused load must leave alone. */
        victim v;
        memset(&v, 0, sizeof v);
        v.m = m;
        v.s = open_session(m, &g_configs[i]);
        assert_int_equal(kvfit_session_prefill(v.s, g_tokens[m] + 50, 20), KVFIT_OK);
        v.n_past = kvfit_session_n_past(v.s);
        v.logits = malloc(sizeof(float) * g_n_vocab[m]);
        memcpy(v.logits, logits_of(v.s, m), sizeof(float) * g_n_vocab[m]);

        sweep_one(&g_configs[i], &v, states[i], sizes[i]);
        for (int j = 0; j < N_CONFIGS; j++) {
            if (j == i || !states[j]) continue;
            if (g_configs[j].model == m) {
                /* an intact state of the same model with another plan */
                const kvfit_status st = kvfit_session_load(v.s, states[j], sizes[j]);
                if (st != KVFIT_E_ARG)
                    fail_msg("state of %s into %s: %s (%s)", g_configs[j].name, g_configs[i].name,
                             kvfit_status_str(st), kvfit_last_error());
                assert_int_equal(kvfit_session_n_past(v.s), v.n_past);
                assert_memory_equal(logits_of(v.s, m), v.logits, sizeof(float) * g_n_vocab[m]);
                v.n_refused++;
                v.n_arg++;
            } else {
                expect_refused(&v, states[j], sizes[j], KVFIT_E_FORMAT, "state of another model", (size_t)j);
            }
        }
        if (!g_models[1 - m]) test_note_skip("%s: no state of another model to refuse", g_configs[i].name);

        /* After all that the intact state loads, and the session continues
         * exactly like the one that saved it. */
        assert_int_equal(kvfit_session_load(v.s, states[i], sizes[i]), KVFIT_OK);
        assert_int_equal(kvfit_session_n_past(v.s), n_prompt);
        for (int step = 0; step < 8; step++) {
            assert_memory_equal(logits_of(v.s, m), logits_of(sessions[i], m), sizeof(float) * g_n_vocab[m]);
            assert_int_equal(kvfit_session_decode(v.s, g_tokens[m][n_prompt + step]), KVFIT_OK);
            assert_int_equal(kvfit_session_decode(sessions[i], g_tokens[m][n_prompt + step]), KVFIT_OK);
        }
        printf("%s: state of %zu bytes, %zu damaged or foreign states refused (%zu KVFIT_E_FORMAT, %zu KVFIT_E_ARG)\n",
               g_configs[i].name, sizes[i], v.n_refused, v.n_format, v.n_arg);
        total += v.n_refused;
        total_format += v.n_format;
        total_arg += v.n_arg;
        free(v.logits);
        kvfit_session_free(v.s);
    }
    printf("all: %zu refused (%zu KVFIT_E_FORMAT, %zu KVFIT_E_ARG)\n", total, total_format, total_arg);
    assert_true(total >= 1000);
    for (int i = 0; i < N_CONFIGS; i++) {
        free(states[i]);
        kvfit_session_free(sessions[i]);
    }
}

int main(void) {
    test_skip_all_without_models();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutation_sweep),
    };
    return test_run(tests, setup, teardown);
}
