/* The qwen35 architecture (Gated DeltaNet hybrid) on the tiny random-weight
 * file of ctest's tiny_models fixture (tools/make-tiny-model.py qwen35: 8
 * layers, 6 recurrent, attention at layers 3 and 7; 2 key heads and 4 value
 * heads of 64, conv kernel 4). Agreement with llama.cpp is test_model_peer's;
 * here:
 *  - prefill in batches and token-by-token decode give the same logits (bit
 *    for bit below the batch size where attention changes its order; within
 *    a stated bound (check_bounded) for one batch of 200 and for the chunked
 *    delta-rule scan);
 *  - a saved session, restored, continues bit for bit (dense and streaming);
 *  - reset clears the recurrent state;
 *  - the plan lists the recurrent layers with their state bytes, and a budget
 *    that cannot hold the states and a minimal window fails with
 *    KVFIT_E_BUDGET naming the smallest budget that works, which works. */
#define _POSIX_C_SOURCE 200809L /* setenv */
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

/* The generator's shapes (tools/make-tiny-model.py, "qwen35"). */
#define N_LAYER 8
#define CONV_KERNEL 4
#define KEY_HEADS 2
#define VALUE_HEADS 4
#define HEAD_DIM 64
#define N_TOK 200

static kvfit_model *g_model;
static int32_t g_tokens[N_TOK];
static size_t g_n_vocab;

static int setup(void **state) {
    (void)state;
    const char *p = test_tiny_model("tiny-qwen35.gguf");
    if (!p) test_skip_all("tiny-qwen35.gguf is missing: ctest's tiny_models fixture writes it (needs the gguf and numpy packages)");
    if (kvfit_model_load(p, NULL, &g_model) != KVFIT_OK) {
        fprintf(stderr, "load: %s\n", kvfit_last_error());
        return -1;
    }
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (kvfit_model_get_info(g_model, &info) != KVFIT_OK) return -1;
    g_n_vocab = info.n_vocab;
    for (size_t i = 0; i < N_TOK; i++) g_tokens[i] = (int32_t)(100 + (i * 7919) % (g_n_vocab - 200));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_model);
    return 0;
}

static kvfit_session *new_session(kvfit_model *m, uint32_t n_batch, uint64_t budget, uint32_t window) {
    kvfit_session_params p;
    kvfit_session_params_init(&p);
    p.n_ctx = 512;
    p.n_batch = n_batch;
    p.n_threads = 2;
    p.kv_budget_bytes = budget;
    p.n_window = window;
    kvfit_session *s = NULL;
    if (kvfit_session_create(m, &p, &s) != KVFIT_OK) {
        fprintf(stderr, "session: %s\n", kvfit_last_error());
        fail();
    }
    return s;
}

static float *logits_copy(const kvfit_session *s) {
    const float *l;
    size_t n;
    assert_int_equal(kvfit_session_logits(s, &l, &n), KVFIT_OK);
    assert_int_equal(n, g_n_vocab);
    float *c = malloc(n * sizeof *c);
    memcpy(c, l, n * sizeof *c);
    return c;
}

static float max_diff(const float *a, const float *b);

static size_t argmax(const float *a) { return (size_t)test_argmax(a, g_n_vocab); }

static float rms(const float *a) {
    double s = 0;
    for (size_t i = 0; i < g_n_vocab; i++) s += (double)a[i] * a[i];
    return (float)sqrt(s / (double)g_n_vocab);
}

/* Where the order of float operations differs, the random model amplifies
 * last-bit differences (the 8-bit quantization of activations before every
 * matrix product turns them into whole quantization steps), so rounding
 * alone moves its logits (RMS about 4) either not at all or by a few tenths:
 * 0.25 between one batch of 200 and token-by-token decode, where only the
 * attention of 2 layers sums in another order. The bound: a logit difference
 * below 15% of the logits' RMS. The ops themselves are checked against brute
 * force to 1e-5 (test_recurrent_ops). */
