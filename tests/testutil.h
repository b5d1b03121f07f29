/* Helpers shared by the tests: where the real test material lives. */
#ifndef KVFIT_TESTUTIL_H
#define KVFIT_TESTUTIL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Path of a file under the shared test data folder ($KVFIT_TEST_DATA or the
 * default beside the checkout), or NULL if it does not exist. Static buffer. */
const char *test_data_path(const char *relative);

/* Path of the default model fetched by `make models` ($KVFIT_MODEL or
 * models/SmolLM2-135M-Instruct.Q4_1.gguf), or NULL if absent. Static buffer. */
const char *test_default_model(void);

/* Path of a file in the repository's tests/data folder. Static buffer. */
const char *test_repo_data(const char *relative);

/* Reads a whole file into a malloc'd buffer (NUL-terminated); NULL on failure. */
char *test_read_file(const char *path, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
