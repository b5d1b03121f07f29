#include "common.h"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <vector>

namespace kvfit {

std::string strfmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string out(n > 0 ? size_t(n) : 0, '\0');
    if (n > 0) vsnprintf(&out[0], size_t(n) + 1, fmt, ap2);
    va_end(ap2);
    return out;
}

void fail(kvfit_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    throw Error(status, buf);
}

namespace {
std::mutex g_log_mutex;
kvfit_log_fn g_log_fn = nullptr;
void *g_log_user = nullptr;
std::atomic<int> g_log_min{KVFIT_LOG_INFO};
}  // namespace

void set_log_callback(kvfit_log_fn fn, kvfit_log_level min_level, void *user_data) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_log_fn = fn;
    g_log_user = user_data;
    g_log_min = min_level;
}

void log(kvfit_log_level level, const char *fmt, ...) {
    if (int(level) < g_log_min.load(std::memory_order_relaxed)) return;
    std::lock_guard<std::mutex> lock(g_log_mutex);
    if (!g_log_fn) return;
    va_list ap;
    va_start(ap, fmt);
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}

}  // namespace kvfit
