#pragma once
/// \file io/safetensors_reader.hpp
/// The strict safetensors reader: SafeTensors parses a file's bytes (header JSON, entries, the
/// data buffer's coverage), rejecting anything the format does not allow with a FormatError that
/// starts with the file's name, and reads tensors as float or int64 (TensorInfo: one header entry).
/// The format is described in io/safetensors.hpp.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <set>
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

// ---- tensor description -----------------------------------------------------------------------

/// One entry of the header. `begin`/`end` are byte offsets into the data buffer.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;

  /// Product of the dimensions (1 for a scalar). Checked against the byte size when parsed.
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  uint64_t nbytes() const { return end - begin; }
};

// ---- reader ---------------------------------------------------------------------------------

/// A parsed safetensors file, holding its bytes. Every accessor is checked.
class SafeTensors {
 public:
  /// Largest header accepted (the format's own readers use the same bound).
  static constexpr uint64_t max_header_bytes = 100'000'000;

  /// Read and parse a file; errors name the path.
  template <class Json = nlohmann::json>
  static SafeTensors load(const std::filesystem::path& p) {
    return parse<Json>(read_file(p), p.string());
  }

  /// Parse the bytes of a safetensors file; `source_name` starts every error message.
  /// (load and parse are templates over the JSON type, nlohmann::json by default, so that including
  /// this header compiles no JSON code.)
  template <class Json = nlohmann::json>
  static SafeTensors parse(std::string bytes, std::string source_name);

  const std::string& source() const { return source_; }
  size_t size() const { return tensors_.size(); }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

  /// FormatError "FILE: no tensor 'NAME'" when absent.
  const TensorInfo& info(std::string_view name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw FormatError(source_ + ": no tensor '" + std::string(name) + "'");
    return it->second;
  }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }

  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The tensor's bytes as stored (little-endian, row-major).
  std::string_view raw(std::string_view name) const {
    const TensorInfo& t = info(name);
    return std::string_view(bytes_).substr(data_start_ + t.begin, t.nbytes());
  }

  /// F32, F16, BF16 or F64 as float (16-bit formats exactly; F64 rounded to nearest).
  std::vector<float> read_float(std::string_view name) const {
    const TensorInfo& t = info(name);
    const char* p = bytes_.data() + data_start_ + t.begin;
    const size_t n = static_cast<size_t>(t.numel());
    std::vector<float> out(n);
    switch (t.dtype) {
      case DType::F32:
        if constexpr (std::endian::native == std::endian::little) {
          if (n) std::memcpy(out.data(), p, n * sizeof(float));
        } else {
          for (size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(detail::load_le<uint32_t>(p + 4 * i));
        }
        break;
      case DType::F16:
        for (size_t i = 0; i < n; ++i) out[i] = half_to_float(detail::load_le<uint16_t>(p + 2 * i));
        break;
      case DType::BF16:
        for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(detail::load_le<uint16_t>(p + 2 * i));
        break;
      case DType::F64:
        for (size_t i = 0; i < n; ++i)
          out[i] = detail::narrow_to_float(std::bit_cast<double>(detail::load_le<uint64_t>(p + 8 * i)));
        break;
      default: wrong_dtype(t, "F32, F16, BF16 or F64", "read_float");
    }
    return out;
  }

  /// As read_float(name), and ShapeError unless the shape is `expected_shape`.
  std::vector<float> read_float(std::string_view name, const std::vector<int64_t>& expected_shape) const {
    check_shape(info(name), expected_shape);
    return read_float(name);
  }

  /// I64, I32, I16, I8 or U8 as int64.
  std::vector<int64_t> read_int(std::string_view name) const {
    const TensorInfo& t = info(name);
    const char* p = bytes_.data() + data_start_ + t.begin;
    const size_t n = static_cast<size_t>(t.numel());
    std::vector<int64_t> out(n);
    switch (t.dtype) {
      case DType::I64:
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(detail::load_le<uint64_t>(p + 8 * i));
        break;
      case DType::I32:
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(detail::load_le<uint32_t>(p + 4 * i));
        break;
      case DType::I16:
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<int16_t>(detail::load_le<uint16_t>(p + 2 * i));
        break;
      case DType::I8:
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<int8_t>(static_cast<unsigned char>(p[i]));
        break;
      case DType::U8:
        for (size_t i = 0; i < n; ++i) out[i] = static_cast<unsigned char>(p[i]);
        break;
      default: wrong_dtype(t, "I64, I32, I16, I8 or U8", "read_int");
    }
    return out;
  }

  /// As read_int(name), and ShapeError unless the shape is `expected_shape`.
  std::vector<int64_t> read_int(std::string_view name, const std::vector<int64_t>& expected_shape) const {
    check_shape(info(name), expected_shape);
    return read_int(name);
  }

 private:
  std::string bytes_;   // the whole file
  std::string source_;  // for messages
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(source_ + ": " + what); }

  [[noreturn]] void wrong_dtype(const TensorInfo& t, const char* expected, const char* call) const {
    fail("tensor '" + t.name + "' has dtype " + std::string(dtype_name(t.dtype)) + ", expected " + expected + " (" +
         call + ")");
  }

  void check_shape(const TensorInfo& t, const std::vector<int64_t>& expected) const {
    if (t.shape != expected)
      throw ShapeError(source_ + ": tensor '" + t.name + "' has shape " + shape_str(t.shape) + ", expected " +
                       shape_str(expected));
  }

  template <class Json>
  void parse_header(std::string_view header, uint64_t data_size);
  template <class Json>
  TensorInfo parse_entry(const std::string& name, const Json& v, uint64_t data_size) const;
  void check_coverage(uint64_t data_size) const;
};

