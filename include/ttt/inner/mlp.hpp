#pragma once
/// \file inner/mlp.hpp
/// TTT-MLP: f(x) = gelu_tanh(x W1 + b1) W2 + b2 per head, hidden width 4f
/// (W1: [f, 4f], b1: [1, 4f], W2: [4f, f], b2: [1, f]).
#include "learner.hpp"

namespace ttt::inner {

struct MLP {
  static constexpr std::string_view name = "mlp";
  static constexpr int64_t expansion = 4;

  static std::vector<ParamSpec> param_specs(int64_t f) {
    const int64_t h = expansion * f;
    return {{"W1", {f, h}, ParamSpec::Init::normal},
            {"b1", {1, h}, ParamSpec::Init::zeros},
            {"W2", {h, f}, ParamSpec::Init::normal},
            {"b2", {1, f}, ParamSpec::Init::zeros}};
  }

  struct View {
    CMapMat W1;
    CMapRow b1;
    CMapMat W2;
    CMapRow b2;
    View(const float* th, int64_t f)
        : W1(th, f, expansion * f),
          b1(th + expansion * f * f, expansion * f),
          W2(th + expansion * f * f + expansion * f, expansion * f, f),
          b2(th + 2 * expansion * f * f + expansion * f, f) {}
  };
  struct MutView {
    MapMat W1;
    MapRow b1;
    MapMat W2;
    MapRow b2;
    MutView(float* th, int64_t f)
        : W1(th, f, expansion * f),
          b1(th + expansion * f * f, expansion * f),
          W2(th + expansion * f * f + expansion * f, expansion * f, f),
          b2(th + 2 * expansion * f * f + expansion * f, f) {}
  };

  static void gelu(Mat& m) { kernels::gelu_tanh(backend::cpu_default{}, m.data(), m.data(), size_t(m.size())); }

  static void apply(const float* theta, int64_t f, CMatRef X, MatRef Z) {
    const View p(theta, f);
    Mat H = X * p.W1;  // (n, 4f)
    H.rowwise() += p.b1;
    gelu(H);
    Z.noalias() = H * p.W2;
    Z.rowwise() += p.b2;
  }

  static void accumulate_grad(const float* theta, int64_t f, CMatRef X, CMatRef dZ, const float* w, float* grad) {
    const View p(theta, f);
    MutView g(grad, f);
    Mat Z1 = X * p.W1;
    Z1.rowwise() += p.b1;
    Mat X2 = Z1;
    gelu(X2);
    Mat d1 = dZ * p.W2.transpose();  // (n, 4f)
    Mat gg(Z1.rows(), Z1.cols());
    kernels::gelu_tanh_grad(backend::cpu_default{}, Z1.data(), gg.data(), size_t(Z1.size()));
    d1.array() *= gg.array();
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      g.W2.noalias() += (w[r] * X2.row(r)).transpose() * dZ.row(r);
      g.b2 += w[r] * dZ.row(r);
      g.W1.noalias() += (w[r] * X.row(r)).transpose() * d1.row(r);
      g.b1 += w[r] * d1.row(r);
    }
  }

  struct Workspace {
    Mat Z1, X2, Z2, G1, G2, target, gprime, A, Z1q, X2q, WG, WG2;
  };

  /// Dual form: the linear recipe twice (see inner/linear.hpp), the second time on the hidden
  /// activations X2 = gelu(Z1) (keys) and X2q = gelu(Z1q) (queries).
  static void dual_form(const float* theta0, float* gacc, const Segment& s, MatRef Zq, Workspace& ws) {
    const int64_t n = s.XQ.rows(), f = s.XQ.cols(), h = expansion * f;
    const View p(theta0, f);
    MutView g(gacc, f);
    for (Mat* m : {&ws.Z1, &ws.X2, &ws.G1, &ws.gprime, &ws.Z1q, &ws.X2q, &ws.WG}) ensure_size(*m, n, h);
    for (Mat* m : {&ws.Z2, &ws.G2, &ws.target, &ws.WG2}) ensure_size(*m, n, f);
    ensure_size(ws.A, n, n);
    // keys: forward and the inner-loss gradients at theta0
    ws.Z1.noalias() = s.XK * p.W1;
    ws.Z1.rowwise() += p.b1;
    kernels::gelu_tanh(backend::cpu_default{}, ws.Z1.data(), ws.X2.data(), size_t(n * h));
    ws.Z2.noalias() = ws.X2 * p.W2;
    ws.Z2.rowwise() += p.b2;
    ws.target = s.XV - s.XK;
    nn::ln_l2_grad(ws.Z2, ws.target, s.ln_w, s.ln_b, ws.G2);
    kernels::gelu_tanh_grad(backend::cpu_default{}, ws.Z1.data(), ws.gprime.data(), size_t(n * h));
    ws.G1.noalias() = ws.G2 * p.W2.transpose();
    ws.G1.array() *= ws.gprime.array();
    auto mask = [&](Mat& A) {
      for (int64_t t = 0; t < n; ++t)
        for (int64_t j = 0; j < n; ++j) A(t, j) = j <= t ? s.token_eta[t] * s.lr[j] * (A(t, j) + 1.0f) : 0.0f;
    };
    // layer 1 on the queries
    ws.A.noalias() = s.XQ * s.XK.transpose();
    mask(ws.A);
    ws.Z1q.noalias() = s.XQ * p.W1;
    ws.Z1q.rowwise() += p.b1;
    ws.Z1q.noalias() -= ws.A * ws.G1;
    if (!s.fresh) {
      ws.WG.noalias() = s.XQ * g.W1;
      ws.WG.rowwise() += g.b1;
      for (int64_t t = 0; t < n; ++t) ws.Z1q.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    kernels::gelu_tanh(backend::cpu_default{}, ws.Z1q.data(), ws.X2q.data(), size_t(n * h));
    // layer 2
    ws.A.noalias() = ws.X2q * ws.X2.transpose();
    mask(ws.A);
    Zq.noalias() = ws.X2q * p.W2;
    Zq.rowwise() += p.b2;
    Zq.noalias() -= ws.A * ws.G2;
    if (!s.fresh) {
      ws.WG2.noalias() = ws.X2q * g.W2;
      ws.WG2.rowwise() += g.b2;
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG2.row(t);
    }
    // accumulate lr-weighted gradients
    for (int64_t t = 0; t < n; ++t) {
      ws.G1.row(t) *= s.lr[t];
      ws.G2.row(t) *= s.lr[t];
    }
    g.W1.noalias() += s.XK.transpose() * ws.G1;
    g.b1 += ws.G1.colwise().sum();
    g.W2.noalias() += ws.X2.transpose() * ws.G2;
    g.b2 += ws.G2.colwise().sum();
  }

  /// Per token and head, seven f x 4f products of the dual form at 8f^2 FLOPs each: Z1 and Z2 on the
  /// keys, G1 = G2 W2^T, Z1q and Zq on the queries, the gradient accumulations gW1 and gW2; plus the
  /// attention-like products (XQ XK^T and its use with G1: 2bf + 8bf on average over a full
  /// mini-batch, the second layer's the same), GELUs and LayerNorms (~60f).
  static double flops_per_token(int64_t f, int64_t b) {
    const double F = double(f), B = double(b);
    return 56.0 * F * F + 2.0 * (2.0 * B * F + 8.0 * B * F) + 60.0 * F;
  }
};

}  // namespace ttt::inner
