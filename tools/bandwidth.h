/* The decode-speed ceiling of a machine for a model: how fast N threads
 * stream memory (read bandwidth), and how many bytes of weights one decoded
 * token reads (from the GGUF's tensor table). Shared by kvfit-bandwidth and
 * kvfit-bench --ceiling; plain C and POSIX threads, no kvfit internals.
 *
 * Bytes per token: every tensor a decode step reads, in full, except the
 * lookups (token_embd.weight and other *_embd.weight tables), which read one
 * row. A model without output.weight ties its output to token_embd.weight,
 * and that matrix is then read in full as well. The KV cache is not counted. */
#ifndef KVFIT_BANDWIDTH_H
#define KVFIT_BANDWIDTH_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- bytes a decoded token reads ------------------------------------------ */

/* (values per block, bytes per block) of the ggml types; 0 for unknown ids. */
static inline int bw_type_block(uint32_t type, uint64_t *per, uint64_t *size) {
    static const uint16_t t[][2] = {
        [0] = {1, 4},      [1] = {1, 2},      [2] = {32, 18},    [3] = {32, 20},    [6] = {32, 22},
        [7] = {32, 24},    [8] = {32, 34},    [9] = {32, 36},    [10] = {256, 84},  [11] = {256, 110},
        [12] = {256, 144}, [13] = {256, 176}, [14] = {256, 210}, [15] = {256, 292}, [16] = {256, 66},
        [17] = {256, 74},  [18] = {256, 98},  [19] = {256, 50},  [20] = {32, 18},   [21] = {256, 110},
        [22] = {256, 82},  [23] = {256, 136}, [24] = {1, 1},     [25] = {1, 2},     [26] = {1, 4},
        [27] = {1, 8},     [28] = {1, 8},     [29] = {256, 56},  [30] = {1, 2},     [34] = {256, 54},
        [35] = {256, 66},  [39] = {32, 17},
    };
    if (type >= sizeof t / sizeof t[0] || !t[type][0]) return 0;
    *per = t[type][0];
    *size = t[type][1];
    return 1;
}

typedef struct {
    uint64_t bytes_per_token; /* what one decode step reads */
    uint64_t weight_bytes;    /* all tensors */
    uint64_t lookup_bytes;    /* of that, the lookup tables (read one row each) */
    int tied_output;          /* no output.weight: token_embd.weight read in full too */
    uint64_t n_tensors;
} bw_model_bytes;

static inline int bw_read(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

static inline int bw_skip_string(FILE *f) {
    uint64_t n;
    return bw_read(f, &n, 8) && n < (1ull << 40) && fseeko(f, (off_t)n, SEEK_CUR) == 0;
}

/* Skips one metadata value of GGUF type t. */
static inline int bw_skip_value(FILE *f, uint32_t t, int depth) {
    static const uint8_t sizes[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t == 8) return bw_skip_string(f);
    if (t == 9) {
        uint32_t et;
        uint64_t n;
        if (depth > 4 || !bw_read(f, &et, 4) || !bw_read(f, &n, 8) || et > 12) return 0;
        if (et != 8 && et != 9) return fseeko(f, (off_t)(n * sizes[et]), SEEK_CUR) == 0;
        for (uint64_t i = 0; i < n; i++)
            if (!bw_skip_value(f, et, depth + 1)) return 0;
        return 1;
    }
    if (t > 12) return 0;
    return fseeko(f, sizes[t], SEEK_CUR) == 0;
}

static inline int bw_is_lookup(const char *name) {
    const char *suffix = "token_embd.weight", *pos = "position_embd.weight";
    size_t n = strlen(name), ns = strlen(suffix);
    return (n >= ns && !strcmp(name + n - ns, suffix)) || !strcmp(name, pos);
}

/* Reads the tensor table of a GGUF file; returns 0 and writes a message to
 * err on failure. */
static inline int bw_model_read(const char *path, bw_model_bytes *out, char *err, size_t err_size) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, err_size, "cannot open %s", path); return 0; }
    char magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    int ok = bw_read(f, magic, 4) && !memcmp(magic, "GGUF", 4) && bw_read(f, &version, 4) && version >= 2 &&
             bw_read(f, &n_tensors, 8) && bw_read(f, &n_kv, 8);
    for (uint64_t i = 0; ok && i < n_kv; i++) {
        uint32_t t;
        ok = bw_skip_string(f) && bw_read(f, &t, 4) && bw_skip_value(f, t, 0);
    }
    uint64_t embd_bytes = 0, embd_row = 0;
    int has_output = 0;
    for (uint64_t i = 0; ok && i < n_tensors; i++) {
        uint64_t len, dims[8], per, size, n = 1;
        uint32_t nd, type;
        char name[256];
        ok = bw_read(f, &len, 8) && len < sizeof name && bw_read(f, name, len) && bw_read(f, &nd, 4) && nd >= 1 &&
             nd <= 8 && bw_read(f, dims, 8 * (size_t)nd) && bw_read(f, &type, 4) && fseeko(f, 8, SEEK_CUR) == 0;
        if (!ok) break;
        name[len] = 0;
        if (!bw_type_block(type, &per, &size)) {
            snprintf(err, err_size, "%s: tensor %s has a ggml type (%u) this tool does not know", path, name, type);
            fclose(f);
            return 0;
        }
        for (uint32_t d = 0; d < nd; d++) n *= dims[d];
        const uint64_t bytes = n / per * size, row = dims[0] / per * size;
        out->weight_bytes += bytes;
        out->n_tensors++;
        if (!strcmp(name, "output.weight")) has_output = 1;
        if (bw_is_lookup(name)) {
            out->lookup_bytes += bytes;
            out->bytes_per_token += row;
            if (!strcmp(name, "token_embd.weight")) embd_bytes = bytes, embd_row = row;
        } else {
            out->bytes_per_token += bytes;
        }
    }
    fclose(f);
    if (!ok) { snprintf(err, err_size, "%s: not a GGUF file this tool can read (v2/v3)", path); return 0; }
    if (!has_output && embd_bytes) {
        out->tied_output = 1;
        out->bytes_per_token += embd_bytes - embd_row; /* the whole matrix, the looked-up row among it */
    }
    return 1;
}

