#pragma once
/// \file blocks/eigen_out.hpp
/// Write access to an Eigen output passed as a temporary (a block, a Map, a Ref: Eigen's
/// documented idiom for functions writing through `const MatrixBase&`), resized when it is a
/// matrix of another shape. Conventions of every block: a forward function writes its output; a
/// `*_bwd` function ADDS into its gradient outputs (callers zero them), so several paths into one
/// tensor accumulate; no function allocates once its outputs have their shapes.
#include <type_traits>

#include <Eigen/Core>

namespace ttt::blocks::detail {

template <class Y>
auto& out(const Eigen::MatrixBase<Y>& y, Eigen::Index r, Eigen::Index c) {
  auto& w = const_cast<Eigen::MatrixBase<Y>&>(y);
  if (w.rows() != r || w.cols() != c) w.derived().resize(r, c);
  return w;
}
template <class Y>
auto& inout(const Eigen::MatrixBase<Y>& y) {
  return const_cast<Eigen::MatrixBase<Y>&>(y);
}

/// Whether X's rows are float rows in memory (row-major with direct access: a Matrix, Map, Ref or
/// block of one; the inner stride is checked at run time): the row kernels take them.
template <class X>
inline constexpr bool kFloatRows = std::is_same_v<typename X::Scalar, float> &&
                                   bool(X::Flags & Eigen::DirectAccessBit) && bool(X::Flags & Eigen::RowMajorBit);

}  // namespace ttt::blocks::detail
