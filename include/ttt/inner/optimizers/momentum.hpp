#pragma once
/// \file inner/optimizers/momentum.hpp
/// Heavy-ball momentum across mini-batches (Titans' surprise): S_t = beta S0 - eta_t gacc_t,
/// theta_t = theta0 + S_t; S carries to the next mini-batch. beta = ttt_inner_beta (0.9). The
/// first mini-batch (S0 = 0) is plain gd.
#include "../optimizer.hpp"

namespace ttt::inner {

struct Momentum {
  static constexpr std::string_view name = "momentum";
  static constexpr std::string_view options[] = {"ttt_inner_beta"};
  static int64_t state_size(const std::vector<ParamSpec>& specs) { return param_count(specs); }
  template <class S>
  static void step(const Step<S>& s) {
    const int64_t P = param_count(s.specs);
    const S beta = S(s.rule.beta);
    for (int64_t i = 0; i < P; ++i) {
      s.state[i] = beta * s.state0[i] - s.eta * s.gacc[i];
      s.theta[i] = s.theta0[i] + s.state[i];
    }
  }
  template <class S>
  static void step_vjp(const Step<S>& s, const S* dtheta, const S* dstate, const StepGrad<S>& d) {
    const int64_t P = param_count(s.specs);
    const S beta = S(s.rule.beta);
    S de = S(0);
    for (int64_t i = 0; i < P; ++i) {
      const S dS = dstate[i] + dtheta[i];  // theta = theta0 + S
      d.dtheta0[i] += dtheta[i];
      d.dstate0[i] += beta * dS;
      d.dgacc[i] -= s.eta * dS;
      de -= s.gacc[i] * dS;
    }
    *d.deta += de;
  }
  // the weights query t reads: theta0 + beta S0 - eta_t gacc_t
  static constexpr bool affine_queries = true;
  template <class S>
  static void query_shift(const Step<S>& s, S* shift) {
    const int64_t P = param_count(s.specs);
    for (int64_t i = 0; i < P; ++i) shift[i] = S(s.rule.beta) * s.state0[i];
  }
  template <class S>
  static void query_shift_vjp(const Step<S>& s, const S* dshift, const StepGrad<S>& d) {
    const int64_t P = param_count(s.specs);
    for (int64_t i = 0; i < P; ++i) d.dstate0[i] += S(s.rule.beta) * dshift[i];
  }
};

}  // namespace ttt::inner
