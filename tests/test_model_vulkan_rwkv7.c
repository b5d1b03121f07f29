/* The rwkv7 architecture on the Vulkan backend, end to end against the CPU
 * backend, on rwkv.cpp's tiny trained RWKV-7 (the rwkv7_model fixture
 * converts it into the build tree; see test_model_rwkv7.c):
 *   - the logits after '"', 'i', 'n' match the ones rwkv.cpp's own test
 *     expects, within rwkv.cpp's tolerance, as on the CPU;
 *   - a 150-byte prompt prefilled in one batch, then N_GEN greedy steps: the
 *     same tokens as the CPU's and, at every step, logits within
 *     MAX_LOGIT_DIFF of the CPU's (the largest difference is printed). Not
 *     bit for bit: the model's F32 matrix products sum in another order on
 *     the device (test_vulkan_ops holds them to 2e-6 relative), although the
 *     RWKV-7 ops themselves give the CPU's bits where the device has doubles.
 *     The same again with the device's doubles switched off
 *     (KVFIT_VULKAN_NO_FP64);
 *   - batches of 7 and one token at a time leave the same logits and state
 *     as one batch, bit for bit, with and without doubles;
 *   - a session saved on Vulkan and restored into another Vulkan session
 *     (with other tokens in it first) continues bit for bit; a state saved on
 *     the CPU continues on Vulkan with the CPU's tokens, its logits within
 *     MAX_LOGIT_DIFF of the CPU's; kvfit_session_reset gives a fresh
 *     session's logits.
 * Exits 77 (skipped) without the converted model or a Vulkan device. The
 * Vulkan validation layer runs (when installed) and must report no error. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfit.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define MODEL_FILE "tiny-rwkv7-834K.gguf"
#define N_VOCAB 256
#define N_GEN 40
#define RWKV_CPP_MAX_DIFF_SUM (0.001f * 1.05f)
/* The largest logit difference allowed (logits of size 10 or so); see the
 * measured ones printed by each case (4.8e-7 on lavapipe) and docs/BENCHMARKS.md. */
#define MAX_LOGIT_DIFF 1e-5f
/* A gap in the CPU's top two logits below this is a tie. */
#define NEAR_TIE 0.01f

static char g_path[4096];
static kvfit_model *g_cpu, *g_vk, *g_vk_nofp64;
static float g_expected[N_VOCAB];
static int g_exact; /* the device has doubles (the RWKV-7 ops give the CPU's bits) */
static int g_validation_errors;

static void on_log(kvfit_log_level level, const char *msg, void *user) {
    (void)user;
    if (strstr(msg, "Vulkan backend on device") && strstr(msg, "fp64 on")) g_exact = 1;
    if (level >= KVFIT_LOG_ERROR && strstr(msg, "Vulkan validation")) {
        g_validation_errors++;
        printf("%s\n", msg);
    }
}

static kvfit_session *new_session(kvfit_model *m, uint32_t n_batch) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 4096;
    sp.n_batch = n_batch;
    sp.n_threads = 2;
    kvfit_session *s = NULL;
    if (kvfit_session_create(m, &sp, &s) != KVFIT_OK) printf("session: %s\n", kvfit_last_error());
    assert_non_null(s);
    return s;
}

static const float *logits_of(kvfit_session *s) {
    const float *l = NULL;
    size_t n = 0;
    assert_int_equal(kvfit_session_logits(s, &l, &n), KVFIT_OK);
    assert_int_equal(n, N_VOCAB);
    return l;
}

static int argmax(const float *l) { return test_argmax(l, N_VOCAB); }

static void *save_state(kvfit_session *s, size_t *n) {
    assert_int_equal(kvfit_session_state_size(s, n), KVFIT_OK);
    void *buf = malloc(*n);
    size_t written = 0;
    assert_int_equal(kvfit_session_save(s, buf, *n, &written), KVFIT_OK);
    assert_int_equal(written, *n);
    return buf;
}

static const int32_t kPrompt[3] = {'"', 'i', 'n'};
static const char kText[] =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\n"
    "You are all resolved rather to die than to famish?";

static size_t text_tokens(int32_t *toks) {
    const size_t n = sizeof kText - 1;
    for (size_t i = 0; i < n; i++) toks[i] = (unsigned char)kText[i];
    return n;
}

static void test_expected_logits(void **state) {
    (void)state;
    kvfit_model *models[2] = {g_vk, g_vk_nofp64};
    for (int m = 0; m < 2; m++) {
        kvfit_session *s = new_session(models[m], 512);
        assert_int_equal(kvfit_session_prefill(s, kPrompt, 3), KVFIT_OK);
        const float *l = logits_of(s);
        float diff_sum = 0.0f; /* as rwkv.cpp sums it: in float, in order */
        double max_abs = 0;
        for (int i = 0; i < N_VOCAB; i++) {
            diff_sum += l[i] - g_expected[i];
            if (fabs((double)l[i] - g_expected[i]) > max_abs) max_abs = fabs((double)l[i] - g_expected[i]);
        }
        printf("Vulkan%s: sum of differences from rwkv.cpp's expected logits %.3g (allowed %.5f), max |difference| "
               "%.3g\n",
               m ? " without doubles" : "", (double)diff_sum, (double)RWKV_CPP_MAX_DIFF_SUM, max_abs);
        assert_true(fabsf(diff_sum) <= RWKV_CPP_MAX_DIFF_SUM);
        kvfit_session_free(s);
    }
    assert_int_equal(g_validation_errors, 0);
}

