/* kvfit-bench: prefill and decode speed of a model.
 *
 *   kvfit-bench -m model.gguf [-t threads] [-p 128,1024] [-n 128] [-r 3] [-f text.txt]
 *   kvfit-bench -m model.gguf --budget 8MiB --positions 1000,10000,100000 [-n 128] [-r 3] [-f text.txt]
 *   kvfit-bench -m model.gguf --sessions 1,2,4 [-t threads] [-p 32] [-n 64] [-r 3] [--thread-limit N]
 *   kvfit-bench -m model.gguf --ceiling 2GiB [-t threads] [-p 128] [-n 128] [-r 7]
 *
 * For each prompt length P: a fresh session ingests P tokens in one prefill
 * (tokens/s = P / time), then decodes N tokens greedily one at a time
 * (tokens/s = N / time). Each measurement is repeated R times and the median
 * is printed as a markdown table row. Prompt tokens come from a text file
 * (-f) when given, else from a fixed pseudo-random sequence.
 *
 * With --ceiling SIZE, each repetition first measures the memory read
 * bandwidth (one sweep over a SIZE buffer by the session's thread count, as
 * kvfit-bandwidth does; "auto" = four times the last-level cache, at least
 * 1 GiB), so the probe and the decode runs alternate on a noisy machine; the
 * rows gain the ceiling (median bandwidth / the bytes of weights a decoded
 * token reads, from the GGUF's tensor table) and the median decode tok/s as a
 * fraction of it. Meant for the CPU backend.
 *
 * With --positions, one streaming session (--budget, or --window/--sinks/
 * --codec) ingests the token source (cycled) up to each stream position and
 * decodes N tokens there R times, printing the median decode tok/s (and the
 * range), the process RSS and the KV bytes, to show that speed and memory
 * stay flat however long the stream.
 *
 * With --sessions 1,2,4, for each count S: S sessions on the one model, each
 * driven by its own application thread, prefill P tokens (the first of -p)
 * and then decode N tokens greedily; the row gives the aggregate decode
 * tok/s (S * N / the time from the common start until the last session is
 * done), the slowest session's own tok/s and the process's CPU time per
 * decoded token (all threads, user + system: what spinning or idle workers
 * burn shows here), medians of R runs. -t is each session's n_threads;
 * --thread-limit calls kvfit_set_thread_limit first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <sys/resource.h>

#include "kvfit.h"
#include "bandwidth.h"
#include "cli_args.h"

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

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

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kib;
}


static int32_t argmax(const float *l, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return (int32_t)best;
}

/* n greedy decode steps; returns the status of the first failure. */
static kvfit_status decode_greedy(kvfit_session *s, int n) {
    for (int i = 0; i < n; i++) {
        const float *l;
        size_t nv;
        kvfit_status st = kvfit_session_logits(s, &l, &nv);
        if (st || (st = kvfit_session_decode(s, argmax(l, nv)))) return st;
    }
    return KVFIT_OK;
}

/* --sessions: one application thread per session, started together. */
typedef struct {
    kvfit_session *s;
    const int32_t *prompt;
    int n_prompt, n_gen;
    pthread_barrier_t *start;
    double t_start, t_end; /* decode begin and end */
    kvfit_status st;
} sess_job;

static void *sess_main(void *arg) {
    sess_job *j = arg;
    j->st = kvfit_session_reset(j->s);
    if (!j->st) j->st = kvfit_session_prefill(j->s, j->prompt, (size_t)j->n_prompt);
    pthread_barrier_wait(j->start);
    j->t_start = now_s();
    if (!j->st) j->st = decode_greedy(j->s, j->n_gen);
    j->t_end = now_s();
    return NULL;
}

