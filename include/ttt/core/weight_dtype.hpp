#pragma once
/// \file core/weight_dtype.hpp
/// The precision a model's weight matrices run in (issue 15, item 1): `fp32`, the model's own
/// scalar, or `bf16`, the projections, the MLP and the embedding / LM head held in bfloat16 and
/// multiplied with fp32 activations and fp32 accumulation (kernels/bf16.hpp). Decode reads half
/// the bytes. Set on a loaded float model with `set_weight_dtype` (models/causal_lm.hpp); the CLI
/// spells it `--dtype fp32|bf16`.
#include <string>
#include <string_view>

#include "error.hpp"

namespace ttt {

enum class WeightDtype { fp32, bf16 };

/// "fp32" / "bf16", as the CLI spells them.
inline const char* weight_dtype_name(WeightDtype d) { return d == WeightDtype::bf16 ? "bf16" : "fp32"; }

/// "fp32" or "bf16"; ConfigError naming `what` (the option) and the valid values otherwise.
inline WeightDtype parse_weight_dtype(std::string_view s, std::string_view what = "dtype") {
  if (s == "fp32") return WeightDtype::fp32;
  if (s == "bf16") return WeightDtype::bf16;
  throw ConfigError(std::string(what) + ": unknown weight dtype '" + std::string(s) + "' (valid: fp32, bf16)");
}

}  // namespace ttt
