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
/// the CLI's help from there).
#include <string>
#include <string_view>
#include <tuple>

#include "../core/error.hpp"
#include "linear.hpp"
#include "mlp.hpp"

namespace ttt::inner {

/// The learners a checkpoint may name, in the order error messages list them.
using Builtin = std::tuple<Linear, MLP>;

/// "linear, mlp": the names of `Builtin`, for messages and help texts.
inline std::string builtin_names() {
  std::string s;
  std::apply([&](auto... l) { ((s += (s.empty() ? "" : ", ") + std::string(decltype(l)::name)), ...); }, Builtin{});
  return s;
}

/// Whether `name` is a built-in learner.
inline bool is_builtin(std::string_view name) {
  return std::apply([&](auto... l) { return ((decltype(l)::name == name) || ...); }, Builtin{});
}

namespace detail_registry {
template <size_t I, class F>
decltype(auto) dispatch(std::string_view name, F& fn) {
  using L = std::tuple_element_t<I, Builtin>;
  if constexpr (I + 1 == std::tuple_size_v<Builtin>) {
    return fn.template operator()<L>();
  } else {
    if (name == L::name) return fn.template operator()<L>();
    return dispatch<I + 1>(name, fn);
  }
}
}  // namespace detail_registry

/// `fn.template operator()<L>()` for the built-in learner L called `name`; ConfigError
/// "<source>: ttt_layer_type '<name>' is not a built-in learner (linear, mlp); ..." otherwise.
template <class F>
decltype(auto) with_learner(std::string_view name, const std::string& source, F&& fn) {
  if (!is_builtin(name))
    throw ConfigError(source + ": ttt_layer_type '" + std::string(name) + "' is not a built-in learner (" +
                      builtin_names() + "); a custom learner needs TTTModel<YourLearner> directly");
  return detail_registry::dispatch<0>(name, fn);
}


}  // namespace ttt::inner
