#pragma once
/// \file inner/token_step_grad.hpp
/// Training's reverse of one mini-batch in the order `after` under any inner optimizer, token by
/// token, for a learner with a hand-written `LearnerGrad`: the path of optimizers whose queries
/// are not affine in gacc (muon, adam; inner/update_grad.hpp takes the affine ones). The forward
/// (inner/optimized.hpp) is, per token t,
///   gacc_t = gacc_{t-1} + lr_t grad_t(theta0),  (theta_t, state_t) = step(theta0, state0, gacc_t,
///   eta_t, alpha_t),  Zq_t = f_{theta_t}(XQ_t),  the end state the step at the last token;
/// its reverse, from the last token to the first, with R = sum_{t' >= t} dgacc_t':
///   - apply's reverse at theta_t: the learner's gd reverse of the one-row segment t at
///     token_eta = 0 (whose queries read its theta0 = theta_t), dZq_t in, d theta_t and dXQ_t out;
///   - the step's reverse (`step_vjp`, inner/step_grad.hpp): d theta_t, d state_t (the end state's
///     cotangent at the last token) to theta0, state0, eta_t, alpha_t and dgacc_t; R += dgacc_t;
///   - grad_t's reverse with cotangent lr_t R: the learner's gd reverse of the one-row segment t
///     at token_eta = 1, dZq = 0, end cotangent -R (its end state is theta0 - lr_t grad_t): XK_t,
///     XV_t, lr_t, ln_w, ln_b and, to theta0, -R + second-order terms, into a buffer holding +R
///     (the pass-through term cancels exactly, as in inner/update_grad.hpp).
/// No tape: O(n P) per mini-batch plus the step's reverse at every token (Newton-Schulz's for
/// muon), in small matrix products. Memory: gacc_t of every token (n P values). Tested against
/// the derived path (tests/train/test_step_grad.cpp) and central differences through the model.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "learner_grad.hpp"
#include "optimized.hpp"
#include "step_grad.hpp"

namespace ttt::train {

/// Buffers of `token_step_backward`, reused from call to call.
template <class S>
struct TokenStepBuffers {
  aligned_vector<S> gaccs, run, theta, state, dtheta, dstate, dgacc, R, negR, buf, zeros, junk;
  MatT<S> junk_rows, zero_row;
  inner::OptimizedWorkspace<S> ows;
};

/// The reverse of the order `after`'s forward (inner/optimized.hpp, train::derived_forward) under
/// any optimizer: ADDS the cotangents of state0 (P + Q) into dstate0 and those of the segment's
/// inputs into `o`.
template <class L, class S>
void token_step_backward(const S* state0, inner::Dims dims, const std::vector<inner::ParamSpec>& specs,
                         const inner::UpdateRule& rule, const inner::OptimizerFn<S>& opt, inner::StepVjpFn<S> vjp,
                         const Segment<S>& s, CRefT<S> dZq, const S* dstate_end, S* dstate0, SegmentGrad<S>& o,
                         Scratch<S>& ws, TokenStepBuffers<S>& b) {
  const int64_t n = s.XQ.rows(), f = dims.f, P = inner::param_count(specs), Q = opt.Q;
  const size_t Pn = size_t(P), Qn = size_t(Q);
  // the forward's gacc_t of every token
  ensure_size(b.ows.Z, n, f);
  ensure_size(b.ows.G, n, f);
  ensure_size(b.ows.target, n, f);
  L::apply(state0, dims, s.XK, RefT<S>(b.ows.Z));
  inner::inner_loss_grad<L>(b.ows.Z, s.XK, s.XV, s.ln_w, s.ln_b, b.ows.target, b.ows.G);
  b.gaccs.resize(size_t(n) * Pn);
  b.run.assign(Pn, S(0));
  for (int64_t t = 0; t < n; ++t) {
    inner::accumulate_grad<L, S>(state0, dims, CRefT<S>(s.XK.middleRows(t, 1)), CRefT<S>(b.ows.G.middleRows(t, 1)),
                                 s.lr + t, b.run.data());
    std::copy(b.run.begin(), b.run.end(), b.gaccs.begin() + ptrdiff_t(size_t(t) * Pn));
  }
  b.theta.resize(Pn), b.state.resize(Qn), b.dtheta.resize(Pn), b.dstate.resize(Qn), b.dgacc.resize(Pn);
  b.R.assign(Pn, S(0)), b.negR.resize(Pn), b.buf.resize(Pn), b.zeros.assign(Pn, S(0));
  b.junk.assign(size_t(2 * f + 4), S(0));
  b.junk_rows.setZero(3, f);
  b.zero_row.setZero(1, f);
  const S zero = S(0), one = S(1);
  S sink = S(0);
  S* jn = b.junk.data();  // junk scalars: jn[0], jn[1]; junk (f) vectors: jn + 2, jn + 2 + f
  for (int64_t t = n - 1; t >= 0; --t) {
    const inner::Step<S> st{specs, rule, state0, state0 + P, b.gaccs.data() + size_t(t) * Pn, s.token_eta[t],
                            s.alpha ? s.alpha[t] : S(0), b.theta.data(), b.state.data()};
    opt.step(st);
    if (t == n - 1) {
      std::copy(dstate_end, dstate_end + P, b.dtheta.begin());
      std::copy(dstate_end + P, dstate_end + P + Q, b.dstate.begin());
    } else {
      std::fill(b.dtheta.begin(), b.dtheta.end(), S(0));
      std::fill(b.dstate.begin(), b.dstate.end(), S(0));
    }
    Segment<S> row{s.XQ.middleRows(t, 1), s.XK.middleRows(t, 1), s.XV.middleRows(t, 1), &zero, s.lr + t,
                   s.ln_w, s.ln_b, true, nullptr};
    // apply's reverse at theta_t: dZq_t -> d theta_t, dXQ_t
    {
      SegmentGrad<S> og{o.dXQ.middleRows(t, 1), b.junk_rows.middleRows(0, 1), b.junk_rows.middleRows(1, 1),
                        jn, jn + 1, jn + 2, jn + 2 + f};
      LearnerGrad<L>::backward(b.theta.data(), dims, row, CRefT<S>(dZq.middleRows(t, 1)), b.zeros.data(),
                               b.dtheta.data(), og, ws);
    }
    // the step's reverse
    std::fill(b.dgacc.begin(), b.dgacc.end(), S(0));
    vjp(st, b.dtheta.data(), b.dstate.data(),
        inner::StepGrad<S>{dstate0, dstate0 + P, b.dgacc.data(), o.d_token_eta + t,
                           s.alpha && o.d_alpha ? o.d_alpha + t : &sink});
    for (size_t i = 0; i < Pn; ++i) b.R[i] += b.dgacc[i], b.negR[i] = -b.R[i], b.buf[i] = b.R[i];
    // grad_t's reverse with cotangent lr_t R
    row.token_eta = &one;
    {
      SegmentGrad<S> ok{b.junk_rows.middleRows(2, 1), o.dXK.middleRows(t, 1), o.dXV.middleRows(t, 1),
                        jn, o.d_lr + t, o.d_ln_w, o.d_ln_b};
      LearnerGrad<L>::backward(state0, dims, row, CRefT<S>(b.zero_row), b.negR.data(), b.buf.data(), ok, ws);
    }
    for (size_t i = 0; i < Pn; ++i) dstate0[i] += b.buf[i];
  }
}

}  // namespace ttt::train
