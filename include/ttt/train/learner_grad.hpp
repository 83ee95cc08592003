#pragma once
/// \file train/learner_grad.hpp
/// The per-learner part of the training backward pass: one head's mini-batch, forward and reverse,
/// generic over the scalar (float for training, double for the finite-difference checks).
///
/// ## The interface a learner's backward provides
///
/// Training needs, for each inner learner `L`, a specialisation of `ttt::train::LearnerGrad<L>`
/// with two static function templates (the built-in ones for inner::Linear and inner::MLP are
/// below; a user learner specialises the template for its own type, and `loss_and_grad` refuses to
/// compile for a learner without one):
///
/// \code
/// template <> struct ttt::train::LearnerGrad<MyLearner> {
///   // One mini-batch of one head, starting a fresh mini-batch (no carried gradient):
///   //   Zq[t]     = f_{theta_t}(XQ[t]),  theta_t = theta0 - token_eta[t] * sum_{s<=t} lr[s] grad_s
///   //   grad_s    = d/dtheta 0.5 ||ln_w * LN(f_theta0(XK[s])) + ln_b - (XV[s] - XK[s])||^2
///   //   theta_end = theta0 - token_eta[n-1] * sum_s lr[s] grad_s  (the next mini-batch's start)
///   template <class S>
///   static void forward(const S* theta0, int64_t f, const Segment<S>& s, RefT<S> Zq, S* theta_end,
///                       Scratch<S>& ws);
///   // Reverse of forward: given dZq (n, f) and dtheta_end (P; zeros after the last mini-batch),
///   // ADD the cotangents of theta0 into dtheta0 (P) and those of XQ, XK, XV, token_eta, lr,
///   // ln_w, ln_b into `out` (second-order terms included: grad_s depends on everything).
///   template <class S>
///   static void backward(const S* theta0, int64_t f, const Segment<S>& s, CRefT<S> dZq,
///                        const S* dtheta_end, S* dtheta0, SegmentGrad<S>& out, Scratch<S>& ws);
/// };
/// \endcode
///
/// theta0 is laid out as the learner's `param_specs` (row-major, spec after spec), as in the layer.
/// `ws(i, rows, cols)` hands out reusable matrices (slot i), so that a learner allocates nothing
/// once the first mini-batch has sized them. The layer-level code (projections, RoPE, the
/// learning-rate gate, the token index clamp, the output LayerNorm, chaining mini-batches in
/// reverse with the state's cotangent, checkpointing) is generic. `ops::ln_l2_grad` /
/// `ops::ln_l2_grad_bwd` give the inner loss gradient and its VJP; `detail::dual_linear_bwd` the
/// reverse of one dual-form linear map.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../inner/learner.hpp"
#include "../inner/linear.hpp"
#include "../inner/mlp.hpp"
#include "ops.hpp"

namespace ttt::train {

/// One head's mini-batch. Rows are positions 0..n-1 of the mini-batch; XQ/XK/XV may be blocks of
/// larger matrices (one head's columns).
template <class S>
struct Segment {
  CRefT<S> XQ;         ///< (n, f) queries after RoPE
  CRefT<S> XK;         ///< (n, f) keys after RoPE
  CRefT<S> XV;         ///< (n, f) values
  const S* token_eta;  ///< (n) clamp(1/(t+1) + learnable_token_idx[t], 0)
  const S* lr;         ///< (n) ttt_base_lr * sigmoid(x . w + b) / f
  const S* ln_w;       ///< (f) inner LayerNorm weight of this head
  const S* ln_b;       ///< (f) ... and bias
};

/// Cotangents of a segment's inputs; backward ADDS into them (the caller zeroes them).
template <class S>
struct SegmentGrad {
  RefT<S> dXQ, dXK, dXV;  ///< (n, f)
  S* d_token_eta;         ///< (n)
  S* d_lr;                ///< (n)
  S* d_ln_w;              ///< (f)
  S* d_ln_b;              ///< (f)
};

using SegmentD = Segment<double>;
using SegmentGradD = SegmentGrad<double>;

/// Reusable matrices for a learner's forward/backward: slot i as an (r, c) row-major matrix. A
/// slot's buffer grows when a larger shape is asked for (the first mini-batch) and is reused
/// afterwards; a view stays valid until its slot is asked for with a larger shape.
template <class S>
class Scratch {
 public:
  Eigen::Map<MatT<S>> operator()(size_t i, Eigen::Index r, Eigen::Index c) {
    if (bufs_.size() <= i) bufs_.resize(i + 1);
    auto& b = bufs_[i];
    if (b.size() < size_t(r * c)) b.resize(size_t(r * c));
    return Eigen::Map<MatT<S>>(b.data(), r, c);
  }
  /// As operator(), zero-filled.
  Eigen::Map<MatT<S>> zero(size_t i, Eigen::Index r, Eigen::Index c) {
    auto m = (*this)(i, r, c);
    m.setZero();
    return m;
  }