static int bench_sessions(kvfit_model *model, const char *counts, const int32_t *src, int P, int threads, int n_gen,
                          int reps) {
    printf("sessions: one application thread each, n_threads %d per session, thread limit %d, prompt %d tokens, "
           "%d decode tokens each, median of %d runs\n\n", threads, kvfit_get_thread_limit(), P, n_gen, reps);
    printf("| sessions | aggregate decode tok/s | slowest session tok/s | CPU ms per token |\n|---:|---:|---:|---:|\n");
    char *list = strdup(counts);
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        const int S = atoi(tok);
        if (S < 1 || S > 64) { fprintf(stderr, "kvfit-bench: --sessions counts must be 1..64\n"); return 2; }
        kvfit_session *ss[64];
        sess_job jobs[64];
        pthread_t tids[64];
        for (int i = 0; i < S; i++) {
            kvfit_session_params sp;
            kvfit_session_params_init(&sp);
            sp.n_ctx = (uint32_t)(P + n_gen + 1);
            sp.n_batch = (uint32_t)P;
            sp.n_threads = threads;
            kvfit_status st = kvfit_session_create(model, &sp, &ss[i]);
            if (st) return die("creating a session", st);
        }
        double agg[64], slow[64], cpu[64];
        for (int r = 0; r < reps; r++) {
            pthread_barrier_t bar;
            pthread_barrier_init(&bar, NULL, (unsigned)S + 1); /* and this thread, to read the CPU time */
            for (int i = 0; i < S; i++) {
                /* each session its own prompt, so they do not decode in lockstep */
                jobs[i] = (sess_job){ss[i], src + (size_t)i * (size_t)P, P, n_gen, &bar, 0, 0, KVFIT_OK};
                if (pthread_create(&tids[i], NULL, sess_main, &jobs[i])) {
                    fprintf(stderr, "kvfit-bench: cannot start a thread\n");
                    return 1;
                }
            }
            pthread_barrier_wait(&bar);
            const double c0 = cpu_s();
            double t0 = 1e300, t1 = 0, slowest = 1e300;
            for (int i = 0; i < S; i++) {
                pthread_join(tids[i], NULL);
                if (jobs[i].st) return die("decode", jobs[i].st);
                if (jobs[i].t_start < t0) t0 = jobs[i].t_start;
                if (jobs[i].t_end > t1) t1 = jobs[i].t_end;
                const double own = n_gen / (jobs[i].t_end - jobs[i].t_start);
                if (own < slowest) slowest = own;
            }
            cpu[r] = 1e3 * (cpu_s() - c0) / ((double)S * n_gen);
            pthread_barrier_destroy(&bar);
            agg[r] = (double)S * n_gen / (t1 - t0);
            slow[r] = slowest;
        }
        printf("| %d | %.1f | %.1f | %.1f |\n", S, median(agg, reps), median(slow, reps), median(cpu, reps));
        fflush(stdout);
        for (int i = 0; i < S; i++) kvfit_session_free(ss[i]);
    }
    free(list);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *plist = "128,1024", *positions = NULL, *sessions = NULL;
    int threads = 0, n_gen = 128, reps = 3, sinks = -1, thread_limit = -1;
    uint64_t budget = 0, ceiling = 0;
    uint32_t window = 0;
    kvfit_kv_codec codec = KVFIT_KV_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "kvfit-bench: '%s' needs a value\n", a); return 2; }
        if (!strcmp(a, "-m")) model_path = v;
        else if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "-p")) plist = v;
        else if (!strcmp(a, "-n")) n_gen = atoi(v);
        else if (!strcmp(a, "-r")) reps = atoi(v);
        else if (!strcmp(a, "-f")) text_path = v;
        else if (!strcmp(a, "--positions")) positions = v;
        else if (!strcmp(a, "--sessions")) sessions = v;
        else if (!strcmp(a, "--thread-limit")) thread_limit = atoi(v);
        else if (!strcmp(a, "--budget")) {
            if (!parse_size(v, &budget)) { fprintf(stderr, "kvfit-bench: bad size '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--ceiling")) {
            if (!strcmp(v, "auto")) ceiling = bw_default_bytes();
            else if (!parse_size(v, &ceiling)) { fprintf(stderr, "kvfit-bench: bad size '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--window")) window = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--sinks")) sinks = atoi(v);
        else if (!strcmp(a, "--codec")) {
            if (!parse_codec(v, &codec)) { fprintf(stderr, "kvfit-bench: codec is one of auto, f16, q8, q4, q4h, q4c\n"); return 2; }
        }
        else {
            fprintf(stderr, "usage: kvfit-bench -m MODEL [-t THREADS] [-p 128,1024] [-n 128] [-r 3] [-f TEXT]\n"
                            "                   [--positions 1000,10000] [--budget 8MiB] [--window N] [--sinks N] [--codec f16|q8|q4|q4h|q4c]\n"
                            "                   [--sessions 1,2,4] [--thread-limit N] [--ceiling auto|SIZE]\n");
            return 2;
        }
        i++;
    }
    if (!model_path) { fprintf(stderr, "kvfit-bench: -m MODEL is required\n"); return 2; }
    if (reps < 1 || reps > 64 || n_gen < 1) { fprintf(stderr, "kvfit-bench: -r must be 1..64 and -n positive\n"); return 2; }

    kvfit_model *model;
    kvfit_status st;
    if (thread_limit >= 0 && (st = kvfit_set_thread_limit(thread_limit))) return die("--thread-limit", st);
    st = kvfit_model_load(model_path, NULL, &model);
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
    { /* the devices there are to choose from (KVFIT_BACKEND / KVFIT_DEVICE pick one) */
        static const char *const backends[] = {"auto", "cpu", "cuda", "vulkan"};
        size_t nd = 0;
        kvfit_device_count(&nd);
        printf("devices:");
        for (size_t i = 0; i < nd; i++) {
            kvfit_device_info di;
            memset(&di, 0, sizeof di);
            di.struct_size = sizeof di;
            if (kvfit_device_get_info(i, &di) == KVFIT_OK)
                printf("%s %s %d: %s", i ? ";" : "", (unsigned)di.backend < 4 ? backends[di.backend] : "?", di.index,
                       di.name ? di.name : "?");
        }
        const char *env = getenv("KVFIT_BACKEND");
        printf(" (KVFIT_BACKEND=%s)\n", env && *env ? env : "auto");
    }
    if (sessions) {
        const int P = atoi(plist);
        if (P < 1 || (size_t)P * 64 > n_src) { fprintf(stderr, "kvfit-bench: bad prompt length %s\n", plist); return 2; }
        const int rc = bench_sessions(model, sessions, src, P, threads, n_gen, reps);
        free(src);
        kvfit_model_free(model);
        return rc;
    }
    if (positions) {
        kvfit_session_params sp;
        kvfit_session_params_init(&sp);
        sp.kv_budget_bytes = budget;
        sp.n_window = window;
        sp.n_sink = sinks;
        sp.kv_codec = codec;
        sp.n_threads = threads;
        if (!budget && !window) { fprintf(stderr, "kvfit-bench: --positions needs --budget or --window\n"); return 2; }
        kvfit_session *s;
        if ((st = kvfit_session_create(model, &sp, &s))) return die("creating a session", st);
        kvfit_layer_plan plan[512];
        size_t nl = 0, n_recurrent = 0;
        uint64_t total = 0;
        kvfit_session_plan(s, plan, 512, &nl, &total);
        /* The attention layers' sinks and window (the first one's), and how many layers are recurrent. */
        kvfit_layer_plan lp = plan[0];
        for (size_t l = nl < 512 ? nl : 512; l-- > 0;) {
            if (plan[l].kind == KVFIT_LAYER_RECURRENT) n_recurrent++;
            else lp = plan[l];
        }
        printf("plan: %zu layers (%zu recurrent), codec %s, %u sinks + %u window, KV %.2f MiB; threads %d, %d decode "
               "tokens per row\n\n",
               nl, n_recurrent, codec_name(lp.codec), lp.n_sink, lp.n_window, total / 1048576.0, threads, n_gen);
        printf("| stream position | decode tok/s, median of %d (range) | RSS MiB | KV MiB |\n|---:|---:|---:|---:|\n", reps);
        char *plist2 = strdup(positions);
        size_t next = 0;
        for (char *tok = strtok(plist2, ","); tok; tok = strtok(NULL, ",")) {
            const uint64_t P = strtoull(tok, NULL, 10);
            while (kvfit_session_n_past(s) < P) { /* ingest the source, cycled, in pieces */
                size_t n = n_src - next;
                if (n > 512) n = 512;
                if (n > P - kvfit_session_n_past(s)) n = (size_t)(P - kvfit_session_n_past(s));
                if ((st = kvfit_session_prefill(s, src + next, n))) return die("prefill", st);
                next = (next + n) % n_src;
            }
            double speed[64], lo = 1e300, hi = 0;
            for (int r = 0; r < reps; r++) { /* R runs of N decode steps, one after the other */
                double t0 = now_s();
                if ((st = decode_greedy(s, n_gen))) return die("decode", st);
                speed[r] = n_gen / (now_s() - t0);
                if (speed[r] < lo) lo = speed[r];
                if (speed[r] > hi) hi = speed[r];
            }
            printf("| %llu | %.1f (%.1f-%.1f) | %.1f | %.2f |\n", (unsigned long long)P, median(speed, reps), lo, hi,
                   rss_kib() / 1024.0, kvfit_session_kv_bytes(s) / 1048576.0);
            fflush(stdout);
        }
        free(plist2);
        kvfit_session_free(s);
        free(src);
        kvfit_model_free(model);
        return 0;
    }
    bw_model_bytes mbytes;
    bw_probe probe = {0};
    if (ceiling) {
        char err[512];
        if (!bw_model_read(model_path, &mbytes, err, sizeof err)) { fprintf(stderr, "kvfit-bench: %s\n", err); return 1; }
        if (!bw_probe_init(&probe, threads, ceiling)) { fprintf(stderr, "kvfit-bench: cannot allocate the probe buffer\n"); return 1; }
        double warm;
        bw_probe_run(&probe, 1, &warm);
        printf("ceiling: a decoded token reads %.2f MB of weights%s; read bandwidth: %d threads over %.0f MiB, one sweep "
               "before each repetition\n", mbytes.bytes_per_token / 1e6, mbytes.tied_output ? " (tied output)" : "",
               probe.threads, probe.bytes / 1048576.0);
    }
    printf("threads: %d, decode tokens: %d, repetitions: %d (median)\n\n", threads, n_gen, reps);
    if (ceiling)
        printf("| prompt tokens | prefill tok/s | decode tok/s | read GB/s | ceiling tok/s | decode / ceiling |\n"
               "|---:|---:|---:|---:|---:|---:|\n");
    else
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
        double *bw = malloc(sizeof(double) * reps);
        for (int r = 0; r < reps; r++) {
            if (ceiling) bw_probe_run(&probe, 1, &bw[r]);
            kvfit_session_reset(s);
            double t0 = now_s();
            if ((st = kvfit_session_prefill(s, src, (size_t)P))) return die("prefill", st);
            double t1 = now_s();
            if ((st = decode_greedy(s, n_gen))) return die("decode", st);
            double t2 = now_s();
            pre[r] = P / (t1 - t0);
            dec[r] = n_gen / (t2 - t1);
        }
        if (ceiling) {
            const double d = median(dec, reps), g = median(bw, reps), c = g * 1e9 / (double)mbytes.bytes_per_token;
            printf("| %d | %.1f | %.1f | %.2f | %.1f | %.2f |\n", P, median(pre, reps), d, g, c, d / c);
        } else {
            printf("| %d | %.1f | %.1f |\n", P, median(pre, reps), median(dec, reps));
        }
        fflush(stdout);
        free(bw);
        free(pre);
        free(dec);
        kvfit_session_free(s);
    }
    free(list);
    free(src);
    if (ceiling) bw_probe_free(&probe);
    kvfit_model_free(model);
    return 0;
}
