/* Sessions on one model used from several application threads at once: they
 * share the process's CPU workers, and each must still produce the bits a
 * lone single-threaded session produces, and finish.
 *
 * Four application threads each create four sessions (1, 2 or 3 threads
 * each), then generate greedily on them in turns, save each session's state
 * and load it into a sibling session, and continue on both. Meanwhile the
 * main thread moves the process's thread limit up and down. The model is
 * freed last. Run under ThreadSanitizer by `make tsan` (the `tsan` test);
 * it is a plain test in the ordinary build. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "kvfit.h"
#include "testutil.h"

enum { N_APP_THREADS = 4, N_PER_THREAD = 4, N_SESSIONS = N_APP_THREADS * N_PER_THREAD };
enum { N_PROMPT = 12, N_GEN = 12, N_MORE = 6, N_CTX = 64 };

static kvfit_model *g_model;
static int32_t g_n_vocab;

/* What a lone single-threaded session generates from each session's prompt. */
typedef struct {
    int32_t prompt[N_PROMPT];
    int32_t tokens[N_GEN + N_MORE];
    float *logits; /* after the last token */
} reference;
static reference g_ref[N_SESSIONS];

typedef struct {
    int index;
    char error[256]; /* the first failure; empty if none */
} app_thread;

static kvfit_status make_session(int n_threads, kvfit_session **s) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = N_CTX;
    sp.n_batch = 8; /* the prompt takes two prefill steps */
    sp.n_threads = n_threads;
    return kvfit_session_create(g_model, &sp, s);
}

/* n greedy steps, each token written to out. */
static kvfit_status decode_greedy(kvfit_session *s, int n, int32_t *out) {
    for (int i = 0; i < n; i++) {
        const float *l;
        size_t nv;
        kvfit_status st = kvfit_session_logits(s, &l, &nv);
        if (st) return st;
        out[i] = test_argmax(l, nv);
        if ((st = kvfit_session_decode(s, out[i]))) return st;
    }
    return KVFIT_OK;
}

static void note(app_thread *t, const char *fmt, ...) {
    if (t->error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->error, sizeof t->error, fmt, ap);
    va_end(ap);
}

/* Checks a session's tokens and final logits against the reference. */
static void check(app_thread *t, int k, const char *what, const int32_t *tokens, int n, const int32_t *ref,
                  kvfit_session *s) {
    if (memcmp(tokens, ref, sizeof(int32_t) * (size_t)n)) note(t, "session %d: %s: tokens differ", k, what);
    const float *l;
    size_t nv;
    if (kvfit_session_logits(s, &l, &nv) || nv != (size_t)g_n_vocab ||
        memcmp(l, g_ref[k].logits, sizeof(float) * nv))
        note(t, "session %d: %s: final logits differ", k, what);
}

static void *app_main(void *arg) {
    app_thread *t = arg;
    kvfit_session *s[N_PER_THREAD] = {0}, *sib[N_PER_THREAD] = {0};
    kvfit_status st = KVFIT_OK;
    for (int i = 0; i < N_PER_THREAD && !st; i++) {
        const int threads = 1 + (t->index + i) % 3;
        if (!(st = make_session(threads, &s[i]))) st = make_session(threads, &sib[i]);
    }
    if (st) {
        note(t, "creating sessions: %s", kvfit_last_error());
        goto out;
    }
    for (int round = 0; round < 2 && !t->error[0]; round++) {
        int32_t got[N_PER_THREAD][N_GEN + N_MORE];
        /* prefill every session, then decode on them in turns, a few tokens at a time */
        for (int i = 0; i < N_PER_THREAD && !st; i++) {
            const int k = t->index * N_PER_THREAD + i;
            if (!(st = kvfit_session_reset(s[i]))) st = kvfit_session_prefill(s[i], g_ref[k].prompt, N_PROMPT);
        }
        for (int step = 0; step < N_GEN && !st; step += 3)
            for (int i = 0; i < N_PER_THREAD && !st; i++) st = decode_greedy(s[i], 3, got[i] + step);
        if (st) {
            note(t, "generating: %s", kvfit_last_error());
            break;
        }
        for (int i = 0; i < N_PER_THREAD; i++) {
            const int k = t->index * N_PER_THREAD + i;
            /* the state moves to the sibling; both then continue alike */
            size_t size = 0, written = 0;
            void *buf = NULL;
            if ((st = kvfit_session_state_size(s[i], &size)) || !(buf = malloc(size)) ||
                (st = kvfit_session_save(s[i], buf, size, &written)) || written != size ||
                (st = kvfit_session_load(sib[i], buf, size))) {
                note(t, "session %d: save/load: %s", k, buf ? kvfit_last_error() : "out of memory");
                free(buf);
                goto out;
            }
            free(buf);
            int32_t more[N_MORE];
            if ((st = decode_greedy(sib[i], N_MORE, more)) || (st = decode_greedy(s[i], N_MORE, got[i] + N_GEN))) {
                note(t, "session %d: continuing: %s", k, kvfit_last_error());
                goto out;
            }
            check(t, k, "original", got[i], N_GEN + N_MORE, g_ref[k].tokens, s[i]);
            check(t, k, "loaded copy", more, N_MORE, g_ref[k].tokens + N_GEN, sib[i]);
        }
    }
out:
    for (int i = 0; i < N_PER_THREAD; i++) {
        kvfit_session_free(s[i]);
        kvfit_session_free(sib[i]);
    }
    return NULL;
}

