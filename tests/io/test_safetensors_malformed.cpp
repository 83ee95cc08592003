// Every way a safetensors file can be malformed gives a FormatError that names the file and says
// what is wrong; mutated and truncated files never crash.
#include <cstdint>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "helpers.hpp"
#include "ttt/io/safetensors.hpp"

namespace test_safetensors_malformed {

using ttt::io::SafeTensors;
using ttt_test::st_file;
using ttt_test::with_length;

constexpr const char* src = "bad.safetensors";

SafeTensors parse(const std::string& bytes) { return SafeTensors::parse(bytes, src); }

/// One F32 tensor "t" of shape `shape` at `offsets`, with `data_size` data bytes.
std::string one(const std::string& shape, const std::string& offsets, size_t data_size, const char* dtype = "F32") {
  return st_file(R"({"t":{"dtype":")" + std::string(dtype) + R"(","shape":)" + shape + R"(,"data_offsets":)" +
                     offsets + "}}",
                 std::string(data_size, '\0'));
}

TEST_CASE("malformed: too short for the length field") {
  for (size_t n = 0; n < 8; ++n)
    CHECK_THROWS_MENTIONING(ttt::FormatError, parse(std::string(n, '\0')), src, "shorter than");
}

TEST_CASE("malformed: header length") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(100, "{}")), src, "larger than the file");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(3, "{}")), src, "larger than the file");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(uint64_t(1) << 40, "{}")), src, "absurdly large");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(~uint64_t(0), "{}")), src, "absurdly large");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(100'000'001, "{}")), src, "absurdly large");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(with_length(0, "")), src, "header");
}

TEST_CASE("malformed: header is not a JSON object") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("{abc")), src, "not valid JSON");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("{}x")), src, "not valid JSON");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("{\"\xff\":1}")), src, "not valid JSON");  // bad UTF-8
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(std::string("{}\0", 3))), src, "not valid JSON", "NUL");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(std::string("{} \0 junk", 8))), src, "NUL");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("[1, 2]")), src, "header", "'{'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("  {}")), src, "header", "'{'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("\"text\"")), src, "header");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(std::string(200, '{'))), src, "header");
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(st_file(R"({"t":{"dtype":"F32","shape":[[[[[[[[[[[1]]]]]]]]]],"data_offsets":[0,4]}})")),
                          src, "nests deeper");
}

TEST_CASE("malformed: entries and fields") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"t":5})")), src, "'t'", "must be an object");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"t":[]})")), src, "'t'", "must be an object");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", "abcd")),
                          src, "'t'", "missing field 'dtype'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", "abcd")),
                          src, "'t'", "missing field 'shape'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"t":{"dtype":"F32","shape":[1]}})", "abcd")), src,
                          "'t'", "missing field 'data_offsets'");
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(st_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", "abcd")),
                          src, "'t'", "unknown field 'extra'");

  auto typed = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return st_file(R"({"t":{"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}",
                   "abcd");
  };
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("5", "[1]", "[0,4]")), src, "'dtype' must be a string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("null", "[1]", "[0,4]")), src, "'dtype' must be a string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "1", "[0,4]")), src, "'shape' must be an array");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "{}", "[0,4]")), src, "'shape' must be an array");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1.0]", "[0,4]")), src, "'shape'", "integers");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[\"1\"]", "[0,4]")), src, "'shape'", "integers");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[true]", "[0,4]")), src, "'shape'", "integers");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "[0]")), src, "'data_offsets'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "[0,4,8]")), src, "'data_offsets'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "{}")), src, "'data_offsets'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "[0,4.0]")), src, "'data_offsets'",
                          "non-negative integers");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "[\"0\",4]")), src, "'data_offsets'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(typed("\"F32\"", "[1]", "[-4,4]")), src, "'data_offsets'",
                          "negative");
}

TEST_CASE("malformed: dtype and shape values") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[1]", "[0,1]", 1, "F8_E4M3")), src, "unknown dtype 'F8_E4M3'",
                          "F32", "BF16", "BOOL");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[1]", "[0,4]", 4, "f32")), src, "unknown dtype");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[-1]", "[0,4]", 4)), src, "'t'", "negative");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[2,-2]", "[0,0]", 0)), src, "negative");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[18446744073709551615]", "[0,4]", 4)), src, "too large");
  // Element counts and byte counts that overflow 64 bits.
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[4294967296,4294967296]", "[0,4]", 4)), src, "overflows");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[9223372036854775807,2]", "[0,4]", 4)), src, "overflows");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[4611686018427387904]", "[0,4]", 4)), src, "overflows");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[2305843009213693952]", "[0,0]", 0, "F64")), src, "overflows");
}

