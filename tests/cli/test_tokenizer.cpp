#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <ttt/io/tokenizer.hpp>

TEST_CASE("ByteTokenizer: every byte string round-trips") {
  ttt::ByteTokenizer tok;
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const std::vector<int64_t> ids = tok.encode(all);
  REQUIRE(ids.size() == 256);
  for (int b = 0; b < 256; ++b) CHECK(ids[size_t(b)] == b);
  CHECK(tok.decode(ids) == all);

  const std::string utf8 = "h\xC3\xA9llo, \xE4\xB8\x96\xE7\x95\x8C";  // "héllo, 世界"
  CHECK(tok.encode(utf8).size() == utf8.size());
  CHECK(tok.decode(tok.encode(utf8)) == utf8);
  CHECK(tok.encode("").empty());
  CHECK(tok.decode(std::vector<int64_t>{}).empty());
}

TEST_CASE("ByteTokenizer: special tokens") {
  ttt::ByteTokenizer tok;
  CHECK(ttt::ByteTokenizer::vocab_size == 259);
  const std::vector<int64_t> with_bos = tok.encode("ab", true);
  CHECK(with_bos == std::vector<int64_t>{256, 97, 98});
  const std::vector<int64_t> ids = {256, 104, 105, 257, 258, 300, -1};
  CHECK(tok.decode(ids) == "hi");
  CHECK(tok.decode(ids, true) == "<bos>hi<eos><pad><300><-1>");
  CHECK(tok.is_special(257));
  CHECK_FALSE(tok.is_special(255));
}

TEST_CASE("ByteTokenizer: a vocabulary under 256 is refused with a clear message") {
  try {
    ttt::ByteTokenizer::check_vocab(97);
    FAIL("no error");
  } catch (const ttt::Error& e) {
    CHECK(std::string(e.what()) == "vocab_size 97 is too small for the byte-level tokenizer (needs >= 256)");
  }
  CHECK_NOTHROW(ttt::ByteTokenizer::check_vocab(256));
  CHECK_NOTHROW(ttt::ByteTokenizer::check_vocab(259));
}
