// The allocation-failure test hook. Every allocation the library makes for a
// model or a session (its streams' host and device buffers, device copies of
// weights, the model file's mapping, the larger host vectors) passes through
// check_alloc() first. In a build with -DKVFIT_TEST_HOOKS=ON a test can make
// the Nth of them fail, as an exhausted allocator would, and check that every
// call reports KVFIT_E_NOMEM and releases what it had obtained. In other
// builds check_alloc() is an empty inline function and nothing is exported.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.h"

namespace kvfit {

#if defined(KVFIT_TEST_HOOKS)
// Counts one allocation; true when the armed hook makes this one fail.
bool alloc_hook_refuses();
#else
inline bool alloc_hook_refuses() { return false; }
#endif

// Throws KVFIT_E_NOMEM, as the allocator itself would, when the hook refuses
// this allocation of `bytes` for `what`.
inline void check_alloc(size_t bytes, const char *what) {
    if (alloc_hook_refuses()) fail(KVFIT_E_NOMEM, "cannot allocate %zu bytes for %s", bytes, what);
}

// v.resize(n), through the hook when it allocates (the larger host vectors).
template <typename Vector>
void resize_checked(Vector &v, size_t n, const char *what) {
    if (n > v.capacity()) check_alloc(n * sizeof(typename Vector::value_type), what);
    v.resize(n);
}

#if defined(KVFIT_TEST_HOOKS)
namespace test_hooks {
// Counting restarts at zero; the nth allocation from now fails (n >= 1), and
// every one after it succeeds again. 0 counts without failing any.
void fail_nth_alloc(int64_t n);
// Allocations counted since the last fail_nth_alloc.
int64_t allocs_counted();
}  // namespace test_hooks
#endif

}  // namespace kvfit
