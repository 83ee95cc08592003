#pragma once
/// \file inner/inner_grad.hpp
/// A learner's inner gradient, d/dtheta of the inner loss through f_theta: the learner's own
/// `accumulate_grad` when it has one (a fast path), else derived from its `apply` by a reverse
/// sweep on an `ad::Real` tape (ad/real.hpp), which needs `apply` to be a template over the scalar.
#include <cstdint>
#include <vector>

#include "../ad/real.hpp"
#include "../blocks/ln_l2.hpp"
#include "learner.hpp"

namespace ttt::inner {

/// G = d(inner loss)/dZ, the learner's inner loss at its outputs Z = f_theta(XK): the LayerNorm-L2
/// loss against the residual target XV - XK (written into `target`), or, for a learner with
/// `ln_residual_loss = false`, 0.5 ||Z - XV||^2. Any scalar (ad::Real too).     all (n, f)
template <class L, class Z, class K, class V, class T, class G>
void inner_loss_grad(const Z& z, const K& xk, const V& xv, const typename Z::Scalar* ln_w,
                     const typename Z::Scalar* ln_b, T&& target, G&& g) {
  if constexpr (ln_residual_loss<L>()) {
    target = xv - xk;
    blocks::ln_l2_grad(z, target, ln_w, ln_b, g);
  } else {
    g = z - xv;  // d/dz 0.5 ||z - v||^2
  }
}

/// grad += sum_r w[r] * d <dZ[r], f_theta(X[r])> / d theta, from `apply` alone.
template <class L, class S>
void derived_accumulate_grad(const S* theta, Dims f, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
  using R = ad::Real<S>;
  const int64_t P = param_count(L::param_specs(f)), n = X.rows();
  ad::RealTape<S> tape;
  typename ad::RealTape<S>::Scope scope(tape);
  std::vector<R> th(static_cast<size_t>(P));
  for (int64_t i = 0; i < P; ++i) th[size_t(i)] = tape.leaf(theta[i]);
  const MatT<R> Xr = X.template cast<R>();
  MatT<R> Z(n, f.f);
  L::apply(static_cast<const R*>(th.data()), f, CRefT<R>(Xr), RefT<R>(Z));
  std::vector<R> outs, seeds;
  outs.reserve(size_t(n * f));
  seeds.reserve(size_t(n * f));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < f; ++c) {
      outs.push_back(Z(r, c));
      seeds.push_back(R(w[r] * dZ(r, c)));
    }
  const auto g = tape.gradient(outs, seeds, th);
  for (int64_t i = 0; i < P; ++i) grad[i] += g[size_t(i)].v;
}

/// The learner's own `accumulate_grad`, or the derived one.
template <class L, class S>
void accumulate_grad(const S* theta, Dims f, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
  if constexpr (has_accumulate_grad<L, S>) {
    L::accumulate_grad(theta, f, X, dZ, w, grad);
  } else {
    static_assert(has_generic_apply<L, S>,
                  "ttt: this learner has no accumulate_grad, and its apply is not a template over the scalar, so "
                  "the inner gradient cannot be derived: write `template <class S> static void apply(const S* theta, "
                  "int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z)`");
    derived_accumulate_grad<L, S>(theta, f, X, dZ, w, grad);
  }
}

}  // namespace ttt::inner

