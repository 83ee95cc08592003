#pragma once
/// \file ad/tape.hpp
/// A small reverse-mode automatic differentiation tape. Values are row-major Eigen matrices of
/// scalar T (float for models, double for finite-difference checks); every op appends a node
/// holding its value and a VJP closure that adds the op's input gradients given its output
/// gradient. `backward(loss)` walks the nodes in reverse.
///
/// Leaves are constants (no gradient), parameters (the value is referenced, not copied; the
/// gradient is added into a caller's matrix) or plain leaves (gradient read with `grad`).
///
/// A custom op with its own backward (e.g. a layer with a hand-written VJP) is one call:
/// \code
///   using namespace ttt::ad;
///   Tape<float> tape;
///   Var<float> x = tape.leaf(X);
///   // y = 2 * x, with its VJP written by hand: dx = 2 * dy
///   Var<float> y = tape.custom({x}, 2.0f * X,
///       [](const Matrix<float>& dy, std::span<Matrix<float>> dx) { dx[0] += 2.0f * dy; });
///   tape.backward(sum(y));
///   const Matrix<float>& gx = tape.grad(x);  // all twos
/// \endcode
/// In `custom`, `dx[i]` arrives as zeros of input i's shape (only for inputs that need a
/// gradient; the others are empty matrices) and the VJP adds into it.
///
/// An inference tape (`Tape<T> tape{ad::no_grad}`) records no VJPs and can give memory back: after
/// a stretch of ops whose intermediates nothing reads again, `release(mark, {kept...})` drops the
/// values of the ops recorded since `mark = tape.size()` except the kept ones (on a tape that
/// records gradients it does nothing: backward needs them). Reading a released value throws.
/// \code
///   Tape<float> tape{no_grad};
///   const size_t mark = tape.size();
///   Var<float> y = relu(linear(x, w));     // linear's output is an intermediate
///   tape.release(mark, {y});               // its matrix is freed now, y's kept
/// \endcode
#include <Eigen/Core>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../blocks/matmul.hpp"
#include "../core/error.hpp"

namespace ttt::ad {

template <class T>
using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <class T>
class Tape;

/// Tag of an inference tape (see the file comment).
struct NoGrad {};
inline constexpr NoGrad no_grad{};

/// A handle to a node of a tape: cheap to copy, valid while the tape lives.
template <class T>
struct Var {
  Tape<T>* tape = nullptr;
  int64_t id = -1;
  const Matrix<T>& value() const { return tape->value(*this); }
  Eigen::Index rows() const { return value().rows(); }
  Eigen::Index cols() const { return value().cols(); }
  bool requires_grad() const { return tape->requires_grad(*this); }
};

template <class T>
class Tape {
 public:
  using M = Matrix<T>;
  /// Internal VJP: given the node's output gradient, add into the inputs' gradients via
  /// `accumulate` / `grad_buffer`.
  using Backward = std::function<void(const M& dout, Tape& tape)>;
  /// User VJP of `custom`: dinputs[i] holds zeros of input i's shape (empty when input i needs
  /// no gradient); add the contribution.
  using CustomVjp = std::function<void(const M& dout, std::span<M> dinputs)>;

  Tape() = default;
  /// An inference tape: nothing on it needs a gradient, `release` frees values, `backward` throws.
  explicit Tape(NoGrad) : no_grad_(true) {}
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  /// A value with no gradient (copied into the tape).
  Var<T> constant(M v) { return push(std::move(v), nullptr, false, nullptr); }
  /// A value with a gradient, read after `backward` with `grad`.
  Var<T> leaf(M v) { return push(std::move(v), nullptr, !no_grad_, nullptr); }
  /// A parameter: the tape keeps a reference to `v` (which must outlive the tape); `backward` adds
  /// d loss / d v into `*grad_sink` (same shape) when it is not null.
  Var<T> param(const M& v, M* grad_sink) {
    if (grad_sink && no_grad_) throw Error("ad::Tape::param: an inference tape (ad::no_grad) takes no gradient sink");
    if (grad_sink && (grad_sink->rows() != v.rows() || grad_sink->cols() != v.cols()))
      throw ShapeError("ad::Tape::param: gradient sink has shape [" + std::to_string(grad_sink->rows()) + ", " +
                       std::to_string(grad_sink->cols()) + "], parameter [" + std::to_string(v.rows()) + ", " +
                       std::to_string(v.cols()) + "]");
    Node& n = push_node(grad_sink != nullptr, nullptr);
    n.ext = &v;
    n.sink = grad_sink;
    return {this, int64_t(nodes_.size()) - 1};
  }

  /// Record an op: its value, whether it needs a gradient, and its VJP (used only when it does).
  Var<T> record(M value, bool needs_grad, Backward back) {
    Var<T> v = push(std::move(value), nullptr, needs_grad, needs_grad ? std::move(back) : nullptr);
    nodes_.back().op = true;
    return v;
  }

  /// True for an inference tape (constructed with ad::no_grad).
  bool inference() const { return no_grad_; }

  /// On an inference tape: free the values of the ops recorded at or after node `mark` (a
  /// `size()` taken earlier), except `keep`; leaves, constants and parameters stay. A released
  /// value must not be read again (value() throws). On a gradient tape: nothing.
  void release(size_t mark, std::initializer_list<Var<T>> keep) { release(mark, std::span<const Var<T>>(keep.begin(), keep.size())); }
  void release(size_t mark, std::span<const Var<T>> keep) {
    if (!no_grad_) return;
    for (const Var<T>& v : keep) check_owner(v, "release");
    for (size_t i = mark; i < nodes_.size(); ++i) {
      Node& n = nodes_[i];
      if (!n.op || n.released) continue;
      bool kept = false;
      for (const Var<T>& v : keep) kept = kept || size_t(v.id) == i;
      if (kept) continue;
      n.own = M();
      n.released = true;
    }
  }

