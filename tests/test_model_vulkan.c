/* The Vulkan backend end to end on the default model (SmolLM2-135M-Instruct
 * Q4_1), against the CPU backend: greedy continuations of recorded prompts
 * (tests/data/peer-smollm2.txt, their token ids as recorded) in dense
 * sessions, and budgeted streaming sessions in every KV codec whose ring
 * wraps during prefill and generation.
 *
 * Where the device has doubles, the Vulkan backend does the CPU's float
 * arithmetic operation for operation (Backend::reproduces_cpu): llama.cpp's
 * order in dense sessions, kvfit's own attention order (attention_order.h)
 * in budgeted ones. Then every step's logits must be the CPU's, bit for bit,
 * in every case below: dense sessions on the recorded prompts, and budgeted
 * streaming sessions in every KV codec whose ring wraps during prefill and
 * generation.
 *
 * Without doubles (KVFIT_VULKAN_NO_FP64, or a device without them): the
 * greedy tokens must be the CPU's in dense, F16 and Q8 sessions; where they
 * differ, only at a step where the CPU's top two logits are a near tie,
 * after which the case stops (this model's 8-bit activations turn last-bit
 * differences into logit differences). The 4-bit codecs turn any such
 * difference into a different code somewhere, and the logits then differ by
 * units, so both backends are fed the recorded continuation, and at every
 * step the Vulkan backend's top token must be one the CPU ranks within
 * Q4_GAP of its own top, and the CPU's top token at half the steps or more.
 *
 * Also: session state saved from the device continues exactly when loaded,
 * and state saved on the CPU continues on the device.
 *
 * Lavapipe on a small CI machine is slow (about 0.4 s per prompt token and
 * 1 s per generated one), so each case is as short as the paths it covers
 * allow. Where the logits must be equal bit for bit, every step checks its
 * whole path, so a path needs one step: dense sessions take the shortest
 * prompt (less than one 8-token matmul tile) and the first longer than a
 * tile (a full tile and a partial one); the budgeted sessions take the
 * shortest prompt that wraps the ring during prefill (batches of 16, 16 and
 * a partial tile); every case then generates N_GEN_EXACT tokens, the first
 * from the prefill's logits and the others through the decode step (which,
 * in budgeted sessions, evicts). Without doubles the checks are about
 * tokens and statistical, and need samples: five dense prompts and N_GEN
 * tokens per case. The Vulkan validation layer runs (when installed) and
 * must report no error. Exits 77 (ctest's skip) without the model or a
 * Vulkan device. */
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

#define N_GEN 16      /* generated tokens per case without bit equality */
#define N_GEN_EXACT 4 /* with it */
#define N_DENSE_CASES 5
#define MATMUL_TILE 8 /* tokens per workgroup of the Vulkan backend's batched matmul */
/* A gap in the CPU's top two logits below this is a tie, as in test_model_peer.c. */
#define NEAR_TIE 0.25f
#define Q4_GAP 2.5f
#define MAX_CASES 16
#define MAX_PROMPT 256

typedef struct {
    char name[64];
    int32_t ids[MAX_PROMPT];
    size_t n;
    int32_t cont[N_GEN]; /* the recorded continuation */
} prompt_case;

static prompt_case g_cases[MAX_CASES];
static size_t g_n_cases;
static kvfit_model *g_cpu, *g_vk;
static int g_validation_errors;
static int g_exact; /* every session's logits must be the CPU's, bit for bit */
static int g_n_gen; /* tokens generated per case: N_GEN_EXACT or N_GEN */
static int g_same, g_total, g_forks;
static float g_max_diff;

static void on_log(kvfit_log_level level, const char *msg, void *user) {
    (void)user;
    /* The device runs the CPU's arithmetic where it has doubles (Backend::reproduces_cpu). */
    if (strstr(msg, "Vulkan backend on device") && strstr(msg, "fp64 on")) g_exact = 1;
    if (level >= KVFIT_LOG_ERROR && strstr(msg, "Vulkan validation")) {
        g_validation_errors++;
        printf("%s\n", msg);
    }
}

