/* Helpers shared by the tests: where the real test material lives, honest
 * skips, and SHA-256 to identify model files. */
#ifndef KVFIT_TESTUTIL_H
#define KVFIT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Path of a file under the shared test data folder ($KVFIT_TEST_DATA or the
 * default beside the checkout), or NULL if it does not exist. Static buffer. */
const char *test_data_path(const char *relative);

/* Path of the default model fetched by `make models` ($KVFIT_MODEL or
 * models/SmolLM2-135M-Instruct.Q4_1.gguf), or NULL if absent. Static buffer. */
const char *test_default_model(void);

/* Path of another model `make models` fetches (models/<file>), or NULL if
 * absent. Static buffer. */
const char *test_models_file(const char *file);

/* Path of a tiny random-weight model that ctest's tiny_models fixture writes
 * ($KVFIT_TINY_DIR, else the build tree's tests/tiny), e.g. "tiny-qwen2.gguf";
 * NULL if absent. Static buffer. */
const char *test_tiny_model(const char *file);

/* Path of a file in the repository's tests/data folder. Static buffer. */
const char *test_repo_data(const char *relative);

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on failure. */
char *test_read_file(const char *path, size_t *size);

/* Skips, reported to ctest. Every test has SKIP_RETURN_CODE 77: a program
 * exiting with it is listed as skipped, not passed.
 *
 * A program that cannot run at all (no device, no model for any of its
 * cases) calls test_skip_all before running its groups. A case that cannot
 * run calls test_skip instead of CMocka's skip(), so that the count of
 * skipped cases is known; test_run then exits 77 when no case ran. Both
 * print "skipped: <reason>". */
#define TEST_EXIT_SKIPPED 77

#if defined(__GNUC__)
#define TEST_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define TEST_NORETURN __attribute__((noreturn))
#else
#define TEST_PRINTF_LIKE(f, a)
#define TEST_NORETURN
#endif

TEST_NORETURN void test_skip_all(const char *fmt, ...) TEST_PRINTF_LIKE(1, 2);

/* For programs whose every case needs a model: test_skip_all when neither
 * models/stories260K.gguf (test data) nor the default model is there. */
void test_skip_all_without_models(void);

/* For programs that test the Vulkan backend: turns the validation layer on
 * (unless KVFIT_VULKAN_VALIDATION is set already) and test_skip_all when no
 * Vulkan device is listed (lavapipe counts). */
void test_skip_all_without_vulkan(void);

/* The index of the largest of n logits (the first of equal ones): a greedy token. */
int32_t test_argmax(const float *logits, size_t n);

/* Prints the reason and counts the skip; test_skip also leaves the case. */
void test_note_skip(const char *fmt, ...) TEST_PRINTF_LIKE(1, 2);
#define test_skip(...)                  \
    do {                                \
        test_note_skip(__VA_ARGS__);    \
        skip();                         \
    } while (0)

/* Runs a CMocka group (an array of CMUnitTest) and returns main's exit code:
 * 1 if a case failed (or a group setup or teardown did), 77 if every case of
 * every group run so far was skipped, else 0. */
#define test_run(tests, setup, teardown) \
    test_group_done(cmocka_run_group_tests(tests, setup, teardown), sizeof(tests) / sizeof((tests)[0]))
int test_group_done(int n_failed, size_t n_cases);

/* SHA-256 (FIPS 180-4). */
typedef struct {
    uint32_t h[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t used;
} test_sha256_ctx;
void test_sha256_init(test_sha256_ctx *c);
void test_sha256_update(test_sha256_ctx *c, const void *data, size_t n);
void test_sha256_final(test_sha256_ctx *c, uint8_t digest[32]);
/* The digest of n bytes as 64 lowercase hex digits and a NUL. */
void test_sha256_hex(const void *data, size_t n, char hex[65]);
/* The digest of a file's contents in hex; 0 on success, -1 if it cannot be read. */
int test_sha256_file(const char *path, char hex[65]);

#ifdef __cplusplus
}
#endif

#endif
