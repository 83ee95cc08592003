#pragma once
/// \file ad/real.hpp
/// A differentiable scalar, `ad::Real<T>`, for code written generically over the scalar type (an
/// inner learner's `apply`), differentiable any number of times: the reverse sweep can itself be
/// recorded (`Adjoint::recorded`), so a gradient is a function on the tape like any other and can
/// be differentiated again. This is how the library derives, from a learner's map alone, its inner
/// gradient and the exact outer gradient through the inner update (inner/derived.hpp).
///
/// Every arithmetic on a `Real` that is not a constant appends a node to the active `RealTape`
/// (one per thread; `RealTape::Scope` makes a tape active). A node keeps at most two parents and
/// the local partial derivative towards each, itself a `Real` (a constant for linear ops, the other
/// operand for a product), which is what makes the sweep differentiable.
///
/// \code
///   ttt::ad::RealTape<double> tape;
///   ttt::ad::RealTape<double>::Scope scope(tape);
///   auto x = tape.leaf(3.0);
///   auto y = x * x * x;                                    // 27
///   auto dy = tape.gradient({y}, {1.0}, {x}, ttt::ad::Adjoint::recorded)[0];  // 3x^2 = 27, a Real
///   auto d2 = tape.gradient({dy}, {1.0}, {x})[0];          // 6x = 18
/// \endcode
///
/// A scalar tape is slow (one node per multiply-add); it is the correctness twin of the
/// hand-written fast paths and the way a new learner trains before anyone writes its fast path.
#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <limits>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"

namespace ttt::ad {

template <class T>
class RealTape;

/// A scalar value and, when it depends on a leaf of the active tape, its node there (id >= 0).
template <class T>
struct Real {
  T v = T(0);
  int32_t id = -1;  ///< -1: a constant

  Real() = default;
  Real(T value) : v(value) {}  // NOLINT: constants convert implicitly, as numbers do
  template <class U>
    requires std::is_arithmetic_v<U> && (!std::is_same_v<U, T>)
  Real(U value) : v(T(value)) {}  // NOLINT
  Real(T value, int32_t node) : v(value), id(node) {}

  bool constant() const { return id < 0; }
  Real& operator+=(const Real& o) { return *this = *this + o; }
  Real& operator-=(const Real& o) { return *this = *this - o; }
  Real& operator*=(const Real& o) { return *this = *this * o; }
  Real& operator/=(const Real& o) { return *this = *this / o; }
};

/// How the reverse sweep treats the adjoints it computes.
enum class Adjoint {
  values,    ///< plain numbers (first order; fastest)
  recorded,  ///< `Real`s recorded on the tape: the gradient can be differentiated again
};

/// The tape of `Real` operations. One tape is active per thread (`Scope`); operations on `Real`s
/// with no active tape throw.
template <class T>
class RealTape {
 public:
  struct Node {
    int32_t a = -1, b = -1;  ///< parents (-1: none)
    Real<T> da, db;          ///< d node / d parent
  };

  /// Makes a tape the active one for this thread for the lifetime of the scope.
  class Scope {
   public:
    explicit Scope(RealTape& t) : prev_(current()) { current() = &t; }
    ~Scope() { current() = prev_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    RealTape* prev_;
  };

  static RealTape*& current() {
    thread_local RealTape* t = nullptr;
    return t;
  }
  static RealTape& active() {
    RealTape* t = current();
    if (!t) throw Error("ttt::ad::Real: an operation on a differentiable value with no active RealTape (make one with RealTape::Scope)");
    return *t;
  }

  /// A new independent variable.
  Real<T> leaf(T value) { return Real<T>(value, push(Node{})); }
  int32_t size() const { return int32_t(nodes_.size()); }
  void reserve(size_t n) { nodes_.reserve(n); }
  void clear() { nodes_.clear(); }
  /// Sets the partial derivative of a one-parent node towards its parent (for functions whose
  /// derivative is written with their own result: the partial is made after the node).
  void set_partial(const Real<T>& y, const Real<T>& d) {
    if (y.constant()) return;
    nodes_[size_t(y.id)].da = d;
  }

  /// A node with value v and up to two parents (constant parents are dropped).
  Real<T> node(T v, const Real<T>& a, Real<T> da, const Real<T>& b = {}, Real<T> db = {}) {
    Node n;
    if (!a.constant()) n.a = a.id, n.da = da;
    if (!b.constant()) n.b = b.id, n.db = db;
    if (n.a < 0 && n.b < 0) return Real<T>(v);
    return Real<T>(v, push(n));
  }

