// The row norms' vectorised paths (float and double: Eigen's reductions and row expressions,
// blocks/layer_norm.hpp, blocks/ln_l2.hpp) against their plain-loop twins (`*_plain`, the only
// path of other scalars), on whole matrices and on column blocks of a wider one (as the TTT layer
// calls them per head), widths with and without SIMD remainders, with and without beta. The
// norms' reverses: float rows through the active table's kernels (kernels::layer_norm_bwd_rows,
// rms_norm_bwd_rows) and double through Eigen, both against the scalar twins in double.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include <ttt/blocks/layer_norm.hpp>
#include <ttt/blocks/ln_l2.hpp>
#include <ttt/blocks/rms_norm.hpp>

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

/// The reverses of LayerNorm and RMSNorm in S (blocks::layer_norm_bwd, blocks::rms_norm_bwd: float
/// rows go to the kernels) against the scalar twins in double, on a column block of a wider
/// matrix (the columns around it untouched) with outputs that already hold values (they add).
/// 9 rows: two 4-row tiles and one row alone.
template <class S>
void check_norm_bwds(double tol) {
  using ttt::backend::scalar;
  std::mt19937 rng(5);
  for (Eigen::Index d : {1, 7, 16, 64, 67, 768}) {
    CAPTURE(d);
    const Eigen::Index n = 9, lead = 3, wd = d + 2 * lead;
    const MatR<S> xw = random<S>(n, wd, rng, 2.0, 0.7), dyw = random<S>(n, wd, rng, 1.0, 0.1);
    const MatR<S> gamma = random<S>(1, d, rng, 0.3, 1.0), dx0 = random<S>(n, wd, rng, 1.0, 0.0);
    const MatR<S> dg0 = random<S>(1, d, rng, 1.0, 0.0), db0 = random<S>(1, d, rng, 1.0, 0.0);
    const MatR<double> xd = xw.template cast<double>(), dyd = dyw.template cast<double>();
    const MatR<double> gd = gamma.template cast<double>();
    {  // LayerNorm
      MatR<S> dx = dx0, dg = dg0, db = db0;
      ttt::blocks::layer_norm_bwd(xw.middleCols(lead, d), gamma.data(), 1e-5, dyw.middleCols(lead, d),
                                  dx.middleCols(lead, d), dg.data(), db.data());
      MatR<double> rx = dx0.template cast<double>(), rg = dg0.template cast<double>(), rb = db0.template cast<double>();
      ttt::kernels::layer_norm_bwd_rows(scalar{}, size_t(n), size_t(d), xd.data() + lead, wd, dyd.data() + lead, wd,
                                        gd.data(), 1e-5, rx.data() + lead, wd, rg.data(), rb.data());
      CHECK(rel(dx.template cast<double>(), rx) <= tol);
      CHECK(rel(dg.template cast<double>(), rg) <= tol);
      CHECK(rel(db.template cast<double>(), rb) <= tol);
      CHECK(dx.leftCols(lead) == dx0.leftCols(lead));
      CHECK(dx.rightCols(lead) == dx0.rightCols(lead));
      MatR<S> dx2 = dx0;  // no dgamma, dbeta
      ttt::blocks::layer_norm_bwd(xw.middleCols(lead, d), gamma.data(), 1e-5, dyw.middleCols(lead, d),
                                  dx2.middleCols(lead, d), static_cast<S*>(nullptr), static_cast<S*>(nullptr));
      CHECK(rel(dx2.template cast<double>(), rx) <= tol);
    }
    {  // RMSNorm (weights: gamma)
      MatR<S> dx = dx0, dw = dg0;
      ttt::blocks::rms_norm_bwd(xw.middleCols(lead, d), gamma, 1e-5, dyw.middleCols(lead, d), dx.middleCols(lead, d),
                                dw);
      MatR<double> rx = dx0.template cast<double>(), rw = dg0.template cast<double>();
      ttt::kernels::rms_norm_bwd_rows(scalar{}, size_t(n), size_t(d), xd.data() + lead, wd, dyd.data() + lead, wd,
                                      gd.data(), 1e-5, rx.data() + lead, wd, rw.data());
      CHECK(rel(dx.template cast<double>(), rx) <= tol);
      CHECK(rel(dw.template cast<double>(), rw) <= tol);
      CHECK(dx.leftCols(lead) == dx0.leftCols(lead));
      CHECK(dx.rightCols(lead) == dx0.rightCols(lead));
    }
  }
}

}  // namespace

TEST_CASE("layer_norm_bwd, rms_norm_bwd: float rows through the kernels and double through Eigen match the twins") {
  check_norm_bwds<float>(2e-5);
  check_norm_bwds<double>(1e-12);
}

TEST_CASE("layer_norm, ln_l2_grad, row_moments: the vectorised paths match their plain twins") {
  check_norms<float>(2e-6);
  check_norms<double>(1e-13);
}
