// A user learner brings its own backward: a bias-free TTT-Linear (f(x) = x W) with a
// LearnerGrad specialisation written here, checked with train/gradcheck.hpp and used by
// loss_and_grad. Broken variants show that the checks catch a wrong backward and a wrong claim
// that the backward runs in place (state_grad_in_place).
#include <doctest/doctest.h>

#include <ttt/train/model_grad.hpp>
#include <ttt/train/gradcheck.hpp>

#include "test_helpers.hpp"

using namespace ttt;

namespace test_custom_learner_grad {

template <int Broken>
struct BiasFreeLinear {
  static constexpr std::string_view name = "bias_free_linear";
  static std::vector<inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}, inner::ParamSpec::Init::normal}}; }
  static void apply(const float* theta, int64_t f, CMatRef X, MatRef Z) { Z.noalias() = X * CMapMat(theta, f, f); }
  static void accumulate_grad(const float*, int64_t f, CMatRef X, CMatRef dZ, const float* w, float* grad) {
    MapMat gW(grad, f, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) gW.noalias() += (w[r] * X.row(r)).transpose() * dZ.row(r);
  }
};

// Zq = XQ W - (E o XQ XK^T) G, G = ln_l2_grad(XK W, XV - XK), W_end = W - e XK^T diag(lr) G.
// Written as a user would: plain Eigen on the scalar S, scratch slots for the temporaries.
}  // namespace test_custom_learner_grad

template <int Broken>
struct ttt::train::LearnerGrad<test_custom_learner_grad::BiasFreeLinear<Broken>> {
  enum : size_t { kZ, kT, kG, kE, kS, kA, kdA, kdG, kdS, kKd, kdZ, kdT };
  // Broken 2 claims a backward that takes one buffer as dth_end and dth0, but it adds into dW
  // before it reads dW_end (Kd below)
  static constexpr bool state_grad_in_place = Broken == 2;
  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f);
    auto Z = ws(kZ, n, f), T = ws(kT, n, f), G = ws(kG, n, f), E = ws(kE, n, n), A = ws(kA, n, n);
    Z.noalias() = s.XK * W;
    T = s.XV - s.XK;
    blocks::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
    detail::eta_matrix(s, E);
    A.noalias() = s.XQ * s.XK.transpose();
    A = A.cwiseProduct(E);
    Zq.noalias() = s.XQ * W;
    Zq.noalias() -= A * G;
    Eigen::Map<MatT<S>> We(th_end, f, f);
    We = W;
    const S e = s.token_eta[n - 1];
    for (Eigen::Index j = 0; j < n; ++j) We.noalias() -= (e * s.lr[j]) * s.XK.row(j).transpose() * G.row(j);
  }
  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W(th, f, f), dWe(dth_end, f, f);
    Eigen::Map<MatT<S>> dW(dth0, f, f);
    auto Z = ws(kZ, n, f), T = ws(kT, n, f), G = ws(kG, n, f), E = ws(kE, n, n), Sm = ws(kS, n, n);
    Z.noalias() = s.XK * W;
    T = s.XV - s.XK;
    blocks::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
    detail::eta_matrix(s, E);
    Sm.noalias() = s.XQ * s.XK.transpose();
    // Zq = XQ W - (E o S) G
    dW.noalias() += s.XQ.transpose() * dZq;
    dW += dWe;
    o.dXQ.noalias() += dZq * W.transpose();
    auto dA = ws(kdA, n, n);
    dA.noalias() = -(dZq * G.transpose());
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = t + 1; j < n; ++j) dA(t, j) = 0;
    auto A = ws(kA, n, n), dG = ws(kdG, n, f), dS = ws(kdS, n, n);
    A = E.cwiseProduct(Sm);
    dG.noalias() = -(A.transpose() * dZq);
    dS = dA.cwiseProduct(E);
    o.dXQ.noalias() += dS * s.XK;
    o.dXK.noalias() += dS.transpose() * s.XQ;
    A = dA.cwiseProduct(Sm);  // dE
    detail::eta_matrix_bwd<S>(s, A, o);
    // W_end = W - e sum_j lr_j XK_j^T G_j
    const S e = s.token_eta[n - 1];
    auto Kd = ws(kKd, n, f);
    Kd.noalias() = s.XK * dWe;
    for (Eigen::Index j = 0; j < n; ++j) {
      dG.row(j) -= e * s.lr[j] * Kd.row(j);
      o.dXK.row(j) -= e * s.lr[j] * (G.row(j) * dWe.transpose());
      o.d_lr[j] -= e * Kd.row(j).dot(G.row(j));
      o.d_token_eta[n - 1] -= s.lr[j] * Kd.row(j).dot(G.row(j));
    }
    if constexpr (Broken) dG *= S(0.999);  // a 0.1% error on the inner gradient's cotangent
    // G = ln_l2_grad(XK W, XV - XK)
    auto dZ = ws.zero(kdZ, n, f), dT = ws.zero(kdT, n, f);
    blocks::ln_l2_grad_bwd(Z, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    dW.noalias() += s.XK.transpose() * dZ;
    o.dXK.noalias() += dZ * W.transpose();
  }
};

namespace test_custom_learner_grad {

TEST_CASE("a user learner's backward: checked by gradcheck, used by loss_and_grad") {
  using Good = BiasFreeLinear<0>;
  const auto rf = train::check_learner_forward<Good>(8, 6, 1);
  const auto rb = train::check_learner_backward<Good>(8, 6, 1);
  INFO("forward " << rf.max_err << " at " << rf.worst << "; backward " << rb.max_err << " at " << rb.worst);
  CHECK(rf.max_err < 1e-5);
  CHECK(rb.max_err < 1e-6);
  CHECK(train::check_learner_backward<BiasFreeLinear<1>>(8, 6, 1).max_err > 1e-5);
  const auto ri = train::check_learner_backward<BiasFreeLinear<2>>(8, 6, 1);
  INFO("a wrong state_grad_in_place: " << ri.max_err << " at " << ri.worst);
  CHECK(ri.max_err > 1e-2);
  CHECK(ri.worst.find("(in place)") != std::string::npos);

  ModelConfig cfg = ModelConfig::sized(std::string(Good::name), 31, 16, 2, 2, 24, 4);
  TTTModel<Good> model(cfg);
  th::randomize(model, 3, 0.3);
  const auto ids = th::random_ids(10, cfg.vocab_size, 4);
  TTTModel<Good> grad(cfg);
  const double loss = train::loss_and_grad(model, {ids}, grad);
  const Mat lg = model.forward(std::span<const int64_t>(ids));
  double s = 0;
  for (int64_t t = 0; t + 1 < 10; ++t) {
    const auto row = lg.row(t).cast<double>();
    const double mx = row.maxCoeff();
    s += mx + std::log((row.array() - mx).exp().sum()) - row(ids[size_t(t + 1)]);
  }
  CHECK(std::abs(loss - s / 9) < 1e-5 * std::abs(loss));
  double gn = 0;
  grad.visit_params([&](const ParamRef& p) {
    if (p.name.find("W1") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); ++i) gn += double(p.at(i)) * double(p.at(i));
  });
  CHECK(gn > 0);
}

}  // namespace test_custom_learner_grad
