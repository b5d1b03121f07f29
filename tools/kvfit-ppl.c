/* kvfit-ppl: perplexity of a model over a long text, under a KV policy.
 *
 *   kvfit-ppl -m MODEL -f TEXT [options]   (kvfit-ppl --help lists them)
 *
 * The whole text is tokenized once (BOS added if the model asks for it) and
 * streamed through one session in prefill steps of --batch tokens; every token
 * but the first is scored by -log p(token | everything before it). Output:
 * the session's plan and settings as '#' comment lines, then one CSV row per
 * --chunk tokens (chunk,first_token,last_token,nll_mean,ppl: token indices are
 * inclusive, token 0 is not scored), then the total perplexity as a comment.
 * Comments keep the CSV readable by plotting tools (pandas: comment='#').
 *
 * Streaming (--budget and/or --window): the session keeps sinks + a sliding
 * window and runs over the whole text. Dense (--dense, or neither --budget nor
 * --window): the cache holds --ctx tokens (default: the training context) and
 * the evaluation stops there, which the output says. */
/* clock_gettime is POSIX, not C99. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvfit.h"
#include "cli_args.h"

static const char *usage_text =
    "usage: kvfit-ppl -m MODEL -f TEXT [-t THREADS] [--max-tokens N] [--chunk 512]\n"
    "                 [--budget SIZE] [--ctx N] [--sinks N] [--window N]\n"
    "                 [--codec auto|f16|q8|q4|q4h|q4c] [--dense] [--csv FILE] [--batch 512]\n"
    "                 [--fold off|auto|on] [--fold-calib TEXT] [--fold-calib-tokens 2048]\n"
    "  -m MODEL        GGUF model file\n"
    "  -f TEXT         UTF-8 text file\n"
    "  -t THREADS      CPU threads (0 = all cores)\n"
    "  --max-tokens N  evaluate at most N tokens of the text (0 = all)\n"
    "  --chunk N       tokens per reported CSV row (default 512)\n"
    "  --budget SIZE   KV budget: bytes, or with K/KiB, M/MiB, G/GiB (1024-based), e.g. 1.5GiB\n"
    "  --ctx N         dense: tokens the cache holds; streaming: the planner's target context\n"
    "                  (default: the model's training context)\n"
    "  --sinks N       attention sink tokens per layer (-1 = default)\n"
    "  --window N      sliding-window tokens per layer (0 = the planner decides)\n"
    "  --codec C       KV codec (default auto)\n"
    "  --dense         attention over every token, no eviction: stops after --ctx tokens\n"
    "  --csv FILE      also write the comments and CSV rows to FILE\n"
    "  --batch N       tokens per prefill step (default 512)\n"
    "  --fold MODE     fold evicted tokens into a linear memory (streaming; CPU): off (default),\n"
    "                  on (every streaming layer), auto (the layers where a calibration helps)\n"
    "  --fold-calib T  --fold auto: calibrate on the first tokens of text file T\n"
    "  --fold-calib-tokens N  how many (default 2048)\n";

static int usage(const char *why) {
    if (why) fprintf(stderr, "kvfit-ppl: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

static int die(const char *what, kvfit_status st) {
    fprintf(stderr, "kvfit-ppl: %s: %s (%s)\n", what, kvfit_last_error(), kvfit_status_str(st));
    return 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A whole decimal integer in [lo, hi]; anything else (junk, overflow) fails. */
static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static const char *kind_name(kvfit_layer_kind k) {
    switch (k) {
    case KVFIT_LAYER_DENSE: return "dense";
    case KVFIT_LAYER_STREAMING: return "streaming";
    case KVFIT_LAYER_WINDOW: return "window";
    case KVFIT_LAYER_RECURRENT: return "recurrent";
    case KVFIT_LAYER_STREAMING_FOLD: return "streaming+fold";
    default: return "?";
    }
}

/* Comment lines go to stdout and, when given, the CSV file, so a saved file
 * says how it was made. */
static FILE *g_csv;

#ifdef __GNUC__
static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#endif
static void emit(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_csv) {
        va_start(ap, fmt);
        vfprintf(g_csv, fmt, ap);
        va_end(ap);
    }
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) { free(buf); buf = NULL; break; }
        buf = bigger;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return NULL; }
    *len = n;
    return buf;
}

