#pragma once
// A user-defined inner learner, in the user's own file: f(x) = x W, no bias.
// It meets ttt::inner::InnerLearner, so TTTLayer / TTTModel run it with no change to the library
// (through the generic primal form: gradients at the mini-batch's start, applied per token).
#include <ttt/ttt.hpp>

struct BiasFreeLinear {
  static constexpr std::string_view name = "bias_free_linear";

  // one [f, f] matrix per head; stored as "W1" [H, f, f] in a checkpoint
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }

  // Z = X W                                                        X, Z: (n, f)
  static void apply(const float* theta, int64_t f, ttt::CMatRef X, ttt::MatRef Z) {
    Z.noalias() = X * ttt::CMapMat(theta, f, f);
  }

  // grad += sum_r w[r] * x_r^T dZ_r   (d <dZ_r, x_r W> / dW)
  static void accumulate_grad(const float*, int64_t f, ttt::CMatRef X, ttt::CMatRef dZ, const float* w, float* grad) {
    ttt::MapMat G(grad, f, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) G.noalias() += (w[r] * X.row(r)).transpose() * dZ.row(r);
  }
};

static_assert(ttt::inner::InnerLearner<BiasFreeLinear>);
