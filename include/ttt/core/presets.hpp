#pragma once
/// \file core/presets.hpp
/// The official standard configurations by name, as ttt-lm-pytorch's `TTT_STANDARD_CONFIGS`:
/// 125m, 350m, 760m and 1b (hidden / intermediate / layers / heads: 768/2048/12/12,
/// 1024/2736/24/16, 1536/4096/24/16, 2048/5504/24/32). Every other option keeps `TTTConfig`'s
/// default (vocab_size 32000, the Llama-2 tokenizer's), so `standard_config("1b")` equals
/// `ModelConfig{}` as `TTTConfig(**TTT_STANDARD_CONFIGS['1b'])` equals `TTTConfig()`.
///
/// \code
///   ttt::ModelConfig cfg = ttt::standard_config("125m", "mlp");   // TTT-MLP, 125m-shaped
/// \endcode
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "error.hpp"
#include "model_config.hpp"

namespace ttt {

struct StandardConfig {
  std::string_view name;
  int64_t hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
};

inline constexpr std::array<StandardConfig, 4> kStandardConfigs = {{
    {"125m", 768, 2048, 12, 12},
    {"350m", 1024, 2736, 24, 16},
    {"760m", 1536, 4096, 24, 16},
    {"1b", 2048, 5504, 24, 32},
}};

/// "125m, 350m, 760m, 1b", as messages list them.
inline std::string standard_config_names() {
  std::string s;
  for (const auto& c : kStandardConfigs) s += (s.empty() ? "" : ", ") + std::string(c.name);
  return s;
}

/// The standard configuration `name` with inner learner `layer_type`; ConfigError listing the
/// names for any other.
inline ModelConfig standard_config(std::string_view name, const std::string& layer_type = "linear") {
  for (const auto& s : kStandardConfigs)
    if (s.name == name) {
      ModelConfig c;
      c.hidden_size = s.hidden_size;
      c.intermediate_size = s.intermediate_size;
      c.num_hidden_layers = s.num_hidden_layers;
      c.num_attention_heads = s.num_attention_heads;
      c.ttt_layer_type = layer_type;
      return c;
    }
  throw ConfigError("no standard configuration '" + std::string(name) + "' (" + standard_config_names() + ")");
}

}  // namespace ttt
