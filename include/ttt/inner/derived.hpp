#pragma once
/// \file inner/derived.hpp
/// Training for any learner whose `apply` is a template over the scalar, under any inner optimizer
/// (its inner gradient is derived in inner/inner_grad.hpp; its forward is the primal form,
/// inner/optimized.hpp):
///   - `train::derived_forward` / `train::derived_backward`: one mini-batch's forward and exact
///     reverse through the inner update. The mini-batch is recorded on an `ad::Real` tape; the
///     inner gradient of each token is a recorded reverse sweep of its own row (so the outer sweep
///     differentiates the gradient again: the second-order terms); the optimizer's step is
///     recorded like any other function; one reverse sweep of dZq . Zq + dstate_end . state_end
///     gives every cotangent. The state is theta followed by the optimizer's own state.
///   - `train::DerivedGrad<L>`: the same for gd, in `LearnerGrad`'s interface, which
///     `train::LearnerGrad<L>` is unless a learner specialises it.
///
/// This is the correctness twin: one tape node per multiply-add, hundreds of times slower than a
/// dual form. The built-in learners' hand-written paths are tested against it
/// (tests/train/test_derived.cpp); a new learner or optimizer trains with it before anyone writes a
/// fast path.
#include <cstdint>
#include <vector>

#include "../ad/real.hpp"
#include "inner_grad.hpp"
#include "learner_grad.hpp"
#include "optimized.hpp"
#include "optimizers/gd.hpp"

