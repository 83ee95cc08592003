#pragma once
/// \file core/function_ref.hpp
/// FunctionRef<R(A...)>: a non-owning reference to any callable with that signature (a pointer to
/// the callable and one to a call thunk), as C++26's std::function_ref. The models' parameter
/// visitors take one, so that a model's walk over its tensors is compiled once per model type
/// (in ttt::precompiled for the built-in ones) instead of once per visiting lambda: the walk of a
/// hierarchical transformer is ~13 KB of code, and a program visits its parameters from dozens
/// of places (docs/architecture.md, "Build time").
///
/// The referenced callable must outlive the FunctionRef (pass it down a call, do not store it).
#include <memory>
#include <type_traits>
#include <utility>

namespace ttt {

template <class Sig>
class FunctionRef;

template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, A...>)
  FunctionRef(F&& f) noexcept  // NOLINT(google-explicit-constructor): a callable converts, as to std::function
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* obj, A... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(obj))(std::forward<A>(args)...);
        }) {}

  R operator()(A... args) const { return call_(obj_, std::forward<A>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

}  // namespace ttt
