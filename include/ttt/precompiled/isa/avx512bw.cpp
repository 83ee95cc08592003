// The kernels of kernels/simd_arch.hpp for AVX-512 F/CD/DQ/BW (kernels/simd_table.hpp's runtime
// dispatch). CMake compiles this file with -mavx512f -mavx512cd -mavx512dq -mavx512bw -mfma, and
// nothing else in the library with them: every function it instantiates is a template on the
// instruction set (tests/kernels/check_isa_objects.py).
// GCC 12 warns (-Wuninitialized) inside its own AVX-512 intrinsics, at their _mm512_undefined_*
// placeholders (as in kernels/bf16_avx512.hpp): silenced for this unit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "../../kernels/simd_arch.hpp"
#include "../../kernels/simd_table.hpp"

#if !XSIMD_WITH_AVX512BW
#error "include/ttt/precompiled/isa/avx512bw.cpp needs -mavx512f -mavx512cd -mavx512dq -mavx512bw"
#endif

namespace ttt::kernels::detail {
const SimdKernels& simd_table_avx512bw() {
  static const SimdKernels table = [] {  // the table with this unit's GEMM (eigen_gemm_avx512bw.cpp)
    SimdKernels t = simd_table<xsimd::avx512bw>;
    t.gemm = &gemm_avx512bw;
    return t;
  }();
  return table;
}
}  // namespace ttt::kernels::detail
