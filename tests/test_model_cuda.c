/* End to end on the CUDA backend against the CPU backend: the prompts of the
 * recorded peer data (tests/data/peer-*.txt), prefilled and continued
 * greedily for 48 tokens in sessions of each KV codec, dense and with a small
 * sink + window budget that evicts during the run. Tokens must be identical
 * until the first step where the CPU's two candidates are a near tie; logits
 * after each prompt must agree. Exits 77 (ctest's skip) without a CUDA device;
 * a case skips without its model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include <cmocka.h>

#include "kvfit.h"
#include "testutil.h"

#define MAX_PROMPTS 32
#define MAX_PROMPT 512
#define N_GEN 48

typedef struct {
    int32_t ids[MAX_PROMPT];
    size_t n;
} prompt_t;

/* The prompt ids of every "gen" line of a peer file. */
static int read_prompts(const char *peer_name, prompt_t *out) {
    char *data = test_read_file(test_repo_data(peer_name), NULL);
    assert_non_null(data);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(data, "\n", &save); line && n < MAX_PROMPTS; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "gen ", 4)) continue;
        char *fs = NULL;
        strtok_r(line, " ", &fs);                   /* gen */
        strtok_r(NULL, " ", &fs);                   /* name */
        strtok_r(NULL, " ", &fs);                   /* parse_special */
        strtok_r(NULL, " ", &fs);                   /* text */
        size_t np = (size_t)atoi(strtok_r(NULL, " ", &fs));
        if (np > MAX_PROMPT) continue;
        for (size_t i = 0; i < np; i++) out[n].ids[i] = atoi(strtok_r(NULL, " ", &fs));
        out[n].n = np;
        n++;
    }
    free(data);
    return n;
}

/* Sessions of one configuration on both models, every prompt. */
static void compare_sessions(kvfit_model *cpu, kvfit_model *gpu, const kvfit_session_params *sp, const char *label,
                             const prompt_t *prompts, int n_prompts, float logit_tol) {
    kvfit_session *sc = NULL, *sg = NULL;
    assert_int_equal(kvfit_session_create(cpu, sp, &sc), KVFIT_OK);
    if (kvfit_session_create(gpu, sp, &sg) != KVFIT_OK) {
        fprintf(stderr, "%s: %s\n", label, kvfit_last_error());
        fail();
    }
    int same = 0, forks = 0;
    float worst = 0.0f;
    for (int c = 0; c < n_prompts; c++) {
        assert_int_equal(kvfit_session_reset(sc), KVFIT_OK);
        assert_int_equal(kvfit_session_reset(sg), KVFIT_OK);
        assert_int_equal(kvfit_session_prefill(sc, prompts[c].ids, prompts[c].n), KVFIT_OK);
        if (kvfit_session_prefill(sg, prompts[c].ids, prompts[c].n) != KVFIT_OK) {
            fprintf(stderr, "%s: %s\n", label, kvfit_last_error());
            fail();
        }
        for (int i = 0; i < N_GEN; i++) {
            const float *lc, *lg;
            size_t nc, ng;
            assert_int_equal(kvfit_session_logits(sc, &lc, &nc), KVFIT_OK);
            assert_int_equal(kvfit_session_logits(sg, &lg, &ng), KVFIT_OK);
            assert_int_equal(nc, ng);
            if (i == 0) {
                for (size_t v = 0; v < nc; v++) {
                    const float d = fabsf(lc[v] - lg[v]);
                    if (!(d <= worst)) worst = d;
                }
                if (!(worst <= logit_tol)) {
                    printf("%s: prompt %d: logits differ by %.4f (bound %.4f)\n", label, c, worst, logit_tol);
                    fail();
                }
            }
            const int32_t tc = test_argmax(lc, nc), tg = test_argmax(lg, ng);
            if (tc != tg) {
                const float gap = lc[tc] - lc[tg];
                printf("%s: prompt %d token %d: CPU %d, CUDA %d (CPU logits %.4f vs %.4f)\n", label, c, i, tc, tg,
                       lc[tc], lc[tg]);
                if (gap > logit_tol) fail();
                forks++;
                break;
            }
            same++;
            assert_int_equal(kvfit_session_decode(sc, tc), KVFIT_OK);
            assert_int_equal(kvfit_session_decode(sg, tc), KVFIT_OK);
        }
    }
    printf("%s: %d prompts, %d greedy tokens identical, %d forks at a near tie, logits within %.4f\n", label,
           n_prompts, same, forks, worst);
    kvfit_session_free(sc);
    kvfit_session_free(sg);
}

