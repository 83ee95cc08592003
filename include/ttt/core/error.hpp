#pragma once
/// \file error.hpp
/// The library's exception types. Every public entry point checks its inputs and throws one of
/// these with a message that names the file or tensor, what was expected and what was found.
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ttt {

/// Base of every error thrown by the library.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// A file that cannot be read or is malformed (safetensors, config.json, data).
struct FormatError : Error {
  using Error::Error;
};
/// A configuration that cannot work (hidden size not divisible by heads, ...).
struct ConfigError : Error {
  using Error::Error;
};
/// A tensor or argument with the wrong shape or value.
struct ShapeError : Error {
  using Error::Error;
};

/// "[2, 40, 64]"
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

}  // namespace ttt
