#pragma once
/// \file blocks/rms_norm.hpp
/// RMSNorm, row by row: y = w * x / sqrt(mean(x^2) + eps), and its vector-Jacobian product.
#include "eigen_out.hpp"

namespace ttt::blocks {

/// y = rms_norm(x, w).                                    x, y: (n, C); w: (1, C)
template <class X, class W, class Y>
void rms_norm(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, double eps, const Eigen::MatrixBase<Y>& y_) {
  using S = typename X::Scalar;
  auto& y = detail::out(y_, x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S r = S(1) / std::sqrt(x.row(t).squaredNorm() / S(x.cols()) + S(eps));
    y.row(t) = (x.row(t) * r).cwiseProduct(w);
  }
}

/// dx += d/dx and dw += d/dw of <dy, rms_norm(x, w)>.
template <class X, class W, class DY, class DX, class DW>
void rms_norm_bwd(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, double eps,
                  const Eigen::MatrixBase<DY>& dy, const Eigen::MatrixBase<DX>& dx_, const Eigen::MatrixBase<DW>& dw_) {
  using S = typename X::Scalar;
  auto& dx = detail::inout(dx_);
  auto& dw = detail::inout(dw_);
  const S D = S(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S r = S(1) / std::sqrt(x.row(t).squaredNorm() / D + S(eps));
    dw += dy.row(t).cwiseProduct(x.row(t)) * r;
    const S dot = dy.row(t).cwiseProduct(w).dot(x.row(t)) * r;  // <g, xhat>, g = dy o w
    dx.row(t) += r * (dy.row(t).cwiseProduct(w) - x.row(t) * (r * dot / D));
  }
}

}  // namespace ttt::blocks