/* One CSV row: mean NLL over the scored tokens of [first, last]. */
static void emit_row(size_t chunk, size_t first, size_t last, double sum, size_t n) {
    double mean = n ? sum / (double)n : NAN;
    emit("%zu,%zu,%zu,%.6f,%.4f\n", chunk, first, last, mean, exp(mean));
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *csv_path = NULL;
    long threads = 0, max_tokens = 0, chunk = 512, ctx = 0, sinks = -1, window = 0, batch = 512;
    uint64_t budget = 0;
    kvfit_kv_codec codec = KVFIT_KV_AUTO;
    int dense = 0, codec_set = 0, sinks_set = 0;
    kvfit_fold_mode fold = KVFIT_FOLD_OFF;
    const char *calib_path = NULL;
    long calib_tokens = 2048;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_text, stdout); return 0; }
        if (!strcmp(a, "--dense")) { dense = 1; continue; }
        static const char *const with_value[] = {"-m", "-f", "--csv", "-t", "--max-tokens", "--chunk", "--ctx",
                                                 "--sinks", "--window", "--batch", "--budget", "--codec",
                                                 "--fold", "--fold-calib", "--fold-calib-tokens"};
        int known = 0;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            return usage(msg);
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        int ok = v != NULL;
        if (!ok) {
            char msg[256];
            snprintf(msg, sizeof msg, "'%s' needs a value", a);
            return usage(msg);
        }
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-f")) text_path = v;
        else if (!strcmp(a, "--csv")) csv_path = v;
        else if (!strcmp(a, "--fold-calib")) calib_path = v;
        else if (!strcmp(a, "--fold-calib-tokens")) ok = parse_long(v, 2, INT32_MAX, &calib_tokens);
        else if (!strcmp(a, "--fold")) {
            ok = 1;
            if (!strcmp(v, "off")) fold = KVFIT_FOLD_OFF;
            else if (!strcmp(v, "auto")) fold = KVFIT_FOLD_AUTO;
            else if (!strcmp(v, "on")) fold = KVFIT_FOLD_ON;
            else ok = 0;
        }
        else if (!strcmp(a, "-t")) ok = parse_long(v, 0, 1024, &threads);
        else if (!strcmp(a, "--max-tokens")) ok = parse_long(v, 0, LONG_MAX, &max_tokens);
        else if (!strcmp(a, "--chunk")) ok = parse_long(v, 1, LONG_MAX, &chunk);
        else if (!strcmp(a, "--ctx")) ok = parse_long(v, 1, UINT32_MAX, &ctx);
        else if (!strcmp(a, "--sinks")) { ok = parse_long(v, -1, INT32_MAX, &sinks); sinks_set = 1; }
        else if (!strcmp(a, "--window")) ok = parse_long(v, 1, UINT32_MAX, &window);
        else if (!strcmp(a, "--batch")) ok = parse_long(v, 1, UINT32_MAX, &batch);
        else if (!strcmp(a, "--budget")) ok = parse_size(v, &budget);
        else if (!strcmp(a, "--codec")) { ok = parse_codec(v, &codec); codec_set = 1; }
        if (!ok) {
            char msg[256];
            snprintf(msg, sizeof msg, "bad value '%s' for %s", v, a);
            return usage(msg);
        }
    }
    if (!model_path || !text_path) return usage("-m MODEL and -f TEXT are required");
    /* Dense keeps everything, so eviction settings would be silently ignored. */
    if (dense && (budget || window || sinks_set))
        return usage("--dense does not take --budget, --window or --sinks");
    int streaming = budget > 0 || window > 0;
    if (fold == KVFIT_FOLD_AUTO && !calib_path) return usage("--fold auto needs --fold-calib TEXT");
    if (calib_path && fold != KVFIT_FOLD_AUTO) return usage("--fold-calib is for --fold auto");

    kvfit_model *model;
    kvfit_status st = kvfit_model_load(model_path, NULL, &model);
    if (st) return die("loading the model", st);
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if ((st = kvfit_model_get_info(model, &info))) return die("reading the model info", st);

    size_t text_len = 0;
    char *text = read_file(text_path, &text_len);
    if (!text) { fprintf(stderr, "kvfit-ppl: cannot read %s\n", text_path); return 1; }

    /* A token covers at least one byte, so text_len + a few specials is
     * enough; the retry covers a tokenizer that adds more. */
    size_t cap = text_len + 16, n_tok = 0;
    int32_t *tokens = malloc(cap * sizeof *tokens);
    if (!tokens) { fprintf(stderr, "kvfit-ppl: out of memory\n"); return 1; }
    st = kvfit_tokenize(model, text, text_len, true, false, tokens, cap, &n_tok);
    if (st == KVFIT_E_BUFFER_TOO_SMALL) {
        cap = n_tok;
        free(tokens);
        tokens = malloc(cap * sizeof *tokens);
        if (!tokens) { fprintf(stderr, "kvfit-ppl: out of memory\n"); return 1; }
        st = kvfit_tokenize(model, text, text_len, true, false, tokens, cap, &n_tok);
    }
    free(text);
    if (st) return die("tokenizing the text", st);
    if (n_tok < 2) { fprintf(stderr, "kvfit-ppl: the text has fewer than 2 tokens\n"); return 1; }

    kvfit_session_params sp;
    kvfit_session_params_init(&sp);
    sp.n_ctx = (uint32_t)ctx;
    sp.n_batch = (uint32_t)batch;
    sp.n_threads = (int32_t)threads;
    sp.kv_budget_bytes = budget;
    sp.n_sink = (int32_t)sinks;
    sp.n_window = (uint32_t)window;
    sp.kv_codec = codec;
    sp.fold = fold;
    int32_t *calib = NULL;
    size_t n_calib = 0;
    if (calib_path) {
        size_t calib_len = 0;
        char *ct = read_file(calib_path, &calib_len);
        if (!ct) { fprintf(stderr, "kvfit-ppl: cannot read %s\n", calib_path); return 1; }
        calib = malloc((calib_len + 16) * sizeof *calib);
        if (!calib) { fprintf(stderr, "kvfit-ppl: out of memory\n"); return 1; }
        st = kvfit_tokenize(model, ct, calib_len, true, false, calib, calib_len + 16, &n_calib);
        free(ct);
        if (st) return die("tokenizing the calibration text", st);
        if (n_calib > (size_t)calib_tokens) n_calib = (size_t)calib_tokens;
        sp.fold_calib_tokens = calib;
        sp.n_fold_calib_tokens = n_calib;
    }
    double t_create = now_s();
    kvfit_session *s;
    if ((st = kvfit_session_create(model, &sp, &s))) return die("creating the session", st);
    t_create = now_s() - t_create;
    free(calib);

    size_t n_layers = 0;
    uint64_t plan_bytes = 0;
    if ((st = kvfit_session_plan(s, NULL, 0, &n_layers, &plan_bytes))) return die("reading the plan", st);
    kvfit_layer_plan *plan = calloc(n_layers ? n_layers : 1, sizeof *plan);
    if (!plan) { fprintf(stderr, "kvfit-ppl: out of memory\n"); return 1; }
    if ((st = kvfit_session_plan(s, plan, n_layers, &n_layers, &plan_bytes))) return die("reading the plan", st);

    /* How many tokens to evaluate: dense stops where its cache is full. */
    size_t n_eval = n_tok;
    if (max_tokens > 0 && (size_t)max_tokens < n_eval) n_eval = (size_t)max_tokens;
    size_t dense_cap = 0;
    if (!streaming) {
        /* The plan's dense layers say how many tokens the cache holds. */
        for (size_t l = 0; l < n_layers; l++)
            if (plan[l].kind == KVFIT_LAYER_DENSE && (dense_cap == 0 || plan[l].n_window < dense_cap))
                dense_cap = plan[l].n_window;
        if (dense_cap == 0) dense_cap = ctx ? (size_t)ctx : info.n_ctx_train;
    }
    int stopped_at_ctx = !streaming && n_eval > dense_cap;
    if (stopped_at_ctx) n_eval = dense_cap;

    if ((csv_path && !(g_csv = fopen(csv_path, "w")))) {
        fprintf(stderr, "kvfit-ppl: cannot write %s\n", csv_path);
        return 1;
    }

    emit("# kvfit-ppl, kvfit %s\n# command:", kvfit_version());
    for (int i = 0; i < argc; i++) emit(" %s", argv[i]);
    emit("\n# model: %s (%s, %s, %.1fM params, %u layers, n_ctx_train %u)\n", model_path,
         info.name && *info.name ? info.name : "unnamed", info.arch, info.n_params / 1e6, info.n_layer,
         info.n_ctx_train);
    emit("# text: %s (%zu bytes, %zu tokens)\n", text_path, text_len, n_tok);
    emit("# session: %s, n_ctx %ld%s, n_batch %ld, threads %ld, budget %llu, sinks %ld, window %ld, codec %s\n",
         streaming ? "streaming" : "dense", ctx, ctx ? "" : " (training context)", batch, threads,
         (unsigned long long)budget, sinks, window, codec_set ? codec_name(codec) : "auto");
    if (fold != KVFIT_FOLD_OFF)
        emit("# fold: %s%s%s, %zu calibration tokens, session created in %.1f s\n",
             fold == KVFIT_FOLD_ON ? "on" : "auto", calib_path ? ", calibrated on " : "", calib_path ? calib_path : "",
             n_calib, t_create);
    /* Per layer, collapsing runs of identical layers into one line. */
    emit("# layer kind codec sinks window bytes\n");
    double bytes_per_token = 0;
    for (size_t l = 0; l < n_layers;) {
        size_t e = l + 1;
        while (e < n_layers && plan[e].kind == plan[l].kind && plan[e].codec == plan[l].codec &&
               plan[e].n_sink == plan[l].n_sink && plan[e].n_window == plan[l].n_window &&
               plan[e].bytes == plan[l].bytes)
            e++;
        if (e - l > 1) emit("# %zu-%zu", l, e - 1);
        else emit("# %zu", l);
        emit(" %s %s %u %u %llu\n", kind_name(plan[l].kind), codec_name(plan[l].codec), plan[l].n_sink,
             plan[l].n_window, (unsigned long long)plan[l].bytes);
        for (size_t k = l; k < e; k++) {
            uint64_t slots = (uint64_t)plan[k].n_sink + plan[k].n_window;
            if (slots) bytes_per_token += (double)plan[k].bytes / (double)slots;
        }
        l = e;
    }
    emit("# kv bytes: plan %llu (%.2f MiB), allocated %llu, per cached token (all layers) %.1f\n",
         (unsigned long long)plan_bytes, plan_bytes / 1048576.0, (unsigned long long)kvfit_session_kv_bytes(s),
         bytes_per_token);
    if (stopped_at_ctx)
        emit("# dense: the cache holds %zu tokens, so the evaluation stops after %zu of %zu tokens\n", dense_cap,
             n_eval, max_tokens > 0 && (size_t)max_tokens < n_tok ? (size_t)max_tokens : n_tok);
    emit("chunk,first_token,last_token,nll_mean,ppl\n");

    float *nll = malloc(n_eval * sizeof *nll);
    if (!nll) { fprintf(stderr, "kvfit-ppl: out of memory\n"); return 1; }
    double total_sum = 0, chunk_sum = 0, t0 = now_s();
    size_t total_n = 0, chunk_n = 0, chunk_idx = 0, chunk_first = 0;
    for (size_t pos = 0; pos < n_eval;) {
        size_t n = n_eval - pos < (size_t)batch ? n_eval - pos : (size_t)batch;
        if ((st = kvfit_session_prefill_nll(s, tokens + pos, n, nll + pos))) {
            char what[64];
            snprintf(what, sizeof what, "evaluating tokens %zu-%zu", pos, pos + n - 1);
            return die(what, st);
        }
        for (size_t i = pos; i < pos + n; i++) {
            if (i > 0) { /* token 0 has no context to be predicted from */
                chunk_sum += nll[i];
                chunk_n++;
            }
            if (i + 1 - chunk_first == (size_t)chunk) {
                emit_row(chunk_idx++, chunk_first, i, chunk_sum, chunk_n);
                total_sum += chunk_sum;
                total_n += chunk_n;
                chunk_sum = 0;
                chunk_n = 0;
                chunk_first = i + 1;
            }
        }
        pos += n;
    }
    if (chunk_first < n_eval) {
        emit_row(chunk_idx, chunk_first, n_eval - 1, chunk_sum, chunk_n);
        total_sum += chunk_sum;
        total_n += chunk_n;
    }
    double secs = now_s() - t0, mean = total_n ? total_sum / (double)total_n : NAN;
    emit("# time: %.1f s, %.1f tokens/s\n", secs, n_eval / secs);
    emit("# total: tokens %zu, scored %zu, nll_mean %.6f, ppl %.4f\n", n_eval, total_n, mean, exp(mean));

    int rc = 0;
    if (g_csv && fclose(g_csv)) { fprintf(stderr, "kvfit-ppl: error writing %s\n", csv_path); rc = 1; }
    free(nll);
    free(plan);
    free(tokens);
    kvfit_session_free(s);
    kvfit_model_free(model);
    return rc;
}
