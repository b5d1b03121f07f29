/* Bad input never crashes kvfit: corrupt and truncated GGUF files, unknown
 * architectures and tensor types, NULL handles, invalid UTF-8, prompts longer
 * than the cache, out-of-range tokens, wrong struct sizes, cancelled loads.
 * Each returns the documented status with a message, and a failed call leaves
 * a session as it was. Corrupt files are derived at run time from the real
 * stories260K model by patching bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kvfit.h"
#include "testutil.h"

static char *g_model_bytes;
static size_t g_model_size;
static const char *g_model_path;
static char g_tmpdir[256];

static int setup(void **state) {
    (void)state;
    g_model_path = test_data_path("models/stories260K.gguf");
    if (g_model_path) g_model_bytes = test_read_file(g_model_path, &g_model_size);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/kvfit-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_tmpdir)) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    free(g_model_bytes);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

#define NEED_MODEL()                                                                                      \
    do {                                                                                                  \
        if (!g_model_bytes) test_skip("models/stories260K.gguf not found under $KVFIT_TEST_DATA or ../shared/data"); \
    } while (0)

/* Writes bytes to a temp file and returns its path (static buffer). */
static const char *write_tmp(const char *name, const void *bytes, size_t n) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
    return path;
}

/* Loads a file expecting `want`; checks the message is not empty. */
static void expect_load(const char *path, kvfit_status want) {
    kvfit_model *m = (kvfit_model *)0x1;
    kvfit_status st = kvfit_model_load(path, NULL, &m);
    if (st != want) fprintf(stderr, "load(%s) gave %s: %s\n", path, kvfit_status_str(st), kvfit_last_error());
    assert_int_equal(st, want);
    if (st != KVFIT_OK) {
        assert_true(strlen(kvfit_last_error()) > 0);
        assert_ptr_equal(m, (kvfit_model *)0x1); /* untouched on failure */
    } else {
        kvfit_model_free(m);
    }
}

static size_t find_bytes(const char *hay, size_t n, const char *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m)) return i;
    return (size_t)-1;
}

static void test_missing_and_not_gguf(void **state) {
    (void)state;
    expect_load("/nonexistent/dir/model.gguf", KVFIT_E_IO);
    expect_load(g_tmpdir, KVFIT_E_IO); /* a directory */
    expect_load(write_tmp("empty.gguf", "", 0), KVFIT_E_FORMAT);
    const char text[] = "this is a text file, not a model, but it is long enough to parse a header";
    expect_load(write_tmp("text.gguf", text, sizeof text), KVFIT_E_FORMAT);
    /* GGUF magic with an unknown version */
    char hdr[64] = {'G', 'G', 'U', 'F', 9, 0, 0, 0};
    expect_load(write_tmp("v9.gguf", hdr, sizeof hdr), KVFIT_E_FORMAT);
}

static void test_truncated(void **state) {
    (void)state;
    NEED_MODEL();
    const size_t cuts[] = {4, 8, 23, 24, 100, 1000, 4096, 20000, 131000, g_model_size / 2, g_model_size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        expect_load(write_tmp("trunc.gguf", g_model_bytes, cuts[i]), KVFIT_E_FORMAT);
        assert_non_null(strstr(kvfit_last_error(), "trunc.gguf"));
    }
}

static void test_unknown_architecture(void **state) {
    (void)state;
    NEED_MODEL();
    char *b = malloc(g_model_size);
    memcpy(b, g_model_bytes, g_model_size);
    size_t k = find_bytes(b, g_model_size, "general.architecture", 20);
    assert_true(k != (size_t)-1);
    /* key, type (u32 = 8), length (u64), value "llama" */
    size_t val = k + 20 + 4 + 8;
    assert_memory_equal(b + val, "llama", 5);
    memcpy(b + val, "mamba", 5);
    expect_load(write_tmp("arch.gguf", b, g_model_size), KVFIT_E_UNSUPPORTED);
    assert_non_null(strstr(kvfit_last_error(), "mamba"));
    free(b);
}

