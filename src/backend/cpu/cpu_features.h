// The x86 features the CPU code's vector paths check at run time, detected
// once. KVFIT_CPU_KERNELS=scalar reports none of them, so that every op runs
// its scalar reference (every path gives the same bits; the variable lets the
// tests and a bug hunt check that end to end). False on other architectures.
#pragma once

namespace kvfit {
namespace cpu {

bool has_avx2_fma();       // AVX2 and FMA
bool has_avx2_fma_f16c();  // AVX2, FMA and F16C
bool has_avx512f();        // and AVX-512F (off with KVFIT_CPU_KERNELS=avx2 too)

}  // namespace cpu
}  // namespace kvfit
