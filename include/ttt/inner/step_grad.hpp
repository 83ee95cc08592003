#pragma once
/// \file inner/step_grad.hpp
/// The reverse of an inner optimizer's step (inner/optimizer.hpp), for training's fast paths:
/// the optimizer's own `step_vjp` when it has one, else the step recorded on an `ad::Real` tape
/// and swept once (`taped_step_vjp`, exact for any optimizer written generically; the built-in
/// optimizers' hand-written reverses are tested against it, tests/train/test_optimizers.cpp).
#include <cstdint>
#include <vector>

#include "../ad/real.hpp"
#include "optimizer.hpp"

namespace ttt::inner {

template <class O, class S>
concept has_step_vjp = requires(const Step<S>& s, const S* d, const StepGrad<S>& g) { O::step_vjp(s, d, d, g); };

/// The reverse of O::step at `s` by a reverse sweep of the recorded step: ADDS into `d` the
/// cotangents of theta0, state0, gacc, eta, alpha given dtheta (P) and dstate (Q).
template <class O, class S>
void taped_step_vjp(const Step<S>& s, const S* dtheta, const S* dstate, const StepGrad<S>& d) {
  using R = ad::Real<S>;
  const int64_t P = param_count(s.specs), Q = state_size<O>(s.specs);
  ad::RealTape<S> tape;
  typename ad::RealTape<S>::Scope scope(tape);
  std::vector<R> leaves;
  leaves.reserve(size_t(2 * P + Q + 2));
  for (int64_t i = 0; i < P; ++i) leaves.push_back(tape.leaf(s.theta0[i]));
  for (int64_t i = 0; i < Q; ++i) leaves.push_back(tape.leaf(s.state0[i]));
  for (int64_t i = 0; i < P; ++i) leaves.push_back(tape.leaf(s.gacc[i]));
  leaves.push_back(tape.leaf(s.eta));
  leaves.push_back(tape.leaf(s.alpha));
  std::vector<R> theta(static_cast<size_t>(P)), state(static_cast<size_t>(Q));
  const R* l = leaves.data();
  O::step(Step<R>{s.specs, s.rule, l, l + P, l + P + Q, l[2 * P + Q], l[2 * P + Q + 1], theta.data(), state.data()});
  std::vector<R> outs, seeds;
  outs.reserve(size_t(P + Q));
  seeds.reserve(size_t(P + Q));
  for (int64_t i = 0; i < P; ++i) outs.push_back(theta[size_t(i)]), seeds.push_back(R(dtheta[i]));
  for (int64_t i = 0; i < Q; ++i) outs.push_back(state[size_t(i)]), seeds.push_back(R(dstate[i]));
  const auto g = tape.gradient(outs, seeds, leaves);
  size_t k = 0;
  for (int64_t i = 0; i < P; ++i) d.dtheta0[i] += g[k++].v;
  for (int64_t i = 0; i < Q; ++i) d.dstate0[i] += g[k++].v;
  for (int64_t i = 0; i < P; ++i) d.dgacc[i] += g[k++].v;
  *d.deta += g[k++].v;
  *d.dalpha += g[k++].v;
}

/// The reverse of O::step: its own `step_vjp`, or the taped one.
template <class O, class S>
void step_vjp(const Step<S>& s, const S* dtheta, const S* dstate, const StepGrad<S>& d) {
  if constexpr (has_step_vjp<O, S>) O::step_vjp(s, dtheta, dstate, d);
  else taped_step_vjp<O, S>(s, dtheta, dstate, d);
}

/// The reverse of the optimizer at `index` of the tuple `Opts`, in scalar S, as a function pointer
/// (as OptimizerFn holds the step).
template <class S>
using StepVjpFn = void (*)(const Step<S>&, const S*, const S*, const StepGrad<S>&);

template <class Opts, class S>
StepVjpFn<S> step_vjp_fn(int index) {
  return visit_optimizer<Opts>(index, [&]<class O>() -> StepVjpFn<S> {
    return +[](const Step<S>& s, const S* dt, const S* ds, const StepGrad<S>& d) { step_vjp<O, S>(s, dt, ds, d); };
  });
}

/// What training's fast reverse of a mini-batch needs of an optimizer chosen at run time
/// (inner/update_grad.hpp): its step's reverse and, when it declares affine queries, the
/// queries' keep and shift with their reverses (null: keep 1 / no shift).
template <class S>
struct UpdateReverse {
  StepVjpFn<S> step_vjp = nullptr;
  bool affine = false;
  S (*keep)(const Step<S>&) = nullptr;
  void (*keep_vjp)(const Step<S>&, S, const StepGrad<S>&) = nullptr;
  void (*shift)(const Step<S>&, S*) = nullptr;
  void (*shift_vjp)(const Step<S>&, const S*, const StepGrad<S>&) = nullptr;
};

template <class O, class S>
UpdateReverse<S> update_reverse() {
  UpdateReverse<S> r;
  r.step_vjp = +[](const Step<S>& s, const S* dt, const S* ds, const StepGrad<S>& d) { step_vjp<O, S>(s, dt, ds, d); };
  r.affine = affine_queries<O>();
  if constexpr (has_query_keep<O, S>) {
    r.keep = +[](const Step<S>& s) { return S(O::query_keep(s)); };
    r.keep_vjp = +[](const Step<S>& s, S dk, const StepGrad<S>& d) { O::query_keep_vjp(s, dk, d); };
  }
  if constexpr (has_query_shift<O, S>) {
    r.shift = +[](const Step<S>& s, S* p) { O::query_shift(s, p); };
    r.shift_vjp = +[](const Step<S>& s, const S* dp, const StepGrad<S>& d) { O::query_shift_vjp(s, dp, d); };
  }
  return r;
}

/// ... for the optimizer at `index` of the tuple `Opts`.
template <class Opts, class S>
UpdateReverse<S> update_reverse(int index) {
  return visit_optimizer<Opts>(index, [&]<class O>() { return update_reverse<O, S>(); });
}

}  // namespace ttt::inner
