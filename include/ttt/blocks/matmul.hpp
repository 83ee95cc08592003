#pragma once
/// \file blocks/matmul.hpp
/// C = alpha A B (or C += alpha A B) for Eigen operands, the library's large products: float
/// operands that are strided matrices with unit inner stride (Matrix, Map, Ref, their blocks, and
/// transposes of them) go to the active SIMD table's GEMM, Eigen's compiled for the CPU's
/// instruction set, where the program has one (kernels/gemm.hpp: a portable build's products at
/// AVX2 or AVX-512 width); everything else (double, ad::Real, tiny products, a program without
/// ttt::simd_dispatch, the build's own table) is its plain twin, Eigen's product on row-major maps
/// (kernels/gemm_maps.hpp's gemm_maps_unscaled: alpha applied after an unscaled product).
///
/// Both take the operands as (pointer, leading dimension, transposed?): a strided operand as it
/// lies in memory, an expression (or a view with no unit stride) evaluated into a temporary first,
/// as Eigen's GEMM does with it. So a unit instantiates Eigen's product once per scalar type, not
/// once per call site's operand types: those products were most of the library's compile time
/// (docs/architecture.md, Build time).
///
/// \code
///   blocks::matmul(y, x, W.transpose());               // y = x W^T
///   blocks::matmul(g.W, dy.transpose(), x, true);      // g.W += dy^T x
///   blocks::matmul(Y, A, G, true, -1.0f);              // Y -= A G
/// \endcode
/// As with `noalias()`, C must not overlap A or B. Without `accumulate` a resizable C (a Matrix) is
/// resized to A.rows() x B.cols(); a view must have that shape already.
#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/gemm.hpp"

