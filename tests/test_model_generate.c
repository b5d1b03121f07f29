/* End-to-end behaviour of sessions and generation on a real model
 * (stories260K): batched prefill agrees with token-by-token decoding, seeded
 * sampling is reproducible, streamed text equals the detokenized tokens,
 * callbacks can stop generation, and sessions sharing one model on several
 * threads give the same results as one alone. */
#include <math.h>
#include <pthread.h>
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

static kvfit_model *g_model;

static int setup(void **state) {
    (void)state;
    const char *p = test_data_path("models/stories260K.gguf");
    if (p && kvfit_model_load(p, NULL, &g_model) != KVFIT_OK) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    kvfit_model_free(g_model);
    return 0;
}

#define NEED_MODEL()                                                                                \
    do {                                                                                            \
        if (!g_model) test_skip("models/stories260K.gguf not found under $KVFIT_TEST_DATA or ../shared/data"); \
    } while (0)

static kvfit_session *new_session(uint32_t n_ctx, uint32_t n_batch, int threads) {
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = n_ctx;
    sp.n_batch = n_batch;
    sp.n_threads = threads;
    kvfit_session *s = NULL;
    assert_int_equal(kvfit_session_create(g_model, &sp, &s), KVFIT_OK);
    return s;
}

static size_t tokenize(const char *text, int32_t *ids, size_t cap) {
    size_t n = 0;
    assert_int_equal(kvfit_tokenize(g_model, text, strlen(text), true, false, ids, cap, &n), KVFIT_OK);
    return n;
}

static void test_model_info(void **state) {
    (void)state;
    NEED_MODEL();
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(kvfit_model_get_info(g_model, &info), KVFIT_OK);
    assert_string_equal(info.arch, "llama");
    assert_string_equal(info.tokenizer, "llama");
    assert_int_equal(info.n_layer, 5);
    assert_int_equal(info.n_head, 8);
    assert_int_equal(info.n_head_kv, 4);
    assert_int_equal(info.n_embd, 64);
    assert_int_equal(info.n_vocab, 512);
    assert_int_equal(info.n_ctx_train, 2048); /* what the file's metadata says */
    assert_true(info.n_params > 250000 && info.n_params < 300000);
    assert_int_equal(info.bos_token, 1);
    assert_int_equal(info.eos_token, 2);
    char buf[64];
    size_t len;
    assert_int_equal(kvfit_model_meta(g_model, "llama.block_count", buf, sizeof buf, &len), KVFIT_OK);
    assert_string_equal(buf, "5");
    assert_int_equal(kvfit_model_meta(g_model, "no.such.key", buf, sizeof buf, &len), KVFIT_E_ARG);
    assert_int_equal(kvfit_version_number(), KVFIT_VERSION_NUMBER);
    assert_non_null(strchr(kvfit_version(), '.'));
}

/* The same tokens through one big batch, small batches, or one at a time give
 * the same logits (up to float summation order). */
