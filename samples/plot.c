/* kvfit-plot: PNG line charts that show a fixed budget holding and quality
 * staying flat over a long stream.
 *
 *   kvfit-plot memory [-o memory.png] STREAM.csv...   from kvfit-stream:
 *       resident memory and KV bytes against tokens streamed, one panel each
 *   kvfit-plot ppl [-o ppl.png] PPL.csv...            from kvfit-ppl:
 *       perplexity of each chunk against tokens read
 *
 * Each file is one line in the chart, labelled by its file name or by
 * LABEL=FILE. Options: --title TEXT, --width N, --height N. The charts are
 * rasterized here (lines, ticks, a small bitmap font) and written with
 * stb_image_write. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plot_font.h"
#include "stb_image_write.h"

/* ---- Tables read from CSV ------------------------------------------------ */

#define MAX_COLUMNS 16

typedef struct {
    char *names[MAX_COLUMNS];
    size_t n_columns;
    double *values; /* n_rows x n_columns */
    size_t n_rows, cap_rows;
} table;

static void table_free(table *t) {
    for (size_t i = 0; i < t->n_columns; i++) free(t->names[i]);
    free(t->values);
    memset(t, 0, sizeof *t);
}

static int table_column(const table *t, const char *name) {
    for (size_t i = 0; i < t->n_columns; i++)
        if (!strcmp(t->names[i], name)) return (int)i;
    return -1;
}

/* Splits a CSV line in place at commas (no quoting: kvfit's tools write none). */
static size_t split_fields(char *line, char **fields, size_t max) {
    size_t n = 0;
    line[strcspn(line, "\r\n")] = 0;
    for (char *p = line; n < max;) {
        fields[n++] = p;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = 0;
        p = comma + 1;
    }
    return n;
}

/* Reads a CSV file: '#' lines are comments, the first other line names the
 * columns, and every later line with that many numbers is a row. Returns 0
 * with a message on failure. */
static int table_read(const char *path, table *t) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kvfit-plot: cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    memset(t, 0, sizeof *t);
    char line[4096];
    char *fields[MAX_COLUMNS];
    int ok = 1;
    while (ok && fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n' || line[0] == '\r') continue;
        size_t n = split_fields(line, fields, MAX_COLUMNS);
        if (!t->n_columns) {
            for (size_t i = 0; i < n; i++) t->names[i] = strdup(fields[i]);
            t->n_columns = n;
            continue;
        }
        if (n != t->n_columns) continue;
        if (t->n_rows == t->cap_rows) {
            t->cap_rows = t->cap_rows ? 2 * t->cap_rows : 256;
            double *bigger = realloc(t->values, t->cap_rows * t->n_columns * sizeof *bigger);
            if (!bigger) { ok = 0; break; }
            t->values = bigger;
        }
        double *row = t->values + t->n_rows * t->n_columns;
        int numeric = 1;
        for (size_t i = 0; i < n; i++) {
            char *end;
            row[i] = strtod(fields[i], &end);
            numeric &= end != fields[i] && *end == 0 && isfinite(row[i]);
        }
        t->n_rows += (size_t)numeric;
    }
    fclose(f);
    if (!ok) fprintf(stderr, "kvfit-plot: out of memory reading %s\n", path);
    else if (!t->n_columns) fprintf(stderr, "kvfit-plot: %s has no header line\n", path), ok = 0;
    if (!ok) table_free(t);
    return ok;
}

/* ---- Charts ---------------------------------------------------------------- */

typedef struct {
    uint8_t r, g, b;
} rgb;

static const rgb white = {255, 255, 255}, ink = {34, 34, 34}, grid = {225, 225, 225}, frame = {120, 120, 120};
static const rgb palette[] = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {255, 127, 14}, {148, 103, 189},
                              {140, 86, 75}};

#define MAX_SERIES 12

typedef struct {
    const char *label;
    rgb color;
    const double *x, *y;
    size_t n;
} series;

typedef struct {
    const char *y_label;
    series lines[MAX_SERIES];
    size_t n_lines;
} panel;