/* The prompts of the recorded "gen" lines: name parse_special hex n ids... */
static void read_cases(void) {
    char *data = test_read_file(test_repo_data("peer-smollm2.txt"), NULL);
    assert_non_null(data);
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line && g_n_cases < MAX_CASES; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "gen ", 4)) continue;
        char *fs = NULL;
        strtok_r(line, " ", &fs);
        prompt_case *c = &g_cases[g_n_cases];
        snprintf(c->name, sizeof c->name, "%s", strtok_r(NULL, " ", &fs));
        strtok_r(NULL, " ", &fs); /* parse_special */
        strtok_r(NULL, " ", &fs); /* the text, hex */
        c->n = (size_t)atoi(strtok_r(NULL, " ", &fs));
        assert_true(c->n > 0 && c->n <= MAX_PROMPT);
        for (size_t i = 0; i < c->n; i++) c->ids[i] = atoi(strtok_r(NULL, " ", &fs));
        assert_true(atoi(strtok_r(NULL, " ", &fs)) >= N_GEN);
        for (size_t i = 0; i < N_GEN; i++) c->cont[i] = atoi(strtok_r(NULL, " ", &fs));
        g_n_cases++;
    }
    free(data);
}

/* The CPU model beside the Vulkan one main loaded, and the recorded prompts. */
static int setup(void **state) {
    (void)state;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CPU;
    if (kvfit_model_load(test_default_model(), &mp, &g_cpu) != KVFIT_OK) return -1;
    read_cases();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_cpu);
    kvfit_model_free(g_vk);
    printf("Vulkan vs CPU: %d of %d greedy tokens identical, %d case(s) forked at a near tie; largest logit "
           "difference %.3g (bit for bit required: %s); %d validation errors\n",
           g_same, g_total, g_forks, (double)g_max_diff, g_exact ? "yes" : "no", g_validation_errors);
    kvfit_set_log_callback(NULL, KVFIT_LOG_WARN, NULL);
    return 0;
}

/* Both sessions' current logits; records the largest difference. */
static void logits_of(kvfit_session *sc, kvfit_session *sv, const float **lc, const float **lv, size_t *n) {
    size_t nv;
    assert_int_equal(kvfit_session_logits(sc, lc, n), KVFIT_OK);
    assert_int_equal(kvfit_session_logits(sv, lv, &nv), KVFIT_OK);
    assert_int_equal(*n, nv);
    for (size_t j = 0; j < nv; j++) {
        const float d = fabsf((*lc)[j] - (*lv)[j]);
        if (d > g_max_diff) g_max_diff = d;
    }
    if (g_exact) assert_memory_equal(*lc, *lv, nv * sizeof **lc);
}

/* Greedy decoding in both sessions side by side. */
static void compare_greedy(kvfit_session *sc, kvfit_session *sv, const int32_t *prompt, size_t np, const char *what) {
    assert_int_equal(kvfit_session_prefill(sc, prompt, np), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sv, prompt, np), KVFIT_OK);
    for (int i = 0; i < g_n_gen; i++) {
        const float *lc, *lv;
        size_t nc;
        logits_of(sc, sv, &lc, &lv, &nc);
        const int32_t tc = test_argmax(lc, nc), tv = test_argmax(lv, nc);
        g_total++;
        if (tc != tv) {
            const float gap = lc[tc] - lc[tv];
            assert_false(g_exact); /* (the logits were compared above) */
            printf("%s: token %d: CPU %d, Vulkan %d (CPU logits %.4f vs %.4f)\n", what, i, tc, tv, (double)lc[tc],
                   (double)lc[tv]);
            assert_true(gap < NEAR_TIE);
            g_forks++;
            g_total += g_n_gen - i - 1;
            return;
        }
        g_same++;
        assert_int_equal(kvfit_session_decode(sc, tc), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, tc), KVFIT_OK);
    }
}

