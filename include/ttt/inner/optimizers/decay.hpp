#pragma once
/// \file inner/optimizers/decay.hpp
/// Learned forgetting (Titans): theta_t = (1 - alpha_t) theta0 - eta_t gacc_t, with
/// alpha_t = sigmoid(x_t . w_decay + b_decay) per head, from the token through a learned gate
/// (the layer's learnable_ttt_decay_weight / _bias, bias initialised to -4: alpha ~ 0.018).
#include "../optimizer.hpp"

namespace ttt::inner {

struct Decay {
  static constexpr std::string_view name = "decay";
  static constexpr bool uses_gate = true;
  template <class S>
  static void step(const Step<S>& s) {
    const int64_t P = param_count(s.specs);
    const S keep = S(1) - s.alpha;
    for (int64_t i = 0; i < P; ++i) s.theta[i] = keep * s.theta0[i] - s.eta * s.gacc[i];
  }
  template <class S>
  static void step_vjp(const Step<S>& s, const S* dtheta, const S*, const StepGrad<S>& d) {
    const int64_t P = param_count(s.specs);
    const S keep = S(1) - s.alpha;
    S de = S(0), da = S(0);
    for (int64_t i = 0; i < P; ++i) {
      d.dtheta0[i] += keep * dtheta[i];
      d.dgacc[i] -= s.eta * dtheta[i];
      de -= s.gacc[i] * dtheta[i];
      da -= s.theta0[i] * dtheta[i];
    }
    *d.deta += de;
    *d.dalpha += da;
  }
  // the weights query t reads: (1 - alpha_t) theta0 - eta_t gacc_t
  static constexpr bool affine_queries = true;
  template <class S>
  static S query_keep(const Step<S>& s) {
    return S(1) - s.alpha;
  }
  template <class S>
  static void query_keep_vjp(const Step<S>&, S dkeep, const StepGrad<S>& d) {
    *d.dalpha -= dkeep;
  }
};

}  // namespace ttt::inner
