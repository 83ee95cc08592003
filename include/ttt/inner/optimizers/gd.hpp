#pragma once
/// \file inner/optimizers/gd.hpp
/// TTT's inner update: one gradient step per mini-batch, theta_t = theta0 - eta_t gacc_t.
#include "../optimizer.hpp"

namespace ttt::inner {

struct GD {
  static constexpr std::string_view name = "gd";
  static constexpr bool affine_queries = true;  // keep 1, no shift
  template <class S>
  static void step(const Step<S>& s) {
    const int64_t P = param_count(s.specs);
    for (int64_t i = 0; i < P; ++i) s.theta[i] = s.theta0[i] - s.eta * s.gacc[i];
  }
  template <class S>
  static void step_vjp(const Step<S>& s, const S* dtheta, const S*, const StepGrad<S>& d) {
    const int64_t P = param_count(s.specs);
    S de = S(0);
    for (int64_t i = 0; i < P; ++i) {
      d.dtheta0[i] += dtheta[i];
      d.dgacc[i] -= s.eta * dtheta[i];
      de -= s.gacc[i] * dtheta[i];
    }
    *d.deta += de;
  }
};

}  // namespace ttt::inner