template <class Json>
SafeTensors SafeTensors::parse(std::string bytes, std::string source_name) {
  SafeTensors st;
  st.bytes_ = std::move(bytes);
  st.source_ = std::move(source_name);
  const uint64_t size = st.bytes_.size();
  if (size < 8)
    st.fail("file is " + detail::u2s(size) + " bytes, shorter than the 8-byte header length: not a safetensors file");
  const uint64_t n = detail::load_le<uint64_t>(st.bytes_.data());
  if (n > max_header_bytes)
    st.fail("header length " + detail::u2s(n) + " is absurdly large (limit " + detail::u2s(max_header_bytes) +
            " bytes)");
  if (n > size - 8)
    st.fail("header length " + detail::u2s(n) + " is larger than the file (" + detail::u2s(size - 8) +
            " bytes after the length field): truncated?");
  st.data_start_ = 8 + n;
  st.template parse_header<Json>(std::string_view(st.bytes_).substr(8, n), size - st.data_start_);
  return st;
}

template <class Json>
void SafeTensors::parse_header(std::string_view header, uint64_t data_size) {
  if (header.empty() || header.front() != '{') fail("header does not start with '{': not a safetensors file");
  // nlohmann's lexer takes a NUL byte for the end of input and would ignore whatever follows it.
  if (const size_t z = header.find('\0'); z != std::string_view::npos)
    fail("header is not valid JSON: NUL byte at offset " + std::to_string(8 + z));

  // The expected header nests three levels deep (object / entry / shape); refuse deeper input early
  // so that hostile headers cannot build huge DOMs. nlohmann keeps the last of duplicate keys
  // silently, so duplicates are spotted here as well.
  constexpr int max_depth = 8;
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto watch = [&](int depth, typename Json::parse_event_t ev, Json& parsed) -> bool {
    using E = typename Json::parse_event_t;
    if (depth > max_depth) fail("header nests deeper than " + std::to_string(max_depth) + " levels");
    switch (ev) {
      case E::object_start: keys.emplace_back(); break;
      case E::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.template get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.template get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(header.begin(), header.end(), watch);
  } catch (const typename Json::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) fail("duplicate key '" + duplicate + "' in the header");
  if (!j.is_object()) fail(std::string("header must be a JSON object, got ") + j.type_name());

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const Json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(std::string("__metadata__ must be an object of strings, got ") + v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("__metadata__ value of key '" + m.key() + "' must be a string, got " + m.value().type_name());
        metadata_.emplace(m.key(), m.value().template get<std::string>());
      }
      continue;
    }
    tensors_.emplace(key, this->template parse_entry<Json>(key, v, data_size));
  }
  check_coverage(data_size);
}

