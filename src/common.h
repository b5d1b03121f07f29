// Internal helpers shared by the whole core: the error type that the C API
// firewall turns into status codes, and logging.
#pragma once

#include <cstdarg>
#include <stdexcept>
#include <string>

#include "kvfit.h"

namespace kvfit {

// Thrown inside the core; capi.cpp catches it and maps it to a kvfit_status
// plus the thread-local message. Nothing else crosses the C boundary.
class Error : public std::runtime_error {
public:
    Error(kvfit_status status, const std::string &msg) : std::runtime_error(msg), status_(status) {}
    kvfit_status status() const { return status_; }

private:
    kvfit_status status_;
};

// printf-style formatting into a std::string.
std::string strfmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

[[noreturn]] void fail(kvfit_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void set_log_callback(kvfit_log_fn fn, kvfit_log_level min_level, void *user_data);

// Logging goes to the callback set with kvfit_set_log_callback (silent if none).
void log(kvfit_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace kvfit