TEST_CASE("malformed: offsets") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[2]", "[0,4]", 4)), src, "'t'", "needs 8 bytes");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[1]", "[0,8]", 8)), src, "'t'", "needs 4 bytes");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[0]", "[8,4]", 8)), src, "'t'", "begin > end");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[2]", "[0,8]", 4)), src, "'t'", "past the end");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(one("[1]", "[18446744073709551612,18446744073709551615]", 4, "U8")),
                          src, "needs 1 bytes");
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(one("[1]", "[18446744073709551611,18446744073709551615]", 4)), src, "past the end");
}

TEST_CASE("malformed: the data buffer must be exactly the tensors") {
  auto two = [](const std::string& a, const std::string& b, size_t data) {
    return st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":)" + a +
                       R"(},"b":{"dtype":"F32","shape":[2],"data_offsets":)" + b + "}}",
                   std::string(data, '\0'));
  };
  CHECK_NOTHROW(parse(two("[0,8]", "[8,16]", 16)));
  CHECK_NOTHROW(parse(two("[8,16]", "[0,8]", 16)));
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(two("[0,8]", "[4,12]", 12)), src, "'a' and 'b' overlap");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(two("[0,8]", "[0,8]", 8)), src, "overlap");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(two("[0,8]", "[12,20]", 20)), src, "not covered", "[8, 12)");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(two("[4,12]", "[12,20]", 20)), src, "not covered", "[0, 4)");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(two("[0,8]", "[8,16]", 17)), src, "data past the end");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file("{}", "x")), src, "data past the end");
  // A zero-size tensor inside another one overlaps it.
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                        R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                                        std::string(8, '\0'))),
                          src, "overlap");
}

TEST_CASE("malformed: duplicate keys and metadata") {
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(st_file(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                        R"("t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                                        "abcd")),
                          src, "duplicate key 't'");
  CHECK_THROWS_MENTIONING(ttt::FormatError,
                          parse(st_file(R"({"t":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                                        "abcd")),
                          src, "duplicate key 'dtype'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":{"k":"a","k":"b"}})")), src,
                          "duplicate key 'k'");
  // The same key in two different objects is fine.
  CHECK_NOTHROW(parse(st_file(R"({"__metadata__":{"dtype":"x"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                              "abcd")));

  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":{"k":1}})")), src, "__metadata__",
                          "'k'", "must be a string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":{"k":null}})")), src, "must be a string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":{"k":["a"]}})")), src, "must be a string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":"x"})")), src, "__metadata__",
                          "object");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(st_file(R"({"__metadata__":[]})")), src, "__metadata__");
}

TEST_CASE("every single-byte mutation of a small file parses or throws FormatError") {
  ttt::io::SafeTensorsWriter w;
  w.add("a", {2, 2}, std::vector<float>{1, 2, 3, 4});
  w.add_int64("b", {3}, std::vector<int64_t>{1, 2, 3});
  w.add_bf16("c", {1}, std::vector<float>{1});
  w.add_f16("d", {2}, std::vector<float>{1, 2});
  w.set_metadata("m", "v");
  const std::string good = w.serialize();
  const unsigned char values[] = {0x00, 0x01, 0x20, '"', '-', '0', '9', '[', ']', '{', '}', ',', ':', 0x7F, 0xFF};
  int parsed = 0, rejected = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (unsigned char v : values) {
      std::string bytes = good;
      bytes[i] = static_cast<char>(v);
      try {
        const SafeTensors st = SafeTensors::parse(bytes, src);
        for (const auto& name : st.names()) {  // whatever was accepted must be readable
          const auto& t = st.info(name);
          CHECK(st.raw(name).size() == t.nbytes());
          CHECK(t.nbytes() == uint64_t(t.numel()) * ttt::io::dtype_size(t.dtype));
        }
        ++parsed;
      } catch (const ttt::FormatError& e) {
        CHECK(std::string(e.what()).rfind(src, 0) == 0);
        ++rejected;
      }
    }
  }
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

}  // namespace test_safetensors_malformed
