#pragma once
/// \file io/bpe_tokenizer.hpp
/// A SentencePiece-style BPE tokenizer read from a Hugging Face `tokenizer.json`: the Llama-2 and
/// Mistral tokenizers (32,000 tokens each) and others built the same way.
///
/// Encoding follows the file, as the `tokenizers` library does: the normalizer (Llama-2: prepend
/// "▁" U+2581 to a non-empty text, then every space becomes "▁"), the pre-tokenizer (none, or the
/// older `Metaspace` one), then BPE over the whole text: each character becomes its token, or its
/// UTF-8 bytes as the tokens `<0xNN>` when it has none (`byte_fallback`), or `unk_token`; then the
/// adjacent pair with the lowest merge rank is merged, the leftmost first among equal ranks, until
/// no pair has a merge. The post-processor's template puts its special tokens around the ids
/// (Llama-2: BOS `<s>` in front). Decoding runs the file's decoder (Llama-2: "▁" -> space, runs of
/// byte tokens -> their UTF-8 text, one U+FFFD per byte where the bytes are not valid UTF-8, strip
/// the one leading space of the prefix), leaving out special tokens unless asked to show them.
///
/// Differences from the `tokenizers` library, on purpose:
/// - The text of an added token written in the text ("<s>", "</s>") stays text: only `encode`'s
///   `add_bos` adds special tokens, so a corpus cannot inject them (llama-tokenizer-js does the
///   same; `tokenizers` and transformers.js turn such text into the special token).
/// - A character with no token, no byte fallback and no `unk_token` is an error, not dropped.
/// - Bytes that are not UTF-8 in the text are taken one by one, as characters with no token (byte
///   fallback: `<0xNN>`), so any byte string encodes.
/// What the file may hold: model `BPE` (merges as "a b" strings or ["a", "b"] pairs); normalizers
/// `Sequence`, `Prepend`, `Replace` (plain string); pre-tokenizer `Metaspace`; post-processor
/// `TemplateProcessing`; decoders `Sequence`, `Replace`, `ByteFallback`, `Fuse`, `Strip`,
/// `Metaspace`. Anything else (a Unigram model, byte-level BPE, regex patterns, BPE-dropout) is a
/// FormatError naming the file and the key, as are ids and merges that do not fit the vocabulary.
///
/// Cost: a priority queue of candidate merges over a linked list of symbols, O(n log n) in the
/// length of the text (one piece, as SentencePiece: the text is not split at spaces first).
///
/// \code
///   auto tok = ttt::BpeTokenizer::load("data/llama2/tokenizer.json");   // scripts/setup.sh --llama-tokenizer
///   std::vector<int64_t> ids = tok.encode("Hello world!");  // 1, 15043, 3186, 29991: BOS first
///   std::string text = tok.decode(ids);                      // "Hello world!"
///   tok.check_vocab(model.cfg().vocab_size);                 // Error unless 32000
/// \endcode
#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "config_json.hpp"
#include "file.hpp"

namespace ttt {

namespace detail::bpe {

/// The code point starting at s[i] and its length in bytes; {-1, 1} where s[i] does not start a
/// valid UTF-8 sequence (a stray continuation byte, an overlong form, a surrogate, a cut sequence).
inline std::pair<int32_t, size_t> next_code_point(std::string_view s, size_t i) {
  const unsigned c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {static_cast<int32_t>(c), 1};
  size_t n = 0;
  uint32_t cp = 0, min = 0;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F, min = 0x80;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07, min = 0x10000;
  else return {-1, 1};
  if (i + n > s.size()) return {-1, 1};
  for (size_t k = 1; k < n; ++k) {
    const unsigned d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xC0) != 0x80) return {-1, 1};
    cp = (cp << 6) | (d & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {-1, 1};
  return {static_cast<int32_t>(cp), n};
}

inline bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto [cp, n] = next_code_point(s, i);
    if (cp < 0) return false;
    i += n;
  }
  return true;
}

/// The number of code points of a valid UTF-8 string.
inline size_t code_points(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += next_code_point(s, i).second) ++n;
  return n;
}

/// `s` with every `from` replaced by `to` (from non-empty).
inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string_view::npos; i = j + from.size()) {
    out.append(s, i, j - i);
    out.append(to);
  }
  out.append(s, i, std::string_view::npos);
  return out;
}

/// The byte of a "<0xNN>" token (either case of hex digits, as the ByteFallback decoder reads it), else -1.
inline int byte_token_value(std::string_view t) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return -1;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  const int h = hex(t[3]), l = hex(t[4]);
  return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/// "'text'" for messages: at most 60 bytes of it (whole code points), control characters escaped.
