#pragma once
/// \file inner/linear.hpp
/// TTT-Linear: the inner learner is f(x) = x W1 + b1 per head (W1: [f, f], b1: [1, f]). Its
/// inference dual form and, below it, its training forward / reverse (`train::LearnerGrad`).
#include <algorithm>
#include <type_traits>
#include <vector>

#include "../blocks/causal.hpp"
#include "../blocks/linear.hpp"
#include "../blocks/ln_l2.hpp"
#include "../kernels/linear_dual.hpp"
#include "learner.hpp"
#include "learner_grad.hpp"

namespace ttt::inner {

struct Linear {
  static constexpr std::string_view name = "linear";
  static constexpr bool fuses_gd_step = true;  // dual_form honours Segment::gscale, writes gacc last

  static std::vector<ParamSpec> param_specs(int64_t f) {
    return {{"W1", {f, f}, ParamSpec::Init::normal}, {"b1", {1, f}, ParamSpec::Init::zeros}};
  }

  template <class S>
  static void apply(const S* theta, int64_t f, CRefT<S> X, RefT<S> Z) {
    Eigen::Map<const MatT<S>> W(theta, f, f);
    Eigen::Map<const RowT<S>> b(theta + f * f, f);
    blocks::matmul(Z, X, W);
    Z.rowwise() += b;
  }

  template <class S>
  static void accumulate_grad(const S* theta, int64_t f, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
    Eigen::Map<MatT<S>> gW(grad, f, f);
    Eigen::Map<RowT<S>> gb(grad + f * f, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      gW.noalias() += (w[r] * X.row(r)).transpose() * dZ.row(r);
      gb += w[r] * dZ.row(r);
    }
  }

  template <class S>
  struct Workspace {
    MatT<S> Z, G, A, WG;
    std::vector<S> fused;  // kernels::linear_dual's
  };

