#pragma once
/// \file io/safetensors.hpp
/// A strict reader and a writer for the safetensors format.
///
/// Layout: an 8-byte little-endian u64 N, then N bytes of JSON header, then the data buffer:
/// \code
///   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
///    "__metadata__": {"key": "value"}}
/// \endcode
/// Offsets are relative to the start of the data buffer. The reader rejects anything the format does
/// not allow (overlaps, gaps, trailing bytes, sizes that do not match shapes, ...) with a FormatError
/// that starts with the file's name; it never reads outside the buffer and never loads unaligned.
///
/// \code
///   auto st = ttt::io::SafeTensors::load("model.safetensors");
///   std::vector<float> w = st.read_float("model.embed_tokens.weight", {97, 64});
///
///   ttt::io::SafeTensorsWriter out;
///   out.add("w", {97, 64}, w);
///   out.save("copy.safetensors");
/// \endcode
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "file.hpp"

namespace ttt::io {

// ---- dtypes ---------------------------------------------------------------------------------

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline constexpr std::array<DType, 10> all_dtypes = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                                     DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

/// Bytes per element.
constexpr size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: return 8;
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::I16: return 2;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
  }
  return 0;  // unreachable for a valid enumerator
}

/// The name used in the header ("F32", "BF16", ...).
constexpr std::string_view dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

namespace detail {
inline std::optional<DType> find_dtype(std::string_view s) {
  for (DType d : all_dtypes)
    if (dtype_name(d) == s) return d;
  return std::nullopt;
}
inline std::string unknown_dtype_message(std::string_view s) {
  std::string out = "unknown dtype '" + std::string(s) + "' (valid: ";
  for (size_t i = 0; i < all_dtypes.size(); ++i) (out += i ? ", " : "") += dtype_name(all_dtypes[i]);
  return out + ")";
}
}  // namespace detail

/// "F32" -> DType::F32; anything else throws FormatError listing the valid names.
inline DType parse_dtype(std::string_view s) {
  if (auto d = detail::find_dtype(s)) return *d;
  throw FormatError(detail::unknown_dtype_message(s));
}

// ---- 16-bit floats --------------------------------------------------------------------------

/// IEEE binary16 -> float, exact for every input (subnormals, infinities, NaN payloads).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf, NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (mant << 13));  // rebias 15 -> 127
  // Zero or subnormal: mant * 2^-24, exact in float (a normal float there).
  const float v = static_cast<float>(mant) * 0x1p-24f;
  return sign ? -v : v;
}

/// float -> IEEE binary16, rounding to nearest even; overflow gives infinity, NaN stays NaN.
inline uint16_t float_to_half(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // quiet NaN
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 (or inf) -> inf
  if (a >= 0x38800000u) {  // normal half: >= 2^-14
    uint32_t r = (a >> 13) - (112u << 10);
    const uint32_t rem = a & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // may carry into the exponent: still right
    return static_cast<uint16_t>(sign | r);
  }
  const uint32_t e = a >> 23;
  if (e < 102) return sign;  // below 2^-25: rounds to zero
  // Subnormal half: k * 2^-24 with k = m * 2^(e - 126), m the 24-bit significand.
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14 .. 24
  uint32_t k = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rem > halfway || (rem == halfway && (k & 1u))) ++k;
  return static_cast<uint16_t>(sign | k);
}

/// bfloat16 -> float: the top half of a float, so always exact.
inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

/// float -> bfloat16, rounding to nearest even; NaN stays (quiet) NaN.
inline uint16_t float_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);
  const uint32_t rounded = x + 0x7FFFu + ((x >> 16) & 1u);  // cannot wrap: x <= 0xFF800000 here
  return static_cast<uint16_t>(rounded >> 16);
}

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

