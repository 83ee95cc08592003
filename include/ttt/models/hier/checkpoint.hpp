#pragma once
/// \file hier/checkpoint.hpp
/// Checkpoints of the hierarchical transformer: a folder with `config.json` (HierConfig) and
/// `model.safetensors` (every parameter and buffer under the original's state_dict names).
/// Reading checks that every parameter is present with its shape and that no tensor is left
/// over; writing is F32. HierarchicalTransformerT's load, load_weights, save and
/// serialize_weights forward here.
#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <system_error>
#include <vector>

#include "../../core/error.hpp"
#include "../../core/params.hpp"
#include "../../io/file.hpp"
#include "../../io/safetensors.hpp"
#include "config.hpp"
#include "params.hpp"

namespace ttt::hier {

/// The configuration of the checkpoint folder `dir` (`dir/config.json`, a FormatError when absent).
template <class Learners = inner::Builtin, class Json = nlohmann::json>
HierConfig checkpoint_config(const std::filesystem::path& dir) {
  const auto cfgp = dir / "config.json";
  if (!std::filesystem::exists(cfgp)) throw FormatError(cfgp.string() + ": no such file (expected a model folder with config.json)");
  return HierConfig::load<Learners, Json>(cfgp);
}

/// Read every parameter (and the buffers present) from `st` (state_dict names; F32/F16/BF16).
/// Missing or mis-shaped tensors and tensors that belong to no parameter are errors naming them.
template <class T, class Ls>
void load_weights(HierParams<T, Ls>& p, const io::SafeTensors& st) {
  using M = typename HierParams<T, Ls>::M;
  using Init = typename HierParams<T, Ls>::Init;
  std::set<std::string> used;
  auto read = [&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
    const std::vector<float> v = st.read_float(name, shape);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(v[size_t(i)]);
    used.insert(name);
  };
  p.visit([&](const std::string& name, M& m, const std::vector<int64_t>& shape, Init, int64_t) {
    if (!st.contains(name))
      throw FormatError(st.source() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
    read(name, m, shape);
  });
  p.visit_ttt([&](const BasicParamRef<T>& r) {
    if (!st.contains(r.name))
      throw FormatError(st.source() + ": missing tensor '" + r.name + "' (expected shape " + shape_str(r.shape) + ")");
    const std::vector<float> v = st.read_float(r.name, r.shape);
    for (int64_t i = 0; i < r.numel(); ++i) r.at(i) = T(v[size_t(i)]);
    used.insert(r.name);
  });
  p.visit_buffers([&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
    if (st.contains(name)) read(name, m, shape);  // buffers are optional: the constructor computed them
  });
  for (const std::string& name : st.names())
    if (!used.count(name))
      throw FormatError(st.source() + ": unexpected tensor '" + name +
                        "' (not a parameter or buffer of this HierarchicalTransformer; check config.json)");
}

/// The bytes of `model.safetensors`: every parameter and buffer as F32, state_dict names.
template <class T, class Ls>
std::string serialize_weights(HierParams<T, Ls>& p) {
  using M = typename HierParams<T, Ls>::M;
  using Init = typename HierParams<T, Ls>::Init;
  io::SafeTensorsWriter w;
  w.set_metadata("format", "pt");
  auto put = [&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
    std::vector<float> buf(size_t(m.size()));
    for (Eigen::Index i = 0; i < m.size(); ++i) buf[size_t(i)] = float(m.data()[i]);
    w.add(name, shape, buf);
  };
  p.visit([&](const std::string& name, M& m, const std::vector<int64_t>& shape, Init, int64_t) { put(name, m, shape); });
  p.visit_ttt([&](const BasicParamRef<T>& r) {
    std::vector<float> buf(size_t(r.numel()));
    for (int64_t i = 0; i < r.numel(); ++i) buf[size_t(i)] = float(r.at(i));
    w.add(r.name, r.shape, buf);
  });
  p.visit_buffers(put);
  return w.serialize();
}

/// Write `dir/config.json` and `dir/model.safetensors` (F32, parameters and buffers).
template <class T, class Ls>
void save_checkpoint(HierParams<T, Ls>& p, const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir.string() + ": cannot create directory: " + ec.message());
  io::write_file_atomic(dir / "model.safetensors", hier::serialize_weights(p));
  io::write_file_atomic(dir / "config.json", p.cfg.to_json().dump(2) + "\n");
}

}  // namespace ttt::hier