static void run_model(const char *path, const char *peer_name, bool quant_codecs, float logit_tol) {
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.backend = KVFIT_BACKEND_CUDA;
    kvfit_model *gpu = NULL;
    const kvfit_status st = kvfit_model_load(path, &mp, &gpu);
    if (st == KVFIT_E_BACKEND_UNAVAILABLE) test_skip("the CUDA backend is unavailable: %s", kvfit_last_error());
    assert_int_equal(st, KVFIT_OK);
    mp.backend = KVFIT_BACKEND_CPU;
    kvfit_model *cpu = NULL;
    assert_int_equal(kvfit_model_load(path, &mp, &cpu), KVFIT_OK);

    static prompt_t prompts[MAX_PROMPTS];
    const int n_prompts = read_prompts(peer_name, prompts);
    assert_true(n_prompts > 0);

    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 1024;
    compare_sessions(cpu, gpu, &sp, "dense F16", prompts, n_prompts, logit_tol);

    const kvfit_kv_codec codecs[] = {KVFIT_KV_F16, KVFIT_KV_Q8, KVFIT_KV_Q4, KVFIT_KV_Q4_HADAMARD, KVFIT_KV_Q4_CHANNEL};
    const char *names[] = {"F16", "Q8", "Q4", "Q4 Hadamard", "Q4 per-channel keys"};
    for (int c = 0; c < (quant_codecs ? 5 : 1); c++) {
        char label[96];
        kvfit_session_params_init(&sp);
        sp.kv_budget_bytes = 64u << 20;
        sp.n_window = 64; /* short enough to evict during the prompts and the continuation */
        sp.kv_codec = codecs[c];
        snprintf(label, sizeof label, "budget, 4 sinks + 64 window, %s", names[c]);
        compare_sessions(cpu, gpu, &sp, label, prompts, n_prompts, logit_tol);
    }
    kvfit_model_free(cpu);
    kvfit_model_free(gpu);
}

static void test_stories260K(void **state) {
    (void)state;
    const char *p = test_data_path("models/stories260K.gguf");
    if (!p) test_skip("models/stories260K.gguf not found under $KVFIT_TEST_DATA or ../shared/data");
    run_model(p, "peer-stories260K.txt", false, 0.01f);
}

static void test_smollm2(void **state) {
    (void)state;
    const char *p = test_default_model();
    if (!p) test_skip("the default model is missing; run `make models`");
    run_model(p, "peer-smollm2.txt", true, 0.5f);
}

/* Whether kvfit lists a CUDA device (none where the backend is not built). */
static bool have_cuda_device(void) {
    size_t n = 0;
    if (kvfit_device_count(&n) != KVFIT_OK) return false;
    for (size_t i = 0; i < n; i++) {
        kvfit_device_info di;
        di.struct_size = sizeof di;
        if (kvfit_device_get_info(i, &di) == KVFIT_OK && di.backend == KVFIT_BACKEND_CUDA) return true;
    }
    return false;
}

int main(void) {
    if (!have_cuda_device())
        test_skip_all("no CUDA device: the CUDA backend is not part of this build or found no usable GPU");
    test_skip_all_without_models();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260K),
        cmocka_unit_test(test_smollm2),
    };
    return test_run(tests, NULL, NULL);
}
