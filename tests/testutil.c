#include "testutil.h"

#include "kvfit.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

const char *test_data_path(const char *relative) {
    static char buf[4096];
    const char *root = getenv("KVFIT_TEST_DATA");
    if (!root || !*root) root = KVFIT_TEST_DATA_DEFAULT;
    snprintf(buf, sizeof buf, "%s/%s", root, relative);
    return file_exists(buf) ? buf : NULL;
}

const char *test_default_model(void) {
    static char buf[4096];
    const char *env = getenv("KVFIT_MODEL");
    if (env && *env) snprintf(buf, sizeof buf, "%s", env);
    else snprintf(buf, sizeof buf, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", KVFIT_MODELS_DIR);
    return file_exists(buf) ? buf : NULL;
}

const char *test_models_file(const char *file) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", KVFIT_MODELS_DIR, file);
    return file_exists(buf) ? buf : NULL;
}

const char *test_tiny_model(const char *file) {
    static char buf[4096];
    const char *env = getenv("KVFIT_TINY_DIR");
#if defined(KVFIT_TINY_DIR_DEFAULT)
    const char *dir = env && *env ? env : KVFIT_TINY_DIR_DEFAULT;
#else
    const char *dir = env && *env ? env : "tiny";
#endif
    snprintf(buf, sizeof buf, "%s/%s", dir, file);
    return file_exists(buf) ? buf : NULL;
}

const char *test_repo_data(const char *relative) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/tests/data/%s", KVFIT_SOURCE_DIR, relative);
    return buf;
}

char *test_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = (char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (size) *size = (size_t)n;
    }
    return buf;
}

/* ------------------------------------------------------------------------ skips */

static size_t g_cases, g_skipped;
static int g_failed;

static void print_reason(const char *fmt, va_list ap) {
    fputs("skipped: ", stdout);
    vprintf(fmt, ap);
    fputs("\n", stdout);
    fflush(stdout);
}

int32_t test_argmax(const float *logits, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

void test_skip_all_without_vulkan(void) {
    setenv("KVFIT_VULKAN_VALIDATION", "1", 0);
    size_t n_dev = 0;
    int vulkan = 0;
    kvfit_device_count(&n_dev);
    for (size_t i = 0; i < n_dev; i++) {
        kvfit_device_info di;
        di.struct_size = sizeof di;
        if (kvfit_device_get_info(i, &di) == KVFIT_OK && di.backend == KVFIT_BACKEND_VULKAN) vulkan = 1;
    }
    if (!vulkan) test_skip_all("no Vulkan device (or the Vulkan backend is not built)");
}

void test_skip_all(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_reason(fmt, ap);
    va_end(ap);
    exit(TEST_EXIT_SKIPPED);
}

void test_skip_all_without_models(void) {
    if (!test_data_path("models/stories260K.gguf") && !test_default_model())
        test_skip_all("no model: neither models/stories260K.gguf under $KVFIT_TEST_DATA (or ../shared/data) "
                      "nor the default model (make models, or $KVFIT_MODEL)");
}

void test_note_skip(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    print_reason(fmt, ap);
    va_end(ap);
    g_skipped++;
}

int test_group_done(int n_failed, size_t n_cases) {
    g_cases += n_cases;
    if (n_failed) g_failed = 1;
    if (g_failed) return 1; /* not the count: 77 failures would read as a skip */
    if (g_cases > 0 && g_skipped >= g_cases) {
        printf("skipped: none of the %zu cases ran\n", g_cases);
        return TEST_EXIT_SKIPPED;
    }
    return 0;
}

/* ------------------------------------------------------------------------ SHA-256 (FIPS 180-4) */

/* The first 32 bits of the fractional parts of the cube roots of the first 64 primes (section 4.2.2). */
static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* One 512-bit block (section 6.2.2). */
static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 | (uint32_t)p[4 * t + 2] << 8 | p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[t] + w[t];
        const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

void test_sha256_init(test_sha256_ctx *c) {
    /* The first 32 bits of the fractional parts of the square roots of the first 8 primes (section 5.3.3). */
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, h0, sizeof h0);
    c->n_bytes = 0;
    c->used = 0;
}

void test_sha256_update(test_sha256_ctx *c, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    c->n_bytes += n;
    while (n > 0) {
        if (c->used == 0 && n >= 64) {
            sha256_block(c->h, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t take = 64 - c->used;
        if (take > n) take = n;
        memcpy(c->block + c->used, p, take);
        c->used += take;
        p += take;
        n -= take;
        if (c->used == 64) {
            sha256_block(c->h, c->block);
            c->used = 0;
        }
    }
}

void test_sha256_final(test_sha256_ctx *c, uint8_t digest[32]) {
    /* Padding (section 5.1.1): a 1 bit, zeros up to 56 bytes mod 64, the message length in bits. */
    const uint64_t bits = c->n_bytes * 8;
    c->block[c->used++] = 0x80;
    if (c->used > 56) {
        memset(c->block + c->used, 0, 64 - c->used);
        sha256_block(c->h, c->block);
        c->used = 0;
    }
    memset(c->block + c->used, 0, 56 - c->used);
    for (int i = 0; i < 8; i++) c->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_block(c->h, c->block);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (uint8_t)(c->h[i] >> (24 - 8 * j));
}

static void to_hex(const uint8_t digest[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[digest[i] >> 4];
        hex[2 * i + 1] = digits[digest[i] & 15];
    }
    hex[64] = 0;
}

void test_sha256_hex(const void *data, size_t n, char hex[65]) {
    test_sha256_ctx c;
    uint8_t d[32];
    test_sha256_init(&c);
    test_sha256_update(&c, data, n);
    test_sha256_final(&c, d);
    to_hex(d, hex);
}

int test_sha256_file(const char *path, char hex[65]) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    test_sha256_ctx c;
    test_sha256_init(&c);
    static uint8_t buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) test_sha256_update(&c, buf, n);
    const int err = ferror(f);
    fclose(f);
    if (err) return -1;
    uint8_t d[32];
    test_sha256_final(&c, d);
    to_hex(d, hex);
    return 0;
}
