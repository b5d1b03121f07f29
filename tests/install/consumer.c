/* A program built only against an installed kvfit (header and library found
 * through pkg-config or find_package, no source tree). It checks that the
 * header and the library it loads agree, and with a model path it runs one
 * chat turn and prints the reply.
 *
 *   kvfit-consumer [MODEL.gguf]      exit 0 on success, 1 on any failure */
#include <kvfit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char text[4096];
    size_t len;
} reply_text;

static bool collect(int32_t token, const char *text, size_t len, void *user) {
    reply_text *r = user;
    (void)token;
    if (r->len + len < sizeof r->text) {
        memcpy(r->text + r->len, text, len);
        r->len += len;
        r->text[r->len] = 0;
    }
    return true;
}

static int fail(const char *what, kvfit_status st) {
    fprintf(stderr, "kvfit-consumer: %s: %s (%s)\n", what, kvfit_last_error(), kvfit_status_str(st));
    return 1;
}

static int chat_turn(const char *model_path) {
    kvfit_model *model = NULL;
    kvfit_session *session = NULL;
    int32_t ids[512];
    char prompt[2048];
    size_t prompt_len = 0, n_ids = 0;
    kvfit_chat_message msg = {"user", "What is the capital of France?"};
    kvfit_session_params sp;
    kvfit_generate_params gp;
    kvfit_generate_result res;
    reply_text reply = {{0}, 0};
    int rc = 1;

    kvfit_status st = kvfit_model_load(model_path, NULL, &model);
    if (st) return fail("loading the model", st);
    kvfit_session_params_init(&sp);
    sp.n_ctx = 512;
    sp.n_threads = 2;
    if ((st = kvfit_session_create(model, &sp, &session))) { rc = fail("creating a session", st); goto out; }
    st = kvfit_chat_apply(model, NULL, &msg, 1, true, prompt, sizeof prompt, &prompt_len);
    if (st) { rc = fail("applying the chat template", st); goto out; }
    st = kvfit_tokenize(model, prompt, prompt_len, true, true, ids, sizeof ids / sizeof ids[0], &n_ids);
    if (st) { rc = fail("tokenizing", st); goto out; }
    kvfit_generate_params_init(&gp);
    gp.max_tokens = 24;
    gp.on_token = collect;
    gp.user_data = &reply;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    if ((st = kvfit_generate(session, ids, n_ids, NULL, &gp, &res))) { rc = fail("generating", st); goto out; }
    printf("reply (%u tokens): %s\n", res.n_generated, reply.text);
    if (res.n_generated == 0 || reply.len == 0) {
        fprintf(stderr, "kvfit-consumer: the model generated nothing\n");
        goto out;
    }
    rc = 0;
out:
    kvfit_session_free(session);
    kvfit_model_free(model);
    return rc;
}

int main(int argc, char **argv) {
    printf("kvfit %s (header %d.%d.%d)\n", kvfit_version(), KVFIT_VERSION_MAJOR, KVFIT_VERSION_MINOR,
           KVFIT_VERSION_PATCH);
    if (kvfit_version_number() != KVFIT_VERSION_NUMBER) {
        fprintf(stderr, "kvfit-consumer: library %u does not match header %d\n", kvfit_version_number(),
                KVFIT_VERSION_NUMBER);
        return 1;
    }
    return argc > 1 ? chat_turn(argv[1]) : 0;
}
