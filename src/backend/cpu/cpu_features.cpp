#include "backend/cpu/cpu_features.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace kvfit {
namespace cpu {

namespace {
bool forced_scalar() {
    const char *force = std::getenv("KVFIT_CPU_KERNELS");
    return force && std::strcmp(force, "scalar") == 0;
}
}  // namespace

bool has_avx2_fma() {
#if defined(__x86_64__)
    static const bool ok =
        (__builtin_cpu_init(), __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) && !forced_scalar();
    return ok;
#else
    return false;
#endif
}

bool has_avx2_fma_f16c() {
#if defined(__x86_64__)
    // Not every compiler's __builtin_cpu_supports knows "f16c" (clang 14 does
    // not): CPUID leaf 1, ECX bit 29. AVX2 implies the OS saves YMM state.
    static const bool ok = has_avx2_fma() && [] {
        unsigned a, b, c, d;
        return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
    }();
    return ok;
#else
    return false;
#endif
}

bool has_avx512f() {
#if defined(__x86_64__)
    static const bool ok = has_avx2_fma_f16c() && __builtin_cpu_supports("avx512f") && [] {
        const char *force = std::getenv("KVFIT_CPU_KERNELS");
        return !(force && std::strcmp(force, "avx2") == 0);
    }();
    return ok;
#else
    return false;
#endif
}

}  // namespace cpu
}  // namespace kvfit