/* Offset of a tensor's type field in the tensor table. */
static size_t tensor_type_offset(const char *b, size_t n, const char *name, uint32_t *n_dims) {
    size_t k = find_bytes(b, n, name, strlen(name));
    assert_true(k != (size_t)-1);
    size_t p = k + strlen(name);
    memcpy(n_dims, b + p, 4);
    return p + 4 + 8 * (size_t)*n_dims;
}

static void test_unsupported_tensor_type(void **state) {
    (void)state;
    NEED_MODEL();
    char *b = malloc(g_model_size);
    memcpy(b, g_model_bytes, g_model_size);
    uint32_t nd;
    size_t t = tensor_type_offset(b, g_model_size, "blk.0.attn_q.weight", &nd);
    uint32_t iq4_nl = 20; /* a real GGUF type kvfit does not compute with; smaller than F32 so it still fits */
    memcpy(b + t, &iq4_nl, 4);
    expect_load(write_tmp("type.gguf", b, g_model_size), KVFIT_E_UNSUPPORTED);
    assert_non_null(strstr(kvfit_last_error(), "IQ4_NL"));
    assert_non_null(strstr(kvfit_last_error(), "blk.0.attn_q.weight"));
    uint32_t bogus = 200; /* no such type at all */
    memcpy(b + t, &bogus, 4);
    expect_load(write_tmp("type2.gguf", b, g_model_size), KVFIT_E_FORMAT);
    free(b);
}

static void test_tensor_out_of_bounds(void **state) {
    (void)state;
    NEED_MODEL();
    char *b = malloc(g_model_size);
    memcpy(b, g_model_bytes, g_model_size);
    uint32_t nd;
    size_t t = tensor_type_offset(b, g_model_size, "blk.4.ffn_norm.weight", &nd);
    uint64_t off = (uint64_t)g_model_size; /* aligned, but past the end */
    off = (off + 31) / 32 * 32;
    memcpy(b + t + 4, &off, 8);
    expect_load(write_tmp("oob.gguf", b, g_model_size), KVFIT_E_FORMAT);
    assert_non_null(strstr(kvfit_last_error(), "blk.4.ffn_norm.weight"));
    off = UINT64_MAX - 31; /* overflow bait */
    memcpy(b + t + 4, &off, 8);
    expect_load(write_tmp("oob2.gguf", b, g_model_size), KVFIT_E_FORMAT);
    /* a dimension of zero / absurd size */
    memcpy(b + t + 4, g_model_bytes + t + 4, 8);
    uint64_t dim = (uint64_t)1 << 50;
    memcpy(b + t - 8 * nd, &dim, 8);
    expect_load(write_tmp("dim.gguf", b, g_model_size), KVFIT_E_FORMAT);
    free(b);
}

/* Random byte flips anywhere in the header and tensor table: any status is
 * acceptable except a crash, and an error always comes with a message. */
static void test_fuzzed_headers(void **state) {
    (void)state;
    NEED_MODEL();
    char *b = malloc(g_model_size);
    uint32_t x = 2024;
    size_t header = 16000; /* metadata + tensor table of stories260K lie in the first ~14 KB */
    for (int iter = 0; iter < 300; iter++) {
        memcpy(b, g_model_bytes, g_model_size);
        int flips = 1 + iter % 4;
        for (int f = 0; f < flips; f++) {
            x = x * 1664525u + 1013904223u;
            size_t pos = (x >> 8) % header;
            x = x * 1664525u + 1013904223u;
            b[pos] = (char)(x >> 24);
        }
        kvfit_model *m = NULL;
        kvfit_status st = kvfit_model_load(write_tmp("fuzz.gguf", b, g_model_size), NULL, &m);
        if (st == KVFIT_OK) {
            kvfit_model_free(m);
        } else {
            assert_true(st < 0);
            assert_true(strlen(kvfit_last_error()) > 0);
        }
    }
    free(b);
}

