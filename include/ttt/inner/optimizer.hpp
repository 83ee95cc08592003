#pragma once
/// \file inner/optimizer.hpp
/// The contract of an inner optimizer: how a mini-batch's accumulated inner gradient becomes the
/// inner weights. The learner (inner/learner.hpp) says what the hidden state computes; the
/// optimizer says how it learns. An optimizer is a stateless type with static members, written
/// once and generic over the scalar (so that training differentiates through it, inner/derived.hpp):
///
/// \code
/// struct MyOptimizer {
///   static constexpr std::string_view name = "my";                          // requirement: name
///   static int64_t state_size(const std::vector<ttt::inner::ParamSpec>& specs);  // optional: extra state (0)
///   static constexpr bool uses_gate = false;     // optional: a learned per-token gate alpha_t in [0, 1]
///   static constexpr std::string_view options[] = {"ttt_inner_beta"};     // optional: the config keys it reads
///   template <class S>
///   static void step(const ttt::inner::Step<S>& s);                           // requirement: step
///   template <class S>                                                        // optional: its reverse
///   static void step_vjp(const ttt::inner::Step<S>& s, const S* dtheta, const S* dstate,
///                        const ttt::inner::StepGrad<S>& d);
///   // optional: the weights a query reads are affine, theta_t = keep_t theta0 + shift - eta_t gacc_t
///   static constexpr bool affine_queries = true;
///   template <class S> static S query_keep(const ttt::inner::Step<S>& s);           // optional (1)
///   template <class S> static void query_keep_vjp(const ttt::inner::Step<S>& s, S dkeep,
///                                                 const ttt::inner::StepGrad<S>& d);
///   template <class S> static void query_shift(const ttt::inner::Step<S>& s, S* shift);  // optional (0)
///   template <class S> static void query_shift_vjp(const ttt::inner::Step<S>& s, const S* dshift,
///                                                  const ttt::inner::StepGrad<S>& d);
/// };
/// \endcode
///
/// `step` maps the state at the start of a mini-batch (theta0 and the optimizer's own state) and
/// the gradient accumulated so far, gacc_t = sum_{s<=t} lr_s grad_s (all gradients taken at theta0,
/// as TTT does), to the weights theta_t and state a query at token t reads: the update as if the
/// mini-batch ended at t. At the end of the mini-batch the same map, at its last token, is the
/// new state. For `gd` that is TTT's theta_t = theta0 - eta_t gacc_t (the dual forms compute it
/// in closed form); the others run in the primal form (inner/optimized.hpp).
///
/// `step_vjp` is the reverse of `step` for training's fast paths (layers/ttt_layer_grad.hpp): given
/// the cotangents of theta and state, it ADDS those of theta0, state0, gacc, eta and alpha into
/// `d` (its out-pointers of `s` are scratch). Without one, training records `step` on an ad::Real
/// tape (inner/step_grad.hpp): exact, slower. The built-in ones are tested against the tape.
///
/// `affine_queries` declares that the step is theta_t = keep_t theta0 + shift - eta_t gacc_t with
/// keep_t a scalar (from eta_t and alpha_t: `query_keep`, 1 without one) and shift P values that
/// do not depend on the token (from state0: `query_shift`, 0 without one); each comes with its
/// reverse, which ADDS into `d` (alpha's and state0's cotangents). Then training's order `after`
/// runs on the learner's hand-written dual form (inner/update_grad.hpp) instead of the derived
/// path. gd (keep 1, no shift), momentum (shift beta S0) and decay (keep 1 - alpha_t) declare it;
/// muon and adam are not affine in gacc. The tests check the declaration against `step`.
#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "../core/error.hpp"
#include "../core/model_config.hpp"
#include "learner.hpp"

