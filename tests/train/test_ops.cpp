// The pieces of the backward pass, each against central finite differences in double: the VJP of
// the LayerNorm-L2 inner gradient (the second derivative of the inner loss), gelu and the
// reference's gelu_bwd derivatives, LayerNorm, RMSNorm, conv, RoPE, and each learner's mini-batch
// backward (LearnerGrad<L>::backward against LearnerGrad<L>::forward, train/gradcheck.hpp); and
// the learners' double forward against the library's float dual / primal form.
#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <ttt/blocks/activations.hpp>
#include <ttt/blocks/causal_conv.hpp>
#include <ttt/blocks/cross_entropy.hpp>
#include <ttt/blocks/layer_norm.hpp>
#include <ttt/blocks/ln_l2.hpp>
#include <ttt/blocks/rms_norm.hpp>
#include <ttt/blocks/rope.hpp>
#include <ttt/blocks/swiglu.hpp>
#include <ttt/inner/linear.hpp>
#include <ttt/inner/mlp.hpp>
#include <ttt/train/gradcheck.hpp>

using namespace ttt;

namespace test_ops {

std::mt19937_64 rng(1234);
MatD rnd(Eigen::Index r, Eigen::Index c, double s = 1.0) {
  std::normal_distribution<double> n(0.0, s);
  MatD m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}
double dot(const MatD& a, const MatD& b) { return (a.array() * b.array()).sum(); }

/// max over all entries of x of |analytic - fd| / (1e-8 + |fd|) style check: returns the max of
/// |a - fd| / max(|fd|, floor).
double fd_check(double* x, size_t n, const std::function<double()>& f, const std::vector<double>& analytic,
                double floor, double h = 1e-5) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f();
    x[i] = x0 - h;
    const double fm = f();
    x[i] = x0;
    const double fd = (fp - fm) / (2 * h);
    worst = std::max(worst, std::abs(analytic[i] - fd) / std::max(std::abs(fd), floor));
  }
  return worst;
}

TEST_CASE("ln_l2_grad VJP (second derivative of the inner loss) matches finite differences") {
  const int n = 3, d = 8;
  MatD Z = rnd(n, d), T = rnd(n, d), dG = rnd(n, d);
  MatD gam = rnd(1, d, 0.3);
  gam.array() += 1.0;
  MatD bet = rnd(1, d, 0.3);
  auto f = [&] {
    MatD G;
    blocks::ln_l2_grad(Z, T, gam.data(), bet.data(), G);
    return dot(G, dG);
  };
  MatD dZ = MatD::Zero(n, d), dT = MatD::Zero(n, d), dg = MatD::Zero(1, d), db = MatD::Zero(1, d);
  blocks::ln_l2_grad_bwd(Z, T, gam.data(), bet.data(), dG, dZ, dT, dg.data(), db.data());
  auto v = [](const MatD& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  CHECK(fd_check(Z.data(), size_t(Z.size()), f, v(dZ), 1e-3) < 1e-6);
  CHECK(fd_check(T.data(), size_t(T.size()), f, v(dT), 1e-3) < 1e-6);
  CHECK(fd_check(gam.data(), size_t(d), f, v(dg), 1e-3) < 1e-6);
  CHECK(fd_check(bet.data(), size_t(d), f, v(db), 1e-3) < 1e-6);
  // and the forward is the gradient of the inner loss 0.5 ||gam LN(z) + bet - T||^2
  auto inner = [&] {
    MatD y;
    blocks::layer_norm(Z, gam.data(), bet.data(), 1e-6, y);
    return 0.5 * (y - T).squaredNorm();
  };
  MatD G;
  blocks::ln_l2_grad(Z, T, gam.data(), bet.data(), G);
  CHECK(fd_check(Z.data(), size_t(Z.size()), inner, v(G), 1e-3) < 1e-6);
}

TEST_CASE("activation derivatives, LayerNorm, RMSNorm, conv and RoPE VJPs") {
  using namespace blocks;
  for (double x : {-3.0, -1.2, -0.3, 0.0, 0.4, 1.1, 2.5}) {
    const double h = 1e-5;
    CHECK(std::abs(gelu_grad(x) - (gelu(x + h) - gelu(x - h)) / (2 * h)) < 1e-8);
    CHECK(std::abs(gelu_bwd_ref_grad(x) - (gelu_bwd_ref(x + h) - gelu_bwd_ref(x - h)) / (2 * h)) < 1e-8);
    CHECK(std::abs(gelu_bwd_ref(x) - gelu_grad(x)) < 1e-6);
    for (auto a : {blocks::Act::silu, blocks::Act::gelu, blocks::Act::gelu_tanh})
      CHECK(std::abs(act_grad(a, x) - (act(a, x + h) - act(a, x - h)) / (2 * h)) < 1e-8);
  }
  auto v = [](const auto& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  const int n = 5, d = 6;
  MatD X = rnd(n, d), dY = rnd(n, d), g = rnd(1, d), b = rnd(1, d);
  {  // LayerNorm
    auto f = [&] {
      MatD y;
      layer_norm(X, g.data(), b.data(), 1e-6, y);
      return dot(y, dY);
    };
    MatD dX = MatD::Zero(n, d), dg = MatD::Zero(1, d), db = MatD::Zero(1, d);
    layer_norm_bwd(X, g.data(), 1e-6, dY, dX, dg.data(), db.data());
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(g.data(), size_t(d), f, v(dg), 1e-3) < 1e-6);
    CHECK(fd_check(b.data(), size_t(d), f, v(db), 1e-3) < 1e-6);
  }
  {  // RMSNorm
    RowD w = g.row(0);
    auto f = [&] {
      MatD y;
      rms_norm(X, w, 1e-5, y);
      return dot(y, dY);
    };
    MatD dX = MatD::Zero(n, d);
    RowD dw = RowD::Zero(d);
    rms_norm_bwd(X, w, 1e-5, dY, dX, dw);
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(w.data(), size_t(d), f, v(dw), 1e-3) < 1e-6);
  }
  {  // conv
    MatD W = rnd(d, 3);
    RowD cb = rnd(1, d).row(0);
    auto f = [&] {
      MatD y, ext;
      zero_history(X, 3, ext);
      causal_conv(ext, W, cb, y);
      return dot(y, dY);
    };
    MatD ext, dext = MatD::Zero(n + 2, d), dW = MatD::Zero(d, 3);
    RowD dcb = RowD::Zero(d);
    zero_history(X, 3, ext);
    causal_conv_bwd(ext, W, dY, dext, dW, dcb);
    const MatD dX = dext.bottomRows(n);
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(W.data(), size_t(W.size()), f, v(dW), 1e-3) < 1e-6);
    CHECK(fd_check(cb.data(), size_t(d), f, v(dcb), 1e-3) < 1e-6);
  }
  {  // RoPE: inverse undoes, and is the transpose
    RopeTable tab(4, 6, 100.0);
    const int64_t pos[] = {0, 1, 2, 3, 0};  // positions inside mini-batches of 4
    MatD Y = X;
    rope(Y, 6, tab, pos, false);
    MatD Z = Y;
    rope(Z, 6, tab, pos, true);
    CHECK((Z - X).norm() < 1e-6);  // float cos/sin tables: not exactly orthogonal
    MatD dYr = dY;
    rope(dYr, 6, tab, pos, true);
    CHECK(std::abs(dot(Y, dY) - dot(X, dYr)) < 1e-12);
  }
}