static void test_null_handles(void **state) {
    (void)state;
    size_t n = 0, len = 0;
    int32_t ids[4];
    char buf[16];
    const float *l;
    kvfit_model *m = NULL;
    kvfit_session *s = NULL;
    kvfit_sampler *sm = NULL;
    int32_t tok;
    assert_int_equal(kvfit_model_load(NULL, NULL, &m), KVFIT_E_ARG);
    assert_int_equal(kvfit_model_load("x.gguf", NULL, NULL), KVFIT_E_ARG);
    assert_int_equal(kvfit_tokenize(NULL, "a", 1, false, false, ids, 4, &n), KVFIT_E_ARG);
    assert_int_equal(kvfit_token_to_piece(NULL, 0, false, buf, sizeof buf, &len), KVFIT_E_ARG);
    assert_int_equal(kvfit_detokenize(NULL, ids, 1, false, buf, sizeof buf, &len), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_create(NULL, NULL, &s), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_prefill(NULL, ids, 1), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_decode(NULL, 1), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_logits(NULL, &l, &n), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_reset(NULL), KVFIT_E_ARG);
    assert_int_equal(kvfit_generate(NULL, ids, 1, NULL, NULL, NULL), KVFIT_E_ARG);
    assert_int_equal(kvfit_sampler_sample(NULL, NULL, &tok), KVFIT_E_ARG);
    assert_int_equal(kvfit_sampler_accept(NULL, 1), KVFIT_E_ARG);
    assert_int_equal(kvfit_sampler_create(NULL, NULL), KVFIT_E_ARG);
    assert_int_equal(kvfit_model_get_info(NULL, NULL), KVFIT_E_ARG);
    assert_int_equal(kvfit_chat_apply(NULL, NULL, NULL, 0, true, buf, sizeof buf, &len), KVFIT_E_ARG);
    assert_int_equal(kvfit_session_n_past(NULL), 0);
    assert_false(kvfit_token_is_eog(NULL, 2));
    assert_string_equal(kvfit_status_str(KVFIT_E_BUDGET), "KVFIT_E_BUDGET");
    assert_string_equal(kvfit_status_str((kvfit_status)-12345), "KVFIT_E_UNKNOWN");
    /* freeing NULL is a no-op */
    kvfit_model_free(NULL);
    kvfit_session_free(NULL);
    kvfit_sampler_free(NULL);
    kvfit_sampler_reset(NULL);
    /* the chat template works without a model when named */
    kvfit_chat_message msg = {"user", "hi"};
    assert_int_equal(kvfit_chat_apply(NULL, "chatml", &msg, 1, true, NULL, 0, &len), KVFIT_E_BUFFER_TOO_SMALL);
    assert_true(len > 0);
    assert_int_equal(kvfit_chat_apply(NULL, "no-such-template", &msg, 1, true, buf, sizeof buf, &len), KVFIT_E_ARG);
}

static bool cancel_at_half(float p, void *user) {
    (*(int *)user)++;
    return p < 0.5f;
}

static void test_cancelled_load(void **state) {
    (void)state;
    NEED_MODEL();
    int calls = 0;
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    mp.progress = cancel_at_half;
    mp.progress_user_data = &calls;
    kvfit_model *m = NULL;
    assert_int_equal(kvfit_model_load(g_model_path, &mp, &m), KVFIT_E_CANCELLED);
    assert_null(m);
    assert_true(calls >= 2);
    /* bad struct sizes are refused, not misread */
    mp.struct_size = 3;
    assert_int_equal(kvfit_model_load(g_model_path, &mp, &m), KVFIT_E_ARG);
}

/* A program built against the first kvfit.h (kvfit_session_params up to
 * kv_codec, 40 bytes) calls the exported kvfit_session_params_init: it must
 * write no byte past those 40, and the library must not read the fold fields
 * from what was padding in that struct. */
