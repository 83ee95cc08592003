#pragma once
/// \file train/learner_grad.hpp
/// The per-learner part of the training backward pass: one head's mini-batch, forward and reverse,
/// in double precision.
///
/// ## The interface a learner's backward provides
///
/// Training needs, for each inner learner `L`, a specialisation of `ttt::train::LearnerGrad<L>`
/// with two static functions (the built-in ones for inner::Linear and inner::MLP are below; a user
/// learner specialises the template for its own type, and `loss_and_grad` refuses to compile for a
/// learner without one):
///
/// \code
/// template <> struct ttt::train::LearnerGrad<MyLearner> {
///   // One mini-batch of one head, starting a fresh mini-batch (no carried gradient):
///   //   Zq[t]     = f_{theta_t}(XQ[t]),  theta_t = theta0 - token_eta[t] * sum_{s<=t} lr[s] grad_s
///   //   grad_s    = d/dtheta 0.5 ||ln_w * LN(f_theta0(XK[s])) + ln_b - (XV[s] - XK[s])||^2
///   //   theta_end = theta0 - token_eta[n-1] * sum_s lr[s] grad_s  (the next mini-batch's start)
///   static void forward(const double* theta0, int64_t f, const SegmentD& s, MatD& Zq, double* theta_end);
///   // Reverse of forward: given dZq (n, f) and dtheta_end (P; zeros after the last mini-batch),
///   // ADD the cotangents of theta0 into dtheta0 (P) and those of XQ, XK, XV, token_eta, lr,
///   // ln_w, ln_b into `out` (second-order terms included: grad_s depends on everything).
///   static void backward(const double* theta0, int64_t f, const SegmentD& s, const MatD& dZq,
///                        const double* dtheta_end, double* dtheta0, SegmentGradD& out);
/// };
/// \endcode
///
/// theta0 is laid out as the learner's `param_specs` (row-major, spec after spec), as in the layer.
/// The layer-level code (projections, RoPE, the learning-rate gate, the token index clamp, the
/// output LayerNorm, chaining mini-batches in reverse with the state's cotangent) is generic.
/// `ops::ln_l2_grad` / `ops::ln_l2_grad_bwd` give the inner loss gradient and its VJP.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../inner/learner.hpp"
#include "../inner/linear.hpp"
#include "../inner/mlp.hpp"
#include "ops.hpp"

namespace ttt::train {

/// One head's mini-batch in double. Rows are positions 0..n-1 of the mini-batch.
struct SegmentD {
  const MatD& XQ;          ///< (n, f) queries after RoPE
  const MatD& XK;          ///< (n, f) keys after RoPE
  const MatD& XV;          ///< (n, f) values
  const double* token_eta; ///< (n) clamp(1/(t+1) + learnable_token_idx[t], 0)
  const double* lr;        ///< (n) ttt_base_lr * sigmoid(x . w + b) / f
  const double* ln_w;      ///< (f) inner LayerNorm weight of this head
  const double* ln_b;      ///< (f) ... and bias
};

/// Cotangents of a segment's inputs; backward ADDS into them (sized by the caller, zeroed).
struct SegmentGradD {
  MatD dXQ, dXK, dXV;              ///< (n, f)
  std::vector<double> d_token_eta; ///< (n)
  std::vector<double> d_lr;        ///< (n)
  double* d_ln_w = nullptr;        ///< (f)
  double* d_ln_b = nullptr;        ///< (f)
};

/// Specialise for each learner (see the file comment). The primary template is left undefined.
template <class L>
struct LearnerGrad;

/// A learner whose backward is known to training.
template <class L>
concept HasLearnerGrad = requires(const double* th, double* dth, int64_t f, const SegmentD& s, MatD& Z,
                                  SegmentGradD& out) {
  LearnerGrad<L>::forward(th, f, s, Z, dth);
  LearnerGrad<L>::backward(th, f, s, Z, th, dth, out);
};

namespace detail {

/// E(t, s) = token_eta[t] * lr[s] for s <= t, 0 above the diagonal.
inline MatD eta_matrix(const SegmentD& s, Eigen::Index n) {
  MatD E = MatD::Zero(n, n);
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j <= t; ++j) E(t, j) = s.token_eta[t] * s.lr[j];
  return E;
}
/// S = Xq Xk^T + 1 (the dual form's kernel, bias included).
inline MatD kernel(const MatD& Xq, const MatD& Xk) {
  MatD S = Xq * Xk.transpose();
  S.array() += 1.0;
  return S;
}
/// Cotangents of E (n, n) to token_eta and lr.
inline void eta_matrix_bwd(const SegmentD& s, const MatD& dE, SegmentGradD& o) {
  const Eigen::Index n = dE.rows();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j <= t; ++j) {
      o.d_token_eta[size_t(t)] += dE(t, j) * s.lr[j];
      o.d_lr[size_t(j)] += dE(t, j) * s.token_eta[t];
    }
}

