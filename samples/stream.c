/* kvfit-stream: shows a fixed-budget session holding its memory while it
 * streams without end. It either generates for ever (restarting the prompt
 * whenever the model ends its text) or ingests a text file, and every N
 * tokens prints one CSV row with the process's resident memory, the
 * session's KV bytes and the speed since the previous row.
 *
 *   kvfit-stream -m MODEL [--budget 8MiB] [-f TEXT [--repeat]] [-p PROMPT]
 *                [--every 256] [--max-tokens N] [-t THREADS] [--temp T] [--seed N]
 *
 * Output: '#' comment lines (settings and plan), then
 *   tokens,elapsed_s,tok_per_s,rss_mib,kv_mib
 * where tokens counts every token through the session (prompt, generated or
 * ingested). kvfit-plot draws memory against tokens from it. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvfit.h"
#include "cli_args.h"

static const char *usage_text =
    "usage: kvfit-stream -m MODEL [--budget SIZE] [-f TEXT [--repeat]] [-p PROMPT] [--every N]\n"
    "                    [--max-tokens N] [-t THREADS] [--temp T] [--seed N]\n"
    "  -m MODEL        GGUF model file\n"
    "  --budget SIZE   KV budget (default 8MiB): bytes, or K/KiB, M/MiB, G/GiB\n"
    "  -f TEXT         ingest this UTF-8 text instead of generating\n"
    "  --repeat        with -f, start the text over at its end (ingest for ever)\n"
    "  -p PROMPT       the generation prompt (default \"Once upon a time\")\n"
    "  --every N       tokens between CSV rows (default 256)\n"
    "  --max-tokens N  stop after N tokens (default 0: never)\n"
    "  -t THREADS      CPU threads (0 = all cores)\n"
    "  --temp T        sampling temperature (default 0.8)\n"
    "  --seed N        sampling seed (default 1)\n";

static int usage(const char *why) {
    if (why) fprintf(stderr, "kvfit-stream: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static int die(const char *what, kvfit_status st) {
    fprintf(stderr, "kvfit-stream: %s: %s (%s)\n", what, kvfit_last_error(), kvfit_status_str(st));
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident set size in bytes from /proc/self/statm (second field, in pages);
 * 0 where /proc is missing. */