inline std::string quoted(std::string_view s) {
  std::string out = "'";
  size_t i = 0;
  while (i < s.size() && i < 60) {
    const auto [cp, n] = next_code_point(s, i);
    if (cp >= 0 && cp >= 0x20 && cp != 0x7f) out.append(s.substr(i, n));
    else {
      static const char* digits = "0123456789abcdef";
      const unsigned b = static_cast<unsigned char>(s[i]);
      out += "\\x";
      out += digits[b >> 4];
      out += digits[b & 15];
    }
    i += n;
  }
  if (i < s.size()) out += "...";
  return out + "'";
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

}  // namespace detail::bpe

class BpeTokenizer {
 public:
  /// Reads a Hugging Face `tokenizer.json`. FormatError naming `path` when it cannot be read, is
  /// not JSON, or holds what this tokenizer cannot run (see the file's top).
  template <class Json = nlohmann::json>
  static BpeTokenizer load(const std::filesystem::path& path) {
    const std::string source = path.string();
    return from_json(io::parse_json_text<Json>(io::read_file(path), source), source);
  }

  /// From a parsed `tokenizer.json`; `source` names it in error messages.
  template <class Json>
  static BpeTokenizer from_json(const Json& j, const std::string& source);

  /// The ids of `text`; with `add_bos`, the special tokens of the post-processor's template around
  /// them (Llama-2, Mistral: BOS in front, also for the empty text).
  std::vector<int64_t> encode(std::string_view text, bool add_bos = true) const {
    std::vector<int64_t> out;
    if (add_bos) out.assign(prefix_.begin(), prefix_.end());
    std::string s(text);
    for (const Norm& n : normalizer_) s = n.prepend ? (s.empty() ? s : n.a + s) : detail::bpe::replace_all(s, n.a, n.b);
    if (!meta_.on) {
      encode_piece(s, out);
    } else {
      s = detail::bpe::replace_all(s, " ", meta_.rep);
      if (meta_.prepend && !s.empty() && s.compare(0, meta_.rep.size(), meta_.rep) != 0) s.insert(0, meta_.rep);
      if (!meta_.split) {
        encode_piece(s, out);
      } else {  // pieces that start at each "▁" (the tokenizers library's MergedWithNext)
        size_t begin = 0;
        for (size_t at = s.find(meta_.rep, 1); at != std::string::npos; at = s.find(meta_.rep, at + 1)) {
          encode_piece(std::string_view(s).substr(begin, at - begin), out);
          begin = at;
        }
        encode_piece(std::string_view(s).substr(begin), out);
      }
    }
    if (add_bos) out.insert(out.end(), suffix_.begin(), suffix_.end());
    return out;
  }

  /// The text of `ids` through the file's decoder. Special tokens are left out unless
  /// `show_specials` (then their text, e.g. "<s>", goes through the decoder too). Error naming the
  /// id, its position and the file for an id outside [0, vocab_size()).
  std::string decode(std::span<const int64_t> ids, bool show_specials = false) const {
    std::vector<std::string> toks;
    toks.reserve(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      check_id(ids[i], i);
      if (!show_specials && special_[static_cast<size_t>(ids[i])]) continue;
      toks.push_back(tokens_[static_cast<size_t>(ids[i])]);
    }
    for (const DecodeStep& d : decoder_) apply(d, toks);
    std::string out;
    for (const std::string& t : toks) out += t;
    return out;
  }