  /// Adjoints of `wrt` for the function sum_i seeds[i] * outputs[i], by one reverse sweep over
  /// the nodes recorded from `from` on (earlier nodes, the leaves among them, only collect
  /// adjoints; nothing earlier than `from` may depend on a later node). With Adjoint::recorded
  /// the returned values are `Real`s recorded on this tape (seeds may be `Real`s too).
  /// With `to` >= 0 the sweep stops there (the outputs and what they depend on from `from` on
  /// lie in [from, to)): the gradient of one piece of a larger recording.
  std::vector<Real<T>> gradient(const std::vector<Real<T>>& outputs, const std::vector<Real<T>>& seeds,
                                const std::vector<Real<T>>& wrt, Adjoint mode = Adjoint::values, int32_t from = 0,
                                int32_t to = -1) {
    if (outputs.size() != seeds.size())
      throw Error("ttt::ad::RealTape::gradient: " + std::to_string(outputs.size()) + " outputs but " +
                  std::to_string(seeds.size()) + " seeds");
    const int32_t hi = to < 0 ? size() : to;
    for (const auto& o : outputs)
      if (o.id >= hi) throw Error("ttt::ad::RealTape::gradient: an output was recorded after the end of the sweep");
    return mode == Adjoint::values ? sweep<T>(outputs, seeds, wrt, from, hi)
                                   : sweep<Real<T>>(outputs, seeds, wrt, from, hi);
  }

 private:
  int32_t push(const Node& n) {
    if (nodes_.size() >= size_t(std::numeric_limits<int32_t>::max()))
      throw Error("ttt::ad::RealTape: more than 2^31 nodes");
    nodes_.push_back(n);
    return int32_t(nodes_.size() - 1);
  }

  template <class A>
  std::vector<Real<T>> sweep(const std::vector<Real<T>>& outputs, const std::vector<Real<T>>& seeds,
                             const std::vector<Real<T>>& wrt, int32_t from, int32_t hi) {
    std::vector<A> adj(size_t(hi - from), A(0));
    std::vector<char> hit(size_t(hi - from), 0);
    std::unordered_map<int32_t, A> below;  // adjoints of nodes before `from`
    auto add = [&](int32_t id, const A& x) {
      if (id >= from) {
        auto k = size_t(id - from);
        adj[k] = hit[k] ? A(adj[k] + x) : x;
        hit[k] = 1;
      } else {
        auto it = below.find(id);
        if (it == below.end()) below.emplace(id, x);
        else it->second = it->second + x;
      }
    };
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (outputs[i].constant()) continue;
      if constexpr (std::is_same_v<A, T>) add(outputs[i].id, seeds[i].v);
      else add(outputs[i].id, seeds[i]);
    }
    for (int32_t i = hi - 1; i >= from; --i) {
      const auto k = size_t(i - from);
      if (!hit[k]) continue;
      const Node n = nodes_[size_t(i)];  // a copy: a recorded sweep appends to nodes_
      const A g = adj[k];
      if constexpr (std::is_same_v<A, T>) {
        if (n.a >= 0) add(n.a, g * n.da.v);
        if (n.b >= 0) add(n.b, g * n.db.v);
      } else {
        if (n.a >= 0) add(n.a, n.da.constant() && n.da.v == T(1) ? g : A(g * n.da));
        if (n.b >= 0) add(n.b, n.db.constant() && n.db.v == T(1) ? g : A(g * n.db));
      }
    }
    std::vector<Real<T>> out;
    out.reserve(wrt.size());
    for (const auto& w : wrt) {
      A g(0);
      if (!w.constant()) {
        if (w.id >= from) {
          if (w.id < hi && hit[size_t(w.id - from)]) g = adj[size_t(w.id - from)];
        } else if (auto it = below.find(w.id); it != below.end()) {
          g = it->second;
        }
      }
      out.push_back(Real<T>(g));
    }
    return out;
  }

