/* kvfit-chat: an interactive chat on the command line that streams tokens as
 * the model produces them.
 *
 *   kvfit-chat -m model.gguf [-s "system prompt"] [-p "one-shot prompt"]
 *              [--temp 0.7] [--top-k 40] [--top-p 0.95] [--min-p 0.05]
 *              [--repeat-penalty 1.1] [--seed N] [-t threads] [-c n_ctx] [-n max_tokens]
 *              [--template chatml|llama3|llama2|gemma] [--budget 64MiB] [--plan]
 *              [--load FILE] [--save FILE]
 *
 * Each turn renders the whole conversation with the chat template and feeds
 * the session only the part it has not seen yet, so earlier turns are never
 * recomputed. With --budget the session streams: its KV memory is fixed and
 * old turns fade out of the window instead of filling the context.
 *
 * --save FILE writes the conversation (its messages and the session's state)
 * at the end, and --load FILE continues one: a conversation survives a
 * restart, for hybrid and windowed models too, as long as the model and the
 * session parameters are the same (kvfit refuses another model's state). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvfit.h"
#include "cli_args.h"

typedef struct {
    kvfit_chat_message *items;
    size_t n, cap;
} history;

static void history_push(history *h, const char *role, const char *content) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 8;
        h->items = realloc(h->items, h->cap * sizeof *h->items);
        if (!h->items) exit(1);
    }
    h->items[h->n].role = strdup(role);
    h->items[h->n].content = strdup(content);
    h->n++;
}

static void history_clear(history *h, size_t keep) {
    for (size_t i = keep; i < h->n; i++) {
        free((void *)h->items[i].role);
        free((void *)h->items[i].content);
    }
    h->n = keep;
}

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void sb_append(strbuf *s, const char *p, size_t n) {
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->buf = realloc(s->buf, s->cap);
        if (!s->buf) exit(1);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->buf[s->len] = 0;
}

static bool on_token(int32_t token, const char *text, size_t len, void *user) {
    (void)token;
    sb_append((strbuf *)user, text, len);
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

static int die(const char *what, kvfit_status st) {
    fprintf(stderr, "kvfit-chat: %s: %s (%s)\n", what, kvfit_last_error(), kvfit_status_str(st));
    return 1;
}

/* A saved conversation: "KVFITCHAT1\n", the message count, each message as
 * role and content (u64 length + bytes), the rendered bytes the session has
 * seen, then the session state (u64 size + bytes). Host byte order. */
static const char k_chat_magic[] = "KVFITCHAT1\n";

static bool write_blob(FILE *f, const void *p, uint64_t n) {
    return fwrite(&n, sizeof n, 1, f) == 1 && (n == 0 || fwrite(p, 1, (size_t)n, f) == (size_t)n);
}

static char *read_blob(FILE *f, uint64_t *n, uint64_t limit) {
    if (fread(n, sizeof *n, 1, f) != 1 || *n > limit) return NULL;
    char *p = malloc((size_t)*n + 1);
    if (!p) return NULL;
    if (*n && fread(p, 1, (size_t)*n, f) != (size_t)*n) { free(p); return NULL; }
    p[*n] = 0;
    return p;
}

static int save_chat(const char *path, kvfit_session *s, const history *h, size_t seen) {
    size_t size = 0;
    kvfit_status st = kvfit_session_state_size(s, &size);
    void *state = st ? NULL : malloc(size ? size : 1);
    if (!st && !state) st = KVFIT_E_NOMEM;
    if (!st) st = kvfit_session_save(s, state, size, NULL);
    if (st) { free(state); return die("saving the session", st); }
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(k_chat_magic, 1, sizeof k_chat_magic - 1, f) == sizeof k_chat_magic - 1;
    const uint64_t n = h->n, seen64 = seen;
    ok = ok && fwrite(&n, sizeof n, 1, f) == 1;
    for (size_t i = 0; ok && i < h->n; i++)
        ok = write_blob(f, h->items[i].role, strlen(h->items[i].role)) &&
             write_blob(f, h->items[i].content, strlen(h->items[i].content));
    ok = ok && fwrite(&seen64, sizeof seen64, 1, f) == 1 && write_blob(f, state, size);
    if (f && fclose(f)) ok = false;
    free(state);
    if (!ok) { fprintf(stderr, "kvfit-chat: cannot write %s: %s\n", path, strerror(errno)); return 1; }
    return 0;
}

