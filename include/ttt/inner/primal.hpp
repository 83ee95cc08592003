#pragma once
/// \file inner/primal.hpp
/// The primal form of one head's mini-batch for any learner (only `apply` and the inner gradient,
/// inner/inner_grad.hpp, are needed), token by token, exactly as the reference's decode path: gradients of the
/// segment's tokens are all taken at theta0 (the state at the start of the mini-batch); gacc
/// accumulates lr[s] * grad_s; the query of row t sees theta_t = theta0 - token_eta[t] * gacc_t.
/// Learners with a dual form (inner/linear.hpp, inner/mlp.hpp) are tested against it.
#include <cstdint>
#include <vector>

#include "../blocks/ln_l2.hpp"
#include "inner_grad.hpp"
#include "learner.hpp"

namespace ttt::inner {

/// Buffers of the primal form, reused from call to call.
template <class S>
struct PrimalWorkspace {
  MatT<S> Z, G, target;
  aligned_vector<S> theta_t;
};

/// The per-head buffers a learner's mini-batch needs in scalar S: its own Workspace for a dual
/// form, the primal form's otherwise.
template <class L, class S>
struct head_workspace {
  using type = PrimalWorkspace<S>;
};
template <class L, class S>
  requires HasDualForm<L, S>
struct head_workspace<L, S> {
  using type = typename L::template Workspace<S>;
};

/// Zq: (n, f) learner outputs of the segment's queries; theta0 unchanged, gacc advanced.
template <class L, class S>
void primal_segment(const S* theta0, S* gacc, Dims f, const Segment<S>& s, RefT<S> Zq, PrimalWorkspace<S>& ws) {
  static_assert(has_apply<L, S> && (has_accumulate_grad<L, S> || has_generic_apply<L, S>),
                "ttt: this learner's apply / accumulate_grad take float; write them as templates over the scalar "
                "(template <class S> static void apply(const S*, int64_t, ttt::CRefT<S>, ttt::RefT<S>)) to run it in double");
  const int64_t n = s.XQ.rows();
  const int64_t P = param_count(L::param_specs(f));
  ensure_size(ws.Z, n, f);
  ensure_size(ws.G, n, f);
  ensure_size(ws.target, n, f);
  ws.theta_t.resize(size_t(P));
  L::apply(theta0, f, CRefT<S>(s.XK), RefT<S>(ws.Z));
  inner_loss_grad<L>(ws.Z, s.XK, s.XV, s.ln_w, s.ln_b, ws.target, ws.G);
  for (int64_t t = 0; t < n; ++t) {
    accumulate_grad<L, S>(theta0, f, CRefT<S>(s.XK.middleRows(t, 1)), CRefT<S>(ws.G.middleRows(t, 1)), s.lr + t, gacc);
    const S eta = s.token_eta[t];
    for (int64_t i = 0; i < P; ++i) ws.theta_t[size_t(i)] = theta0[i] - eta * gacc[i];
    L::apply(static_cast<const S*>(ws.theta_t.data()), f, CRefT<S>(s.XQ.middleRows(t, 1)), RefT<S>(Zq.middleRows(t, 1)));
  }
}

}  // namespace ttt::inner
