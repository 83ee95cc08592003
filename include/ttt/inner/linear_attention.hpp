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
    blocks::matmul(Z, X, Eigen::Map<const MatT<S>>(theta, f, f));
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
    blocks::matmul(ws.G, s.XK, W);  // (n, f): d/dz 0.5 ||z - v||^2 at z = k W0
    ws.G -= s.XV;
    bool fresh = s.fresh;
    for (int64_t r0 = 0; r0 < n; r0 += kBlock) {
      const int64_t b = std::min(kBlock, n - r0);
      const auto Xq = s.XQ.middleRows(r0, b), Xk = s.XK.middleRows(r0, b);
      auto Z = Zq.middleRows(r0, b);
      auto G = ws.G.middleRows(r0, b);
      ensure_size(ws.A, b, b);
      blocks::matmul(ws.A, Xq, Xk.transpose());  // (b, b)
      for (int64_t t = 0; t < b; ++t)
        for (int64_t j = 0; j < b; ++j) ws.A(t, j) = j <= t ? s.token_eta[r0 + t] * s.lr[r0 + j] * ws.A(t, j) : S(0);
      blocks::matmul(Z, Xq, W);
      blocks::matmul(Z, ws.A, G, true, S(-1));
      if (!fresh) {
        ensure_size(ws.WG, b, f);
        blocks::matmul(ws.WG, Xq, gW);
        for (int64_t t = 0; t < b; ++t) Z.row(t) -= s.token_eta[r0 + t] * ws.WG.row(t);
      }
      for (int64_t t = 0; t < b; ++t) G.row(t) *= s.lr[r0 + t];  // gacc += XK^T diag(lr) G
      blocks::matmul(gW, Xk.transpose(), G, true);
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

/// The training forward and backward of linear attention's mini-batch, with the plain L2 inner loss:
///   G = XK W - XV,  Zq = query_base(XQ; W) - (E o XQ XK^T) G,  W_end = W - e XK^T diag(lr) G,
/// E(t, j) = token_eta[t] lr[j] (j <= t), e = token_eta[n-1]. The mini-batch is the whole sequence
/// (thousands of rows in training), so both run in sub-blocks of kBlock rows, as the inference dual
/// form does: O(n (kBlock f + f^2)) time and O(n f) memory instead of n x n matrices. With
/// S_c = sum_{j before block c} lr_j XK[j]^T G[j] (f x f), a block's queries read
///   Zq[t] = base[t] - token_eta[t] (XQ[t] S_c + sum_{j in c, j <= t} lr_j (XQ[t] . XK[j]) G[j]),
/// and W_end = W - e S_end. The reverse runs the blocks backwards carrying
/// R_c = e dW_end^T + sum_{t after block c} token_eta[t] dZq[t]^T XQ[t] (f x f), through which the
/// later queries and the end state reach a block's keys and values:
///   dXK[j] -= lr_j G[j] R,  dG[j] -= lr_j XK[j] R^T,  d_lr[j] -= (XK[j] R^T) . G[j].
/// Its plain twin is the derived reverse (inner/derived.hpp; tests/train/test_derived.cpp, with
/// sequences of several blocks).
template <>
struct LearnerGrad<inner::LinearAttention> {
  enum Slot : size_t { kG, kGl, kS, kR, kK, kdS, kQS, kUS, kKR, kGR, kdG, kBase };
  static constexpr bool query_base = true;  // reads Segment::query_keep / query_shift
  static constexpr bool state_grad_in_place = true;  // backward's dth0 may be dth_end's buffer
  static constexpr int64_t kBlock = inner::LinearAttention::kBlock;

  /// The queries' affine base (Segment::query_shift; no bias), and its cotangent when `o` is given.
  template <class S>
  static detail::QueryShift<S> shift(const Segment<S>& s, SegmentGrad<S>* o = nullptr) {
    return {nullptr, s.query_shift, nullptr, o ? o->d_query_shift : nullptr, nullptr};
  }

  /// G = XK W - XV, Gl = diag(lr) G, and the prefix states before each block: rows [c f, (c+1) f)
  /// of slot kS hold S_c (block c's), the last f rows S_end.
  template <class S>
  static void prefix(const S* th, int64_t f, const Segment<S>& s, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows(), blocks = (n + kBlock - 1) / kBlock;
    Eigen::Map<const MatT<S>> W(th, f, f);
    auto G = ws(kG, n, f), Gl = ws(kGl, n, f), P = ws(kS, (blocks + 1) * f, f);
    blocks::matmul(G, s.XK, W);
    G -= s.XV;
    for (Eigen::Index j = 0; j < n; ++j) Gl.row(j) = s.lr[j] * G.row(j);
    P.topRows(f).setZero();
    for (Eigen::Index c = 0; c < blocks; ++c) {
      const Eigen::Index r0 = c * kBlock, b = std::min<Eigen::Index>(kBlock, n - r0);
      P.middleRows((c + 1) * f, f) = P.middleRows(c * f, f);
      blocks::matmul(P.middleRows((c + 1) * f, f), s.XK.middleRows(r0, b).transpose(), Gl.middleRows(r0, b), true);
    }
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows(), blocks = (n + kBlock - 1) / kBlock;
    Eigen::Map<const MatT<S>> W(th, f, f);
    prefix(th, f, s, ws);
    auto G = ws(kG, n, f), P = ws(kS, (blocks + 1) * f, f);
    detail::query_base<S>(s, s.XQ, W, shift(s), Zq);
    for (Eigen::Index c = 0; c < blocks; ++c) {
      const Eigen::Index r0 = c * kBlock, b = std::min<Eigen::Index>(kBlock, n - r0);
      const auto Xq = s.XQ.middleRows(r0, b), Xk = s.XK.middleRows(r0, b);
      auto A = ws(kK, b, b), QS = ws(kQS, b, f);
      blocks::matmul(A, Xq, Xk.transpose());
      for (Eigen::Index t = 0; t < b; ++t)
        for (Eigen::Index j = 0; j < b; ++j) A(t, j) = j <= t ? s.lr[r0 + j] * A(t, j) : S(0);
      blocks::matmul(QS, Xq, P.middleRows(c * f, f));  // XQ[t] S_c + sum_{j <= t} lr_j (XQ[t] . XK[j]) G[j]
      blocks::matmul(QS, A, G.middleRows(r0, b), true);
      for (Eigen::Index t = 0; t < b; ++t) Zq.row(r0 + t) -= s.token_eta[r0 + t] * QS.row(t);
    }
    Eigen::Map<MatT<S>> We(th_end, f, f);
    We = W - s.token_eta[n - 1] * P.bottomRows(f);
  }

  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows(), blocks = (n + kBlock - 1) / kBlock;
    Eigen::Map<const MatT<S>> W(th, f, f), dWe(dth_end, f, f);
    Eigen::Map<MatT<S>> dW(dth0, f, f);
    prefix(th, f, s, ws);
    auto G = ws(kG, n, f), P = ws(kS, (blocks + 1) * f, f);
    // W_end = W - e S_end: e's cotangent and R read dW_end first (dW may be its buffer:
    // state_grad_in_place), then Zq's base and the pass-through add into dW
    const S e = s.token_eta[n - 1];
    o.d_token_eta[n - 1] -= dWe.cwiseProduct(P.bottomRows(f)).sum();
    auto dG = ws.zero(kdG, n, f), R = ws(kR, f, f);
    R = e * dWe.transpose();
    detail::query_base_bwd<S>(s, s.XQ, W, shift(s, &o), dZq, dth0, nullptr, o.dXQ, o, ws, kBase);
    if (dth0 != dth_end) dW += dWe;
    for (Eigen::Index c = blocks - 1; c >= 0; --c) {
      const Eigen::Index r0 = c * kBlock, b = std::min<Eigen::Index>(kBlock, n - r0);
      const auto Xq = s.XQ.middleRows(r0, b), Xk = s.XK.middleRows(r0, b);
      const auto U = dZq.middleRows(r0, b);
      const auto Gc = G.middleRows(r0, b);
      const auto Sc = P.middleRows(c * f, f);
      auto dGc = dG.middleRows(r0, b);
      auto dXQc = o.dXQ.middleRows(r0, b);
      auto dXKc = o.dXK.middleRows(r0, b);
      // keys of this block through the later queries and the end state (R)
      auto KR = ws(kKR, b, f), GR = ws(kGR, b, f);
      blocks::matmul(KR, Xk, R.transpose());
      blocks::matmul(GR, Gc, R);
      for (Eigen::Index j = 0; j < b; ++j) {
        const S lj = s.lr[r0 + j];
        o.d_lr[r0 + j] -= KR.row(j).dot(Gc.row(j));
        dGc.row(j) -= lj * KR.row(j);
        dXKc.row(j) -= lj * GR.row(j);
      }
      // queries of this block through the earlier blocks' state S_c
      auto QS = ws(kQS, b, f), US = ws(kUS, b, f);
      blocks::matmul(QS, Xq, Sc);
      blocks::matmul(US, U, Sc.transpose());
      for (Eigen::Index t = 0; t < b; ++t) {
        o.d_token_eta[r0 + t] -= U.row(t).dot(QS.row(t));
        dXQc.row(t) -= s.token_eta[r0 + t] * US.row(t);
      }
      // within the block: Zq -= (E o K) G, K = Xq Xk^T
      auto K = ws(kK, b, b), dS = ws(kdS, b, b);
      blocks::matmul(K, Xq, Xk.transpose());
      blocks::matmul(dS, U, Gc.transpose());
      for (Eigen::Index t = 0; t < b; ++t) {
        const S et = s.token_eta[r0 + t];
        for (Eigen::Index j = 0; j < b; ++j) {
          if (j > t) {
            dS(t, j) = K(t, j) = S(0);
            continue;
          }
          const S lj = s.lr[r0 + j], dst = -dS(t, j);  // d(E o K)(t, j)
          const S dE = dst * K(t, j);
          o.d_token_eta[r0 + t] += dE * lj;
          o.d_lr[r0 + j] += dE * et;
          K(t, j) *= et * lj;  // K now holds E o K
          dS(t, j) = dst * et * lj;  // dS now holds d(Xq Xk^T)
        }
      }
      blocks::matmul(dGc, K.transpose(), U, true, S(-1));
      blocks::matmul(dXQc, dS, Xk, true);
      blocks::matmul(dXKc, dS.transpose(), Xq, true);
      // this block's queries join R for the blocks before it
      auto Ue = ws(kUS, b, f);  // US is no longer needed
      for (Eigen::Index t = 0; t < b; ++t) Ue.row(t) = s.token_eta[r0 + t] * U.row(t);
      blocks::matmul(R, Ue.transpose(), Xq, true);
    }
    // G = XK W - XV
    blocks::matmul(o.dXK, dG, W.transpose(), true);
    blocks::matmul(dW, s.XK.transpose(), dG, true);
    o.dXV -= dG;
  }
};

}  // namespace ttt::train
