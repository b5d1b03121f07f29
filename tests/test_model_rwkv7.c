/* The rwkv7 architecture on rwkv.cpp's tiny trained RWKV-7 (834K parameters,
 * byte-level), converted to GGUF by tools/rwkv-to-gguf.py (the
 * rwkv7_model fixture writes it into the build tree):
 *   - the logits after '"', 'i', 'n' from the zero state match the ones
 *     rwkv.cpp's own test expects, within rwkv.cpp's own tolerance (its
 *     tests/test_tiny_rwkv.c and logit_difference_validator.inc: the sum over
 *     the 256 logits of (logit - expected), in absolute value, at most
 *     |0.001| * 1.05 for 7v0-834K FP32), fed as one batch and one by one;
 *   - greedy generation continues '"in' as the independent numpy forward
 *     pass (tools/rwkv7-reference.py) does;
 *   - prefilling n tokens and decoding them one by one leave the same logits
 *     and the same saved state, bit for bit;
 *   - the planner lists every layer as recurrent, F32, with its state bytes;
 *   - a restored session continues bit for bit; kvfit_session_reset gives a
 *     fresh session's logits;
 *   - a malformed rwkv7 file fails with KVFIT_E_FORMAT and a message. */
#define _POSIX_C_SOURCE 200809L /* setenv */
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
/* rwkv.cpp's bound for this model and format (expected_difference_sum_full,
 * 7v0 FP32) and its margin. */
#define RWKV_CPP_MAX_DIFF_SUM (0.001f * 1.05f)

static kvfit_model *g_model;
static float g_expected[N_VOCAB];

