// AVX2 + FMA + F16C kernels (CMake adds -mavx2 -mfma -mf16c for *_avx2.cpp).
#include "backend/cpu/kernels_impl.h"

#if defined(__x86_64__) && defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

#define KVFIT_X86_VNNI 0
#define KVFIT_X86_NAME "avx2"
#include "backend/cpu/kernels_x86.inc"

namespace kvfit {
namespace cpu {

const KernelImpl *impl_avx2() {
    static const bool ok = has_avx2_fma_f16c();
    return ok ? &kImpl : nullptr;
}

}  // namespace cpu
}  // namespace kvfit

#else

namespace kvfit {
namespace cpu {
const KernelImpl *impl_avx2() { return nullptr; }
}  // namespace cpu
}  // namespace kvfit

#endif
