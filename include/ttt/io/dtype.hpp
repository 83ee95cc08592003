#pragma once
/// \file io/dtype.hpp
/// The element types of safetensors files (DType: names, sizes, parse_dtype) and the conversions
/// between float and the stored formats: IEEE binary16 and bfloat16 both ways (round to nearest
/// even), F64 -> float without the undefined out-of-range cast.
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "../core/error.hpp"

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

// ---- floating-point conversions -------------------------------------------------------------

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

namespace detail {

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

}  // namespace detail

}  // namespace ttt::io
