#pragma once
/// \file inner/linear_attention.hpp
/// Linear attention as the special case of TTT-Linear it is (paper Sec. 2.6, Theorem 1; the
/// first row of its Table 1): the inner model is the plain linear map g(k) = k W (no bias), the
/// inner loss has no LayerNorm and no residual, 0.5 ||k W - v||^2 (`ln_residual_loss = false`),
/// W0 = 0, and the mini-batch is the whole sequence (`mini_batch_size` >= the longest sequence),
/// so every gradient is taken at W0 (batch gradient descent). Then
///
///   grad_s = k_s^T (k_s W0 - v_s) = -k_s^T v_s,   W_t = W0 - eta_t sum_{s<=t} lr_s grad_s,
///   Zq_t = q_t W_t = eta_t sum_{s<=t} lr_s (q_t . k_s) v_s,
///
/// causal linear attention whose weights are the TTT layer's learning rates: eta_t =
/// token_eta[t] = max(1/(t+1) + learnable_token_idx[t], 0) (a running mean at init) and lr_s =
/// ttt_base_lr * sigmoid(x_s . w_lr + b_lr) / head_dim (a data-dependent gate on each key; 0.5 *
/// base_lr / head_dim when w_lr = b_lr = 0). q, k carry the layer's RoPE (positions inside the
/// mini-batch = absolute positions here). Everything else is the TTT layer unchanged: after the
/// inner loop it outputs o_proj(post_norm(XQ + LN(Zq))) per head, as for every learner.
///
/// Use: `ModelConfig c; c.ttt_layer_type = "linear_attention"; c.mini_batch_size = <max length>;`
/// then `TTTModel<inner::LinearAttention>` (W1 starts at zero; it is a parameter like TTT-Linear's
/// W0, so training may move it away from zero: a learned initial state).
///
/// The dual form runs the sequence in sub-blocks of kBlock rows (the chunked form of linear
/// attention): O(n (kBlock f + f^2)) per head rather than the O(n^2) of one n x n kernel, so a
/// whole-sequence mini-batch stays linear in the sequence length.
#include <algorithm>

#include "learner.hpp"
#include "learner_grad.hpp"

namespace ttt::inner {

struct LinearAttention {
  static constexpr std::string_view name = "linear_attention";
  /// Inner loss 0.5 ||k W - v||^2, not 0.5 ||LN(k W) + k - v||^2 (read by the generic primal form).
  static constexpr bool ln_residual_loss = false;
  static constexpr int64_t kBlock = 64;

  static std::vector<ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}, ParamSpec::Init::zeros}}; }

  template <class S>
  static void apply(const S* theta, int64_t f, CRefT<S> X, RefT<S> Z) {
    Z.noalias() = X * Eigen::Map<const MatT<S>>(theta, f, f);
  }

  /// grad += sum_r w[r] X[r]^T dZ[r]
  template <class S>
  static void accumulate_grad(const S* theta, int64_t f, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
    Eigen::Map<MatT<S>> gW(grad, f, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) gW.noalias() += (w[r] * X.row(r)).transpose() * dZ.row(r);
  }

  template <class S>
  struct Workspace {
    MatT<S> G, A, WG;
  };

  /// Zq[t] = XQ[t] (W0 - eta_t gacc_t) with gacc_t = gacc + sum_{s<=t} lr_s XK[s]^T G[s], G = XK W0 - XV;
  /// sub-block by sub-block: the earlier sub-blocks enter through gacc, the current one through
  /// its (kBlock x kBlock) lower-triangular kernel.
  template <class S>
  static void dual_form(const S* theta0, S* gacc, const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t n = s.XQ.rows(), f = s.XQ.cols();
    Eigen::Map<const MatT<S>> W(theta0, f, f);
    Eigen::Map<MatT<S>> gW(gacc, f, f);
    ensure_size(ws.G, n, f);
    ws.G.noalias() = s.XK * W;  // (n, f): d/dz 0.5 ||z - v||^2 at z = k W0
    ws.G -= s.XV;
    bool fresh = s.fresh;
    for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
      const int64_t b = std::min(kBlock, n - r0);
      const auto Xq = s.XQ.middleRows(r0, b), Xk = s.XK.middleRows(r0, b);
      auto Z = Zq.middleRows(r0, b);
      auto G = ws.G.middleRows(r0, b);
      ensure_size(ws.A, b, b);
      ws.A.noalias() = Xq * Xk.transpose();  // (b, b)
      for (int64_t t = 0; t < b; ++t)
        for (int64_t j = 0; j < b; ++j) ws.A(t, j) = j <= t ? s.token_eta[r0 + t] * s.lr[r0 + j] * ws.A(t, j) : S(0);
      Z.noalias() = Xq * W;
      Z.noalias() -= ws.A * G;
      if (!fresh) {
        ensure_size(ws.WG, b, f);
        ws.WG.noalias() = Xq * gW;
        for (int64_t t = 0; t < b; ++t) Z.row(t) -= s.token_eta[r0 + t] * ws.WG.row(t);
      }
      for (int64_t t = 0; t < b; ++t) G.row(t) *= s.lr[r0 + t];  // gacc += XK^T diag(lr) G
      gW.noalias() += Xk.transpose() * G;
      fresh = false;
    }
  }

  /// Per token and head: G (2f^2), XQ W0 (2f^2), XQ gacc (2f^2), the gacc update (2f^2), the
  /// sub-block kernel and its product (2 x 2 f x half a sub-block of keys on average).
  static double flops_per_token(int64_t f, int64_t b) {
    const double F = double(f), B = double(std::min<int64_t>(b, kBlock));
    return 8.0 * F * F + 2.0 * B * F;
  }
};

}  // namespace ttt::inner

