#pragma once
/// \file blocks/cross_entropy.hpp
/// Cross entropy of logits against target ids, row by row, and its gradient: every language
/// model of the library (training, `ttt eval`, validation, the study, the hierarchical model) uses
/// these two functions. Per row: loss = max + log(sum exp(z - max)) - z[y]; the exponentials in
/// the logits' scalar (vectorised), the log and the sum over rows in double. A row whose target
/// equals `ignore` (default: negative) contributes nothing.
#include <cmath>
#include <cstdint>
#include <span>

#include "eigen_out.hpp"

namespace ttt::blocks {

namespace detail {
template <class Row>
double row_lse(const Row& z, typename Row::Scalar& mx, typename Row::Scalar& se) {
  mx = z.maxCoeff();
  se = (z.array() - mx).exp().sum();
  return double(mx) + std::log(double(se));
}
}  // namespace detail

/// Sum over rows of the loss. `row_loss` (optional, n values): each row's loss (0 where ignored).
template <class Z>
double cross_entropy(const Eigen::MatrixBase<Z>& logits, std::span<const int64_t> targets, double* row_loss = nullptr,
                     int64_t ignore = -1) {
  using S = typename Z::Scalar;
  double sum = 0;
  for (Eigen::Index t = 0; t < logits.rows(); ++t) {
    const int64_t y = targets[size_t(t)];
    double l = 0;
    if (y != ignore && y >= 0) {
      S mx, se;
      l = detail::row_lse(logits.row(t), mx, se) - double(logits(t, y));
    }
    if (row_loss) row_loss[t] = l;
    sum += l;
  }
  return sum;
}

/// As cross_entropy, and `z` (the logits on entry) becomes scale * d loss / d logits:
/// scale * (softmax(z) - onehot(y)) on counted rows, 0 on ignored ones.
template <class Z>
double cross_entropy_grad(const Eigen::MatrixBase<Z>& z_, std::span<const int64_t> targets, typename Z::Scalar scale,
                          int64_t ignore = -1) {
  using S = typename Z::Scalar;
  auto& z = detail::inout(z_);
  double sum = 0;
  for (Eigen::Index t = 0; t < z.rows(); ++t) {
    const int64_t y = targets[size_t(t)];
    if (y == ignore || y < 0) {
      z.row(t).setZero();
      continue;
    }
    const S mx = z.row(t).maxCoeff(), zy = z(t, y);
    z.row(t) = (z.row(t).array() - mx).exp().matrix();
    const S se = z.row(t).sum();
    sum += double(mx) + std::log(double(se)) - double(zy);
    z.row(t) *= scale / se;
    z(t, y) -= scale;
  }
  return sum;
}

/// dz += scale * d loss / d logits (softmax(z) - onehot(y) on counted rows), z unchanged.
template <class Z, class DZ>
void cross_entropy_bwd(const Eigen::MatrixBase<Z>& z, std::span<const int64_t> targets, typename Z::Scalar scale,
                       const Eigen::MatrixBase<DZ>& dz_, int64_t ignore = -1) {
  using S = typename Z::Scalar;
  auto& dz = detail::inout(dz_);
  for (Eigen::Index t = 0; t < z.rows(); ++t) {
    const int64_t y = targets[size_t(t)];
    if (y == ignore || y < 0) continue;
    const S mx = z.row(t).maxCoeff();
    const S se = (z.row(t).array() - mx).exp().sum();
    dz.row(t).array() += (z.row(t).array() - mx).exp() * (scale / se);
    dz(t, y) -= scale;
  }
}

}  // namespace ttt::blocks