 private:
  std::vector<std::vector<S>> bufs_;
};

/// Specialise for each learner (see the file comment). The primary template is left undefined.
template <class L>
struct LearnerGrad;

/// A learner whose backward is known to training, in scalar S.
template <class L, class S>
concept HasLearnerGradFor = requires(const S* th, S* dth, int64_t f, const Segment<S>& s, RefT<S> Z, CRefT<S> dZ,
                                     SegmentGrad<S>& out, Scratch<S>& ws) {
  LearnerGrad<L>::forward(th, f, s, Z, dth, ws);
  LearnerGrad<L>::backward(th, f, s, dZ, th, dth, out, ws);
};
/// ... in float (training) and double (finite-difference checks).
template <class L>
concept HasLearnerGrad = HasLearnerGradFor<L, float> && HasLearnerGradFor<L, double>;

namespace detail {

/// E(t, j) = token_eta[t] * lr[j] for j <= t, 0 above the diagonal.
template <class S, class M>
void eta_matrix(const Segment<S>& s, M&& E) {
  const Eigen::Index n = E.rows();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j < n; ++j) E(t, j) = j <= t ? s.token_eta[t] * s.lr[j] : S(0);
}
/// K = Xq Xk^T + 1 (the dual form's kernel, bias included).
template <class S, class M>
void kernel(CRefT<S> Xq, CRefT<S> Xk, M&& K) {
  K.noalias() = Xq * Xk.transpose();
  K.array() += S(1);
}
/// Cotangents of E (n, n) to token_eta and lr.
template <class S>
void eta_matrix_bwd(const Segment<S>& s, CRefT<S> dE, SegmentGrad<S>& o) {
  const Eigen::Index n = dE.rows();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j <= t; ++j) {
      o.d_token_eta[t] += dE(t, j) * s.lr[j];
      o.d_lr[j] += dE(t, j) * s.token_eta[t];
    }
}

/// W_end = W - e Xk^T diag(lr) G, b_end = b - e lr^T G, e = token_eta[n-1]; We/be hold W/b on
/// entry. Gl: an (n, out) scratch.
template <class S, class M>
void end_state(const Segment<S>& s, CRefT<S> Xk, CRefT<S> G, S* We, S* be, M&& Gl) {
  const Eigen::Index n = Xk.rows(), in = Xk.cols(), out = G.cols();
  const S e = s.token_eta[n - 1];
  for (Eigen::Index j = 0; j < n; ++j) Gl.row(j) = G.row(j) * (e * s.lr[j]);
  Eigen::Map<MatT<S>>(We, in, out).noalias() -= Xk.transpose() * Gl;
  Eigen::Map<RowT<S>>(be, out) -= Gl.colwise().sum();
}

