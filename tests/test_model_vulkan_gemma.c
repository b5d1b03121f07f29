/* Gemma 3 270M (models/gemma-3-270m-q4_k_m.gguf: Q4_K, Q6_K, Q5_0 and Q8_0
 * weights) on the Vulkan backend against the CPU backend: a short prompt
 * (one partial batched-matmul tile) and N_GEN greedy steps in dense sessions.
 *
 * Where the device has doubles, the Vulkan backend does the CPU's float
 * arithmetic operation for operation (Backend::reproduces_cpu), k-quant and
 * Q5_0 products included, so the logits after the prefill and after every
 * decode step must be the CPU's, bit for bit. Without doubles the greedy
 * tokens must be the CPU's, except at a step where the CPU's top two logits
 * are a near tie (the case then stops there).
 *
 * Lavapipe is slow and the tied output matrix is 262144 x 640 (Q8_0), so the
 * case is short: every step checks the whole path, and the prompt and the
 * decode steps each cover their matmul path. The Vulkan validation layer runs
 * (when installed) and must report no error. Exits 77 (ctest's skip) without
 * the model or a Vulkan device. */
#include <math.h>
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

#define MODEL_FILE "gemma-3-270m-q4_k_m.gguf"
#define PROMPT "The capital of France is"
#define N_GEN 4
#define NEAR_TIE 0.25f /* a gap in the CPU's top two logits below this is a tie */

static kvfit_model *g_cpu, *g_vk;
static int g_validation_errors;
static int g_exact; /* the logits must be the CPU's, bit for bit */
static float g_max_diff;

static void on_log(kvfit_log_level level, const char *msg, void *user) {
    (void)user;
    if (strstr(msg, "Vulkan backend on device") && strstr(msg, "fp64 on")) g_exact = 1;
    if (level >= KVFIT_LOG_ERROR && strstr(msg, "Vulkan validation")) {
        g_validation_errors++;
        printf("%s\n", msg);
    }
}

static void test_greedy(void **state) {
    (void)state;
    int32_t ids[64];
    size_t np = 0;
    assert_int_equal(kvfit_tokenize(g_cpu, PROMPT, strlen(PROMPT), true, false, ids, 64, &np), KVFIT_OK);
    assert_true(np >= 4 && np < 8); /* less than one 8-token matmul tile */
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 64;
    kvfit_session *sc, *sv;
    assert_int_equal(kvfit_session_create(g_cpu, &sp, &sc), KVFIT_OK);
    assert_int_equal(kvfit_session_create(g_vk, &sp, &sv), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sc, ids, np), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sv, ids, np), KVFIT_OK);
    int same = 0;
    for (int i = 0; i <= N_GEN; i++) {
        const float *lc, *lv;
        size_t nc, nv;
        assert_int_equal(kvfit_session_logits(sc, &lc, &nc), KVFIT_OK);
        assert_int_equal(kvfit_session_logits(sv, &lv, &nv), KVFIT_OK);
        assert_int_equal(nc, nv);
        for (size_t j = 0; j < nc; j++) {
            const float d = fabsf(lc[j] - lv[j]);
            if (d > g_max_diff) g_max_diff = d;
        }
        if (g_exact) assert_memory_equal(lc, lv, nc * sizeof *lc);
        const int32_t tc = test_argmax(lc, nc), tv = test_argmax(lv, nc);
        if (tc != tv) {
            printf("step %d: CPU token %d, Vulkan %d (CPU logits %.4f vs %.4f)\n", i, tc, tv, (double)lc[tc],
                   (double)lc[tv]);
            assert_true(lc[tc] - lc[tv] < NEAR_TIE);
            break;
        }
        same++;
        if (i == N_GEN) break;
        assert_int_equal(kvfit_session_decode(sc, tc), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, tc), KVFIT_OK);
    }
    printf("Gemma 3 270M, %zu prompt tokens: %d of %d greedy tokens identical; largest logit difference %.3g "
           "(bit for bit required: %s)\n",
           np, same, N_GEN + 1, (double)g_max_diff, g_exact ? "yes" : "no");
    kvfit_session_free(sc);
    kvfit_session_free(sv);
    assert_int_equal(g_validation_errors, 0);
}

static int setup(void **state) {
    (void)state;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    return kvfit_model_load(test_models_file(MODEL_FILE), &mp, &g_cpu) == KVFIT_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_cpu);
    kvfit_model_free(g_vk);
    kvfit_set_log_callback(NULL, KVFIT_LOG_WARN, NULL);
    return 0;
}

int main(void) {
    kvfit_set_log_callback(on_log, KVFIT_LOG_INFO, NULL);
    setenv("KVFIT_VULKAN_VALIDATION", "1", 0); /* unless the caller chose otherwise */
    const char *path = test_models_file(MODEL_FILE);
    if (!path) test_skip_all("models/" MODEL_FILE " is missing");
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_VULKAN;
    const kvfit_status st = kvfit_model_load(path, &mp, &g_vk);
    if (st == KVFIT_E_BACKEND_UNAVAILABLE) test_skip_all("no Vulkan device: %s", kvfit_last_error());
    if (st != KVFIT_OK) {
        printf("loading on Vulkan: %s\n", kvfit_last_error());
        return 1;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_greedy)};
    return test_run(tests, setup, teardown);
}