namespace detail {

/// Little-endian unsigned load from possibly unaligned memory.
template <class U>
inline U load_le(const char* p) {
  static_assert(std::is_unsigned_v<U>);
  U v = 0;
  for (size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>(v | (U(static_cast<unsigned char>(p[i])) << (8 * i)));
  return v;
}

template <class U>
inline void store_le(std::string& out, U v) {
  static_assert(std::is_unsigned_v<U>);
  for (size_t i = 0; i < sizeof(U); ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

/// a * b, or nullopt when it does not fit in uint64.
inline std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

/// Number of elements of a shape with non-negative dimensions; nullopt when it overflows int64.
inline std::optional<uint64_t> checked_numel(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    auto m = checked_mul(n, static_cast<uint64_t>(d));
    if (!m || *m > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
    n = *m;
  }
  return n;
}

/// double -> float with IEEE round-to-nearest, without the undefined out-of-range cast.
inline float narrow_to_float(double d) {
  if (std::isnan(d)) return std::numeric_limits<float>::quiet_NaN();
  const double a = std::fabs(d);
  if (a > double(std::numeric_limits<float>::max())) {
    // Values below FLT_MAX + half an ulp round down to FLT_MAX; the tie goes to infinity (odd max).
    const float r = a < 0x1.ffffffp127 ? std::numeric_limits<float>::max() : std::numeric_limits<float>::infinity();
    return d < 0 ? -r : r;
  }
  return static_cast<float>(d);
}

inline std::string u2s(uint64_t v) { return std::to_string(v); }

}  // namespace detail

// ---- reader ---------------------------------------------------------------------------------

/// A parsed safetensors file, holding its bytes. Every accessor is checked.
class SafeTensors {
 public:
  /// Largest header accepted (the format's own readers use the same bound).
  static constexpr uint64_t max_header_bytes = 100'000'000;

  /// Read and parse a file; errors name the path.
  static SafeTensors load(const std::filesystem::path& p) { return parse(read_file(p), p.string()); }

  /// Parse the bytes of a safetensors file; `source_name` starts every error message.
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

  void parse_header(std::string_view header, uint64_t data_size);
  TensorInfo parse_entry(const std::string& name, const nlohmann::json& v, uint64_t data_size) const;
  void check_coverage(uint64_t data_size) const;
};

inline SafeTensors SafeTensors::parse(std::string bytes, std::string source_name) {
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
  st.parse_header(std::string_view(st.bytes_).substr(8, n), size - st.data_start_);
  return st;
}

inline void SafeTensors::parse_header(std::string_view header, uint64_t data_size) {
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
  auto watch = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) -> bool {
    using E = nlohmann::json::parse_event_t;
    if (depth > max_depth) fail("header nests deeper than " + std::to_string(max_depth) + " levels");
    switch (ev) {
      case E::object_start: keys.emplace_back(); break;
      case E::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case E::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header.begin(), header.end(), watch);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) fail("duplicate key '" + duplicate + "' in the header");
  if (!j.is_object()) fail(std::string("header must be a JSON object, got ") + j.type_name());

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail(std::string("__metadata__ must be an object of strings, got ") + v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("__metadata__ value of key '" + m.key() + "' must be a string, got " + m.value().type_name());
        metadata_.emplace(m.key(), m.value().get<std::string>());
      }
      continue;
    }
    tensors_.emplace(key, parse_entry(key, v, data_size));
  }
  check_coverage(data_size);
}

inline TensorInfo SafeTensors::parse_entry(const std::string& name, const nlohmann::json& v,
                                           uint64_t data_size) const {
  const std::string what = "tensor '" + name + "': ";
  if (!v.is_object()) fail(what + "entry must be an object, got " + v.type_name());
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "dtype" && it.key() != "shape" && it.key() != "data_offsets")
      fail(what + "unknown field '" + it.key() + "' (expected dtype, shape, data_offsets)");
  auto field = [&](const char* key) -> const nlohmann::json& {
    auto f = v.find(key);
    if (f == v.end()) fail(what + "missing field '" + key + "'");
    return *f;
  };
  TensorInfo t;
  t.name = name;

  const nlohmann::json& dt = field("dtype");
  if (!dt.is_string()) fail(what + "field 'dtype' must be a string, got " + dt.type_name());
  const auto dtype = detail::find_dtype(dt.get_ref<const std::string&>());
  if (!dtype) fail(what + detail::unknown_dtype_message(dt.get_ref<const std::string&>()));
  t.dtype = *dtype;

  const nlohmann::json& sh = field("shape");
  if (!sh.is_array()) fail(what + "field 'shape' must be an array of integers, got " + sh.type_name());
  for (const auto& d : sh) {
    if (d.is_number_unsigned()) {
      const uint64_t u = d.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) fail(what + "shape dimension " + detail::u2s(u) + " is too large");
      t.shape.push_back(static_cast<int64_t>(u));
    } else if (d.is_number_integer()) {
      fail(what + "negative shape dimension " + std::to_string(d.get<int64_t>()));
    } else {
      fail(what + "field 'shape' must hold integers, found " + d.type_name());
    }
  }

  const nlohmann::json& off = field("data_offsets");
  if (!off.is_array() || off.size() != 2)
    fail(what + "field 'data_offsets' must be an array [begin, end], got " +
         (off.is_array() ? "an array of " + std::to_string(off.size()) : std::string(off.type_name())));
  for (const auto& o : off)
    if (!o.is_number_unsigned())
      fail(what + "field 'data_offsets' must hold non-negative integers, found " +
           (o.is_number_integer() ? "a negative number" : std::string(o.type_name())));
  t.begin = off[0].get<uint64_t>();
  t.end = off[1].get<uint64_t>();
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

// ---- writer ---------------------------------------------------------------------------------

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

  /// The whole file. FormatError when a name is not valid UTF-8.
  std::string serialize() const {
    nlohmann::json h = nlohmann::json::object();
    if (!metadata_.empty()) h["__metadata__"] = metadata_;
    uint64_t offset = 0;
    for (const auto& [name, e] : tensors_) {
      const uint64_t end = offset + e.bytes.size();
      h[name] = {{"dtype", std::string(dtype_name(e.dtype))},
                 {"shape", e.shape},
                 {"data_offsets", nlohmann::json::array({offset, end})}};
      offset = end;
    }
    std::string header;
    try {
      header = h.dump();
    } catch (const nlohmann::json::exception& ex) {
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
  void save(const std::filesystem::path& p) const { write_file_atomic(p, serialize()); }

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
