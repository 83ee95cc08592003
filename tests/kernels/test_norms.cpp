// The row norms' vectorised paths (float and double: Eigen's reductions and row expressions,
// blocks/layer_norm.hpp, blocks/ln_l2.hpp) against their plain-loop twins (`*_plain`, the only
// path of other scalars), on whole matrices and on column blocks of a wider one (as the TTT layer
// calls them per head), widths with and without SIMD remainders, with and without beta.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include <ttt/blocks/layer_norm.hpp>
#include <ttt/blocks/ln_l2.hpp>

namespace {

template <class S>
using MatR = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class S>
MatR<S> random(Eigen::Index r, Eigen::Index c, std::mt19937& rng, double scale, double shift) {
  std::normal_distribution<double> n(shift, scale);
  MatR<S> m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = S(n(rng));
  return m;
}

/// max |a - b| / (1 + |b|)
template <class A, class B>
double rel(const A& a, const B& b) {
  return ((a - b).array().abs() / (1 + b.array().abs())).template cast<double>().maxCoeff();
}

template <class S>
void check_norms(double tol) {
  std::mt19937 rng(3);
  for (Eigen::Index d : {1, 7, 16, 64, 67, 768}) {
    CAPTURE(d);
    const Eigen::Index n = 5, lead = 3;  // the block starts 3 columns into a wider matrix
    const MatR<S> wide = random<S>(n, d + 2 * lead, rng, 2.0, 0.7), target = random<S>(n, d, rng, 1.0, 0.0);
    const MatR<S> gamma = random<S>(1, d, rng, 0.3, 1.0), beta = random<S>(1, d, rng, 0.3, 0.0);
    const auto x = wide.middleCols(lead, d);
    for (Eigen::Index r = 0; r < n; ++r) {
      const auto v = ttt::blocks::row_moments(x, r), p = ttt::blocks::row_moments_plain(x, r);
      CHECK(std::fabs(double(v.first - p.first)) <= tol * (1 + std::fabs(double(p.first))));
      CHECK(std::fabs(double(v.second - p.second)) <= tol * (1 + std::fabs(double(p.second))));
    }
    for (const S* b : {beta.data(), static_cast<const S*>(nullptr)}) {
      MatR<S> y, yp;
      ttt::blocks::layer_norm(x, gamma.data(), b, 1e-6, y);
      ttt::blocks::layer_norm_plain(x, gamma.data(), b, 1e-6, yp);
      CHECK(rel(y, yp) <= tol);
      MatR<S> out_wide = MatR<S>::Zero(n, d + 2 * lead);  // into a column block: the rest untouched
      ttt::blocks::layer_norm(x, gamma.data(), b, 1e-6, out_wide.middleCols(lead, d));
      CHECK(rel(out_wide.middleCols(lead, d), yp) <= tol);
      CHECK(out_wide.leftCols(lead).isZero(0));
      CHECK(out_wide.rightCols(lead).isZero(0));
    }
    MatR<S> g, gp;
    ttt::blocks::ln_l2_grad(x, target, gamma.data(), beta.data(), g);
    ttt::blocks::ln_l2_grad_plain(x, target, gamma.data(), beta.data(), gp);
    CHECK(rel(g, gp) <= tol);
  }
}

}  // namespace

TEST_CASE("layer_norm, ln_l2_grad, row_moments: the vectorised paths match their plain twins") {
  check_norms<float>(2e-6);
  check_norms<double>(1e-13);
}
