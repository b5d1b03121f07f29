#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
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
