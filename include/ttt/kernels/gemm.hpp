#pragma once
/// \file kernels/gemm.hpp
/// The large float products: C = op(A) op(B) (or C += ...) on row-major strided matrices, the
/// arguments of kernels/simd_table.hpp's `GemmFn`.
///
/// - `backend::scalar`: Eigen's GEMM as this translation unit compiles it (a portable build's is
///   SSE2's; a `-march=native` build's the CPU's).
/// - `backend::simd`: the active table's `gemm`, Eigen's GEMM compiled for AVX2 + FMA or AVX-512
///   (include/ttt/precompiled/isa/eigen_gemm.hpp) in a program that links ttt::simd_dispatch;
///   the scalar overload when the table has none (the build's own table, `TTT_SIMD=sse2`) or when
///   Eigen's products go to a BLAS (`TTT_WITH_BLAS`, which picks its kernels at run time itself).
///
/// Both are Eigen's algorithm (same blocking, same order of the sums within a kernel), with the
/// instruction set's kernels (FMA contracts a * b + c: the results differ in the last bits).
/// tests/kernels/test_gemm.cpp checks each table against a plain loop in double.
#include <cstddef>
#include <type_traits>

#include "../core/tensor.hpp"
#include "backend.hpp"
#include "gemm_maps.hpp"
#include "simd_table.hpp"

namespace ttt::kernels {

/// C (m x n, ldc) = alpha op(A) op(B), or += when `accumulate`: op(A) (m x k) is A (m x k, lda) or, `ta`,
/// the transpose of A (k x m, lda); op(B) (k x n) is B (k x n, ldb) or, `tb`, the transpose of B
/// (n x k, ldb). All row-major with unit inner stride. `threads`: Eigen's OpenMP split.
///
/// A template over the scalar (float here) so that it is compiled only where it is called: as an
/// inline function its Eigen products were compiled in every unit that includes this header (about
/// 5 s of each header-alone unit's 18, Clang's -ftime-trace).
template <class S>
void gemm(backend::scalar, bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const S* a,
          std::ptrdiff_t lda, const S* b, std::ptrdiff_t ldb, S* c, std::ptrdiff_t ldc, bool accumulate,
          std::type_identity_t<S> alpha = S(1)) {
  using Stride = Eigen::OuterStride<>;
  using In = Eigen::Map<const MatT<S>, Eigen::Unaligned, Stride>;
  using Out = Eigen::Map<MatT<S>, Eigen::Unaligned, Stride>;
  detail::gemm_maps<In, Out, Stride>(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate, alpha);
}

/// The active table's GEMM (Eigen compiled for its instruction set), or null: the build's own
/// table, a program without ttt::simd_dispatch, or Eigen's products going to a BLAS
/// (`TTT_WITH_BLAS`). blocks::matmul asks this first and otherwise runs its plain twin, Eigen's
/// product on maps (kernels/gemm_maps.hpp).
inline GemmFn dispatched_gemm() {
#if defined(TTT_WITH_BLAS)
  return nullptr;
#else
  return simd_kernels().gemm;
#endif
}

template <class S>  // S = float (a template for the reason above)
void gemm(backend::simd, bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const S* a,
          std::ptrdiff_t lda, const S* b, std::ptrdiff_t ldb, S* c, std::ptrdiff_t ldc, bool accumulate,
          std::type_identity_t<S> alpha = S(1)) {
  static_assert(std::is_same_v<S, float>, "kernels::gemm(backend::simd, ...): float operands");
  if (const GemmFn f = dispatched_gemm()) {
    f(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate, alpha, Eigen::nbThreads());
    return;
  }
  gemm(backend::scalar{}, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate, alpha);
}

}  // namespace ttt::kernels
