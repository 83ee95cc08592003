// SafeTensorsWriter -> SafeTensors round trips for every dtype, the reader's checked accessors,
// and the writer's own checks.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include "helpers.hpp"
#include "ttt/io/safetensors.hpp"

namespace test_safetensors {

using ttt::io::DType;
using ttt::io::SafeTensors;
using ttt::io::SafeTensorsWriter;

template <class T>
std::string le_bytes(const std::vector<T>& v) {
  std::string out;
  for (T x : v) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &x, sizeof(T));  // tests run on little-endian hosts
    out.append(reinterpret_cast<const char*>(b), sizeof(T));
  }
  return out;
}

nlohmann::json header_of(const std::string& file) {
  return nlohmann::json::parse(file.substr(8, ttt_test::header_length(file)));
}

TEST_CASE("dtype names, sizes and parsing") {
  for (DType d : ttt::io::all_dtypes) CHECK(ttt::io::parse_dtype(ttt::io::dtype_name(d)) == d);
  CHECK(ttt::io::dtype_size(DType::F64) == 8);
  CHECK(ttt::io::dtype_size(DType::BF16) == 2);
  CHECK(ttt::io::dtype_size(DType::BOOL) == 1);
  CHECK_THROWS_MENTIONING(ttt::FormatError, ttt::io::parse_dtype("F8_E4M3"), "F8_E4M3", "F32", "BF16", "BOOL");
  CHECK_THROWS_AS(ttt::io::parse_dtype("f32"), ttt::FormatError);  // case matters, as in the format
}

TEST_CASE("round trip of every dtype") {
  SafeTensorsWriter w;
  const std::vector<float> f32 = {1.5f, -2.25f, 0.0f, 3.0e38f, -1e-40f, std::numeric_limits<float>::infinity()};
  const std::vector<double> f64 = {1.0, -0.1, 1e300, -1e300, 0x1.ffffffp127, 0x1.fffffefp127, 0x1.fffffep127, 5e-324};
  const std::vector<float> f16 = {1.0f, -2.0f, 0.5f, 65504.0f, 0x1p-24f, -0.0f};  // all exact in F16
  const std::vector<float> bf16 = {1.0f, -2.0f, 3.140625f, 0x1p-133f, 0x1.FEp127f, -0.0f};  // all exact in BF16
  const std::vector<int64_t> i64 = {0, -1, std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::min()};
  const std::vector<int32_t> i32 = {0, -1, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()};
  const std::vector<int16_t> i16 = {0, -1, 32767, -32768};
  const std::vector<int8_t> i8 = {0, -1, 127, -128};
  const std::vector<uint8_t> u8 = {0, 1, 128, 255};
  const std::vector<uint8_t> boolean = {0, 1, 1, 0};
  w.add("f32", {2, 3}, f32);
  w.add_f64("f64", {4, 2}, f64);
  w.add_f16("f16", {6}, f16);
  w.add_bf16("bf16", {1, 6}, bf16);
  w.add_int64("i64", {4}, i64);
  w.add_raw("i32", DType::I32, {2, 2}, le_bytes(i32));
  w.add_raw("i16", DType::I16, {4}, le_bytes(i16));
  w.add_raw("i8", DType::I8, {4, 1}, le_bytes(i8));
  w.add_raw("u8", DType::U8, {4}, le_bytes(u8));
  w.add_raw("bool", DType::BOOL, {4}, le_bytes(boolean));
  w.add("scalar", {}, std::vector<float>{42.0f});
  w.add("empty", {0, 5}, std::vector<float>{});
  w.set_metadata("format", "pt");
  w.set_metadata("note", "round trip");
  CHECK(w.size() == 12);

  const std::string bytes = w.serialize();
  const SafeTensors st = SafeTensors::parse(bytes, "mem.safetensors");
  CHECK(st.size() == 12);
  CHECK(st.names() == std::vector<std::string>{"bf16", "bool", "empty", "f16", "f32", "f64", "i16", "i32", "i64",
                                               "i8", "scalar", "u8"});
  CHECK(st.metadata().at("format") == "pt");
  CHECK(st.metadata().at("note") == "round trip");

  CHECK(st.info("f32").dtype == DType::F32);
  CHECK(st.info("f32").shape == std::vector<int64_t>{2, 3});
  CHECK(st.read_float("f32") == f32);
  CHECK(st.read_float("f32", {2, 3}) == f32);

  const auto f64r = st.read_float("f64");
  REQUIRE(f64r.size() == 8);
  CHECK(f64r[0] == 1.0f);
  CHECK(f64r[1] == -0.1f);
  CHECK(f64r[2] == std::numeric_limits<float>::infinity());   // out of float range
  CHECK(f64r[3] == -std::numeric_limits<float>::infinity());
  CHECK(f64r[4] == std::numeric_limits<float>::infinity());   // exactly FLT_MAX + half ulp: tie to inf
  CHECK(f64r[5] == std::numeric_limits<float>::max());        // just below the tie
  CHECK(f64r[6] == std::numeric_limits<float>::max());
  CHECK(f64r[7] == 0.0f);
  CHECK(st.raw("f64") == le_bytes(f64));

  CHECK(st.read_float("f16") == f16);
  CHECK(std::signbit(st.read_float("f16")[5]));
  CHECK(st.info("f16").dtype == DType::F16);
  CHECK(st.read_float("bf16") == bf16);
  CHECK(st.info("bf16").dtype == DType::BF16);

  CHECK(st.read_int("i64") == i64);
  CHECK(st.read_int("i32") == std::vector<int64_t>(i32.begin(), i32.end()));
  CHECK(st.read_int("i16") == std::vector<int64_t>(i16.begin(), i16.end()));
  CHECK(st.read_int("i8", {4, 1}) == std::vector<int64_t>(i8.begin(), i8.end()));
  CHECK(st.read_int("u8") == std::vector<int64_t>(u8.begin(), u8.end()));
  CHECK(st.info("bool").dtype == DType::BOOL);
  CHECK(st.raw("bool") == le_bytes(boolean));

  CHECK(st.info("scalar").shape.empty());
  CHECK(st.info("scalar").numel() == 1);
  CHECK(st.read_float("scalar") == std::vector<float>{42.0f});
  CHECK(st.info("empty").numel() == 0);
  CHECK(st.read_float("empty", {0, 5}).empty());

  // Re-serialising what was read gives the same file.
  SafeTensorsWriter again;
  for (const auto& name : st.names()) {
    const auto& t = st.info(name);
    again.add_raw(name, t.dtype, t.shape, st.raw(name));
  }
  for (const auto& [k, v] : st.metadata()) again.set_metadata(k, v);
  CHECK(again.serialize() == bytes);
}

