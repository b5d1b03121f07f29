// AVX-512 (VL, BW) + VNNI kernels: the AVX2 code with vpdpbusd for the int8
// dot products and 32 vector registers for larger tiles. CMake compiles
// *_avx512.cpp with -mavx512f -mavx512bw -mavx512vl; VNNI is enabled here.
#include "backend/cpu/kernels_impl.h"

#if defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512vnni")
#endif

#define KVFIT_X86_VNNI 1
#define KVFIT_X86_NAME "avx512"
#include "backend/cpu/kernels_x86.inc"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace kvfit {
namespace cpu {

const KernelImpl *impl_avx512() {
    static const bool ok = (__builtin_cpu_init(), true) && __builtin_cpu_supports("avx512f") &&
                           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                           __builtin_cpu_supports("avx512vnni") && has_avx2_fma_f16c();
    return ok ? &kImpl : nullptr;
}

}  // namespace cpu
}  // namespace kvfit

#else

namespace kvfit {
namespace cpu {
const KernelImpl *impl_avx512() { return nullptr; }
}  // namespace cpu
}  // namespace kvfit

#endif
