#pragma once
// A user-defined inner learner, in the user's own file: f(x) = x W, no bias. Written once: its
// name, its parameter shapes and its map, generic over the scalar. The library derives the rest
// (the inner gradient, and for training the exact gradient through the inner updates).
#include <ttt/ttt.hpp>

struct BiasFreeLinear {
  static constexpr std::string_view name = "bias_free_linear";

  // one [f, f] matrix per head; stored as "W1" [H, f, f] in a checkpoint
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }

  // Z = X W                                                        X, Z: (n, f)
  template <class S>
  static void apply(const S* theta, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z) {
    Z.noalias() = X * Eigen::Map<const ttt::MatT<S>>(theta, f, f);
  }
};

static_assert(ttt::inner::InnerLearner<BiasFreeLinear>);