typedef struct {
    const char *title, *x_label;
    panel panels[2];
    size_t n_panels;
} chart;

typedef struct {
    uint8_t *pixels; /* width x height x 3 */
    int width, height;
} canvas;

static void put(canvas *c, int x, int y, rgb color) {
    if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
    uint8_t *p = c->pixels + 3 * ((size_t)y * (size_t)c->width + (size_t)x);
    p[0] = color.r, p[1] = color.g, p[2] = color.b;
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, rgb color) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(c, x, y, color);
}

static void stroke_rect(canvas *c, int x0, int y0, int x1, int y1, rgb color) {
    fill_rect(c, x0, y0, x1, y0, color);
    fill_rect(c, x0, y1, x1, y1, color);
    fill_rect(c, x0, y0, x0, y1, color);
    fill_rect(c, x1, y0, x1, y1, color);
}

/* A line of the given width: Bresenham's walk, stamping a square pen. */
static void draw_line(canvas *c, int x0, int y0, int x1, int y1, int width, rgb color) {
    int dx = abs(x1 - x0), dy = -abs(y1 - y0);
    int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy, lo = -(width - 1) / 2, hi = width / 2;
    for (;;) {
        fill_rect(c, x0 + lo, y0 + lo, x0 + hi, y0 + hi, color);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

/* Text at (x, y) = top-left, each font pixel drawn as scale x scale.
 * vertical: rotated a quarter turn anticlockwise, reading upwards from (x, y)
 * = bottom-left. Returns the advance in pixels. */
static int draw_text(canvas *c, int x, int y, const char *text, int scale, rgb color, int vertical) {
    int advance = 0;
    for (const char *p = text; *p; p++) {
        const font_glyph *g = font_find(*p);
        size_t rows = strlen(g->rows) / FONT_W;
        for (size_t row = 0; row < rows; row++)
            for (int col = 0; col < FONT_W; col++) {
                if (g->rows[row * FONT_W + (size_t)col] != '#') continue;
                int u = advance + col * scale, v = (int)row * scale;
                if (vertical) fill_rect(c, x + v, y - u - scale + 1, x + v + scale - 1, y - u, color);
                else fill_rect(c, x + u, y + v, x + u + scale - 1, y + v + scale - 1, color);
            }
        advance += (FONT_W + 1) * scale;
    }
    return advance;
}

static int text_width(const char *text, int scale) { return (int)strlen(text) * (FONT_W + 1) * scale - scale; }

/* Axis range [0 or the data's minimum, a round number above its maximum]
 * split by a step of 1, 2 or 5 times a power of ten into about six ticks. */
typedef struct {
    double lo, hi, step;
} axis;

static axis nice_axis(double lo, double hi) {
    if (lo > 0) lo = 0;
    if (!(hi > lo)) hi = lo + 1;
    double raw = (hi - lo) / 6, mag = pow(10, floor(log10(raw))), norm = raw / mag;
    double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
    axis a = {floor(lo / step) * step, ceil(hi / step - 1e-9) * step, step};
    if (a.hi <= a.lo) a.hi = a.lo + step;
    return a;
}

/* A tick label: thousands as k and millions as M when the step allows it,
 * else as many decimals as the step needs. */
static void format_tick(double v, double step, char *out, size_t size) {
    if (step >= 1e6 && fmod(step, 1e5) == 0) snprintf(out, size, "%gM", v / 1e6);
    else if (step >= 1e3 && fmod(step, 1e2) == 0) snprintf(out, size, "%gk", v / 1e3);
    else if (step >= 1) snprintf(out, size, "%.0f", v);
    else snprintf(out, size, "%.*f", (int)ceil(-log10(step) - 1e-9), v);
}

static void data_range(const panel *p, int use_x, double *lo, double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (size_t s = 0; s < p->n_lines; s++)
        for (size_t i = 0; i < p->lines[s].n; i++) {
            double v = use_x ? p->lines[s].x[i] : p->lines[s].y[i];
            if (v < *lo) *lo = v;
            if (v > *hi) *hi = v;
        }
    if (*lo > *hi) *lo = 0, *hi = 1;
}

enum { TEXT_SCALE = 2, LEFT = 110, RIGHT = 30, TOP = 56, BOTTOM = 84, PANEL_GAP = 36, LINE_WIDTH = 3 };

/* Maps data values into a panel's pixel rectangle. */
typedef struct {
    axis xa, ya;
    int x0, y0, x1, y1;
} frame_map;

static int map_x(const frame_map *m, double v) {
    return m->x0 + (int)lround((v - m->xa.lo) / (m->xa.hi - m->xa.lo) * (m->x1 - m->x0));
}

static int map_y(const frame_map *m, double v) {
    return m->y1 - (int)lround((v - m->ya.lo) / (m->ya.hi - m->ya.lo) * (m->y1 - m->y0));
}

/* How many data points fall inside a pixel box. */
static size_t points_inside(const panel *p, const frame_map *m, int bx0, int by0, int bx1, int by1) {
    size_t n = 0;
    for (size_t s = 0; s < p->n_lines; s++)
        for (size_t i = 0; i < p->lines[s].n; i++) {
            int x = map_x(m, p->lines[s].x[i]), y = map_y(m, p->lines[s].y[i]);
            n += x >= bx0 && x <= bx1 && y >= by0 && y <= by1;
        }
    return n;
}

static void draw_legend(canvas *c, const panel *p, const frame_map *m) {
    int glyph_h = 7 * TEXT_SCALE, row_h = glyph_h + 10, width = 0;
    for (size_t s = 0; s < p->n_lines; s++) {
        int w = text_width(p->lines[s].label, TEXT_SCALE);
        if (w > width) width = w;
    }
    int h = (int)p->n_lines * row_h + 8;
    int x1 = m->x1 - 10, x0 = x1 - width - 52;
    /* Top-right corner unless the lines pass there more than bottom-right. */
    int y0 = m->y0 + 10;
    if (points_inside(p, m, x0, y0, x1, y0 + h) > points_inside(p, m, x0, m->y1 - 10 - h, x1, m->y1 - 10))
        y0 = m->y1 - 10 - h;
    fill_rect(c, x0, y0, x1, y0 + h, white);
    stroke_rect(c, x0, y0, x1, y0 + h, frame);
    for (size_t s = 0; s < p->n_lines; s++) {
        int y = y0 + 8 + (int)s * row_h;
        draw_line(c, x0 + 8, y + glyph_h / 2, x0 + 36, y + glyph_h / 2, LINE_WIDTH, p->lines[s].color);
        draw_text(c, x0 + 44, y, p->lines[s].label, TEXT_SCALE, ink, 0);
    }
}

static void draw_panel(canvas *c, const panel *p, axis xa, int x0, int y0, int x1, int y1, int x_labels) {
    double lo, hi;
    data_range(p, 0, &lo, &hi);
    /* A tenth of headroom, so a flat line at the maximum stays off the frame. */
    frame_map m = {xa, nice_axis(lo, hi + (hi - fmin(lo, 0)) * 0.1), x0, y0, x1, y1};
    int glyph_h = 7 * TEXT_SCALE;
    char label[64];
    for (double v = m.ya.lo; v <= m.ya.hi + m.ya.step * 1e-6; v += m.ya.step) {
        int y = map_y(&m, v);
        fill_rect(c, x0, y, x1, y, grid);
        fill_rect(c, x0 - 6, y, x0, y, frame);
        format_tick(v, m.ya.step, label, sizeof label);
        draw_text(c, x0 - 10 - text_width(label, TEXT_SCALE), y - glyph_h / 2, label, TEXT_SCALE, ink, 0);
    }
    for (double v = xa.lo; v <= xa.hi + xa.step * 1e-6; v += xa.step) {
        int x = map_x(&m, v);
        fill_rect(c, x, y0, x, y1, grid);
        fill_rect(c, x, y1, x, y1 + 6, frame);
        if (!x_labels) continue;
        format_tick(v, xa.step, label, sizeof label);
        draw_text(c, x - text_width(label, TEXT_SCALE) / 2, y1 + 12, label, TEXT_SCALE, ink, 0);
    }
    stroke_rect(c, x0, y0, x1, y1, frame);
    int label_len = text_width(p->y_label, TEXT_SCALE);
    draw_text(c, 14, (y0 + y1) / 2 + label_len / 2, p->y_label, TEXT_SCALE, ink, 1);

    for (size_t s = 0; s < p->n_lines; s++) {
        const series *l = &p->lines[s];
        for (size_t i = 0; i + 1 < l->n; i++)
            draw_line(c, map_x(&m, l->x[i]), map_y(&m, l->y[i]), map_x(&m, l->x[i + 1]), map_y(&m, l->y[i + 1]),
                      LINE_WIDTH, l->color);
        /* Few points: mark each, so single samples are visible. */
        for (size_t i = 0; l->n <= 64 && i < l->n; i++) {
            int x = map_x(&m, l->x[i]), y = map_y(&m, l->y[i]);
            fill_rect(c, x - 3, y - 3, x + 3, y + 3, l->color);
        }
    }
    draw_legend(c, p, &m);
}

static canvas render(const chart *ch, int width, int height) {
    canvas c = {malloc((size_t)width * (size_t)height * 3), width, height};
    if (!c.pixels) return c;
    memset(c.pixels, 255, (size_t)width * (size_t)height * 3);
    draw_text(&c, (width - text_width(ch->title, TEXT_SCALE)) / 2, 18, ch->title, TEXT_SCALE, ink, 0);

    double lo = INFINITY, hi = -INFINITY;
    for (size_t i = 0; i < ch->n_panels; i++) {
        double plo, phi;
        data_range(&ch->panels[i], 1, &plo, &phi);
        if (plo < lo) lo = plo;
        if (phi > hi) hi = phi;
    }
    axis xa = nice_axis(lo, hi);
    int x0 = LEFT, x1 = width - RIGHT;
    int panel_h = (height - TOP - BOTTOM - PANEL_GAP * ((int)ch->n_panels - 1)) / (int)ch->n_panels;
    for (size_t i = 0; i < ch->n_panels; i++) {
        int y0 = TOP + (int)i * (panel_h + PANEL_GAP);
        draw_panel(&c, &ch->panels[i], xa, x0, y0, x1, y0 + panel_h, i + 1 == ch->n_panels);
    }
    draw_text(&c, (x0 + x1 - text_width(ch->x_label, TEXT_SCALE)) / 2, height - 34, ch->x_label, TEXT_SCALE, ink, 0);
    return c;
}

/* ---- Command line ------------------------------------------------------------ */

static const char *usage_text =
    "usage: kvfit-plot memory|ppl [-o OUT.png] [--title TEXT] [--width N] [--height N] [LABEL=]FILE.csv...\n"
    "  memory   kvfit-stream CSV: resident memory and KV MiB against tokens streamed\n"
    "  ppl      kvfit-ppl CSV: perplexity of each chunk against tokens read\n";

static int usage(const char *why) {
    if (why) fprintf(stderr, "kvfit-plot: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

/* "LABEL=FILE" or "FILE" (labelled by its name without folder and extension). */
static void split_label(const char *arg, char *label, size_t size, const char **path) {
    const char *eq = strchr(arg, '=');
    if (eq && !memchr(arg, '/', (size_t)(eq - arg))) {
        snprintf(label, size, "%.*s", (int)(eq - arg), arg);
        *path = eq + 1;
        return;
    }
    *path = arg;
    const char *base = strrchr(arg, '/') ? strrchr(arg, '/') + 1 : arg;
    const char *dot = strrchr(base, '.');
    snprintf(label, size, "%.*s", (int)(dot && dot != base ? dot - base : (long)strlen(base)), base);
}

/* Copies column `name` of t (plus `offset`) into a new array. */
static double *column(const table *t, const char *name, double offset, const char *path) {
    int col = table_column(t, name);
    if (col < 0) {
        fprintf(stderr, "kvfit-plot: %s has no '%s' column\n", path, name);
        return NULL;
    }
    double *out = malloc((t->n_rows ? t->n_rows : 1) * sizeof *out);
    for (size_t i = 0; out && i < t->n_rows; i++) out[i] = t->values[i * t->n_columns + (size_t)col] + offset;
    return out;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage(NULL);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) { fputs(usage_text, stdout); return 0; }
    int memory = !strcmp(argv[1], "memory");
    if (!memory && strcmp(argv[1], "ppl")) return usage("the first argument is memory or ppl");
    const char *out = memory ? "memory.png" : "ppl.png", *title = NULL;
    long width = 960, height = memory ? 720 : 540;
    const char *files[MAX_SERIES];
    size_t n_files = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        int takes_value = !strcmp(a, "-o") || !strcmp(a, "--title") || !strcmp(a, "--width") || !strcmp(a, "--height");
        if (takes_value && i + 1 >= argc) return usage("an option is missing its value");
        if (!strcmp(a, "-o")) out = argv[++i];
        else if (!strcmp(a, "--title")) title = argv[++i];
        else if (!strcmp(a, "--width") || !strcmp(a, "--height")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 240 || v > 8000) return usage("--width and --height take 240 to 8000 pixels");
            *(!strcmp(a, "--width") ? &width : &height) = v;
        } else if (a[0] == '-') return usage("unknown option");
        else if (n_files == MAX_SERIES) return usage("too many files");
        else files[n_files++] = a;
    }
    if (!n_files) return usage("no CSV file given");

    chart ch = {title ? title : memory ? "Memory while streaming" : "Perplexity per chunk",
                memory ? "tokens streamed" : "tokens", {{0}}, memory ? 2 : 1};
    ch.panels[0].y_label = memory ? "resident memory (MiB)" : "perplexity";
    ch.panels[1].y_label = "KV cache (MiB)";
    table tables[MAX_SERIES];
    char labels[MAX_SERIES][64];
    double *arrays[3 * MAX_SERIES] = {0};
    size_t n_arrays = 0, n_tables = 0;
    int rc = 1;
    for (size_t f = 0; f < n_files; f++) {
        const char *path;
        split_label(files[f], labels[f], sizeof labels[f], &path);
        if (!table_read(path, &tables[f])) goto out;
        n_tables++;
        const table *t = &tables[f];
        if (!t->n_rows) { fprintf(stderr, "kvfit-plot: %s has no data rows\n", path); goto out; }
        rgb color = palette[f % (sizeof palette / sizeof palette[0])];
        /* kvfit-ppl's rows cover tokens first..last: plot each at the tokens read so far. */
        double *x = memory ? column(t, "tokens", 0, path) : column(t, "last_token", 1, path);
        double *y0 = column(t, memory ? "rss_mib" : "ppl", 0, path);
        double *y1 = memory ? column(t, "kv_mib", 0, path) : NULL;
        arrays[n_arrays++] = x, arrays[n_arrays++] = y0, arrays[n_arrays++] = y1;
        if (!x || !y0 || (memory && !y1)) goto out;
        ch.panels[0].lines[f] = (series){labels[f], color, x, y0, t->n_rows};
        ch.panels[1].lines[f] = (series){labels[f], color, x, y1, t->n_rows};
    }
    ch.panels[0].n_lines = ch.panels[1].n_lines = n_files;

    canvas c = render(&ch, (int)width, (int)height);
    if (!c.pixels) { fprintf(stderr, "kvfit-plot: out of memory\n"); goto out; }
    if (!stbi_write_png(out, c.width, c.height, 3, c.pixels, c.width * 3))
        fprintf(stderr, "kvfit-plot: cannot write %s\n", out);
    else {
        printf("wrote %s (%dx%d, %zu series)\n", out, c.width, c.height, n_files);
        rc = 0;
    }
    free(c.pixels);
out:
    for (size_t i = 0; i < n_arrays; i++) free(arrays[i]);
    for (size_t i = 0; i < n_tables; i++) table_free(&tables[i]);
    return rc;
}
