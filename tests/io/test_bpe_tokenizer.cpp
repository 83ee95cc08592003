// ttt::BpeTokenizer (io/bpe_tokenizer.hpp): a small tokenizer.json made here (merge order, byte
// fallback, unk, BOS, decode, the older Metaspace layout, every bad-input error), then the real
// Llama-2 and Mistral tokenizers against the ids their own JavaScript tokenizers gave for a few
// hundred strings (tests/io/data/*_expected.json, written by scripts/tokenizer_expected.mjs).
// The real files are in data/ (scripts/setup.sh --llama-tokenizer); without them those tests skip.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "ttt/io/bpe_tokenizer.hpp"

namespace test_bpe_tokenizer {

namespace fs = std::filesystem;
using ttt::BpeTokenizer;
using json = nlohmann::json;
using Ids = std::vector<int64_t>;

const std::string kSp = "\xE2\x96\x81";  // "▁" U+2581

/// A Llama-2-shaped tokenizer.json with a dozen tokens and merges, the 256 byte tokens after them.
json small_tokenizer() {
  json vocab = json::object();
  int id = 0;
  for (const std::string t : {"<unk>", "<s>", "</s>"}) vocab[t] = id++;
  for (const std::string& t : {kSp, std::string("a"), std::string("b"), std::string("c"), std::string("l"),
                              std::string("o"), std::string("w"), std::string("\xC3\xA9") /* é */, std::string("ab"),
                              std::string("bc"), std::string("abc"), kSp + "a", std::string("lo"), std::string("low"),
                              kSp + "low", std::string("aa"), "b" + kSp})
    vocab[t] = id++;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = id++;
  }
  // rank = position: "a b" before "b c" before "ab c" before "b ▁" before "▁ a" ...
  const json merges = {"a b", "b c", "ab c", "b " + kSp, kSp + " a", "l o", "lo w", kSp + " low", "a a"};
  const json added = json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                  {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                  {{"id", 2}, {"content", "</s>"}, {"special", true}}});
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", kSp}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", kSp}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merges}}}};
}

BpeTokenizer make(const json& j) { return BpeTokenizer::from_json(j, "small.json"); }

/// The ids of the tokens written `names` in `tok`.
Ids ids_of(const BpeTokenizer& tok, std::initializer_list<std::string> names) {
  Ids out;
  for (const std::string& n : names) {
    const int64_t id = tok.token_id(n);
    REQUIRE_MESSAGE(id >= 0, "no token " << n);
    out.push_back(id);
  }
  return out;
}

TEST_CASE("bpe tokenizer: merges by rank, leftmost first, over the whole text") {
  const BpeTokenizer tok = make(small_tokenizer());
  CHECK(tok.vocab_size() == 3 + 17 + 256);
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  CHECK(tok.unk() == 0);
  // "▁abc": a b (rank 0) first, then ab c (rank 2); "▁ a" (rank 4) never gets its turn
  CHECK(tok.encode("abc", false) == ids_of(tok, {kSp, "abc"}));
  // "▁bc": b c
  CHECK(tok.encode("bc", false) == ids_of(tok, {kSp, "bc"}));
  // "▁caaa": two candidates "a a" of the same rank: the leftmost merges first
  CHECK(tok.encode("caaa", false) == ids_of(tok, {kSp, "c", "aa", "a"}));
  // chains: l o, lo w, ▁ low
  CHECK(tok.encode("low", false) == ids_of(tok, {kSp + "low"}));
  // spaces: every space is a "▁"; the text is not split at them ("b ▁" merges across a space)
  CHECK(tok.encode("cb a", false) == ids_of(tok, {kSp, "c", "b" + kSp, "a"}));
  CHECK(tok.encode("a  a", false) == ids_of(tok, {kSp + "a", kSp, kSp + "a"}));
  CHECK(tok.encode(" ", false) == ids_of(tok, {kSp, kSp}));
  // BOS from the post-processor, also for the empty text (which gets no "▁")
  CHECK(tok.encode("abc") == Ids{1, tok.token_id(kSp), tok.token_id("abc")});
  CHECK(tok.encode("") == Ids{1});
  CHECK(tok.encode("", false).empty());
}