/// One "linear layer" of the dual form: Zq = Xq W + b - (E o (Xq Xk^T + 1)) G, and its end state
/// W_end = W - e Xk^T diag(lr) G, b_end = b - e lr^T G, e = token_eta[n-1]. The reverse pass
/// below takes dZq, dW_end, db_end and adds to dW, db, dXq, dXk, dG, dE, d_lr, d_token_eta[n-1].
struct DualLinearBwd {
  static void run(const SegmentD& s, const MatD& Xq, const MatD& Xk, const MatD& G, const MatD& E,
                  Eigen::Map<const MatD> W, Eigen::Map<const MatD> dWe, Eigen::Map<const RowD> dbe, const MatD& dZq,
                  Eigen::Map<MatD> dW, Eigen::Map<RowD> db, MatD& dXq, MatD& dXk, MatD& dG, MatD& dE,
                  SegmentGradD& o) {
    const Eigen::Index n = Xq.rows();
    const MatD S = kernel(Xq, Xk);
    dW += Xq.transpose() * dZq + dWe;
    db += dZq.colwise().sum() + dbe;
    dXq += dZq * W.transpose();
    MatD dA = -(dZq * G.transpose());
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = t + 1; j < n; ++j) dA(t, j) = 0.0;
    const MatD A = E.cwiseProduct(S);
    dG -= A.transpose() * dZq;
    dE += dA.cwiseProduct(S);
    const MatD dS = dA.cwiseProduct(E);
    dXq += dS * Xk;
    dXk += dS.transpose() * Xq;
    // end state
    const double e = s.token_eta[n - 1];
    MatD Kd = Xk * dWe;  // (n, out)
    Kd.rowwise() += dbe;
    MatD GdWt = G * dWe.transpose();  // (n, in)
    for (Eigen::Index j = 0; j < n; ++j) {
      const double lj = s.lr[j];
      dG.row(j) -= e * lj * Kd.row(j);
      dXk.row(j) -= e * lj * GdWt.row(j);
      const double kg = Kd.row(j).dot(G.row(j));
      o.d_lr[size_t(j)] -= e * kg;
      o.d_token_eta[size_t(n - 1)] -= lj * kg;
    }
  }
};

/// W_end = W - e Xk^T diag(lr) G, b_end = b - e lr^T G.
inline void end_state(const SegmentD& s, const MatD& Xk, const MatD& G, Eigen::Map<MatD> We, Eigen::Map<RowD> be) {
  const Eigen::Index n = Xk.rows();
  const double e = s.token_eta[n - 1];
  MatD Gl = G;
  for (Eigen::Index j = 0; j < n; ++j) Gl.row(j) *= s.lr[j];
  We -= e * (Xk.transpose() * Gl);
  be -= e * Gl.colwise().sum();
}

}  // namespace detail

