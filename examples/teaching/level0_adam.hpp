#pragma once
/// \file examples/teaching/level0_adam.hpp
/// Level 0: "Adam inside the forward pass". NOT a TTT layer; the starting point that looks like one.
///
/// The layer below runs a few Adam steps on a small linear model W inside its forward, and then
/// answers with the fitted model: forward(X, Y) = X W_K, W_K = K Adam steps on
/// 0.5/n ||X W - Y||^2 from W_init. It does learn at test time, and it is still not TTT
/// (arXiv 2407.04620, Sec. 2.1-2.3), for three reasons:
///   - its target Y comes from outside the sequence (labels handed to the layer), whereas TTT's
///     target is the sequence itself: the label view theta_V x_t of the same token;
///   - so its loss is not self-supervised: without Y it has nothing to learn from, whereas TTT's
///     reconstruction loss ||f(theta_K x_t; W) - theta_V x_t||^2 needs nothing but the input;
///   - nothing is learned about how to learn: there are no outer parameters. In TTT the views
///     theta_K, theta_V, theta_Q (and the inner learning rate) are trained in the outer loop
///     through the inner updates, so the network learns which self-supervised task makes the
///     inner steps useful for next-token prediction. Here the task is fixed by whoever hands in Y.
/// It also sees the whole batch at once (no causal order: row t's output depends on rows after
/// t), and its state does not carry from token to token, so it is no sequence layer at all.
#include <cmath>

#include "problem.hpp"

namespace teach::level0 {

/// A layer whose forward fits W to (X, Y) with `steps` Adam steps.     X: (n, d), Y: (n, f)
template <class S>
struct AdamInForward {
  Mat<S> W_init;  // (d, f)
  int steps = 5;
  S lr = S(0.1), beta1 = S(0.9), beta2 = S(0.999), eps = S(1e-8);

  /// Z = X W_steps; `loss_out` (optional) receives the external loss before and after the steps.
  Mat<S> forward(const Mat<S>& X, const Mat<S>& Y, S* loss_before = nullptr, S* loss_after = nullptr) const {
    const S n = S(X.rows());
    Mat<S> W = W_init, m = Mat<S>::Zero(W.rows(), W.cols()), v = m;
    auto loss = [&](const Mat<S>& w) { return S(0.5) * (X * w - Y).squaredNorm() / n; };
    if (loss_before) *loss_before = loss(W);
    for (int k = 1; k <= steps; ++k) {
      const Mat<S> g = X.transpose() * (X * W - Y) / n;  // d/dW 0.5/n ||X W - Y||^2   (d, f)
      m = beta1 * m + (S(1) - beta1) * g;
      v = beta2 * v + (S(1) - beta2) * g.cwiseProduct(g);
      const S c1 = S(1) - S(std::pow(double(beta1), k)), c2 = S(1) - S(std::pow(double(beta2), k));
      W.array() -= lr * (m.array() / c1) / ((v.array() / c2).sqrt() + eps);
    }
    if (loss_after) *loss_after = loss(W);
    return X * W;
  }
};

}  // namespace teach::level0
