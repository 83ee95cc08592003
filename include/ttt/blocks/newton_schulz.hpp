#pragma once
/// \file blocks/newton_schulz.hpp
/// Muon's orthogonalisation: k Newton-Schulz iterations of the quintic with the Muon coefficients
/// (a, b, c) = (3.4445, -4.7750, 2.0315) on G / ||G||_F, X <- a X + (b A + c A^2) X, A = X X^T
/// (on the transpose when G is tall). The singular values of the result are near 1; its singular
/// vectors are G's. Generic over the scalar (ad::Real included): a polynomial and one norm.
#include <cstdint>

#include "../core/tensor.hpp"

namespace ttt::blocks {

/// U = NS_k(G), both (r, c); `norm`, when given, receives sqrt(||G||_F^2 + 1e-14).
template <class S>
MatT<S> newton_schulz(const MatT<S>& G, int64_t steps, S* norm = nullptr) {
  using std::sqrt;
  const S a = S(3.4445), b = S(-4.7750), c = S(2.0315);
  const bool tall = G.rows() > G.cols();
  MatT<S> X = tall ? MatT<S>(G.transpose()) : G;
  S sq = S(1e-14);  // keeps the norm's derivative finite at G = 0
  for (Eigen::Index i = 0; i < X.size(); ++i) sq = sq + X.data()[i] * X.data()[i];
  const S nrm = sqrt(sq);
  if (norm) *norm = nrm;
  const S inv = S(1) / (nrm + S(1e-7));
  X *= inv;
  for (int64_t k = 0; k < steps; ++k) {
    const MatT<S> A = X * X.transpose();
    const MatT<S> B = b * A + c * (A * A);
    X = (a * X + B * X).eval();
  }
  if (tall) return X.transpose();
  return X;
}

}  // namespace ttt::blocks
