#pragma once
/// \file examples/teaching/level2_minibatch.hpp
/// Level 2: mini-batch TTT (arXiv 2407.04620, Sec. 2.4). The sequence is cut into mini-batches of
/// b tokens; every token of a mini-batch takes its gradient at the mini-batch's starting state
/// W_0 (batch GD inside the mini-batch), and token t's output reads the state after the partial
/// sum up to t:
///
///   G_s = grad l(W_0; x_s) = k_s^T (k_s W_0 - v_s)
///   W_t = W_0 - eta sum_{s<=t} G_s          (s, t in the same mini-batch)
///   z_t = q_t W_t,                           the next mini-batch starts from W_b (its last W_t)
///
/// With b = 1 this is level 1 exactly (W_0 is then W_{t-1}). With b > 1 it is a different
/// computation, on purpose: the gradients of a mini-batch no longer see each other's steps, which
/// is what lets them be computed in parallel (level 3); the paper trades a little of the online
/// update's quality for it (its ablation on b, Sec. 2.4). Still a loop here, token by token.
#include <algorithm>
#include <cstdint>

#include "problem.hpp"

namespace teach::level2 {

/// Z: (L, f); W: (f, f), W_0 on entry, the state after the last token on exit. A last,
/// shorter mini-batch takes the remainder L % b, as the reference does.
template <class S>
Mat<S> forward(const Views<S>& x, Mat<S>& W, S eta, int64_t b) {
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  Mat<S> Z(L, f), W0(f, f), gacc(f, f), Wt(f, f);
  Row<S> e(f);
  for (int64_t t0 = 0; t0 < L; t0 += b) {
    W0 = W;
    gacc.setZero();
    for (int64_t t = t0; t < std::min(L, t0 + b); ++t) {
      e.noalias() = x.XK.row(t) * W0;  // k_t W_0 - v_t                                  2 f^2
      e -= x.XV.row(t);
      gacc.noalias() += x.XK.row(t).transpose() * e;  // sum_{s<=t} G_s                  2 f^2
      Wt = W0 - eta * gacc;  // W_t                                                        2 f^2
      Z.row(t).noalias() = x.XQ.row(t) * Wt;  // z_t = q_t W_t                             2 f^2
    }
    W = Wt;
  }
  return Z;
}

/// FLOPs per token: 8 f^2 (as commented above): more than level 1, all of it still sequential.
inline double flops_per_token(int64_t f) { return 8.0 * double(f) * double(f); }

}  // namespace teach::level2
