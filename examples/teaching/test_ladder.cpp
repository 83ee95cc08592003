// Every level of the teaching ladder equals the one before it (examples/teaching/README.md), in
// double, on a head that leaves remainders (L = 37 tokens, head dim 16, mini-batches that do and
// do not divide L, one longer than the library's 64-row sub-block).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "level0_adam.hpp"
#include "level1_naive.hpp"
#include "level2_minibatch.hpp"
#include "level3_dual.hpp"
#include "level4_library.hpp"

using teach::Mat;
using teach::Row;
using M = Mat<double>;

namespace {

constexpr int64_t kL = 37, kD = 24, kF = 16;
// Relative tolerance in double: the levels sum the same terms in different orders (and level 3
// with products instead of loops); 37 tokens of unit-scale views leave differences near 1e-14.
constexpr double kTol = 1e-11;

/// max |a - b| / max(1, max |b|)
double rel_diff(const M& a, const M& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).cwiseAbs().maxCoeff() / std::max(1.0, b.cwiseAbs().maxCoeff());
}

const teach::Views<double>& head() {
  static const auto x = teach::random_head<double>(kL, kD, kF, 7);
  return x;
}
M W0() { return teach::random_matrix<double>(kF, kF, 0.02, 99); }  // N(0, 0.02), as TTT's W1
// eta * ||k||^2 ~ 0.5: a step that learns without diverging
constexpr double kEta = 0.5 / double(kF);

}  // namespace

TEST_CASE("level 0 (not TTT) fits its external target: its loss goes down") {
  const M X = teach::random_matrix<double>(32, kD, 1.0, 1);
  const M Y = X * teach::random_matrix<double>(kD, kF, 0.2, 2);  // the target comes from outside
  teach::level0::AdamInForward<double> layer{teach::random_matrix<double>(kD, kF, 0.02, 3)};
  double before = 0, after = 0;
  const M Z = layer.forward(X, Y, &before, &after);
  CHECK(Z.rows() == 32);
  CHECK(after < 0.5 * before);
}

TEST_CASE("level 1 == level 2 when the mini-batch is 1 (mini-batch GD is then online GD)") {
  M Wa = W0(), Wb = W0();
  const M Z1 = teach::level1::forward(head(), Wa, kEta);
  const M Z2 = teach::level2::forward(head(), Wb, kEta, 1);
  CHECK(rel_diff(Z2, Z1) < kTol);
  CHECK(rel_diff(Wb, Wa) < kTol);
}

TEST_CASE("level 1 != level 2 for b > 1: a mini-batch's gradients are all taken at its W_0, by design") {
  for (int64_t b : {2, 8, 37}) {
    CAPTURE(b);
    M Wa = W0(), Wb = W0();
    const M Z1 = teach::level1::forward(head(), Wa, kEta);
    const M Z2 = teach::level2::forward(head(), Wb, kEta, b);
    CHECK(rel_diff(Z2.topRows(1), Z1.topRows(1)) < kTol);  // the first token sees the same W_0 ...
    CHECK(rel_diff(Z2, Z1) > 1e-3);                        // ... the others do not
  }
}

TEST_CASE("level 2 == level 3 (dual form) == level 4 (the library's dual form), every mini-batch size") {
  for (int64_t b : {1, 3, 4, 16, 37, 64}) {  // 37 = L: one mini-batch; 3: remainder 1
    CAPTURE(b);
    M W2 = W0(), W3 = W0(), W4 = W0();
    const M Z2 = teach::level2::forward(head(), W2, kEta, b);
    const M Z3 = teach::level3::forward(head(), W3, kEta, b);
    const M Z4 = teach::level4::forward(head(), W4, kEta, b);
    CHECK(rel_diff(Z3, Z2) < kTol);
    CHECK(rel_diff(W3, W2) < kTol);
    CHECK(rel_diff(Z4, Z3) < kTol);
    CHECK(rel_diff(W4, W3) < kTol);
    CHECK(Z2.cwiseAbs().maxCoeff() > 0.1);  // not a comparison of zeros
  }
}

