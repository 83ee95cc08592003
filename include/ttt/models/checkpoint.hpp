#pragma once
/// \file models/checkpoint.hpp
/// Hugging Face style checkpoints of ttt-lm-pytorch: a folder with `config.json` (TTTConfig keys)
/// and `model.safetensors` (parameter names of `TTTForCausalLM.state_dict()`; `lm_head.weight` left
/// out when the embeddings are tied). F32, F16 and BF16 tensors load as float; saves are F32 and
/// atomic (temporary name, then rename).
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/file.hpp"
#include "../io/checkpoint_weights.hpp"
#include "../io/safetensors.hpp"
#include "../core/model_config.hpp"
#include "../io/config_json.hpp"
#include "../core/params.hpp"

namespace ttt {

/// Copy every parameter of `model` from `st`. Missing, mis-shaped and unexpected tensors are
/// errors naming the file and the tensor.
template <class Model>
void load_weights(Model& model, const io::SafeTensors& st) {
  std::set<std::string> used;
  model.visit_params([&](const ParamRef& p) {
    if (!st.contains(p.name))
      throw FormatError(st.source() + ": missing tensor '" + p.name + "' (expected shape " + shape_str(p.shape) + ")");
    const std::vector<float> v = st.read_float(p.name, p.shape);
    p.copy_in(v.data());
    used.insert(p.name);
  });
  for (const std::string& name : st.names()) {
    if (used.count(name)) continue;
    if (name == "lm_head.weight" && model.cfg.tie_word_embeddings) {
      // A tied head saved anyway (torch.save of the full state_dict): accept it only if it is the
      // embedding, so that nothing in the file is silently ignored.
      const std::vector<float> h = st.read_float(name, {model.cfg.vocab_size, model.cfg.hidden_size});
      if (std::equal(h.begin(), h.end(), model.embed.data()))
        continue;
      throw FormatError(st.source() + ": tensor 'lm_head.weight' differs from 'model.embed_tokens.weight' but config "
                        "has tie_word_embeddings = true");
    }
    std::string kind = "model";
    if constexpr (requires { Model::Learner::name; }) kind = std::string(Model::Learner::name) + " model";
    throw FormatError(st.source() + ": unexpected tensor '" + name + "' (not a parameter of this " + kind +
                      "; check config.json)");
  }
}

/// Serialise every parameter (F32) into safetensors bytes.
template <class Model>
std::string serialize_weights(Model& model) {
  io::SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  std::vector<float> buf;
  model.visit_params([&](const ParamRef& p) {
    buf.resize(size_t(p.numel()));
    p.copy_out(buf.data());
    w.add(p.name, p.shape, buf);
  });
  return w.serialize();
}

/// Write `dir/config.json` and `dir/model.safetensors` (creating dir).
template <class Model>
void save_checkpoint(Model& model, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create directory: " + ec.message());
  io::write_file_atomic(dir / "model.safetensors", serialize_weights(model));
  save_config(model.cfg, dir / "config.json");
}

/// Read `dir/config.json` (or a config.json path); FormatError naming the file on failure.
template <class Json = nlohmann::json>
ModelConfig load_checkpoint_config(const std::filesystem::path& dir) {
  const auto p = std::filesystem::is_directory(dir) ? dir / "config.json" : dir;
  if (!std::filesystem::exists(p)) throw FormatError(p.string() + ": no such file (expected a model folder with config.json)");
  return load_config<Json>(p);
}

/// Build a model of learner type `Model::Learner` from a checkpoint folder (config.json and
/// model.safetensors, or the shards model.safetensors.index.json lists: io/checkpoint_weights.hpp).
template <class Model>
Model load_checkpoint(const std::filesystem::path& dir) {
  Model m(load_checkpoint_config(dir));
  load_weights(m, io::load_checkpoint_weights(dir));  // model.safetensors or its shards
  return m;
}

}  // namespace ttt