static void test_batched_prefill_matches_decode(void **state) {
    (void)state;
    NEED_MODEL();
    int32_t ids[256];
    size_t n = tokenize("Once upon a time, there was a little girl named Lily. She loved to play outside in the park "
                        "with her friends and her dog.", ids, 256);
    assert_true(n > 20);
    kvfit_session *a = new_session(128, 512, 2), *b = new_session(128, 7, 1), *c = new_session(128, 1, 2);
    assert_int_equal(kvfit_session_prefill(a, ids, n), KVFIT_OK);
    assert_int_equal(kvfit_session_prefill(b, ids, n), KVFIT_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(kvfit_session_decode(c, ids[i]), KVFIT_OK);
    const float *la, *lb, *lc;
    size_t nv;
    assert_int_equal(kvfit_session_logits(a, &la, &nv), KVFIT_OK);
    assert_int_equal(kvfit_session_logits(b, &lb, &nv), KVFIT_OK);
    assert_int_equal(kvfit_session_logits(c, &lc, &nv), KVFIT_OK);
    float dmax = 0;
    for (size_t i = 0; i < nv; i++) dmax = fmaxf(dmax, fmaxf(fabsf(la[i] - lb[i]), fabsf(la[i] - lc[i])));
    printf("max logit difference between batchings: %g\n", dmax);
    assert_true(dmax < 1e-3f);
    assert_int_equal(kvfit_session_n_past(a), n);
    assert_int_equal(kvfit_session_n_past(c), n);
    kvfit_session_free(a);
    kvfit_session_free(b);
    kvfit_session_free(c);
}

typedef struct {
    int32_t tokens[512];
    size_t n;
    char text[8192];
    size_t text_len;
    size_t stop_after;
} collected;

static bool collect(int32_t token, const char *text, size_t len, void *user) {
    collected *c = user;
    if (token >= 0) c->tokens[c->n++] = token;
    assert_true(c->text_len + len < sizeof c->text);
    memcpy(c->text + c->text_len, text, len);
    c->text_len += len;
    return c->stop_after == 0 || c->n < c->stop_after;
}

static void generate(kvfit_session *s, const char *prompt, kvfit_sampler *smp, uint32_t max_tokens, collected *out,
                     kvfit_generate_result *r) {
    int32_t ids[256];
    size_t n = tokenize(prompt, ids, 256);
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.max_tokens = max_tokens;
    gp.on_token = collect;
    gp.user_data = out;
    r->struct_size = sizeof *r;
    assert_int_equal(kvfit_generate(s, ids, n, smp, &gp, r), KVFIT_OK);
}

static void test_streamed_text_and_stops(void **state) {
    (void)state;
    NEED_MODEL();
    kvfit_session *s = new_session(512, 64, 2);
    static collected c;
    memset(&c, 0, sizeof c);
    kvfit_generate_result r;
    generate(s, "Once upon a time", NULL, 40, &c, &r);
    assert_int_equal(r.stop_reason, KVFIT_STOP_LENGTH);
    assert_int_equal(r.n_generated, 40);
    assert_int_equal(c.n, 40);
    /* the session holds prompt + every generated token */
    int32_t ids[64];
    size_t np = tokenize("Once upon a time", ids, 64);
    assert_int_equal(kvfit_session_n_past(s), np + 40);
    /* streamed pieces concatenate to the detokenized text */
    char buf[8192];
    size_t len;
    assert_int_equal(kvfit_detokenize(g_model, c.tokens, c.n, false, buf, sizeof buf, &len), KVFIT_OK);
    assert_int_equal(len, c.text_len);
    assert_memory_equal(buf, c.text, len);
    /* the known greedy continuation of this model */
    assert_non_null(strstr(c.text, "there was a little girl named Lily"));

    /* a callback returning false stops right after that token */
    memset(&c, 0, sizeof c);
    c.stop_after = 5;
    kvfit_session_reset(s);
    generate(s, "Once upon a time", NULL, 40, &c, &r);
    assert_int_equal(r.stop_reason, KVFIT_STOP_CALLBACK);
    assert_int_equal(r.n_generated, 5);
    assert_int_equal(kvfit_session_n_past(s), np + 5);

    /* continuing without a prompt picks up where it stopped: same tokens as one run */
    collected more;
    memset(&more, 0, sizeof more);
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.max_tokens = 10;
    gp.on_token = collect;
    gp.user_data = &more;
    assert_int_equal(kvfit_generate(s, NULL, 0, NULL, &gp, &r), KVFIT_OK);
    static collected whole;
    memset(&whole, 0, sizeof whole);
    kvfit_session_reset(s);
    generate(s, "Once upon a time", NULL, 15, &whole, &r);
    assert_memory_equal(whole.tokens + 5, more.tokens, 10 * sizeof(int32_t));

    /* a full cache ends generation with a reason */
    kvfit_session *small = new_session(12, 8, 1);
    memset(&c, 0, sizeof c);
    generate(small, "Once upon a time", NULL, 40, &c, &r);
    assert_int_equal(r.stop_reason, KVFIT_STOP_CONTEXT);
    assert_int_equal(kvfit_session_n_past(small), 12);
    kvfit_session_free(small);
    kvfit_session_free(s);
}

static void test_seeded_sampling(void **state) {
    (void)state;
    NEED_MODEL();
    kvfit_sampler_params sp;
    kvfit_sampler_params_init(&sp);
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    sp.min_p = 0.0f;
    sp.seed = 1234;
    static collected runs[3];
    kvfit_generate_result r;
    for (int i = 0; i < 3; i++) {
        if (i == 2) sp.seed = 999;
        kvfit_sampler *smp = NULL;
        assert_int_equal(kvfit_sampler_create(&sp, &smp), KVFIT_OK);
        kvfit_session *s = new_session(256, 32, 2);
        memset(&runs[i], 0, sizeof runs[i]);
        generate(s, "The little dog", smp, 60, &runs[i], &r);
        kvfit_session_free(s);
        kvfit_sampler_free(smp);
    }
    assert_int_equal(runs[0].n, runs[1].n);
    assert_memory_equal(runs[0].tokens, runs[1].tokens, runs[0].n * sizeof(int32_t));
    size_t common = runs[2].n < runs[0].n ? runs[2].n : runs[0].n;
    assert_true(runs[2].n != runs[0].n || memcmp(runs[0].tokens, runs[2].tokens, common * sizeof(int32_t)) != 0);
    /* sample + accept by hand equals the generate loop */
    kvfit_sampler *smp = NULL;
    sp.seed = 1234;
    assert_int_equal(kvfit_sampler_create(&sp, &smp), KVFIT_OK);
    kvfit_session *s = new_session(256, 32, 2);
    int32_t ids[64];
    size_t np = tokenize("The little dog", ids, 64);
    for (size_t i = 0; i < np; i++) kvfit_sampler_accept(smp, ids[i]);
    assert_int_equal(kvfit_session_prefill(s, ids, np), KVFIT_OK);
    for (size_t i = 0; i < 10; i++) {
        int32_t t;
        assert_int_equal(kvfit_sampler_sample(smp, s, &t), KVFIT_OK);
        assert_int_equal(t, runs[0].tokens[i]);
        kvfit_sampler_accept(smp, t);
        assert_int_equal(kvfit_session_decode(s, t), KVFIT_OK);
    }
    kvfit_session_free(s);
    kvfit_sampler_free(smp);
}

typedef struct {
    collected out;
    int threads;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 256;
    sp.n_threads = a->threads;
    kvfit_session *s = NULL;
    if (kvfit_session_create(g_model, &sp, &s) != KVFIT_OK) return NULL;
    int32_t ids[64];
    size_t n = 0;
    kvfit_tokenize(g_model, "Lily and Tom went to the park", 29, true, false, ids, 64, &n);
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.max_tokens = 50;
    gp.on_token = collect;
    gp.user_data = &a->out;
    kvfit_generate(s, ids, n, NULL, &gp, NULL);
    kvfit_session_free(s);
    return NULL;
}

static void test_sessions_share_model_across_threads(void **state) {
    (void)state;
    NEED_MODEL();
    static worker_arg args[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].threads = 1 + i % 2;
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_int_equal(args[0].out.n, 50);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(args[i].out.n, args[0].out.n);
        assert_memory_equal(args[i].out.tokens, args[0].out.tokens, args[0].out.n * sizeof(int32_t));
    }
}