static void test_session_params_versions(void **state) {
    (void)state;
    unsigned char buf[sizeof(kvfit_session_params) + 16];
    memset(buf, 0xAB, sizeof buf);
    (kvfit_session_params_init)((kvfit_session_params *)buf); /* the symbol, not the header's macro */
    uint32_t size;
    memcpy(&size, buf, sizeof size);
    assert_int_equal(size, 40);
    for (size_t i = 40; i < sizeof buf; i++) assert_int_equal(buf[i], 0xAB);
    memset(buf, 0xAB, sizeof buf);
    kvfit_session_params_init_sized((kvfit_session_params *)buf, 8);
    for (size_t i = 8; i < sizeof buf; i++) assert_int_equal(buf[i], 0xAB);
    kvfit_session_params full;
    kvfit_session_params_init(&full);
    assert_int_equal(full.struct_size, sizeof full);
    assert_int_equal(full.fold, KVFIT_FOLD_OFF);

    NEED_MODEL();
    kvfit_model *m = NULL;
    assert_int_equal(kvfit_model_load(g_model_path, NULL, &m), KVFIT_OK);
    /* the old caller's struct: its padding (where fold now lies) holds garbage */
    kvfit_session_params old;
    memset(&old, 0xAB, sizeof old);
    (kvfit_session_params_init)(&old);
    memset((unsigned char *)&old + 36, 0x02, 4); /* as if fold were KVFIT_FOLD_ON */
    old.n_window = 64;
    kvfit_session *s = NULL;
    assert_int_equal(kvfit_session_create(m, &old, &s), KVFIT_OK);
    kvfit_layer_plan lp[64];
    size_t n = 0;
    assert_int_equal(kvfit_session_plan(s, lp, 64, &n, NULL), KVFIT_OK);
    for (size_t l = 0; l < n && l < 64; l++) assert_int_equal(lp[l].kind, KVFIT_LAYER_STREAMING);
    kvfit_session_free(s);
    kvfit_model_free(m);
}

static void test_session_misuse(void **state) {
    (void)state;
    NEED_MODEL();
    kvfit_model *m = NULL;
    assert_int_equal(kvfit_model_load(g_model_path, NULL, &m), KVFIT_OK);
    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = 32;
    sp.n_batch = 8;
    kvfit_session *s = NULL;
    assert_int_equal(kvfit_session_create(m, &sp, &s), KVFIT_OK);

    const float *l;
    size_t nv;
    assert_int_equal(kvfit_session_logits(s, &l, &nv), KVFIT_E_STATE);
    assert_int_equal(kvfit_generate(s, NULL, 0, NULL, NULL, NULL), KVFIT_E_STATE);

    int32_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = 1 + i % 100;
    assert_int_equal(kvfit_session_prefill(s, ids, 10), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 10);
    /* too long for the cache: refused whole, nothing appended */
    assert_int_equal(kvfit_session_prefill(s, ids, 23), KVFIT_E_CONTEXT_FULL);
    assert_non_null(strstr(kvfit_last_error(), "do not fit"));
    assert_int_equal(kvfit_session_n_past(s), 10);
    /* a bad token anywhere refuses the whole batch */
    ids[5] = 512;
    assert_int_equal(kvfit_session_prefill(s, ids, 8), KVFIT_E_TOKEN);
    ids[5] = -1;
    assert_int_equal(kvfit_session_decode(s, -1), KVFIT_E_TOKEN);
    assert_int_equal(kvfit_session_n_past(s), 10);
    /* the session still works and has the logits of token 10 */
    assert_int_equal(kvfit_session_logits(s, &l, &nv), KVFIT_OK);
    assert_int_equal(nv, 512);
    assert_int_equal(kvfit_session_prefill(s, ids + 10, 22), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 32);
    /* full: generation stops with a reason, not an error */
    kvfit_generate_result r = {sizeof r, 0, 0};
    assert_int_equal(kvfit_generate(s, NULL, 0, NULL, NULL, &r), KVFIT_OK);
    assert_int_equal(r.stop_reason, KVFIT_STOP_CONTEXT);
    assert_int_equal(r.n_generated, 0);
    assert_int_equal(kvfit_session_decode(s, 5), KVFIT_E_CONTEXT_FULL);
    assert_int_equal(kvfit_session_reset(s), KVFIT_OK);
    assert_int_equal(kvfit_session_n_past(s), 0);

    /* invalid parameters */
    kvfit_session *s2 = NULL;
    sp.n_threads = -3;
    assert_int_equal(kvfit_session_create(m, &sp, &s2), KVFIT_E_ARG);
    sp.n_threads = 1;
    sp.kv_budget_bytes = 1000; /* far too small for 32 tokens at F16 */
    assert_int_equal(kvfit_session_create(m, &sp, &s2), KVFIT_E_BUDGET);
    assert_non_null(strstr(kvfit_last_error(), "smallest budget that works is"));
    assert_null(s2);

    kvfit_sampler_params spp;
    kvfit_sampler_params_init(&spp);
    spp.top_p = -1.0f;
    kvfit_sampler *smp = NULL;
    assert_int_equal(kvfit_sampler_create(&spp, &smp), KVFIT_E_ARG);
    assert_null(smp);

    kvfit_session_free(s);
    kvfit_model_free(m);
}