namespace ttt::train {

/// The forward of one mini-batch (a fresh one) under optimizer O: Zq (n, f) and state_end
/// (P + Q) from state0 (P + Q).
template <class L, class S>
void derived_forward(const S* state0, inner::Dims f, const std::vector<inner::ParamSpec>& specs,
                     const inner::UpdateRule& rule, const inner::OptimizerFn<S>& opt, const Segment<S>& s, RefT<S> Zq,
                     S* state_end) {
  const Eigen::Index n = s.XQ.rows();
  const int64_t P = inner::param_count(specs);
  aligned_vector<S> gacc(size_t(P), S(0));
  inner::OptimizedWorkspace<S> ws;
  inner::optimized_segment<L, S>(state0, state0 + P, gacc.data(), f, specs, rule, opt, s, Zq, ws);
  inner::optimizer_step<S>(opt, specs, rule, state0, state0 + P, gacc.data(), s.token_eta[n - 1],
                           s.alpha ? s.alpha[n - 1] : S(0), state_end, state_end + P);
}

/// The reverse of `derived_forward`, second-order terms included: ADDS the cotangents of state0
/// into dstate0 and those of the segment's inputs into `o` (o.d_alpha with a gate).
template <class L, class S>
void derived_backward(const S* state0, inner::Dims dims, const std::vector<inner::ParamSpec>& specs,
                      const inner::UpdateRule& rule, const inner::OptimizerFn<ad::Real<S>>& opt, const Segment<S>& s,
                      CRefT<S> dZq, const S* dstate_end, S* dstate0, SegmentGrad<S>& o) {
  using R = ad::Real<S>;
  const Eigen::Index n = s.XQ.rows(), f = dims.f;
  const int64_t P = inner::param_count(specs), Q = opt.Q;
  const bool gate = s.alpha != nullptr;
  ad::RealTape<S> tape;
  typename ad::RealTape<S>::Scope scope(tape);
  // leaves
  const auto N = static_cast<size_t>(n), F = static_cast<size_t>(f);
  std::vector<R> state(static_cast<size_t>(P + Q)), eta(N), lr(N), alpha(N, R(0)), lnw(F), lnb(F);
  for (int64_t i = 0; i < P + Q; ++i) state[size_t(i)] = tape.leaf(state0[i]);
  const std::vector<R> theta(state.begin(), state.begin() + P);
  MatT<R> XQ(n, f), XK(n, f), XV(n, f);
  for (Eigen::Index r = 0; r < n; ++r)
    for (Eigen::Index c = 0; c < f; ++c) {
      XQ(r, c) = tape.leaf(s.XQ(r, c));
      XK(r, c) = tape.leaf(s.XK(r, c));
      XV(r, c) = tape.leaf(s.XV(r, c));
    }
  for (Eigen::Index r = 0; r < n; ++r) {
    eta[size_t(r)] = tape.leaf(s.token_eta[r]);
    lr[size_t(r)] = tape.leaf(s.lr[r]);
    if (gate) alpha[size_t(r)] = tape.leaf(s.alpha[r]);
  }
  for (int64_t c = 0; c < f; ++c) lnw[size_t(c)] = tape.leaf(s.ln_w[c]), lnb[size_t(c)] = tape.leaf(s.ln_b[c]);

  // Z = f_theta0(XK), one row at a time so that each row's recording is one contiguous piece
  MatT<R> Z(n, f);
  std::vector<int32_t> begin(size_t(n) + 1);
  for (Eigen::Index r = 0; r < n; ++r) {
    begin[size_t(r)] = tape.size();
    L::apply(theta.data(), dims, CRefT<R>(XK.middleRows(r, 1)), RefT<R>(Z.middleRows(r, 1)));
  }
  begin[size_t(n)] = tape.size();
  MatT<R> G(n, f), target(n, f);
  inner::inner_loss_grad<L>(Z, XK, XV, lnw.data(), lnb.data(), target, G);

  // the inner update, recorded: gacc_t = sum_{s<=t} lr_s grad_s, (theta_t, state_t) = step(...)
  std::vector<R> gacc(size_t(P), R(0)), next(size_t(P + Q)), outs, seeds;
  MatT<R> Zq(n, f);
  if (rule.order == inner::QueryOrder::before) L::apply(theta.data(), dims, CRefT<R>(XQ), RefT<R>(Zq));
  for (Eigen::Index t = 0; t < n; ++t) {
    outs.clear();
    seeds.clear();
    for (Eigen::Index c = 0; c < f; ++c) outs.push_back(Z(t, c)), seeds.push_back(G(t, c));
    const auto g = tape.gradient(outs, seeds, theta, ad::Adjoint::recorded, begin[size_t(t)], begin[size_t(t) + 1]);
    for (int64_t i = 0; i < P; ++i) gacc[size_t(i)] += lr[size_t(t)] * g[size_t(i)];
    if (rule.order == inner::QueryOrder::after || t + 1 == n)
      inner::optimizer_step<R>(opt, specs, rule, theta.data(), state.data() + P, gacc.data(), eta[size_t(t)],
                               alpha[size_t(t)], next.data(), next.data() + P);
    if (rule.order == inner::QueryOrder::after)
      L::apply(static_cast<const R*>(next.data()), dims, CRefT<R>(XQ.middleRows(t, 1)),
               RefT<R>(Zq.middleRows(t, 1)));
  }

  // one reverse sweep of  dZq . Zq + dstate_end . state_end  (state_end: the step at the last token)
  outs.clear();
  seeds.clear();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index c = 0; c < f; ++c) outs.push_back(Zq(t, c)), seeds.push_back(R(dZq(t, c)));
  for (int64_t i = 0; i < P + Q; ++i) outs.push_back(next[size_t(i)]), seeds.push_back(R(dstate_end[i]));
  std::vector<R> wrt;
  wrt.reserve(size_t(P + Q + 3 * n * f + 3 * n + 2 * f));
  wrt.insert(wrt.end(), state.begin(), state.end());
  for (const auto* M : {&XQ, &XK, &XV})
    for (Eigen::Index r = 0; r < n; ++r)
      for (Eigen::Index c = 0; c < f; ++c) wrt.push_back((*M)(r, c));
  wrt.insert(wrt.end(), eta.begin(), eta.end());
  wrt.insert(wrt.end(), lr.begin(), lr.end());
  wrt.insert(wrt.end(), lnw.begin(), lnw.end());
  wrt.insert(wrt.end(), lnb.begin(), lnb.end());
  if (gate) wrt.insert(wrt.end(), alpha.begin(), alpha.end());
  const auto d = tape.gradient(outs, seeds, wrt);
  size_t k = 0;
  for (int64_t i = 0; i < P + Q; ++i) dstate0[i] += d[k++].v;
  for (auto* D : {&o.dXQ, &o.dXK, &o.dXV})
    for (Eigen::Index r = 0; r < n; ++r)
      for (Eigen::Index c = 0; c < f; ++c) (*D)(r, c) += d[k++].v;
  for (Eigen::Index r = 0; r < n; ++r) o.d_token_eta[r] += d[k++].v;
  for (Eigen::Index r = 0; r < n; ++r) o.d_lr[r] += d[k++].v;
  for (int64_t c = 0; c < f; ++c) o.d_ln_w[c] += d[k++].v;
  for (int64_t c = 0; c < f; ++c) o.d_ln_b[c] += d[k++].v;
  if (gate)
    for (Eigen::Index r = 0; r < n; ++r) o.d_alpha[r] += d[k++].v;
}

/// A learner's training forward and reverse under gd, derived from its `apply` (see the file comment).
template <class L>
struct DerivedGrad {
  /// The primal form (inner/primal.hpp) and theta_end = theta0 - token_eta[n-1] gacc.
  template <class S>
    requires inner::has_generic_apply<L, S>
  static void forward(const S* th, inner::Dims f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>&) {
    const auto specs = L::param_specs(f);
    derived_forward<L, S>(th, f, specs, inner::UpdateRule{}, inner::optimizer_fn<inner::GD, S>(specs), s, Zq, th_end);
  }

  /// The reverse of `forward`, second-order terms included, by reverse sweeps on an ad::Real tape.
  template <class S>
    requires inner::has_generic_apply<L, S>
  static void backward(const S* th, inner::Dims f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>&) {
    const auto specs = L::param_specs(f);
    derived_backward<L, S>(th, f, specs, inner::UpdateRule{}, inner::optimizer_fn<inner::GD, ad::Real<S>>(specs), s,
                           dZq, dth_end, dth0, o);
  }
};

}  // namespace ttt::train
