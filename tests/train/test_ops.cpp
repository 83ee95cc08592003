// The pieces of the backward pass, each against central finite differences in double: the VJP of
// the LayerNorm-L2 inner gradient (the second derivative of the inner loss), gelu and the
// reference's gelu_bwd derivatives, LayerNorm, RMSNorm, conv, RoPE, and each learner's mini-batch
// backward (LearnerGrad<L>::backward against LearnerGrad<L>::forward); and the learners' double
// forward against the library's float dual form.
#include <doctest/doctest.h>

#include <functional>
#include <random>
#include <ttt/train/backward.hpp>

using namespace ttt;
using train::MatD;
using train::RowD;

namespace {

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

}  // namespace

TEST_CASE("ln_l2_grad VJP (second derivative of the inner loss) matches finite differences") {
  const int n = 3, d = 8;
  MatD Z = rnd(n, d), T = rnd(n, d), dG = rnd(n, d);
  MatD gam = rnd(1, d, 0.3);
  gam.array() += 1.0;
  MatD bet = rnd(1, d, 0.3);
  auto f = [&] {
    MatD G;
    train::ops::ln_l2_grad(Z, T, gam.data(), bet.data(), G);
    return dot(G, dG);
  };
  MatD dZ = MatD::Zero(n, d), dT = MatD::Zero(n, d), dg = MatD::Zero(1, d), db = MatD::Zero(1, d);
  train::ops::ln_l2_grad_bwd(Z, T, gam.data(), bet.data(), dG, dZ, dT, dg.data(), db.data());
  auto v = [](const MatD& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  CHECK(fd_check(Z.data(), size_t(Z.size()), f, v(dZ), 1e-3) < 1e-6);
  CHECK(fd_check(T.data(), size_t(T.size()), f, v(dT), 1e-3) < 1e-6);
  CHECK(fd_check(gam.data(), size_t(d), f, v(dg), 1e-3) < 1e-6);
  CHECK(fd_check(bet.data(), size_t(d), f, v(db), 1e-3) < 1e-6);
  // and the forward is the gradient of the inner loss 0.5 ||gam LN(z) + bet - T||^2
  auto inner = [&] {
    MatD y;
    train::ops::ln(Z, gam.data(), bet.data(), 1e-6, y);
    return 0.5 * (y - T).squaredNorm();
  };
  MatD G;
  train::ops::ln_l2_grad(Z, T, gam.data(), bet.data(), G);
  CHECK(fd_check(Z.data(), size_t(Z.size()), inner, v(G), 1e-3) < 1e-6);
}

TEST_CASE("activation derivatives, LayerNorm, RMSNorm, conv and RoPE VJPs") {
  using namespace train::ops;
  for (double x : {-3.0, -1.2, -0.3, 0.0, 0.4, 1.1, 2.5}) {
    const double h = 1e-5;
    CHECK(std::abs(gelu_grad(x) - (gelu(x + h) - gelu(x - h)) / (2 * h)) < 1e-8);
    CHECK(std::abs(gelu_bwd_ref_grad(x) - (gelu_bwd_ref(x + h) - gelu_bwd_ref(x - h)) / (2 * h)) < 1e-8);
    CHECK(std::abs(gelu_bwd_ref(x) - gelu_grad(x)) < 1e-6);
    for (auto a : {nn::Act::silu, nn::Act::gelu, nn::Act::gelu_tanh})
      CHECK(std::abs(act_grad(a, x) - (act(a, x + h) - act(a, x - h)) / (2 * h)) < 1e-8);
  }
  auto v = [](const auto& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  const int n = 5, d = 6;
  MatD X = rnd(n, d), dY = rnd(n, d), g = rnd(1, d), b = rnd(1, d);
  {  // LayerNorm
    auto f = [&] {
      MatD y;
      ln(X, g.data(), b.data(), 1e-6, y);
      return dot(y, dY);
    };
    MatD dX = MatD::Zero(n, d), dg = MatD::Zero(1, d), db = MatD::Zero(1, d);
    ln_bwd(X, g.data(), 1e-6, dY, dX, dg.data(), db.data());
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(g.data(), size_t(d), f, v(dg), 1e-3) < 1e-6);
    CHECK(fd_check(b.data(), size_t(d), f, v(db), 1e-3) < 1e-6);
  }
  {  // RMSNorm
    RowD w = g.row(0);
    auto f = [&] {
      MatD y;
      rms(X, w, 1e-5, y);
      return dot(y, dY);
    };
    MatD dX = MatD::Zero(n, d);
    RowD dw = RowD::Zero(d);
    rms_bwd(X, w, 1e-5, dY, dX, dw);
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(w.data(), size_t(d), f, v(dw), 1e-3) < 1e-6);
  }
  {  // conv
    MatD W = rnd(d, 3);
    RowD cb = rnd(1, d).row(0);
    auto f = [&] {
      MatD y;
      conv(X, W, cb, y);
      return dot(y, dY);
    };
    MatD dX = MatD::Zero(n, d), dW = MatD::Zero(d, 3);
    RowD dcb = RowD::Zero(d);
    conv_bwd(X, W, dY, dX, dW, dcb);
    CHECK(fd_check(X.data(), size_t(X.size()), f, v(dX), 1e-3) < 1e-6);
    CHECK(fd_check(W.data(), size_t(W.size()), f, v(dW), 1e-3) < 1e-6);
    CHECK(fd_check(cb.data(), size_t(d), f, v(dcb), 1e-3) < 1e-6);
  }
  {  // RoPE: inverse undoes, and is the transpose
    nn::RopeTable tab(4, 6, 100.0);
    MatD Y = X;
    rope(Y, 6, tab, 4, false);
    MatD Z = Y;
    rope(Z, 6, tab, 4, true);
    CHECK((Z - X).norm() < 1e-6);  // float cos/sin tables: not exactly orthogonal
    MatD dYr = dY;
    rope(dYr, 6, tab, 4, true);
    CHECK(std::abs(dot(Y, dY) - dot(X, dYr)) < 1e-12);
  }
}

