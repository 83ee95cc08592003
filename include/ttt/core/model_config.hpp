#pragma once
/// \file core/model_config.hpp
/// `TTTConfig` of ttt-lm-pytorch as a C++ struct, checked before any model is built. Reading and
/// writing it as a Hugging Face style `config.json` is io/config_json.hpp (JSON stays out of the
/// headers a model needs).
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "error.hpp"

namespace ttt {

/// Every option of the reference `TTTConfig`, with its defaults.
struct ModelConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 2048;
  int64_t intermediate_size = 5504;
  int64_t num_hidden_layers = 24;
  int64_t num_attention_heads = 32;
  std::string hidden_act = "silu";  ///< activation of the SwiGLU MLP
  int64_t max_position_embeddings = 2048;
  double initializer_range = 0.02;
  double rms_norm_eps = 1e-6;
  bool use_cache = false;
  std::optional<int64_t> pad_token_id;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  int64_t pretraining_tp = 1;
  bool tie_word_embeddings = true;
  double rope_theta = 10000.0;
  bool use_gate = false;
  bool share_qk = false;
  std::string ttt_layer_type = "linear";  ///< "linear" or "mlp" (or a user learner's name)
  double ttt_base_lr = 1.0;
  int64_t mini_batch_size = 16;
  bool pre_conv = false;
  int64_t conv_kernel = 4;
  int64_t scan_checkpoint_group_size = 0;
  // ---- the inner update (not in the reference's TTTConfig; written to config.json only when not
  // the default, so the reference's checkpoints are unchanged) ----
  std::string ttt_inner_optimizer = "gd";  ///< gd, momentum, decay, muon, adam (inner/optimizers.hpp)
  double ttt_inner_beta = 0.9;             ///< momentum's beta, adam's beta1, in [0, 1)
  int64_t ttt_ns_steps = 5;                ///< muon's Newton-Schulz iterations, >= 1
  std::string ttt_query_order = "after";   ///< "after" (TTT) or "before" (LaCT's apply-then-update)
  int64_t ttt_hidden_size = 0;             ///< hidden width of learners that have one (swiglu); 0: theirs
  /// Keys we do not interpret (architectures, torch_dtype, ...) with their values as JSON text,
  /// kept so that a save round-trips.
  std::map<std::string, std::string> extra;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }

  /// A configuration of the given sizes, every other option at its default.
  static ModelConfig sized(const std::string& layer_type, int64_t vocab, int64_t hidden, int64_t layers, int64_t heads,
                           int64_t intermediate, int64_t mini_batch = 16) {
    ModelConfig c;
    c.ttt_layer_type = layer_type;
    c.vocab_size = vocab;
    c.hidden_size = hidden;
    c.num_hidden_layers = layers;
    c.num_attention_heads = heads;
    c.intermediate_size = intermediate;
    c.mini_batch_size = mini_batch;
    return c;
  }

  /// The 125m-shaped configuration of the paper (hidden 768, 12 heads, 12 layers).
  static ModelConfig preset_125m(const std::string& layer_type = "linear") {
    ModelConfig c;
    c.hidden_size = 768;
    c.intermediate_size = 2048;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.ttt_layer_type = layer_type;
    return c;
  }

  /// Throws ConfigError naming the option when the configuration cannot work.
  void validate(const std::string& source = "config") const {
    auto fail = [&](const std::string& what) { throw ConfigError(source + ": " + what); };
    auto positive = [&](const char* name, int64_t v) {
      if (v <= 0) fail(std::string(name) + " must be > 0, got " + std::to_string(v));
    };
    positive("vocab_size", vocab_size);
    positive("hidden_size", hidden_size);
    positive("intermediate_size", intermediate_size);
    positive("num_hidden_layers", num_hidden_layers);
    positive("num_attention_heads", num_attention_heads);
    positive("mini_batch_size", mini_batch_size);
    positive("conv_kernel", conv_kernel);
    positive("pretraining_tp", pretraining_tp);
    if (hidden_size % num_attention_heads != 0)
      fail("hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
           std::to_string(num_attention_heads));
    if (head_dim() % 2 != 0)
      fail("head_dim = hidden_size / num_attention_heads = " + std::to_string(head_dim()) +
           " must be even for RoPE");
    if (scan_checkpoint_group_size < 0) fail("scan_checkpoint_group_size must be >= 0");
    if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) fail("rms_norm_eps must be a finite number > 0");
    if (!(rope_theta > 0) || !std::isfinite(rope_theta)) fail("rope_theta must be a finite number > 0");
    if (!std::isfinite(ttt_base_lr)) fail("ttt_base_lr must be finite");
    if (hidden_act != "silu" && hidden_act != "gelu" && hidden_act != "gelu_new" &&
        hidden_act != "gelu_pytorch_tanh" && hidden_act != "relu")
      fail("hidden_act '" + hidden_act + "' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh, relu)");
    if (ttt_layer_type.empty()) fail("ttt_layer_type must not be empty");
    if (ttt_inner_optimizer.empty()) fail("ttt_inner_optimizer must not be empty");
    if (!(ttt_inner_beta >= 0 && ttt_inner_beta < 1))
      fail("ttt_inner_beta must be in [0, 1), got " + std::to_string(ttt_inner_beta));
    if (ttt_ns_steps < 1 || ttt_ns_steps > 100)
      fail("ttt_ns_steps must be in [1, 100], got " + std::to_string(ttt_ns_steps));
    if (ttt_hidden_size < 0) fail("ttt_hidden_size must be >= 0 (0: the learner's default), got " + std::to_string(ttt_hidden_size));
    if (ttt_query_order != "after" && ttt_query_order != "before")
      fail("ttt_query_order '" + ttt_query_order + "' is not an order (after, before)");
    // Whether the optimizer reads ttt_inner_beta / ttt_ns_steps and the learner ttt_hidden_size is
    // checked where the names become types (inner::checked_optimizer, inner::check_hidden_size).
    // Guard against sizes whose products overflow or cannot be allocated.
    const double params = double(vocab_size) * double(hidden_size) +
                          double(num_hidden_layers) * (double(hidden_size) * (4.0 * hidden_size + 3.0 * intermediate_size));
    if (params > 1e11) fail("model would have about " + std::to_string(params) + " parameters: too large");
    if (mini_batch_size > 1 << 16) fail("mini_batch_size " + std::to_string(mini_batch_size) + " is too large");
  }

  bool operator==(const ModelConfig&) const = default;
};

}  // namespace ttt
