#pragma once
/// \file io/config_json.hpp
/// JSON in and out: a guarded parser for untrusted JSON text (the checkpoints' config.json, the
/// trainer's state) and the Hugging Face style `config.json` of a TTT model (core/model_config.hpp).
/// The functions are templates over the JSON type (nlohmann::json by default), so that a program
/// that includes this header but reads or writes no JSON compiles none of nlohmann's parser.
#include <cmath>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/model_config.hpp"
#include "file.hpp"

namespace ttt {

namespace io {
/// nlohmann::json::parse of `text`, refusing first what the parser handles badly (a NUL byte stops
/// it; deep nesting recurses): FormatError naming `source` for those and for invalid JSON.
template <class Json = nlohmann::json>
Json parse_json_text(const std::string& text, const std::string& source) {
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
  Json j;
  try {
    j = Json::parse(text);
  } catch (const typename Json::exception& e) {
    throw FormatError(source + ": not valid JSON: " + e.what());
  }
  return j;
}
}  // namespace io

/// A TTT model's configuration from a parsed `config.json`; FormatError / ConfigError naming
/// `source` and the key when a value has the wrong type or the configuration cannot work.
template <class Json>
ModelConfig config_from_json(const Json& j, const std::string& source = "config.json") {
  if (!j.is_object()) throw FormatError(source + ": expected a JSON object at the top level");
  ModelConfig c;
  Json rest = Json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const Json& v = it.value();
    auto int_of = [&](int64_t& out) {
      if (v.is_number_integer()) { out = v.template get<int64_t>(); return; }
      if (v.is_number_float()) {
        double d = v.template get<double>();
        if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) { out = int64_t(d); return; }
      }
      throw FormatError(source + ": key '" + k + "' must be an integer, got " + v.dump());
    };
    auto num_of = [&](double& out) {
      if (!v.is_number()) throw FormatError(source + ": key '" + k + "' must be a number, got " + v.dump());
      out = v.template get<double>();
    };
    auto bool_of = [&](bool& out) {
      if (!v.is_boolean()) throw FormatError(source + ": key '" + k + "' must be true or false, got " + v.dump());
      out = v.template get<bool>();
    };
    auto str_of = [&](std::string& out) {
      if (!v.is_string()) throw FormatError(source + ": key '" + k + "' must be a string, got " + v.dump());
      out = v.template get<std::string>();
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
    else if (k == "ttt_inner_optimizer") str_of(c.ttt_inner_optimizer);
    else if (k == "ttt_inner_beta") num_of(c.ttt_inner_beta);
    else if (k == "ttt_ns_steps") int_of(c.ttt_ns_steps);
    else if (k == "ttt_query_order") str_of(c.ttt_query_order);
    else if (k == "ttt_hidden_size") int_of(c.ttt_hidden_size);
    else if (k == "model_type") {
      if (!v.is_string() || v.template get<std::string>() != "ttt")
        throw FormatError(source + ": model_type must be \"ttt\", got " + v.dump());
    } else rest[k] = v;
  }
  for (auto it = rest.begin(); it != rest.end(); ++it) c.extra[it.key()] = it.value().dump();
  c.validate(source);
  return c;
}


/// ... from the text of a `config.json`.
template <class Json = nlohmann::json>
ModelConfig config_from_json_text(const std::string& text, const std::string& source = "config.json") {
  return config_from_json(io::parse_json_text<Json>(text, source), source);
}

/// The `config.json` of a configuration (unknown keys read from a file are kept).
template <class Json = nlohmann::json>
Json to_json(const ModelConfig& c) {
  Json j = Json::object();
  for (const auto& [k, v] : c.extra) j[k] = Json::parse(v);
  j["model_type"] = "ttt";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["initializer_range"] = c.initializer_range;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["use_cache"] = c.use_cache;
  j["pad_token_id"] = c.pad_token_id ? Json(*c.pad_token_id) : Json(nullptr);
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["pretraining_tp"] = c.pretraining_tp;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["use_gate"] = c.use_gate;
  j["share_qk"] = c.share_qk;
  j["ttt_layer_type"] = c.ttt_layer_type;
  j["ttt_base_lr"] = c.ttt_base_lr;
  j["mini_batch_size"] = c.mini_batch_size;
  j["pre_conv"] = c.pre_conv;
  j["conv_kernel"] = c.conv_kernel;
  j["scan_checkpoint_group_size"] = c.scan_checkpoint_group_size;
  // the inner update's keys only when not the defaults (the reference's configs stay as they are)
  const ModelConfig d;
  if (c.ttt_inner_optimizer != d.ttt_inner_optimizer) j["ttt_inner_optimizer"] = c.ttt_inner_optimizer;
  if (c.ttt_inner_beta != d.ttt_inner_beta) j["ttt_inner_beta"] = c.ttt_inner_beta;
  if (c.ttt_ns_steps != d.ttt_ns_steps) j["ttt_ns_steps"] = c.ttt_ns_steps;
  if (c.ttt_query_order != d.ttt_query_order) j["ttt_query_order"] = c.ttt_query_order;
  if (c.ttt_hidden_size != d.ttt_hidden_size) j["ttt_hidden_size"] = c.ttt_hidden_size;
  if (!j.contains("architectures")) j["architectures"] = {"TTTForCausalLM"};
  return j;
}

template <class Json = nlohmann::json>
ModelConfig load_config(const std::filesystem::path& p) {
  return config_from_json_text<Json>(io::read_file(p), p.string());
}

template <class Json = nlohmann::json>
void save_config(const ModelConfig& cfg, const std::filesystem::path& p) {
  io::write_file_atomic(p, to_json<Json>(cfg).dump(2) + "\n");
}

}  // namespace ttt
