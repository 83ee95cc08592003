#pragma once
/// \file io/safetensors_writer.hpp
/// The safetensors writer: SafeTensorsWriter collects tensors (F32, F64, BF16, F16, I64 or raw
/// bytes of any dtype) and metadata, and serialises them in the format io/safetensors.hpp
/// describes, or saves them atomically.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "bytes.hpp"
#include "dtype.hpp"
#include "file.hpp"

namespace ttt::io {

/// Collects tensors and writes a safetensors file: header padded with spaces to a multiple of 8
/// bytes, tensors in sorted name order, back to back.
class SafeTensorsWriter {
 public:
  /// F32 tensor. ShapeError when the shape's element count differs from `data.size()`.
  void add(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
    std::string& out = new_entry(std::move(name), DType::F32, std::move(shape), data.size());
    for (float f : data) detail::store_le(out, std::bit_cast<uint32_t>(f));
  }

  void add_f64(std::string name, std::vector<int64_t> shape, std::span<const double> data) {
    std::string& out = new_entry(std::move(name), DType::F64, std::move(shape), data.size());
    for (double f : data) detail::store_le(out, std::bit_cast<uint64_t>(f));
  }

  /// Stored as BF16, rounded to nearest even.
  void add_bf16(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
    std::string& out = new_entry(std::move(name), DType::BF16, std::move(shape), data.size());
    for (float f : data) detail::store_le(out, float_to_bf16(f));
  }

  /// Stored as F16, rounded to nearest even (|x| >= 65520 becomes infinity).
  void add_f16(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
    std::string& out = new_entry(std::move(name), DType::F16, std::move(shape), data.size());
    for (float f : data) detail::store_le(out, float_to_half(f));
  }

  void add_int64(std::string name, std::vector<int64_t> shape, std::span<const int64_t> data) {
    std::string& out = new_entry(std::move(name), DType::I64, std::move(shape), data.size());
    for (int64_t v : data) detail::store_le(out, static_cast<uint64_t>(v));
  }

  /// Any dtype, from its little-endian bytes. ShapeError when the byte count does not match.
  void add_raw(std::string name, DType dtype, std::vector<int64_t> shape, std::string_view bytes) {
    const size_t sz = dtype_size(dtype);
    if (bytes.size() % sz != 0)
      throw ShapeError("safetensors writer: tensor '" + name + "': " + std::to_string(bytes.size()) +
                       " bytes is not a whole number of " + std::string(dtype_name(dtype)) + " elements");
    new_entry(std::move(name), dtype, std::move(shape), bytes.size() / sz).append(bytes);
  }

  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  size_t size() const { return tensors_.size(); }

  /// The whole file. FormatError when a name is not valid UTF-8. (A template over the JSON type,
  /// nlohmann::json by default, so that including this header compiles no JSON code.)
  template <class Json = nlohmann::json>
  std::string serialize() const {
    Json h = Json::object();
    if (!metadata_.empty()) h["__metadata__"] = metadata_;
    uint64_t offset = 0;
    for (const auto& [name, e] : tensors_) {
      const uint64_t end = offset + e.bytes.size();
      h[name] = {{"dtype", std::string(dtype_name(e.dtype))},
                 {"shape", e.shape},
                 {"data_offsets", Json::array({offset, end})}};
      offset = end;
    }
    std::string header;
    try {
      header = h.dump();
    } catch (const typename Json::exception& ex) {
      throw FormatError(std::string("safetensors writer: cannot encode the header: ") + ex.what());
    }
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string out;
    out.reserve(8 + header.size() + offset);
    detail::store_le(out, static_cast<uint64_t>(header.size()));
    out += header;
    for (const auto& kv : tensors_) out += kv.second.bytes;
    return out;
  }

  /// serialize() written with write_file_atomic.
  template <class Json = nlohmann::json>
  void save(const std::filesystem::path& p) const {
    write_file_atomic(p, serialize<Json>());
  }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;

  /// Checks the name and shape, and returns the (empty) byte string to fill.
  std::string& new_entry(std::string name, DType dtype, std::vector<int64_t> shape, size_t count) {
    const std::string what = "safetensors writer: tensor '" + name + "': ";
    if (name == "__metadata__") throw FormatError(what + "the name is reserved for the metadata");
    if (tensors_.count(name)) throw FormatError(what + "duplicate tensor name");
    for (int64_t d : shape)
      if (d < 0) throw ShapeError(what + "negative dimension in shape " + shape_str(shape));
    const auto numel = detail::checked_numel(shape);
    if (!numel || *numel != count)
      throw ShapeError(what + "shape " + shape_str(shape) + " has " +
                       (numel ? std::to_string(*numel) : std::string("too many")) + " elements but the data has " +
                       std::to_string(count));
    Entry& e = tensors_[std::move(name)];
    e.dtype = dtype;
    e.shape = std::move(shape);
    e.bytes.reserve(count * dtype_size(dtype));
    return e.bytes;
  }
};

}  // namespace ttt::io