namespace {

/// LearnerGrad<L>::backward against finite differences of LearnerGrad<L>::forward, on a random
/// mini-batch with random cotangents of Zq and of the end state.
template <class L>
void check_segment(int64_t f, int64_t n) {
  const int64_t P = inner::param_count(L::param_specs(f));
  MatD XQ = rnd(n, f, 0.7), XK = rnd(n, f, 0.7), XV = rnd(n, f, 0.7);
  MatD th = rnd(1, P, 0.3), te = rnd(1, n, 0.1), lr = rnd(1, n, 0.05), lw = rnd(1, f, 0.2), lb = rnd(1, f, 0.3);
  te.array() += 0.5;
  lr.array() += 0.3;
  lw.array() += 1.0;
  const MatD dZq = rnd(n, f), dthe = rnd(1, P);
  auto f_all = [&] {
    const train::SegmentD s{XQ, XK, XV, te.data(), lr.data(), lw.data(), lb.data()};
    MatD Zq;
    std::vector<double> the(static_cast<size_t>(P));
    train::LearnerGrad<L>::forward(th.data(), f, s, Zq, the.data());
    return dot(Zq, dZq) + dot(Eigen::Map<MatD>(the.data(), 1, P), dthe);
  };
  const train::SegmentD s{XQ, XK, XV, te.data(), lr.data(), lw.data(), lb.data()};
  train::SegmentGradD o;
  o.dXQ = MatD::Zero(n, f), o.dXK = MatD::Zero(n, f), o.dXV = MatD::Zero(n, f);
  o.d_token_eta.assign(size_t(n), 0.0), o.d_lr.assign(size_t(n), 0.0);
  MatD dlw = MatD::Zero(1, f), dlb = MatD::Zero(1, f), dth = MatD::Zero(1, P);
  o.d_ln_w = dlw.data(), o.d_ln_b = dlb.data();
  train::LearnerGrad<L>::backward(th.data(), f, s, dZq, dthe.data(), dth.data(), o);
  auto v = [](const auto& m) { return std::vector<double>(m.data(), m.data() + m.size()); };
  CHECK(fd_check(th.data(), size_t(P), f_all, v(dth), 1e-2) < 1e-6);
  CHECK(fd_check(XQ.data(), size_t(XQ.size()), f_all, v(o.dXQ), 1e-2) < 1e-6);
  CHECK(fd_check(XK.data(), size_t(XK.size()), f_all, v(o.dXK), 1e-2) < 1e-6);
  CHECK(fd_check(XV.data(), size_t(XV.size()), f_all, v(o.dXV), 1e-2) < 1e-6);
  CHECK(fd_check(te.data(), size_t(n), f_all, o.d_token_eta, 1e-2) < 1e-6);
  CHECK(fd_check(lr.data(), size_t(n), f_all, o.d_lr, 1e-2) < 1e-6);
  CHECK(fd_check(lw.data(), size_t(f), f_all, v(dlw), 1e-2) < 1e-6);
  CHECK(fd_check(lb.data(), size_t(f), f_all, v(dlb), 1e-2) < 1e-6);
}

/// The double forward of a learner's mini-batch equals the library's float dual form.
template <class L>
void check_forward(int64_t f, int64_t n) {
  const int64_t P = inner::param_count(L::param_specs(f));
  MatD XQ = rnd(n, f, 0.7), XK = rnd(n, f, 0.7), XV = rnd(n, f, 0.7);
  MatD th = rnd(1, P, 0.3), te = rnd(1, n, 0.1), lr = rnd(1, n, 0.05), lw = rnd(1, f, 0.2), lb = rnd(1, f, 0.3);
  te.array() += 0.5, lr.array() += 0.3, lw.array() += 1.0;
  const train::SegmentD s{XQ, XK, XV, te.data(), lr.data(), lw.data(), lb.data()};
  MatD Zq;
  std::vector<double> the(static_cast<size_t>(P));
  train::LearnerGrad<L>::forward(th.data(), f, s, Zq, the.data());
  // float library
  const Mat fq = XQ.cast<float>(), fk = XK.cast<float>(), fv = XV.cast<float>();
  const Eigen::RowVectorXf fte = te.row(0).cast<float>(), flr = lr.row(0).cast<float>(),
                           flw = lw.row(0).cast<float>(), flb = lb.row(0).cast<float>();
  std::vector<float> theta(static_cast<size_t>(P)), gacc(size_t(P), 0.0f);
  for (int64_t i = 0; i < P; ++i) theta[size_t(i)] = float(th(0, i));
  const inner::Segment seg{CMatRef(fq), CMatRef(fk), CMatRef(fv), fte.data(), flr.data(), flw.data(), flb.data(), true};
  Mat Zf(n, f);
  typename L::Workspace ws;
  L::dual_form(theta.data(), gacc.data(), seg, MatRef(Zf), ws);
  CHECK((Zf.cast<double>() - Zq).norm() / Zq.norm() < 1e-5);
  for (int64_t i = 0; i < P; ++i) {  // end state = theta0 - token_eta[n-1] * gacc
    const double want = double(theta[size_t(i)]) - double(fte[n - 1]) * double(gacc[size_t(i)]);
    CHECK(std::abs(the[size_t(i)] - want) < 1e-5);
  }
}

}  // namespace

TEST_CASE("learner mini-batch backward matches finite differences (Linear, MLP)") {
  check_segment<inner::Linear>(4, 5);
  check_segment<inner::MLP>(4, 5);
  check_segment<inner::Linear>(6, 1);
  check_segment<inner::MLP>(3, 2);
}

TEST_CASE("learner mini-batch forward in double equals the library's dual form") {
  check_forward<inner::Linear>(8, 6);
  check_forward<inner::MLP>(8, 6);
}
