#pragma once
/// \file inner/swiglu.hpp
/// SwiGLU fast weights (LaCT, "Test-Time Training Done Right"): f(x) = (silu(x W1) * (x W3)) W2
/// per head, no biases (W1, W3: [f, h], W2: [h, f]); the hidden width h is config.json's
/// ttt_hidden_size (default 4f, as TTT-MLP's). Initialised N(0, 1/sqrt(fan-in)), a unit-scale map,
/// rather than TTT's N(0, 0.02): the map multiplies two such numbers, and at 0.02 its inner
/// gradients are too small for the inner steps to matter (on the copy task of
/// tests/train/test_optimizers.cpp a model so initialised stayed at 2.36 nats after 200 steps,
/// against 0.77 at std ~0.18). Trained, like every learner, on TTT's inner loss (LayerNorm of f(k)
/// against the residual target v - k). Its map is written once, generically;
/// `accumulate_grad` is a hand-written fast path for the inner gradient (tested against the
/// derived one); `dual_form` is the inference fast path under TTT's update (tested against the
/// primal form, inner/primal.hpp); it trains through the derived path (inner/derived.hpp).
#include <cstdint>
#include <vector>

#include "../blocks/activations.hpp"
#include "../blocks/ln_l2.hpp"
#include "learner.hpp"

namespace ttt::inner {

struct SwiGLU {
  static constexpr std::string_view name = "swiglu";

  static int64_t hidden(Dims d) { return d.hidden > 0 ? d.hidden : 4 * d.f; }

  static std::vector<ParamSpec> param_specs(Dims d) {
    const int64_t f = d.f, h = hidden(d);
    return {{"W1", {f, h}, ParamSpec::Init::normal_fan_in},
            {"W3", {f, h}, ParamSpec::Init::normal_fan_in},
            {"W2", {h, f}, ParamSpec::Init::normal_fan_in}};
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

  template <class S>
  struct Workspace {
    MatT<S> A, B, H, Z, G, target, dA, dB, K, Aq, Bq, Hq, WG, WG2;
  };

  /// Dual form (as TTT-MLP's, inner/mlp.hpp, with no biases and two first-layer maps): every key's
  /// gradient at theta0, then for the queries, with M = tril(eta_t lr_s XQ[t].XK[s]),
  ///   Aq = XQ W1 - M dA,  Bq = XQ W3 - M dB,  Hq = silu(Aq) * Bq,
  ///   Zq = Hq W2 - tril(eta_t lr_s Hq[t].H[s]) G
  /// (minus eta_t times the carried gradient's share when the segment starts mid-mini-batch), then
  /// gacc += (XK^T diag(lr) dA, XK^T diag(lr) dB, H^T diag(lr) G).
  template <class S>
  static void dual_form(const S* theta0, S* gacc, Dims d, const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t n = s.XQ.rows(), f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta0, f, h), W3(theta0 + f * h, f, h), W2(theta0 + 2 * f * h, h, f);
    Eigen::Map<MatT<S>> g1(gacc, f, h), g3(gacc + f * h, f, h), g2(gacc + 2 * f * h, h, f);
    for (MatT<S>* m : {&ws.A, &ws.B, &ws.H, &ws.dA, &ws.dB, &ws.Aq, &ws.Bq, &ws.Hq, &ws.WG}) ensure_size(*m, n, h);
    for (MatT<S>* m : {&ws.Z, &ws.G, &ws.target, &ws.WG2}) ensure_size(*m, n, f);
    ensure_size(ws.K, n, n);
    // keys: forward and the inner-loss gradient at theta0
    ws.A.noalias() = s.XK * W1;
    ws.B.noalias() = s.XK * W3;
    for (int64_t i = 0; i < n * h; ++i) {
      const S a = ws.A.data()[i], sg = blocks::sigmoid(a);
      ws.H.data()[i] = a * sg * ws.B.data()[i];
      ws.dB.data()[i] = a * sg;                        // silu(a), times dH below
      ws.dA.data()[i] = ws.B.data()[i] * sg * (S(1) + a * (S(1) - sg));  // b silu'(a)
    }
    ws.Z.noalias() = cv(ws.H) * W2;
    ws.target = s.XV - s.XK;
    blocks::ln_l2_grad(ws.Z, ws.target, s.ln_w, s.ln_b, ws.G);
    ws.WG.noalias() = cv(ws.G) * W2.transpose();  // dH
    ws.dA.array() *= ws.WG.array();
    ws.dB.array() *= ws.WG.array();
    auto mask = [&](MatT<S>& K) {
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < n; ++j) K(t, j) = j <= t ? s.token_eta[t] * s.lr[j] * K(t, j) : S(0);
    };
    // the queries' hidden layer
    ws.K.noalias() = s.XQ * s.XK.transpose();
    mask(ws.K);
    ws.Aq.noalias() = s.XQ * W1;
    ws.Aq.noalias() -= cv(ws.K) * cv(ws.dA);
    ws.Bq.noalias() = s.XQ * W3;
    ws.Bq.noalias() -= cv(ws.K) * cv(ws.dB);
    if (!s.fresh) {
      ws.WG.noalias() = s.XQ * g1;
      for (int64_t t = 0; t < n; ++t) ws.Aq.row(t) -= s.token_eta[t] * ws.WG.row(t);
      ws.WG.noalias() = s.XQ * g3;
      for (int64_t t = 0; t < n; ++t) ws.Bq.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    for (int64_t i = 0; i < n * h; ++i) {
      const S a = ws.Aq.data()[i];
      ws.Hq.data()[i] = a * blocks::sigmoid(a) * ws.Bq.data()[i];
    }
    // the output layer
    ws.K.noalias() = cv(ws.Hq) * cv(ws.H).transpose();
    mask(ws.K);
    Zq.noalias() = cv(ws.Hq) * W2;
    Zq.noalias() -= cv(ws.K) * cv(ws.G);
    if (!s.fresh) {
      ws.WG2.noalias() = cv(ws.Hq) * g2;
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG2.row(t);
    }
    // accumulate the lr-weighted gradients
    for (int64_t t = 0; t < n; ++t) {
      ws.dA.row(t) *= s.lr[t];
      ws.dB.row(t) *= s.lr[t];
      ws.G.row(t) *= s.lr[t];
    }
    g1.noalias() += s.XK.transpose() * cv(ws.dA);
    g3.noalias() += s.XK.transpose() * cv(ws.dB);
    g2.noalias() += cv(ws.H).transpose() * cv(ws.G);
  }

  /// Per token and head, the dual form's ten f x h products at 2fh FLOPs each (A, B, Z, dH on the
  /// keys; Aq, Bq, Zq on the queries; the three gradient accumulations), its attention-like
  /// products computed in full over a mini-batch of b (XQ XK^T and Hq H^T with the two uses of
  /// each: 4bf + 6bh), the SiLUs and LayerNorms (~20h).
  static double flops_per_token(Dims d, int64_t b) {
    const double F = double(d.f), Hd = double(hidden(d)), B = double(b);
    return 20.0 * F * Hd + 4.0 * B * F + 6.0 * B * Hd + 20.0 * Hd;
  }
};

}  // namespace ttt::inner