static int load_chat(const char *path, kvfit_session *s, history *h, size_t *seen) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "kvfit-chat: cannot open %s: %s\n", path, strerror(errno)); return 1; }
    char magic[sizeof k_chat_magic - 1];
    uint64_t n = 0, seen64 = 0, len = 0;
    bool ok = fread(magic, 1, sizeof magic, f) == sizeof magic && !memcmp(magic, k_chat_magic, sizeof magic) &&
              fread(&n, sizeof n, 1, f) == 1 && n < (1u << 20);
    for (uint64_t i = 0; ok && i < n; i++) {
        char *role = read_blob(f, &len, 64), *content = role ? read_blob(f, &len, 1u << 30) : NULL;
        ok = role && content;
        if (ok) history_push(h, role, content);
        free(role);
        free(content);
    }
    char *state = NULL;
    ok = ok && fread(&seen64, sizeof seen64, 1, f) == 1 && (state = read_blob(f, &len, (uint64_t)1 << 40)) != NULL;
    fclose(f);
    if (!ok) { free(state); fprintf(stderr, "kvfit-chat: %s is not a saved conversation (or is damaged)\n", path); return 1; }
    kvfit_status st = kvfit_session_load(s, state, (size_t)len);
    free(state);
    if (st) return die("loading the saved session (same model and session options needed)", st);
    *seen = (size_t)seen64;
    return 0;
}


static void usage(void) {
    fprintf(stderr,
            "usage: kvfit-chat -m MODEL.gguf [-s SYSTEM] [-p PROMPT] [--temp T] [--top-k K] [--top-p P]\n"
            "                  [--min-p P] [--repeat-penalty R] [--seed N] [-t THREADS] [-c N_CTX]\n"
            "                  [-n MAX_TOKENS] [--template NAME] [--budget 64MiB] [--plan] [-v]\n"
            "                  [--load FILE] [--save FILE]\n"
            "Without -p it reads one user message per line from stdin until EOF.\n");
}

/* Renders the conversation; returns malloc'd text or NULL. */
static char *render(const kvfit_model *m, const char *tmpl, const history *h, bool add_assistant) {
    size_t len = 0;
    kvfit_status st = kvfit_chat_apply(m, tmpl, h->items, h->n, add_assistant, NULL, 0, &len);
    if (st != KVFIT_E_BUFFER_TOO_SMALL && st != KVFIT_OK) return NULL;
    char *out = malloc(len + 1);
    if (!out || kvfit_chat_apply(m, tmpl, h->items, h->n, add_assistant, out, len + 1, &len) != KVFIT_OK) {
        free(out);
        return NULL;
    }
    return out;
}


static void print_plan(const kvfit_session *s) {
    kvfit_layer_plan lp[256];
    size_t n = 0;
    uint64_t total = 0;
    if (kvfit_session_plan(s, lp, 256, &n, &total) != KVFIT_OK) return;
    fprintf(stderr, "plan: %zu layers, %.2f MiB of KV state\n", n, total / 1048576.0);
    for (size_t i = 0; i < n && i < 256; i++) {
        size_t j = i;
        while (j + 1 < n && lp[j + 1].kind == lp[i].kind && lp[j + 1].codec == lp[i].codec &&
               lp[j + 1].n_window == lp[i].n_window && lp[j + 1].n_sink == lp[i].n_sink)
            j++;
        if (lp[i].kind == KVFIT_LAYER_RECURRENT) {
            fprintf(stderr, "  layers %zu-%zu: recurrent state, %s, %.2f MiB each\n", i, j, codec_name(lp[i].codec),
                    lp[i].bytes / 1048576.0);
            i = j;
            continue;
        }
        const char *kind = lp[i].kind == KVFIT_LAYER_STREAMING ? "streaming"
                           : lp[i].kind == KVFIT_LAYER_WINDOW  ? "model's own window"
                                                               : "dense";
        fprintf(stderr, "  layers %zu-%zu: %s, %s, %u sinks + %u window, %.2f MiB each\n", i, j, kind,
                codec_name(lp[i].codec), lp[i].n_sink, lp[i].n_window, lp[i].bytes / 1048576.0);
        i = j;
    }
}

