#pragma once
/// \file models/cuda/export.hpp
/// ModelWeights (models/cuda/weights.hpp) from a CPU TTT model, for the GPU model
/// (models/cuda/model.hpp): load a checkpoint as usual, then
///   ttt::cuda::Model gpu(ttt::cuda::export_weights(model));
/// The options the GPU model does not run yet (inner optimizers other than gd) are refused here
/// with a ConfigError naming them.
#include <string>
#include <type_traits>

#include "../../inner/linear.hpp"
#include "../../inner/mlp.hpp"
#include "../../layers/ttt_layer.hpp"
#include "../causal_lm.hpp"
#include "weights.hpp"

namespace ttt::cuda {

template <class L, class Opts>
ModelWeights export_weights(const CausalLM<TTTLayer<L, float, Opts>>& model) {
  static_assert(std::is_same_v<L, inner::Linear> || std::is_same_v<L, inner::MLP>,
                "the GPU model runs TTT-Linear and TTT-MLP");
  const auto& c = model.cfg;
  auto refuse = [](const std::string& what) {
    throw ConfigError("cuda::export_weights: " + what + " does not run on the GPU yet (models/cuda/model.hpp)");
  };
  if (c.ttt_inner_optimizer != "gd") refuse("ttt_inner_optimizer " + c.ttt_inner_optimizer);
  ModelWeights w;
  w.learner = std::string(L::name);
  w.C = int(c.hidden_size), w.H = int(c.num_attention_heads), w.f = int(c.head_dim());
  w.mini_batch = int(c.mini_batch_size), w.I = int(c.intermediate_size), w.V = int(c.vocab_size);
  w.ttt_base_lr = c.ttt_base_lr, w.rope_theta = c.rope_theta, w.rms_norm_eps = c.rms_norm_eps;
  w.hidden_act = c.hidden_act, w.use_gate = c.use_gate;
  w.share_qk = c.share_qk, w.pre_conv = model.pre_conv(), w.conv_kernel = int(c.conv_kernel);
  auto flat = [](const auto& m) { return std::vector<float>(m.data(), m.data() + m.size()); };
  w.embed = flat(model.embed);
  if (!c.tie_word_embeddings) w.lm_head = flat(model.lm_head);
  w.norm = flat(model.norm);
  for (const auto& b : model.blocks) {
    const auto& t = b.mixer;
    if (!t.rule.is_plain_gd() || t.decay_gate) refuse("an inner optimizer other than plain gd");
    LayerWeights l;
    l.seq_norm = flat(b.seq_norm), l.ffn_norm = flat(b.ffn_norm);
    l.q = flat(t.q), l.v = flat(t.v), l.o = flat(t.o);
    if (c.share_qk) {
      l.conv_q = flat(t.conv_q), l.conv_k = flat(t.conv_k), l.conv_q_b = flat(t.conv_q_b),
      l.conv_k_b = flat(t.conv_k_b);
    } else {
      l.k = flat(t.k);
    }
    if (w.pre_conv) l.conv_norm = flat(b.conv_norm), l.conv_w = flat(b.conv_w), l.conv_b = flat(b.conv_b);
    if (c.use_gate) l.g = flat(t.g);
    l.lr_w = flat(t.lr_w), l.lr_b = flat(t.lr_b), l.token_idx = flat(t.token_idx);
    l.ln_w = flat(t.ln_w), l.ln_b = flat(t.ln_b), l.post_w = flat(t.post_w), l.post_b = flat(t.post_b);
    l.theta0.assign(t.theta0.begin(), t.theta0.end());
    l.gate = flat(b.mlp.gate), l.up = flat(b.mlp.up), l.down = flat(b.mlp.down);
    w.layers.push_back(std::move(l));
  }
  return w;
}

}  // namespace ttt::cuda
