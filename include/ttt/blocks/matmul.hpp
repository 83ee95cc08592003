#pragma once
/// \file blocks/matmul.hpp
/// C = alpha A B (or C += alpha A B) for Eigen operands, the library's large products: float
/// operands that are strided matrices with unit inner stride (Matrix, Map, Ref, their blocks, and
/// transposes of them) go to the active SIMD table's GEMM, Eigen's compiled for the CPU's
/// instruction set, where the program has one (kernels/gemm.hpp: a portable build's products at
/// AVX2 or AVX-512 width); everything else (double, expressions, tiny products, a program without
/// ttt::simd_dispatch, the build's own table) is Eigen's product as written here, its plain twin.
///
/// \code
///   blocks::matmul(y, x, W.transpose());               // y = x W^T
///   blocks::matmul(g.W, dy.transpose(), x, true);      // g.W += dy^T x
///   blocks::matmul(Y, A, G, true, -1.0f);              // Y -= A G
/// \endcode
/// As with `noalias()`, C must not overlap A or B. Without `accumulate` a resizable C (a Matrix) is
/// resized to A.rows() x B.cols(); a view must have that shape already.
#include <cstddef>
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/gemm.hpp"

namespace ttt::blocks {

namespace detail {
/// Whether D is a float matrix stored with strides (its data() and outerStride() describe it).
template <class D>
inline constexpr bool strided_float =
    std::is_same_v<typename D::Scalar, float> && bool(Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit);
/// Eigen's own threshold (EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) under which a product runs its
/// coefficients directly rather than GEMM.
inline constexpr Eigen::Index kGemmMinDims = 20;

/// C (+)= alpha A B through the active table's GEMM when the operands allow it and the program
/// has one; false: the caller runs Eigen's product itself.
template <class DC, class DA, class DB>
bool dispatch_matmul(DC& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate,
                     float alpha) {
  using CT = std::remove_cvref_t<DC>;
  if constexpr (strided_float<CT> && CT::IsRowMajor && strided_float<DA> && strided_float<DB>) {
    const kernels::GemmFn gemm = kernels::dispatched_gemm();
    if (!gemm) return false;
    const DA& a = A.derived();
    const DB& b = B.derived();
    const Eigen::Index m = a.rows(), n = b.cols(), k = a.cols();
    if (b.rows() != k || m + n + k < kGemmMinDims || a.innerStride() != 1 || b.innerStride() != 1) return false;
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<CT>, CT>)
      if (!accumulate && (C.rows() != m || C.cols() != n)) C.resize(m, n);
    if (C.rows() != m || C.cols() != n || C.innerStride() != 1) return false;
    if (m > 0 && n > 0)  // a column-major operand is the transpose of the row-major matrix its memory holds
      gemm(!DA::IsRowMajor, !DB::IsRowMajor, m, n, k, a.data(), a.outerStride(), b.data(), b.outerStride(), C.data(),
           C.outerStride(), accumulate, alpha, Eigen::nbThreads());
    return true;
  } else {
    return false;
  }
}
}  // namespace detail

/// C = A B, or C += A B (accumulate).
template <class DC, class DA, class DB>
void matmul(DC&& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate = false) {
  if (detail::dispatch_matmul(C, A, B, accumulate, 1.0f)) return;
  if (accumulate) C.noalias() += A * B;
  else C.noalias() = A * B;
}

/// C = alpha A B, or C += alpha A B (accumulate; alpha = -1: C -= A B).
template <class DC, class DA, class DB>
void matmul(DC&& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate,
            typename DA::Scalar alpha) {
  if (detail::dispatch_matmul(C, A, B, accumulate, float(alpha))) return;
  if (accumulate) C.noalias() += alpha * (A * B);
  else C.noalias() = alpha * (A * B);
}

}  // namespace ttt::blocks
