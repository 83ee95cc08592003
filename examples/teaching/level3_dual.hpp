#pragma once
/// \file examples/teaching/level3_dual.hpp
/// Level 3: the dual form of mini-batch TTT (arXiv 2407.04620, Sec. 2.5). Level 2's sums over s <= t
/// are the rows of a masked (causal) matrix product, so a mini-batch of b tokens becomes four
/// matrix-matrix products and never forms the b intermediate states W_t:
///
///   E   = XK W_0 - XV                          (b, f)   the errors of all b tokens at W_0
///   z_t = q_t W_0 - eta sum_{s<=t} (q_t . k_s) e_s
///   Z   = XQ W_0 - eta tril(XQ XK^T) E         (b, f)   tril: keep s <= t (the causal mask)
///   W_b = W_0 - eta XK^T E                     (f, f)   the state for the next mini-batch
///
/// (q_t W_t = q_t W_0 - eta sum_s q_t k_s^T e_s, and q_t k_s^T is the scalar q_t . k_s.) The
/// paper writes it in columns, Z = W_0 X - 2 eta (W_0 X - X) mask(X^T X) for the plain
/// reconstruction loss; tokens are rows here. Same numbers as level 2 up to rounding.
#include <algorithm>
#include <cstdint>

#include "problem.hpp"

namespace teach::level3 {

/// Z: (L, f); W: (f, f), W_0 on entry, the final state on exit; mini-batches of b (last: L % b).
template <class S>
Mat<S> forward(const Views<S>& x, Mat<S>& W, S eta, int64_t b) {
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  Mat<S> Z(L, f), E, A;
  for (int64_t t0 = 0; t0 < L; t0 += b) {
    const int64_t n = std::min(b, L - t0);
    const auto XK = x.XK.middleRows(t0, n), XV = x.XV.middleRows(t0, n), XQ = x.XQ.middleRows(t0, n);
    auto Zb = Z.middleRows(t0, n);
    E.noalias() = XK * W;  // (n, f)                                         2 n f^2
    E -= XV;
    A.noalias() = XQ * XK.transpose();  // (n, n): q_t . k_s                 2 n^2 f
    A.template triangularView<Eigen::StrictlyUpper>().setZero();  // the causal mask: s <= t
    Zb.noalias() = XQ * W;  //                                               2 n f^2
    Zb.noalias() -= eta * (A * E);  //                                       2 n^2 f
    W.noalias() -= eta * (XK.transpose() * E);  // W_b, after Zb has read W_0   2 n f^2
  }
  return Z;
}

/// FLOPs per token, a full mini-batch: 6 f^2 + 4 b f (the masked products computed in full; half
/// of A is zeros). Fewer than level 2's 8 f^2 once b < f/2, and all in matrix-matrix products.
inline double flops_per_token(int64_t f, int64_t b) {
  return 6.0 * double(f) * double(f) + 4.0 * double(b) * double(f);
}

}  // namespace teach::level3
