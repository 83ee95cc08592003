#pragma once
/// \file models/transformer.hpp
/// The attention baselines of the scaling study: the library's language-model stack
/// (models/causal_lm.hpp) with causal softmax attention (layers/attention_layer.hpp) as the
/// mixer, so a TTT model and its baseline share every other block. An optional sliding `window`
/// turns it into the sliding-window baseline. A KV cache makes chunked prefill and one-token
/// decode one code path, with the meaning of TTTModel::forward.
///
/// \code
///   ttt::AttnConfig cfg(ttt::ModelConfig::sized("attn", 256, 128, 4, 4, 344), /*window=*/-1);
///   ttt::TransformerModel model(cfg);
///   model.init_weights(1);
///   auto st = model.new_state();
///   ttt::Mat last;
///   model.forward(st, prompt, &last, ttt::Logits::last);               // prefill
///   model.forward(st, std::span(&next, 1), &last, ttt::Logits::last);  // decode
///   ttt::TransformerModel grad(cfg);
///   double loss = ttt::train::loss_and_grad(model, batch, grad);       // train/model_grad.hpp
/// \endcode
#include <cstdint>

#include "../blocks/attention.hpp"
#include "../blocks/kv_cache.hpp"
#include "../layers/attention_layer.hpp"
#include "causal_lm.hpp"

namespace ttt {

template <class S = float>
class TransformerModelT : public CausalLM<AttentionLayer<S>> {
 public:
  using Base = CausalLM<AttentionLayer<S>>;
  using State = typename Base::State;
  template <class T>
  using Rebind = TransformerModelT<T>;

  explicit TransformerModelT(const AttnConfig& c) : Base(c) {}

  int64_t head_dim() const { return this->cfg.head_dim(); }
  int64_t window() const { return this->cfg.window; }

  /// KV-cache bytes of one sequence after `context` tokens (all layers; K and V):
  /// 2 * layers * min(context, window) * hidden_size * sizeof(S), or with context in place of the
  /// min for full attention.
  int64_t state_bytes(int64_t context) const {
    return int64_t(this->blocks.size()) *
           attn::KVCacheT<S>::bytes_at(context, this->cfg.hidden_size, this->cfg.window);
  }
  /// KV-cache bytes that `st` holds now.
  int64_t state_bytes(const State& st) const {
    int64_t n = 0;
    for (const auto& l : st.layers) n += l.cache.bytes();
    return n;
  }

  /// FLOPs of a prefill of n tokens from position 0 (projections, exact attention pairs of the
  /// window, SwiGLU, LM head on every row).
  double prefill_flops(int64_t n) const { return chunk_flops(n, 0); }
  /// Mean FLOPs per token of a prefill of `context` tokens (what training and prefill pay).
  double flops_per_token(int64_t context) const {
    return context > 0 ? prefill_flops(context) / double(context) : chunk_flops(1, 0);
  }
  /// FLOPs of decoding one token with `context` tokens already in the cache.
  double decode_flops(int64_t context) const { return chunk_flops(1, context); }

 private:
  double chunk_flops(int64_t n, int64_t pos0) const {
    const auto& c = this->cfg;
    const double C = double(c.hidden_size), I = double(c.intermediate_size), V = double(c.vocab_size);
    const double dense = 8.0 * C * C + 6.0 * C * I;
    const double att = double(c.num_attention_heads) * attn::forward_flops(n, pos0 + n, head_dim(), c.window, pos0, 0);
    return double(this->blocks.size()) * (dense * double(n) + att) + 2.0 * C * V * double(n);
  }
};

using TransformerModel = TransformerModelT<float>;

}  // namespace ttt
