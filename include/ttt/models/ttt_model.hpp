#pragma once
/// \file models/ttt_model.hpp
/// The TTT language model of ttt-lm-pytorch (`TTTForCausalLM`): the library's language-model
/// stack (models/causal_lm.hpp) with a TTT layer of inner learner L in every block: embedding,
/// blocks of [optional pre-conv] + TTT layer + SwiGLU MLP with RMSNorms, final RMSNorm and LM head
/// (tied to the embedding by default), every TTTConfig option. S: float, or double for checks.
///
/// \code
///   auto model = ttt::load_checkpoint<ttt::TTTModel<ttt::inner::Linear>>("checkpoints/125m");
///   auto st = model.new_state();
///   ttt::Mat logits;
///   model.forward(st, prompt, &logits, ttt::Logits::last);               // prefill
///   model.forward(st, std::span(&next, 1), &logits, ttt::Logits::last);  // decode
/// \endcode
#include <cstdint>

#include "../layers/ttt_layer.hpp"
#include "causal_lm.hpp"

namespace ttt {

/// L: the inner learner; S: the scalar; Opts: the inner optimizers a config may name
/// (`ttt_inner_optimizer`; inner/optimizers.hpp, or a tuple with one's own).
template <class L, class S = float, class Opts = inner::BuiltinOptimizers>
class TTTModel : public CausalLM<TTTLayer<L, S, Opts>> {
 public:
  using Base = CausalLM<TTTLayer<L, S, Opts>>;
  using Learner = L;
  using Layer = TTTLayer<L, S, Opts>;
  template <class T>
  using Rebind = TTTModel<L, T, Opts>;

  explicit TTTModel(const ModelConfig& c) : Base(c) {}

  /// Bytes of a State (excluding reusable buffers): what a sequence costs to keep.
  int64_t state_bytes() const {
    int64_t n = 0;
    for (const auto& b : this->blocks) n += b.mixer.state_bytes();
    if (this->pre_conv())
      n += int64_t(this->blocks.size()) * (this->cfg.conv_kernel - 1) * this->cfg.hidden_size * int64_t(sizeof(S));
    return n;
  }

  /// FLOPs of one token's forward (all layers + head), for benchmarks.
  double flops_per_token() const {
    const double ttt = this->blocks.empty() ? 0.0 : this->blocks[0].mixer.flops_per_token();
    return double(this->blocks.size()) * ttt + this->dense_flops_per_token();
  }
};

}  // namespace ttt
