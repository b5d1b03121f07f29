/* Session state moves between backends: a state saved on the CPU loads on
 * Vulkan and one saved on Vulkan loads on the CPU, and the session that loaded
 * it continues with the same greedy tokens as the session that saved it.
 * stories260K, dense F16 (keys kept after RoPE) and a streaming F16 session
 * (keys before RoPE, rotated at attention time).
 *
 * Where the device reproduces the CPU's arithmetic (fp64 on, as Mesa's
 * lavapipe has it) every token must match; elsewhere the two backends may
 * round differently, and the tokens must match until the first step whose top
 * two logits are within NEAR_TIE of each other. Skips without a Vulkan device
 * or the model. */
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

#define N_CONTINUE 24
#define NEAR_TIE 0.25f

static kvfit_model *g_cpu, *g_vk;
static int g_exact;

static void on_log(kvfit_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    if (strstr(msg, "Vulkan backend on device") && strstr(msg, "fp64 on")) g_exact = 1;
}

static int32_t argmax_gap(const float *l, size_t n, float *gap) {
    size_t best = 0, second = n > 1 ? 1 : 0;
    if (n > 1 && l[1] > l[0]) best = 1, second = 0;
    for (size_t i = 2; i < n; i++) {
        if (l[i] > l[best]) second = best, best = i;
        else if (l[i] > l[second]) second = i;
    }
    *gap = l[best] - l[second];
    return (int32_t)best;
}

/* Greedy tokens of a session, one decode at a time; gaps[i] is the margin of
 * token i over the runner-up. */
static void continue_greedy(kvfit_session *s, int32_t *tokens, float *gaps) {
    for (int i = 0; i < N_CONTINUE; i++) {
        const float *logits;
        size_t n;
        assert_int_equal(kvfit_session_logits(s, &logits, &n), KVFIT_OK);
        tokens[i] = argmax_gap(logits, n, &gaps[i]);
        assert_int_equal(kvfit_session_decode(s, tokens[i]), KVFIT_OK);
    }
}

static void move_state(kvfit_model *from, kvfit_model *to, uint64_t budget, const char *what) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.kv_budget_bytes = budget;
    kvfit_session *saver = NULL, *loader = NULL;
    assert_int_equal(kvfit_session_create(from, &sp, &saver), KVFIT_OK);
    assert_int_equal(kvfit_session_create(to, &sp, &loader), KVFIT_OK);
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play";
    int32_t prompt[64];
    size_t n_prompt = 0;
    assert_int_equal(kvfit_tokenize(from, text, strlen(text), true, false, prompt, 64, &n_prompt), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(saver, prompt, n_prompt), KVFIT_OK);
    size_t size = 0, written = 0;
    assert_int_equal(kvfit_session_state_size(saver, &size), KVFIT_OK);
    void *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(kvfit_session_save(saver, buf, size, &written), KVFIT_OK);
    const kvfit_status st = kvfit_session_load(loader, buf, written);
    if (st != KVFIT_OK) fail_msg("%s: load: %s (%s)", what, kvfit_status_str(st), kvfit_last_error());
    free(buf);
    assert_int_equal(kvfit_session_n_past(loader), n_prompt);

    int32_t want[N_CONTINUE], got[N_CONTINUE];
    float want_gap[N_CONTINUE], got_gap[N_CONTINUE];
    continue_greedy(saver, want, want_gap);
    continue_greedy(loader, got, got_gap);
    int same = 0;
    while (same < N_CONTINUE && want[same] == got[same]) same++;
    printf("%s: %d of %d greedy tokens as the session that saved the state\n", what, same, N_CONTINUE);
    if (g_exact) {
        assert_int_equal(same, N_CONTINUE);
    } else if (same < N_CONTINUE) {
        if (want_gap[same] >= NEAR_TIE) fail_msg("%s: token %d differs with a margin of %.3f", what, same, want_gap[same]);
    }
    kvfit_session_free(saver);
    kvfit_session_free(loader);
}

static void test_dense_cpu_to_vulkan(void **state) {
    (void)state;
    move_state(g_cpu, g_vk, 0, "dense F16, CPU -> Vulkan");
}
static void test_dense_vulkan_to_cpu(void **state) {
    (void)state;
    move_state(g_vk, g_cpu, 0, "dense F16, Vulkan -> CPU");
}
static void test_streaming_cpu_to_vulkan(void **state) {
    (void)state;
    move_state(g_cpu, g_vk, 64 * 1024, "streaming F16, CPU -> Vulkan");
}
static void test_streaming_vulkan_to_cpu(void **state) {
    (void)state;
    move_state(g_vk, g_cpu, 64 * 1024, "streaming F16, Vulkan -> CPU");
}

int main(void) {
    kvfit_set_log_callback(on_log, KVFIT_LOG_INFO, NULL);
    const char *path = test_data_path("models/stories260K.gguf");
    if (!path) test_skip_all("models/stories260K.gguf is not in the test data folder ($KVFIT_TEST_DATA or ../shared/data)");
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_VULKAN;
    const kvfit_status st = kvfit_model_load(path, &mp, &g_vk);
    if (st == KVFIT_E_BACKEND_UNAVAILABLE) test_skip_all("no Vulkan device: %s", kvfit_last_error());
    if (st != KVFIT_OK) {
        printf("loading on Vulkan: %s\n", kvfit_last_error());
        return 1;
    }
    mp.backend = KVFIT_BACKEND_CPU;
    if (kvfit_model_load(path, &mp, &g_cpu) != KVFIT_OK) {
        printf("loading on the CPU: %s\n", kvfit_last_error());
        return 1;
    }
    printf("the device %s the CPU's arithmetic\n", g_exact ? "reproduces" : "does not reproduce");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_cpu_to_vulkan),
        cmocka_unit_test(test_dense_vulkan_to_cpu),
        cmocka_unit_test(test_streaming_cpu_to_vulkan),
        cmocka_unit_test(test_streaming_vulkan_to_cpu),
    };
    const int rc = test_run(tests, NULL, NULL);
    kvfit_model_free(g_cpu);
    kvfit_model_free(g_vk);
    return rc;
}