static double rss_bytes(void) {
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    int n = fscanf(f, "%lu %lu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : 0;
}

/* A whole decimal number in [lo, hi]. */
static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

typedef struct {
    const kvfit_session *session;
    uint64_t every, max_tokens;
    uint64_t next_row;   /* token count at which the next row is due */
    uint64_t last_count; /* token count of the previous row */
    double start, last_time;
} reporter;

/* Prints a row if the session has passed the next multiple of --every. */
static void report(reporter *r) {
    uint64_t count = kvfit_session_n_past(r->session);
    if (count < r->next_row) return;
    double t = now_s();
    double rate = t > r->last_time ? (double)(count - r->last_count) / (t - r->last_time) : 0;
    printf("%llu,%.3f,%.1f,%.2f,%.3f\n", (unsigned long long)count, t - r->start, rate, rss_bytes() / 1048576.0,
           (double)kvfit_session_kv_bytes(r->session) / 1048576.0);
    fflush(stdout);
    r->last_count = count;
    r->last_time = t;
    while (r->next_row <= count) r->next_row += r->every;
}

static int done(const reporter *r) { return r->max_tokens && kvfit_session_n_past(r->session) >= r->max_tokens; }

static bool on_token(int32_t token, const char *text, size_t len, void *user) {
    reporter *r = user;
    (void)text;
    (void)len;
    if (token < 0) return true;
    report(r);
    return !done(r);
}

/* Tokens of text (malloc'd), or NULL with a message. */
static int32_t *tokenize(const kvfit_model *m, const char *text, size_t len, bool add_special, size_t *n) {
    size_t cap = len + 8;
    int32_t *ids = malloc(cap * sizeof *ids);
    if (!ids) return NULL;
    kvfit_status st = kvfit_tokenize(m, text, len, add_special, false, ids, cap, n);
    if (st == KVFIT_E_BUFFER_TOO_SMALL) {
        free(ids);
        cap = *n;
        ids = malloc(cap * sizeof *ids);
        if (!ids) return NULL;
        st = kvfit_tokenize(m, text, len, add_special, false, ids, cap, n);
    }
    if (st) {
        die("tokenizing", st);
        free(ids);
        return NULL;
    }
    return ids;
}

static char *read_text(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            char *bigger = realloc(buf, cap ? 2 * cap : 1 << 20);
            if (!bigger) { free(buf); fclose(f); return NULL; }
            buf = bigger;
            cap = cap ? 2 * cap : 1 << 20;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *len = n;
    return buf;
}

/* Feeds the text's tokens in --every steps, from the start again at its end
 * when repeating. */
static int ingest(kvfit_session *s, reporter *r, const int32_t *ids, size_t n, int repeat) {
    size_t pos = 0;
    while (!done(r)) {
        if (pos == n) {
            if (!repeat) break;
            pos = 0;
        }
        size_t step = r->every - kvfit_session_n_past(s) % r->every;
        if (step > n - pos) step = n - pos;
        if (r->max_tokens && step > r->max_tokens - kvfit_session_n_past(s))
            step = (size_t)(r->max_tokens - kvfit_session_n_past(s));
        kvfit_status st = kvfit_session_prefill(s, ids + pos, step);
        if (st) return die("ingesting", st);
        pos += step;
        report(r);
    }
    return 0;
}

/* Generates until --max-tokens; when the model ends its text, the prompt is
 * fed again (without BOS) so the stream goes on. */
static int generate(kvfit_session *s, kvfit_sampler *sampler, reporter *r, const int32_t *first, size_t n_first,
                    const int32_t *again, size_t n_again) {
    kvfit_generate_params gp;
    kvfit_generate_params_init(&gp);
    gp.on_token = on_token;
    gp.user_data = r;
    gp.max_tokens = 1u << 30;
    const int32_t *prompt = first;
    size_t n_prompt = n_first;
    while (!done(r)) {
        kvfit_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        kvfit_status st = kvfit_generate(s, prompt, n_prompt, sampler, &gp, &res);
        if (st) return die("generating", st);
        if (res.stop_reason == KVFIT_STOP_CONTEXT) {
            fprintf(stderr, "kvfit-stream: the session's cache is full (give it a --budget to stream)\n");
            return 1;
        }
        prompt = again;
        n_prompt = n_again;
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *prompt_text = "Once upon a time";
    uint64_t budget = 8u << 20, every = 256, max_tokens = 0, threads = 0, seed = 1;
    float temp = 0.8f;
    int repeat = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_text, stdout); return 0; }
        if (!strcmp(a, "--repeat")) { repeat = 1; continue; }
        if (i + 1 >= argc) return usage("an option is missing its value");
        const char *v = argv[++i];
        int ok = 1;
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-f")) text_path = v;
        else if (!strcmp(a, "-p")) prompt_text = v;
        else if (!strcmp(a, "--budget")) ok = parse_size(v, &budget);
        else if (!strcmp(a, "--every")) ok = parse_u64(v, 1, 1u << 30, &every);
        else if (!strcmp(a, "--max-tokens")) ok = parse_u64(v, 0, UINT64_MAX, &max_tokens);
        else if (!strcmp(a, "-t")) ok = parse_u64(v, 0, 1024, &threads);
        else if (!strcmp(a, "--seed")) ok = parse_u64(v, 0, UINT64_MAX, &seed);
        else if (!strcmp(a, "--temp")) {
            char *end;
            temp = strtof(v, &end);
            ok = end != v && !*end;
        } else {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            return usage(msg);
        }
        if (!ok) {
            char msg[256];
            snprintf(msg, sizeof msg, "bad value '%s' for %s", v, a);
            return usage(msg);
        }
    }
    if (!model_path) return usage("-m MODEL is required");
    if (repeat && !text_path) return usage("--repeat needs -f TEXT");

    kvfit_model *model = NULL;
    kvfit_session *session = NULL;
    kvfit_sampler *sampler = NULL;
    int32_t *ids = NULL, *again = NULL;
    char *text = NULL;
    int rc = 1;
    kvfit_status st = kvfit_model_load(model_path, NULL, &model);
    if (st) return die("loading the model", st);

    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.kv_budget_bytes = budget;
    sp.n_threads = (int32_t)threads;
    if ((st = kvfit_session_create(model, &sp, &session))) { rc = die("creating a session", st); goto out; }
    kvfit_layer_plan layer;
    size_t n_layers = 0;
    uint64_t total = 0;
    if ((st = kvfit_session_plan(session, &layer, 1, &n_layers, &total))) { rc = die("reading the plan", st); goto out; }
    printf("# kvfit-stream: %s, %s, budget %llu bytes, a row every %llu tokens\n", model_path,
           text_path ? "ingesting a text" : "generating", (unsigned long long)budget, (unsigned long long)every);
    printf("# plan: %zu layers, %llu bytes of KV state; layer 0: %s, %u sinks + %u window\n", n_layers,
           (unsigned long long)total, codec_name(layer.codec), layer.n_sink, layer.n_window);
    printf("tokens,elapsed_s,tok_per_s,rss_mib,kv_mib\n");
    fflush(stdout);

    reporter r = {session, every, max_tokens, every, 0, now_s(), now_s()};
    size_t n = 0;
    if (text_path) {
        size_t len = 0;
        if (!(text = read_text(text_path, &len))) { fprintf(stderr, "kvfit-stream: cannot read %s\n", text_path); goto out; }
        if (!(ids = tokenize(model, text, len, true, &n))) goto out;
        if (n == 0) { fprintf(stderr, "kvfit-stream: %s has no tokens\n", text_path); goto out; }
        rc = ingest(session, &r, ids, n, repeat);
    } else {
        kvfit_sampler_params smp;
        kvfit_sampler_params_init(&smp);
        smp.temperature = temp;
        smp.seed = seed;
        if ((st = kvfit_sampler_create(&smp, &sampler))) { rc = die("creating the sampler", st); goto out; }
        size_t n_again = 0;
        char restart[1024];
        snprintf(restart, sizeof restart, "\n\n%s", prompt_text);
        if (!(ids = tokenize(model, prompt_text, strlen(prompt_text), true, &n))) goto out;
        if (!(again = tokenize(model, restart, strlen(restart), false, &n_again))) goto out;
        rc = generate(session, sampler, &r, ids, n, again, n_again);
    }
    r.next_row = 0; /* a last row where the stream stopped */
    if (rc == 0 && kvfit_session_n_past(session) > r.last_count) report(&r);
out:
    free(text);
    free(ids);
    free(again);
    kvfit_sampler_free(sampler);
    kvfit_session_free(session);
    kvfit_model_free(model);
    return rc;
}