  /// An op with a user-given VJP (see the file comment).
  Var<T> custom(std::vector<Var<T>> inputs, M value, CustomVjp vjp) {
    bool any = false;
    for (const Var<T>& v : inputs) {
      check_owner(v, "custom");
      any = any || requires_grad(v);
    }
    return record(std::move(value), any, [inputs, vjp = std::move(vjp)](const M& dout, Tape& t) {
      std::vector<M> d(inputs.size());
      for (size_t i = 0; i < inputs.size(); ++i)
        if (t.requires_grad(inputs[i])) d[i] = M::Zero(inputs[i].rows(), inputs[i].cols());
      vjp(dout, std::span<M>(d));
      for (size_t i = 0; i < inputs.size(); ++i)
        if (t.requires_grad(inputs[i])) {
          if (d[i].rows() != inputs[i].rows() || d[i].cols() != inputs[i].cols())
            throw ShapeError("ad::Tape::custom: the VJP resized the gradient of input " + std::to_string(i));
          t.accumulate(inputs[i], d[i]);
        }
    });
  }

  const M& value(Var<T> v) const {
    const Node& n = nodes_[size_t(v.id)];
    if (n.released) throw Error("ad::Tape: the value of node " + std::to_string(v.id) + " was released (Tape::release)");
    return n.ext ? *n.ext : n.own;
  }
  bool requires_grad(Var<T> v) const { return nodes_[size_t(v.id)].requires_grad; }

  /// Add `g` (any Eigen expression of v's shape) into v's gradient; no-op when v needs none.
  template <class E>
  void accumulate(Var<T> v, const Eigen::MatrixBase<E>& g) {
    Node& n = nodes_[size_t(v.id)];
    if (!n.requires_grad) return;
    if (n.grad.size() == 0)
      n.grad = g;
    else
      n.grad += g;
  }
  /// Add the product a * b into v's gradient without a temporary (the product is written into the
  /// gradient by the GEMM itself: `=` on first use, `+=` after); no-op when v needs none.
  template <class A, class B>
  void accumulate_product(Var<T> v, const A& a, const B& b) {
    Node& n = nodes_[size_t(v.id)];
    if (!n.requires_grad) return;
    blocks::matmul(n.grad, a, b, /*accumulate=*/n.grad.size() != 0);
  }
  /// v's gradient buffer, zero-filled on first use (for ops that scatter into parts of it).
  M& grad_buffer(Var<T> v) {
    Node& n = nodes_[size_t(v.id)];
    if (n.grad.size() == 0) n.grad = M::Zero(value(v).rows(), value(v).cols());
    return n.grad;
  }

  /// Reverse pass from a 1 x 1 `loss` (seeded with `seed`). Parameter gradients go to their sinks.
  void backward(Var<T> loss, T seed = T(1)) {
    check_owner(loss, "backward");
    if (no_grad_) throw Error("ad::Tape::backward: an inference tape (ad::no_grad) has no gradients");
    if (value(loss).size() != 1)
      throw ShapeError("ad::Tape::backward: the loss must be 1 x 1, got [" + std::to_string(value(loss).rows()) +
                       ", " + std::to_string(value(loss).cols()) + "]");
    if (!requires_grad(loss)) return;
    nodes_[size_t(loss.id)].grad = M::Constant(1, 1, seed);
    for (int64_t i = loss.id; i >= 0; --i) {
      Node& n = nodes_[size_t(i)];
      if (!n.requires_grad || n.grad.size() == 0) continue;
      if (n.back) n.back(n.grad, *this);
      if (n.sink) *n.sink += n.grad;
      if (n.back) {
        // intermediate values are no longer needed below this point by this node's gradient
        n.grad.resize(0, 0);
        n.back = nullptr;
      }
    }
  }

  /// The gradient of a plain leaf after `backward` (zeros when nothing reached it).
  M grad(Var<T> v) const {
    const Node& n = nodes_[size_t(v.id)];
    if (n.grad.size() == 0) return M::Zero(value(v).rows(), value(v).cols());
    return n.grad;
  }

  size_t size() const { return nodes_.size(); }

  void check_owner(Var<T> v, const char* what) const {
    if (v.tape != this || v.id < 0 || size_t(v.id) >= nodes_.size())
      throw Error(std::string("ad::Tape::") + what + ": variable of another tape");
  }

 private:
  struct Node {
    M own;
    const M* ext = nullptr;
    M grad;
    M* sink = nullptr;
    Backward back;
    bool requires_grad = false;
    bool op = false;        // recorded by record / custom (release may free it)
    bool released = false;  // freed by release
  };
  Node& push_node(bool rg, Backward back) {
    nodes_.emplace_back();
    Node& n = nodes_.back();
    n.requires_grad = rg;
    n.back = std::move(back);
    return n;
  }
  Var<T> push(M v, M* sink, bool rg, Backward back) {
    Node& n = push_node(rg, std::move(back));
    n.own = std::move(v);
    n.sink = sink;
    return {this, int64_t(nodes_.size()) - 1};
  }
  std::deque<Node> nodes_;
  bool no_grad_ = false;
};

}  // namespace ttt::ad