static void log_to_stderr(kvfit_log_level level, const char *msg, void *user) {
    (void)level;
    (void)user;
    fprintf(stderr, "[kvfit] %s\n", msg);
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *system = NULL, *prompt = NULL, *tmpl = NULL, *save_path = NULL, *load_path = NULL;
    kvfit_sampler_params sp;
    kvfit_sampler_params_init(&sp);
    sp.temperature = 0.7f;
    sp.repeat_penalty = 1.1f;
    kvfit_session_params sess;
    kvfit_session_params_init(&sess);
    sess.n_ctx = 4096;
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.max_tokens = 512;
    bool verbose = false, show_plan = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && (++i, 1))
        if (ARG("-m") || ARG("--model")) model_path = v;
        else if (ARG("-s") || ARG("--system")) system = v;
        else if (ARG("-p") || ARG("--prompt")) prompt = v;
        else if (ARG("--template")) tmpl = v;
        else if (ARG("--save")) save_path = v;
        else if (ARG("--load")) load_path = v;
        else if (ARG("--temp")) sp.temperature = strtof(v, NULL);
        else if (ARG("--top-k")) sp.top_k = atoi(v);
        else if (ARG("--top-p")) sp.top_p = strtof(v, NULL);
        else if (ARG("--min-p")) sp.min_p = strtof(v, NULL);
        else if (ARG("--repeat-penalty")) sp.repeat_penalty = strtof(v, NULL);
        else if (ARG("--seed")) sp.seed = strtoull(v, NULL, 10);
        else if (ARG("-t") || ARG("--threads")) sess.n_threads = atoi(v);
        else if (ARG("-c") || ARG("--ctx")) sess.n_ctx = (uint32_t)strtoul(v, NULL, 10);
        else if (ARG("-n") || ARG("--max-tokens")) gp.max_tokens = (uint32_t)strtoul(v, NULL, 10);
        else if (ARG("--budget")) {
            uint64_t bytes = 0;
            if (!parse_size(v, &bytes)) { fprintf(stderr, "kvfit-chat: bad size '%s'\n", v); return 2; }
            sess.kv_budget_bytes = bytes;
        }
        else if (!strcmp(a, "--plan")) show_plan = true;
        else if (!strcmp(a, "-v")) verbose = true;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(); return 0; }
        else { fprintf(stderr, "kvfit-chat: unknown or incomplete argument '%s'\n", a); usage(); return 2; }
#undef ARG
    }
    if (!model_path) { usage(); return 2; }
    if (verbose) kvfit_set_log_callback(log_to_stderr, KVFIT_LOG_INFO, NULL);

    kvfit_model *model = NULL;
    kvfit_session *session = NULL;
    kvfit_sampler *sampler = NULL;
    kvfit_status st = kvfit_model_load(model_path, NULL, &model);
    if (st) return die("loading the model", st);
    if ((st = kvfit_session_create(model, &sess, &session))) return die("creating a session", st);
    if ((st = kvfit_sampler_create(&sp, &sampler))) return die("creating the sampler", st);
    if (show_plan) print_plan(session);
    if (!tmpl) tmpl = kvfit_model_chat_template(model);
    if (!prompt) fprintf(stderr, "kvfit %s, template %s. Type a message, Ctrl-D to quit.\n", kvfit_version(), tmpl);

    history h = {0};
    size_t base = 0;
    size_t seen = 0; /* bytes of the rendered conversation already in the session */
    if (load_path) {
        if (load_chat(load_path, session, &h, &seen)) return 1;
        base = h.n && !strcmp(h.items[0].role, "system") ? 1 : 0;
        fprintf(stderr, "[continuing the conversation in %s: %zu messages]\n", load_path, h.n);
    } else if (system) {
        history_push(&h, "system", system), base = 1;
    }
    strbuf reply = {0};
    char line[8192];
    int rc = 0;
    for (;;) {
        const char *user = prompt;
        if (!prompt) {
            fputs("> ", stderr);
            if (!fgets(line, sizeof line, stdin)) break;
            line[strcspn(line, "\n")] = 0;
            if (!*line) continue;
            user = line;
        }
        history_push(&h, "user", user);
        char *text = render(model, tmpl, &h, true);
        if (!text) { rc = die("applying the chat template", KVFIT_E_ARG); break; }
        const char *fresh = text + seen;
        size_t n_tok = 0, cap = strlen(fresh) + 8;
        int32_t *toks = malloc(cap * sizeof *toks);
        st = kvfit_tokenize(model, fresh, strlen(fresh), seen == 0, true, toks, cap, &n_tok);
        if (st) { free(toks); free(text); rc = die("tokenizing", st); break; }
        reply.len = 0;
        if (reply.buf) reply.buf[0] = 0;
        kvfit_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        gp.on_token = on_token;
        gp.user_data = &reply;
        st = kvfit_generate(session, toks, n_tok, sampler, &gp, &res);
        free(toks);
        if (st == KVFIT_E_CONTEXT_FULL) {
            /* Start over from the system prompt and this message. */
            fprintf(stderr, "\n[context full: starting a new conversation]\n");
            kvfit_session_reset(session);
            history_clear(&h, base);
            seen = 0;
            free(text);
            if (prompt) break;
            continue;
        }
        if (st) { free(text); rc = die("generating", st); break; }
        fputc('\n', stdout);
        seen = strlen(text) + reply.len;
        free(text);
        history_push(&h, "assistant", reply.buf ? reply.buf : "");
        if (res.stop_reason == KVFIT_STOP_CONTEXT) {
            fprintf(stderr, "[context full: starting a new conversation]\n");
            kvfit_session_reset(session);
            history_clear(&h, base);
            seen = 0;
        }
        if (prompt) break;
    }
    if (save_path && !rc) rc = save_chat(save_path, session, &h, seen);
    history_clear(&h, 0);
    free(h.items);
    free(reply.buf);
    kvfit_sampler_free(sampler);
    kvfit_session_free(session);
    kvfit_model_free(model);
    return rc;
}