/* Both sessions fed the same tokens (see the top of the file). */
static void compare_forced(kvfit_session *sc, kvfit_session *sv, const prompt_case *c, const char *what) {
    assert_int_equal(kvfit_session_prefill(sc, c->ids, c->n), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(sv, c->ids, c->n), KVFIT_OK);
    int top = 0;
    float worst = 0.0f;
    for (int i = 0; i < g_n_gen; i++) {
        const float *lc, *lv;
        size_t n;
        logits_of(sc, sv, &lc, &lv, &n);
        const int32_t tc = test_argmax(lc, n), tv = test_argmax(lv, n);
        const float gap = lc[tc] - lc[tv];
        if (gap > worst) worst = gap;
        top += tc == tv;
        assert_int_equal(kvfit_session_decode(sc, c->cont[i]), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, c->cont[i]), KVFIT_OK);
    }
    printf("%s: the Vulkan top token is the CPU's at %d of %d steps; the CPU ranks it at most %.3f below its top\n",
           what, top, g_n_gen, (double)worst);
    assert_true(worst < Q4_GAP);
    assert_true(2 * top >= g_n_gen);
}

/* A dense 512-token session on each of two models. */
static void dense_sessions(kvfit_model *ma, kvfit_model *mb, kvfit_session **a, kvfit_session **b) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 512;
    assert_int_equal(kvfit_session_create(ma, &sp, a), KVFIT_OK);
    assert_int_equal(kvfit_session_create(mb, &sp, b), KVFIT_OK);
}

/* The shortest recorded prompt longer than `than` tokens. */
static size_t shortest_longer_than(size_t than) {
    size_t best = g_n_cases;
    for (size_t c = 0; c < g_n_cases; c++)
        if (g_cases[c].n > than && (best == g_n_cases || g_cases[c].n < g_cases[best].n)) best = c;
    assert_true(best < g_n_cases);
    return best;
}

static void test_greedy_dense(void **state) {
    (void)state;
    assert_true(g_n_cases >= N_DENSE_CASES);
    size_t cases[N_DENSE_CASES], n = 0;
    if (g_exact) {
        cases[n++] = shortest_longer_than(0);
        cases[n++] = shortest_longer_than(MATMUL_TILE);
        assert_true(g_cases[cases[0]].n < MATMUL_TILE && g_cases[cases[1]].n % MATMUL_TILE != 0);
    } else {
        for (; n < N_DENSE_CASES; n++) cases[n] = n;
    }
    kvfit_session *sc, *sv;
    dense_sessions(g_cpu, g_vk, &sc, &sv);
    for (size_t i = 0; i < n; i++) {
        const prompt_case *c = &g_cases[cases[i]];
        assert_int_equal(kvfit_session_reset(sc), KVFIT_OK);
        assert_int_equal(kvfit_session_reset(sv), KVFIT_OK);
        compare_greedy(sc, sv, c->ids, c->n, c->name);
    }
    kvfit_session_free(sc);
    kvfit_session_free(sv);
    assert_int_equal(g_validation_errors, 0);
}

/* 4 sinks + a 32-token ring, batches of 16: the prompt fills the ring during
 * prefill and generation keeps evicting, in each codec (the 4-bit ones
 * teacher-forced without bit equality, see the top of the file). */
static void test_budgeted_codecs(void **state) {
    (void)state;
    const kvfit_kv_codec codecs[] = {KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4, KVFIT_KV_Q4_HADAMARD, KVFIT_KV_Q4_CHANNEL};
    const char *names[] = {"F16", "Q8", "Q4", "Q4_HADAMARD", "Q4_CHANNEL"};
    const size_t prompt = shortest_longer_than(4 + 32);
    assert_true(g_cases[prompt].n % MATMUL_TILE != 0);
    for (int k = 0; k < 5; k++) {
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.kv_budget_bytes = 4u << 20;
        sp.n_window = 32;
        sp.n_batch = 16;
        sp.kv_codec = codecs[k];
        kvfit_session *sc, *sv;
        assert_int_equal(kvfit_session_create(g_cpu, &sp, &sc), KVFIT_OK);
        assert_int_equal(kvfit_session_create(g_vk, &sp, &sv), KVFIT_OK);
        kvfit_layer_plan pc, pv;
        size_t nl;
        uint64_t bc, bv;
        assert_int_equal(kvfit_session_plan(sc, &pc, 1, &nl, &bc), KVFIT_OK);
        assert_int_equal(kvfit_session_plan(sv, &pv, 1, &nl, &bv), KVFIT_OK);
        assert_int_equal(pc.codec, codecs[k]);
        assert_memory_equal(&pc, &pv, sizeof pc);
        assert_int_equal(bc, bv);
        char what[96];
        snprintf(what, sizeof what, "%s, window 32, %s", g_cases[prompt].name, names[k]);
        if (codecs[k] >= KVFIT_KV_Q4 && !g_exact) /* the 4-bit codecs, without bit equality */
            compare_forced(sc, sv, &g_cases[prompt], what);
        else
            compare_greedy(sc, sv, g_cases[prompt].ids, g_cases[prompt].n, what);
        kvfit_session_free(sc);
        kvfit_session_free(sv);
    }
    assert_int_equal(g_validation_errors, 0);
}

