#pragma once
/// \file inner/before_order_grad.hpp
/// Training's fast reverse of one mini-batch under query order `before` (LaCT's apply-then-update)
/// and any inner optimizer, for a learner with a hand-written `LearnerGrad`. In that order
///   Zq = f_theta0(XQ),   (theta_end, state_end) = step(theta0, state0, gacc, eta[n-1], alpha[n-1]),
///   gacc = sum_s lr_s grad_s(theta0),
/// and both pieces are the learner's gd reverse at a chosen token_eta:
///   - token_eta = 0: LearnerGrad's queries read theta0 and its end state is theta0, so its reverse
///     with dZq and a zero end cotangent is the reverse of Zq = f_theta0(XQ);
///   - token_eta = 1, dZq = 0: its end state is theta0 - gacc, so its reverse with end cotangent
///     -dgacc gives the cotangents of gacc's inputs (XK, XV, lr, ln_w, ln_b) and, to theta0,
///     -dgacc + (dgacc/dtheta0)^T dgacc; that reverse adds into a buffer holding +dgacc, so that
///     the pass-through term cancels exactly (it is added first) and no float precision is lost;
/// and the step's reverse is the optimizer's `step_vjp` (inner/step_grad.hpp). The token_eta
/// cotangents of both calls are discarded (the real token_eta enters only through the step).
/// Cost: two gd reverses of the learner and one step reverse. Tested against the derived path
/// (tests/train/test_optimizers.cpp) and against central differences through the whole model.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "learner_grad.hpp"
#include "optimized.hpp"
#include "step_grad.hpp"

namespace ttt::train {

/// Buffers of `before_order_backward`, reused from call to call.
template <class S>
struct BeforeOrderBuffers {
  std::vector<S> gacc, dgacc, dtheta, zeros, theta, state, eta0, eta1, junk;
  MatT<S> dZ0;
  inner::OptimizedWorkspace<S> ows;
};

/// The reverse of `derived_forward` under order `before` (see the file comment): ADDS the
/// cotangents of state0 (P + Q) into dstate0 and those of the segment's inputs into `o`.
template <class L, class S>
void before_order_backward(const S* state0, inner::Dims dims, const std::vector<inner::ParamSpec>& specs,
                           const inner::UpdateRule& rule, int64_t Q, inner::StepVjpFn<S> vjp, const Segment<S>& s,
                           CRefT<S> dZq, const S* dstate_end, S* dstate0, SegmentGrad<S>& o, Scratch<S>& ws,
                           BeforeOrderBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), f = dims.f, P = inner::param_count(specs);
  const size_t Pn = size_t(P), N = size_t(n);
  b.gacc.assign(Pn, S(0));
  b.dgacc.assign(Pn, S(0));
  b.zeros.assign(Pn, S(0));
  b.theta.resize(Pn);
  b.state.resize(size_t(Q));
  b.eta0.assign(N, S(0));
  b.eta1.assign(N, S(1));
  b.junk.assign(N, S(0));
  // the forward's gacc: the inner gradients at theta0
  ensure_size(b.ows.Z, n, f);
  ensure_size(b.ows.G, n, f);
  ensure_size(b.ows.target, n, f);
  L::apply(state0, dims, s.XK, RefT<S>(b.ows.Z));
  inner::inner_loss_grad<L>(b.ows.Z, s.XK, s.XV, s.ln_w, s.ln_b, b.ows.target, b.ows.G);
  inner::accumulate_grad<L, S>(state0, dims, s.XK, CRefT<S>(b.ows.G), s.lr, b.gacc.data());
  // the step's reverse
  S deta = S(0), dalpha = S(0);
  const S eta = s.token_eta[n - 1], alpha = s.alpha ? s.alpha[n - 1] : S(0);
  vjp(inner::Step<S>{specs, rule, state0, state0 + P, b.gacc.data(), eta, alpha, b.theta.data(), b.state.data()},
      dstate_end, dstate_end + P, inner::StepGrad<S>{dstate0, dstate0 + P, b.dgacc.data(), &deta, &dalpha});
  o.d_token_eta[n - 1] += deta;
  if (s.alpha && o.d_alpha) o.d_alpha[n - 1] += dalpha;
  // the queries: gd's reverse at token_eta = 0
  Segment<S> s0 = s;
  s0.token_eta = b.eta0.data();
  SegmentGrad<S> o0 = o;
  o0.d_token_eta = b.junk.data();
  LearnerGrad<L>::backward(state0, dims, s0, dZq, b.zeros.data(), dstate0, o0, ws);
  // gacc: gd's reverse at token_eta = 1 with end cotangent -dgacc
  Segment<S> s1 = s;
  s1.token_eta = b.eta1.data();
  b.dtheta = b.dgacc;
  for (size_t i = 0; i < Pn; ++i) b.dgacc[i] = -b.dgacc[i];
  if (b.dZ0.rows() != n || b.dZ0.cols() != f) b.dZ0 = MatT<S>::Zero(n, f);
  LearnerGrad<L>::backward(state0, dims, s1, CRefT<S>(b.dZ0), b.dgacc.data(), b.dtheta.data(), o0, ws);
  for (size_t i = 0; i < Pn; ++i) dstate0[i] += b.dtheta[i];
}

}  // namespace ttt::train
