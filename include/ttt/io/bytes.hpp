#pragma once
/// \file io/bytes.hpp
/// Byte helpers of the safetensors reader and writer: little-endian loads from possibly unaligned
/// memory and stores into a string, element counts and products checked for overflow.
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace ttt::io::detail {

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

inline std::string u2s(uint64_t v) { return std::to_string(v); }

}  // namespace ttt::io::detail