/* The prompt, then N_GEN greedy steps on both backends. */
static void run_greedy(kvfit_model *vk, const char *what) {
    int32_t toks[sizeof kText];
    const size_t n = text_tokens(toks);
    kvfit_session *sc = new_session(g_cpu, 512), *sv = new_session(vk, 512);
    assert_int_equal(kvfit_session_prefill(sc, toks, n), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sv, toks, n), KVFIT_OK);
    float max_diff = 0.0f;
    int steps = 0;
    char gen[N_GEN + 1];
    for (int i = 0; i <= N_GEN; i++) {
        const float *lc = logits_of(sc), *lv = logits_of(sv);
        for (int j = 0; j < N_VOCAB; j++) {
            const float d = fabsf(lc[j] - lv[j]);
            if (!(d <= max_diff)) max_diff = d;
        }
        const int tc = argmax(lc), tv = argmax(lv);
        if (tc != tv) {
            printf("%s: step %d: CPU %d, Vulkan %d (CPU logits %.5f vs %.5f)\n", what, i, tc, tv, (double)lc[tc],
                   (double)lc[tv]);
            assert_true(lc[tc] - lc[tv] < NEAR_TIE);
            break;
        }
        if (i == N_GEN) break;
        gen[steps++] = (char)tc;
        assert_int_equal(kvfit_session_decode(sc, tc), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, tc), KVFIT_OK);
    }
    gen[steps] = 0;
    printf("%s: prompt of %zu bytes and %d greedy steps (\"%s\"), the same tokens as the CPU's, largest logit "
           "difference %.3g (bound %.0e)\n",
           what, n, steps, gen, (double)max_diff, (double)MAX_LOGIT_DIFF);
    assert_true(max_diff <= MAX_LOGIT_DIFF);
    assert_true(steps >= N_GEN / 2);
    kvfit_session_free(sc);
    kvfit_session_free(sv);
}

static void test_greedy_vs_cpu(void **state) {
    (void)state;
    run_greedy(g_vk, g_exact ? "Vulkan (doubles)" : "Vulkan");
    run_greedy(g_vk_nofp64, "Vulkan without doubles");
    assert_int_equal(g_validation_errors, 0);
}

static void test_batches(void **state) {
    (void)state;
    int32_t toks[sizeof kText];
    const size_t n = text_tokens(toks);
    kvfit_model *models[2] = {g_vk, g_vk_nofp64};
    for (int m = 0; m < 2; m++) {
        kvfit_session *a = new_session(models[m], 512), *b = new_session(models[m], 7),
                      *c = new_session(models[m], 512);
        assert_int_equal(kvfit_session_prefill(a, toks, n), KVFIT_OK);
        assert_int_equal(kvfit_session_prefill(b, toks, n), KVFIT_OK);
        for (size_t i = 0; i < n; i++) assert_int_equal(kvfit_session_decode(c, toks[i]), KVFIT_OK);
        assert_memory_equal(logits_of(a), logits_of(c), N_VOCAB * 4);
        assert_memory_equal(logits_of(b), logits_of(c), N_VOCAB * 4);
        size_t na, nb, nc;
        void *sa = save_state(a, &na), *sb = save_state(b, &nb), *sc = save_state(c, &nc);
        assert_int_equal(na, nc);
        assert_int_equal(nb, nc);
        assert_memory_equal(sa, sc, nc);
        assert_memory_equal(sb, sc, nc);
        free(sa);
        free(sb);
        free(sc);
        kvfit_session_free(a);
        kvfit_session_free(b);
        kvfit_session_free(c);
    }
    assert_int_equal(g_validation_errors, 0);
}

enum { STEPS = 16 };

/* Restores buf into a Vulkan session with other tokens in it first and
 * checks that it continues with the tokens gen and the logits la: bit for bit
 * if exact, else within MAX_LOGIT_DIFF. */
