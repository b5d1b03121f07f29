/* kvfit-bench: prefill and decode speed of a model.
 *
 *   kvfit-bench -m model.gguf [-t threads] [-p 128,1024] [-n 128] [-r 3] [-f text.txt]
 *
 * For each prompt length P: a fresh session ingests P tokens in one prefill
 * (tokens/s = P / time), then decodes N tokens greedily one at a time
 * (tokens/s = N / time). Each measurement is repeated R times and the median
 * is printed as a markdown table row. Prompt tokens come from a text file
 * (-f) when given, else from a fixed pseudo-random sequence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvfit.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int die(const char *what, kvfit_status st) {
    fprintf(stderr, "kvfit-bench: %s: %s (%s)\n", what, kvfit_last_error(), kvfit_status_str(st));
    return 1;
}

static int32_t argmax(const float *l, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return (int32_t)best;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *plist = "128,1024";
    int threads = 0, n_gen = 128, reps = 3;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "kvfit-bench: '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "-p")) plist = v;
        else if (!strcmp(a, "-n")) n_gen = atoi(v);
        else if (!strcmp(a, "-r")) reps = atoi(v);
        else if (!strcmp(a, "-f")) text_path = v;
        else { fprintf(stderr, "usage: kvfit-bench -m MODEL [-t THREADS] [-p 128,1024] [-n 128] [-r 3] [-f TEXT]\n"); return 2; }
        i++;
    }
    if (!model_path || reps < 1 || n_gen < 1) { fprintf(stderr, "kvfit-bench: -m MODEL is required\n"); return 2; }

    kvfit_model *model;
    kvfit_status st = kvfit_model_load(model_path, NULL, &model);
    if (st) return die("loading", st);
    kvfit_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    kvfit_model_get_info(model, &info);

    /* Prompt source: the text file's tokens, or a fixed pseudo-random sequence. */
    size_t n_src = 0, cap = 1 << 16;
    int32_t *src = malloc(cap * sizeof *src);
    if (text_path) {
        FILE *f = fopen(text_path, "rb");
        if (!f) { fprintf(stderr, "kvfit-bench: cannot open %s\n", text_path); return 1; }
        char *buf = malloc(256 * 1024 + 1);
        size_t n = fread(buf, 1, 256 * 1024, f);
        fclose(f);
        while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80) n--; /* don't cut a character */
        if (n > 0 && (unsigned char)buf[n - 1] >= 0xC0) n--;
        st = kvfit_tokenize(model, buf, n, false, false, src, cap, &n_src);
        free(buf);
        if (st) return die("tokenizing the text", st);
    } else {
        uint32_t x = 12345;
        for (n_src = 0; n_src < cap; n_src++) {
            x = x * 1664525u + 1013904223u;
            src[n_src] = (int32_t)(100 + (x >> 8) % (info.n_vocab - 200));
        }
    }

    printf("model: %s (%s, %.1fM params, %.1f MiB), kvfit %s\n", model_path, info.arch, info.n_params / 1e6,
           info.weight_bytes / 1048576.0, kvfit_version());
    printf("threads: %d, decode tokens: %d, repetitions: %d (median)\n\n", threads, n_gen, reps);
    printf("| prompt tokens | prefill tok/s | decode tok/s |\n|---:|---:|---:|\n");
    char *list = strdup(plist);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        int P = atoi(tok);
        if (P < 1 || (size_t)P > n_src) { fprintf(stderr, "kvfit-bench: bad prompt length %s\n", tok); return 2; }
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.n_ctx = (uint32_t)(P + n_gen + 1);
        sp.n_batch = (uint32_t)P;
        sp.n_threads = threads;
        kvfit_session *s;
        if ((st = kvfit_session_create(model, &sp, &s))) return die("creating a session", st);
        double *pre = malloc(sizeof(double) * reps), *dec = malloc(sizeof(double) * reps);
        for (int r = 0; r < reps; r++) {
            kvfit_session_reset(s);
            double t0 = now_s();
            if ((st = kvfit_session_prefill(s, src, (size_t)P))) return die("prefill", st);
            double t1 = now_s();
            for (int i = 0; i < n_gen; i++) {
                const float *l;
                size_t nv;
                kvfit_session_logits(s, &l, &nv);
                if ((st = kvfit_session_decode(s, argmax(l, nv)))) return die("decode", st);
            }
            double t2 = now_s();
            pre[r] = P / (t1 - t0);
            dec[r] = n_gen / (t2 - t1);
        }
        printf("| %d | %.1f | %.1f |\n", P, median(pre, reps), median(dec, reps));
        fflush(stdout);
        free(pre);
        free(dec);
        kvfit_session_free(s);
    }
    free(list);
    free(src);
    kvfit_model_free(model);
    return 0;
}
