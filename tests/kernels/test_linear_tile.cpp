// The CUDA kernels' per-tile maths (kernels/tile/linear_tile.hpp), run on the CPU: a segment ==
// inner::Linear::dual_form (fresh and mid-mini-batch, every length up to the mini-batch), the
// LayerNorm row == blocks::layer_norm, and the scan over a chunk split anywhere == the scan in one
// piece. In double (1e-12) and float (1e-5): the arithmetic the GPU runs is tested here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <ttt/blocks/layer_norm.hpp>
#include <ttt/inner/linear.hpp>
#include <ttt/kernels/tile/linear_tile.hpp>

using namespace ttt;

namespace {

template <class S>
std::vector<S> randn(size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> N(0.0, scale);
  std::vector<S> v(n);
  for (auto& x : v) x = S(N(rng));
  return v;
}

template <class S>
double rel_err(const std::vector<S>& a, const std::vector<S>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) num = std::max(num, std::abs(double(a[i]) - double(b[i]))), den = std::max(den, std::abs(double(b[i])));
  return num / std::max(1.0, den);
}

template <class S>
void segment_vs_dual_form(int f, int n, bool fresh, double tol, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int P = f * f + f;
  const auto XQ = randn<S>(size_t(n * f), rng), XK = randn<S>(size_t(n * f), rng), XV = randn<S>(size_t(n * f), rng);
  const auto theta = randn<S>(size_t(P), rng, 0.3), ln_w = randn<S>(size_t(f), rng, 0.5), ln_b = randn<S>(size_t(f), rng, 0.5);
  std::vector<S> token_eta(static_cast<size_t>(n)), lr(static_cast<size_t>(n));
  for (int t = 0; t < n; ++t) token_eta[size_t(t)] = S(1.0 / (t + 1)), lr[size_t(t)] = S(0.02 + 0.01 * t);
  std::vector<S> gacc0 = fresh ? std::vector<S>(size_t(P), S(0)) : randn<S>(size_t(P), rng, 0.1);

  // the library's CPU path
  using M = Eigen::Map<const MatT<S>>;
  const M q(XQ.data(), n, f), k(XK.data(), n, f), v(XV.data(), n, f);
  inner::Segment<S> s{q, k, v, token_eta.data(), lr.data(), ln_w.data(), ln_b.data(), fresh};
  std::vector<S> g_ref = gacc0;
  MatT<S> Zref(n, f);
  inner::Linear::Workspace<S> ws;
  inner::Linear::dual_form<S>(theta.data(), g_ref.data(), s, Zref, ws);

  // the tile maths
  std::vector<S> g_tile = gacc0, Z(size_t(n * f)), scratch(size_t(2 * f + n * f));
  tile::linear_segment(theta.data(), g_tile.data(), fresh, n, f, XQ.data(), XK.data(), XV.data(), token_eta.data(),
                       lr.data(), ln_w.data(), ln_b.data(), Z.data(), scratch.data());
  const std::vector<S> zr(Zref.data(), Zref.data() + n * f);
  INFO("f " << f << ", n " << n << (fresh ? ", fresh" : ", mid-mini-batch"));
  CHECK(rel_err(Z, zr) < tol);
  CHECK(rel_err(g_tile, g_ref) < tol);
}

}  // namespace

TEST_CASE("tile: TTT-Linear's segment == inner::Linear::dual_form (double and float; fresh and mid-mini-batch)") {
  uint64_t seed = 1;
  for (int f : {2, 8, 16, 64})
    for (int n : {1, 3, 16})
      for (bool fresh : {true, false}) {
        segment_vs_dual_form<double>(f, n, fresh, 1e-12, seed++);
        segment_vs_dual_form<float>(f, n, fresh, 1e-5, seed++);
      }
}

TEST_CASE("tile: the LayerNorm row == blocks::layer_norm") {
  std::mt19937_64 rng(3);
  const int f = 24;
  const auto x = randn<double>(size_t(f), rng, 2.0), g = randn<double>(size_t(f), rng), b = randn<double>(size_t(f), rng);
  std::vector<double> y(static_cast<size_t>(f));
  tile::layer_norm_row(x.data(), g.data(), b.data(), f, y.data());
  MatT<double> X = Eigen::Map<const MatT<double>>(x.data(), 1, f), Y(1, f);
  blocks::layer_norm(X, g.data(), b.data(), 1e-6, Y);
  CHECK(rel_err(y, std::vector<double>(Y.data(), Y.data() + f)) < 1e-12);
}

TEST_CASE("tile: the scan over a chunk split anywhere == the scan in one piece (carried theta and gradient)") {
  std::mt19937_64 rng(5);
  const int f = 8, mb = 4, L = 19, P = f * f + f;
  const auto XQ = randn<double>(size_t(L * f), rng), XK = randn<double>(size_t(L * f), rng), XV = randn<double>(size_t(L * f), rng);
  const auto theta0 = randn<double>(size_t(P), rng, 0.3), ln_w = randn<double>(size_t(f), rng), ln_b = randn<double>(size_t(f), rng);
  std::vector<double> token_eta(static_cast<size_t>(L)), lr(static_cast<size_t>(L));
  for (int t = 0; t < L; ++t) token_eta[size_t(t)] = 1.0 / (t % mb + 1), lr[size_t(t)] = 0.05;
  std::vector<double> scratch(static_cast<size_t>(2 * f + mb * f));
  auto run = [&](const std::vector<int>& cuts) {
    std::vector<double> theta = theta0, gacc(size_t(P), 0.0), Z(size_t(L * f));
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int a = cuts[i], n = cuts[i + 1] - cuts[i];
      tile::linear_scan_head(n, f, mb, a, XQ.data() + a * f, XK.data() + a * f, XV.data() + a * f, token_eta.data() + a,
                             lr.data() + a, ln_w.data(), ln_b.data(), theta.data(), gacc.data(), Z.data() + a * f,
                             scratch.data());
    }
    Z.insert(Z.end(), theta.begin(), theta.end());
    Z.insert(Z.end(), gacc.begin(), gacc.end());
    return Z;
  };
  const auto whole = run({0, L});
  for (const auto& cuts : {std::vector<int>{0, 1, L}, {0, 5, 6, 13, L}, {0, 4, 8, 12, 16, L}})
    CHECK(rel_err(run(cuts), whole) < 1e-12);
}
