#pragma once
/// \file examples/teaching/level1_naive.hpp
/// Level 1: naive TTT, one gradient step per token, plain loops (arXiv 2407.04620, Sec. 2.1 and
/// 2.3: the update rule and the output rule with the learned self-supervised task):
///
///   W_t = W_{t-1} - eta grad l(W_{t-1}; x_t),   grad l(W; x_t) = k_t^T (k_t W - v_t)   (online GD)
///   z_t = q_t W_t
///
/// A true RNN: token t reads the state left by token t-1, so the L steps are strictly sequential
/// and every step is a matrix-vector product (no matrix-matrix product anywhere).
#include <cstdint>

#include "problem.hpp"

namespace teach::level1 {

/// Z: (L, f) outputs; W: (f, f) the state, W_0 on entry, W_L on exit.
template <class S>
Mat<S> forward(const Views<S>& x, Mat<S>& W, S eta) {
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  Mat<S> Z(L, f);
  Row<S> e(f);  // the reconstruction error k_t W - v_t
  for (int64_t t = 0; t < L; ++t) {
    for (int64_t j = 0; j < f; ++j) {  // e = k_t W_{t-1} - v_t                        2 f^2
      S s = 0;
      for (int64_t i = 0; i < f; ++i) s += x.XK(t, i) * W(i, j);
      e[j] = s - x.XV(t, j);
    }
    for (int64_t i = 0; i < f; ++i) {  // W_t = W_{t-1} - eta k_t^T e                 2 f^2
      const S ek = eta * x.XK(t, i);
      for (int64_t j = 0; j < f; ++j) W(i, j) -= ek * e[j];
    }
    for (int64_t j = 0; j < f; ++j) {  // z_t = q_t W_t                                2 f^2
      S s = 0;
      for (int64_t i = 0; i < f; ++i) s += x.XQ(t, i) * W(i, j);
      Z(t, j) = s;
    }
  }
  return Z;
}

/// FLOPs per token (multiply and add counted apart; the O(f) terms left out), as commented above.
inline double flops_per_token(int64_t f) { return 6.0 * double(f) * double(f); }

}  // namespace teach::level1
