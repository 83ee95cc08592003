#pragma once
/// \file core/params.hpp
/// A named view of one parameter tensor of a model, as a checkpoint names and shapes it. Visiting
/// a model's ParamRefs is the one place that ties C++ members to Hugging Face names: checkpoint
/// loading and saving, initialisation, the optimiser, parameter counts and casts between float
/// and double models all go through it.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "error.hpp"
#include "function_ref.hpp"

namespace ttt {

/// How a parameter is initialised for training from scratch (as the reference does).
/// normal_fan_in: N(0, 1/sqrt(fan-in)), init_scale holding the fan-in (unit-scale fast weights).
enum class ParamInit { normal, zeros, ones, uniform_fan_in, constant, normal_fan_in };

template <class S>
struct BasicParamRef {
  using Init = ParamInit;
  std::string name;             ///< e.g. "model.layers.0.seq_modeling_block.W1"
  std::vector<int64_t> shape;   ///< the checkpoint's shape, e.g. [H, f, f]
  S* data = nullptr;
  /// The tensor is `blocks` contiguous runs of `block_size` values, `stride` apart (a learner's
  /// per-head parameters inside the flat per-head state); plain tensors are one block.
  int64_t blocks = 1, block_size = 0, stride = 0;
  Init init = Init::normal;
  double init_scale = 0.02;     ///< std of normal, fan-in for uniform_fan_in / normal_fan_in, the value of constant
  bool no_decay = false;        ///< norms, biases, token index: no weight decay

  int64_t numel() const { return blocks * block_size; }
  void copy_in(const S* src) const {
    for (int64_t b = 0; b < blocks; ++b)
      std::memcpy(data + b * stride, src + b * block_size, size_t(block_size) * sizeof(S));
  }
  void copy_out(S* dst) const {
    for (int64_t b = 0; b < blocks; ++b)
      std::memcpy(dst + b * block_size, data + b * stride, size_t(block_size) * sizeof(S));
  }
  S& at(int64_t i) const { return data[(i / block_size) * stride + i % block_size]; }
  /// Every entry set to v (a gradient accumulator's zero).
  void fill(S v) const {
    for (int64_t b = 0; b < blocks; ++b) std::fill_n(data + b * stride, block_size, v);
  }
  /// fn(i, at(i)) for the entries i in [b, e), in order, walking the blocks (one division per
  /// call, not two per entry as `at` costs: the optimiser's and the gradient's loops).
  template <class F>
  void for_range(int64_t b, int64_t e, F&& fn) const {
    if (b >= e) return;
    for (int64_t blk = b / block_size, off = b % block_size; b < e; ++blk, off = 0) {
      S* d = data + blk * stride + off;
      const int64_t n = std::min(block_size - off, e - b);
      for (int64_t j = 0; j < n; ++j) fn(b + j, d[j]);
      b += n;
    }
  }
  /// Whether `o` lays its entries out as this one does (then entry x here is o.data[&x - data]).
  bool same_layout(const BasicParamRef& o) const {
    return blocks == o.blocks && block_size == o.block_size && stride == o.stride;
  }
  /// fn(i, at(i), o.at(i)) for the entries i in [b, e), in order: this tensor and `o`, one of
  /// the same size (its gradient, its twin in another model), walked together; when `o` has this
  /// layout its entry is found by the offset, else by o.at(i).
  template <class F>
  void for_pair(const BasicParamRef& o, int64_t b, int64_t e, F&& fn) const {
    if (same_layout(o)) for_range(b, e, [&](int64_t i, S& x) { fn(i, x, o.data[&x - data]); });
    else for_range(b, e, [&](int64_t i, S& x) { fn(i, x, o.at(i)); });
  }
};

/// The parameters of a float model (checkpoints, the optimiser).
using ParamRef = BasicParamRef<float>;

/// What a model's parameter walk calls for each tensor: any callable taking a BasicParamRef<S>
/// by value or `const&` (its data pointer is not const, so a `const&` may write the tensor). A
/// model's visit_params(fn) wraps fn in one and calls its walk, a non-template member compiled
/// once per model type (core/function_ref.hpp).
template <class S>
using ParamVisitor = FunctionRef<void(const BasicParamRef<S>&)>;

inline int64_t shape_numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

/// A plain contiguous tensor.
template <class S>
BasicParamRef<S> make_param(std::string name, std::vector<int64_t> shape, S* data, ParamInit init = ParamInit::normal,
                            double scale = 0.02, bool no_decay = false) {
  BasicParamRef<S> p;
  p.name = std::move(name);
  p.block_size = shape_numel(shape);
  p.stride = p.block_size;
  p.shape = std::move(shape);
  p.data = data;
  p.init = init;
  p.init_scale = scale;
  p.no_decay = no_decay;
  return p;
}

/// Fill a parameter as the reference initialises it (drawn in float, so a double model initialised
/// with a seed holds the float model's values).
template <class S>
void init_param(const BasicParamRef<S>& p, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(
      0.0f, float(p.init == ParamInit::normal_fan_in ? 1.0 / std::sqrt(p.init_scale) : p.init_scale));
  const float bound = p.init == ParamInit::uniform_fan_in ? float(1.0 / std::sqrt(p.init_scale)) : 0.0f;
  std::uniform_real_distribution<float> uni(-bound, bound);
  for (int64_t i = 0; i < p.numel(); ++i) {
    float v = 0.0f;
    switch (p.init) {
      case ParamInit::normal:
      case ParamInit::normal_fan_in: v = normal(rng); break;
      case ParamInit::zeros: v = 0.0f; break;
      case ParamInit::ones: v = 1.0f; break;
      case ParamInit::uniform_fan_in: v = uni(rng); break;
      case ParamInit::constant: v = float(p.init_scale); break;
    }
    p.at(i) = S(v);
  }
}

/// Every parameter of `to` set from the one of the same name in `from`, cast to to's scalar (a
/// float model to its double twin for gradient checks, and back). Both models must have the same
/// configuration: they visit the same names in the same order. Models name their scalar `Scalar`.
template <class From, class To>
void copy_params(const From& from, To& to) {
  using SF = typename From::Scalar;
  using ST = typename To::Scalar;
  std::vector<std::pair<std::string, std::vector<SF>>> vals;
  const_cast<From&>(from).visit_params([&](const auto& p) {
    std::vector<SF> v(size_t(p.numel()));
    p.copy_out(v.data());
    vals.emplace_back(p.name, std::move(v));
  });
  size_t i = 0;
  to.visit_params([&](const auto& p) {
    if (i >= vals.size() || vals[i].first != p.name)
      throw ShapeError("copy_params: parameter '" + p.name + "' has no twin in the source model");
    for (int64_t k = 0; k < p.numel(); ++k) p.at(k) = ST(vals[i].second[size_t(k)]);
    ++i;
  });
  if (i != vals.size()) throw ShapeError("copy_params: the source model has more parameters than the target");
}

}  // namespace ttt