static void test_chat_template_of_model(void **state) {
    (void)state;
    const char *p = test_default_model();
    if (!p) test_skip("the default model is missing; run `make models`");
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.vocab_only = true;
    kvfit_model *m = NULL;
    assert_int_equal(kvfit_model_load(p, &mp, &m), KVFIT_OK);
    assert_string_equal(kvfit_model_chat_template(m), "chatml");
    kvfit_chat_message msg = {"user", "What is the capital of France?"};
    char buf[512];
    size_t len;
    assert_int_equal(kvfit_chat_apply(m, NULL, &msg, 1, true, buf, sizeof buf, &len), KVFIT_OK);
    /* exactly what the GGUF's own Jinja template renders (the peer data's chat prompt) */
    assert_string_equal(buf,
                        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                        "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                        "<|im_start|>assistant\n");
    assert_int_equal(len, strlen(buf));
    int32_t ids[128];
    size_t n;
    assert_int_equal(kvfit_tokenize(m, buf, len, true, true, ids, 128, &n), KVFIT_OK);
    assert_int_equal(ids[0], 1); /* <|im_start|> as one control token */
    assert_true(kvfit_token_is_eog(m, 2)); /* <|im_end|> */
    kvfit_model_free(m);
}

int main(void) {
    test_skip_all_without_models();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_info),
        cmocka_unit_test(test_batched_prefill_matches_decode),
        cmocka_unit_test(test_streamed_text_and_stops),
        cmocka_unit_test(test_seeded_sampling),
        cmocka_unit_test(test_sessions_share_model_across_threads),
        cmocka_unit_test(test_chat_template_of_model),
    };
    return test_run(tests, setup, teardown);
}