/// Reverse of one "linear layer" of the dual form,
///   Zq = Xq W + b - (E o K) G,  K = Xq Xk^T + 1,
///   W_end = W - e Xk^T diag(lr) G,  b_end = b - e lr^T G,  e = token_eta[n-1]:
/// given dZq, dW_end, db_end, ADD to dW, db, dXq, dXk, dG, dE, d_lr, d_token_eta[n-1].
/// Uses scratch slots slot .. slot+3.
template <class S>
void dual_linear_bwd(const Segment<S>& s, CRefT<S> Xq, CRefT<S> Xk, CRefT<S> G, CRefT<S> E, CRefT<S> K, CRefT<S> W,
                     const S* dWe_, const S* dbe_, CRefT<S> dZq, S* dW_, S* db_, RefT<S> dXq, RefT<S> dXk, RefT<S> dG,
                     RefT<S> dE, SegmentGrad<S>& o, Scratch<S>& ws, size_t slot) {
  const Eigen::Index n = Xq.rows(), in = W.rows(), out = W.cols();
  Eigen::Map<const MatT<S>> dWe(dWe_, in, out);
  Eigen::Map<const RowT<S>> dbe(dbe_, out);
  Eigen::Map<MatT<S>> dW(dW_, in, out);
  Eigen::Map<RowT<S>> db(db_, out);
  dW.noalias() += Xq.transpose() * dZq;
  dW += dWe;
  db += dZq.colwise().sum() + dbe;
  dXq.noalias() += dZq * W.transpose();
  auto dA = ws(slot, n, n);  // dA = -tril(dZq G^T) (negated below: -(product) would allocate a temporary)
  dA.noalias() = dZq * G.transpose();
  auto A = ws(slot + 1, n, n);
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j < n; ++j) {
      dA(t, j) = j > t ? S(0) : -dA(t, j);
      A(t, j) = E(t, j) * K(t, j);
    }
  dG.noalias() -= A.transpose() * dZq;
  dE += dA.cwiseProduct(K);
  auto dS = ws(slot + 1, n, n);  // reuses A's buffer: A is no longer needed
  dS = dA.cwiseProduct(E);
  dXq.noalias() += dS * Xk;
  dXk.noalias() += dS.transpose() * Xq;
  // end state
  const S e = s.token_eta[n - 1];
  auto Kd = ws(slot + 2, n, out);  // Xk dW_end + db_end
  Kd.noalias() = Xk * dWe;
  Kd.rowwise() += dbe;
  auto GdWt = ws(slot + 3, n, in);  // G dW_end^T
  GdWt.noalias() = G * dWe.transpose();
  for (Eigen::Index j = 0; j < n; ++j) {
    const S lj = s.lr[j];
    dG.row(j) -= (e * lj) * Kd.row(j);
    dXk.row(j) -= (e * lj) * GdWt.row(j);
    const S kg = Kd.row(j).dot(G.row(j));
    o.d_lr[j] -= e * kg;
    o.d_token_eta[n - 1] -= lj * kg;
  }
}

}  // namespace detail

// ---- TTT-Linear: f(x) = x W + b --------------------------------------------------------------
template <>
struct LearnerGrad<inner::Linear> {
  enum Slot : size_t { kZ, kT, kG, kE, kK, kdG, kdE, kdZ, kdT, kBwd };

