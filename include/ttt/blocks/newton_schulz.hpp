#pragma once
/// \file blocks/newton_schulz.hpp
/// Muon's orthogonalisation: k Newton-Schulz iterations of the quintic with the Muon coefficients
/// (a, b, c) = (3.4445, -4.7750, 2.0315) on G / ||G||_F, X <- a X + (b A + c A^2) X, A = X X^T
/// (on the transpose when G is tall). The singular values of the result are near 1; its singular
/// vectors are G's. Generic over the scalar (ad::Real included): a polynomial and one norm.
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"
#include "matmul.hpp"

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
  MatT<S> A, B, BX;
  for (int64_t k = 0; k < steps; ++k) {
    matmul(A, X, X.transpose());
    matmul(B, A, A);
    B = b * A + c * B;
    matmul(BX, B, X);
    X = a * X + BX;
  }
  if (tall) return X.transpose();
  return X;
}

/// The reverse of `newton_schulz`: ADDS to dG (r, c) the cotangent of G given those of U (dU) and
/// of the norm (dnorm). Recomputes the iterates; per iteration X' = a X + B X, B = b A + c A^2,
/// A = X X^T (A, B symmetric):  dX = a dX' + B dX' + (dA + dA^T) X,  dA = b dB + c (dB A + A dB),
/// dB = dX' X^T.
template <class S>
void newton_schulz_vjp(const MatT<S>& G, int64_t steps, const MatT<S>& dU, S dnorm, RefT<S> dG) {
  using std::sqrt;
  const S a = S(3.4445), b = S(-4.7750), c = S(2.0315);
  const bool tall = G.rows() > G.cols();
  const MatT<S> raw = tall ? MatT<S>(G.transpose()) : G;
  S sq = S(1e-14);
  for (Eigen::Index i = 0; i < raw.size(); ++i) sq = sq + raw.data()[i] * raw.data()[i];
  const S nrm = sqrt(sq), inv = S(1) / (nrm + S(1e-7));
  std::vector<MatT<S>> Xs(size_t(steps + 1));
  Xs[0] = raw * inv;
  MatT<S> A, B, dB, dA;
  for (int64_t k = 0; k < steps; ++k) {
    matmul(A, Xs[size_t(k)], Xs[size_t(k)].transpose());
    B = b * A;
    matmul(B, A, A, true, c);
    Xs[size_t(k + 1)] = a * Xs[size_t(k)];
    matmul(Xs[size_t(k + 1)], B, Xs[size_t(k)], true);
  }
  MatT<S> dX = tall ? MatT<S>(dU.transpose()) : dU, dXk;
  for (int64_t k = steps; k-- > 0;) {
    const MatT<S>& X = Xs[size_t(k)];
    matmul(A, X, X.transpose());
    B = b * A;
    matmul(B, A, A, true, c);
    matmul(dB, dX, X.transpose());
    dA = b * dB;
    matmul(dA, dB, A, true, c);
    matmul(dA, A, dB, true, c);
    dXk = a * dX;
    matmul(dXk, B, dX, true);
    matmul(dXk, dA + dA.transpose(), X, true);
    dX.swap(dXk);
  }
  // X0 = raw / (nrm + 1e-7), nrm = sqrt(sq)
  S dinv = S(0);
  for (Eigen::Index i = 0; i < raw.size(); ++i) dinv = dinv + raw.data()[i] * dX.data()[i];
  const S dsq = (dnorm - dinv * inv * inv) / (S(2) * nrm);
  MatT<S> draw = inv * dX + (S(2) * dsq) * raw;
  if (tall) dG += draw.transpose();
  else dG += draw;
}

}  // namespace ttt::blocks