static void continue_restored(const void *buf, size_t sz, size_t n_past, const int32_t *gen, float la[][N_VOCAB],
                              int exact) {
    kvfit_session *b = new_session(g_vk, 512);
    assert_int_equal(kvfit_session_prefill(b, kPrompt, 3), KVFIT_OK);
    assert_int_equal(kvfit_session_load(b, buf, sz), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(b), n_past);
    float max_diff = 0.0f;
    for (int i = 0; i < STEPS; i++) {
        assert_int_equal(argmax(logits_of(b)), gen[i]);
        assert_int_equal(kvfit_session_decode(b, gen[i]), KVFIT_OK);
        const float *l = logits_of(b);
        if (exact) assert_memory_equal(l, la[i], N_VOCAB * 4);
        for (int j = 0; j < N_VOCAB; j++)
            if (!(fabsf(l[j] - la[i][j]) <= max_diff)) max_diff = fabsf(l[j] - la[i][j]);
    }
    assert_true(max_diff <= MAX_LOGIT_DIFF);
    printf("a state saved on %s (%zu bytes) continues on Vulkan for %d steps: %s (largest logit difference %.3g)\n",
           exact ? "Vulkan" : "the CPU", sz, STEPS, exact ? "bit for bit" : "the same tokens", (double)max_diff);
    kvfit_session_free(b);
}

static void test_save_restore(void **state) {
    (void)state;
    int32_t toks[sizeof kText];
    const size_t n = text_tokens(toks);
    kvfit_model *models[2] = {g_vk, g_cpu};
    static float la[STEPS][N_VOCAB];
    int32_t gen[STEPS];
    for (int m = 0; m < 2; m++) {
        /* saved on models[m]; continued there, recording the logits */
        kvfit_session *a = new_session(models[m], 512);
        assert_int_equal(kvfit_session_prefill(a, toks, n), KVFIT_OK);
        size_t sz;
        void *buf = save_state(a, &sz);
        for (int i = 0; i < STEPS; i++) {
            gen[i] = argmax(logits_of(a));
            assert_int_equal(kvfit_session_decode(a, gen[i]), KVFIT_OK);
            memcpy(la[i], logits_of(a), sizeof la[i]);
        }
        kvfit_session_free(a);
        continue_restored(buf, sz, n, gen, la, m == 0);
        free(buf);
    }
    /* reset gives a fresh session's logits */
    kvfit_session *fresh = new_session(g_vk, 512), *s = new_session(g_vk, 512);
    assert_int_equal(kvfit_session_prefill(fresh, kPrompt, 3), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(s, toks, n), KVFIT_OK);
    assert_int_equal(kvfit_session_reset(s), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 0);
    assert_int_equal(kvfit_session_prefill(s, kPrompt, 3), KVFIT_OK);
    assert_memory_equal(logits_of(s), logits_of(fresh), N_VOCAB * 4);
    kvfit_session_free(s);
    kvfit_session_free(fresh);
    assert_int_equal(g_validation_errors, 0);
}

static int setup(void **state) {
    (void)state;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    if (kvfit_model_load(g_path, &mp, &g_cpu) != KVFIT_OK) {
        printf("loading %s on the CPU: %s\n", g_path, kvfit_last_error());
        return -1;
    }
    mp.backend = KVFIT_BACKEND_VULKAN;
    if (kvfit_model_load(g_path, &mp, &g_vk) != KVFIT_OK) {
        printf("loading %s on Vulkan: %s\n", g_path, kvfit_last_error());
        return -1;
    }
    /* the same device without doubles (the shaders' fallbacks) */
    const int exact = g_exact;
    setenv("KVFIT_VULKAN_NO_FP64", "1", 1);
    const kvfit_status st = kvfit_model_load(g_path, &mp, &g_vk_nofp64);
    unsetenv("KVFIT_VULKAN_NO_FP64");
    g_exact = exact;
    if (st != KVFIT_OK) {
        printf("loading %s on Vulkan without doubles: %s\n", g_path, kvfit_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_cpu);
    kvfit_model_free(g_vk);
    kvfit_model_free(g_vk_nofp64);
    printf("%d Vulkan validation errors\n", g_validation_errors);
    return 0;
}

int main(void) {
    const char *p = test_tiny_model(MODEL_FILE);
    if (!p) test_skip_all("%s is missing (the rwkv7_model fixture converts it from the shared test data)", MODEL_FILE);
    snprintf(g_path, sizeof g_path, "%s", p);
    const char *exp_path = test_data_path("rwkv/expected-logits-7v0-834K.bin");
    if (!exp_path) test_skip_all("rwkv/expected-logits-7v0-834K.bin is not in the shared test data");
    FILE *f = fopen(exp_path, "rb");
    if (!f || fread(g_expected, 4, N_VOCAB, f) != N_VOCAB) {
        printf("cannot read %s\n", exp_path);
        return 1;
    }
    fclose(f);
    test_skip_all_without_vulkan();
    kvfit_set_log_callback(on_log, KVFIT_LOG_INFO, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_logits),
        cmocka_unit_test(test_greedy_vs_cpu),
        cmocka_unit_test(test_batches),
        cmocka_unit_test(test_save_restore),
    };
    const int r = test_run(tests, setup, teardown);
    kvfit_set_log_callback(NULL, KVFIT_LOG_WARN, NULL);
    return r;
}