/* ---- read bandwidth ---------------------------------------------------------- */

typedef uint64_t bw_vec __attribute__((vector_size(32)));

typedef struct {
    const bw_vec *p;
    size_t n; /* vectors */
    pthread_barrier_t *go, *done;
    int rounds;
    volatile uint64_t sink;
} bw_job;

/* Sums every 8-byte word of the slice: a streaming read the compiler keeps in
 * vector registers, four independent sums to hide the latency of the adds. */
static inline uint64_t bw_sum(const bw_vec *p, size_t n) {
    bw_vec a = {0}, b = {0}, c = {0}, d = {0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a += p[i];
        b += p[i + 1];
        c += p[i + 2];
        d += p[i + 3];
    }
    for (; i < n; i++) a += p[i];
    a += b + c + d;
    return a[0] + a[1] + a[2] + a[3];
}

static inline void *bw_worker(void *arg) {
    bw_job *j = (bw_job *)arg;
    for (int r = 0; r < j->rounds; r++) {
        pthread_barrier_wait(j->go);
        j->sink += bw_sum(j->p, j->n);
        pthread_barrier_wait(j->done);
    }
    return NULL;
}

static inline double bw_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bw_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The last-level cache's size in bytes (0 where the system does not say). */
static inline uint64_t bw_llc_bytes(void) {
    uint64_t best = 0;
    for (int i = 0; i < 8; i++) {
        char path[96], buf[64];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (fgets(buf, sizeof buf, f)) {
            char *end;
            uint64_t v = strtoull(buf, &end, 10);
            if (*end == 'K') v <<= 10;
            else if (*end == 'M') v <<= 20;
            if (v > best) best = v;
        }
        fclose(f);
    }
    return best;
}

/* The default buffer: four times the last-level cache, at least 1 GiB. */
static inline uint64_t bw_default_bytes(void) {
    const uint64_t llc4 = 4 * bw_llc_bytes(), gib = 1ull << 30;
    return llc4 > gib ? llc4 : gib;
}

typedef struct {
    void *buf;
    uint64_t bytes;
    int threads;
} bw_probe;

/* Allocates and touches the buffer (each thread's pages by that thread). */
static inline int bw_probe_init(bw_probe *pr, int threads, uint64_t bytes) {
    if (threads < 1) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    bytes = bytes / ((uint64_t)threads * 128) * ((uint64_t)threads * 128);
    if (!bytes || posix_memalign(&pr->buf, 4096, bytes)) return 0;
    memset(pr->buf, 1, bytes);
    pr->bytes = bytes;
    pr->threads = threads;
    return 1;
}

static inline void bw_probe_free(bw_probe *pr) { free(pr->buf); }

/* Runs `rounds` sweeps of the whole buffer by pr->threads threads (each its
 * own contiguous slice); writes each sweep's GB/s (1e9 bytes/s) to gbs[] and
 * returns the median (0 on failure). */
static inline double bw_probe_run(bw_probe *pr, int rounds, double *gbs) {
    const int T = pr->threads;
    bw_job *jobs = (bw_job *)calloc((size_t)T, sizeof *jobs);
    pthread_t *tids = (pthread_t *)calloc((size_t)T, sizeof *tids);
    pthread_barrier_t go, done;
    pthread_barrier_init(&go, NULL, (unsigned)T + 1);
    pthread_barrier_init(&done, NULL, (unsigned)T + 1);
    const size_t per = pr->bytes / (uint64_t)T / sizeof(bw_vec);
    int started = 0;
    for (int t = 0; t < T; t++) {
        jobs[t] = (bw_job){(const bw_vec *)pr->buf + (size_t)t * per, per, &go, &done, rounds, 0};
        if (pthread_create(&tids[t], NULL, bw_worker, &jobs[t])) break;
        started++;
    }
    double med = 0;
    if (started == T) {
        double *tmp = (double *)malloc(sizeof(double) * (size_t)rounds);
        for (int r = 0; r < rounds; r++) {
            pthread_barrier_wait(&go);
            const double t0 = bw_now();
            pthread_barrier_wait(&done);
            gbs[r] = tmp[r] = (double)pr->bytes / (bw_now() - t0) / 1e9;
        }
        qsort(tmp, (size_t)rounds, sizeof *tmp, bw_cmp);
        med = rounds % 2 ? tmp[rounds / 2] : 0.5 * (tmp[rounds / 2 - 1] + tmp[rounds / 2]);
        free(tmp);
        for (int t = 0; t < T; t++) pthread_join(tids[t], NULL);
    } else {
        fprintf(stderr, "bandwidth probe: cannot start %d threads\n", T);
        exit(1);
    }
    pthread_barrier_destroy(&go);
    pthread_barrier_destroy(&done);
    free(jobs);
    free(tids);
    return med;
}

#endif
