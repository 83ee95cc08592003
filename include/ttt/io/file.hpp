#pragma once
/// \file io/file.hpp
/// Whole-file reads and crash-safe whole-file writes.
///
/// `write_file_atomic` never leaves a half-written file under the target name: the bytes go to a
/// temporary file in the same directory (so the final rename stays on one file system), which is
/// flushed, synced and then renamed over the target. Until that rename the old file is untouched.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <unistd.h>
#define TTT_IO_POSIX 1
#else
#include <process.h>
#define TTT_IO_POSIX 0
#endif

#include "../core/error.hpp"

namespace ttt::io {

/// The whole content of `p`. Throws FormatError naming the path when it cannot be opened or read.
inline std::string read_file(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec))
    throw FormatError(p.string() + ": is a directory, not a file");
  std::ifstream f(p, std::ios::binary);
  if (!f) throw FormatError(p.string() + ": cannot open file for reading");
  std::string out;
  char buf[1 << 16];
  // Read in chunks rather than trusting a size from seekg: works for pipes and growing files too.
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    out.append(buf, static_cast<size_t>(f.gcount()));
    if (!f) break;
  }
  if (f.bad()) throw FormatError(p.string() + ": read error");
  return out;
}

namespace detail {

inline std::atomic<uint64_t> temp_file_counter{0};

inline long current_pid() {
#if TTT_IO_POSIX
  return static_cast<long>(::getpid());
#else
  return static_cast<long>(::_getpid());
#endif
}

inline std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// Writes `data` to a new file `tmp` (which must not exist) and makes it durable.
/// Returns an empty string on success, else what went wrong; `created` tells whether `tmp` is ours
/// to remove (never remove a file of the same name that someone else made).
inline std::string write_new_file(const std::filesystem::path& tmp, std::string_view data, bool& created) {
  created = false;
#if TTT_IO_POSIX
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) return "cannot create temporary file " + tmp.string() + ": " + errno_text(errno);
  created = true;
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return "write to " + tmp.string() + " failed: " + errno_text(err);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return "fsync of " + tmp.string() + " failed: " + errno_text(err);
  }
  if (::close(fd) != 0) return "close of " + tmp.string() + " failed: " + errno_text(errno);
  return {};
#else
  std::error_code ec;
  if (std::filesystem::exists(tmp, ec)) return "temporary file " + tmp.string() + " already exists";
  std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
  if (!f) return "cannot create temporary file " + tmp.string();
  created = true;
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.flush();
  if (!f) return "write to " + tmp.string() + " failed";
  f.close();
  if (!f) return "close of " + tmp.string() + " failed";
  return {};
#endif
}

/// Best effort: make the rename itself durable. Failure here does not undo a completed write.
inline void sync_directory(const std::filesystem::path& dir) {
#if TTT_IO_POSIX
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
#else
  (void)dir;
#endif
}

}  // namespace detail

/// Replace the content of `p` by `data`, all or nothing.
/// Writes `<name>.tmp.<pid>.<counter>` beside `p`, syncs it and renames it over `p`. On any failure
/// the temporary file is removed, `p` keeps its previous content, and ttt::Error naming `p` is thrown.
/// The new file gets default permissions (0666 minus the umask), not those of the file it replaces.
inline void write_file_atomic(const std::filesystem::path& p, std::string_view data) {
  const std::string where = p.string();
  if (!p.has_filename()) throw Error(where + ": cannot write: the path names no file");
  const std::filesystem::path tmp =
      p.parent_path() / (p.filename().string() + ".tmp." + std::to_string(detail::current_pid()) + "." +
                         std::to_string(detail::temp_file_counter.fetch_add(1)));
  bool created = false;
  std::string problem = detail::write_new_file(tmp, data, created);
  if (problem.empty()) {
    std::error_code ec;
    std::filesystem::rename(tmp, p, ec);
    if (ec) problem = "cannot rename " + tmp.string() + " over it: " + ec.message();
  }
  if (!problem.empty()) {
    std::error_code ignored;
    if (created) std::filesystem::remove(tmp, ignored);
    throw Error(where + ": cannot write file: " + problem);
  }
  detail::sync_directory(p.parent_path());
}

}  // namespace ttt::io

#undef TTT_IO_POSIX
