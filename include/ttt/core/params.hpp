#pragma once
/// \file params.hpp
/// A named view of one parameter tensor of a model, as a checkpoint names and shapes it. Visiting
/// a model's ParamRefs is the one place that ties C++ members to Hugging Face names: checkpoint
/// loading and saving, initialisation and parameter counts all go through it.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "error.hpp"

namespace ttt {

struct ParamRef {
  enum class Init { normal, zeros, ones, uniform_fan_in };
  std::string name;             ///< e.g. "model.layers.0.seq_modeling_block.W1"
  std::vector<int64_t> shape;   ///< the checkpoint's shape, e.g. [H, f, f]
  float* data = nullptr;
  /// The tensor is `blocks` contiguous runs of `block_size` floats, `stride` apart (a learner's
  /// per-head parameters inside the flat per-head state); plain tensors are one block.
  int64_t blocks = 1, block_size = 0, stride = 0;
  Init init = Init::normal;
  double init_scale = 0.02;     ///< std of normal, or fan-in for uniform_fan_in
  bool no_decay = false;        ///< norms, biases, token index: no weight decay

  int64_t numel() const { return blocks * block_size; }
  void copy_in(const float* src) const {
    for (int64_t b = 0; b < blocks; ++b) std::memcpy(data + b * stride, src + b * block_size, size_t(block_size) * 4);
  }
  void copy_out(float* dst) const {
    for (int64_t b = 0; b < blocks; ++b) std::memcpy(dst + b * block_size, data + b * stride, size_t(block_size) * 4);
  }
  float& at(int64_t i) const { return data[(i / block_size) * stride + i % block_size]; }
};

inline int64_t shape_numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

/// A plain contiguous tensor.
inline ParamRef make_param(std::string name, std::vector<int64_t> shape, float* data,
                           ParamRef::Init init = ParamRef::Init::normal, double scale = 0.02, bool no_decay = false) {
  ParamRef p;
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

/// Fill a parameter as the reference initialises it.
inline void init_param(const ParamRef& p, std::mt19937_64& rng) {
  std::normal_distribution<float> normal(0.0f, float(p.init_scale));
  const float bound = p.init == ParamRef::Init::uniform_fan_in ? float(1.0 / std::sqrt(p.init_scale)) : 0.0f;
  std::uniform_real_distribution<float> uni(-bound, bound);
  for (int64_t i = 0; i < p.numel(); ++i) {
    float v = 0.0f;
    switch (p.init) {
      case ParamRef::Init::normal: v = normal(rng); break;
      case ParamRef::Init::zeros: v = 0.0f; break;
      case ParamRef::Init::ones: v = 1.0f; break;
      case ParamRef::Init::uniform_fan_in: v = uni(rng); break;
    }
    p.at(i) = v;
  }
}

}  // namespace ttt
