#pragma once
// Shared by the io tests: building raw safetensors bytes, temporary directories, and checking
// that an error is thrown with the right type and a message that says enough.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include <doctest/doctest.h>
#include <unistd.h>

namespace ttt_test {

/// A length field claiming `n` bytes, followed by `rest`.
inline std::string with_length(uint64_t n, std::string_view rest) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  out.append(rest);
  return out;
}

/// 8-byte little-endian length + header + data, with the length taken from `header`.
inline std::string st_file(std::string_view header, std::string_view data = {}) {
  return with_length(header.size(), header).append(data);
}

/// The header length stored in the first 8 bytes of a safetensors file.
inline uint64_t header_length(std::string_view file) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(file[i])) << (8 * i);
  return n;
}

/// The message of the `E` that `f` throws; fails the test when it throws nothing or something else.
template <class E>
std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL_CHECK("threw the wrong exception type: " << e.what());
    return {};
  }
  FAIL_CHECK("no exception thrown");
  return {};
}

/// Checks that every part occurs in the message.
inline void check_mentions(const std::string& message, std::initializer_list<std::string_view> parts) {
  for (std::string_view part : parts) {
    INFO("message: " << message);
    INFO("expected to contain: " << std::string(part));
    CHECK(message.find(part) != std::string::npos);
  }
}

/// A fresh directory under the system temp dir, removed (permissions restored first) at scope end.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("ttt_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

/// Where the PyTorch reference cases are, or an empty path when this checkout has none.
inline std::filesystem::path reference_dir() {
  std::filesystem::path p = TTT_REFERENCE_DIR;
  std::error_code ec;
  return std::filesystem::is_directory(p, ec) ? p : std::filesystem::path();
}

}  // namespace ttt_test

/// CHECK that `expr` throws `Type` whose message contains each of the following strings.
#define CHECK_THROWS_MENTIONING(Type, expr, ...) \
  ::ttt_test::check_mentions(::ttt_test::message_of<Type>([&] { (void)(expr); }), {__VA_ARGS__})
