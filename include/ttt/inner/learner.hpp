#pragma once
/// \file inner/learner.hpp
/// The contract of an inner learner (the model whose weights are the TTT hidden state) and the
/// view of one head's mini-batch it is handed.
///
/// A learner is a stateless type with static members; its parameters live in one flat array per
/// head, laid out in the order of `param_specs`. A learner is written once: its name, its
/// parameter shapes and its map, generic over the scalar:
///
/// \code
/// struct MyLearner {
///   static constexpr std::string_view name = "my";                     // requirement: name
///   static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f);  // requirement: param_specs
///   template <class S>                                                  // requirement: apply
///   static void apply(const S* theta, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z);  // Z = f_theta(X), (n, f)
/// };
/// \endcode
///
/// From that alone the library derives the inner gradient (inner/inner_grad.hpp) and the training
/// forward and exact reverse through the inner update (inner/derived.hpp), by running `apply` on
/// differentiable scalars (ad/real.hpp). Optional fast paths, each tested against the derived one:
///   - `accumulate_grad(theta, f, X, dZ, w, grad)`: grad += sum_r w[r] d<dZ[r], f_theta(X[r])>/dtheta
///     (then a float-only `apply` is enough for inference);
///   - `template <class S> dual_form(theta0, gacc, segment, Zq, ws)` with a `template <class S>
///     struct Workspace` (inner/linear.hpp); without it the layer runs the primal form
///     (inner/primal.hpp); with `static constexpr bool fuses_gd_step = true` besides, the dual
///     form promises to add `segment.gscale` times the gradient to gacc, and to write gacc only
///     after its last read of theta0 when `segment.fresh`: under plain GD the layer then passes
///     gacc = theta0 and gscale = -eta for a whole mini-batch, and the step needs no pass of its
///     own (TTTLayer::fuse_gd_step = false is the plain twin);
///   - with a dual form, `token_row_size(f)`, `template <class S> decode_token(theta0, rows, t, b,
///     segment, Zq, ws)` and `template <class S> add_rows(rows, n, scale, target, f)`: plain-GD
///     decode that keeps each token's gradient as a row instead of adding it to gacc
///     (inner/mlp.hpp; TTTLayer::row_decode = false is the plain twin);
///   - a specialisation of `ttt::train::LearnerGrad` (inner/learner_grad.hpp) for training.
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../ad/real.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace ttt::inner {

/// A learner's sizes: the head dimension f and, for learners that have one, a hidden width
/// (config.json's ttt_hidden_size; 0: the learner's default). It converts to f, so that learners
/// written with `int64_t f` take it as they are; a learner that reads the width takes `Dims`
/// (inner/swiglu.hpp).
struct Dims {
  int64_t f = 0;
  int64_t hidden = 0;
  constexpr Dims(int64_t f_ = 0, int64_t hidden_ = 0) : f(f_), hidden(hidden_) {}  // NOLINT: implicit on purpose
  constexpr operator int64_t() const { return f; }                               // NOLINT
};

/// One named parameter tensor of a learner, per head. In a checkpoint it is stored with the head
/// dimension in front: spec {f, f} of "W1" is the tensor "W1" of shape [H, f, f].
struct ParamSpec {
  /// normal: N(0, 0.02) as the reference's TTT weights; zeros: biases; normal_fan_in:
  /// N(0, 1/sqrt(shape[0])), a unit-scale map (fast weights that multiply each other, inner/swiglu.hpp).
  enum class Init { normal, zeros, normal_fan_in };
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::normal;
  int64_t numel() const {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

/// Total values of one head's parameters.
inline int64_t param_count(const std::vector<ParamSpec>& specs) {
  int64_t n = 0;
  for (const auto& s : specs) n += s.numel();
  return n;
}

/// A ConfigError "<source>: ttt_hidden_size is set (h) but ttt_layer_type '<name>' has no hidden
/// width to choose" when `d.hidden` is set and the learner's parameters do not depend on it.
template <class L>
void check_hidden_size(Dims d, const std::string& source) {
  if (d.hidden <= 0) return;
  auto shapes = [](const std::vector<ParamSpec>& specs) {
    std::vector<std::vector<int64_t>> v;
    for (const auto& s : specs) v.push_back(s.shape);
    return v;
  };
  if (shapes(L::param_specs(d)) == shapes(L::param_specs(Dims(d.f, d.hidden + 1))))
    throw ConfigError(source + ": ttt_hidden_size is set (" + std::to_string(d.hidden) + ") but ttt_layer_type '" +
                      std::string(L::name) + "' has no hidden width to choose");
}

/// One head's view of a run of tokens inside one mini-batch (rows are consecutive positions).
template <class S>
struct Segment {
  CRefT<S> XQ, XK, XV;  ///< (n, f) queries, keys (after RoPE), values
  const S* token_eta;   ///< (n) clamp(1/(t+1) + learnable_token_idx[t], 0) at each row's position t
  const S* lr;          ///< (n) ttt_base_lr * sigmoid(x . w_lr + b_lr) / f
  const S* ln_w;        ///< (f) the inner loss's LayerNorm weight for this head
  const S* ln_b;        ///< (f) ... and bias
  bool fresh = true;    ///< the segment starts a mini-batch: the accumulated gradient is zero
  const S* alpha = nullptr;  ///< (n) the forgetting gate, for optimizers that read one (inner/optimizer.hpp)
  /// Training under an optimizer whose queries read theta_t = keep_t theta0 + shift - eta_t gacc_t
  /// (order `after`; inner/optimizer.hpp, affine_queries): keep per row (n; 1 when null) and the
  /// shift laid out as theta (P; 0 when null). Read by the hand-written LearnerGrads only.
  const S* query_keep = nullptr;
  const S* query_shift = nullptr;
  /// The factor of the gradient accumulated into gacc (1: gacc += sum lr_s grad_s). A learner with
  /// `fuses_gd_step` honours it, and the layer then takes a complete fresh mini-batch's plain GD
  /// step inside the dual form: gacc = theta0 (the same memory) and gscale = -eta_b.
  S gscale = S(1);
};

// ---- the named requirements --------------------------------------------------------------------
template <class L>
concept has_name = requires { { L::name } -> std::convertible_to<std::string_view>; };
template <class L>
concept has_param_specs = requires(int64_t f) { { L::param_specs(f) } -> std::same_as<std::vector<ParamSpec>>; };
template <class L, class S = float>
concept has_apply = requires(const S* th, int64_t f, CRefT<S> X, RefT<S> Z) { L::apply(th, f, X, Z); };
template <class L, class S = float>
concept has_accumulate_grad = requires(const S* th, int64_t f, CRefT<S> X, CRefT<S> dZ, const S* w, S* g) {
  L::accumulate_grad(th, f, X, dZ, w, g);
};
/// The map runs on differentiable scalars (`apply` is a template over the scalar), so that its
/// gradients can be derived (inner/inner_grad.hpp, inner/derived.hpp).
template <class L, class S = double>
concept has_generic_apply = has_apply<L, ad::Real<S>>;
/// An inner learner: a name, parameter shapes, the map, and its inner gradient (its own
/// `accumulate_grad`, or derived from a generic `apply`).
template <class L>
concept InnerLearner = has_name<L> && has_param_specs<L> && has_apply<L> &&
                       (has_accumulate_grad<L> || has_generic_apply<L, float>);

/// A learner that also brings a dual-form fast path in scalar S: `dual_form(theta0, gacc, segment,
/// Zq, workspace)`, or with the dims after gacc for a learner whose shapes depend on more than f
/// (a hidden width: inner/swiglu.hpp).
template <class L, class S = float>
concept HasDualForm =
    requires(S* th, S* g, const Segment<S>& s, RefT<S> Zq, typename L::template Workspace<S>& ws) {
      L::dual_form(th, g, s, Zq, ws);
    } || requires(S* th, S* g, Dims d, const Segment<S>& s, RefT<S> Zq, typename L::template Workspace<S>& ws) {
      L::dual_form(th, g, d, s, Zq, ws);
    };

/// A learner that decodes one token at a time with its gradients kept as rows (see the file comment).
template <class L, class S = float>
concept HasRowDecode =
    HasDualForm<L, S> &&
    requires(const S* th, S* rows, int64_t t, const Segment<S>& s, RefT<S> Zq, typename L::template Workspace<S>& ws) {
      { L::token_row_size(t) } -> std::same_as<int64_t>;
      L::decode_token(th, rows, t, t, Dims(t), s, Zq, ws);
      L::add_rows(rows, t, S(1), rows, t);
    };

/// A learner's dual form, whichever of the two signatures it has.
template <class L, class S>
  requires HasDualForm<L, S>
void dual_form(const S* theta0, S* gacc, Dims d, const Segment<S>& s, RefT<S> Zq, typename L::template Workspace<S>& ws) {
  if constexpr (requires { L::dual_form(theta0, gacc, d, s, Zq, ws); }) L::dual_form(theta0, gacc, d, s, Zq, ws);
  else L::dual_form(theta0, gacc, s, Zq, ws);
}

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
  static_assert(has_accumulate_grad<L> || has_generic_apply<L, float>,
                "ttt: inner learner has no inner gradient: write its `apply` as a template over the scalar "
                "(`template <class S> static void apply(const S* theta, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z)`) "
                "and the gradient is derived, or give it `static void accumulate_grad(const float* theta, int64_t f, "
                "ttt::CMatRef X, ttt::CMatRef dZ, const float* w, float* grad)`");
  return true;
}

/// FLOPs per token and head of a learner's mini-batch step (for benchmarks); 0 when the learner
/// does not say.
template <class L>
double flops_per_token(Dims f, int64_t b) {
  if constexpr (requires { L::flops_per_token(f, b); }) return L::flops_per_token(f, b);
  else return 0.0;
}

/// Only the learner's name, shapes and map: its inner gradient and training path are the derived
/// ones (inner/inner_grad.hpp, inner/derived.hpp). Tests and benchmarks compare a learner's fast
/// paths with `ApplyOnly<L>`.
template <class L>
struct ApplyOnly {
  static constexpr std::string_view name = L::name;
  static constexpr bool ln_residual_loss = inner::ln_residual_loss<L>();
  static std::vector<ParamSpec> param_specs(Dims f) { return L::param_specs(f); }
  template <class S>
  static void apply(const S* th, Dims f, CRefT<S> X, RefT<S> Z)
    requires has_apply<L, S>
  {
    L::apply(th, f, X, Z);
  }
  static double flops_per_token(Dims f, int64_t b) { return inner::flops_per_token<L>(f, b); }
};

/// Hides a learner's dual form (keeps its own inner gradient), so that tests can run the primal
/// form of any learner.
template <class L>
struct PrimalOnly : ApplyOnly<L> {
  template <class S>
  static void accumulate_grad(const S* th, Dims f, CRefT<S> X, CRefT<S> dZ, const S* w, S* g)
    requires has_accumulate_grad<L, S>
  {
    L::accumulate_grad(th, f, X, dZ, w, g);
  }
};

}  // namespace ttt::inner
