#pragma once
// What the derived-path tests share: a learner that exists only in the tests (its map alone,
// nonlinear) and the check of a double model's loss_and_grad against central differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <ttt/inner/learner.hpp>
#include <ttt/train/model_grad.hpp>

namespace ttt_test {

// f(x) = tanh(x W + b) + x: written once, generically; no accumulate_grad, no LearnerGrad.
struct TanhResidual {
  static constexpr std::string_view name = "tanh_residual";
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) {
    return {{"W1", {f, f}, ttt::inner::ParamSpec::Init::normal}, {"b1", {1, f}, ttt::inner::ParamSpec::Init::zeros}};
  }
  template <class S>
  static void apply(const S* th, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z) {
    using std::tanh;
    Z.noalias() = X * Eigen::Map<const ttt::MatT<S>>(th, f, f);
    Z.rowwise() += Eigen::Map<const ttt::RowT<S>>(th + f * f, f);
    for (Eigen::Index i = 0; i < Z.rows(); ++i)
      for (Eigen::Index j = 0; j < Z.cols(); ++j) Z(i, j) = tanh(Z(i, j)) + X(i, j);
  }
};

/// loss_and_grad of a double model against central differences of its loss: per parameter
/// tensor, the largest-gradient entry and the middle one (relative error, floor 1e-4 on the
/// difference quotient). Adds the number of entries checked to `checked`; returns the worst error.
template <class Model>
double fd_check_loss_and_grad(Model& model, const std::vector<int64_t>& ids, double tol, int& checked) {
  Model grad(model.cfg), scratch(model.cfg);
  ttt::train::loss_and_grad(model, {ids}, grad);
  const double h = 1e-6;
  double worst = 0;
  std::vector<ttt::BasicParamRef<double>> ps, gs;
  model.visit_params([&](const ttt::BasicParamRef<double>& p) { ps.push_back(p); });
  grad.visit_params([&](const ttt::BasicParamRef<double>& p) { gs.push_back(p); });
  REQUIRE(ps.size() == gs.size());
  for (size_t k = 0; k < ps.size(); ++k) {
    int64_t best = 0;
    for (int64_t i = 0; i < gs[k].numel(); ++i)
      if (std::abs(gs[k].at(i)) > std::abs(gs[k].at(best))) best = i;
    for (int64_t i : {best, gs[k].numel() / 2}) {
      double& x = ps[k].at(i);
      const double x0 = x;
      x = x0 + h;
      const double lp = ttt::train::loss_and_grad(model, {ids}, scratch);
      x = x0 - h;
      const double lm = ttt::train::loss_and_grad(model, {ids}, scratch);
      x = x0;
      const double fd = (lp - lm) / (2 * h);
      const double e = std::abs(gs[k].at(i) - fd) / std::max(std::abs(fd), 1e-4);
      INFO(ps[k].name << "[" << i << "] analytic " << gs[k].at(i) << " fd " << fd);
      CHECK(e < tol);
      worst = std::max(worst, e);
      ++checked;
    }
  }
  return worst;
}

}  // namespace ttt_test