static void check_bounded(const float *got, const float *want, const char *what) {
    const float d = max_diff(got, want), bound = 0.15f * rms(want);
    printf("%s: largest logit difference %.3g (bound %.3g), argmax %zu vs %zu\n", what, d, bound, argmax(got),
           argmax(want));
    assert_true(d < bound);
}

static float max_diff(const float *a, const float *b) {
    float d = 0;
    for (size_t i = 0; i < g_n_vocab; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
    return d;
}

/* Token by token: every step's logits. */
static float *decode_all(kvfit_session *s, int n) {
    float *all = malloc((size_t)n * g_n_vocab * sizeof *all);
    for (int i = 0; i < n; i++) {
        assert_int_equal(kvfit_session_decode(s, g_tokens[i]), KVFIT_OK);
        float *l = logits_copy(s);
        memcpy(all + (size_t)i * g_n_vocab, l, g_n_vocab * sizeof *l);
        free(l);
    }
    return all;
}

static void test_prefill_vs_decode(void **state) {
    (void)state;
    kvfit_session *dec = new_session(g_model, 0, 0, 0);
    float *steps = decode_all(dec, N_TOK);
    /* batches of 32 (attention follows llama.cpp's per-query order below 64
     * queries, the delta rule is the same recurrence): the same bits at the
     * end of every batch */
    kvfit_session *pre = new_session(g_model, 32, 0, 0);
    for (int t0 = 0; t0 < N_TOK; t0 += 32) {
        const int n = N_TOK - t0 < 32 ? N_TOK - t0 : 32;
        assert_int_equal(kvfit_session_prefill(pre, g_tokens + t0, (size_t)n), KVFIT_OK);
        float *l = logits_copy(pre);
        assert_memory_equal(l, steps + (size_t)(t0 + n - 1) * g_n_vocab, g_n_vocab * sizeof *l);
        free(l);
    }
    /* one batch of 200: kvfit's own attention order for 64 queries and more
     * (the recurrent layers are still exact), so a bound */
    kvfit_session *one = new_session(g_model, 512, 0, 0);
    assert_int_equal(kvfit_session_prefill(one, g_tokens, N_TOK), KVFIT_OK);
    float *l = logits_copy(one);
    check_bounded(l, steps + (size_t)(N_TOK - 1) * g_n_vocab, "one batch of 200 vs token by token");
    free(l);
    kvfit_session_free(one);
    kvfit_session_free(pre);
    kvfit_session_free(dec);
    free(steps);
}

/* The chunked scan for prefill (KVFIT_DELTA_SCAN=chunked, read at load)
 * against token-by-token decode of the default model: equal up to rounding. */
static void test_chunked_prefill(void **state) {
    (void)state;
    setenv("KVFIT_DELTA_SCAN", "chunked", 1);
    kvfit_model *m = NULL;
    const kvfit_status st = kvfit_model_load(test_tiny_model("tiny-qwen35.gguf"), NULL, &m);
    unsetenv("KVFIT_DELTA_SCAN");
    assert_int_equal(st, KVFIT_OK);
    kvfit_session *dec = new_session(g_model, 0, 0, 0);
    float *steps = decode_all(dec, N_TOK);
    kvfit_session *pre = new_session(m, 32, 0, 0);
    for (int t0 = 0; t0 < N_TOK; t0 += 32) {
        const int n = N_TOK - t0 < 32 ? N_TOK - t0 : 32;
        assert_int_equal(kvfit_session_prefill(pre, g_tokens + t0, (size_t)n), KVFIT_OK);
        float *l = logits_copy(pre);
        char what[96];
        snprintf(what, sizeof what, "chunked delta-rule prefill, tokens %d..%d, vs token by token", t0, t0 + n - 1);
        check_bounded(l, steps + (size_t)(t0 + n - 1) * g_n_vocab, what);
        free(l);
    }
    kvfit_session_free(pre);
    kvfit_session_free(dec);
    kvfit_model_free(m);
    free(steps);
}

static void save_restore(uint64_t budget, uint32_t window) {
    kvfit_session *a = new_session(g_model, 0, budget, window);
    assert_int_equal(kvfit_session_prefill(a, g_tokens, 120), KVFIT_OK);
    size_t size = 0, written = 0;
    assert_int_equal(kvfit_session_state_size(a, &size), KVFIT_OK);
    void *buf = malloc(size);
    assert_int_equal(kvfit_session_save(a, buf, size, &written), KVFIT_OK);
    assert_int_equal(written, size);
    /* a continues... */
    float *want = malloc(60 * g_n_vocab * sizeof *want);
    for (int i = 0; i < 60; i++) {
        assert_int_equal(kvfit_session_decode(a, g_tokens[120 + i]), KVFIT_OK);
        float *l = logits_copy(a);
        memcpy(want + (size_t)i * g_n_vocab, l, g_n_vocab * sizeof *l);
        free(l);
    }
    /* ...and so does a new session restored from the saved state */
    kvfit_session *b = new_session(g_model, 0, budget, window);
    assert_int_equal(kvfit_session_prefill(b, g_tokens + 50, 10), KVFIT_OK); /* state to be replaced */
    assert_int_equal(kvfit_session_load(b, buf, size), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(b), 120);
    for (int i = 0; i < 60; i++) {
        assert_int_equal(kvfit_session_decode(b, g_tokens[120 + i]), KVFIT_OK);
        float *l = logits_copy(b);
        assert_memory_equal(l, want + (size_t)i * g_n_vocab, g_n_vocab * sizeof *l);
        free(l);
    }
    free(want);
    free(buf);
    kvfit_session_free(b);
    kvfit_session_free(a);
}

static void test_save_restore_dense(void **state) {
    (void)state;
    save_restore(0, 0);
}

/* A streaming session whose window wraps (sinks 4 + window 32 < 180 tokens). */
static void test_save_restore_streaming(void **state) {
    (void)state;
    save_restore(0, 32);
}

static void test_reset(void **state) {
    (void)state;
    kvfit_session *fresh = new_session(g_model, 0, 0, 0);
    assert_int_equal(kvfit_session_prefill(fresh, g_tokens + 100, 40), KVFIT_OK);
    float *want = logits_copy(fresh);
    kvfit_session *s = new_session(g_model, 0, 0, 0);
    assert_int_equal(kvfit_session_prefill(s, g_tokens, 90), KVFIT_OK);
    assert_int_equal(kvfit_session_reset(s), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 0);
    assert_int_equal(kvfit_session_prefill(s, g_tokens + 100, 40), KVFIT_OK);
    float *got = logits_copy(s);
    assert_memory_equal(got, want, g_n_vocab * sizeof *got);
    free(got);
    free(want);
    kvfit_session_free(s);
    kvfit_session_free(fresh);
}

static uint64_t round_up(uint64_t b) { return (b + 255) / 256 * 256; }

static void test_plan_and_budget(void **state) {
    (void)state;
    /* Per recurrent layer: the conv's last 3 inputs of 2 * 128 + 256 channels
     * (F32) and 4 states of 64 x 64, which within a budget the CPU keeps in
     * BF16 (the planner's choice, measured harmless: docs/BENCHMARKS.md). */
    const uint64_t conv = (uint64_t)(CONV_KERNEL - 1) * (2 * KEY_HEADS * HEAD_DIM + VALUE_HEADS * HEAD_DIM) * 4;
    const uint64_t delta = (uint64_t)VALUE_HEADS * HEAD_DIM * HEAD_DIM * 2;
    const uint64_t per_layer = round_up(conv) + round_up(delta);
    const uint64_t budget = 1 << 20;
    kvfit_session *s = new_session(g_model, 0, budget, 0);
    kvfit_layer_plan plan[N_LAYER];
    size_t n = 0;
    uint64_t total = 0;
    assert_int_equal(kvfit_session_plan(s, plan, N_LAYER, &n, &total), KVFIT_OK);
    assert_int_equal(n, N_LAYER);
    uint64_t recurrent = 0;
    for (int l = 0; l < N_LAYER; l++) {
        const int is_recurrent = (l + 1) % 4 != 0;
        printf("layer %d: kind %d codec %d sinks %u window %u bytes %llu\n", l, plan[l].kind, plan[l].codec,
               plan[l].n_sink, plan[l].n_window, (unsigned long long)plan[l].bytes);
        if (is_recurrent) {
            assert_int_equal(plan[l].kind, KVFIT_LAYER_RECURRENT);
            assert_int_equal(plan[l].codec, KVFIT_KV_BF16);
            assert_int_equal(plan[l].bytes, per_layer);
            assert_int_equal(plan[l].n_window, 0);
            recurrent += plan[l].bytes;
        } else {
            assert_int_equal(plan[l].kind, KVFIT_LAYER_STREAMING);
            assert_true(plan[l].n_window > 0);
        }
    }
    assert_true(total <= budget && total > recurrent);
    assert_true(kvfit_session_kv_bytes(s) <= budget);
    kvfit_session_free(s);

    /* a budget below the states alone, then one that holds them but no window */
    const uint64_t small[2] = {recurrent / 2, recurrent + 1024};
    for (int i = 0; i < 2; i++) {
        kvfit_session_params p;
        kvfit_session_params_init(&p);
        p.n_ctx = 512;
        p.kv_budget_bytes = small[i];
        kvfit_session *bad = NULL;
        assert_int_equal(kvfit_session_create(g_model, &p, &bad), KVFIT_E_BUDGET);
        const char *msg = kvfit_last_error();
        printf("budget %llu: %s\n", (unsigned long long)small[i], msg);
        const char *at = strstr(msg, "smallest budget that works is ");
        assert_non_null(at);
        const uint64_t least = strtoull(at + strlen("smallest budget that works is "), NULL, 10);
        assert_true(least > recurrent);
        p.kv_budget_bytes = least;
        kvfit_session *ok = NULL;
        assert_int_equal(kvfit_session_create(g_model, &p, &ok), KVFIT_OK);
        assert_true(kvfit_session_kv_bytes(ok) <= least);
        assert_int_equal(kvfit_session_prefill(ok, g_tokens, N_TOK), KVFIT_OK);
        kvfit_session_free(ok);
    }
}

/* The delta-rule states kept in F16 and BF16 (KVFIT_STATE_PRECISION, an
 * internal setting for measuring them): the recurrent layers report the codec
 * and half the state bytes (the conv inputs stay F32), the attention layers
 * of a budgeted session get what that frees, the session stays within its
 * budget, and save/restore continues bit for bit (streaming, the window
 * wrapping). */
static void test_narrow_states(void **state) {
    (void)state;
    const uint64_t conv = (uint64_t)(CONV_KERNEL - 1) * (2 * KEY_HEADS * HEAD_DIM + VALUE_HEADS * HEAD_DIM) * 4;
    const uint64_t delta = (uint64_t)VALUE_HEADS * HEAD_DIM * HEAD_DIM * 2;
    const uint64_t budget = 1 << 20;
    kvfit_layer_plan f32[N_LAYER];
    assert_int_equal(setenv("KVFIT_STATE_PRECISION", "f32", 1), 0);
    kvfit_session *s = new_session(g_model, 0, budget, 0);
    assert_int_equal(kvfit_session_plan(s, f32, N_LAYER, NULL, NULL), KVFIT_OK);
    kvfit_session_free(s);
    for (int l = 0; l < N_LAYER; l++)
        if ((l + 1) % 4 != 0) assert_int_equal(f32[l].codec, KVFIT_KV_F32);
    const char *names[2] = {"f16", "bf16"};
    const kvfit_kv_codec codecs[2] = {KVFIT_KV_F16, KVFIT_KV_BF16};
    for (int c = 0; c < 2; c++) {
        assert_int_equal(setenv("KVFIT_STATE_PRECISION", names[c], 1), 0);
        s = new_session(g_model, 0, budget, 0);
        kvfit_layer_plan plan[N_LAYER];
        uint64_t total = 0;
        assert_int_equal(kvfit_session_plan(s, plan, N_LAYER, NULL, &total), KVFIT_OK);
        for (int l = 0; l < N_LAYER; l++) {
            printf("%s layer %d: kind %d codec %d window %u bytes %llu\n", names[c], l, plan[l].kind, plan[l].codec,
                   plan[l].n_window, (unsigned long long)plan[l].bytes);
            if ((l + 1) % 4 != 0) {
                assert_int_equal(plan[l].kind, KVFIT_LAYER_RECURRENT);
                assert_int_equal(plan[l].codec, codecs[c]);
                assert_int_equal(plan[l].bytes, round_up(conv) + round_up(delta));
                assert_int_equal(f32[l].bytes - plan[l].bytes, delta);
            } else {
                assert_int_equal(plan[l].kind, KVFIT_LAYER_STREAMING);
                assert_true(plan[l].n_window >= f32[l].n_window);
            }
        }
        assert_true(total <= budget);
        assert_true(kvfit_session_kv_bytes(s) <= budget);
        assert_int_equal(kvfit_session_prefill(s, g_tokens, N_TOK), KVFIT_OK);
        kvfit_session_free(s);
        save_restore(0, 32);
        save_restore(0, 0);
    }
    unsetenv("KVFIT_STATE_PRECISION");
    /* the planner's own choice: BF16 within a budget (and save/restore exact
     * there), F32 without one (as llama.cpp keeps them) */
    save_restore(budget, 0);
    kvfit_layer_plan plan[N_LAYER];
    s = new_session(g_model, 0, 0, 32);
    assert_int_equal(kvfit_session_plan(s, plan, N_LAYER, NULL, NULL), KVFIT_OK);
    assert_int_equal(plan[0].codec, KVFIT_KV_F32);
    kvfit_session_free(s);
    s = new_session(g_model, 0, budget, 0);
    assert_int_equal(kvfit_session_plan(s, plan, N_LAYER, NULL, NULL), KVFIT_OK);
    assert_int_equal(plan[0].codec, KVFIT_KV_BF16);
    kvfit_session_free(s);
}

/* Vulkan has the recurrent ops (CPU agreement: test_model_vulkan_qwen35):
 * the model loads there and its first batch and a decode step run, giving
 * finite logits. */
static void test_vulkan_runs(void **state) {
    (void)state;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_VULKAN;
    kvfit_model *m = NULL;
    if (kvfit_model_load(test_tiny_model("tiny-qwen35.gguf"), &mp, &m) != KVFIT_OK)
        test_skip("no Vulkan backend or device: %s", kvfit_last_error());
    kvfit_session *s = new_session(m, 0, 0, 0);
    assert_int_equal(kvfit_session_prefill(s, g_tokens, 8), KVFIT_OK);
    assert_int_equal(kvfit_session_decode(s, g_tokens[8]), KVFIT_OK);
    float *l = logits_copy(s);
    for (size_t i = 0; i < g_n_vocab; i++) assert_true(isfinite(l[i]));
    free(l);
    kvfit_session_free(s);
    kvfit_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_vs_decode),  cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_save_restore_dense), cmocka_unit_test(test_save_restore_streaming),
        cmocka_unit_test(test_reset),              cmocka_unit_test(test_plan_and_budget),
        cmocka_unit_test(test_vulkan_runs),        cmocka_unit_test(test_narrow_states),
    };
    return test_run(tests, setup, teardown);
}
