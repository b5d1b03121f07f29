/* kvfit-bandwidth: the machine's memory read bandwidth and, for a model, the
 * decode speed that bandwidth allows.
 *
 *   kvfit-bandwidth [-t threads] [-s 2GiB] [-r 7] [-m model.gguf]...
 *
 * -t threads (default: all online CPUs) each sum their own slice of one
 * buffer (-s, default four times the last-level cache and at least 1 GiB, so
 * the sweep comes from memory), -r rounds; the median GB/s (1e9 bytes/s) is
 * the bandwidth. For each -m model: the bytes of weights one decoded token
 * reads (every tensor except the embedding lookup, which reads one row; the
 * embedding in full when the output is tied to it) and the ceiling
 * bandwidth / bytes per token in tok/s. kvfit-bench --ceiling measures the
 * same in alternation with its decode runs and prints the ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bandwidth.h"
#include "cli_args.h"

int main(int argc, char **argv) {
    int threads = 0, rounds = 7, n_models = 0;
    uint64_t bytes = 0;
    const char *models[16];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: kvfit-bandwidth [-t THREADS] [-s SIZE] [-r ROUNDS] [-m MODEL.gguf]...\n");
            return 2;
        }
        if (!strcmp(a, "-t")) threads = atoi(v);
        else if (!strcmp(a, "-r")) rounds = atoi(v);
        else if (!strcmp(a, "-s")) {
            if (!parse_size(v, &bytes)) { fprintf(stderr, "kvfit-bandwidth: bad size '%s'\n", v); return 2; }
        } else if (!strcmp(a, "-m") && n_models < 16) models[n_models++] = v;
        else {
            fprintf(stderr, "kvfit-bandwidth: unknown option '%s'\n", a);
            return 2;
        }
        i++;
    }
    if (rounds < 1 || rounds > 1000 || threads < 0) { fprintf(stderr, "kvfit-bandwidth: -r must be 1..1000\n"); return 2; }

    bw_model_bytes mb[16];
    for (int m = 0; m < n_models; m++) { /* read the models first: a bad path fails before the long part */
        char err[512];
        if (!bw_model_read(models[m], &mb[m], err, sizeof err)) { fprintf(stderr, "kvfit-bandwidth: %s\n", err); return 1; }
    }
    bw_probe pr;
    if (!bw_probe_init(&pr, threads, bytes ? bytes : bw_default_bytes())) {
        fprintf(stderr, "kvfit-bandwidth: cannot allocate the buffer\n");
        return 1;
    }
    double *gbs = malloc(sizeof(double) * (size_t)rounds);
    bw_probe_run(&pr, 1, gbs); /* warm-up sweep */
    const double med = bw_probe_run(&pr, rounds, gbs);
    double lo = gbs[0], hi = gbs[0];
    for (int r = 1; r < rounds; r++) {
        if (gbs[r] < lo) lo = gbs[r];
        if (gbs[r] > hi) hi = gbs[r];
    }
    printf("read bandwidth: %d threads, %.0f MiB buffer (last-level cache %.0f MiB), median of %d rounds: "
           "%.2f GB/s (%.2f-%.2f)\n", pr.threads, pr.bytes / 1048576.0, bw_llc_bytes() / 1048576.0, rounds, med, lo, hi);
    for (int m = 0; m < n_models; m++) {
        printf("%s: %llu tensors, %.2f MB of weights; a decoded token reads %.2f MB%s; ceiling %.1f tok/s\n", models[m],
               (unsigned long long)mb[m].n_tensors, mb[m].weight_bytes / 1e6, mb[m].bytes_per_token / 1e6,
               mb[m].tied_output ? " (output tied to the embedding: read in full)" : "",
               med * 1e9 / (double)mb[m].bytes_per_token);
    }
    free(gbs);
    bw_probe_free(&pr);
    return 0;
}