// ---- TTT-Linear: f(x) = x W + b --------------------------------------------------------------
template <>
struct LearnerGrad<inner::Linear> {
  static void forward(const double* th, int64_t f, const SegmentD& s, MatD& Zq, double* th_end) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatD> W(th, f, f);
    Eigen::Map<const RowD> b(th + f * f, f);
    MatD Z = s.XK * W;
    Z.rowwise() += b;
    MatD G;
    ops::ln_l2_grad(Z, s.XV - s.XK, s.ln_w, s.ln_b, G);
    const MatD E = detail::eta_matrix(s, n);
    Zq = s.XQ * W;
    Zq.rowwise() += b;
    Zq -= E.cwiseProduct(detail::kernel(s.XQ, s.XK)) * G;
    std::copy(th, th + f * f + f, th_end);
    detail::end_state(s, s.XK, G, Eigen::Map<MatD>(th_end, f, f), Eigen::Map<RowD>(th_end + f * f, f));
  }

  static void backward(const double* th, int64_t f, const SegmentD& s, const MatD& dZq, const double* dth_end,
                       double* dth0, SegmentGradD& o) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatD> W(th, f, f);
    Eigen::Map<const RowD> b(th + f * f, f);
    MatD Z = s.XK * W;
    Z.rowwise() += b;
    const MatD T = s.XV - s.XK;
    MatD G;
    ops::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
    const MatD E = detail::eta_matrix(s, n);
    MatD dG = MatD::Zero(n, f), dE = MatD::Zero(n, n);
    Eigen::Map<MatD> dW(dth0, f, f);
    Eigen::Map<RowD> db(dth0 + f * f, f);
    detail::DualLinearBwd::run(s, s.XQ, s.XK, G, E, W, Eigen::Map<const MatD>(dth_end, f, f),
                               Eigen::Map<const RowD>(dth_end + f * f, f), dZq, dW, db, o.dXQ, o.dXK, dG, dE, o);
    detail::eta_matrix_bwd(s, dE, o);
    MatD dZ = MatD::Zero(n, f), dT = MatD::Zero(n, f);
    ops::ln_l2_grad_bwd(Z, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    dW += s.XK.transpose() * dZ;
    db += dZ.colwise().sum();
    o.dXK += dZ * W.transpose();
  }
};

