#pragma once
/// \file inner/derived.hpp
/// Training for any learner whose `apply` is a template over the scalar (its inner gradient is
/// derived in inner/inner_grad.hpp; its forward is the primal form, inner/primal.hpp):
///   - its training forward and exact reverse through the inner update (`train::DerivedGrad<L>`,
///     which `train::LearnerGrad<L>` is unless a learner specialises it): the mini-batch is
///     recorded on an `ad::Real` tape, the inner gradient of each token is a recorded reverse sweep
///     of its own row (so the outer sweep differentiates the gradient again: the second-order
///     terms), and one reverse sweep of dZq . Zq + dtheta_end . theta_end gives every cotangent.
///
/// This is the correctness twin: one tape node per multiply-add, hundreds of times slower than a
/// dual form. The built-in learners' hand-written paths are tested against it
/// (tests/train/test_derived.cpp); a new learner trains with it before anyone writes a fast path.
#include <cstdint>
#include <vector>

#include "../ad/real.hpp"
#include "inner_grad.hpp"
#include "learner_grad.hpp"
#include "primal.hpp"

namespace ttt::train {

/// A learner's training forward and reverse, derived from its `apply` (see the file comment).
template <class L>
struct DerivedGrad {
  /// The primal form (inner/primal.hpp) and theta_end = theta0 - token_eta[n-1] gacc.
  template <class S>
    requires inner::has_generic_apply<L, S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const Eigen::Index n = s.XQ.rows();
    const int64_t P = inner::param_count(L::param_specs(f));
    auto gacc = ws.zero(0, 1, P);
    inner::PrimalWorkspace<S> pw;
    inner::primal_segment<L, S>(th, gacc.data(), f, s, Zq, pw);
    for (int64_t i = 0; i < P; ++i) th_end[i] = th[i] - s.token_eta[n - 1] * gacc(0, i);
  }

  /// The reverse of `forward`, second-order terms included, by reverse sweeps on an ad::Real tape.
  template <class S>
    requires inner::has_generic_apply<L, S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>&) {
    using R = ad::Real<S>;
    const Eigen::Index n = s.XQ.rows();
    const int64_t P = inner::param_count(L::param_specs(f));
    ad::RealTape<S> tape;
    typename ad::RealTape<S>::Scope scope(tape);
    // leaves
    std::vector<R> theta(static_cast<size_t>(P)), eta(static_cast<size_t>(n)), lr(static_cast<size_t>(n)),
        lnw(static_cast<size_t>(f)), lnb(static_cast<size_t>(f));
    for (int64_t i = 0; i < P; ++i) theta[size_t(i)] = tape.leaf(th[i]);
    MatT<R> XQ(n, f), XK(n, f), XV(n, f);
    for (Eigen::Index r = 0; r < n; ++r)
      for (Eigen::Index c = 0; c < f; ++c) {
        XQ(r, c) = tape.leaf(s.XQ(r, c));
        XK(r, c) = tape.leaf(s.XK(r, c));
        XV(r, c) = tape.leaf(s.XV(r, c));
      }
    for (Eigen::Index r = 0; r < n; ++r) eta[size_t(r)] = tape.leaf(s.token_eta[r]), lr[size_t(r)] = tape.leaf(s.lr[r]);
    for (int64_t c = 0; c < f; ++c) lnw[size_t(c)] = tape.leaf(s.ln_w[c]), lnb[size_t(c)] = tape.leaf(s.ln_b[c]);

    // Z = f_theta0(XK), one row at a time so that each row's recording is one contiguous piece
    MatT<R> Z(n, f);
    std::vector<int32_t> begin(size_t(n) + 1);
    for (Eigen::Index r = 0; r < n; ++r) {
      begin[size_t(r)] = tape.size();
      L::apply(static_cast<const R*>(theta.data()), f, CRefT<R>(XK.middleRows(r, 1)), RefT<R>(Z.middleRows(r, 1)));
    }
    begin[size_t(n)] = tape.size();
    MatT<R> G(n, f), target(n, f);
    inner::inner_loss_grad<L>(Z, XK, XV, lnw.data(), lnb.data(), target, G);

    // the inner update, recorded: gacc_t = sum_{s<=t} lr_s grad_s, theta_t = theta0 - eta_t gacc_t
    std::vector<R> gacc(static_cast<size_t>(P), R(0)), theta_t(static_cast<size_t>(P)), outs, seeds;
    MatT<R> Zq(n, f);
    for (Eigen::Index t = 0; t < n; ++t) {
      outs.clear();
      seeds.clear();
      for (Eigen::Index c = 0; c < f; ++c) outs.push_back(Z(t, c)), seeds.push_back(G(t, c));
      const auto g = tape.gradient(outs, seeds, theta, ad::Adjoint::recorded, begin[size_t(t)], begin[size_t(t) + 1]);
      for (int64_t i = 0; i < P; ++i) {
        gacc[size_t(i)] += lr[size_t(t)] * g[size_t(i)];
        theta_t[size_t(i)] = theta[size_t(i)] - eta[size_t(t)] * gacc[size_t(i)];
      }
      L::apply(static_cast<const R*>(theta_t.data()), f, CRefT<R>(XQ.middleRows(t, 1)), RefT<R>(Zq.middleRows(t, 1)));
    }

    // one reverse sweep of  dZq . Zq + dtheta_end . theta_end,  theta_end = theta0 - eta_{n-1} gacc
    outs.clear();
    seeds.clear();
    for (Eigen::Index t = 0; t < n; ++t)
      for (Eigen::Index c = 0; c < f; ++c) outs.push_back(Zq(t, c)), seeds.push_back(R(dZq(t, c)));
    for (int64_t i = 0; i < P; ++i)
      outs.push_back(theta[size_t(i)] - eta[size_t(n - 1)] * gacc[size_t(i)]), seeds.push_back(R(dth_end[i]));
    std::vector<R> wrt;
    wrt.reserve(size_t(P + 3 * n * f + 2 * n + 2 * f));
    wrt.insert(wrt.end(), theta.begin(), theta.end());
    for (const auto* M : {&XQ, &XK, &XV})
      for (Eigen::Index r = 0; r < n; ++r)
        for (Eigen::Index c = 0; c < f; ++c) wrt.push_back((*M)(r, c));
    wrt.insert(wrt.end(), eta.begin(), eta.end());
    wrt.insert(wrt.end(), lr.begin(), lr.end());
    wrt.insert(wrt.end(), lnw.begin(), lnw.end());
    wrt.insert(wrt.end(), lnb.begin(), lnb.end());
    const auto d = tape.gradient(outs, seeds, wrt);
    size_t k = 0;
    for (int64_t i = 0; i < P; ++i) dth0[i] += d[k++].v;
    for (auto* D : {&o.dXQ, &o.dXK, &o.dXV})
      for (Eigen::Index r = 0; r < n; ++r)
        for (Eigen::Index c = 0; c < f; ++c) (*D)(r, c) += d[k++].v;
    for (Eigen::Index r = 0; r < n; ++r) o.d_token_eta[r] += d[k++].v;
    for (Eigen::Index r = 0; r < n; ++r) o.d_lr[r] += d[k++].v;
    for (int64_t c = 0; c < f; ++c) o.d_ln_w[c] += d[k++].v;
    for (int64_t c = 0; c < f; ++c) o.d_ln_b[c] += d[k++].v;
  }

};

}  // namespace ttt::train