TEST_CASE("bpe tokenizer: byte fallback, unk, and bytes that are not UTF-8") {
  const BpeTokenizer tok = make(small_tokenizer());
  // "é" is a token; "☃" (E2 98 83) is not: its three bytes
  CHECK(tok.encode("\xC3\xA9\xE2\x98\x83", false) == ids_of(tok, {kSp, "\xC3\xA9", "<0xE2>", "<0x98>", "<0x83>"}));
  // a byte that starts no UTF-8 sequence, a cut sequence: byte tokens too
  CHECK(tok.encode("a\xFF", false) == ids_of(tok, {kSp + "a", "<0xFF>"}));
  CHECK(tok.encode("\xE2\x98", false) == ids_of(tok, {kSp, "<0xE2>", "<0x98>"}));

  json j = small_tokenizer();
  j["model"]["byte_fallback"] = false;
  const BpeTokenizer unk = make(j);
  CHECK(unk.encode("axxb", false) == ids_of(unk, {kSp + "a", "<unk>", "b"}));  // fuse_unk: one <unk>
  j["model"]["fuse_unk"] = false;
  CHECK(make(j).encode("axxb", false) == ids_of(unk, {kSp + "a", "<unk>", "<unk>", "b"}));
  // with byte fallback but a byte missing from the vocabulary: unk
  j = small_tokenizer();
  j["model"]["vocab"].erase("<0x83>");
  j["model"]["vocab"]["zz"] = tok.token_id("<0x83>");  // keep the ids dense
  CHECK(make(j).encode("\xE2\x98\x83", false) == ids_of(tok, {kSp, "<unk>"}));
  // no way to encode a character at all: an error naming it, not a silent drop
  j = small_tokenizer();
  j["model"]["byte_fallback"] = false;
  j["model"]["unk_token"] = nullptr;
  CHECK_THROWS_MENTIONING(ttt::Error, make(j).encode("ax", false), "small.json", "cannot encode 'x'", "unk_token");
}

TEST_CASE("bpe tokenizer: decode is the inverse, special tokens left out unless shown") {
  const BpeTokenizer tok = make(small_tokenizer());
  for (const std::string text : {"", "abc", "low low  low", " a", "  leading and trailing  ", "caaa\xC3\xA9\xE2\x98\x83 ab",
                                 "tab\tnew\nline", "\xF0\x9F\xA6\x99 llama"}) {
    CAPTURE(text);
    CHECK(tok.decode(tok.encode(text)) == text);
    CHECK(tok.decode(tok.encode(text, false)) == text);
  }
  const Ids a = ids_of(tok, {"<s>", kSp + "a", "</s>"});
  CHECK(tok.decode(a) == "a");
  CHECK(tok.decode(a, /*show_specials=*/true) == "<s> a</s>");
  // byte tokens that are not UTF-8: one U+FFFD per byte (the tokenizers library's ByteFallback)
  CHECK(tok.decode(ids_of(tok, {"<0xE2>", "<0x98>"})) == "\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(tok.decode(ids_of(tok, {"<0xE2>", "<0x98>", "<0x83>", "a"})) == "\xE2\x98\x83"
                                                                         "a");
  // only the one space of the prefix is stripped
  CHECK(tok.decode(ids_of(tok, {kSp, kSp, "a"})) == " a");
  CHECK(tok.token(tok.token_id("ab")) == "ab");
  CHECK(tok.is_special(1));
  CHECK_FALSE(tok.is_special(3));
  CHECK_THROWS_MENTIONING(ttt::Error, tok.decode(Ids{1, 5000}), "small.json", "token id 5000 at position 1",
                          "outside the vocabulary [0, 276)");
  CHECK_THROWS_MENTIONING(ttt::Error, tok.decode(Ids{-1}), "token id -1 at position 0");
  CHECK_THROWS_MENTIONING(ttt::Error, tok.token(276), "token id 276", "[0, 276)");
  tok.check_vocab(276);
  CHECK_THROWS_MENTIONING(ttt::Error, tok.check_vocab(259), "vocab_size 259", "276 tokens", "small.json");
}

