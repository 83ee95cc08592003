#pragma once
/// \file blocks/rms_norm.hpp
/// RMSNorm, row by row: y = w * x / sqrt(mean(x^2) + eps), and its vector-Jacobian product.
#include "../kernels/simd.hpp"
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

/// dx += d/dx and dw += d/dw of <dy, rms_norm(x, w)>. Float rows in memory through
/// kernels::rms_norm_bwd_rows (the instruction set chosen at run time); otherwise row by row
/// through Eigen's expressions, its plain twin (tests/kernels/test_norms.cpp).
template <class X, class W, class DY, class DX, class DW>
void rms_norm_bwd(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, double eps,
                  const Eigen::MatrixBase<DY>& dy, const Eigen::MatrixBase<DX>& dx_, const Eigen::MatrixBase<DW>& dw_) {
  using S = typename X::Scalar;
  auto& dx = detail::inout(dx_);
  auto& dw = detail::inout(dw_);
  if constexpr (detail::kFloatRows<X> && detail::kFloatRows<W> && detail::kFloatRows<DY> && detail::kFloatRows<DX> &&
                detail::kFloatRows<DW>) {
    const auto& xd = x.derived();  // one declarator each: the types differ (C++ wants one `auto`)
    const auto& wd = w.derived();
    const auto& dyd = dy.derived();
    auto& dxd = dx.derived();
    auto& dwd = dw.derived();
    if (xd.innerStride() == 1 && wd.innerStride() == 1 && dyd.innerStride() == 1 && dxd.innerStride() == 1 &&
        dwd.innerStride() == 1 && wd.size() == x.cols() && dwd.size() == x.cols()) {
      kernels::rms_norm_bwd_rows(backend::cpu_default{}, size_t(x.rows()), size_t(x.cols()), xd.data(),
                                 xd.outerStride(), dyd.data(), dyd.outerStride(), wd.data(), eps, dxd.data(),
                                 dxd.outerStride(), dwd.data());
      return;
    }
  }
  const S D = S(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S r = S(1) / std::sqrt(x.row(t).squaredNorm() / D + S(eps));
    dw += dy.row(t).cwiseProduct(x.row(t)) * r;
    const S dot = dy.row(t).cwiseProduct(w).dot(x.row(t)) * r;  // <g, xhat>, g = dy o w
    dx.row(t) += r * (dy.row(t).cwiseProduct(w) - x.row(t) * (r * dot / D));
  }
}

}  // namespace ttt::blocks
