#pragma once
/// \file inner/learner.hpp
/// The contract of an inner learner (the model whose weights are the TTT hidden state) and the
/// generic primal-form mini-batch that serves any learner meeting it.
///
/// A learner is a stateless type with static members; its parameters live in one flat float array
/// per head, laid out in the order of `param_specs`. What a learner must provide:
///
/// \code
/// struct MyLearner {
///   static constexpr std::string_view name = "my";               // requirement: name
///   static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f);  // requirement: param_specs
///   // Z = f_theta(X)                               X, Z: (n, f)
///   static void apply(const float* theta, int64_t f, ttt::CMatRef X, ttt::MatRef Z);
///   // grad += sum_r w[r] * d <dZ[r], f_theta(X[r])> / d theta
///   static void accumulate_grad(const float* theta, int64_t f, ttt::CMatRef X, ttt::CMatRef dZ,
///                               const float* w, float* grad);
/// };
/// \endcode
///
/// Optionally a learner adds a dual-form fast path `dual_form(theta0, gacc, segment, Zq, ws)` with a
/// `Workspace` type (see inner/linear.hpp); without it the layer runs `primal_segment` below.
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../blocks/nn.hpp"
#include "../core/tensor.hpp"

namespace ttt::inner {

/// One named parameter tensor of a learner, per head. In a checkpoint it is stored with the head
/// dimension in front: spec {f, f} of "W1" is the tensor "W1" of shape [H, f, f].
struct ParamSpec {
  enum class Init { normal, zeros };
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::normal;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// Total floats of one head's parameters.
inline int64_t param_count(const std::vector<ParamSpec>& specs) {
  int64_t n = 0;
  for (const auto& s : specs) n += s.numel();
  return n;
}

/// One head's view of a run of tokens inside one mini-batch.
struct Segment {
  CMatRef XQ, XK, XV;      ///< (n, f) queries, keys, values after RoPE
  const float* token_eta;  ///< (n) clamp(1/(t+1) + learnable_token_idx[t], 0) at each row's position t
  const float* lr;         ///< (n) ttt_base_lr * sigmoid(x . w_lr + b_lr) / f
  const float* ln_w;       ///< (f) the inner loss's LayerNorm weight for this head
  const float* ln_b;       ///< (f) ... and bias
  bool fresh;              ///< the segment starts a mini-batch: the accumulated gradient is zero
};

// ---- the named requirements --------------------------------------------------------------------
template <class L>
concept has_name = requires { { L::name } -> std::convertible_to<std::string_view>; };
template <class L>
concept has_param_specs = requires(int64_t f) { { L::param_specs(f) } -> std::same_as<std::vector<ParamSpec>>; };
template <class L>
concept has_apply = requires(const float* th, int64_t f, CMatRef X, MatRef Z) { L::apply(th, f, X, Z); };
template <class L>
concept has_accumulate_grad = requires(const float* th, int64_t f, CMatRef X, CMatRef dZ, const float* w, float* g) {
  L::accumulate_grad(th, f, X, dZ, w, g);
};
/// An inner learner: every requirement above.
template <class L>
concept InnerLearner = has_name<L> && has_param_specs<L> && has_apply<L> && has_accumulate_grad<L>;

/// A learner that also brings a dual-form fast path.
template <class L>
concept HasDualForm = requires(float* th, float* g, const Segment& s, MatRef Zq, typename L::Workspace& ws) {
  L::dual_form(th, g, s, Zq, ws);
};

/// The per-head buffers a learner's mini-batch needs: its own Workspace for a dual form, the
/// primal form's otherwise.
template <class L, bool = HasDualForm<L>>
struct head_workspace {
  using type = typename L::Workspace;
};

/// The inner loss of a learner: 0.5 ||ln_w * LN(f(k)) + ln_b - (v - k)||^2 (TTT's default: LayerNorm
/// and residual in the inner model), or, for a learner declaring `static constexpr bool
/// ln_residual_loss = false`, the plain 0.5 ||f(k) - v||^2 (linear attention, inner/linear_attention.hpp).
template <class L>
constexpr bool ln_residual_loss() {
  if constexpr (requires { L::ln_residual_loss; }) return bool(L::ln_residual_loss);
  else return true;
}

/// Compile-time check with one sentence per missing requirement (instead of a wall of template
/// errors). Called by every class that takes a learner.
template <class L>
constexpr bool check_learner() {
  static_assert(has_name<L>, "ttt: inner learner is missing `static constexpr std::string_view name`");
  static_assert(has_param_specs<L>,
                "ttt: inner learner is missing `static std::vector<ttt::inner::ParamSpec> param_specs(int64_t head_dim)`");
  static_assert(has_apply<L>,
                "ttt: inner learner is missing `static void apply(const float* theta, int64_t f, ttt::CMatRef X, "
                "ttt::MatRef Z)`");
  static_assert(has_accumulate_grad<L>,
                "ttt: inner learner is missing `static void accumulate_grad(const float* theta, int64_t f, ttt::CMatRef X, "
                "ttt::CMatRef dZ, const float* w, float* grad)`");
  return true;
}

/// Buffers of the primal form, reused from call to call.
struct PrimalWorkspace {
  Mat Z, G, target;
  std::vector<float> theta_t;
};
template <class L>
struct head_workspace<L, false> {
  using type = PrimalWorkspace;
};

/// The primal form for any learner, token by token, exactly as the reference's decode path:
/// gradients of the segment's tokens are all taken at theta0 (the state at the start of the
/// mini-batch); gacc accumulates lr[s] * grad_s; the query of row t sees
/// theta_t = theta0 - token_eta[t] * gacc_t.                        Zq: (n, f) learner outputs
template <class L>
void primal_segment(const float* theta0, float* gacc, int64_t f, const Segment& s, MatRef Zq, PrimalWorkspace& ws) {
  const int64_t n = s.XQ.rows();
  const int64_t P = param_count(L::param_specs(f));
  ensure_size(ws.Z, n, f);
  ensure_size(ws.G, n, f);
  ensure_size(ws.target, n, f);
  ws.theta_t.resize(size_t(P));
  L::apply(theta0, f, s.XK, ws.Z);
  if constexpr (ln_residual_loss<L>()) {
    ws.target = s.XV - s.XK;
    nn::ln_l2_grad(ws.Z, ws.target, s.ln_w, s.ln_b, ws.G);
  } else {
    ws.G = ws.Z - s.XV;  // d/dz 0.5 ||z - v||^2
  }
  for (int64_t t = 0; t < n; ++t) {
    L::accumulate_grad(theta0, f, s.XK.middleRows(t, 1), CMatRef(ws.G.middleRows(t, 1)), s.lr + t, gacc);
    const float eta = s.token_eta[t];
    for (int64_t i = 0; i < P; ++i) ws.theta_t[size_t(i)] = theta0[i] - eta * gacc[i];
    L::apply(ws.theta_t.data(), f, s.XQ.middleRows(t, 1), Zq.middleRows(t, 1));
  }
}

/// Hides a learner's dual form, so that tests can run the primal form of any learner.
template <class L>
struct PrimalOnly {
  static constexpr std::string_view name = L::name;
  static constexpr bool ln_residual_loss = inner::ln_residual_loss<L>();
  static std::vector<ParamSpec> param_specs(int64_t f) { return L::param_specs(f); }
  static void apply(const float* th, int64_t f, CMatRef X, MatRef Z) { L::apply(th, f, X, Z); }
  static void accumulate_grad(const float* th, int64_t f, CMatRef X, CMatRef dZ, const float* w, float* g) {
    L::accumulate_grad(th, f, X, dZ, w, g);
  }
  static double flops_per_token(int64_t f, int64_t b) { return L::flops_per_token(f, b); }
};

/// FLOPs per token and head of a learner's mini-batch step (for benchmarks); 0 when the learner
/// does not say.
template <class L>
double flops_per_token(int64_t f, int64_t b) {
  if constexpr (requires { L::flops_per_token(f, b); }) return L::flops_per_token(f, b);
  else return 0.0;
}

}  // namespace ttt::inner
