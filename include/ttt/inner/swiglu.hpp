#pragma once
/// \file inner/swiglu.hpp
/// SwiGLU fast weights (LaCT, "Test-Time Training Done Right"): f(x) = (silu(x W1) * (x W3)) W2
/// per head, no biases (W1, W3: [f, h], W2: [h, f]); the hidden width h is config.json's
/// ttt_hidden_size (default 4f, as TTT-MLP's). Trained, like every learner, on TTT's inner loss
/// (LayerNorm of f(k) against the residual target v - k). Its map is written once, generically;
/// `accumulate_grad` is a hand-written fast path for the inner gradient (tested against the
/// derived one); it has no dual form (the layer runs the primal form, inner/primal.hpp) and
/// trains through the derived path (inner/derived.hpp).
#include <cstdint>
#include <vector>

#include "../blocks/activations.hpp"
#include "learner.hpp"

namespace ttt::inner {

struct SwiGLU {
  static constexpr std::string_view name = "swiglu";

  static int64_t hidden(Dims d) { return d.hidden > 0 ? d.hidden : 4 * d.f; }

  static std::vector<ParamSpec> param_specs(Dims d) {
    const int64_t f = d.f, h = hidden(d);
    return {{"W1", {f, h}, ParamSpec::Init::normal},
            {"W3", {f, h}, ParamSpec::Init::normal},
            {"W2", {h, f}, ParamSpec::Init::normal}};
  }

  template <class S>
  static void apply(const S* theta, Dims d, CRefT<S> X, RefT<S> Z) {
    const int64_t f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta, f, h), W3(theta + f * h, f, h), W2(theta + 2 * f * h, h, f);
    MatT<S> A = X * W1;
    const MatT<S> B = X * W3;
    for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = A.data()[i] * blocks::sigmoid(A.data()[i]) * B.data()[i];
    Z.noalias() = A * W2;
  }

  /// grad += sum_r w[r] d<dZ[r], f(X[r])>/dtheta:  with a = x W1, b = x W3, s = sigmoid(a),
  /// g = silu(a) b:  dW2 += g^T dz;  dg = dz W2^T;  dW1 += x^T (dg b s (1 + a (1 - s)));  dW3 += x^T (dg silu(a)).
  template <class S>
  static void accumulate_grad(const S* theta, Dims d, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
    const int64_t f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta, f, h), W3(theta + f * h, f, h), W2(theta + 2 * f * h, h, f);
    Eigen::Map<MatT<S>> g1(grad, f, h), g3(grad + f * h, f, h), g2(grad + 2 * f * h, h, f);
    const MatT<S> A = X * W1, B = X * W3;
    MatT<S> Gt(A.rows(), h), dA(A.rows(), h), dB(A.rows(), h);
    const MatT<S> dG = dZ * W2.transpose();
    for (Eigen::Index i = 0; i < A.size(); ++i) {
      const S a = A.data()[i], b = B.data()[i], s = blocks::sigmoid(a), si = a * s;
      Gt.data()[i] = si * b;
      dA.data()[i] = dG.data()[i] * b * s * (S(1) + a * (S(1) - s));
      dB.data()[i] = dG.data()[i] * si;
    }
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      g2.noalias() += (w[r] * Gt.row(r)).transpose() * dZ.row(r);
      g1.noalias() += (w[r] * X.row(r)).transpose() * dA.row(r);
      g3.noalias() += (w[r] * X.row(r)).transpose() * dB.row(r);
    }
  }

  /// Per token and head, primal form: the key's forward and gradient (about 6fh + 6fh) and the
  /// query's forward at its own weights (6fh, plus forming them: 3fh x 2).
  static double flops_per_token(Dims d, int64_t) {
    const double fh = double(d.f) * double(hidden(d));
    return 6 * fh + 6 * fh + 6 * fh + 6 * fh;
  }
};

}  // namespace ttt::inner
