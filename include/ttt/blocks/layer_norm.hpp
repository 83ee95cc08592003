#pragma once
/// \file blocks/layer_norm.hpp
/// LayerNorm over each row (biased variance, as torch): y = gamma (x - mean) / sqrt(var + eps) +
/// beta, and its vector-Jacobian product. Moments in two passes (no temporaries). For float and
/// double the row sums and the forward's row go through Eigen's vectorised reductions and
/// expressions, float rows' reverse through kernels::layer_norm_bwd_rows; the plain loops
/// (`*_plain`, any scalar: ad::Real takes them) are their twins (tests/kernels/test_norms.cpp).
#include <cmath>
#include <concepts>
#include <utility>

#include "../kernels/simd.hpp"
#include "eigen_out.hpp"

namespace ttt::blocks {

/// Mean and biased variance of row r: plain loops.
template <class X>
std::pair<typename X::Scalar, typename X::Scalar> row_moments_plain(const Eigen::MatrixBase<X>& x, Eigen::Index r) {
  using S = typename X::Scalar;
  const Eigen::Index d = x.cols();
  S mu = 0;
  for (Eigen::Index c = 0; c < d; ++c) mu += x(r, c);
  mu /= S(d);
  S var = 0;
  for (Eigen::Index c = 0; c < d; ++c) var += (x(r, c) - mu) * (x(r, c) - mu);
  return {mu, var / S(d)};
}

/// Mean and biased variance of row r (vectorised for float and double).
template <class X>
std::pair<typename X::Scalar, typename X::Scalar> row_moments(const Eigen::MatrixBase<X>& x, Eigen::Index r) {
  using S = typename X::Scalar;
  if constexpr (std::floating_point<S>) {
    const auto row = x.row(r).array();
    const S mu = row.sum() / S(x.cols());
    return {mu, (row - mu).square().sum() / S(x.cols())};
  } else {
    return row_moments_plain(x, r);
  }
}

/// layer_norm below in plain loops.
template <class X, class Y>
void layer_norm_plain(const Eigen::MatrixBase<X>& x, const typename X::Scalar* gamma, const typename X::Scalar* beta,
                      double eps, const Eigen::MatrixBase<Y>& y_) {
  using S = typename X::Scalar;
  const Eigen::Index d = x.cols();
  auto& y = detail::out(y_, x.rows(), d);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const auto moments = row_moments_plain(x, r);
    const S mu = moments.first, var = moments.second;
    const S inv = S(1) / std::sqrt(var + S(eps));
    for (Eigen::Index c = 0; c < d; ++c) y(r, c) = gamma[c] * ((x(r, c) - mu) * inv) + (beta ? beta[c] : S(0));
  }
}

/// y = layer_norm(x; gamma, beta).                x, y: (n, d); gamma, beta: d values (beta may be null)
template <class X, class Y>
void layer_norm(const Eigen::MatrixBase<X>& x, const typename X::Scalar* gamma, const typename X::Scalar* beta,
                double eps, const Eigen::MatrixBase<Y>& y_) {
  using S = typename X::Scalar;
  if constexpr (!std::floating_point<S>) {
    layer_norm_plain(x, gamma, beta, eps, y_);
  } else {
    const Eigen::Index d = x.cols();
    auto& y = detail::out(y_, x.rows(), d);
    using RowA = Eigen::Array<S, 1, Eigen::Dynamic>;
    const Eigen::Map<const RowA> g(gamma, d);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const auto moments = row_moments(x, r);
      const S mu = moments.first, inv = S(1) / std::sqrt(moments.second + S(eps));
      const auto scaled = g * ((x.row(r).array() - mu) * inv);
      if (beta) y.row(r).array() = scaled + Eigen::Map<const RowA>(beta, d);
      else y.row(r).array() = scaled;
    }
  }
}

/// dx += ..., dgamma += ..., dbeta += ... of <dy, layer_norm(x; gamma, beta)>; dgamma / dbeta may be
/// null. Float rows in memory through kernels::layer_norm_bwd_rows (the instruction set chosen at
/// run time); otherwise row by row through Eigen's expressions and reductions.
template <class X, class DY, class DX>
void layer_norm_bwd(const Eigen::MatrixBase<X>& x, const typename X::Scalar* gamma, double eps,
                    const Eigen::MatrixBase<DY>& dy, const Eigen::MatrixBase<DX>& dx_, typename X::Scalar* dgamma,
                    typename X::Scalar* dbeta) {
  using S = typename X::Scalar;
  using RowA = Eigen::Array<S, 1, Eigen::Dynamic>;
  auto& dx = detail::inout(dx_);
  const Eigen::Index d = x.cols();
  if constexpr (detail::kFloatRows<X> && detail::kFloatRows<DY> && detail::kFloatRows<DX>) {
    const auto& xd = x.derived();  // one declarator each: the types differ (C++ wants one `auto`)
    const auto& dyd = dy.derived();
    auto& dxd = dx.derived();
    if (xd.innerStride() == 1 && dyd.innerStride() == 1 && dxd.innerStride() == 1) {
      kernels::layer_norm_bwd_rows(backend::cpu_default{}, size_t(x.rows()), size_t(d), xd.data(), xd.outerStride(),
                                   dyd.data(), dyd.outerStride(), gamma, eps, dxd.data(), dxd.outerStride(), dgamma,
                                   dbeta);
      return;
    }
  }
  const Eigen::Map<const RowA> gm(gamma, d);
  RowA xh(d), dxh(d);  // one row's normalised input and d/d xh
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const auto moments = row_moments(x, t);
    const S inv = S(1) / std::sqrt(moments.second + S(eps));
    xh = (x.row(t).array() - moments.first) * inv;
    dxh = dy.row(t).array() * gm;
    if (dgamma) Eigen::Map<RowA>(dgamma, d) += dy.row(t).array() * xh;
    if (dbeta) Eigen::Map<RowA>(dbeta, d) += dy.row(t).array();
    const S m1 = dxh.sum() / S(d), m2 = (dxh * xh).sum() / S(d);
    dx.row(t).array() += inv * (dxh - m1 - xh * m2);
  }
}

}  // namespace ttt::blocks