// ---- TTT-MLP: f(x) = gelu(x W1 + b1) W2 + b2 ---------------------------------------------------
template <>
struct LearnerGrad<inner::MLP> {
  struct Fwd {
    MatD Z1, X2, Z2, T, G2, gp, M, G1, E, Z1q, X2q;
  };
  static void run_forward(const double* th, int64_t f, const SegmentD& s, Fwd& F, MatD& Zq) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatD> W1(th, f, h);
    Eigen::Map<const RowD> b1(th + f * h, h);
    Eigen::Map<const MatD> W2(th + f * h + h, h, f);
    Eigen::Map<const RowD> b2(th + 2 * f * h + h, f);
    F.Z1 = s.XK * W1;
    F.Z1.rowwise() += b1;
    F.X2 = ops::gelu(F.Z1);
    F.Z2 = F.X2 * W2;
    F.Z2.rowwise() += b2;
    F.T = s.XV - s.XK;
    ops::ln_l2_grad(F.Z2, F.T, s.ln_w, s.ln_b, F.G2);
    F.gp = F.Z1.unaryExpr([](double v) { return ops::gelu_bwd_ref(v); });
    F.M = F.G2 * W2.transpose();
    F.G1 = F.M.cwiseProduct(F.gp);
    F.E = detail::eta_matrix(s, n);
    F.Z1q = s.XQ * W1;
    F.Z1q.rowwise() += b1;
    F.Z1q -= F.E.cwiseProduct(detail::kernel(s.XQ, s.XK)) * F.G1;
    F.X2q = ops::gelu(F.Z1q);
    Zq = F.X2q * W2;
    Zq.rowwise() += b2;
    Zq -= F.E.cwiseProduct(detail::kernel(F.X2q, F.X2)) * F.G2;
  }

  static void forward(const double* th, int64_t f, const SegmentD& s, MatD& Zq, double* th_end) {
    const int64_t h = inner::MLP::expansion * f;
    Fwd F;
    run_forward(th, f, s, F, Zq);
    std::copy(th, th + 2 * f * h + h + f, th_end);
    detail::end_state(s, s.XK, F.G1, Eigen::Map<MatD>(th_end, f, h), Eigen::Map<RowD>(th_end + f * h, h));
    detail::end_state(s, F.X2, F.G2, Eigen::Map<MatD>(th_end + f * h + h, h, f),
                      Eigen::Map<RowD>(th_end + 2 * f * h + h, f));
  }

  static void backward(const double* th, int64_t f, const SegmentD& s, const MatD& dZq, const double* dth_end,
                       double* dth0, SegmentGradD& o) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    Fwd F;
    MatD Zq;
    run_forward(th, f, s, F, Zq);
    Eigen::Map<const MatD> W1(th, f, h);
    Eigen::Map<const MatD> W2(th + f * h + h, h, f);
    Eigen::Map<MatD> dW1(dth0, f, h);
    Eigen::Map<RowD> db1(dth0 + f * h, h);
    Eigen::Map<MatD> dW2(dth0 + f * h + h, h, f);
    Eigen::Map<RowD> db2(dth0 + 2 * f * h + h, f);
    MatD dE = MatD::Zero(n, n), dG2 = MatD::Zero(n, f), dG1 = MatD::Zero(n, h);
    MatD dX2q = MatD::Zero(n, h), dX2 = MatD::Zero(n, h);
    // layer 2 on the queries (and W2_end, b2_end)
    detail::DualLinearBwd::run(s, F.X2q, F.X2, F.G2, F.E, W2, Eigen::Map<const MatD>(dth_end + f * h + h, h, f),
                               Eigen::Map<const RowD>(dth_end + 2 * f * h + h, f), dZq, dW2, db2, dX2q, dX2, dG2, dE,
                               o);
    const MatD dZ1q = dX2q.cwiseProduct(ops::gelu_grad(F.Z1q));
    // layer 1 on the queries (and W1_end, b1_end)
    detail::DualLinearBwd::run(s, s.XQ, s.XK, F.G1, F.E, W1, Eigen::Map<const MatD>(dth_end, f, h),
                               Eigen::Map<const RowD>(dth_end + f * h, h), dZ1q, dW1, db1, o.dXQ, o.dXK, dG1, dE, o);
    detail::eta_matrix_bwd(s, dE, o);
    // G1 = (G2 W2^T) o gelu_bwd(Z1)
    const MatD dM = dG1.cwiseProduct(F.gp);
    dG2 += dM * W2;
    dW2 += dM.transpose() * F.G2;
    MatD dZ1 = dG1.cwiseProduct(F.M).cwiseProduct(F.Z1.unaryExpr([](double v) { return ops::gelu_bwd_ref_grad(v); }));
    // G2 = ln_l2_grad(Z2, XV - XK)
    MatD dZ2 = MatD::Zero(n, f), dT = MatD::Zero(n, f);
    ops::ln_l2_grad_bwd(F.Z2, F.T, s.ln_w, s.ln_b, dG2, dZ2, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    // Z2 = X2 W2 + b2, X2 = gelu(Z1), Z1 = XK W1 + b1
    dW2 += F.X2.transpose() * dZ2;
    db2 += dZ2.colwise().sum();
    dX2 += dZ2 * W2.transpose();
    dZ1 += dX2.cwiseProduct(ops::gelu_grad(F.Z1));
    dW1 += s.XK.transpose() * dZ1;
    db1 += dZ1.colwise().sum();
    o.dXK += dZ1 * W1.transpose();
  }
};

/// The primal-only wrapper of a learner computes what the learner computes.
template <class L>
struct LearnerGrad<inner::PrimalOnly<L>> : LearnerGrad<L> {};

}  // namespace ttt::train