template <class Json>
TensorInfo SafeTensors::parse_entry(const std::string& name, const Json& v,
                                           uint64_t data_size) const {
  const std::string what = "tensor '" + name + "': ";
  if (!v.is_object()) fail(what + "entry must be an object, got " + v.type_name());
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      fail(what + "unknown field '" + it.key() + "' (expected dtype, shape, data_offsets)");
  auto field = [&](const char* key) -> const Json& {
    auto f = v.find(key);
    if (f == v.end()) fail(what + "missing field '" + key + "'");
    return *f;
  };
  TensorInfo t;
  t.name = name;

  const Json& dt = field("dtype");
  if (!dt.is_string()) fail(what + "field 'dtype' must be a string, got " + dt.type_name());
  const auto dtype = detail::find_dtype(dt.template get_ref<const std::string&>());
  if (!dtype) fail(what + detail::unknown_dtype_message(dt.template get_ref<const std::string&>()));
  t.dtype = *dtype;

  const Json& sh = field("shape");
  if (!sh.is_array()) fail(what + "field 'shape' must be an array of integers, got " + sh.type_name());
  for (const auto& d : sh) {
    if (d.is_number_unsigned()) {
      const uint64_t u = d.template get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail(what + "shape dimension " + detail::u2s(u) + " is too large");
      t.shape.push_back(static_cast<int64_t>(u));
    } else if (d.is_number_integer()) {
      fail(what + "negative shape dimension " + std::to_string(d.template get<int64_t>()));
    } else {
      fail(what + "field 'shape' must hold integers, found " + d.type_name());
    }
  }

  const Json& off = field("data_offsets");
  if (!off.is_array() || off.size() != 2)
    fail(what + "field 'data_offsets' must be an array [begin, end], got " +
         (off.is_array() ? "an array of " + std::to_string(off.size()) : std::string(off.type_name())));
  for (const auto& o : off)
    if (!o.is_number_unsigned())
      fail(what + "field 'data_offsets' must hold non-negative integers, found " +
           (o.is_number_integer() ? "a negative number" : std::string(o.type_name())));
  t.begin = off[0].template get<uint64_t>();
  t.end = off[1].template get<uint64_t>();
  const std::string offsets = "data_offsets [" + detail::u2s(t.begin) + ", " + detail::u2s(t.end) + "]";
  if (t.begin > t.end) fail(what + offsets + " has begin > end");

  const auto numel = detail::checked_numel(t.shape);
  const auto nbytes = numel ? detail::checked_mul(*numel, dtype_size(t.dtype)) : std::nullopt;
  if (!nbytes)
    fail(what + "shape " + shape_str(t.shape) + " of dtype " + std::string(dtype_name(t.dtype)) +
         " overflows: too many elements");
  if (t.end - t.begin != *nbytes)
    fail(what + offsets + " span " + detail::u2s(t.end - t.begin) + " bytes, but shape " + shape_str(t.shape) +
         " of dtype " + std::string(dtype_name(t.dtype)) + " needs " + detail::u2s(*nbytes) + " bytes");
  if (t.end > data_size)
    fail(what + offsets + " go past the end of the data buffer (" + detail::u2s(data_size) +
         " bytes): truncated file?");
  return t;
}

inline void SafeTensors::check_coverage(uint64_t data_size) const {
  // The format requires the data buffer to be exactly the tensors, in some order, back to back.
  std::vector<const TensorInfo*> order;
  order.reserve(tensors_.size());
  for (const auto& kv : tensors_) order.push_back(&kv.second);
  std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const TensorInfo* prev = nullptr;
  for (const TensorInfo* t : order) {
    if (t->begin < pos)
      fail("tensors '" + prev->name + "' and '" + t->name + "' overlap in the data buffer (bytes [" +
           detail::u2s(t->begin) + ", " + detail::u2s(pos) + "))");
    if (t->begin > pos)
      fail("bytes [" + detail::u2s(pos) + ", " + detail::u2s(t->begin) +
           ") of the data buffer are not covered by any tensor (gap before '" + t->name + "')");
    pos = t->end;
    prev = t;
  }
  if (pos != data_size)
    fail("data past the end of the last tensor: the data buffer holds " + detail::u2s(data_size) +
         " bytes but the tensors cover only " + detail::u2s(pos));
}

}  // namespace ttt::io