TEST_CASE("bpe tokenizer: merges as pairs, and the older Metaspace layout, give the same ids") {
  const BpeTokenizer strings = make(small_tokenizer());
  json pairs = small_tokenizer();
  for (json& m : pairs["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    m = json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  // Metaspace: spaces -> "▁" and the prefix in the pre-tokenizer, not split at "▁"; its decoder
  json meta = small_tokenizer();
  meta["normalizer"] = nullptr;
  meta["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "first"}, {"split", false}};
  meta["decoder"] = {{"type", "Sequence"},
                     {"decoders",
                      {{{"type", "ByteFallback"}}, {{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", true}}}}};
  const BpeTokenizer p = make(pairs), m = make(meta);
  // (a text that starts with a space differs: Metaspace adds no "▁" in front of one, see below)
  for (const std::string text : {"", "abc", "caaa", "low low  low", "a  ", "cb a", "\xE2\x98\x83 ab"}) {
    CAPTURE(text);
    CHECK(p.encode(text) == strings.encode(text));
    CHECK(m.encode(text) == strings.encode(text));
    CHECK(m.decode(m.encode(text)) == text);
  }
  // split (the default of Metaspace): pieces that start at each "▁", so "b ▁" cannot merge
  meta["pre_tokenizer"].erase("split");
  CHECK(make(meta).encode("cb a", false) == ids_of(strings, {kSp, "c", "b", kSp + "a"}));
  // the older add_prefix_space: false; and a text that starts with a space: no second "▁"
  meta["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", false}};
  CHECK(make(meta).encode("abc", false) == ids_of(strings, {"abc"}));
  meta["pre_tokenizer"]["add_prefix_space"] = true;
  CHECK(make(meta).encode(" abc", false) == ids_of(strings, {kSp, "abc"}));
  // no post-processor: "<s>" in front all the same
  json bare = small_tokenizer();
  bare.erase("post_processor");
  CHECK(make(bare).encode("abc") == strings.encode("abc"));
}

/// `j` with a token of "▁" after another character (no merge makes it): then BPE runs over the
/// whole text, not word by word; the ids must not change.
json with_word_crossing_token(json j) {
  int64_t n = 0;  // the next id
  for (const auto& [token, id] : j["model"]["vocab"].items()) n = std::max(n, id.get<int64_t>() + 1);
  for (const json& a : j["added_tokens"]) n = std::max(n, a["id"].get<int64_t>() + 1);
  j["model"]["vocab"]["x" + kSp + "y"] = n;
  return j;
}

TEST_CASE("bpe tokenizer: cutting the text into words gives the ids of BPE over the whole text") {
  json j = small_tokenizer();  // without "b▁", no merge crosses into a word's "▁"
  const json id = j["model"]["vocab"]["b" + kSp];
  j["model"]["vocab"].erase("b" + kSp);
  j["model"]["vocab"]["bb"] = id;  // keep the ids dense
  j["model"]["merges"].erase(3);   // "b ▁"
  const BpeTokenizer words = make(j), whole = make(with_word_crossing_token(j));
  REQUIRE(words.cuts_words());
  REQUIRE_FALSE(whole.cuts_words());
  REQUIRE_FALSE(make(small_tokenizer()).cuts_words());
  for (const std::string text : {"", "abc", "abc abc  abc   abc", "low abc low abc low", " a", "cb a", "a\xE2\x96\x81" "b",
                                 "\xE2\x98\x83 ab \xE2\x98\x83 ab", "caaa caaa"}) {
    CAPTURE(text);
    CHECK(words.encode(text) == whole.encode(text));
  }
}

TEST_CASE("bpe tokenizer: bad files name the file and what was expected") {
  using ttt::FormatError;
  ttt_test::TempDir dir;
  const fs::path missing = dir / "nowhere" / "tokenizer.json";
  CHECK_THROWS_MENTIONING(FormatError, BpeTokenizer::load(missing), missing.string(), "cannot open");
  const fs::path not_json = dir / "not.json";
  std::ofstream(not_json) << "{ \"model\": ";
  CHECK_THROWS_MENTIONING(FormatError, BpeTokenizer::load(not_json), not_json.string(), "not valid JSON");
  const fs::path good = dir / "tokenizer.json";
  std::ofstream(good) << small_tokenizer().dump();
  CHECK(BpeTokenizer::load(good).encode("abc") == make(small_tokenizer()).encode("abc"));
  CHECK(BpeTokenizer::load(good).source() == good.string());

  CHECK_THROWS_MENTIONING(FormatError, make(json::array()), "small.json", "expected a JSON object");
  CHECK_THROWS_MENTIONING(FormatError, make(json{{"version", "1.0"}}), "small.json", "no 'model' section");
  auto broken = [](auto edit) {
    json j = small_tokenizer();
    edit(j);
    return j;
  };
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["type"] = "Unigram"; })),
                          "small.json: model.type is \"Unigram\"", "expected \"BPE\"");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["merges"].push_back("a zz"); })),
                          "model.merges[9] \"a zz\"", "'zz' is not in model.vocab");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["merges"].push_back(json{"q", "a"}); })),
                          "model.merges[9]", "'q' is not in model.vocab");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["merges"].push_back("c a"); })),
                          "model.merges[9] \"c a\"", "the merged token 'ca' is not in model.vocab");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["merges"][0] = "abc"; })),
                          "model.merges[0]", "expected two tokens separated by one space");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["merges"][0] = 7; })),
                          "model.merges[0]", "expected \"left right\" or [\"left\", \"right\"], found 7");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["vocab"] = json::array(); })),
                          "model.vocab: expected an object of token -> id");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["vocab"]["x"] = -3; })),
                          "model.vocab: token 'x' has id -3");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["vocab"]["x"] = 5; })),
                          "model.vocab: id 5 is given to both");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["vocab"]["x"] = 300; })),
                          "id 276 has no token", "ids 0..300 of 301 tokens");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["added_tokens"][1]["id"] = 7; })),
                          "added_tokens: id 7 is given to both", "'<s>'");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["unk_token"] = "<nope>"; })),
                          "model.unk_token \"<nope>\" is not in model.vocab");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["model"]["dropout"] = 0.1; })),
                          "model.dropout is 0.1", "not supported");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["normalizer"]["normalizers"][0] = {{"type", "NFKC"}}; })),
                          "normalizer.normalizers[0]: type 'NFKC' is not supported");
  CHECK_THROWS_MENTIONING(FormatError,
                          make(broken([](json& j) { j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", "\\s"}}; })),
                          "normalizer.normalizers[1].pattern", "regex patterns are not supported");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["pre_tokenizer"] = {{"type", "ByteLevel"}}; })),
                          "pre_tokenizer: type 'ByteLevel' is not supported");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["decoder"]["decoders"][3]["content"] = "ab"; })),
                          "decoder.decoders[3].content: expected one character");
  CHECK_THROWS_MENTIONING(FormatError, make(broken([](json& j) { j["post_processor"] = {{"type", "BertProcessing"}}; })),
                          "post_processor: type 'BertProcessing' is not supported");
  CHECK_THROWS_MENTIONING(FormatError,
                          make(broken([](json& j) { j["post_processor"]["special_tokens"]["<s>"]["ids"] = {99999}; })),
                          "99999 is not an id of the vocabulary");
}

