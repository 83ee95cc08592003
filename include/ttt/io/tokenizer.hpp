#pragma once
/// \file tokenizer.hpp
/// A byte-level tokenizer: token ids 0..255 are the bytes of UTF-8 (or any) text, and three
/// special tokens follow (BOS = 256, EOS = 257, PAD = 258), so the vocabulary has 259 entries.
/// Every string round-trips exactly (encode then decode gives the same bytes). Models whose
/// vocabulary is smaller than 256 cannot use it: `check_vocab` says so.
///
/// \code
///   ttt::ByteTokenizer tok;
///   std::vector<int64_t> ids = tok.encode("héllo");  // 6 ids: é is two bytes
///   std::string s = tok.decode(ids);                  // "héllo"
/// \endcode
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"

namespace ttt {

class ByteTokenizer {
 public:
  static constexpr int64_t num_bytes = 256;
  static constexpr int64_t bos = 256;
  static constexpr int64_t eos = 257;
  static constexpr int64_t pad = 258;
  static constexpr int64_t vocab_size = 259;

  /// One id per byte of `text` (no BOS/EOS added; see `encode(text, add_bos)`).
  std::vector<int64_t> encode(std::string_view text) const {
    std::vector<int64_t> out;
    out.reserve(text.size());
    for (char c : text) out.push_back(static_cast<int64_t>(static_cast<unsigned char>(c)));
    return out;
  }

  /// As encode(text), with BOS in front when `add_bos`.
  std::vector<int64_t> encode(std::string_view text, bool add_bos) const {
    std::vector<int64_t> out;
    out.reserve(text.size() + 1);
    if (add_bos) out.push_back(bos);
    for (char c : text) out.push_back(static_cast<int64_t>(static_cast<unsigned char>(c)));
    return out;
  }

  /// The bytes of ids 0..255. Other ids are dropped, or, with `show_specials`, shown as
  /// `<bos>`, `<eos>`, `<pad>` or `<ID>` (any other id, e.g. one of a larger model vocabulary).
  std::string decode(std::span<const int64_t> ids, bool show_specials = false) const {
    std::string out;
    out.reserve(ids.size());
    for (int64_t id : ids) out += token_text(id, show_specials);
    return out;
  }

  /// The text of one token, as decode() writes it.
  std::string token_text(int64_t id, bool show_specials = false) const {
    if (id >= 0 && id < num_bytes) return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
    if (!show_specials) return {};
    if (id == bos) return "<bos>";
    if (id == eos) return "<eos>";
    if (id == pad) return "<pad>";
    std::string s(1, '<');  // appended piecewise: `"<" + ... + ">"` trips GCC 12's -Wrestrict (bug 105329)
    s += std::to_string(id);
    s += '>';
    return s;
  }

  bool is_special(int64_t id) const { return id < 0 || id >= num_bytes; }

  /// Throws ttt::Error unless a model with `model_vocab` tokens can take byte ids.
  static void check_vocab(int64_t model_vocab) {
    if (model_vocab < num_bytes)
      throw Error("vocab_size " + std::to_string(model_vocab) +
                  " is too small for the byte-level tokenizer (needs >= 256)");
  }
};

}  // namespace ttt
