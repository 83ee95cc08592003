#pragma once
// A second user-defined inner learner: a two-layer ReLU MLP with hidden width 2f,
// f(x) = relu(x W1 + b1) W2 + b2. Its map is written once, generically; it also brings its inner
// gradient by hand (`accumulate_grad`, optional: a fast path the library checks against the
// derived one, see main.cpp).
#include <ttt/ttt.hpp>

struct ReluMLP {
  static constexpr std::string_view name = "relu_mlp";
  static constexpr int64_t expansion = 2;

  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) {
    using I = ttt::inner::ParamSpec::Init;
    const int64_t h = expansion * f;
    return {{"W1", {f, h}, I::normal}, {"b1", {1, h}, I::zeros}, {"W2", {h, f}, I::normal}, {"b2", {1, f}, I::zeros}};
  }

  template <class S>
  static void apply(const S* th, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z) {
    const int64_t h = expansion * f;
    ttt::MatT<S> A = X * Eigen::Map<const ttt::MatT<S>>(th, f, h);  // (n, h)
    A.rowwise() += Eigen::Map<const ttt::RowT<S>>(th + f * h, h);
    for (Eigen::Index i = 0; i < A.size(); ++i) A.data()[i] = A.data()[i] > S(0) ? A.data()[i] : S(0);
    Z.noalias() = A * Eigen::Map<const ttt::MatT<S>>(th + f * h + h, h, f);
    Z.rowwise() += Eigen::Map<const ttt::RowT<S>>(th + 2 * f * h + h, f);
  }

  // grad += sum_r w[r] * d <dZ[r], f(X[r])> / d theta   (float; in double the library derives it)
  static void accumulate_grad(const float* th, int64_t f, ttt::CMatRef X, ttt::CMatRef dZ, const float* w,
                              float* grad) {
    const int64_t h = expansion * f;
    ttt::Mat pre = X * ttt::CMapMat(th, f, h);
    pre.rowwise() += ttt::CMapRow(th + f * h, h);
    const ttt::Mat A = pre.cwiseMax(0.0f);
    ttt::Mat dA = dZ * ttt::CMapMat(th + f * h + h, h, f).transpose();  // (n, h)
    dA = (pre.array() > 0.0f).select(dA, 0.0f);
    ttt::MapMat gW1(grad, f, h), gW2(grad + f * h + h, h, f);
    ttt::MapRow gb1(grad + f * h, h), gb2(grad + 2 * f * h + h, f);
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      gW1.noalias() += (w[r] * X.row(r)).transpose() * dA.row(r);
      gb1 += w[r] * dA.row(r);
      gW2.noalias() += (w[r] * A.row(r)).transpose() * dZ.row(r);
      gb2 += w[r] * dZ.row(r);
    }
  }
};

static_assert(ttt::inner::InnerLearner<ReluMLP>);
