// A user learner brings its own backward: a bias-free TTT-Linear (f(x) = x W) with a
// LearnerGrad specialisation written here, checked with train/gradcheck.hpp and used by
// loss_and_grad. A broken variant shows that the checks catch a wrong backward.
#include <doctest/doctest.h>

#include <ttt/train/backward.hpp>
#include <ttt/train/gradcheck.hpp>

#include "test_helpers.hpp"

using namespace ttt;

namespace {

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

}  // namespace

// Zq = XQ W - (E o XQ XK^T) G, G = ln_l2_grad(XK W, XV - XK), W_end = W - e XK^T diag(lr) G.
template <int Broken>
struct ttt::train::LearnerGrad<BiasFreeLinear<Broken>> {
  static void forward(const double* th, int64_t f, const SegmentD& s, MatD& Zq, double* th_end) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatD> W(th, f, f);
    MatD G;
    ops::ln_l2_grad(MatD(s.XK * W), s.XV - s.XK, s.ln_w, s.ln_b, G);
    const MatD E = detail::eta_matrix(s, n);
    Zq = s.XQ * W - E.cwiseProduct(s.XQ * s.XK.transpose()) * G;
    Eigen::Map<MatD> We(th_end, f, f);
    We = W;
    const double e = s.token_eta[n - 1];
    for (Eigen::Index j = 0; j < n; ++j) We -= (e * s.lr[j]) * s.XK.row(j).transpose() * G.row(j);
  }
  static void backward(const double* th, int64_t f, const SegmentD& s, const MatD& dZq, const double* dth_end,
                       double* dth0, SegmentGradD& o) {
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatD> W(th, f, f), dWe(dth_end, f, f);
    Eigen::Map<MatD> dW(dth0, f, f);
    const MatD Z = s.XK * W, T = s.XV - s.XK;
    MatD G;
    ops::ln_l2_grad(Z, T, s.ln_w, s.ln_b, G);
    const MatD E = detail::eta_matrix(s, n), S = s.XQ * s.XK.transpose();
    // Zq = XQ W - (E o S) G
    dW += s.XQ.transpose() * dZq + dWe;
    o.dXQ += dZq * W.transpose();
    MatD dA = -(dZq * G.transpose());
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index j = t + 1; j < n; ++j) dA(t, j) = 0;
    MatD dG = -(E.cwiseProduct(S)).transpose() * dZq;
    const MatD dS = dA.cwiseProduct(E);
    o.dXQ += dS * s.XK;
    o.dXK += dS.transpose() * s.XQ;
    detail::eta_matrix_bwd(s, MatD(dA.cwiseProduct(S)), o);
    // W_end = W - e sum_j lr_j XK_j^T G_j
    const double e = s.token_eta[n - 1];
    for (Eigen::Index j = 0; j < n; ++j) {
      const RowD kd = s.XK.row(j) * dWe;
      dG.row(j) -= e * s.lr[j] * kd;
      o.dXK.row(j) -= e * s.lr[j] * (G.row(j) * dWe.transpose());
      o.d_lr[size_t(j)] -= e * kd.dot(G.row(j));
      o.d_token_eta[size_t(n - 1)] -= s.lr[j] * kd.dot(G.row(j));
    }
    if constexpr (Broken) dG *= 0.999;  // a 0.1% error on the inner gradient's cotangent
    // G = ln_l2_grad(XK W, XV - XK)
    MatD dZ = MatD::Zero(n, f), dT = MatD::Zero(n, f);
    ops::ln_l2_grad_bwd(Z, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    dW += s.XK.transpose() * dZ;
    o.dXK += dZ * W.transpose();
  }
};

TEST_CASE("a user learner's backward: checked by gradcheck, used by loss_and_grad") {
  using Good = BiasFreeLinear<0>;
  const auto rf = train::check_learner_forward<Good>(8, 6, 1);
  const auto rb = train::check_learner_backward<Good>(8, 6, 1);
  INFO("forward " << rf.max_err << " at " << rf.worst << "; backward " << rb.max_err << " at " << rb.worst);
  CHECK(rf.max_err < 1e-5);
  CHECK(rb.max_err < 1e-6);
  CHECK(train::check_learner_backward<BiasFreeLinear<1>>(8, 6, 1).max_err > 1e-5);

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
