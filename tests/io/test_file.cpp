// read_file / write_file_atomic: content round trips, errors name the path, and a failed write
// leaves the previous file exactly as it was (and no temporary file behind).
#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <sys/resource.h>

#include "helpers.hpp"
#include "ttt/io/file.hpp"

namespace test_file {

namespace fs = std::filesystem;
using ttt_test::TempDir;

void put(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

/// Names in `dir` other than `keep` (leftover temporary files).
std::vector<std::string> others(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  return out;
}

std::string binary_sample() {
  std::string s;
  for (int i = 0; i < 3000; ++i) s.push_back(static_cast<char>(i * 7 % 256));  // includes NULs
  return s;
}

TEST_CASE("read_file returns every byte") {
  TempDir dir;
  const std::string s = binary_sample();
  put(dir / "a.bin", s);
  CHECK(ttt::io::read_file(dir / "a.bin") == s);
  put(dir / "empty", "");
  CHECK(ttt::io::read_file(dir / "empty").empty());
}

TEST_CASE("read_file errors name the path") {
  TempDir dir;
  const fs::path missing = dir / "missing.safetensors";
  CHECK_THROWS_MENTIONING(ttt::FormatError, ttt::io::read_file(missing), missing.string(), "cannot open");
  CHECK_THROWS_MENTIONING(ttt::FormatError, ttt::io::read_file(dir.path), dir.path.string(), "directory");
}

TEST_CASE("write_file_atomic creates and replaces, leaving no temporary file") {
  TempDir dir;
  const fs::path p = dir / "out.bin";
  const std::string s = binary_sample();
  ttt::io::write_file_atomic(p, s);
  CHECK(ttt::io::read_file(p) == s);
  ttt::io::write_file_atomic(p, "short");
  CHECK(ttt::io::read_file(p) == "short");
  ttt::io::write_file_atomic(p, "");
  CHECK(ttt::io::read_file(p).empty());
  CHECK(others(dir.path, "out.bin").empty());
}

TEST_CASE("write_file_atomic into a missing directory throws and creates nothing") {
  TempDir dir;
  const fs::path p = dir / "no_such_dir" / "out.bin";
  CHECK_THROWS_MENTIONING(ttt::Error, ttt::io::write_file_atomic(p, "data"), p.string());
  CHECK_FALSE(fs::exists(dir / "no_such_dir"));
  CHECK(others(dir.path, "").empty());
  CHECK_THROWS_AS(ttt::io::write_file_atomic(dir.path / "", "data"), ttt::Error);  // names no file
}

TEST_CASE("write_file_atomic onto a directory keeps the directory") {
  TempDir dir;
  const fs::path target = dir / "target";
  fs::create_directory(target);
  put(target / "inside.txt", "keep me");
  CHECK_THROWS_MENTIONING(ttt::Error, ttt::io::write_file_atomic(target, "data"), target.string(), "rename");
  CHECK(fs::is_directory(target));
  CHECK(ttt::io::read_file(target / "inside.txt") == "keep me");
  CHECK(others(dir.path, "target").empty());
}

TEST_CASE("write_file_atomic in a read-only directory keeps the old file") {
  TempDir dir;
  const fs::path p = dir / "model.safetensors";
  put(p, "old content");
  fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec, fs::perm_options::replace);
  // Root ignores directory permissions: probe before relying on them.
  const fs::path probe = dir / "probe";
  bool writable = false;
  {
    std::ofstream f(probe);
    writable = static_cast<bool>(f);
  }
  if (writable) {
    std::error_code ec;
    fs::remove(probe, ec);
    MESSAGE("skipped: permissions are not enforced for this user (root?)");
  } else {
    CHECK_THROWS_MENTIONING(ttt::Error, ttt::io::write_file_atomic(p, "new content"), p.string());
    CHECK(ttt::io::read_file(p) == "old content");
    CHECK(others(dir.path, "model.safetensors").empty());
  }
  fs::permissions(dir.path, fs::perms::owner_all, fs::perm_options::add);
}

TEST_CASE("write_file_atomic that fails mid-write keeps the old file (RLIMIT_FSIZE)") {
  // A write past the file size limit fails with EFBIG even for root, halfway through the data.
  TempDir dir;
  const fs::path p = dir / "model.safetensors";
  put(p, "old content");
  rlimit saved{};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = saved;
  small.rlim_cur = 4096;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    ttt::io::write_file_atomic(p, std::string(100000, 'x'));
  } catch (const ttt::Error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  ttt_test::check_mentions(message, {p.string(), "write"});
  CHECK(ttt::io::read_file(p) == "old content");
  CHECK(others(dir.path, "model.safetensors").empty());
}

}  // namespace test_file