static int setup(void **state) {
    (void)state;
    const char *path = test_data_path("models/stories260K.gguf");
    if (!path) test_skip_all("models/stories260K.gguf not found under $KVFIT_TEST_DATA or ../shared/data");
    if (kvfit_model_load(path, NULL, &g_model)) return -1;
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (kvfit_model_get_info(g_model, &info)) return -1;
    g_n_vocab = (int32_t)info.n_vocab;
    kvfit_session *s;
    if (make_session(1, &s)) return -1;
    for (int k = 0; k < N_SESSIONS; k++) {
        reference *r = &g_ref[k];
        for (int i = 0; i < N_PROMPT; i++) r->prompt[i] = 1 + (int32_t)((k * 37 + i * 11) % (g_n_vocab - 1));
        const float *l;
        size_t nv;
        if (kvfit_session_reset(s) || kvfit_session_prefill(s, r->prompt, N_PROMPT) ||
            decode_greedy(s, N_GEN + N_MORE, r->tokens) || kvfit_session_logits(s, &l, &nv))
            return -1;
        if (!(r->logits = malloc(sizeof(float) * nv))) return -1;
        memcpy(r->logits, l, sizeof(float) * nv);
    }
    kvfit_session_free(s);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int k = 0; k < N_SESSIONS; k++) free(g_ref[k].logits);
    kvfit_model_free(g_model); /* last: after every session, on every thread, is gone */
    g_model = NULL;
    return 0;
}

static void test_threads_share_workers(void **state) {
    (void)state;
    const int limit0 = kvfit_get_thread_limit();
    assert_true(limit0 >= 1);
    app_thread t[N_APP_THREADS];
    pthread_t tid[N_APP_THREADS];
    for (int i = 0; i < N_APP_THREADS; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].index = i;
        assert_int_equal(pthread_create(&tid[i], NULL, app_main, &t[i]), 0);
    }
    /* the limit moves while the sessions run: workers park and return */
    const int limits[] = {1, 3, 2, 4, 0};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
        assert_int_equal(kvfit_set_thread_limit(limits[i]), KVFIT_OK);
    }
    for (int i = 0; i < N_APP_THREADS; i++) assert_int_equal(pthread_join(tid[i], NULL), 0);
    for (int i = 0; i < N_APP_THREADS; i++) {
        if (t[i].error[0]) print_error("application thread %d: %s\n", i, t[i].error);
        assert_string_equal(t[i].error, "");
    }
    assert_int_equal(kvfit_get_thread_limit(), limit0);
}

static void test_thread_limit_arguments(void **state) {
    (void)state;
    const int limit0 = kvfit_get_thread_limit();
    assert_int_equal(kvfit_set_thread_limit(-1), KVFIT_E_ARG);
    assert_int_equal(kvfit_set_thread_limit(257), KVFIT_E_ARG);
    assert_int_equal(kvfit_get_thread_limit(), limit0);
    assert_int_equal(kvfit_set_thread_limit(1), KVFIT_OK);
    assert_int_equal(kvfit_get_thread_limit(), 1);
    /* a session with more threads than the limit: same bits, the caller runs the rest */
    kvfit_session *s;
    assert_int_equal(make_session(4, &s), KVFIT_OK);
    int32_t got[N_GEN + N_MORE];
    assert_int_equal(kvfit_session_prefill(s, g_ref[0].prompt, N_PROMPT), KVFIT_OK);
    assert_int_equal(decode_greedy(s, N_GEN + N_MORE, got), KVFIT_OK);
    assert_memory_equal(got, g_ref[0].tokens, sizeof got);
    assert_int_equal(kvfit_set_thread_limit(0), KVFIT_OK);
    assert_int_equal(kvfit_get_thread_limit(), limit0);
    kvfit_session_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_share_workers),
        cmocka_unit_test(test_thread_limit_arguments),
    };
    return test_run(tests, setup, teardown);
}
