#pragma once
/// \file inner/update_grad.hpp
/// Training's fast forward and reverse of one mini-batch under an inner optimizer other than
/// plain gd (inner/optimizer.hpp), for a learner with a hand-written `LearnerGrad`. Both query
/// orders reduce to the learner's gd dual form and the optimizer's step:
///   - order `before` (LaCT's apply-then-update): Zq = f_theta0(XQ), the learner's gd map at
///     token_eta = 0;
///   - order `after` under an optimizer with affine queries, theta_t = keep_t theta0 + shift -
///     eta_t gacc_t (momentum, decay): the learner's gd map with the queries' base
///     keep o f-part(theta0) + shift (Segment::query_keep / query_shift);
/// and in both, gacc = sum_s lr_s grad_s(theta0) and (theta_end, state_end) = step(theta0, state0,
/// gacc, eta[n-1], alpha[n-1]). The reverse is then
///   - the queries' part: the learner's gd reverse with dZq and a zero end cotangent (its
///     d_token_eta discarded in the order `before`, where token_eta was 0), then the reverses of
///     keep and shift (alpha's and state0's cotangents);
///   - gacc's part: the learner's gd reverse at token_eta = 1, dZq = 0 and end cotangent -dgacc
///     (its end state is theta0 - gacc): the cotangents of gacc's inputs (XK, XV, lr, ln_w, ln_b)
///     and, to theta0, -dgacc + (dgacc/dtheta0)^T dgacc, second-order terms included. That reverse
///     adds into a buffer holding +dgacc, so the pass-through term cancels exactly (it is added
///     first) and no float precision is lost; its d_token_eta is discarded;
///   - the step's reverse, the optimizer's `step_vjp` (inner/step_grad.hpp), which gives dgacc.
/// Cost: two gd reverses of the learner and one step reverse (three with keep: one more product
/// per map for keep's cotangent). Tested against the derived path (tests/train/test_step_grad.cpp)
/// and against central differences through the whole model (tests/train/test_optimizers.cpp).
/// Optimizers that are not affine in gacc (muon, adam) in the order `after` take the derived path.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "learner_grad.hpp"
#include "optimized.hpp"
#include "step_grad.hpp"

namespace ttt::train {

/// Whether a mini-batch of learner L under `rule` runs on the fast forward and reverse of this
/// file: the order `before`, or an optimizer with affine queries and a LearnerGrad that reads the
/// queries' base (`reads_query_base`; a user's LearnerGrad without it trains token by token).
template <class L, class S>
bool update_fast(const inner::UpdateRule& rule, const inner::UpdateReverse<S>& rev) {
  return rule.order == inner::QueryOrder::before || (rev.affine && reads_query_base<L>());
}

/// Buffers of `update_forward` / `update_backward`, reused from call to call.
template <class S>
struct UpdateBuffers {
  aligned_vector<S> gacc, dgacc, dtheta, zeros, theta, state, eta0, eta1, junk, keep, shift, dkeep, dshift, junkP;
  MatT<S> dZ0;
  inner::OptimizedWorkspace<S> ows;
};

namespace detail {

template <class S>
inner::Step<S> step_at(const std::vector<inner::ParamSpec>& specs, const inner::UpdateRule& rule, const S* state0,
                       int64_t P, const Segment<S>& s, Eigen::Index t, UpdateBuffers<S>& b) {
  return inner::Step<S>{specs, rule, state0, state0 + P, b.gacc.data(), s.token_eta[t], s.alpha ? s.alpha[t] : S(0),
                        b.theta.data(), b.state.data()};
}

/// gacc = sum_s lr_s grad_s(theta0) into b.gacc (sized P and zeroed here).
template <class L, class S>
void segment_gacc(const S* state0, inner::Dims dims, int64_t P, const Segment<S>& s, UpdateBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), f = dims.f;
  b.gacc.assign(size_t(P), S(0));
  ensure_size(b.ows.Z, n, f);
  ensure_size(b.ows.G, n, f);
  ensure_size(b.ows.target, n, f);
  L::apply(state0, dims, s.XK, RefT<S>(b.ows.Z));
  inner::inner_loss_grad<L>(b.ows.Z, s.XK, s.XV, s.ln_w, s.ln_b, b.ows.target, b.ows.G);
  inner::accumulate_grad<L, S>(state0, dims, s.XK, CRefT<S>(b.ows.G), s.lr, b.gacc.data());
}

/// The segment of the queries' part (see the file comment): token_eta 0 in the order `before`,
/// the optimizer's keep and shift in the order `after`.
template <class S>
Segment<S> query_segment(const std::vector<inner::ParamSpec>& specs, const inner::UpdateRule& rule, int64_t Q,
                         const inner::UpdateReverse<S>& rev, const S* state0, const Segment<S>& s,
                         UpdateBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), P = inner::param_count(specs);
  b.theta.resize(size_t(P));
  b.state.resize(size_t(Q));
  if (b.gacc.size() != size_t(P)) b.gacc.assign(size_t(P), S(0));
  Segment<S> q = s;
  if (rule.order == inner::QueryOrder::before) {
    b.eta0.assign(size_t(n), S(0));
    q.token_eta = b.eta0.data();
    return q;
  }
  if (rev.keep) {
    b.keep.resize(size_t(n));
    for (Eigen::Index t = 0; t < n; ++t) b.keep[size_t(t)] = rev.keep(step_at(specs, rule, state0, P, s, t, b));
    q.query_keep = b.keep.data();
  }
  if (rev.shift) {
    b.shift.resize(size_t(P));
    rev.shift(step_at(specs, rule, state0, P, s, 0, b), b.shift.data());
    q.query_shift = b.shift.data();
  }
  return q;
}

}  // namespace detail