TEST_CASE("level 4 on a sequence longer than the library's 64-row sub-block") {
  const auto x = teach::random_head<double>(150, kD, kF, 11);
  for (int64_t b : {100, 150}) {
    CAPTURE(b);
    M W2 = W0(), W4 = W0();
    const M Z2 = teach::level2::forward(x, W2, kEta, b);
    const M Z4 = teach::level4::forward(x, W4, kEta, b);
    CHECK(rel_diff(Z4, Z2) < kTol);
    CHECK(rel_diff(W4, W2) < kTol);
  }
}

// ---- the library's TTT-Linear with its extras, against level 2 extended with the same extras ----

namespace {

/// d/dz 0.5 ||gamma LN(z) + beta - target||^2 for one row, written from the LayerNorm backward
/// (independently of the library's closed form, blocks/ln_l2.hpp).
Row<double> ln_l2_grad_row(const Row<double>& z, const Row<double>& target, const Row<double>& g, const Row<double>& be) {
  const double n = double(z.size()), mu = z.mean();
  const double var = (z.array() - mu).square().sum() / n, sd = std::sqrt(var + 1e-6);
  const Row<double> xh = (z.array() - mu) / sd;
  const Row<double> dxh = (g.cwiseProduct(xh) + be - target).cwiseProduct(g);  // d/dxh
  return ((dxh.array() - dxh.mean()) - xh.array() * dxh.cwiseProduct(xh).mean()) / sd;
}

/// Level 2 with the library's extras: bias, LayerNorm + residual in the loss, eta[t, s] =
/// token_eta[t] lr[s]. Returns Zq (before the layer's q + LN(Zq)); W, bias updated.
M level2_extended(const teach::Views<double>& x, M& W, Row<double>& bias, const Row<double>& g, const Row<double>& be,
                  const std::vector<double>& token_eta, const std::vector<double>& lr, int64_t b) {
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  M Z(L, f);
  for (int64_t t0 = 0; t0 < L; t0 += b) {
    const M W0 = W;
    const Row<double> b0 = bias;
    M gW = M::Zero(f, f);
    Row<double> gb = Row<double>::Zero(f);
    for (int64_t t = t0; t < std::min(L, t0 + b); ++t) {
      const Row<double> z = x.XK.row(t) * W0 + b0;
      const Row<double> G = ln_l2_grad_row(z, x.XV.row(t) - x.XK.row(t), g, be);
      gW += lr[size_t(t)] * x.XK.row(t).transpose() * G;
      gb += lr[size_t(t)] * G;
      const double e = token_eta[size_t(t - t0)];
      W = W0 - e * gW;
      bias = b0 - e * gb;
      Z.row(t) = x.XQ.row(t) * W + bias;
    }
  }
  return Z;
}

}  // namespace

TEST_CASE("level 4, inner::Linear with bias, LayerNorm + residual and learnable eta == level 2 extended") {
  const auto& x = head();
  const Row<double> g = Row<double>::Ones(kF) + teach::random_matrix<double>(1, kF, 0.1, 21);
  const Row<double> be = teach::random_matrix<double>(1, kF, 0.1, 22);
  const M lr_noise = teach::random_matrix<double>(1, kL, 1.0, 23);
  for (int64_t b : {1, 4, 16}) {
    CAPTURE(b);
    std::vector<double> token_eta(static_cast<size_t>(b)), lr(static_cast<size_t>(kL));
    for (int64_t t = 0; t < b; ++t) token_eta[size_t(t)] = 1.0 / double(t + 1) + 0.05 * double(t % 3);
    for (int64_t s = 0; s < kL; ++s) lr[size_t(s)] = 1.0 / (1.0 + std::exp(-lr_noise(0, s))) / double(kF);
    M W = W0();
    Row<double> bias = teach::random_matrix<double>(1, kF, 0.02, 24);
    std::vector<double> theta(W.data(), W.data() + W.size());
    theta.insert(theta.end(), bias.data(), bias.data() + bias.size());
    const std::vector<double> gv(g.data(), g.data() + kF), bv(be.data(), be.data() + kF);
    const M Z4 = teach::level4::forward_ttt_linear(x, theta, gv, bv, token_eta, lr, b);
    const M Z2 = level2_extended(x, W, bias, g, be, token_eta, lr, b);
    CHECK(rel_diff(Z4, Z2) < kTol);
    CHECK(rel_diff(Eigen::Map<const M>(theta.data(), kF, kF), W) < kTol);
    CHECK(rel_diff(Eigen::Map<const Row<double>>(theta.data() + kF * kF, kF), bias) < kTol);
  }
}
