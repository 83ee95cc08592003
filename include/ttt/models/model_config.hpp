#pragma once
/// \file model_config.hpp
/// `TTTConfig` of ttt-lm-pytorch as a C++ struct: read from / written to a Hugging Face style
/// `config.json`, checked before any model is built.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../io/file.hpp"

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
  /// Keys we do not interpret (architectures, torch_dtype, ...), kept so a save round-trips.
  nlohmann::json extra = nlohmann::json::object();

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
    // Guard against sizes whose products overflow or cannot be allocated.
    const double params = double(vocab_size) * double(hidden_size) +
                          double(num_hidden_layers) * (double(hidden_size) * (4.0 * hidden_size + 3.0 * intermediate_size));
    if (params > 1e11) fail("model would have about " + std::to_string(params) + " parameters: too large");
    if (mini_batch_size > 1 << 16) fail("mini_batch_size " + std::to_string(mini_batch_size) + " is too large");
  }

  /// Parse the text of a `config.json`. `source` names the file in error messages.
  static ModelConfig from_json_text(const std::string& text, const std::string& source = "config.json") {
    // nlohmann stops at a NUL byte and recurses on nesting: refuse both before parsing.
    if (text.find('\0') != std::string::npos) throw FormatError(source + ": NUL byte in JSON text");
    int depth = 0;
    bool in_str = false, esc = false;
    for (char ch : text) {
      if (in_str) {
        if (esc) esc = false;
        else if (ch == '\\') esc = true;
        else if (ch == '"') in_str = false;
      } else if (ch == '"') in_str = true;
      else if (ch == '{' || ch == '[') {
        if (++depth > 32) throw FormatError(source + ": JSON nested deeper than 32 levels");
      } else if (ch == '}' || ch == ']') --depth;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(source + ": not valid JSON: " + e.what());
    }
    return from_json(j, source);
  }

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json") {
    if (!j.is_object()) throw FormatError(source + ": expected a JSON object at the top level");
    ModelConfig c;
    nlohmann::json rest = nlohmann::json::object();
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& k = it.key();
      const nlohmann::json& v = it.value();
      auto int_of = [&](int64_t& out) {
        if (v.is_number_integer()) { out = v.get<int64_t>(); return; }
        if (v.is_number_float()) {
          double d = v.get<double>();
          if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) { out = int64_t(d); return; }
        }
        throw FormatError(source + ": key '" + k + "' must be an integer, got " + v.dump());
      };
      auto num_of = [&](double& out) {
        if (!v.is_number()) throw FormatError(source + ": key '" + k + "' must be a number, got " + v.dump());
        out = v.get<double>();
      };
      auto bool_of = [&](bool& out) {
        if (!v.is_boolean()) throw FormatError(source + ": key '" + k + "' must be true or false, got " + v.dump());
        out = v.get<bool>();
      };
      auto str_of = [&](std::string& out) {
        if (!v.is_string()) throw FormatError(source + ": key '" + k + "' must be a string, got " + v.dump());
        out = v.get<std::string>();
      };
      if (k == "vocab_size") int_of(c.vocab_size);
      else if (k == "hidden_size") int_of(c.hidden_size);
      else if (k == "intermediate_size") int_of(c.intermediate_size);
      else if (k == "num_hidden_layers") int_of(c.num_hidden_layers);
      else if (k == "num_attention_heads") int_of(c.num_attention_heads);
      else if (k == "hidden_act") str_of(c.hidden_act);
      else if (k == "max_position_embeddings") int_of(c.max_position_embeddings);
      else if (k == "initializer_range") num_of(c.initializer_range);
      else if (k == "rms_norm_eps") num_of(c.rms_norm_eps);
      else if (k == "use_cache") bool_of(c.use_cache);
      else if (k == "pad_token_id") {
        if (v.is_null()) c.pad_token_id.reset();
        else { int64_t p = 0; int_of(p); c.pad_token_id = p; }
      }
      else if (k == "bos_token_id") { if (!v.is_null()) int_of(c.bos_token_id); }
      else if (k == "eos_token_id") { if (!v.is_null()) int_of(c.eos_token_id); else c.eos_token_id = -1; }
      else if (k == "pretraining_tp") int_of(c.pretraining_tp);
      else if (k == "tie_word_embeddings") bool_of(c.tie_word_embeddings);
      else if (k == "rope_theta") num_of(c.rope_theta);
      else if (k == "use_gate") bool_of(c.use_gate);
      else if (k == "share_qk") bool_of(c.share_qk);
      else if (k == "ttt_layer_type") str_of(c.ttt_layer_type);
      else if (k == "ttt_base_lr") num_of(c.ttt_base_lr);
      else if (k == "mini_batch_size") int_of(c.mini_batch_size);
      else if (k == "pre_conv") bool_of(c.pre_conv);
      else if (k == "conv_kernel") int_of(c.conv_kernel);
      else if (k == "scan_checkpoint_group_size") int_of(c.scan_checkpoint_group_size);
      else if (k == "model_type") {
        if (!v.is_string() || v.get<std::string>() != "ttt")
          throw FormatError(source + ": model_type must be \"ttt\", got " + v.dump());
      } else rest[k] = v;
    }
    c.extra = std::move(rest);
    c.validate(source);
    return c;
  }

  nlohmann::json to_json() const {
    nlohmann::json j = extra.is_object() ? extra : nlohmann::json::object();
    j["model_type"] = "ttt";
    j["vocab_size"] = vocab_size;
    j["hidden_size"] = hidden_size;
    j["intermediate_size"] = intermediate_size;
    j["num_hidden_layers"] = num_hidden_layers;
    j["num_attention_heads"] = num_attention_heads;
    j["hidden_act"] = hidden_act;
    j["max_position_embeddings"] = max_position_embeddings;
    j["initializer_range"] = initializer_range;
    j["rms_norm_eps"] = rms_norm_eps;
    j["use_cache"] = use_cache;
    j["pad_token_id"] = pad_token_id ? nlohmann::json(*pad_token_id) : nlohmann::json(nullptr);
    j["bos_token_id"] = bos_token_id;
    j["eos_token_id"] = eos_token_id;
    j["pretraining_tp"] = pretraining_tp;
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["rope_theta"] = rope_theta;
    j["use_gate"] = use_gate;
    j["share_qk"] = share_qk;
    j["ttt_layer_type"] = ttt_layer_type;
    j["ttt_base_lr"] = ttt_base_lr;
    j["mini_batch_size"] = mini_batch_size;
    j["pre_conv"] = pre_conv;
    j["conv_kernel"] = conv_kernel;
    j["scan_checkpoint_group_size"] = scan_checkpoint_group_size;
    if (!j.contains("architectures")) j["architectures"] = {"TTTForCausalLM"};
    return j;
  }
};

inline ModelConfig load_config(const std::filesystem::path& p) {
  return ModelConfig::from_json_text(io::read_file(p), p.string());
}

}  // namespace ttt
