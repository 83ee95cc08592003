#pragma once
/// \file models/cuda/model.hpp
/// A TTT language model (TTT-Linear or TTT-MLP, ttt-lm-pytorch's TTTForCausalLM) on the GPU:
/// prefill, chunked prefill and batched decode with the CPU model's logits (fp32 throughout;
/// tests/cuda/test_model.cpp). Built from ModelWeights (models/cuda/export.hpp makes them from a
/// CPU model, so a checkpoint loads as usual and then moves):
///
///   ttt::cuda::Model gpu(ttt::cuda::export_weights(cpu_model));   // .cpp files: this header
///   auto st = gpu.new_state(4);                                    // 4 sequences
///   gpu.forward(st, ids.data(), n, logits.data());                 // prefill 4 x n tokens
///   gpu.forward(st, next.data(), 1, logits.data());                // one decode step for all 4
///
/// This header is plain C++17 with no CUDA types: any translation unit can use the model. Its
/// members are defined in models/cuda/model.cuh, which exactly one .cu file of the program
/// includes (compiled by nvcc; link CUDA::cudart and CUDA::cublas).
///
/// What runs on the GPU: the embedding, RMSNorms, projections (cuBLAS SGEMM), RoPE, the
/// learning-rate gate, the scan (kernels/cuda/scan.cuh: state on chip for prefill, in global
/// memory for decode), the inner LayerNorm + residual, post-norm, gate, SwiGLU and the LM head.
/// With pre_conv and share_qk, the causal convolutions and their carried histories too. Not yet:
/// inner optimizers other than gd, learners other than linear and mlp (export_weights refuses
/// those with a ConfigError).
#include <cstdint>
#include <memory>
#include <vector>

#include "weights.hpp"

namespace ttt::cuda {

/// Which rows of logits Model::forward returns.
enum class LogitRows { all, last, none };

/// The carried state of a batch of sequences on the GPU: per layer the inner weights at the
/// current mini-batch's start and the accumulated gradient, and each sequence's position.
class State {
 public:
  State();
  State(State&&) noexcept;
  State& operator=(State&&) noexcept;
  ~State();
  int batch() const;
  /// Each sequence's position (tokens it has seen).
  std::vector<int64_t> positions() const;

 private:
  friend class Model;
  struct Impl;
  std::unique_ptr<Impl> impl;
};

class Model {
 public:
  /// Copies the weights to the current CUDA device. ttt::Error on inconsistent shapes.
  explicit Model(const ModelWeights& w);
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  /// A fresh state for `batch` sequences at position 0.
  State new_state(int batch) const;

  /// Runs n tokens of each of the sequences first .. first + count - 1 of `st` (count -1: all):
  /// ids is count x n (row-major, host memory); each sequence continues from its own position.
  /// logits (host memory, or null): count x n x V for LogitRows::all, count x V for last.
  /// n == 1 is a decode step (the state stays in global memory); longer chunks are prefill.
  /// hidden (host memory, or null): layers x count x n x C, each block's output (before the final
  /// norm), as CausalLM::forward's `hidden`.
  void forward(State& st, const int64_t* ids, int n, float* logits, LogitRows which = LogitRows::all, int first = 0,
               int count = -1, float* hidden = nullptr) const;

  int num_layers() const;

  int vocab_size() const;
  int hidden_size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl;
};

}  // namespace ttt::cuda