/// The forward of one (fresh) mini-batch from state0 (P + Q) under `rule` (update_fast): Zq and
/// state_end (P + Q). Equals the primal form (inner/optimized.hpp, train::derived_forward).
template <class L, class S>
void update_forward(const S* state0, inner::Dims dims, const std::vector<inner::ParamSpec>& specs,
                    const inner::UpdateRule& rule, const inner::OptimizerFn<S>& opt,
                    const inner::UpdateReverse<S>& rev, const Segment<S>& s, RefT<S> Zq, S* state_end, Scratch<S>& ws,
                    UpdateBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), P = inner::param_count(specs);
  const Segment<S> q = detail::query_segment(specs, rule, opt.Q, rev, state0, s, b);
  b.junkP.resize(size_t(P));
  LearnerGrad<L>::forward(state0, dims, q, Zq, b.junkP.data(), ws);
  detail::segment_gacc<L, S>(state0, dims, P, s, b);
  inner::optimizer_step<S>(opt, specs, rule, state0, state0 + P, b.gacc.data(), s.token_eta[n - 1],
                           s.alpha ? s.alpha[n - 1] : S(0), state_end, state_end + P);
}

/// The reverse of `update_forward` (see the file comment): ADDS the cotangents of state0 (P + Q)
/// into dstate0 and those of the segment's inputs into `o`.
template <class L, class S>
void update_backward(const S* state0, inner::Dims dims, const std::vector<inner::ParamSpec>& specs,
                     const inner::UpdateRule& rule, int64_t Q, const inner::UpdateReverse<S>& rev, const Segment<S>& s,
                     CRefT<S> dZq, const S* dstate_end, S* dstate0, SegmentGrad<S>& o, Scratch<S>& ws,
                     UpdateBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), f = dims.f, P = inner::param_count(specs);
  const size_t Pn = size_t(P), N = size_t(n);
  b.dgacc.assign(Pn, S(0));
  b.zeros.assign(Pn, S(0));
  b.junkP.assign(Pn, S(0));
  b.eta1.assign(N, S(1));
  b.junk.assign(N, S(0));
  detail::segment_gacc<L, S>(state0, dims, P, s, b);
  const Segment<S> q = detail::query_segment(specs, rule, Q, rev, state0, s, b);
  // the step's reverse
  S deta = S(0), dalpha = S(0);
  rev.step_vjp(detail::step_at(specs, rule, state0, P, s, n - 1, b), dstate_end, dstate_end + P,
               inner::StepGrad<S>{dstate0, dstate0 + P, b.dgacc.data(), &deta, &dalpha});
  o.d_token_eta[n - 1] += deta;
  if (s.alpha && o.d_alpha) o.d_alpha[n - 1] += dalpha;
  // the queries
  SegmentGrad<S> oq = o;
  if (rule.order == inner::QueryOrder::before) oq.d_token_eta = b.junk.data();
  if (q.query_keep) {
    b.dkeep.assign(N, S(0));
    oq.d_query_keep = b.dkeep.data();
  }
  if (q.query_shift) {
    b.dshift.assign(Pn, S(0));
    oq.d_query_shift = b.dshift.data();
  }
  LearnerGrad<L>::backward(state0, dims, q, dZq, b.zeros.data(), dstate0, oq, ws);
  S sink = S(0);
  if (q.query_keep)
    for (Eigen::Index t = 0; t < n; ++t) {
      S* da = s.alpha && o.d_alpha ? o.d_alpha + t : &sink;
      rev.keep_vjp(detail::step_at(specs, rule, state0, P, s, t, b), b.dkeep[size_t(t)],
                   inner::StepGrad<S>{b.junkP.data(), dstate0 + P, b.junkP.data(), o.d_token_eta + t, da});
    }
  if (q.query_shift)
    rev.shift_vjp(detail::step_at(specs, rule, state0, P, s, 0, b), b.dshift.data(),
                  inner::StepGrad<S>{b.junkP.data(), dstate0 + P, b.junkP.data(), &sink, &sink});
  // gacc: gd's reverse at token_eta = 1 with end cotangent -dgacc
  Segment<S> s1 = s;
  s1.token_eta = b.eta1.data();
  SegmentGrad<S> o1 = o;
  o1.d_token_eta = b.junk.data();
  b.dtheta = b.dgacc;
  for (size_t i = 0; i < Pn; ++i) b.dgacc[i] = -b.dgacc[i];
  if (b.dZ0.rows() != n || b.dZ0.cols() != f) b.dZ0 = MatT<S>::Zero(n, f);
  LearnerGrad<L>::backward(state0, dims, s1, CRefT<S>(b.dZ0), b.dgacc.data(), b.dtheta.data(), o1, ws);
  for (size_t i = 0; i < Pn; ++i) dstate0[i] += b.dtheta[i];
}

}  // namespace ttt::train