// ---- the real tokenizers ------------------------------------------------------------------------

/// Every string of tests/io/data/<expected>: encode == the JavaScript tokenizer's ids (without and
/// with BOS), decode(ids) == its decoded text; then a text of about 1 MB round-trips.
void check_against_javascript(const std::string& name, const std::string& expected) {
  const fs::path file = fs::path(TTT_DATA_DIR) / name / "tokenizer.json";
  if (!fs::exists(file)) {
    MESSAGE("skipped: no " << file.string() << " (scripts/setup.sh --llama-tokenizer writes it)");
    return;
  }
  const BpeTokenizer tok = BpeTokenizer::load(file);
  const BpeTokenizer whole = BpeTokenizer::from_json(with_word_crossing_token(json::parse(ttt::io::read_file(file))), "whole");
  CHECK(tok.cuts_words());
  CHECK_FALSE(whole.cuts_words());
  CHECK(tok.vocab_size() == 32000);
  CHECK(tok.bos() == 1);
  CHECK(tok.eos() == 2);
  const json cases = json::parse(ttt::io::read_file(fs::path(TTT_TEST_DATA_DIR) / expected)).at("cases");
  int checked = 0, round_trips = 0;
  std::string big;
  for (const json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    const Ids ids = c.at("ids").get<Ids>();
    const std::string decoded = c.contains("decoded") ? c.at("decoded").get<std::string>() : text;
    CAPTURE(text);
    CHECK(tok.encode(text, false) == ids);
    Ids with_bos{1};
    with_bos.insert(with_bos.end(), ids.begin(), ids.end());
    CHECK(tok.encode(text) == with_bos);
    CHECK(tok.decode(ids) == decoded);
    CHECK(tok.decode(with_bos) == decoded);
    CHECK(whole.encode(text, false) == ids);
    ++checked;
    if (decoded == text) {
      ++round_trips;
      big += text;
      big += '\n';
    }
  }
  MESSAGE(name << ": " << checked << " strings checked against " << expected << " (" << round_trips << " round-trip)");
  CHECK(checked >= 300);

  while (big.size() < (1u << 20)) big += big;
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok.encode(big);
  const auto t1 = std::chrono::steady_clock::now();
  const std::string back = tok.decode(ids);
  const auto t2 = std::chrono::steady_clock::now();
  CHECK(back == big);
  CHECK(whole.encode(big) == ids);  // BPE over the whole megabyte at once: the same ids
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  MESSAGE(name << ": " << big.size() << " bytes -> " << ids.size() << " tokens: encode " << ms(t0, t1) << " ms, decode "
               << ms(t1, t2) << " ms");
}

