/* Architectures other than llama on the Vulkan backend, end to end against the
 * CPU backend: tiny random-weight gemma3 models (tools/make-tiny-model.py;
 * Q8_0 weights) with a sliding window of 24 and of 100 tokens on five of
 * their six layers. Each is loaded on both backends, and a prompt is
 * prefilled and continued greedily for N_GEN tokens, long enough for the
 * window's ring to turn, in
 *   - a dense session: the local layers keep their keys rotated at their
 *     stream positions in a ring (with the window of 100 prefill batches of 64
 *     queries take the batched attention path), the global layer a dense
 *     cache; and
 *   - a budgeted session (kv_budget_bytes): the local layers keep keys before
 *     RoPE (streaming attention without sinks), the global layer streams
 *     through sinks and a ring of 64.
 * Where the device has doubles the Vulkan backend does the CPU's arithmetic
 * (Backend::reproduces_cpu), and every step's logits must be the CPU's bit
 * for bit; without them the greedy tokens must agree, up to a step where the
 * CPU's top two logits are a near tie (the case stops there).
 *
 * ctest's tiny_models fixture writes the models into the build tree
 * ($KVFIT_TINY_DIR names another folder). Exits with 77 (skipped) without
 * them or without a Vulkan device.
 * The Vulkan validation layer runs (when installed) and must report no error. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "kvfit.h"
#include "testutil.h"

#define N_GEN 40
#define N_MODELS 2
#define MAX_PROMPT 512
/* A gap in the CPU's top two logits below this is a tie, as in test_model_vulkan.c. */
#define NEAR_TIE 0.25f

static const char *const k_models[N_MODELS] = {"tiny-gemma3.gguf", "tiny-gemma3-w100.gguf"};
static const uint32_t k_windows[N_MODELS] = {24, 100};

/* About 210 tokens, prefilled in batches of 64 (24 with the window of 24):
 * with the window of 100 the third batch (positions 128 to 191) reads ring
 * slots that already turned. */
static const char k_prompt[] =
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, counting the steps as his father had "
    "taught him: one hundred and twelve, no more and no fewer. At the top he trimmed the wick, polished the great "
    "lens until it shone like a second moon, and wrote the weather in a ledger whose first pages were older than "
    "the village itself. Ships he never saw passed in the dark, and in the morning the sea was always calm again. "
    "His daughter, who kept the accounts, said the light had not failed once in forty winters, not even in the "
    "storm that carried away the harbour wall and half of the fishing fleet. When the engineers came from the "
    "capital with plans for an electric lamp that would need no keeper at all, he listened politely, served them "
    "tea, and showed them the ledger; they left the plans on the table and took the last ferry home.";

static char g_paths[N_MODELS][4096];
static kvfit_model *g_cpu[N_MODELS], *g_vk[N_MODELS];
static int g_exact; /* the device reproduces the CPU: logits must be equal bit for bit */
static int g_validation_errors;

static void on_log(kvfit_log_level level, const char *msg, void *user) {
    (void)user;
    if (strstr(msg, "Vulkan backend on device") && strstr(msg, "fp64 on")) g_exact = 1;
    if (level >= KVFIT_LOG_ERROR && strstr(msg, "Vulkan validation")) {
        g_validation_errors++;
        printf("%s\n", msg);
    }
}

/* Compares the two sessions' current logits; returns the CPU's top token, or
 * -1 where the backends' top tokens differ at a near tie (no fp64 only). */
static int32_t compare_step(kvfit_session *sc, kvfit_session *sv, const char *what, int step, float *max_diff) {
    const float *lc, *lv;
    size_t nc, nv;
    assert_int_equal(kvfit_session_logits(sc, &lc, &nc), KVFIT_OK);
    assert_int_equal(kvfit_session_logits(sv, &lv, &nv), KVFIT_OK);
    assert_int_equal(nc, nv);
    for (size_t j = 0; j < nc; j++) {
        const float d = fabsf(lc[j] - lv[j]);
        if (!(d <= *max_diff)) *max_diff = d;
    }
    if (g_exact && memcmp(lc, lv, nc * sizeof *lc) != 0) {
        size_t j = 0;
        while (lc[j] == lv[j]) j++;
        printf("%s: step %d: logits differ from the CPU's (first at %zu: %.9g vs %.9g)\n", what, step, j, (double)lc[j],
               (double)lv[j]);
        fail();
    }
    const int32_t tc = test_argmax(lc, nc), tv = test_argmax(lv, nv);
    if (tc != tv) {
        printf("%s: step %d: CPU %d, Vulkan %d (CPU logits %.4f vs %.4f)\n", what, step, tc, tv, (double)lc[tc],
               (double)lc[tv]);
        assert_true(lc[tc] - lc[tv] < NEAR_TIE);
        return -1;
    }
    return tc;
}