namespace ttt::train {

/// The training backward of linear attention's mini-batch (one n x n dual form; training contexts
/// are short), with the plain L2 inner loss:
///   G = XK W - XV,  Zq = XQ W - (E o XQ XK^T) G,  W_end = W - e XK^T diag(lr) G.
template <>
struct LearnerGrad<inner::LinearAttention> {
  enum Slot : size_t { kG, kE, kK, kGl, kdG, kdE, kdS, kKd, kGd, kBase };
  static constexpr bool query_base = true;  // reads Segment::query_keep / query_shift

  /// The queries' affine base (Segment::query_shift; no bias), and its cotangent when `o` is given.
  template <class S>
  static detail::QueryShift<S> shift(const Segment<S>& s, SegmentGrad<S>* o = nullptr) {
    return {nullptr, s.query_shift, nullptr, o ? o->d_query_shift : nullptr, nullptr};
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    auto G = ws(kG, n, f), A = ws(kK, n, n);
    G.noalias() = s.XK * W;
    G -= s.XV;
    A.noalias() = s.XQ * s.XK.transpose();
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = 0; j < n; ++j) A(t, j) = j <= t ? s.token_eta[t] * s.lr[j] * A(t, j) : S(0);
    detail::query_base<S>(s, s.XQ, W, shift(s), Zq);
    Zq.noalias() -= A * G;
    auto Gl = ws(kGl, n, f);
    const S e = s.token_eta[n - 1];
    for (Eigen::Index j = 0; j < n; ++j) Gl.row(j) = G.row(j) * (e * s.lr[j]);
    Eigen::Map<MatT<S>> We(th_end, f, f);
    We = W;
    We.noalias() -= s.XK.transpose() * Gl;
  }

  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f), dWe(dth_end, f, f);
    Eigen::Map<MatT<S>> dW(dth0, f, f);
    auto G = ws(kG, n, f), E = ws(kE, n, n), K = ws(kK, n, n);
    G.noalias() = s.XK * W;
    G -= s.XV;
    detail::eta_matrix(s, E);
    K.noalias() = s.XQ * s.XK.transpose();
    // Zq = query_base(XQ; W) - (E o K) G
    detail::query_base_bwd<S>(s, s.XQ, W, shift(s, &o), dZq, dth0, nullptr, o.dXQ, o, ws, kBase);
    auto dG = ws.zero(kdG, n, f), dE = ws(kdE, n, n), dS = ws(kdS, n, n);
    dS.noalias() = -(dZq * G.transpose());  // d(E o K), lower triangle
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = 0; j < n; ++j) {
        if (j > t) dS(t, j) = S(0);
        dE(t, j) = dS(t, j) * K(t, j);
        K(t, j) *= E(t, j);  // K now holds E o K
        dS(t, j) *= E(t, j);  // dS now holds d(XQ XK^T)
      }
    dG.noalias() -= K.transpose() * dZq;
    o.dXQ.noalias() += dS * s.XK;
    o.dXK.noalias() += dS.transpose() * s.XQ;
    detail::eta_matrix_bwd<S>(s, dE, o);
    // W_end = W - e XK^T diag(lr) G
    dW += dWe;
    const S e = s.token_eta[n - 1];
    auto Kd = ws(kKd, n, f), Gd = ws(kGd, n, f);
    Kd.noalias() = s.XK * dWe;             // (n, f)
    Gd.noalias() = G * dWe.transpose();    // (n, f)
    for (Eigen::Index j = 0; j < n; ++j) {
      const S lj = s.lr[j];
      dG.row(j) -= (e * lj) * Kd.row(j);
      o.dXK.row(j) -= (e * lj) * Gd.row(j);
      const S kg = Kd.row(j).dot(G.row(j));
      o.d_lr[j] -= e * kg;
      o.d_token_eta[n - 1] -= lj * kg;
    }
    // G = XK W - XV
    o.dXK.noalias() += dG * W.transpose();
    dW.noalias() += s.XK.transpose() * dG;
    o.dXV -= dG;
  }
};

}  // namespace ttt::train