TEST_CASE("SwiGLU and cross-entropy VJPs match finite differences") {
  auto v = [](const auto& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  const int n = 4, C = 5, I = 7;
  for (auto act : {blocks::Act::silu, blocks::Act::gelu, blocks::Act::gelu_tanh}) {
    CAPTURE(int(act));
    blocks::SwiGLU<double> mlp(C, I);
    mlp.gate = rnd(I, C), mlp.up = rnd(I, C), mlp.down = rnd(C, I);
    MatD X = rnd(n, C), dH = rnd(n, C);
    auto f = [&] {
      MatD h = MatD::Zero(n, C);
      blocks::SwiGLU<double>::Tape tp;
      mlp.forward(X, act, tp, h);
      return dot(h, dH);
    };
    blocks::SwiGLU<double>::Tape tp;
    MatD h = MatD::Zero(n, C), dX;
    mlp.forward(X, act, tp, h, /*keep_pre=*/true);
    blocks::SwiGLU<double> g(C, I);
    blocks::SwiGLU<double>::Grad buf;
    mlp.backward(X, act, tp, dH, dX, g, buf);
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(mlp.gate.data(), size_t(mlp.gate.size()), f, v(g.gate), 1e-3) < 1e-6);
    CHECK(fd_check(mlp.up.data(), size_t(mlp.up.size()), f, v(g.up), 1e-3) < 1e-6);
    CHECK(fd_check(mlp.down.data(), size_t(mlp.down.size()), f, v(g.down), 1e-3) < 1e-6);
  }
  // cross entropy: the gradient is d/dlogits of the summed loss; an ignored row has none
  MatD Z = rnd(n, 9, 2.0);
  const std::vector<int64_t> y = {3, -1, 0, 8};
  auto loss = [&] { return blocks::cross_entropy(Z, y); };
  MatD G = Z;
  const double l = blocks::cross_entropy_grad(G, y, 1.0);
  CHECK(std::abs(l - loss()) < 1e-12);
  CHECK(G.row(1).norm() == 0.0);
  CHECK(fd_check(Z.data(), size_t(Z.size()), loss, v(G), 1e-3) < 1e-6);
}

TEST_CASE("learner mini-batch backward matches finite differences (Linear, MLP)") {
  for (const auto& fn : {std::pair<int64_t, int64_t>{4, 5}, {6, 1}, {3, 2}, {8, 8}}) {
    const int64_t f = fn.first, n = fn.second;
    const auto rl = train::check_learner_backward<inner::Linear>(f, n, uint64_t(f * 10 + n));
    const auto rm = train::check_learner_backward<inner::MLP>(f, n, uint64_t(f * 10 + n));
    INFO("f=" << f << " n=" << n << ": linear " << rl.max_err << " at " << rl.worst << ", mlp " << rm.max_err
              << " at " << rm.worst);
    CHECK(rl.max_err < 1e-6);
    CHECK(rm.max_err < 1e-6);
  }
}

TEST_CASE("learner mini-batch forward in double equals the library's dual form") {
  for (const auto& fn : {std::pair<int64_t, int64_t>{8, 6}, {4, 1}, {16, 16}}) {
    const int64_t f = fn.first, n = fn.second;
    INFO("f=" << f << " n=" << n);
    CHECK(train::check_learner_forward<inner::Linear>(f, n, 3).max_err < 1e-5);
    CHECK(train::check_learner_forward<inner::MLP>(f, n, 3).max_err < 1e-5);
    CHECK(train::check_learner_forward<inner::PrimalOnly<inner::MLP>>(f, n, 3).max_err < 1e-5);
  }
}

}  // namespace test_ops