TEST_CASE("writer layout: padded header, sorted contiguous offsets") {
  SafeTensorsWriter w;
  w.add("b", {3}, std::vector<float>{1, 2, 3});
  w.add("a", {1}, std::vector<float>{4});
  w.add_int64("c", {2}, std::vector<int64_t>{5, 6});
  const std::string bytes = w.serialize();
  const uint64_t n = ttt_test::header_length(bytes);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 4 + 12 + 16);
  CHECK(bytes[8] == '{');
  const auto h = header_of(bytes);
  CHECK(h["a"]["data_offsets"] == nlohmann::json::array({0, 4}));
  CHECK(h["b"]["data_offsets"] == nlohmann::json::array({4, 16}));
  CHECK(h["c"]["data_offsets"] == nlohmann::json::array({16, 32}));
  CHECK(h["c"]["dtype"] == "I64");
  CHECK_FALSE(h.contains("__metadata__"));  // only written when set

  // An empty file is valid too.
  const SafeTensors empty = SafeTensors::parse(SafeTensorsWriter().serialize(), "empty");
  CHECK(empty.size() == 0);
  CHECK(empty.names().empty());
}

TEST_CASE("writer checks its inputs") {
  SafeTensorsWriter w;
  const std::vector<float> six(6, 1.0f);
  CHECK_THROWS_MENTIONING(ttt::ShapeError, w.add("w", {2, 2}, six), "'w'", "[2, 2]", "4", "6");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, w.add("neg", {-2, -3}, six), "'neg'", "negative");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, w.add_raw("r", DType::I32, {2}, "abc"), "'r'", "I32");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, w.add_raw("r", DType::I32, {2}, "abcd"), "'r'", "2 elements");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, w.add("huge", {int64_t(1) << 40, int64_t(1) << 40}, six), "'huge'",
                          "too many");
  w.add("w", {2, 3}, six);
  CHECK_THROWS_MENTIONING(ttt::FormatError, w.add("w", {6}, six), "'w'", "duplicate");
  CHECK_THROWS_MENTIONING(ttt::FormatError, w.add("__metadata__", {6}, six), "reserved");
  CHECK(w.size() == 1);  // failed adds leave nothing behind

  SafeTensorsWriter bad_utf8;
  bad_utf8.add(std::string("\xff\xfe"), {1}, std::vector<float>{1});
  CHECK_THROWS_AS((void)bad_utf8.serialize(), ttt::FormatError);
}

