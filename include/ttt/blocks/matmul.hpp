#pragma once
/// \file blocks/matmul.hpp
/// C = alpha A B (or C += alpha A B) for Eigen operands, the library's large products: float
/// operands that are strided matrices with unit inner stride (Matrix, Map, Ref, their blocks, and
/// transposes of them) go to kernels::gemm, which runs Eigen's GEMM compiled for the CPU's
/// instruction set where the program has it (kernels/gemm.hpp: a portable build's products at
/// AVX2 or AVX-512 width); everything else (double, expressions, tiny products) is Eigen's own
/// product here.
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
}  // namespace detail

template <class DC, class DA, class DB>
void matmul(DC&& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate = false,
            typename DA::Scalar alpha = 1) {
  using CT = std::remove_cvref_t<DC>;
  if constexpr (detail::strided_float<CT> && CT::IsRowMajor && detail::strided_float<DA> &&
                detail::strided_float<DB>) {
    const DA& a = A.derived();
    const DB& b = B.derived();
    const Eigen::Index m = a.rows(), n = b.cols(), k = a.cols();
    if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<CT>, CT>)
      if (!accumulate && (C.rows() != m || C.cols() != n)) C.resize(m, n);
    if (b.rows() == k && C.rows() == m && C.cols() == n && m + n + k >= detail::kGemmMinDims &&
        a.innerStride() == 1 && b.innerStride() == 1 && C.innerStride() == 1) {
      if (m == 0 || n == 0) return;
      // a column-major operand is the transpose of the row-major matrix its memory holds
      kernels::gemm(backend::cpu_default{}, !DA::IsRowMajor, !DB::IsRowMajor, m, n, k, a.data(), a.outerStride(),
                    b.data(), b.outerStride(), C.data(), C.outerStride(), accumulate, alpha);
      return;
    }
  }
  if (alpha == typename DA::Scalar(1)) {
    if (accumulate) C.noalias() += A * B;
    else C.noalias() = A * B;
  } else {
    if (accumulate) C.noalias() += alpha * (A * B);
    else C.noalias() = alpha * (A * B);
  }
}

}  // namespace ttt::blocks
