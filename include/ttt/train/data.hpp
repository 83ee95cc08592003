#pragma once
/// \file train/data.hpp
/// Byte-level training data: a text file, or every regular file under a directory (recursive,
/// sorted by path), as token ids of the byte tokenizer with EOS between documents; the last
/// `val_fraction` of the tokens held out for validation; random training windows drawn with a
/// seeded std::mt19937_64 whose whole state can be saved and restored (a resumed run draws the
/// same windows an uninterrupted one would).
///
/// \code
///   auto tokens = ttt::train::load_byte_corpus("data/");
///   ttt::train::TextData data(std::move(tokens), /*seq_len=*/256, /*val_fraction=*/0.05, /*seed=*/0);
///   auto batch = data.sample(8);        // 8 windows of seq_len + 1 tokens
///   std::string s = data.rng_state();   // ... later: data.set_rng_state(s)
/// \endcode
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "../core/error.hpp"
#include "../io/file.hpp"
#include "../io/tokenizer.hpp"

namespace ttt::train {

/// The files a corpus path stands for: the file itself, or the regular files under a directory
/// (recursive, sorted by path). Error naming the path when it is missing or unreadable.
inline std::vector<std::filesystem::path> corpus_files(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error(path.string() + ": no such file or directory");
  if (!fs::is_directory(st)) return {path};
  std::vector<fs::path> out;
  fs::recursive_directory_iterator it(path, fs::directory_options::none, ec), end;
  if (ec) throw Error(path.string() + ": cannot read directory: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error(path.string() + ": cannot read directory: " + ec.message());
    std::error_code e2;
    if (it->is_regular_file(e2)) out.push_back(it->path());
  }
  if (ec) throw Error(path.string() + ": cannot read directory: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

/// Byte-tokenizer ids of every document under `path`, EOS between documents (empty files are
/// skipped). Error naming the path when it is missing, unreadable or holds no bytes.
inline std::vector<int64_t> load_byte_corpus(const std::filesystem::path& path) {
  std::vector<int64_t> out;
  bool first = true;
  for (const auto& f : corpus_files(path)) {
    const std::string text = io::read_file(f);  // FormatError naming the file
    if (text.empty()) continue;
    if (!first) out.push_back(ByteTokenizer::eos);
    first = false;
    for (char c : text) out.push_back(int64_t(static_cast<unsigned char>(c)));
  }
  if (out.empty()) throw Error(path.string() + ": no data (empty file or no non-empty files)");
  return out;
}

/// FNV-1a of token ids: tells whether a resumed run reads the same data.
inline uint64_t tokens_fingerprint(const std::vector<int64_t>& t) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t x : t)
    for (int b = 0; b < 8; ++b) h = (h ^ ((uint64_t(x) >> (8 * b)) & 255)) * 1099511628211ull;
  return h ^ uint64_t(t.size());
}

/// Text of a generator's whole state (operator<< of the standard engine).
inline std::string engine_state(const std::mt19937_64& rng) {
  std::ostringstream s;
  s << rng;
  return s.str();
}
inline void set_engine_state(std::mt19937_64& rng, const std::string& state) {
  std::istringstream s(state);
  std::mt19937_64 r;
  s >> r;
  if (s.fail()) throw FormatError("random generator state: not a std::mt19937_64 state");
  rng = r;
}

/// Non-overlapping windows of `len` tokens (consecutive windows share one token, so that every
/// next-token target is predicted once) over `t`, at most `max_windows` (0: all).
inline std::vector<std::vector<int64_t>> fixed_windows(const std::vector<int64_t>& t, int64_t len,
                                                       int64_t max_windows = 0) {
  std::vector<std::vector<int64_t>> out;
  const int64_t n = int64_t(t.size());
  for (int64_t s = 0; s + len <= n && (max_windows <= 0 || int64_t(out.size()) < max_windows); s += len - 1)
    out.emplace_back(t.begin() + s, t.begin() + s + len);
  return out;
}

/// Training and validation windows over a token stream. A window is seq_len + 1 tokens: the
/// model reads seq_len and each of them predicts the next.
class TextData {
 public:
  /// `source` names the data in errors. Errors: seq_len < 1, no room for one training window,
  /// val_fraction outside [0, 1) or a validation split shorter than one window.
  TextData(std::vector<int64_t> tokens, int64_t seq_len, double val_fraction, uint64_t seed,
           const std::string& source = "data")
      : seq_len_(seq_len), rng_(seed), fingerprint_(tokens_fingerprint(tokens)) {
    if (seq_len < 1) throw Error("seq_len must be >= 1, got " + std::to_string(seq_len));
    if (!(val_fraction >= 0.0 && val_fraction < 1.0))
      throw Error("val_fraction must be in [0, 1), got " + std::to_string(val_fraction));
    const int64_t n = int64_t(tokens.size());
    const int64_t n_val = int64_t(double(n) * val_fraction);
    const int64_t need = seq_len + 1;
    if (n - n_val < need)
      throw Error(source + ": " + std::to_string(n) + " tokens" +
                  (n_val ? " (" + std::to_string(n - n_val) + " after holding out " + std::to_string(n_val) +
                               " for validation)"
                         : std::string()) +
                  " is too short for seq_len " + std::to_string(seq_len) + " (need " + std::to_string(need) +
                  " tokens per window)");
    if (n_val > 0 && n_val < need)
      throw Error(source + ": the validation split (" + std::to_string(n_val) + " tokens) is shorter than one window of " +
                  std::to_string(need) + " tokens; raise the validation fraction or use more data");
    val_.assign(tokens.end() - n_val, tokens.end());
    tokens.resize(size_t(n - n_val));
    train_ = std::move(tokens);
  }

  int64_t seq_len() const { return seq_len_; }
  const std::vector<int64_t>& train_tokens() const { return train_; }
  const std::vector<int64_t>& val_tokens() const { return val_; }
  uint64_t fingerprint() const { return fingerprint_; }

  /// `n` windows of seq_len + 1 tokens at uniformly random starts in the training split.
  std::vector<std::vector<int64_t>> sample(int64_t n) {
    std::vector<std::vector<int64_t>> out;
    const int64_t len = seq_len_ + 1, last = int64_t(train_.size()) - len;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = std::uniform_int_distribution<int64_t>(0, last)(rng_);
      out.emplace_back(train_.begin() + s, train_.begin() + s + len);
    }
    return out;
  }

  /// The first `max_windows` fixed windows of the validation split (empty without one).
  std::vector<std::vector<int64_t>> val_windows(int64_t max_windows) const {
    return fixed_windows(val_, seq_len_ + 1, max_windows);
  }

  std::string rng_state() const { return engine_state(rng_); }
  void set_rng_state(const std::string& s) { set_engine_state(rng_, s); }

 private:
  int64_t seq_len_;
  std::mt19937_64 rng_;
  uint64_t fingerprint_;
  std::vector<int64_t> train_, val_;
};

}  // namespace ttt::train
