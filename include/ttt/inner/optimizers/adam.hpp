#pragma once
/// \file inner/optimizers/adam.hpp
/// Adam across mini-batches: the moment estimates are the inner state, each mini-batch's
/// accumulated gradient g = gacc_t one Adam step (beta1 = ttt_inner_beta, beta2 = 0.999, bias
/// corrected by the mini-batch count k, kept as the state's last value):
///   m_t = beta1 m0 + (1 - beta1) g,   v_t = beta2 v0 + (1 - beta2) g^2,
///   u = (m_t / (1 - beta1^k)) / sqrt(v_t / (1 - beta2^k) + eps^2),
///   theta_t = theta0 - eta_t ||g||_F u / ||u||_F          per parameter tensor.
/// Adam's direction is scale-free, so (as with muon) it is scaled to the gradient's norm: TTT's
/// learned learning rates keep setting the step's size. eps sits inside the root so that the map
/// stays differentiable at g = 0. The first mini-batch steps along sign(g).
#include <cmath>

#include "../optimizer.hpp"

namespace ttt::inner {

struct Adam {
  static constexpr std::string_view name = "adam";
  static constexpr std::string_view options[] = {"ttt_inner_beta"};
  static constexpr double beta2 = 0.999, eps = 1e-8;
  /// m and v (P each), then the number of mini-batches stepped so far.
  static int64_t state_size(const std::vector<ParamSpec>& specs) { return 2 * param_count(specs) + 1; }

  template <class S>
  static void step(const Step<S>& s) {
    using std::sqrt;
    const int64_t P = param_count(s.specs);
    const S b1 = S(s.rule.beta), b2 = S(beta2);
    const S k = s.state0[2 * P] + S(1);
    const double kd = value_of(k);
    const S c1 = S(1) / S(1 - std::pow(s.rule.beta, kd)), c2 = S(1) / S(1 - std::pow(beta2, kd));
    int64_t off = 0;
    for (const auto& spec : s.specs) {
      const int64_t n = spec.numel();
      S gg = S(1e-30), uu = S(1e-30);
      for (int64_t i = off; i < off + n; ++i) {
        const S g = s.gacc[i];
        s.state[i] = b1 * s.state0[i] + (S(1) - b1) * g;
        s.state[P + i] = b2 * s.state0[P + i] + (S(1) - b2) * g * g;
        const S u = c1 * s.state[i] / sqrt(c2 * s.state[P + i] + S(eps * eps));
        s.theta[i] = u;  // the direction, scaled below
        gg = gg + g * g;
        uu = uu + u * u;
      }
      const S scale = s.eta * sqrt(gg) / sqrt(uu);
      for (int64_t i = off; i < off + n; ++i) s.theta[i] = s.theta0[i] - scale * s.theta[i];
      off += n;
    }
    s.state[2 * P] = k;
  }

  /// The reverse of `step` (the count k carries no gradient: the bias corrections are constants).
  template <class S>
  static void step_vjp(const Step<S>& s, const S* dtheta, const S* dstate, const StepGrad<S>& d) {
    using std::sqrt;
    const int64_t P = param_count(s.specs);
    const S b1 = S(s.rule.beta), b2 = S(beta2);
    const double kd = double(value_of(s.state0[2 * P])) + 1.0;
    const S c1 = S(1) / S(1 - std::pow(s.rule.beta, kd)), c2 = S(1) / S(1 - std::pow(beta2, kd));
    int64_t off = 0;
    for (const auto& spec : s.specs) {
      const int64_t n = spec.numel();
      S gg = S(1e-30), uu = S(1e-30), dscale = S(0);
      for (int64_t i = off; i < off + n; ++i) {  // recompute u (into the scratch theta) and the norms
        const S g = s.gacc[i], m = b1 * s.state0[i] + (S(1) - b1) * g,
                v = b2 * s.state0[P + i] + (S(1) - b2) * g * g;
        const S u = c1 * m / sqrt(c2 * v + S(eps * eps));
        s.theta[i] = u;
        gg = gg + g * g;
        uu = uu + u * u;
        dscale -= u * dtheta[i];
      }
      const S sg = sqrt(gg), su = sqrt(uu), scale = s.eta * sg / su;
      *d.deta += dscale * sg / su;
      const S dgg = dscale * s.eta / (su * S(2) * sg);    // scale = eta sqrt(gg) / sqrt(uu)
      const S duu = -dscale * scale / (S(2) * uu);
      for (int64_t i = off; i < off + n; ++i) {
        const S g = s.gacc[i], m = b1 * s.state0[i] + (S(1) - b1) * g,
                v = b2 * s.state0[P + i] + (S(1) - b2) * g * g;
        const S r = sqrt(c2 * v + S(eps * eps)), u = s.theta[i];
        d.dtheta0[i] += dtheta[i];
        const S du = -scale * dtheta[i] + S(2) * u * duu;  // u = c1 m / r, r = sqrt(c2 v + eps^2)
        const S dm = dstate[i] + du * c1 / r;
        const S dv = dstate[P + i] - du * c1 * m / (r * r) * c2 / (S(2) * r);
        d.dstate0[i] += b1 * dm;
        d.dstate0[P + i] += b2 * dv;
        d.dgacc[i] += S(2) * g * dgg + (S(1) - b1) * dm + (S(1) - b2) * S(2) * g * dv;
      }
      off += n;
    }
    d.dstate0[2 * P] += dstate[2 * P];
  }

 private:
  template <class S>
  static double value_of(const S& x) {
    if constexpr (requires { x.v; }) return double(value_of(x.v));
    else return double(x);
  }
};

}  // namespace ttt::inner