/* Prefills `from` with the first recorded prompt and loads its saved state
 * into `to`; returns the state's size. */
static size_t prefill_and_move(kvfit_session *from, kvfit_session *to) {
    assert_int_equal(kvfit_session_prefill(from, g_cases[0].ids, g_cases[0].n), KVFIT_OK);
    size_t size = 0, written = 0;
    assert_int_equal(kvfit_session_state_size(from, &size), KVFIT_OK);
    char *buf = malloc(size);
    assert_int_equal(kvfit_session_save(from, buf, size, &written), KVFIT_OK);
    assert_int_equal(kvfit_session_load(to, buf, written), KVFIT_OK);
    free(buf);
    return size;
}

/* Session state saved from the device and loaded into another session
 * continues exactly (the state is larger than the transfer staging buffers). */
static void test_state_roundtrip(void **state) {
    (void)state;
    kvfit_session *a, *b;
    dense_sessions(g_vk, g_vk, &a, &b);
    assert_true(prefill_and_move(a, b) > (8u << 20));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kvfit_session_decode(a, g_cases[0].cont[i]), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(b, g_cases[0].cont[i]), KVFIT_OK);
        const float *la, *lb;
        size_t na, nb;
        assert_int_equal(kvfit_session_logits(a, &la, &na), KVFIT_OK);
        assert_int_equal(kvfit_session_logits(b, &lb, &nb), KVFIT_OK);
        assert_int_equal(na, nb);
        assert_memory_equal(la, lb, na * sizeof *la);
    }
    kvfit_session_free(a);
    kvfit_session_free(b);
    assert_int_equal(g_validation_errors, 0);
}

/* Both backends keep a dense cache's keys after RoPE, so a session moves
 * between them: state saved on the CPU and loaded on the device continues
 * with the CPU's logits (bit for bit where the device reproduces the CPU). */
static void test_state_cpu_to_device(void **state) {
    (void)state;
    kvfit_session *sc, *sv;
    dense_sessions(g_cpu, g_vk, &sc, &sv);
    prefill_and_move(sc, sv);
    for (int i = 0; i < 3; i++) {
        const float *lc, *lv;
        size_t n;
        logits_of(sc, sv, &lc, &lv, &n);
        assert_int_equal(test_argmax(lc, n), test_argmax(lv, n));
        assert_int_equal(kvfit_session_decode(sc, g_cases[0].cont[i]), KVFIT_OK);
        assert_int_equal(kvfit_session_decode(sv, g_cases[0].cont[i]), KVFIT_OK);
    }
    kvfit_session_free(sc);
    kvfit_session_free(sv);
    assert_int_equal(g_validation_errors, 0);
}

int main(void) {
    kvfit_set_log_callback(on_log, KVFIT_LOG_INFO, NULL);
    setenv("KVFIT_VULKAN_VALIDATION", "1", 0); /* unless the caller chose otherwise */
    const char *path = test_default_model();
    if (!path) test_skip_all("the default model is missing; run `make models`");
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_VULKAN;
    const kvfit_status st = kvfit_model_load(path, &mp, &g_vk);
    if (st == KVFIT_E_BACKEND_UNAVAILABLE) test_skip_all("no Vulkan device: %s", kvfit_last_error());
    if (st != KVFIT_OK) {
        printf("loading on Vulkan: %s\n", kvfit_last_error());
        return 1;
    }
    g_n_gen = g_exact ? N_GEN_EXACT : N_GEN;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_dense),
        cmocka_unit_test(test_budgeted_codecs),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_state_cpu_to_device),
    };
    return test_run(tests, setup, teardown);
}