  /// Z = XK W + b, T = XV - XK, G = ln_l2_grad(Z, T) into their slots.
  template <class S>
  static void inner_grad(const S* th, int64_t f, const Segment<S>& s, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    Eigen::Map<const RowT<S>> b(th + f * f, f);
    auto Z = ws(kZ, n, f), T = ws(kT, n, f), G = ws(kG, n, f);
    Z.noalias() = s.XK * W;
    Z.rowwise() += b;
    T = s.XV - s.XK;
    ops::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    Eigen::Map<const RowT<S>> b(th + f * f, f);
    inner_grad(th, f, s, ws);
    auto G = ws(kG, n, f);
    auto A = ws(kK, n, n);  // (E o K)
    A.noalias() = s.XQ * s.XK.transpose();
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = 0; j < n; ++j) A(t, j) = j <= t ? s.token_eta[t] * s.lr[j] * (A(t, j) + S(1)) : S(0);
    Zq.noalias() = s.XQ * W;
    Zq.rowwise() += b;
    Zq.noalias() -= A * G;
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
                               o.dXK, dG, dE, o, ws, kBwd);
    detail::eta_matrix_bwd<S>(s, dE, o);
    auto dZ = ws.zero(kdZ, n, f), dT = ws.zero(kdT, n, f);
    ops::ln_l2_grad_bwd(Z, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    Eigen::Map<MatT<S>>(dth0, f, f).noalias() += s.XK.transpose() * dZ;
    Eigen::Map<RowT<S>>(dth0 + f * f, f) += dZ.colwise().sum();
    o.dXK.noalias() += dZ * W.transpose();
  }
};

// ---- TTT-MLP: f(x) = gelu(x W1 + b1) W2 + b2 ---------------------------------------------------
template <>
struct LearnerGrad<inner::MLP> {
  enum Slot : size_t { kZ1, kX2, kZ2, kT, kG2, kGp, kM, kG1, kE, kK1, kK2, kA, kZ1q, kX2q, kZq,
                       kdE, kdG2, kdG1, kdX2q, kdX2, kdZ1q, kdM, kdZ1, kdZ2, kdT, kBwd };

