#pragma once
/// \file inner/registry.hpp
/// The one place where a learner's name (config.json's `ttt_layer_type`, a CLI flag, a study
/// model's name) becomes a learner type. Programs that load whatever they are given call
/// `with_learner(name, fn)`; code that knows its learner at compile time uses the type directly.
///
/// \code
///   ttt::inner::with_learner(cfg.ttt_layer_type, "config.json", [&]<class L>() {
///     ttt::TTTModel<L> model(cfg);  ...
///   });
/// \endcode
///
/// A new built-in learner is added to `Builtin` below (and gets its name in error messages and
/// the CLI's help from there). A program with learners of its own passes a longer tuple as
/// `Learners` (the `ttt` tool does so when built with ttt_add_cli, examples/cli/learners.hpp).
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "../core/error.hpp"
#include "linear.hpp"
#include "linear_attention.hpp"
#include "mlp.hpp"
#include "optimizers.hpp"
#include "swiglu.hpp"

namespace ttt::inner {

/// The learners a checkpoint may name, in the order error messages list them.
using Builtin = std::tuple<Linear, MLP, SwiGLU, LinearAttention>;

/// {"linear", "mlp", ...}: the names of a tuple of learners (the built-in ones by default).
template <class Learners = Builtin>
std::vector<std::string> builtin_name_list() {
  return std::apply([](auto... l) { return std::vector<std::string>{std::string(decltype(l)::name)...}; }, Learners{});
}

/// "linear, mlp": the names of a tuple of learners (the built-in ones by default), for messages
/// and help texts.
template <class Learners = Builtin>
std::string builtin_names() {
  std::string s;
  std::apply([&](auto... l) { ((s += (s.empty() ? "" : ", ") + std::string(decltype(l)::name)), ...); }, Learners{});
  return s;
}

/// Whether `name` is one of the learners (built-in by default).
template <class Learners = Builtin>
bool is_builtin(std::string_view name) {
  return std::apply([&](auto... l) { return ((decltype(l)::name == name) || ...); }, Learners{});
}

/// A TTT name's learner, inner optimizer (views into the name) and query order.
struct TTTName {
  std::string_view learner;
  std::string_view optimizer = "gd";
  QueryOrder order = QueryOrder::after;
};

/// "ttt-<learner>[-<optimizer>][-before]" (ttt-mlp-momentum -> {mlp, momentum, after};
/// ttt-swiglu-muon-before -> {swiglu, muon, before}: LaCT's apply-then-update; gd when no
/// optimizer is named) with a learner of `Learners` and an optimizer of `Opts`, or nullopt. The
/// hierarchical model's mixer names and the study's model names are parsed by it.
template <class Learners = Builtin, class Opts = BuiltinOptimizers>
std::optional<TTTName> parse_ttt_name(std::string_view name) {
  constexpr std::string_view prefix = "ttt-", before = "-before";
  if (!name.starts_with(prefix)) return std::nullopt;
  std::string_view rest = name.substr(prefix.size());
  TTTName t;
  if (rest.ends_with(before)) t.order = QueryOrder::before, rest.remove_suffix(before.size());
  const size_t dash = rest.find('-');
  t.learner = rest.substr(0, dash);
  if (dash != std::string_view::npos) t.optimizer = rest.substr(dash + 1);
  if (!is_builtin<Learners>(t.learner) || !is_optimizer<Opts>(t.optimizer)) return std::nullopt;
  return t;
}

namespace detail_registry {
template <class Learners, size_t I, class F>
decltype(auto) dispatch(std::string_view name, F& fn) {
  using L = std::tuple_element_t<I, Learners>;
  if constexpr (I + 1 == std::tuple_size_v<Learners>) {
    return fn.template operator()<L>();
  } else {
    if (name == L::name) return fn.template operator()<L>();
    return dispatch<Learners, I + 1>(name, fn);
  }
}
}  // namespace detail_registry

/// `fn.template operator()<L>()` for the learner L called `name` among `Learners` (the built-in
/// ones by default); ConfigError "<source>: ttt_layer_type '<name>' is not a built-in learner
/// (linear, mlp); ..." otherwise.
template <class Learners = Builtin, class F>
decltype(auto) with_learner(std::string_view name, const std::string& source, F&& fn) {
  if (!is_builtin<Learners>(name))
    throw ConfigError(source + ": ttt_layer_type '" + std::string(name) + "' is not a built-in learner (" +
                      builtin_names<Learners>() +
                      "); a learner of your own: TTTModel<YourLearner> directly, or a `ttt` program built with it "
                      "(ttt_add_cli, examples/CMakeLists.txt)");
  return detail_registry::dispatch<Learners, 0>(name, fn);
}

}  // namespace ttt::inner