  std::vector<Node> nodes_;
};

// ---- arithmetic ----------------------------------------------------------------------------------
// Partial derivatives are Reals built from the operands, so that a recorded sweep differentiates
// them again. Shortcuts (x + 0, x * 1) return an operand unchanged, which is exact.

template <class T>
Real<T> operator+(const Real<T>& a, const Real<T>& b) {
  if (b.constant() && b.v == T(0)) return a;
  if (a.constant() && a.v == T(0)) return b;
  if (a.constant() && b.constant()) return Real<T>(a.v + b.v);
  return RealTape<T>::active().node(a.v + b.v, a, Real<T>(T(1)), b, Real<T>(T(1)));
}
template <class T>
Real<T> operator-(const Real<T>& a) {
  if (a.constant()) return Real<T>(-a.v);
  return RealTape<T>::active().node(-a.v, a, Real<T>(T(-1)));
}
template <class T>
Real<T> operator-(const Real<T>& a, const Real<T>& b) {
  if (b.constant() && b.v == T(0)) return a;
  if (a.constant() && b.constant()) return Real<T>(a.v - b.v);
  return RealTape<T>::active().node(a.v - b.v, a, Real<T>(T(1)), b, Real<T>(T(-1)));
}
template <class T>
Real<T> operator*(const Real<T>& a, const Real<T>& b) {
  if (a.constant() && b.constant()) return Real<T>(a.v * b.v);
  if (b.constant() && b.v == T(1)) return a;
  if (a.constant() && a.v == T(1)) return b;
  if ((a.constant() && a.v == T(0)) || (b.constant() && b.v == T(0))) return Real<T>(T(0));
  return RealTape<T>::active().node(a.v * b.v, a, b, b, a);
}
namespace detail {
/// y = f(x) of value v, for an f whose derivative is best written with its own result (sqrt, exp,
/// tanh, sigmoid, 1/x): the node is made first and its partial `partial(y)` afterwards
/// (RealTape::set_partial), so that a recorded sweep differentiates the partial again.
template <class T, class D>
Real<T> with_own_partial(const Real<T>& x, T v, D partial) {
  if (x.constant()) return Real<T>(v);
  auto& tape = RealTape<T>::active();
  const Real<T> y = tape.node(v, x, Real<T>(T(0)));
  tape.set_partial(y, partial(y));
  return y;
}
}  // namespace detail

/// 1 / b; d/db = -1/b^2 = -r r.
template <class T>
Real<T> reciprocal(const Real<T>& b) {
  return detail::with_own_partial(b, T(1) / b.v, [](const Real<T>& r) { return -(r * r); });
}
template <class T>
Real<T> operator/(const Real<T>& a, const Real<T>& b) {
  if (a.constant() && b.constant()) return Real<T>(a.v / b.v);
  if (b.constant()) return a * Real<T>(T(1) / b.v);
  return a * reciprocal(b);
}

#define TTT_AD_REAL_MIXED(op)                                                        \
  template <class T, class U>                                                        \
    requires std::is_arithmetic_v<U>                                                 \
  Real<T> operator op(const Real<T>& a, U b) { return a op Real<T>(T(b)); }          \
  template <class T, class U>                                                        \
    requires std::is_arithmetic_v<U>                                                 \
  Real<T> operator op(U a, const Real<T>& b) { return Real<T>(T(a)) op b; }
TTT_AD_REAL_MIXED(+)
TTT_AD_REAL_MIXED(-)
TTT_AD_REAL_MIXED(*)
TTT_AD_REAL_MIXED(/)
#undef TTT_AD_REAL_MIXED

#define TTT_AD_REAL_CMP(op)                                                                                     \
  template <class T>                                                                                            \
  bool operator op(const Real<T>& a, const Real<T>& b) { return a.v op b.v; }                                   \
  template <class T, class U>                                                                                   \
    requires std::is_arithmetic_v<U>                                                                            \
  bool operator op(const Real<T>& a, U b) { return a.v op T(b); }                                               \
  template <class T, class U>                                                                                   \
    requires std::is_arithmetic_v<U>                                                                            \
  bool operator op(U a, const Real<T>& b) { return T(a) op b.v; }
TTT_AD_REAL_CMP(<)
TTT_AD_REAL_CMP(>)
TTT_AD_REAL_CMP(<=)
TTT_AD_REAL_CMP(>=)
TTT_AD_REAL_CMP(==)
TTT_AD_REAL_CMP(!=)
#undef TTT_AD_REAL_CMP

// ---- functions (found by argument-dependent lookup: write `using std::exp; exp(x)`) ------------
template <class T>
Real<T> sqrt(const Real<T>& x) {  // d = 1 / (2 y)
  return detail::with_own_partial(x, std::sqrt(x.v), [](const Real<T>& y) { return Real<T>(T(0.5)) * reciprocal(y); });
}
template <class T>
Real<T> exp(const Real<T>& x) {  // d = y
  return detail::with_own_partial(x, std::exp(x.v), [](const Real<T>& y) { return y; });
}
template <class T>
Real<T> tanh(const Real<T>& x) {  // d = 1 - y^2
  return detail::with_own_partial(x, std::tanh(x.v), [](const Real<T>& y) { return Real<T>(T(1)) - y * y; });
}
/// 1 / (1 + exp(-x)); d = y (1 - y).
template <class T>
Real<T> sigmoid(const Real<T>& x) {
  return detail::with_own_partial(x, T(1) / (T(1) + std::exp(-x.v)),
                                  [](const Real<T>& y) { return y * (Real<T>(T(1)) - y); });
}
template <class T>
Real<T> log(const Real<T>& x) {
  if (x.constant()) return Real<T>(std::log(x.v));
  return RealTape<T>::active().node(std::log(x.v), x, Real<T>(T(1)) / x);
}
template <class T>
Real<T> abs(const Real<T>& x) {
  return x.v < T(0) ? -x : x;
}
template <class T>
Real<T> max(const Real<T>& a, const Real<T>& b) {
  return a.v >= b.v ? a : b;
}
template <class T>
Real<T> min(const Real<T>& a, const Real<T>& b) {
  return a.v <= b.v ? a : b;
}

}  // namespace ttt::ad

/// Eigen matrices of Reals (Matrix<Real<double>, ...>): products, sums and the rest of Eigen's
/// arithmetic record on the active tape.
template <class T>
struct Eigen::NumTraits<ttt::ad::Real<T>> : Eigen::NumTraits<T> {
  using Real = ttt::ad::Real<T>;
  using NonInteger = Real;
  using Nested = Real;
  using Literal = Real;
  enum {
    IsComplex = 0,
    IsInteger = 0,
    IsSigned = 1,
    RequireInitialization = 1,
    ReadCost = 1,
    AddCost = 3,
    MulCost = 3
  };
};
