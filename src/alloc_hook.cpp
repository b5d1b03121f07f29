#include "alloc_hook.h"

#if defined(KVFIT_TEST_HOOKS)
#include <atomic>

namespace kvfit {

namespace {
std::atomic<int64_t> g_counted{0};
std::atomic<int64_t> g_fail_at{0};
}  // namespace

bool alloc_hook_refuses() {
    const int64_t n = g_counted.fetch_add(1, std::memory_order_relaxed) + 1;
    return n == g_fail_at.load(std::memory_order_relaxed);
}

namespace test_hooks {

void fail_nth_alloc(int64_t n) {
    g_fail_at.store(n, std::memory_order_relaxed);
    g_counted.store(0, std::memory_order_relaxed);
}

int64_t allocs_counted() { return g_counted.load(std::memory_order_relaxed); }

}  // namespace test_hooks
}  // namespace kvfit
#endif
