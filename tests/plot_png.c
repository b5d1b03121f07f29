/* kvfit-plot end to end: it turns CSV files of known shape into PNG charts
 * whose pixels show that shape, and fails cleanly on bad input.
 *   plot_png PATH/TO/kvfit-plot */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#include "stb_image.h"

static const char *plot_bin;
static char dir[256];

/* The first two colours of kvfit-plot's palette. */
static const uint8_t blue[3] = {31, 119, 180}, red[3] = {214, 39, 40};

static const char *path_in_dir(const char *name) {
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *name, const char *text) {
    FILE *f = fopen(path_in_dir(name), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int run(const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' %s >/dev/null 2>&1", plot_bin, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

typedef struct {
    unsigned char *px;
    int w, h;
} image;

static image load(const char *name) {
    image im = {0};
    int channels = 0;
    im.px = stbi_load(path_in_dir(name), &im.w, &im.h, &channels, 3);
    assert_non_null(im.px);
    return im;
}

static int is_color(const image *im, int x, int y, const uint8_t c[3]) {
    const unsigned char *p = im->px + 3 * ((size_t)y * (size_t)im->w + (size_t)x);
    return p[0] == c[0] && p[1] == c[1] && p[2] == c[2];
}

/* The image row holding the most pixels of colour c within rows [y0, y1), and that count. */
static int busiest_row(const image *im, const uint8_t c[3], int y0, int y1, int *count) {
    int best = -1;
    *count = 0;
    for (int y = y0; y < y1; y++) {
        int n = 0;
        for (int x = 0; x < im->w; x++) n += is_color(im, x, y, c);
        if (n > *count) *count = n, best = y;
    }
    return best;
}

/* Mean row of colour c's pixels in columns [x0, x1), or -1 if none. */
static double mean_row(const image *im, const uint8_t c[3], int x0, int x1) {
    double sum = 0;
    long n = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = x0; x < x1; x++)
            if (is_color(im, x, y, c)) sum += y, n++;
    return n ? sum / (double)n : -1;
}

static void memory_chart_shows_flat_lines(void **state) {
    (void)state;
    char csv[8192] = "# kvfit-stream: made up\ntokens,elapsed_s,tok_per_s,rss_mib,kv_mib\n";
    for (int i = 1; i <= 40; i++) {
        char row[128];
        snprintf(row, sizeof row, "%d,%d.0,100.0,150.00,8.000\n", i * 256, i);
        strcat(csv, row);
    }
    write_file("stream.csv", csv);
    char args[1024];
    snprintf(args, sizeof args, "memory -o '%s' --width 800 --height 600 '%s'", path_in_dir("memory.png"),
             path_in_dir("stream.csv"));
    assert_int_equal(run(args), 0);
    image im = load("memory.png");
    assert_int_equal(im.w, 800);
    assert_int_equal(im.h, 600);
    assert_true(im.px[0] == 255 && im.px[1] == 255 && im.px[2] == 255);
    /* Two panels, each with one flat line: in each half, one row carries a
     * line across most of the plot's width. */
    int count = 0;
    int top = busiest_row(&im, blue, 0, im.h / 2, &count);
    assert_true(top > 0);
    assert_true(count > im.w / 2);
    int bottom = busiest_row(&im, blue, im.h / 2, im.h, &count);
    assert_true(bottom > im.h / 2);
    assert_true(count > im.w / 2);
    stbi_image_free(im.px);
}

static void ppl_chart_shows_each_file_and_the_trend(void **state) {
    (void)state;
    /* Rising perplexity in one file, falling in the other. */
    char up[4096] = "chunk,first_token,last_token,nll_mean,ppl\n", down[4096];
    strcpy(down, up);
    for (int i = 0; i < 20; i++) {
        char row[128];
        snprintf(row, sizeof row, "%d,%d,%d,1.0,%d\n", i, i * 512, i * 512 + 511, 10 + 4 * i);
        strcat(up, row);
        snprintf(row, sizeof row, "%d,%d,%d,1.0,%d\n", i, i * 512, i * 512 + 511, 90 - 4 * i);
        strcat(down, row);
    }
    strcat(up, "# total: whatever\n");
    write_file("up.csv", up);
    write_file("down.csv", down);
    char args[1024];
    snprintf(args, sizeof args, "ppl -o '%s' 'rising=%s' '%s'", path_in_dir("ppl.png"), path_in_dir("up.csv"),
             path_in_dir("down.csv"));
    assert_int_equal(run(args), 0);
    image im = load("ppl.png");
    /* Rising is high (a small row) on the right, falling on the left. The
     * data spans about 85% of the plot (x from 110 to width - 30 pixels);
     * 10-25% and 65-80% of it stay clear of the legend in its right corner. */
    int plot_w = im.w - 30 - 110;
    int left0 = 110 + plot_w / 10, left1 = 110 + plot_w / 4, right0 = 110 + plot_w * 65 / 100,
        right1 = 110 + plot_w * 80 / 100;
    double up_left = mean_row(&im, blue, left0, left1), up_right = mean_row(&im, blue, right0, right1);
    double down_left = mean_row(&im, red, left0, left1), down_right = mean_row(&im, red, right0, right1);
    assert_true(up_left > 0 && up_right > 0 && down_left > 0 && down_right > 0);
    assert_true(up_right < up_left - 50);
    assert_true(down_left < down_right - 50);
    stbi_image_free(im.px);
}

static void bad_input_fails_without_a_png(void **state) {
    (void)state;
    write_file("no_ppl.csv", "tokens,rss_mib\n1,2\n");
    write_file("empty.csv", "# nothing but comments\n");
    char args[1024];
    snprintf(args, sizeof args, "ppl -o '%s' '%s'", path_in_dir("bad.png"), path_in_dir("no_ppl.csv"));
    assert_int_equal(run(args), 1);
    snprintf(args, sizeof args, "memory -o '%s' '%s'", path_in_dir("bad.png"), path_in_dir("empty.csv"));
    assert_int_equal(run(args), 1);
    snprintf(args, sizeof args, "memory -o '%s' '%s'", path_in_dir("bad.png"), path_in_dir("absent.csv"));
    assert_int_equal(run(args), 1);
    assert_int_equal(access(path_in_dir("bad.png"), F_OK), -1);
    assert_int_equal(run("pie chart.csv"), 2);
    assert_int_equal(run("memory"), 2);
    assert_int_equal(run("memory --width 10 x.csv"), 2);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: plot_png PATH/TO/kvfit-plot\n");
        return 2;
    }
    plot_bin = argv[1];
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kvfit-plot-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memory_chart_shows_flat_lines),
        cmocka_unit_test(ppl_chart_shows_each_file_and_the_trend),
        cmocka_unit_test(bad_input_fails_without_a_png),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return failed;
}
