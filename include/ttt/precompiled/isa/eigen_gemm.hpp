#pragma once
// Eigen's float GEMM for one instruction set (kernels/simd_table.hpp's `gemm`), included by
// eigen_gemm_<isa>.cpp after it names the namespace Eigen lives in there:
//
//   #define Eigen ttt_eigen_<isa>   // every Eigen symbol of the unit then has the ISA in its name
//   #define TTT_GEMM_NAME gemm_<isa>
//
// Eigen chooses its kernels (SSE2, AVX2 + FMA, AVX-512) from the compiler's flags, so a portable
// build's Eigen is SSE2's. Compiled again here with an instruction set's flags, its templates must
// not meet the baseline's (same names, other code: the linker would keep one copy for the whole
// program); in a namespace of their own they are other templates
// (tests/kernels/check_isa_objects.py checks that nothing else is defined). The unit includes
// nothing else of the library but kernels/gemm_maps.hpp (no library include of its own): <Eigen/Core>
// has include guards, and the library's headers would bring the baseline's Eigen in first.
// Included without TTT_GEMM_NAME (tests/headers compiles every header alone), it defines nothing.
#include <cstddef>

#include <Eigen/Core>

#include "../../kernels/gemm_maps.hpp"  // no Eigen of its own: its instances here are this Eigen's
#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(TTT_GEMM_NAME)

namespace ttt::kernels::detail {

void TTT_GEMM_NAME(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const float* a,
                   std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc,
                   bool accumulate, float alpha, int threads) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  using In = Eigen::Map<const RowMajor, Eigen::Unaligned, Stride>;
  using Out = Eigen::Map<RowMajor, Eigen::Unaligned, Stride>;
  // the caller's thread count for Eigen's own OpenMP split (this copy of Eigen has its own),
  // written only when it changes and never inside a parallel region (the heads' loops call from
  // several threads at once; Eigen runs a product serially there anyway)
#if defined(_OPENMP)
  const bool parallel = omp_in_parallel();
#else
  const bool parallel = false;
#endif
  if (!parallel && threads != Eigen::nbThreads()) Eigen::setNbThreads(threads);
  gemm_maps<In, Out, Stride>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate, alpha);
}

}  // namespace ttt::kernels::detail
#endif  // TTT_GEMM_NAME
