// Checkpoint folders as Hugging Face publishes them (io/checkpoint_weights.hpp): one
// model.safetensors, or shards listed by model.safetensors.index.json, read as one SafeTensors;
// a pytorch_model.bin refused with the conversion; every inconsistency of index and shards an
// error naming the file.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "helpers.hpp"
#include "ttt/io/checkpoint_weights.hpp"

namespace test_checkpoint_weights {

namespace fs = std::filesystem;
using ttt::FormatError;
using ttt::io::SafeTensorsWriter;
using ttt_test::TempDir;

void put(const fs::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary);
  f << s;
}

const std::vector<float> kA = {1, 2, 3, 4, 5, 6}, kB = {-1, 0.5f}, kC = {7};

/// Tensors a [2, 3] F32, b [2] BF16, c [] I64 (as 7), split: a in shard 1, b and c in shard 2.
void write_shards(const fs::path& dir, const std::string& index_json) {
  SafeTensorsWriter s1, s2;
  s1.add("a", {2, 3}, kA);
  s2.add_bf16("b", {2}, kB);
  const std::vector<int64_t> c = {7};
  s2.add_int64("c", {}, c);
  put(dir / "model-00001-of-00002.safetensors", s1.serialize());
  put(dir / "model-00002-of-00002.safetensors", s2.serialize());
  put(dir / "model.safetensors.index.json", index_json);
}

const std::string kIndex = R"({"metadata": {"total_size": 36}, "weight_map": {
  "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
  "c": "model-00002-of-00002.safetensors"}})";

std::string error_of(const fs::path& dir) {
  return ttt_test::message_of<FormatError>([&] { ttt::io::load_checkpoint_weights(dir); });
}

TEST_CASE("checkpoint weights: shards read as one, equal to the single file; extra files ignored") {
  TempDir t;
  write_shards(t.path, kIndex);
  put(t.path / "generation_config.json", R"({"do_sample": true})");
  const auto st = ttt::io::load_checkpoint_weights(t.path);
  CHECK(st.names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(st.read_float("a", {2, 3}) == kA);
  CHECK(st.read_float("b") == kB);
  CHECK(st.read_int("c") == std::vector<int64_t>{7});
  CHECK(st.info("b").dtype == ttt::io::DType::BF16);

  TempDir one;  // the same tensors in one model.safetensors, which wins over an index beside it
  SafeTensorsWriter w;
  w.add("a", {2, 3}, kA);
  put(one.path / "model.safetensors", w.serialize());
  put(one.path / "model.safetensors.index.json", "not json: never read");
  CHECK(ttt::io::load_checkpoint_weights(one.path).names() == std::vector<std::string>{"a"});
}

TEST_CASE("checkpoint weights: a missing shard, a tensor in the wrong shard, a bad index: errors naming the file") {
  TempDir t;
  write_shards(t.path, kIndex);
  fs::remove(t.path / "model-00002-of-00002.safetensors");
  CHECK(error_of(t.path).find("model-00002-of-00002.safetensors: no such file") != std::string::npos);

  write_shards(t.path, R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                          "c": "model-00002-of-00002.safetensors"}})");
  const std::string moved = error_of(t.path);
  CHECK(moved.find("model-00001-of-00002.safetensors: no tensor 'b'") != std::string::npos);

  write_shards(t.path, R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
  CHECK(error_of(t.path).find("tensor 'b' is not in model.safetensors.index.json") != std::string::npos);

  write_shards(t.path, R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  CHECK(error_of(t.path).find("is not a file name in the checkpoint folder") != std::string::npos);

  write_shards(t.path, "{\"weight_map\": ");
  CHECK(error_of(t.path).find("model.safetensors.index.json: not valid JSON") != std::string::npos);
  write_shards(t.path, R"({"metadata": {}})");
  CHECK(error_of(t.path).find("non-empty \"weight_map\"") != std::string::npos);
  write_shards(t.path, R"({"weight_map": {"a": 3}})");
  CHECK(error_of(t.path).find("weight_map[\"a\"] is not a file name") != std::string::npos);
}

TEST_CASE("checkpoint weights: pytorch_model.bin is refused with the conversion; an empty folder says what it expected") {
  TempDir t;
  CHECK(error_of(t.path).find("model.safetensors: no such file (nor model.safetensors.index.json") != std::string::npos);
  put(t.path / "pytorch_model.bin", "PK\x03\x04 pickle");
  const std::string e = error_of(t.path);
  CHECK(e.find("pytorch_model.bin: a PyTorch pickle checkpoint") != std::string::npos);
  CHECK(e.find("save_file(") != std::string::npos);
}

}  // namespace test_checkpoint_weights