  /// The forward of one mini-batch, every intermediate kept in its slot; Zq written.
  template <class S, class Z>
  static void run_forward(const S* th, int64_t f, const Segment<S>& s, Scratch<S>& ws, Z&& Zq) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W1(th, f, h);
    Eigen::Map<const RowT<S>> b1(th + f * h, h);
    Eigen::Map<const MatT<S>> W2(th + f * h + h, h, f);
    Eigen::Map<const RowT<S>> b2(th + 2 * f * h + h, f);
    auto Z1 = ws(kZ1, n, h), X2 = ws(kX2, n, h), Z2 = ws(kZ2, n, f), T = ws(kT, n, f), G2 = ws(kG2, n, f);
    auto gp = ws(kGp, n, h), M = ws(kM, n, h), G1 = ws(kG1, n, h), E = ws(kE, n, n), K1 = ws(kK1, n, n);
    auto K2 = ws(kK2, n, n), A = ws(kA, n, n), Z1q = ws(kZ1q, n, h), X2q = ws(kX2q, n, h);
    Z1.noalias() = s.XK * W1;  // (n, 4f)
    Z1.rowwise() += b1;
    X2 = ops::gelu(Z1);
    Z2.noalias() = X2 * W2;  // (n, f)
    Z2.rowwise() += b2;
    T = s.XV - s.XK;
    ops::ln_l2_grad(Z2, T, s.ln_w, s.ln_b, G2);
    gp = ops::gelu_bwd_ref(Z1);
    M.noalias() = G2 * W2.transpose();
    G1 = M.cwiseProduct(gp);
    detail::eta_matrix(s, E);
    detail::kernel<S>(s.XQ, s.XK, K1);
    A = E.cwiseProduct(K1);
    Z1q.noalias() = s.XQ * W1;
    Z1q.rowwise() += b1;
    Z1q.noalias() -= A * G1;
    X2q = ops::gelu(Z1q);
    detail::kernel<S>(X2q, X2, K2);
    A = E.cwiseProduct(K2);
    Zq.noalias() = X2q * W2;
    Zq.rowwise() += b2;
    Zq.noalias() -= A * G2;
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    run_forward(th, f, s, ws, Zq);
    std::copy(th, th + 2 * f * h + h + f, th_end);
    detail::end_state<S>(s, s.XK, ws(kG1, n, h), th_end, th_end + f * h, ws(kM, n, h));  // M is free now
    detail::end_state<S>(s, ws(kX2, n, h), ws(kG2, n, f), th_end + f * h + h, th_end + 2 * f * h + h,
                         ws(kT, n, f));
  }

  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    run_forward(th, f, s, ws, ws(kZq, n, f));
    Eigen::Map<const MatT<S>> W1(th, f, h);
    Eigen::Map<const MatT<S>> W2(th + f * h + h, h, f);
    S* dW1 = dth0;
    S* db1 = dth0 + f * h;
    S* dW2 = dth0 + f * h + h;
    S* db2 = dth0 + 2 * f * h + h;
    auto Z1 = ws(kZ1, n, h), X2 = ws(kX2, n, h), Z2 = ws(kZ2, n, f), T = ws(kT, n, f), G2 = ws(kG2, n, f);
    auto gp = ws(kGp, n, h), M = ws(kM, n, h), G1 = ws(kG1, n, h), E = ws(kE, n, n), K1 = ws(kK1, n, n);
    auto K2 = ws(kK2, n, n), Z1q = ws(kZ1q, n, h), X2q = ws(kX2q, n, h);
    auto dE = ws.zero(kdE, n, n), dG2 = ws.zero(kdG2, n, f), dG1 = ws.zero(kdG1, n, h);
    auto dX2q = ws.zero(kdX2q, n, h), dX2 = ws.zero(kdX2, n, h);
    // layer 2 on the queries (and W2_end, b2_end)
    detail::dual_linear_bwd<S>(s, X2q, X2, G2, E, K2, W2, dth_end + f * h + h, dth_end + 2 * f * h + h, dZq, dW2, db2,
                               dX2q, dX2, dG2, dE, o, ws, kBwd);
    auto dZ1q = ws(kdZ1q, n, h);
    dZ1q = dX2q.cwiseProduct(ops::gelu_grad(Z1q));
    // layer 1 on the queries (and W1_end, b1_end)
    detail::dual_linear_bwd<S>(s, s.XQ, s.XK, G1, E, K1, W1, dth_end, dth_end + f * h, dZ1q, dW1, db1, o.dXQ, o.dXK,
                               dG1, dE, o, ws, kBwd);
    detail::eta_matrix_bwd<S>(s, dE, o);
    // G1 = (G2 W2^T) o gelu_bwd(Z1)
    auto dM = ws(kdM, n, h);
    dM = dG1.cwiseProduct(gp);
    dG2.noalias() += dM * W2;
    Eigen::Map<MatT<S>>(dW2, h, f).noalias() += dM.transpose() * G2;
    auto dZ1 = ws(kdZ1, n, h);
    dZ1 = dG1.cwiseProduct(M).cwiseProduct(ops::gelu_bwd_ref_grad(Z1));
    // G2 = ln_l2_grad(Z2, XV - XK)
    auto dZ2 = ws.zero(kdZ2, n, f), dT = ws.zero(kdT, n, f);
    ops::ln_l2_grad_bwd(Z2, T, s.ln_w, s.ln_b, dG2, dZ2, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    // Z2 = X2 W2 + b2, X2 = gelu(Z1), Z1 = XK W1 + b1
    Eigen::Map<MatT<S>>(dW2, h, f).noalias() += X2.transpose() * dZ2;
    Eigen::Map<RowT<S>>(db2, f) += dZ2.colwise().sum();
    dX2.noalias() += dZ2 * W2.transpose();
    dZ1 += dX2.cwiseProduct(ops::gelu_grad(Z1));
    Eigen::Map<MatT<S>>(dW1, f, h).noalias() += s.XK.transpose() * dZ1;
    Eigen::Map<RowT<S>>(db1, h) += dZ1.colwise().sum();
    o.dXK.noalias() += dZ1 * W1.transpose();
  }
};

/// The primal-only wrapper of a learner computes what the learner computes.
template <class L>
struct LearnerGrad<inner::PrimalOnly<L>> : LearnerGrad<L> {};

}  // namespace ttt::train
