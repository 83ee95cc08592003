#pragma once
/// \file inner/linear.hpp
/// TTT-Linear: the inner learner is f(x) = x W1 + b1 per head (W1: [f, f], b1: [1, f]).
#include "learner.hpp"

namespace ttt::inner {

struct Linear {
  static constexpr std::string_view name = "linear";

  static std::vector<ParamSpec> param_specs(int64_t f) {
    return {{"W1", {f, f}, ParamSpec::Init::normal}, {"b1", {1, f}, ParamSpec::Init::zeros}};
  }

  static void apply(const float* theta, int64_t f, CMatRef X, MatRef Z) {
    CMapMat W(theta, f, f);
    CMapRow b(theta + f * f, f);
    Z.noalias() = X * W;
    Z.rowwise() += b;
  }

  static void accumulate_grad(const float* theta, int64_t f, CMatRef X, CMatRef dZ, const float* w, float* grad) {
    MapMat gW(grad, f, f);
    MapRow gb(grad + f * f, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      gW.noalias() += (w[r] * X.row(r)).transpose() * dZ.row(r);
      gb += w[r] * dZ.row(r);
    }
  }

  struct Workspace {
    Mat Z, G, target, A, M, WG;
  };

  /// The dual form (paper Sec. 2.5), extended to start mid-mini-batch with a carried gradient:
  ///   Zq[t] = XQ[t] (W0 - eta_t gW) + b0 - eta_t gb - sum_{s<=t} eta_t lr_s (XQ[t].XK[s] + 1) G[s]
  /// then gW += XK^T diag(lr) G, gb += lr^T G.  With gW = gb = 0 this is the reference's
  /// Z1_bar = XQ W1 - (eta * tril(XQ XK^T)) G + b1 - tril(eta) G.
  static void dual_form(const float* theta0, float* gacc, const Segment& s, MatRef Zq, Workspace& ws) {
    const int64_t n = s.XQ.rows(), f = s.XQ.cols();
    CMapMat W(theta0, f, f);
    CMapRow b(theta0 + f * f, f);
    MapMat gW(gacc, f, f);
    MapRow gb(gacc + f * f, f);
    ensure_size(ws.Z, n, f);
    ensure_size(ws.G, n, f);
    ensure_size(ws.target, n, f);
    ensure_size(ws.A, n, n);
    ensure_size(ws.WG, n, f);
    ws.Z.noalias() = s.XK * W;  // (n, f)
    ws.Z.rowwise() += b;
    ws.target = s.XV - s.XK;
    nn::ln_l2_grad(ws.Z, ws.target, s.ln_w, s.ln_b, ws.G);
    ws.A.noalias() = s.XQ * s.XK.transpose();  // (n, n)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 0; j < n; ++j) ws.A(t, j) = j <= t ? s.token_eta[t] * s.lr[j] * (ws.A(t, j) + 1.0f) : 0.0f;
    Zq.noalias() = s.XQ * W;
    Zq.rowwise() += b;
    Zq.noalias() -= ws.A * ws.G;
    if (!s.fresh) {
      ws.WG.noalias() = s.XQ * gW;
      ws.WG.rowwise() += gb;
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    // gacc += XK^T diag(lr) G
    for (int64_t t = 0; t < n; ++t) ws.G.row(t) *= s.lr[t];
    gW.noalias() += s.XK.transpose() * ws.G;
    gb += ws.G.colwise().sum();
  }

  /// Per token and head, mini-batch b: Z (2f^2), XQ W (2f^2), XQ XK^T and M G (2bf each on
  /// average over a full mini-batch: b/2 keys per query, x2 for the two products, x2 flops),
  /// gradient accumulation (2f^2), LayerNorm-L2 gradient and output LayerNorm (~20f).
  static double flops_per_token(int64_t f, int64_t b) {
    const double F = double(f);
    return 6.0 * F * F + 2.0 * double(b) * F + 20.0 * F;
  }
};

}  // namespace ttt::inner
