#pragma once
/// \file blocks/swiglu.hpp
/// The SwiGLU MLP of the Llama-style blocks: y = down(act(gate x) * up x), weights in PyTorch's
/// [out, in] layout, with its forward (inference and training share it) and its vector-Jacobian
/// product side by side.
#include <memory>
#include <string>
#include <type_traits>

#include "../core/parallel.hpp"
#include "../core/params.hpp"
#include "../core/tensor.hpp"
#include "../core/weight_dtype.hpp"
#include "activations.hpp"
#include "linear.hpp"

namespace ttt::blocks {

template <class S>
struct SwiGLU {
  using Scalar = S;
  MatT<S> gate, up, down;  // [I, C], [I, C], [C, I]

  /// bf16 copies of gate, up, down (set_weight_dtype(bf16); null: fp32), shared by copies; stale
  /// if the weights change afterwards.
  struct Bf16Weights {
    kernels::Bf16Matrix gate, up, down;
  };
  std::shared_ptr<const Bf16Weights> w16;

  SwiGLU() = default;
  SwiGLU(int64_t C, int64_t I) : gate(MatT<S>::Zero(I, C)), up(MatT<S>::Zero(I, C)), down(MatT<S>::Zero(C, I)) {}

  /// gate_proj, up_proj, down_proj under `prefix` ("model.layers.{i}.mlp."), normal(0, std) init.
  template <class F>
  void visit_params(const std::string& prefix, double std, F&& fn) {
    const int64_t I = gate.rows(), C = gate.cols();
    fn(make_param(prefix + "gate_proj.weight", {I, C}, gate.data(), ParamInit::normal, std));
    fn(make_param(prefix + "up_proj.weight", {I, C}, up.data(), ParamInit::normal, std));
    fn(make_param(prefix + "down_proj.weight", {C, I}, down.data(), ParamInit::normal, std));
  }

  /// What the forward keeps (and the inference forward reuses as buffers).   all (n, I)
  struct Tape {
    MatT<S> pre;  // gate x (training only)
    MatT<S> up;   // up x
    MatT<S> a;    // act(gate x) * up x
  };

  /// h += down(act(gate x) * up x); `keep_pre` keeps gate x in the tape for the backward;
  /// `batched`: rows of different sequences (batched decode: the few-rows products, blocks/linear.hpp).
  template <class X>
  void forward(const Eigen::MatrixBase<X>& x, Act act, Tape& tp, MatT<S>& h, bool keep_pre = false,
               bool batched = false) const {
    const int64_t n = x.rows(), I = gate.rows();
    ensure_size(tp.a, n, I);
    ensure_size(tp.up, n, I);
    linear<S>(cv(x), cv(gate), bf(&Bf16Weights::gate), mv(tp.a), false, batched);
    if (keep_pre) tp.pre = tp.a;
    linear<S>(cv(x), cv(up), bf(&Bf16Weights::up), mv(tp.up), false, batched);
    parallel_ranges(int64_t(tp.a.size()), int64_t(1) << 15, [&](int64_t b, int64_t e) {
      act_mul(act, tp.a.data() + b, tp.up.data() + b, size_t(e - b));
    });
    linear<S>(cv(tp.a), cv(down), bf(&Bf16Weights::down), mv(h), /*accumulate=*/true, batched);
  }

  /// bf16: round the three weights to bf16 values and keep bf16 copies the forward reads; fp32:
  /// drop them. ConfigError for bf16 in double.
  void set_weight_dtype(WeightDtype d) {
    if (d == WeightDtype::fp32) {
      w16.reset();
      return;
    }
    if constexpr (!std::is_same_v<S, float>) {
      throw ConfigError("dtype bf16: bf16 weights need a float model (this one is double)");
    } else {
      auto b = std::make_shared<Bf16Weights>();
      b->gate = round_to_bf16(gate), b->up = round_to_bf16(up), b->down = round_to_bf16(down);
      w16 = std::move(b);
    }
  }

  /// The bf16 copy of one weight, or null.
  const kernels::Bf16Matrix* bf(kernels::Bf16Matrix Bf16Weights::*w) const { return w16 ? &((*w16).*w) : nullptr; }

  /// Buffers of the backward.
  struct Grad {
    MatT<S> da, dpre, dup;
  };

  /// dx = d/dx of <dh, down(act(gate x) * up x)> (overwritten); g += the weights' gradients.
  template <class X>
  void backward(const Eigen::MatrixBase<X>& x, Act act, const Tape& tp, const MatT<S>& dh, MatT<S>& dx, SwiGLU& g,
                Grad& b) const {
    const int64_t n = x.rows(), I = gate.rows();
    matmul(g.down, dh.transpose(), tp.a, true);
    ensure_size(b.da, n, I);
    matmul(b.da, dh, down);
    ensure_size(b.dpre, n, I);
    ensure_size(b.dup, n, I);
    parallel_ranges(int64_t(b.da.size()), int64_t(1) << 15, [&](int64_t i0, int64_t i1) {
      act_mul_bwd(act, tp.pre.data() + i0, tp.up.data() + i0, b.da.data() + i0, b.dpre.data() + i0, b.dup.data() + i0,
                  size_t(i1 - i0));
    });
    matmul(g.gate, b.dpre.transpose(), x, true);
    matmul(g.up, b.dup.transpose(), x, true);
    ensure_size(dx, n, gate.cols());
    matmul(dx, b.dpre, gate);
    matmul(dx, b.dup, up, true);
  }

  /// FLOPs per token of the forward.
  double flops_per_token() const { return 6.0 * double(gate.rows()) * double(gate.cols()); }
};

}  // namespace ttt::blocks