namespace ttt::blocks {

namespace detail {
/// Eigen's own threshold (EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) under which a product runs its
/// coefficients directly rather than GEMM.
inline constexpr Eigen::Index kGemmMinDims = 20;

/// An operand of kernels::gemm: row-major data with unit inner stride (leading dimension `ld`), or
/// with `t` the transpose of such data.
template <class S>
struct GemmOperand {
  const S* data = nullptr;
  Eigen::Index ld = 0;
  bool t = false;
};

/// `d` (rows x cols) as a GemmOperand when its memory allows one: a unit column stride (or one
/// column) is row-major data, a unit row stride (or one row) the transpose of row-major data.
template <class D>
bool strided_operand(const D& d, GemmOperand<typename D::Scalar>& o) {
  if constexpr (bool(Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit)) {
    const Eigen::Index r = d.rows(), c = d.cols();
    if (c == 1 || d.colStride() == 1) {
      o = {d.data(), r == 1 ? std::max<Eigen::Index>(c, 1) : Eigen::Index(d.rowStride()), false};
      return true;
    }
    if (r == 1 || d.rowStride() == 1) {
      o = {d.data(), c == 1 ? std::max<Eigen::Index>(r, 1) : Eigen::Index(d.colStride()), true};
      return true;
    }
  }
  return false;
}

/// Whether D's memory has a unit stride in one direction whatever its shape (a Matrix, Map, Ref,
/// their blocks and transposes): strided_operand takes it, no copy is compiled for it.
template <class D>
inline constexpr bool unit_stride = bool(Eigen::internal::traits<D>::Flags & Eigen::DirectAccessBit) &&
                                    Eigen::internal::inner_stride_at_compile_time<D>::ret == 1;

/// `d` as a GemmOperand, evaluated into `tmp` when it is an expression or has no unit stride.
template <class D>
GemmOperand<typename D::Scalar> gemm_operand(const D& d, MatT<typename D::Scalar>& tmp) {
  GemmOperand<typename D::Scalar> o;
  if constexpr (unit_stride<D>) {
    strided_operand(d, o);
  } else if (!strided_operand(d, o)) {
    tmp = d;
    o = {tmp.data(), tmp.cols(), false};
  }
  return o;
}

/// c (m x n, ldc, row-major) (+)= alpha op(a) op(b): the active table's GEMM for float where the
/// program has one and the product is not tiny, else Eigen's unscaled product on maps of S.
template <class S>
void gemm_rows(const GemmOperand<S>& a, const GemmOperand<S>& b, Eigen::Index m, Eigen::Index n, Eigen::Index k, S* c,
               Eigen::Index ldc, bool accumulate, S alpha) {
  if constexpr (std::is_same_v<S, float>) {
    if (m + n + k >= kGemmMinDims)
      if (const kernels::GemmFn gemm = kernels::dispatched_gemm()) {
        if (m > 0 && n > 0)
          gemm(a.t, b.t, m, n, k, a.data, a.ld, b.data, b.ld, c, ldc, accumulate, alpha, Eigen::nbThreads());
        return;
      }
  }
  using Stride = Eigen::OuterStride<>;
  using In = Eigen::Map<const MatT<S>, Eigen::Unaligned, Stride>;
  using Out = Eigen::Map<MatT<S>, Eigen::Unaligned, Stride>;
  kernels::detail::gemm_maps_unscaled<In, Out, Stride>(a.t, b.t, m, n, k, a.data, a.ld, b.data, b.ld, c, ldc,
                                                       accumulate, alpha);
}

/// C (+)= alpha A B with C, A and B as their memory lies (kernels::gemm's form, C^T = B^T A^T for
/// a column-major C), through temporaries where it must.
template <class DC, class DA, class DB, class S>
void matmul_strided(DC& C, const DA& A, const DB& B, bool accumulate, S alpha) {
  using CT = std::remove_cvref_t<DC>;
  const Eigen::Index m = A.rows(), n = B.cols(), k = A.cols();
  eigen_assert(B.rows() == k && "blocks::matmul: inner dimensions differ");
  if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<CT>, CT>)
    if (!accumulate && (C.rows() != m || C.cols() != n)) C.resize(m, n);
  eigen_assert(C.rows() == m && C.cols() == n && "blocks::matmul: C has the wrong shape");
  MatT<S> ta, tb;
  const GemmOperand<S> a = gemm_operand(A, ta), b = gemm_operand(B, tb);
  if constexpr (bool(Eigen::internal::traits<CT>::Flags & Eigen::DirectAccessBit)) {
    GemmOperand<S> c;
    if (strided_operand(C, c)) {  // always, for a unit_stride C
      if (!c.t) gemm_rows(a, b, m, n, k, C.data(), c.ld, accumulate, alpha);
      else gemm_rows<S>({b.data, b.ld, !b.t}, {a.data, a.ld, !a.t}, n, m, k, C.data(), c.ld, accumulate, alpha);
      return;
    }
  }
  if constexpr (!unit_stride<CT>) {
    MatT<S> tc(m, n);
    gemm_rows(a, b, m, n, k, tc.data(), n, false, alpha);
    if (accumulate) C += tc;
    else C = tc;
  }
}
}  // namespace detail

/// C = A B, or C += A B (accumulate).
template <class DC, class DA, class DB>
void matmul(DC&& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate = false) {
  using S = typename DA::Scalar;
  if constexpr (std::is_same_v<S, typename DB::Scalar> && std::is_same_v<S, typename std::remove_cvref_t<DC>::Scalar>) {
    detail::matmul_strided(C, A.derived(), B.derived(), accumulate, S(1));
  } else {
    if (accumulate) C.noalias() += A * B;
    else C.noalias() = A * B;
  }
}

/// C = alpha A B, or C += alpha A B (accumulate; alpha = -1: C -= A B).
template <class DC, class DA, class DB>
void matmul(DC&& C, const Eigen::MatrixBase<DA>& A, const Eigen::MatrixBase<DB>& B, bool accumulate,
            typename DA::Scalar alpha) {
  using S = typename DA::Scalar;
  if constexpr (std::is_same_v<S, typename DB::Scalar> && std::is_same_v<S, typename std::remove_cvref_t<DC>::Scalar>) {
    detail::matmul_strided(C, A.derived(), B.derived(), accumulate, alpha);
  } else {
    if (accumulate) C.noalias() += alpha * (A * B);
    else C.noalias() = alpha * (A * B);
  }
}

}  // namespace ttt::blocks