  /// The number of ids: the largest id of the vocabulary and the added tokens, plus one.
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  /// The first special token that `encode(text, true)` puts in front (`<s>` for Llama-2); the id
  /// of `<s>` when it puts none; -1 when neither.
  int64_t bos() const { return bos_; }
  /// The id of `</s>`, -1 when there is none.
  int64_t eos() const { return eos_; }
  /// The id of the model's `unk_token`, -1 when there is none.
  int64_t unk() const { return unk_; }
  /// The token of `id` as the file writes it ("▁Hello", "<0x0A>", "<s>"); Error outside the vocabulary.
  const std::string& token(int64_t id) const {
    check_id(id, static_cast<size_t>(-1));
    return tokens_[static_cast<size_t>(id)];
  }
  /// The id of the token written `text` (vocabulary or added token), -1 when there is none.
  int64_t token_id(std::string_view text) const {
    const auto it = ids_.find(text);
    return it == ids_.end() ? -1 : it->second;
  }
  /// An added token marked special (left out of decode unless shown); false outside the vocabulary.
  bool is_special(int64_t id) const { return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)]; }
  /// A byte token "<0xNN>" (byte fallback): one byte of a character's UTF-8, which may need the
  /// tokens after it to decode (a streaming printer waits for them); false outside the vocabulary.
  bool is_byte_token(int64_t id) const {
    return id >= 0 && id < vocab_size() && detail::bpe::byte_token_value(tokens_[static_cast<size_t>(id)]) >= 0;
  }
  /// Whether `encode` cuts the text before each word's "▁" (no token has a "▁" after another
  /// character, so no merge crosses there) and merges each word once per call: the same ids as
  /// BPE over the whole text, sooner. True for Llama-2 and Mistral.
  bool cuts_words() const { return words_; }
  /// Where the tokenizer was read from (as given to load / from_json).
  const std::string& source() const { return source_; }

  /// Error unless a model with `model_vocab` tokens has exactly this tokenizer's ids.
  void check_vocab(int64_t model_vocab) const {
    if (model_vocab != vocab_size())
      throw Error("the model's vocab_size " + std::to_string(model_vocab) + " does not match the " +
                  std::to_string(vocab_size()) + " tokens of the tokenizer " + source_);
  }

 private:
  struct Merge {
    int32_t rank;
    int32_t id;  // the merged token
  };
  struct Norm {  // prepend `a` (to a non-empty text), or replace every `a` by `b`
    bool prepend;
    std::string a, b;
  };
  struct Metaspace {
    bool on = false, prepend = true, split = true;
    std::string rep;
  };
  struct DecodeStep {
    enum Kind { replace, byte_fallback, fuse, strip, metaspace } kind;
    std::string a, b;  // replace a by b; strip / metaspace: the character
    int64_t start = 0, stop = 0;
    bool prepend = true;  // metaspace: strip the leading space of the first token
  };

  void check_id(int64_t id, size_t pos) const {
    if (id >= 0 && id < vocab_size()) return;
    throw Error(source_ + ": token id " + std::to_string(id) +
                (pos == static_cast<size_t>(-1) ? std::string() : " at position " + std::to_string(pos)) +
                " is outside the vocabulary [0, " + std::to_string(vocab_size()) + ")");
  }

  const Merge* find_merge(int32_t a, int32_t b) const {
    const auto it = merges_.find(static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32 | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  /// BPE over one piece of text. Where no merge can cross the start of a word (`words_`), the piece
  /// is cut there, before each run of "▁" that follows another character, and a word seen before in
  /// this call is not merged again: the same ids, sooner (the cut is exact, not the pre-tokenizer
  /// split that SentencePiece does not make; the tests compare both ways on the real vocabularies).
  void encode_piece(std::string_view w, std::vector<int64_t>& out) const {
    if (!words_) {
      merge_piece(w, out);
      return;
    }
    std::unordered_map<std::string_view, std::pair<size_t, size_t>> seen;  // word -> its ids in `out`
    auto word = [&](std::string_view p) {
      constexpr size_t cached = 64;  // longer words are rare: not worth the hashing
      if (p.size() <= cached)
        if (const auto it = seen.find(p); it != seen.end()) {
          const auto [from, n] = it->second;
          const size_t at = out.size();
          out.resize(at + n);
          std::copy_n(out.begin() + static_cast<std::ptrdiff_t>(from), n, out.begin() + static_cast<std::ptrdiff_t>(at));
          return;
        }
      const size_t at = out.size();
      merge_piece(p, out);
      if (p.size() <= cached && seen.size() < (size_t(1) << 16)) seen.emplace(p, std::pair{at, out.size() - at});
    };
    const std::string_view sp = kMeta;
    size_t begin = 0;
    for (size_t at = w.find(sp, 1); at != std::string_view::npos; at = w.find(sp, at + 1)) {
      if (at >= sp.size() && w.compare(at - sp.size(), sp.size(), sp) == 0) continue;  // inside a run of "▁"
      word(w.substr(begin, at - begin));
      begin = at;
    }
    word(w.substr(begin));
  }

  /// BPE over one piece: characters (or their bytes, or unk) to symbols in a linked list, then the
  /// merges by rank, leftmost first, from a priority queue of candidate pairs; a candidate whose
  /// pair has changed since it was queued is skipped when it comes up (the tokenizers library's
  /// `Word::merge_all`).
  void merge_piece(std::string_view w, std::vector<int64_t>& out) const {
    if (w.empty()) return;
    if (w.size() >= static_cast<size_t>(INT32_MAX))  // symbol positions are int32
      throw Error(source_ + ": cannot encode " + std::to_string(w.size()) + " bytes without a space at once (at most 2^31 - 2)");
    struct Sym {
      int32_t id, prev, next;  // id -1: merged into its left neighbour
    };
    std::vector<Sym> sym;
    sym.reserve(w.size());
    auto push = [&](int32_t id) {
      const auto n = static_cast<int32_t>(sym.size());
      sym.push_back({id, n - 1, n + 1});
    };
    bool last_unk = false;
    for (size_t i = 0; i < w.size();) {
      const auto [cp, len] = detail::bpe::next_code_point(w, i);
      int32_t id = -1;
      if (cp >= 0)
        if (const auto it = char_ids_.find(static_cast<uint32_t>(cp)); it != char_ids_.end()) id = it->second;
      bool bytes = id < 0 && byte_fallback_;
      for (size_t k = 0; bytes && k < len; ++k) bytes = byte_ids_[static_cast<unsigned char>(w[i + k])] >= 0;
      if (id >= 0) {
        push(id);
        last_unk = false;
      } else if (bytes) {
        for (size_t k = 0; k < len; ++k) push(byte_ids_[static_cast<unsigned char>(w[i + k])]);
        last_unk = false;
      } else {
        if (unk_ < 0)
          throw Error(source_ + ": cannot encode " + detail::bpe::quoted(w.substr(i, len)) +
                      ": no token for it, no byte fallback and no unk_token");
        if (!(fuse_unk_ && last_unk)) push(static_cast<int32_t>(unk_));
        last_unk = true;
      }
      i += len;
    }
    sym.back().next = -1;

    struct Cand {
      int32_t rank, pos, id;  // pos: the left symbol
    };
    auto after = [](const Cand& a, const Cand& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
    std::vector<Cand> heap;
    heap.reserve(sym.size());
    std::priority_queue<Cand, std::vector<Cand>, decltype(after)> queue(after, std::move(heap));
    for (size_t i = 0; i + 1 < sym.size(); ++i)
      if (const Merge* m = find_merge(sym[i].id, sym[i + 1].id)) queue.push({m->rank, static_cast<int32_t>(i), m->id});
    while (!queue.empty()) {
      const Cand c = queue.top();
      queue.pop();
      Sym& left = sym[static_cast<size_t>(c.pos)];
      if (left.id < 0 || left.next < 0) continue;
      Sym& right = sym[static_cast<size_t>(left.next)];
      const Merge* m = find_merge(left.id, right.id);
      if (m == nullptr || m->id != c.id || m->rank != c.rank) continue;  // the pair changed since
      left.id = c.id;
      right.id = -1;
      left.next = right.next;
      if (left.next >= 0) sym[static_cast<size_t>(left.next)].prev = c.pos;
      if (left.prev >= 0)
        if (const Merge* p = find_merge(sym[static_cast<size_t>(left.prev)].id, left.id)) queue.push({p->rank, left.prev, p->id});
      if (left.next >= 0)
        if (const Merge* n = find_merge(left.id, sym[static_cast<size_t>(left.next)].id)) queue.push({n->rank, c.pos, n->id});
    }
    for (int32_t i = 0; i >= 0; i = sym[static_cast<size_t>(i)].next) out.push_back(sym[static_cast<size_t>(i)].id);
  }

  /// One decoder of the file over the token strings, as the tokenizers library runs it.
  static void apply(const DecodeStep& d, std::vector<std::string>& toks) {
    switch (d.kind) {
      case DecodeStep::replace:
        for (std::string& t : toks) t = detail::bpe::replace_all(t, d.a, d.b);
        break;
      case DecodeStep::byte_fallback: {  // runs of "<0xNN>" -> their text; one U+FFFD per byte if not UTF-8
        std::vector<std::string> out;
        out.reserve(toks.size());
        std::string bytes;
        size_t run = 0;
        auto flush = [&] {
          if (run == 0) return;
          if (detail::bpe::valid_utf8(bytes)) out.push_back(bytes);
          else
            for (size_t k = 0; k < run; ++k) out.emplace_back("\xEF\xBF\xBD");
          bytes.clear();
          run = 0;
        };
        for (std::string& t : toks) {
          const int b = detail::bpe::byte_token_value(t);
          if (b >= 0) {
            bytes += static_cast<char>(static_cast<unsigned char>(b));
            ++run;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        toks = std::move(out);
        break;
      }
      case DecodeStep::fuse: {
        std::string all;
        for (const std::string& t : toks) all += t;
        toks.assign(1, std::move(all));
        break;
      }
      case DecodeStep::strip:  // up to `start` leading and `stop` trailing copies of the character, per token
        for (std::string& t : toks) {
          const size_t n = d.a.size();
          size_t b = 0, e = t.size();
          for (int64_t k = 0; k < d.start && e - b >= n && t.compare(b, n, d.a) == 0; ++k) b += n;
          for (int64_t k = 0; k < d.stop && e - b >= n && t.compare(e - n, n, d.a) == 0; ++k) e -= n;
          t = t.substr(b, e - b);
        }
        break;
      case DecodeStep::metaspace:
        for (size_t i = 0; i < toks.size(); ++i) {
          toks[i] = detail::bpe::replace_all(toks[i], d.a, " ");
          if (i == 0 && d.prepend && !toks[i].empty() && toks[i][0] == ' ') toks[i].erase(0, 1);
        }
        break;
    }
  }

  template <class Json>
  struct Reader;  // from_json's helpers (below)

  std::string source_;
  std::vector<std::string> tokens_;  // id -> token as the file writes it
  std::vector<uint8_t> special_;     // id -> an added token marked special
  std::unordered_map<std::string, int64_t, detail::bpe::StringHash, std::equal_to<>> ids_;  // token -> id
  std::unordered_map<uint32_t, int32_t> char_ids_;  // code point -> id of the one-character token
  std::unordered_map<uint64_t, Merge> merges_;      // (left id << 32 | right id) -> rank, merged id
  std::array<int32_t, 256> byte_ids_{};             // byte -> id of "<0xNN>", -1 where the vocabulary has none
  int64_t unk_ = -1, bos_ = -1, eos_ = -1;
  bool byte_fallback_ = false, fuse_unk_ = false;
  std::vector<Norm> normalizer_;
  Metaspace meta_;
  std::vector<int64_t> prefix_, suffix_;  // the post-processor's special tokens before and after the text
  std::vector<DecodeStep> decoder_;
  /// "▁" is a token and no token has a "▁" after another character, so no merge joins a word to
  /// the "▁" of the next: encode_piece may cut the text there (true of Llama-2's and Mistral's).
  bool words_ = false;
  static constexpr std::string_view kMeta = "\xE2\x96\x81";  // "▁" U+2581
};

// ---- reading tokenizer.json ------------------------------------------------------------------------

template <class Json>
struct BpeTokenizer::Reader {
  const std::string& source;
  BpeTokenizer& t;

  FormatError bad(const std::string& what) const { return FormatError(source + ": " + what); }
  static std::string found(const Json& v) {
    std::string s = v.dump();
    return s.size() > 80 ? s.substr(0, 77) + "..." : s;
  }
  const Json* member(const Json& obj, const char* key) const {
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  std::string string_at(const Json& obj, const char* key, const std::string& where) const {
    const Json* v = member(obj, key);
    if (v == nullptr || !v->is_string()) throw bad(where + "." + key + ": expected a string, found " + (v ? found(*v) : "nothing"));
    return v->template get<std::string>();
  }
  bool bool_at(const Json& obj, const char* key, const std::string& where, bool fallback) const {
    const Json* v = member(obj, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) throw bad(where + "." + key + ": expected true or false, found " + found(*v));
    return v->template get<bool>();
  }
  int64_t int_at(const Json& obj, const char* key, const std::string& where, int64_t lo, int64_t hi) const {
    const Json* v = member(obj, key);
    if (v == nullptr || !v->is_number_integer() || (v->is_number_unsigned() && v->template get<uint64_t>() > uint64_t(hi)) ||
        v->template get<int64_t>() < lo || v->template get<int64_t>() > hi)
      throw bad(where + "." + key + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "], found " + (v ? found(*v) : "nothing"));
    return v->template get<int64_t>();
  }
  /// One character (the Metaspace replacement, the Strip content), as UTF-8.
  std::string char_at(const Json& obj, const char* key, const std::string& where) const {
    std::string s = string_at(obj, key, where);
    if (!detail::bpe::valid_utf8(s) || detail::bpe::code_points(s) != 1)
      throw bad(where + "." + key + ": expected one character, found " + found(obj.at(key)));
    return s;
  }
  std::string type_of(const Json& obj, const std::string& where) const {
    if (!obj.is_object()) throw bad(where + ": expected an object or null, found " + found(obj));
    return string_at(obj, "type", where);
  }
  /// {"String": s} -> s; a regex pattern is not supported.
  std::string pattern_at(const Json& obj, const std::string& where) const {
    const Json* p = member(obj, "pattern");
    if (p != nullptr && p->is_object() && p->contains("String") && (*p)["String"].is_string()) {
      std::string s = (*p)["String"].template get<std::string>();
      if (!s.empty()) return s;
    }
    throw bad(where + ".pattern: expected {\"String\": \"...\"} (a non-empty plain string; regex patterns are not "
                      "supported), found " + (p ? found(*p) : "nothing"));
  }

  void normalizer(const Json& n, const std::string& where) {
    const std::string type = type_of(n, where);
    if (type == "Sequence") {
      const Json* list = member(n, "normalizers");
      if (list == nullptr || !list->is_array()) throw bad(where + ".normalizers: expected an array");
      for (size_t i = 0; i < list->size(); ++i) normalizer((*list)[i], where + ".normalizers[" + std::to_string(i) + "]");
    } else if (type == "Prepend") {
      t.normalizer_.push_back({true, string_at(n, "prepend", where), {}});
    } else if (type == "Replace") {
      t.normalizer_.push_back({false, pattern_at(n, where), string_at(n, "content", where)});
    } else {
      throw bad(where + ": type '" + type + "' is not supported (supported: Sequence, Prepend, Replace)");
    }
  }

  /// Metaspace's prepend: prepend_scheme "always" / "first" (the same here: one section) / "never",
  /// or the older add_prefix_space.
  bool prepend_scheme(const Json& m, const std::string& where) const {
    if (const Json* s = member(m, "prepend_scheme")) {
      const std::string v = s->is_string() ? s->template get<std::string>() : std::string();
      if (v == "always" || v == "first") return true;
      if (v == "never") return false;
      throw bad(where + ".prepend_scheme: expected \"always\", \"first\" or \"never\", found " + found(*s));
    }
    return bool_at(m, "add_prefix_space", where, true);
  }

  void pre_tokenizer(const Json& p, const std::string& where) {
    const std::string type = type_of(p, where);
    if (type == "Sequence") {
      const Json* list = member(p, "pretokenizers");
      if (list == nullptr || !list->is_array()) throw bad(where + ".pretokenizers: expected an array");
      for (size_t i = 0; i < list->size(); ++i) pre_tokenizer((*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]");
    } else if (type == "Metaspace") {
      if (t.meta_.on) throw bad(where + ": a second Metaspace pre-tokenizer is not supported");
      t.meta_.on = true;
      t.meta_.rep = char_at(p, "replacement", where);
      t.meta_.prepend = prepend_scheme(p, where);
      t.meta_.split = bool_at(p, "split", where, true);
    } else {
      throw bad(where + ": type '" + type + "' is not supported (supported: Metaspace; byte-level BPE is not)");
    }
  }

  void post_processor(const Json& p, const std::string& where) {
    const std::string type = type_of(p, where);
    if (type != "TemplateProcessing")
      throw bad(where + ": type '" + type + "' is not supported (supported: TemplateProcessing)");
    const Json* single = member(p, "single");
    if (single == nullptr || !single->is_array()) throw bad(where + ".single: expected an array");
    const Json* specials = member(p, "special_tokens");
    bool seen_text = false;
    for (size_t i = 0; i < single->size(); ++i) {
      const Json& item = (*single)[i];
      const std::string at = where + ".single[" + std::to_string(i) + "]";
      if (item.is_object() && item.contains("Sequence")) {
        seen_text = true;
      } else if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object()) {
        const std::string name = string_at(item["SpecialToken"], "id", at + ".SpecialToken");
        std::vector<int64_t> ids;
        if (specials != nullptr && specials->is_object() && specials->contains(name)) {
          const Json& s = (*specials)[name];
          const Json* list = s.is_object() ? member(s, "ids") : nullptr;
          if (list == nullptr || !list->is_array()) throw bad(where + ".special_tokens['" + name + "'].ids: expected an array of ids");
          for (const Json& id : *list) {
            if (!id.is_number_integer() || id.template get<int64_t>() < 0 || id.template get<int64_t>() >= t.vocab_size())
              throw bad(where + ".special_tokens['" + name + "'].ids: " + found(id) + " is not an id of the vocabulary [0, " +
                        std::to_string(t.vocab_size()) + ")");
            ids.push_back(id.template get<int64_t>());
          }
        } else {
          const int64_t id = t.token_id(name);
          if (id < 0) throw bad(at + ": special token '" + name + "' is neither in special_tokens nor in the vocabulary");
          ids.push_back(id);
        }
        (seen_text ? t.suffix_ : t.prefix_).insert((seen_text ? t.suffix_ : t.prefix_).end(), ids.begin(), ids.end());
      } else {
        throw bad(at + ": expected {\"SpecialToken\": ...} or {\"Sequence\": ...}, found " + found(item));
      }
    }
  }

  void decoder(const Json& d, const std::string& where) {
    const std::string type = type_of(d, where);
    using S = DecodeStep;
    if (type == "Sequence") {
      const Json* list = member(d, "decoders");
      if (list == nullptr || !list->is_array()) throw bad(where + ".decoders: expected an array");
      for (size_t i = 0; i < list->size(); ++i) decoder((*list)[i], where + ".decoders[" + std::to_string(i) + "]");
    } else if (type == "Replace") {
      t.decoder_.push_back({S::replace, pattern_at(d, where), string_at(d, "content", where)});
    } else if (type == "ByteFallback") {
      t.decoder_.push_back({S::byte_fallback, {}, {}});
    } else if (type == "Fuse") {
      t.decoder_.push_back({S::fuse, {}, {}});
    } else if (type == "Strip") {
      S s{S::strip, char_at(d, "content", where), {}};
      s.start = int_at(d, "start", where, 0, int64_t(1) << 30);
      s.stop = int_at(d, "stop", where, 0, int64_t(1) << 30);
      t.decoder_.push_back(s);
    } else if (type == "Metaspace") {
      S s{S::metaspace, char_at(d, "replacement", where), {}};
      s.prepend = prepend_scheme(d, where);
      t.decoder_.push_back(s);
    } else {
      throw bad(where + ": type '" + type + "' is not supported (supported: Sequence, Replace, ByteFallback, Fuse, Strip, Metaspace)");
    }
  }

  void read(const Json& j) {
    if (!j.is_object()) throw bad("expected a JSON object (a Hugging Face tokenizer.json), found " + found(j));
    const Json* m = member(j, "model");
    if (m == nullptr || !m->is_object())
      throw bad("no 'model' section (expected a Hugging Face tokenizer.json with a BPE model), found " + (m ? found(*m) : "nothing"));
    if (const Json* type = member(*m, "type")) {
      if (!type->is_string() || type->template get<std::string>() != "BPE")
        throw bad("model.type is " + found(*type) + ", expected \"BPE\" (the only model this tokenizer reads)");
    } else if (member(*m, "merges") == nullptr) {
      throw bad("model has no 'type' and no 'merges': expected a BPE model");
    }
    if (const Json* d = member(*m, "dropout"); d != nullptr && !(d->is_number() && d->template get<double>() == 0.0))
      throw bad("model.dropout is " + found(*d) + ": BPE-dropout is not supported (expected null)");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (const Json* v = member(*m, key); v != nullptr && !(v->is_string() && v->template get<std::string>().empty()))
        throw bad(std::string("model.") + key + " is " + found(*v) + ": not supported (expected null)");
    if (bool_at(*m, "ignore_merges", "model", false)) throw bad("model.ignore_merges is true: not supported (expected false)");
    t.byte_fallback_ = bool_at(*m, "byte_fallback", "model", false);
    t.fuse_unk_ = bool_at(*m, "fuse_unk", "model", false);

    // ---- the vocabulary and the added tokens: ids 0..N-1, each with one token
    const Json* vocab = member(*m, "vocab");
    if (vocab == nullptr || !vocab->is_object())
      throw bad("model.vocab: expected an object of token -> id, found " + (vocab ? found(*vocab) : "nothing"));
    if (vocab->empty()) throw bad("model.vocab is empty");
    constexpr int64_t max_id = (int64_t(1) << 31) - 2;
    std::vector<std::pair<int64_t, std::string>> entries;  // id, token
    entries.reserve(vocab->size());
    for (auto it = vocab->begin(); it != vocab->end(); ++it) {
      const Json& v = it.value();
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.template get<uint64_t>() > uint64_t(max_id)) ||
          v.template get<int64_t>() < 0 || v.template get<int64_t>() > max_id)
        throw bad("model.vocab: token " + detail::bpe::quoted(it.key()) + " has id " + found(v) +
                  ", expected an integer in [0, " + std::to_string(max_id) + "]");
      entries.emplace_back(v.template get<int64_t>(), it.key());
    }
    const size_t n_vocab = entries.size();
    std::vector<uint8_t> special;
    if (const Json* added = member(j, "added_tokens")) {
      if (!added->is_array()) throw bad("added_tokens: expected an array, found " + found(*added));
      for (size_t i = 0; i < added->size(); ++i) {
        const Json& a = (*added)[i];
        const std::string at = "added_tokens[" + std::to_string(i) + "]";
        if (!a.is_object()) throw bad(at + ": expected an object, found " + found(a));
        entries.emplace_back(int_at(a, "id", at, 0, max_id), string_at(a, "content", at));
        special.push_back(bool_at(a, "special", at, false) ? 1 : 0);
      }
    }
    int64_t n = 0;
    for (const auto& e : entries) n = std::max(n, e.first + 1);
    t.tokens_.assign(static_cast<size_t>(n), {});
    t.special_.assign(static_cast<size_t>(n), 0);
    std::vector<uint8_t> has(static_cast<size_t>(n), 0);
    for (size_t k = 0; k < entries.size(); ++k) {
      const auto& [id, tok] = entries[k];
      const auto u = static_cast<size_t>(id);
      const bool is_added = k >= n_vocab;
      if (has[u] && t.tokens_[u] != tok)
        throw bad(std::string(is_added ? "added_tokens: " : "model.vocab: ") + "id " + std::to_string(id) + " is given to both " +
                  detail::bpe::quoted(t.tokens_[u]) + " and " + detail::bpe::quoted(tok));
      if (!is_added && !t.ids_.emplace(tok, id).second) throw bad("model.vocab: token " + detail::bpe::quoted(tok) + " appears twice");
      if (is_added) {
        t.ids_.emplace(tok, id);  // a vocabulary token of the same text keeps its own id
        if (special[k - n_vocab]) t.special_[u] = 1;
      }
      t.tokens_[u] = tok;
      has[u] = 1;
    }
    for (size_t u = 0; u < has.size(); ++u)
      if (!has[u])
        throw bad("id " + std::to_string(u) + " has no token (expected the ids 0.." + std::to_string(n - 1) + " of " +
                  std::to_string(n) + " tokens, each in model.vocab or added_tokens)");

    // ---- what BPE looks up: characters, bytes and merges, in the model's vocabulary only
    std::unordered_map<std::string_view, int32_t> model_ids;
    model_ids.reserve(n_vocab);
    for (size_t k = 0; k < n_vocab; ++k) model_ids.emplace(entries[k].second, static_cast<int32_t>(entries[k].first));
    t.words_ = model_ids.count(kMeta) > 0;
    for (const auto& [tok, id] : model_ids) {
      if (tok.empty()) continue;
      const auto [cp, len] = detail::bpe::next_code_point(tok, 0);
      if (cp >= 0 && len == tok.size()) t.char_ids_.emplace(static_cast<uint32_t>(cp), id);
      for (size_t at = tok.find(kMeta, 1); t.words_ && at != std::string_view::npos; at = tok.find(kMeta, at + 1))
        if (at < kMeta.size() || tok.compare(at - kMeta.size(), kMeta.size(), kMeta) != 0) t.words_ = false;  // "x▁"
    }
    for (int b = 0; b < 256; ++b) {
      static const char* hex = "0123456789ABCDEF";
      const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      const auto it = model_ids.find(name);
      t.byte_ids_[static_cast<size_t>(b)] = it == model_ids.end() ? -1 : it->second;
    }
    if (const Json* unk = member(*m, "unk_token")) {
      if (!unk->is_string()) throw bad("model.unk_token: expected a string or null, found " + found(*unk));
      const auto it = model_ids.find(unk->template get<std::string>());
      if (it == model_ids.end()) throw bad("model.unk_token " + found(*unk) + " is not in model.vocab");
      t.unk_ = it->second;
    }
    const Json* merges = member(*m, "merges");
    if (merges != nullptr && !merges->is_array()) throw bad("model.merges: expected an array, found " + found(*merges));
    if (merges != nullptr) {
      t.merges_.reserve(merges->size());
      std::string joined;
      for (size_t i = 0; i < merges->size(); ++i) {
        const Json& e = (*merges)[i];
        const std::string at = "model.merges[" + std::to_string(i) + "]";
        std::string a, b;
        if (e.is_string()) {  // "a b": exactly one space (tokens hold "▁", not spaces)
          const std::string s = e.template get<std::string>();
          const size_t sp = s.find(' ');
          if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos || sp == 0 || sp + 1 == s.size())
            throw bad(at + ": expected two tokens separated by one space, found " + found(e));
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
          a = e[0].template get<std::string>();
          b = e[1].template get<std::string>();
        } else {
          throw bad(at + ": expected \"left right\" or [\"left\", \"right\"], found " + found(e));
        }
        const auto ia = model_ids.find(a), ib = model_ids.find(b);
        for (const auto& [it, tok] : {std::pair{ia, &a}, std::pair{ib, &b}})
          if (it == model_ids.end()) throw bad(at + " " + found(e) + ": " + detail::bpe::quoted(*tok) + " is not in model.vocab");
        joined = a + b;
        const auto ij = model_ids.find(joined);
        if (ij == model_ids.end())
          throw bad(at + " " + found(e) + ": the merged token " + detail::bpe::quoted(joined) + " is not in model.vocab");
        // a pair listed twice: the later rank, as in the tokenizers library
        t.merges_[static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32 | static_cast<uint32_t>(ib->second)] =
            Merge{static_cast<int32_t>(i), ij->second};
      }
    }

    // ---- the pipeline around the model
    if (const Json* v = member(j, "normalizer")) normalizer(*v, "normalizer");
    if (const Json* v = member(j, "pre_tokenizer")) pre_tokenizer(*v, "pre_tokenizer");
    if (const Json* v = member(j, "decoder")) decoder(*v, "decoder");
    const int64_t s = t.token_id("<s>");
    if (const Json* v = member(j, "post_processor")) post_processor(*v, "post_processor");
    else if (s >= 0) t.prefix_ = {s};  // no post-processor: BOS in front, as Llama's tokenizers put it
    t.bos_ = t.prefix_.empty() ? s : t.prefix_.front();
    t.eos_ = t.token_id("</s>");
  }
};

template <class Json>
BpeTokenizer BpeTokenizer::from_json(const Json& j, const std::string& source) {
  BpeTokenizer t;
  t.source_ = source;
  Reader<Json>{source, t}.read(j);
  return t;
}

}  // namespace ttt