TEST_CASE("reader accessors are checked") {
  SafeTensorsWriter w;
  w.add("w", {2, 3}, std::vector<float>(6, 0.5f));
  w.add_int64("ids", {2}, std::vector<int64_t>{1, 2});
  w.add_raw("flag", DType::BOOL, {1}, std::string(1, '\1'));
  const SafeTensors st = SafeTensors::parse(w.serialize(), "mem.safetensors");
  CHECK(st.source() == "mem.safetensors");
  CHECK(st.contains("w"));
  CHECK_FALSE(st.contains("zz"));

  CHECK(ttt_test::message_of<ttt::FormatError>([&] { (void)st.info("zz"); }) == "mem.safetensors: no tensor 'zz'");
  CHECK_THROWS_AS((void)st.read_float("zz"), ttt::FormatError);
  CHECK_THROWS_AS((void)st.raw("zz"), ttt::FormatError);

  CHECK(ttt_test::message_of<ttt::ShapeError>([&] { (void)st.read_float("w", {3, 2}); }) ==
        "mem.safetensors: tensor 'w' has shape [2, 3], expected [3, 2]");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, st.read_int("ids", {1, 2}), "'ids'", "[2]", "[1, 2]");

  CHECK_THROWS_MENTIONING(ttt::FormatError, st.read_float("ids"), "mem.safetensors", "'ids'", "I64", "F32");
  CHECK_THROWS_MENTIONING(ttt::FormatError, st.read_int("w"), "mem.safetensors", "'w'", "F32", "I64");
  CHECK_THROWS_MENTIONING(ttt::FormatError, st.read_float("flag"), "'flag'", "BOOL");
  CHECK_THROWS_MENTIONING(ttt::FormatError, st.read_int("flag"), "'flag'", "BOOL");
}

TEST_CASE("save and load through a file") {
  ttt_test::TempDir dir;
  SafeTensorsWriter w;
  w.add("x", {2}, std::vector<float>{1.0f, 2.0f});
  w.set_metadata("k", "v");
  const auto p = dir / "x.safetensors";
  w.save(p);
  const auto st = SafeTensors::load(p);
  CHECK(st.source() == p.string());
  CHECK(st.read_float("x", {2}) == std::vector<float>{1.0f, 2.0f});
  CHECK(st.metadata().at("k") == "v");
  CHECK_THROWS_MENTIONING(ttt::FormatError, SafeTensors::load(dir / "missing.safetensors"), "missing.safetensors");
}

TEST_CASE("accepted header variants") {
  // Trailing spaces (padding), zero-size tensors sharing an offset, unaligned data, keys in any order.
  const std::string header =
      R"({"__metadata__":{"a":"b"},"z":{"shape":[0],"data_offsets":[0,0],"dtype":"F32"},)"
      R"("y":{"dtype":"F64","shape":[1],"data_offsets":[1,9]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   )";
  std::string data(9, '\0');
  data[0] = 7;
  const double v = -3.5;
  std::memcpy(&data[1], &v, 8);
  const SafeTensors st = SafeTensors::parse(ttt_test::st_file(header, data), "variants");
  CHECK(st.read_int("x") == std::vector<int64_t>{7});
  CHECK(st.read_float("y") == std::vector<float>{-3.5f});
  CHECK(st.read_float("z").empty());
  CHECK(st.metadata().size() == 1);
}

}  // namespace test_safetensors
