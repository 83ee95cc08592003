#pragma once
/// \file examples/teaching/problem.hpp
/// The one TTT-Linear head every level of the ladder computes (arXiv 2407.04620, Sec. 2.3), with
/// the learned projections theta_K, theta_V, theta_Q given here as fixed random matrices:
///
///   inner model        f(k; W) = k W                                  W: (f, f), the hidden state
///   inner loss         l(W; x_t) = 0.5 ||f(theta_K x_t; W) - theta_V x_t||^2
///   output rule        z_t = f(theta_Q x_t; W_t)
///
/// Tokens are rows (x_t: (1, d)), so the paper's theta_K x_t is the row x_t theta_K here. The
/// paper writes the loss without the 0.5 (its gradient then carries a 2); the official code and
/// this library use 0.5 ||.||^2, and so does the ladder.
///
/// Shared by the levels only for its types and the projections: each level is one header,
/// level0_adam.hpp ... level4_library.hpp.
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <random>

namespace teach {

/// Row-major, as the library (ttt::MatT<S>): one token per row.
template <class S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using Row = Eigen::Matrix<S, 1, Eigen::Dynamic>;

/// What the inner loop reads: the three views of the sequence.       each (L, f)
template <class S>
struct Views {
  Mat<S> XK, XV, XQ;  // training view k_t = theta_K x_t, label view v_t = theta_V x_t, test view q_t = theta_Q x_t
};

/// A (rows, cols) matrix with entries N(0, scale^2), reproducible from `seed`.
template <class S>
Mat<S> random_matrix(int64_t rows, int64_t cols, double scale, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> n(0.0, scale);
  Mat<S> m(rows, cols);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = S(n(gen));
  return m;
}

/// The three projections of X (L, d) by theta_K, theta_V, theta_Q (d, f). They cost 6 d f FLOPs
/// per token at every level, so the levels (and their FLOP counts) start from the views.
template <class S>
Views<S> project(const Mat<S>& X, const Mat<S>& theta_K, const Mat<S>& theta_V, const Mat<S>& theta_Q) {
  return {X * theta_K, X * theta_V, X * theta_Q};
}

/// A random head: X (L, d) N(0, 1), projections N(0, 1/d) so that the views have unit-scale entries.
template <class S>
Views<S> random_head(int64_t L, int64_t d, int64_t f, uint32_t seed) {
  const double s = 1.0 / std::sqrt(double(d));
  return project<S>(random_matrix<S>(L, d, 1.0, seed), random_matrix<S>(d, f, s, seed + 1),
                    random_matrix<S>(d, f, s, seed + 2), random_matrix<S>(d, f, s, seed + 3));
}

}  // namespace teach
