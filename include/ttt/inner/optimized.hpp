#pragma once
/// \file inner/optimized.hpp
/// One head's mini-batch under any inner optimizer (inner/optimizer.hpp) and query order, in the
/// primal form: the gradient of each token is taken at theta0 (the learner's own inner gradient
/// or the derived one, inner/inner_grad.hpp), gacc accumulates lr[t] * grad_t, and query t reads
/// the optimizer's weights at t (order `after`) or theta0 (order `before`). With gd and order
/// `after` this is inner/primal.hpp, which the learners' dual forms are tested against; the
/// layer takes this path for every other optimizer or order.
#include <cstdint>
#include <vector>

#include "inner_grad.hpp"
#include "optimizer.hpp"

namespace ttt::inner {

/// Buffers of the optimized primal form, reused from call to call.
template <class S>
struct OptimizedWorkspace {
  MatT<S> Z, G, target;
  aligned_vector<S> theta_t, state_t;
};

/// The weights and optimizer state after the tokens accumulated in gacc, at token_eta `eta` and
/// gate `alpha` (the end of a mini-batch: its last token's).
template <class S>
void optimizer_step(const OptimizerFn<S>& opt, const std::vector<ParamSpec>& specs, const UpdateRule& rule,
                    const S* theta0, const S* state0, const S* gacc, S eta, S alpha, S* theta, S* state) {
  opt.step(Step<S>{specs, rule, theta0, state0, gacc, eta, alpha, theta, state});
}

/// Zq: (n, f) learner outputs of the segment's queries; theta0 and state0 unchanged, gacc advanced.
template <class L, class S>
void optimized_segment(const S* theta0, const S* state0, S* gacc, Dims f, const std::vector<ParamSpec>& specs,
                       const UpdateRule& rule, const OptimizerFn<S>& opt, const Segment<S>& s, RefT<S> Zq,
                       OptimizedWorkspace<S>& ws) {
  const int64_t n = s.XQ.rows();
  const int64_t P = param_count(specs), Q = opt.Q;
  ensure_size(ws.Z, n, f);
  ensure_size(ws.G, n, f);
  ensure_size(ws.target, n, f);
  ws.theta_t.resize(size_t(P));
  ws.state_t.resize(size_t(Q));
  L::apply(theta0, f, CRefT<S>(s.XK), RefT<S>(ws.Z));
  inner_loss_grad<L>(ws.Z, s.XK, s.XV, s.ln_w, s.ln_b, ws.target, ws.G);
  if (rule.order == QueryOrder::before) L::apply(theta0, f, CRefT<S>(s.XQ), Zq);
  for (int64_t t = 0; t < n; ++t) {
    accumulate_grad<L, S>(theta0, f, CRefT<S>(s.XK.middleRows(t, 1)), CRefT<S>(ws.G.middleRows(t, 1)), s.lr + t, gacc);
    if (rule.order == QueryOrder::before) continue;
    optimizer_step<S>(opt, specs, rule, theta0, state0, gacc, s.token_eta[t], s.alpha ? s.alpha[t] : S(0),
                      ws.theta_t.data(), ws.state_t.data());
    L::apply(static_cast<const S*>(ws.theta_t.data()), f, CRefT<S>(s.XQ.middleRows(t, 1)),
             RefT<S>(Zq.middleRows(t, 1)));
  }
}

}  // namespace ttt::inner
