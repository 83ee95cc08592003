#pragma once
/// \file blocks/causal.hpp
/// The dual forms' causal mixing inside a mini-batch (paper Sec. 2.5): token t's output reads the
/// inner-loss gradients of the tokens s <= t through
///   A[t, s] = eta_t lr_s (q_t . k_s + bias)   (s <= t; 0 above the diagonal),   Y -= A G.
/// TTT-Linear and TTT-MLP's layers have bias 1 (the bias's gradient), SwiGLU's bias 0. Float goes
/// to kernels::causal_scores / causal_apply, which compute only the unmasked half and leave A's
/// upper triangle unwritten; other scalars (double: the checks' twins) to Eigen, with A's upper
/// triangle zero.
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/simd.hpp"
#include "matmul.hpp"

namespace ttt::blocks {

/// A = the causal scores of the rows of Q against those of K (n rows each), eta, lr: n values.
template <class S>
void causal_scores(CRefT<S> Q, CRefT<S> K, const S* eta, const S* lr, S bias, RefT<S> A) {
  const Eigen::Index n = Q.rows();
  if constexpr (std::is_same_v<S, float>) {
    kernels::causal_scores(backend::cpu_default{}, size_t(n), size_t(Q.cols()), Q.data(), Q.outerStride(), K.data(),
                           K.outerStride(), eta, lr, bias, A.data(), A.outerStride());
  } else {
    matmul(A, Q, K.transpose());
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = 0; j < n; ++j) A(t, j) = j <= t ? eta[t] * lr[j] * (A(t, j) + bias) : S(0);
  }
}

/// Y -= A G for A from causal_scores (its lower triangle read).
template <class S>
void causal_apply(CRefT<S> A, CRefT<S> G, RefT<S> Y) {
  if constexpr (std::is_same_v<S, float>) {
    kernels::causal_apply(backend::cpu_default{}, size_t(Y.rows()), size_t(Y.cols()), A.data(), A.outerStride(),
                          G.data(), G.outerStride(), Y.data(), Y.outerStride());
  } else {
    matmul(Y, A, G, true, S(-1));
  }
}

}  // namespace ttt::blocks
