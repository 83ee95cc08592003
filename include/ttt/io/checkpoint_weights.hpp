#pragma once
/// \file io/checkpoint_weights.hpp
/// The weights of a checkpoint folder as Hugging Face publishes them, as one SafeTensors:
/// `model.safetensors`, or the shards `model-0000k-of-0000n.safetensors` that
/// `model.safetensors.index.json` lists (its `weight_map`: tensor name -> shard file). Other files
/// (generation_config.json, tokenizer files, README.md) are ignored. A folder with only
/// `pytorch_model.bin` (a Python pickle, which can run code when loaded) is refused with the
/// command that converts it.
///
/// Shards are read one at a time and their tensors copied into one buffer (peak memory about
/// twice the weights). Every tensor of the index must be in the shard it names, every tensor of a
/// shard in the index under that shard, and no name twice; shard names are plain file names in
/// the folder.
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <system_error>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "file.hpp"
#include "safetensors_reader.hpp"
#include "safetensors_writer.hpp"

namespace ttt::io {

/// How to turn a PyTorch checkpoint into model.safetensors (tied weights are cloned apart).
inline constexpr const char* kConvertPytorchBin =
    "python3 -c \"import torch; from safetensors.torch import save_file; "
    "sd = torch.load('pytorch_model.bin', map_location='cpu', weights_only=True); "
    "save_file({k: v.contiguous().clone() for k, v in sd.items()}, 'model.safetensors')\"";

/// The weights of checkpoint folder `dir` (see the file comment); FormatError naming the file.
template <class Json = nlohmann::json>
SafeTensors load_checkpoint_weights(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path single = dir / "model.safetensors", index = dir / "model.safetensors.index.json";
  if (fs::exists(single, ec)) return SafeTensors::load<Json>(single);
  if (!fs::exists(index, ec)) {
    for (const char* bin : {"pytorch_model.bin", "pytorch_model.bin.index.json"})
      if (fs::exists(dir / bin, ec))
        throw FormatError((dir / bin).string() +
                          ": a PyTorch pickle checkpoint, which this library does not read (loading a pickle can run "
                          "code); convert it to model.safetensors in that folder: " + kConvertPytorchBin);
    throw FormatError(single.string() + ": no such file (nor " + index.filename().string() +
                      "; expected a model folder with config.json and model.safetensors)");
  }
  Json j;
  try {
    j = Json::parse(read_file(index));
  } catch (const typename Json::exception& e) {
    throw FormatError(index.string() + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object() || j["weight_map"].empty())
    throw FormatError(index.string() + ": expected an object with a non-empty \"weight_map\" {tensor name: shard file}");
  std::map<std::string, std::set<std::string>> shards;  // shard file -> its tensors, per the index
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string())
      throw FormatError(index.string() + ": weight_map[\"" + it.key() + "\"] is not a file name");
    const std::string f = it.value().template get<std::string>();
    if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos || f.find('\\') != std::string::npos)
      throw FormatError(index.string() + ": weight_map[\"" + it.key() + "\"] = \"" + f +
                        "\" is not a file name in the checkpoint folder");
    shards[f].insert(it.key());
  }
  SafeTensorsWriter w;
  for (const auto& [file, names] : shards) {
    const fs::path p = dir / file;
    if (!fs::exists(p, ec))
      throw FormatError(p.string() + ": no such file (a shard that " + index.filename().string() + " names)");
    const SafeTensors st = SafeTensors::load<Json>(p);
    for (const std::string& n : names)
      if (!st.contains(n))
        throw FormatError(p.string() + ": no tensor '" + n + "' (" + index.filename().string() + " puts it in this shard)");
    for (const std::string& n : st.names()) {
      if (!names.count(n))
        throw FormatError(p.string() + ": tensor '" + n + "' is not in " + index.filename().string() +
                          (j["weight_map"].contains(n) ? " under this shard" : ""));
      const TensorInfo& t = st.info(n);
      w.add_raw(n, t.dtype, t.shape, st.raw(n));
    }
  }
  return SafeTensors::parse<Json>(w.serialize(), index.string());
}

}  // namespace ttt::io