static void test_invalid_text(void **state) {
    (void)state;
    NEED_MODEL();
    kvfit_model *m = NULL;
    assert_int_equal(kvfit_model_load(g_model_path, NULL, &m), KVFIT_OK);
    int32_t ids[64];
    size_t n = 99;
    const char *bad[] = {"\xff", "abc\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "ok \xe2\x82 ok"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(kvfit_tokenize(m, bad[i], strlen(bad[i]), true, false, ids, 64, &n), KVFIT_E_UTF8);
        assert_true(strlen(kvfit_last_error()) > 0);
    }
    /* embedded NUL is text, not an end */
    assert_int_equal(kvfit_tokenize(m, "a\0b", 3, false, false, ids, 64, &n), KVFIT_OK);
    /* a buffer too small reports the size needed */
    const char *t = "Once upon a time there was a little girl";
    size_t need = 0;
    assert_int_equal(kvfit_tokenize(m, t, strlen(t), true, false, ids, 2, &need), KVFIT_E_BUFFER_TOO_SMALL);
    assert_true(need > 2);
    assert_int_equal(kvfit_tokenize(m, t, strlen(t), true, false, ids, need, &n), KVFIT_OK);
    assert_int_equal(n, need);
    char buf[4];
    size_t len;
    assert_int_equal(kvfit_detokenize(m, ids, n, false, buf, sizeof buf, &len), KVFIT_E_BUFFER_TOO_SMALL);
    assert_true(len > sizeof buf);
    assert_int_equal(kvfit_token_to_piece(m, 100000, false, buf, sizeof buf, &len), KVFIT_E_TOKEN);
    assert_int_equal(kvfit_token_to_piece(m, -1, false, buf, sizeof buf, &len), KVFIT_E_TOKEN);
    kvfit_chat_message msg = {"user", "\xff\xfe"};
    assert_int_equal(kvfit_chat_apply(m, NULL, &msg, 1, true, NULL, 0, &len), KVFIT_E_ARG);
    kvfit_model_free(m);
}

static void test_vocab_only(void **state) {
    (void)state;
    const char *p = test_data_path("vocab/ggml-vocab-gpt-2.gguf");
    if (!p) test_skip("vocab/ggml-vocab-gpt-2.gguf not found under $KVFIT_TEST_DATA or ../shared/data");
    kvfit_model_params mp;
    kvfit_model_params_init(&mp);
    kvfit_model *m = NULL;
    /* a vocab-only file has no weights: a full load names what is missing */
    assert_int_equal(kvfit_model_load(p, NULL, &m), KVFIT_E_UNSUPPORTED);
    mp.vocab_only = true;
    assert_int_equal(kvfit_model_load(p, &mp, &m), KVFIT_OK);
    kvfit_session *s = NULL;
    assert_int_equal(kvfit_session_create(m, NULL, &s), KVFIT_E_ARG);
    assert_non_null(strstr(kvfit_last_error(), "vocab_only"));
    kvfit_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_and_not_gguf),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_unknown_architecture),
        cmocka_unit_test(test_unsupported_tensor_type),
        cmocka_unit_test(test_tensor_out_of_bounds),
        cmocka_unit_test(test_fuzzed_headers),
        cmocka_unit_test(test_null_handles),
        cmocka_unit_test(test_cancelled_load),
        cmocka_unit_test(test_session_params_versions),
        cmocka_unit_test(test_session_misuse),
        cmocka_unit_test(test_invalid_text),
        cmocka_unit_test(test_vocab_only),
    };
    return test_run(tests, setup, teardown);
}
