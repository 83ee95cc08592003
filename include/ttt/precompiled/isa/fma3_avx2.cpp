// The kernels of kernels/simd_arch.hpp for AVX2 + FMA (kernels/simd_table.hpp's runtime dispatch).
// CMake compiles this file with -mavx2 -mfma, and nothing else in the library with them: every
// function it instantiates is a template on the instruction set (tests/kernels/check_isa_objects.py).
#include "../../kernels/simd_arch.hpp"
#include "../../kernels/simd_table.hpp"

#if !XSIMD_WITH_AVX2 || !XSIMD_WITH_FMA3_AVX2
#error "include/ttt/precompiled/isa/fma3_avx2.cpp needs -mavx2 -mfma"
#endif

namespace ttt::kernels::detail {
const SimdKernels& simd_table_fma3_avx2() {
  static const SimdKernels table = [] {  // the table with this unit's GEMM (eigen_gemm_fma3_avx2.cpp)
    SimdKernels t = simd_table<xsimd::fma3<xsimd::avx2>>;
    t.gemm = &gemm_fma3_avx2;
    return t;
  }();
  return table;
}
}  // namespace ttt::kernels::detail
