#pragma once
/// \file inner/optimizers/muon.hpp
/// Muon (as LaCT uses it for fast weights): each weight matrix's accumulated gradient is
/// orthogonalised by ttt_ns_steps (5) Newton-Schulz iterations (blocks/newton_schulz.hpp) before
/// the step; vectors (biases, shape {1, n}) step as gd. The orthogonalised direction is scaled to
/// the gradient's Frobenius norm, so that TTT's learned learning rates keep setting the step's size
/// (LaCT instead renormalises the weights after the step):
///   theta_t = theta0 - eta_t ||gacc_t||_F NS(gacc_t) / ||NS(gacc_t)||_F      per matrix.
#include "../../blocks/newton_schulz.hpp"
#include "../optimizer.hpp"

namespace ttt::inner {

struct Muon {
  static constexpr std::string_view name = "muon";
  static constexpr std::string_view options[] = {"ttt_ns_steps"};
  template <class S>
  static void step(const Step<S>& s) {
    using std::sqrt;
    int64_t off = 0;
    for (const auto& spec : s.specs) {
      const int64_t n = spec.numel();
      const bool matrix = spec.shape.size() == 2 && spec.shape[0] > 1 && spec.shape[1] > 1;
      if (!matrix) {
        for (int64_t i = off; i < off + n; ++i) s.theta[i] = s.theta0[i] - s.eta * s.gacc[i];
      } else {
        const Eigen::Map<const MatT<S>> G(s.gacc + off, spec.shape[0], spec.shape[1]);
        S g_norm = S(0);
        const MatT<S> U = blocks::newton_schulz<S>(MatT<S>(G), s.rule.ns_steps, &g_norm);
        S uu = S(1e-14);
        for (int64_t i = 0; i < n; ++i) uu = uu + U.data()[i] * U.data()[i];
        const S scale = s.eta * g_norm / sqrt(uu);
        for (int64_t i = 0; i < n; ++i) s.theta[off + i] = s.theta0[off + i] - scale * U.data()[i];
      }
      off += n;
    }
  }

  /// The reverse of `step` (blocks::newton_schulz_vjp for the matrices).
  template <class S>
  static void step_vjp(const Step<S>& s, const S* dtheta, const S*, const StepGrad<S>& d) {
    using std::sqrt;
    int64_t off = 0;
    for (const auto& spec : s.specs) {
      const int64_t n = spec.numel();
      const bool matrix = spec.shape.size() == 2 && spec.shape[0] > 1 && spec.shape[1] > 1;
      for (int64_t i = off; i < off + n; ++i) d.dtheta0[i] += dtheta[i];
      if (!matrix) {
        S de = S(0);
        for (int64_t i = off; i < off + n; ++i) d.dgacc[i] -= s.eta * dtheta[i], de -= s.gacc[i] * dtheta[i];
        *d.deta += de;
      } else {
        const MatT<S> G = Eigen::Map<const MatT<S>>(s.gacc + off, spec.shape[0], spec.shape[1]);
        S g_norm = S(0);
        const MatT<S> U = blocks::newton_schulz<S>(G, s.rule.ns_steps, &g_norm);
        S uu = S(1e-14), dscale = S(0);
        for (int64_t i = 0; i < n; ++i) uu += U.data()[i] * U.data()[i], dscale -= U.data()[i] * dtheta[off + i];
        const S su = sqrt(uu), scale = s.eta * g_norm / su;  // theta = theta0 - scale U
        *d.deta += dscale * g_norm / su;
        const S duu = -dscale * scale / (S(2) * uu);
        MatT<S> dU(G.rows(), G.cols());
        for (int64_t i = 0; i < n; ++i) dU.data()[i] = -scale * dtheta[off + i] + S(2) * U.data()[i] * duu;
        Eigen::Map<MatT<S>> dG(d.dgacc + off, G.rows(), G.cols());
        blocks::newton_schulz_vjp<S>(G, s.rule.ns_steps, dU, dscale * s.eta / su, dG);
      }
      off += n;
    }
  }
};

}  // namespace ttt::inner