TEST_CASE("bpe tokenizer: Llama-2 (data/llama2) gives llama-tokenizer-js's ids") {
  check_against_javascript("llama2", "llama2_expected.json");
}

TEST_CASE("bpe tokenizer: Mistral (data/mistral) gives transformers.js's ids") {
  check_against_javascript("mistral", "mistral_expected.json");
}

TEST_CASE("bpe tokenizer: Llama-2 in the older Metaspace layout gives the same ids") {
  const fs::path file = fs::path(TTT_DATA_DIR) / "llama2" / "tokenizer.json";
  if (!fs::exists(file)) {
    MESSAGE("skipped: no " << file.string() << " (scripts/setup.sh --llama-tokenizer writes it)");
    return;
  }
  json j = json::parse(ttt::io::read_file(file));
  const BpeTokenizer tok = BpeTokenizer::from_json(j, file.string());
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", true}, {"split", false}};
  j["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "ByteFallback"}}, {{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", true}}}}};
  const BpeTokenizer meta = BpeTokenizer::from_json(j, "metaspace");
  const json cases = json::parse(ttt::io::read_file(fs::path(TTT_TEST_DATA_DIR) / "llama2_expected.json")).at("cases");
  int checked = 0;
  for (const json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    // Metaspace puts no "▁" in front of a text that starts with one (or with a space)
    if (text.starts_with(' ') || text.starts_with(kSp)) continue;
    CAPTURE(text);
    CHECK(meta.encode(text) == tok.encode(text));
    ++checked;
  }
  CHECK(checked >= 250);
}

}  // namespace test_bpe_tokenizer