/* The prompt and N_GEN greedy tokens in one session per backend. */
static void run_case(int m, const kvfit_session_params *sp, const char *kind) {
    char what[160];
    snprintf(what, sizeof what, "%s, %s session", k_models[m], kind);
    kvfit_session *sc, *sv;
    assert_int_equal(kvfit_session_create(g_cpu[m], sp, &sc), KVFIT_OK);
    assert_int_equal(kvfit_session_create(g_vk[m], sp, &sv), KVFIT_OK);

    /* The same plan on both; the local layers (all but each sixth) keep exactly the model's window. */
    kvfit_layer_plan pc[16], pv[16];
    size_t nl = 0;
    uint64_t bc = 0, bv = 0;
    assert_int_equal(kvfit_session_plan(sc, pc, 16, &nl, &bc), KVFIT_OK);
    assert_int_equal(kvfit_session_plan(sv, pv, 16, &nl, &bv), KVFIT_OK);
    assert_true(nl == 6);
    assert_memory_equal(pc, pv, nl * sizeof *pc);
    assert_int_equal(bc, bv);
    for (size_t l = 0; l < nl; l++) {
        if (l % 6 < 5) {
            assert_int_equal(pc[l].kind, KVFIT_LAYER_WINDOW);
            assert_int_equal(pc[l].n_window, k_windows[m]);
            assert_int_equal(pc[l].n_sink, 0);
        } else {
            assert_int_equal(pc[l].kind, sp->kv_budget_bytes ? KVFIT_LAYER_STREAMING : KVFIT_LAYER_DENSE);
        }
    }

    int32_t ids[MAX_PROMPT];
    size_t n = 0;
    assert_int_equal(kvfit_tokenize(g_cpu[m], k_prompt, strlen(k_prompt), true, false, ids, MAX_PROMPT, &n), KVFIT_OK);
    assert_true(n >= 192 && n + N_GEN <= 320 && n < MAX_PROMPT);
    assert_int_equal(kvfit_session_prefill(sc, ids, n), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sv, ids, n), KVFIT_OK);
    float max_diff = 0.0f;
    int steps = 0;
    for (int i = 0; i <= N_GEN; i++) {
        const int32_t t = compare_step(sc, sv, what, i, &max_diff);
        steps++;
        if (t < 0 || i == N_GEN) break;
        assert_int_equal(kvfit_session_decode(sc, t), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, t), KVFIT_OK);
    }
    printf("%s (global layer: %s, window %u, codec %d): prompt of %zu tokens and %d steps, largest logit "
           "difference %.3g (bit for bit required: %s)\n",
           what, pc[5].kind == KVFIT_LAYER_DENSE ? "dense" : "streaming", pc[5].n_window, (int)pc[5].codec, n,
           steps - 1, (double)max_diff, g_exact ? "yes" : "no");
    kvfit_session_free(sc);
    kvfit_session_free(sv);
}

static void test_dense(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.n_ctx = 320;
        sp.n_batch = 64;
        run_case(m, &sp, "dense");
    }
    assert_int_equal(g_validation_errors, 0);
}

static void test_budgeted(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.kv_budget_bytes = 1u << 20;
        sp.n_window = 64; /* the global layer's ring: it turns too (the local layers keep their own window) */
        run_case(m, &sp, "budgeted");
    }
    assert_int_equal(g_validation_errors, 0);
}

/* The budget holds on the device as on the CPU: for every codec, the bytes
 * the Vulkan stream really allocated for the layers (kvfit_session_kv_bytes
 * counts the driver's memory requirements) stay within the budget and equal
 * the plan's count. */
static void test_budget_on_device(void **state) {
    (void)state;
    const kvfit_kv_codec codecs[] = {KVFIT_KV_AUTO, KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4, KVFIT_KV_Q4_HADAMARD,
                                     KVFIT_KV_Q4_CHANNEL};
    const uint64_t budgets[] = {1u << 20, 3u << 20};
    int tried = 0;
    for (size_t c = 0; c < sizeof codecs / sizeof codecs[0]; c++)
        for (size_t b = 0; b < 2; b++) {
            kvfit_session_params sp;
            kvfit_session_params_init(&sp);
            sp.kv_budget_bytes = budgets[b];
            sp.kv_codec = codecs[c];
            sp.n_threads = 1;
            kvfit_session *s = NULL;
            const kvfit_status st = kvfit_session_create(g_vk[1], &sp, &s);
            if (st == KVFIT_E_BUDGET) continue; /* the windows alone do not fit at this codec */
            assert_int_equal(st, KVFIT_OK);
            uint64_t total = 0;
            assert_int_equal(kvfit_session_plan(s, NULL, 0, NULL, &total), KVFIT_OK);
            assert_true(kvfit_session_kv_bytes(s) <= budgets[b]);
            assert_int_equal(kvfit_session_kv_bytes(s), total);
            kvfit_session_free(s);
            tried++;
        }
    printf("%d budgeted Vulkan sessions allocated within their budget\n", tried);
    assert_true(tried >= 8);
}

static int setup(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        kvfit_model_params mp;
        kvfit_model_params_init(&mp);
        mp.backend = KVFIT_BACKEND_CPU;
        if (kvfit_model_load(g_paths[m], &mp, &g_cpu[m]) != KVFIT_OK) {
            printf("loading %s on the CPU: %s\n", g_paths[m], kvfit_last_error());
            return -1;
        }
        mp.backend = KVFIT_BACKEND_VULKAN;
        if (kvfit_model_load(g_paths[m], &mp, &g_vk[m]) != KVFIT_OK) {
            printf("loading %s on Vulkan: %s\n", g_paths[m], kvfit_last_error());
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int m = 0; m < N_MODELS; m++) {
        kvfit_model_free(g_cpu[m]);
        kvfit_model_free(g_vk[m]);
    }
    printf("%d Vulkan validation errors\n", g_validation_errors);
    return 0;
}

int main(void) {
    for (int m = 0; m < N_MODELS; m++) {
        const char *p = test_tiny_model(k_models[m]);
        if (!p)
            test_skip_all("%s is missing: ctest's tiny_models fixture writes it (needs the gguf and numpy packages; "
                          "$KVFIT_TINY_DIR names another folder)", k_models[m]);
        snprintf(g_paths[m], sizeof g_paths[m], "%s", p);
    }
    test_skip_all_without_vulkan();
    kvfit_set_log_callback(on_log, KVFIT_LOG_INFO, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense),
        cmocka_unit_test(test_budgeted),
        cmocka_unit_test(test_budget_on_device),
    };
    const int r = test_run(tests, setup, teardown);
    kvfit_set_log_callback(NULL, KVFIT_LOG_WARN, NULL);
    return r;
}