  /// The dual form (paper Sec. 2.5), extended to start mid-mini-batch with a carried gradient:
  ///   Zq[t] = XQ[t] (W0 - eta_t gW) + b0 - eta_t gb - sum_{s<=t} eta_t lr_s (XQ[t].XK[s] + 1) G[s]
  /// then gW += XK^T diag(lr) G, gb += lr^T G.  With gW = gb = 0 this is the reference's
  /// Z1_bar = XQ W1 - (eta * tril(XQ XK^T)) G + b1 - tril(eta) G.
  /// Float rows go through the fused kernel (kernels/linear_dual.hpp: the head's mini-batch in one
  /// pass, the masked half of the b x b products skipped), other scalars through the Eigen form
  /// below, which the kernel's plain twin is tested against.
  template <class S>
  static void dual_form(const S* theta0, S* gacc, const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t n = s.XQ.rows(), f = s.XQ.cols();
    if constexpr (std::is_same_v<S, float>) {
      if (kernels::linear_dual_fits(size_t(f))) {
        ws.fused.resize(kernels::linear_dual_workspace(size_t(n), size_t(f)));
        const kernels::DualSegment<float> k{.n = size_t(n),
                                            .f = size_t(f),
                                            .XQ = s.XQ.data(),
                                            .XK = s.XK.data(),
                                            .XV = s.XV.data(),
                                            .ldq = s.XQ.outerStride(),
                                            .ldk = s.XK.outerStride(),
                                            .ldv = s.XV.outerStride(),
                                            .token_eta = s.token_eta,
                                            .lr = s.lr,
                                            .ln_w = s.ln_w,
                                            .ln_b = s.ln_b,
                                            .fresh = s.fresh,
                                            .gscale = s.gscale};
        kernels::linear_dual(backend::cpu_default{}, k, theta0, gacc, Zq.data(), Zq.outerStride(), ws.fused.data());
        return;
      }
    }
    const CRefT<S> W = cv(Eigen::Map<const MatT<S>>(theta0, f, f));
    Eigen::Map<const RowT<S>> b(theta0 + f * f, f);
    RefT<S> gW = mv(Eigen::Map<MatT<S>>(gacc, f, f));
    Eigen::Map<RowT<S>> gb(gacc + f * f, f);
    ensure_size(ws.Z, n, f);
    ensure_size(ws.G, n, f);
    ensure_size(ws.A, n, n);
    ensure_size(ws.WG, n, f);
    blocks::rows_times<S>(s.XK, W, mv(ws.Z));  // (n, f); float: W read in place (blocks::rows_times)
    ws.Z.rowwise() += b;
    blocks::ln_l2_grad_diff<S>(cv(ws.Z), s.XV, s.XK, s.ln_w, s.ln_b, mv(ws.G));
    blocks::causal_scores<S>(s.XQ, s.XK, s.token_eta, s.lr, S(1), mv(ws.A));  // (n, n)
    blocks::rows_times<S>(s.XQ, W, Zq);
    Zq.rowwise() += b;
    blocks::causal_apply<S>(cv(ws.A), cv(ws.G), Zq);
    if (!s.fresh) {
      blocks::rows_times<S>(s.XQ, cv(gW), mv(ws.WG));
      ws.WG.rowwise() += gb;
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    // gacc += gscale XK^T diag(lr) G (after the last read of theta0: see fuses_gd_step)
    for (int64_t t = 0; t < n; ++t) ws.G.row(t) *= s.gscale * s.lr[t];
    blocks::xt_times<S>(s.XK, cv(ws.G), gW, /*accumulate=*/true);
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

namespace ttt::train {

// ---- TTT-Linear: f(x) = x W + b --------------------------------------------------------------
template <>
struct LearnerGrad<inner::Linear> {
  enum Slot : size_t { kZ, kT, kG, kE, kK, kdG, kdE, kdZ, kdT, kBwd };
  static constexpr bool query_base = true;  // reads Segment::query_keep / query_shift
  static constexpr bool state_grad_in_place = true;  // backward's dth0 may be dth_end's buffer

  /// Z = XK W + b, T = XV - XK, G = ln_l2_grad(Z, T) into their slots.
  template <class S>
  static void inner_grad(const S* th, int64_t f, const Segment<S>& s, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    Eigen::Map<const RowT<S>> b(th + f * f, f);
    auto Z = ws(kZ, n, f), T = ws(kT, n, f), G = ws(kG, n, f);
    blocks::matmul(Z, s.XK, W);
    Z.rowwise() += b;
    T = s.XV - s.XK;
    blocks::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
  }

  /// The queries' affine base (Segment::query_shift), and its cotangents when `o` is given.
  template <class S>
  static detail::QueryShift<S> shift(const S* th, int64_t f, const Segment<S>& s, SegmentGrad<S>* o = nullptr) {
    S* d = o ? o->d_query_shift : nullptr;
    return {th + f * f, s.query_shift, detail::offset(s.query_shift, f * f), d, detail::offset(d, f * f)};
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    inner_grad(th, f, s, ws);
    auto G = ws(kG, n, f);
    auto A = ws(kK, n, n);  // (E o K)
    blocks::causal_scores<S>(s.XQ, s.XK, s.token_eta, s.lr, S(1), A);
    detail::query_base<S>(s, s.XQ, W, shift(th, f, s), Zq);
    blocks::causal_apply<S>(A, G, Zq);
    std::copy(th, th + f * f + f, th_end);
    detail::end_state<S>(s, s.XK, G, th_end, th_end + f * f, ws(kT, n, f));
  }

  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    inner_grad(th, f, s, ws);
    auto Z = ws(kZ, n, f), T = ws(kT, n, f), G = ws(kG, n, f);
    auto E = ws(kE, n, n), K = ws(kK, n, n);
    detail::eta_matrix(s, E);
    detail::kernel<S>(s.XQ, s.XK, K);
    auto dG = ws.zero(kdG, n, f), dE = ws.zero(kdE, n, n);
    detail::dual_linear_bwd<S>(s, s.XQ, s.XK, G, E, K, W, dth_end, dth_end + f * f, dZq, dth0, dth0 + f * f, o.dXQ,
                               o.dXK, dG, dE, o, ws, kBwd, shift(th, f, s, &o));
    detail::eta_matrix_bwd<S>(s, dE, o);
    auto dZ = ws.zero(kdZ, n, f), dT = ws.zero(kdT, n, f);
    blocks::ln_l2_grad_bwd(Z, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    blocks::matmul(Eigen::Map<MatT<S>>(dth0, f, f), s.XK.transpose(), dZ, true);
    Eigen::Map<RowT<S>>(dth0 + f * f, f) += dZ.colwise().sum();
    blocks::matmul(o.dXK, dZ, W.transpose(), true);
  }
};

}  // namespace ttt::train