static int setup(void **state) {
    (void)state;
    const char *path = test_tiny_model(MODEL_FILE);
    if (!path) test_skip_all("%s is missing (the rwkv7_model fixture converts it from the shared test data)", MODEL_FILE);
    const char *exp_path = test_data_path("rwkv/expected-logits-7v0-834K.bin");
    if (!exp_path) test_skip_all("rwkv/expected-logits-7v0-834K.bin is not in the shared test data");
    FILE *f = fopen(exp_path, "rb");
    if (!f || fread(g_expected, 4, N_VOCAB, f) != N_VOCAB) return -1;
    fclose(f);
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    if (kvfit_model_load(path, &mp, &g_model) != KVFIT_OK) {
        fprintf(stderr, "load: %s\n", kvfit_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_model);
    return 0;
}

static kvfit_session *new_session(uint32_t n_batch) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 4096;
    sp.n_batch = n_batch;
    sp.n_threads = 2;
    kvfit_session *s = NULL;
    if (kvfit_session_create(g_model, &sp, &s) != KVFIT_OK) fprintf(stderr, "session: %s\n", kvfit_last_error());
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

static void check_logits(const float *l, const char *how) {
    double sum = 0, sum_abs = 0, max_abs = 0;
    float diff_sum = 0.0f; /* as rwkv.cpp sums it: in float, in order */
    for (int i = 0; i < N_VOCAB; i++) {
        const double d = (double)l[i] - (double)g_expected[i];
        diff_sum += l[i] - g_expected[i];
        sum += d;
        sum_abs += fabs(d);
        if (fabs(d) > max_abs) max_abs = fabs(d);
    }
    printf("%s: sum of differences %.3g (rwkv.cpp allows |sum| <= %.5f), sum of |differences| %.3g, max |difference| %.3g\n",
           how, sum, (double)RWKV_CPP_MAX_DIFF_SUM, sum_abs, max_abs);
    assert_true(fabsf(diff_sum) <= RWKV_CPP_MAX_DIFF_SUM);
}

static const int32_t kPrompt[3] = {'"', 'i', 'n'};

static void test_expected_logits(void **state) {
    (void)state;
    kvfit_session *s = new_session(512);
    assert_int_equal(kvfit_session_prefill(s, kPrompt, 3), KVFIT_OK);
    check_logits(logits_of(s), "one batch of 3");
    kvfit_session_free(s);
    s = new_session(512);
    for (int i = 0; i < 3; i++) assert_int_equal(kvfit_session_decode(s, kPrompt[i]), KVFIT_OK);
    check_logits(logits_of(s), "one token at a time");
    kvfit_session_free(s);
}

/* tools/rwkv7-reference.py tiny-rwkv7-834K.gguf --bytes '"in' --greedy 20
 * (float64 numpy, written from the equations) prints b' the the the the the'. */
static void test_greedy(void **state) {
    (void)state;
    static const char want[] = " the the the the the";
    kvfit_session *s = new_session(512);
    assert_int_equal(kvfit_session_prefill(s, kPrompt, 3), KVFIT_OK);
    char got[sizeof want] = {0};
    for (size_t i = 0; i + 1 < sizeof want; i++) {
        const int t = argmax(logits_of(s));
        got[i] = (char)t;
        assert_int_equal(kvfit_session_decode(s, t), KVFIT_OK);
    }
    printf("greedy: \"in -> \"%s\"\n", got);
    assert_string_equal(got, want);
    kvfit_session_free(s);
}

static void *save_state(kvfit_session *s, size_t *n) {
    assert_int_equal(kvfit_session_state_size(s, n), KVFIT_OK);
    void *buf = malloc(*n);
    size_t written = 0;
    assert_int_equal(kvfit_session_save(s, buf, *n, &written), KVFIT_OK);
    assert_int_equal(written, *n);
    return buf;
}

static const char kText[] =
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\n"
    "You are all resolved rather to die than to famish?";

static void test_prefill_equals_decode(void **state) {
    (void)state;
    const size_t n = sizeof kText - 1;
    int32_t toks[sizeof kText];
    for (size_t i = 0; i < n; i++) toks[i] = (unsigned char)kText[i];
    /* one batch, batches of 7, one token at a time */
    kvfit_session *a = new_session(512), *b = new_session(7), *c = new_session(512);
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

static void test_plan(void **state) {
    (void)state;
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(kvfit_model_get_info(g_model, &info), KVFIT_OK);
    kvfit_session *s = new_session(512);
    kvfit_layer_plan plan[64];
    size_t n_layers = 0;
    uint64_t total = 0;
    assert_int_equal(kvfit_session_plan(s, plan, 64, &n_layers, &total), KVFIT_OK);
    assert_int_equal(n_layers, 12);
    /* 2 shifted rows of 64 floats + one 64 x 64 wkv state per layer */
    const uint64_t per_layer = (2 * 64 + 64 * 64) * 4;
    for (size_t l = 0; l < n_layers; l++) {
        assert_int_equal(plan[l].kind, KVFIT_LAYER_RECURRENT);
        assert_int_equal(plan[l].codec, KVFIT_KV_F32);
        assert_true(plan[l].bytes >= per_layer);
    }
    assert_true(total >= 12 * per_layer);
    printf("plan: 12 recurrent layers, %llu bytes in all (%llu of state per layer)\n", (unsigned long long)total,
           (unsigned long long)per_layer);
    kvfit_session_free(s);
}

static void test_save_restore(void **state) {
    (void)state;
    const size_t n = sizeof kText - 1;
    int32_t toks[sizeof kText];
    for (size_t i = 0; i < n; i++) toks[i] = (unsigned char)kText[i];
    kvfit_session *a = new_session(512);
    assert_int_equal(kvfit_session_prefill(a, toks, n), KVFIT_OK);
    size_t sz;
    void *buf = save_state(a, &sz);
    /* continue a, recording its logits */
    enum { STEPS = 16 };
    static float la[STEPS][N_VOCAB];
    int32_t gen[STEPS];
    for (int i = 0; i < STEPS; i++) {
        gen[i] = argmax(logits_of(a));
        assert_int_equal(kvfit_session_decode(a, gen[i]), KVFIT_OK);
        memcpy(la[i], logits_of(a), sizeof la[i]);
    }
    /* a different session, with other tokens in it first, restored */
    kvfit_session *b = new_session(512);
    assert_int_equal(kvfit_session_prefill(b, kPrompt, 3), KVFIT_OK);
    assert_int_equal(kvfit_session_load(b, buf, sz), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(b), n);
    for (int i = 0; i < STEPS; i++) {
        assert_int_equal(argmax(logits_of(b)), gen[i]);
        assert_int_equal(kvfit_session_decode(b, gen[i]), KVFIT_OK);
        assert_memory_equal(logits_of(b), la[i], sizeof la[i]);
    }
    free(buf);
    kvfit_session_free(a);
    kvfit_session_free(b);
}

static void test_reset(void **state) {
    (void)state;
    kvfit_session *fresh = new_session(512);
    assert_int_equal(kvfit_session_prefill(fresh, kPrompt, 3), KVFIT_OK);
    kvfit_session *s = new_session(512);
    const size_t n = sizeof kText - 1;
    int32_t toks[sizeof kText];
    for (size_t i = 0; i < n; i++) toks[i] = (unsigned char)kText[i];
    assert_int_equal(kvfit_session_prefill(s, toks, n), KVFIT_OK);
    assert_int_equal(kvfit_session_reset(s), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 0);
    assert_int_equal(kvfit_session_prefill(s, kPrompt, 3), KVFIT_OK);
    assert_memory_equal(logits_of(s), logits_of(fresh), N_VOCAB * 4);
    kvfit_session_free(s);
    kvfit_session_free(fresh);
}

/* The wkv states kept in F16 and BF16 (KVFIT_STATE_PRECISION, an internal
 * setting for measuring them): the plan reports the codec and the bytes (the
 * shifted rows stay F32), the session allocates exactly that and fits a
 * budget of exactly that which F32 states do not fit; a prefill gives the
 * bits of the same tokens one at a time; the logits stay near the F32
 * ones; save/restore continues bit for bit, a reset clears the state, and
 * a state saved with another precision is refused. */
static void test_narrow_states(void **state) {
    (void)state;
    const size_t n = sizeof kText - 1;
    int32_t toks[sizeof kText];
    for (size_t i = 0; i < n; i++) toks[i] = (unsigned char)kText[i];
    kvfit_session *f32 = new_session(512);
    assert_int_equal(kvfit_session_prefill(f32, toks, n), KVFIT_OK);
    size_t f32_size;
    void *f32_buf = save_state(f32, &f32_size);
    uint64_t f32_total = 0;
    assert_int_equal(kvfit_session_plan(f32, NULL, 0, NULL, &f32_total), KVFIT_OK);

    const char *names[2] = {"f16", "bf16"};
    const kvfit_kv_codec codecs[2] = {KVFIT_KV_F16, KVFIT_KV_BF16};
    for (int c = 0; c < 2; c++) {
        assert_int_equal(setenv("KVFIT_STATE_PRECISION", names[c], 1), 0);
        kvfit_session *s = new_session(512);
        kvfit_layer_plan plan[64];
        size_t n_layers = 0;
        uint64_t total = 0;
        assert_int_equal(kvfit_session_plan(s, plan, 64, &n_layers, &total), KVFIT_OK);
        assert_int_equal(n_layers, 12);
        /* 2 shifted rows of 64 F32 + a 64 x 64 wkv state of 2-byte values */
        const uint64_t per_layer = 2 * 64 * 4 + 64 * 64 * 2;
        for (size_t l = 0; l < n_layers; l++) {
            assert_int_equal(plan[l].kind, KVFIT_LAYER_RECURRENT);
            assert_int_equal(plan[l].codec, codecs[c]);
            assert_int_equal(plan[l].bytes, per_layer);
        }
        assert_int_equal(total, 12 * per_layer);
        assert_int_equal(f32_total - total, 12 * 64 * 64 * 2);
        assert_int_equal(kvfit_session_kv_bytes(s), total);
        printf("%s: %llu bytes of state per session (F32: %llu)\n", names[c], (unsigned long long)total,
               (unsigned long long)f32_total);

        /* a budget of exactly the narrow states */
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.n_threads = 2;
        sp.kv_budget_bytes = total;
        kvfit_session *tight = NULL;
        assert_int_equal(kvfit_session_create(g_model, &sp, &tight), KVFIT_OK);
        assert_int_equal(kvfit_session_kv_bytes(tight), total);
        kvfit_session_free(tight);

        /* one batch = token by token, bit for bit; near the F32 logits */
        assert_int_equal(kvfit_session_prefill(s, toks, n), KVFIT_OK);
        kvfit_session *one = new_session(1);
        for (size_t i = 0; i < n; i++) assert_int_equal(kvfit_session_decode(one, toks[i]), KVFIT_OK);
        assert_memory_equal(logits_of(one), logits_of(s), N_VOCAB * 4);
        kvfit_session_free(one);
        float worst = 0;
        const float *l32 = logits_of(f32), *ln = logits_of(s);
        for (int i = 0; i < N_VOCAB; i++) worst = fmaxf(worst, fabsf(l32[i] - ln[i]));
        printf("%s: logits after %zu tokens within %g of F32's\n", names[c], n, (double)worst);
        assert_true(worst < 1e-3f);
        assert_int_equal(argmax(l32), argmax(ln));

        /* save, continue, restore into another session: the same bits */
        size_t sz;
        void *buf = save_state(s, &sz);
        assert_int_equal(f32_size - sz, 12 * 64 * 64 * 2);
        enum { STEPS = 16 };
        static float la[STEPS][N_VOCAB];
        int32_t gen[STEPS];
        for (int i = 0; i < STEPS; i++) {
            gen[i] = argmax(logits_of(s));
            assert_int_equal(kvfit_session_decode(s, gen[i]), KVFIT_OK);
            memcpy(la[i], logits_of(s), sizeof la[i]);
        }
        kvfit_session *b = new_session(512);
        assert_int_equal(kvfit_session_prefill(b, kPrompt, 3), KVFIT_OK);
        assert_int_equal(kvfit_session_load(b, buf, sz), KVFIT_OK);
        for (int i = 0; i < STEPS; i++) {
            assert_int_equal(kvfit_session_decode(b, gen[i]), KVFIT_OK);
            assert_memory_equal(logits_of(b), la[i], sizeof la[i]);
        }
        /* states of another precision are refused, and leave the session as it was */
        assert_int_equal(kvfit_session_load(b, f32_buf, f32_size), KVFIT_E_ARG);
        assert_memory_equal(logits_of(b), la[STEPS - 1], sizeof la[0]);
        /* a reset clears the narrow state */
        kvfit_session *fresh = new_session(512);
        assert_int_equal(kvfit_session_prefill(fresh, kPrompt, 3), KVFIT_OK);
        assert_int_equal(kvfit_session_reset(b), KVFIT_OK);
        assert_int_equal(kvfit_session_prefill(b, kPrompt, 3), KVFIT_OK);
        assert_memory_equal(logits_of(b), logits_of(fresh), N_VOCAB * 4);
        unsetenv("KVFIT_STATE_PRECISION");
        assert_int_equal(kvfit_session_load(f32, buf, sz), KVFIT_E_ARG);
        free(buf);
        kvfit_session_free(fresh);
        kvfit_session_free(b);
        kvfit_session_free(s);
    }
    /* with F32 states the same budget is too small, and the message names the minimum */
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.kv_budget_bytes = f32_total - 12 * 64 * 64 * 2;
    kvfit_session *none = NULL;
    assert_int_equal(setenv("KVFIT_STATE_PRECISION", "f32", 1), 0);
    assert_int_equal(kvfit_session_create(g_model, &sp, &none), KVFIT_E_BUDGET);
    char want[64];
    snprintf(want, sizeof want, "%llu bytes", (unsigned long long)f32_total);
    assert_non_null(strstr(kvfit_last_error(), want));
    /* an unknown precision is an argument error */
    assert_int_equal(setenv("KVFIT_STATE_PRECISION", "f8", 1), 0);
    assert_int_equal(kvfit_session_create(g_model, &sp, &none), KVFIT_E_ARG);
    assert_non_null(strstr(kvfit_last_error(), "KVFIT_STATE_PRECISION"));
    unsetenv("KVFIT_STATE_PRECISION");
    /* the planner's own choice: within a budget BF16 (so that budget fits),
     * without one F32 (test_plan) */
    assert_int_equal(kvfit_session_create(g_model, &sp, &none), KVFIT_OK);
    kvfit_layer_plan plan[12];
    assert_int_equal(kvfit_session_plan(none, plan, 12, NULL, NULL), KVFIT_OK);
    for (int l = 0; l < 12; l++) assert_int_equal(plan[l].codec, KVFIT_KV_BF16);
    assert_int_equal(kvfit_session_kv_bytes(none), sp.kv_budget_bytes);
    kvfit_session_free(none);
    free(f32_buf);
    kvfit_session_free(f32);
}

/* A copy of the model file with the first occurrence of `from` replaced by
 * `to` (same length), loaded: must fail with want. */
static void expect_load_failure(const char *from, const char *to, kvfit_status want) {
    size_t size = 0;
    char *data = test_read_file(test_tiny_model(MODEL_FILE), &size);
    assert_non_null(data);
    char *hit = NULL;
    for (size_t i = 0; i + strlen(from) <= size; i++)
        if (memcmp(data + i, from, strlen(from)) == 0) {
            hit = data + i;
            break;
        }
    assert_non_null(hit);
    memcpy(hit, to, strlen(to));
    char path[4200];
    snprintf(path, sizeof path, "%s.broken", test_tiny_model(MODEL_FILE));
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, size, f), size);
    fclose(f);
    free(data);
    kvfit_model *m = NULL;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    const kvfit_status st = kvfit_model_load(path, &mp, &m);
    printf("%s -> %s: %s\n", from, to, kvfit_last_error());
    assert_int_equal(st, want);
    assert_null(m);
    assert_true(strlen(kvfit_last_error()) > 0);
    remove(path);
}

static void test_malformed(void **state) {
    (void)state;
    expect_load_failure("rwkv7.wkv.head_size", "rwkv7.wkv.head_sizX", KVFIT_E_FORMAT);
    expect_load_failure("blk.3.time_mix_k_k.weight", "blk.3.time_mix_k_X.weight", KVFIT_E_FORMAT);
    expect_load_failure("rwkv7.attention.gate_lora_rank", "rwkv7.attention.gate_lora_ranX", KVFIT_E_FORMAT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_logits), cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_prefill_equals_decode), cmocka_unit_test(test_plan),
        cmocka_unit_test(test_save_restore),    cmocka_unit_test(test_reset),
        cmocka_unit_test(test_malformed),       cmocka_unit_test(test_narrow_states),
    };
    return test_run(tests, setup, teardown);
}