namespace ttt::inner {

/// Which weights a mini-batch's queries read (LaCT's order option).
enum class QueryOrder {
  after,   ///< query t reads the weights updated by the tokens up to and including t (TTT)
  before,  ///< every query reads the weights from before the mini-batch's update (LaCT's
           ///< apply-then-update: no token sees its own mini-batch)
};

/// The inner update's options (config.json: ttt_inner_optimizer, ttt_inner_beta, ttt_ns_steps,
/// ttt_query_order).
struct UpdateRule {
  std::string optimizer = "gd";
  double beta = 0.9;        ///< momentum's decay of the previous surprise, in [0, 1)
  int64_t ns_steps = 5;     ///< muon's Newton-Schulz iterations, >= 1
  QueryOrder order = QueryOrder::after;
  /// TTT's update exactly as the reference computes it: the learners' dual forms apply.
  bool is_plain_gd() const { return optimizer == "gd" && order == QueryOrder::after; }
  bool operator==(const UpdateRule&) const = default;
};

inline const char* order_name(QueryOrder o) { return o == QueryOrder::after ? "after" : "before"; }

/// A model config's inner update (its keys unchecked: the layer checks them, checked_optimizer).
inline UpdateRule update_rule(const ModelConfig& c) {
  UpdateRule r;
  r.optimizer = c.ttt_inner_optimizer;
  r.beta = c.ttt_inner_beta;
  r.ns_steps = c.ttt_ns_steps;
  r.order = c.ttt_query_order == "before" ? QueryOrder::before : QueryOrder::after;
  return r;
}

/// The arguments of one optimizer step (see the file comment). P values each for theta0, gacc,
/// theta; Q = state_size(specs) each for state0, state.
template <class S>
struct Step {
  const std::vector<ParamSpec>& specs;
  const UpdateRule& rule;
  const S* theta0;  ///< (P) the weights at the start of the mini-batch
  const S* state0;  ///< (Q) the optimizer's state there
  const S* gacc;    ///< (P) sum_{s<=t} lr_s grad_s
  S eta;            ///< token_eta[t]
  S alpha;          ///< the gate at token t (optimizers with uses_gate; 0 otherwise)
  S* theta;         ///< (P) out: theta_t
  S* state;         ///< (Q) out: the state at t
};

/// The cotangents `step_vjp` ADDS into: theta0, gacc (P), state0 (Q), eta and alpha (one each).
template <class S>
struct StepGrad {
  S* dtheta0;
  S* dstate0;
  S* dgacc;
  S* deta;
  S* dalpha;
};

template <class O>
concept has_optimizer_name = requires { { O::name } -> std::convertible_to<std::string_view>; };
template <class O, class S = float>
concept has_step = requires(const Step<S>& s) { O::step(s); };
/// An inner optimizer: a name and a step, generic over the scalar (ad::Real included).
template <class O>
concept InnerOptimizer = has_optimizer_name<O> && has_step<O, float> && has_step<O, double> &&
                         has_step<O, ad::Real<double>>;

/// Values of optimizer state per head beyond theta (0 unless the optimizer says).
template <class O>
int64_t state_size(const std::vector<ParamSpec>& specs) {
  if constexpr (requires { O::state_size(specs); }) return O::state_size(specs);
  else return 0;
}

/// Whether the optimizer reads a learned per-token gate alpha_t (decay).
template <class O>
constexpr bool uses_gate() {
  if constexpr (requires { O::uses_gate; }) return bool(O::uses_gate);
  else return false;
}

/// Whether the optimizer declares its queries affine (see the file comment), and which parts.
template <class O>
constexpr bool affine_queries() {
  if constexpr (requires { O::affine_queries; }) return bool(O::affine_queries);
  else return false;
}
template <class O, class S>
concept has_query_keep = requires(const Step<S>& s, const StepGrad<S>& d) {
  { O::query_keep(s) } -> std::convertible_to<S>;
  O::query_keep_vjp(s, S(0), d);
};
template <class O, class S>
concept has_query_shift = requires(const Step<S>& s, S* p, const S* c, const StepGrad<S>& d) {
  O::query_shift(s, p);
  O::query_shift_vjp(s, c, d);
};

/// Whether the optimizer reads the config key `key` (ttt_inner_beta, ttt_ns_steps): its `options`.
template <class O>
constexpr bool reads_option(std::string_view key) {
  if constexpr (requires { O::options; }) {
    for (std::string_view k : O::options)
      if (k == key) return true;
  }
  return false;
}

template <class O>
constexpr bool check_optimizer() {
  static_assert(has_optimizer_name<O>, "ttt: inner optimizer is missing `static constexpr std::string_view name`");
  static_assert(has_step<O, float> && has_step<O, double> && has_step<O, ad::Real<double>>,
                "ttt: inner optimizer is missing `template <class S> static void step(const ttt::inner::Step<S>&)` "
                "(a template over the scalar, so that training can differentiate through it)");
  return true;
}

/// "gd, momentum, ...": the names of a tuple of optimizers.
template <class Opts>
std::string optimizer_names() {
  std::string s;
  std::apply([&](auto... o) { ((s += (s.empty() ? "" : ", ") + std::string(decltype(o)::name)), ...); }, Opts{});
  return s;
}

/// Whether `name` is one of the tuple of optimizers.
template <class Opts>
bool is_optimizer(std::string_view name) {
  return std::apply([&](auto... o) { return ((decltype(o)::name == name) || ...); }, Opts{});
}

/// The position of `name` in the tuple of optimizers; ConfigError "<source>: ttt_inner_optimizer
/// 'x' is not an inner optimizer (gd, momentum, ...)" when absent.
template <class Opts>
int optimizer_index(std::string_view name, const std::string& source) {
  int i = 0, found = -1;
  std::apply([&](auto... o) { ((decltype(o)::name == name ? void(found = i++) : void(i++)), ...); }, Opts{});
  if (found < 0)
    throw ConfigError(source + ": ttt_inner_optimizer '" + std::string(name) + "' is not an inner optimizer (" +
                      optimizer_names<Opts>() + ")");
  return found;
}

template <class Opts, class F>
decltype(auto) visit_optimizer(int index, F&& fn);

/// The optimizer of `rule` among `Opts`, checked: its index, or a ConfigError "<source>: ..." for
/// an unknown name or an option set (not its default) that the chosen optimizer does not read.
template <class Opts>
int checked_optimizer(const UpdateRule& rule, const std::string& source) {
  const int index = optimizer_index<Opts>(rule.optimizer, source);
  visit_optimizer<Opts>(index, [&]<class O>() {
    const UpdateRule d;
    auto unread = [&](const char* key, const std::string& value) {
      if (reads_option<O>(key)) return;
      std::string readers;
      std::apply([&](auto... o) {
        ((reads_option<decltype(o)>(key) ? void(readers += (readers.empty() ? "" : ", ") + std::string(decltype(o)::name))
                                         : void()), ...);
      }, Opts{});
      throw ConfigError(source + ": " + key + " is set (" + value + ") but ttt_inner_optimizer '" + rule.optimizer +
                        "' does not read it" + (readers.empty() ? std::string() : " (" + readers + " does)"));
    };
    if (rule.beta != d.beta) unread("ttt_inner_beta", std::to_string(rule.beta));
    if (rule.ns_steps != d.ns_steps) unread("ttt_ns_steps", std::to_string(rule.ns_steps));
  });
  return index;
}

namespace detail_optimizer {
template <class Opts, size_t I, class F>
decltype(auto) visit(int index, F& fn) {
  using O = std::tuple_element_t<I, Opts>;
  static_assert(check_optimizer<O>());
  if constexpr (I + 1 == std::tuple_size_v<Opts>) {
    return fn.template operator()<O>();
  } else {
    if (index == int(I)) return fn.template operator()<O>();
    return visit<Opts, I + 1>(index, fn);
  }
}
}  // namespace detail_optimizer

/// `fn.template operator()<O>()` for the optimizer at `index` of the tuple `Opts`.
template <class Opts, class F>
decltype(auto) visit_optimizer(int index, F&& fn) {
  return detail_optimizer::visit<Opts, 0>(index, fn);
}

/// An optimizer chosen at run time, in scalar S: its step and its state size. The mini-batch
/// functions (inner/optimized.hpp, inner/derived.hpp) take it instead of the optimizer's type, so
/// that they are compiled once per learner and scalar, not once per optimizer too.
template <class S>
struct OptimizerFn {
  void (*step)(const Step<S>&) = nullptr;
  int64_t Q = 0;         ///< state values per head
  bool gate = false;     ///< reads the forgetting gate
};

template <class O, class S>
OptimizerFn<S> optimizer_fn(const std::vector<ParamSpec>& specs) {
  return {+[](const Step<S>& s) { O::step(s); }, state_size<O>(specs), uses_gate<O>()};
}

/// The optimizer at `index` of the tuple `Opts`, in scalar S.
template <class Opts, class S>
OptimizerFn<S> optimizer_fn(int index, const std::vector<ParamSpec>& specs) {
  return visit_optimizer<Opts>(index, [&]<class O>() { return optimizer_fn<O, S>(specs); });
}

}  // namespace ttt::inner
