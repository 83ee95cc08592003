// The PyTorch reference files: they parse, hold what the reference README says, survive a
// rewrite byte for byte, and every truncation of them is rejected cleanly.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "helpers.hpp"
#include "ttt/io/safetensors.hpp"

namespace test_reference_files {

namespace fs = std::filesystem;
using ttt::io::DType;
using ttt::io::SafeTensors;

fs::path linear_tiny() {
  const fs::path ref = ttt_test::reference_dir();
  return ref.empty() ? ref : ref / "ttt-lm-pytorch" / "linear_tiny";
}

TEST_CASE("reference: linear_tiny model and expected files") {
  const fs::path dir = linear_tiny();
  if (dir.empty()) {
    MESSAGE("skipped: no reference directory at " TTT_REFERENCE_DIR);
    return;
  }
  const auto model = SafeTensors::load(dir / "model.safetensors");
  CHECK(model.info("model.embed_tokens.weight").dtype == DType::F32);
  CHECK(model.info("model.embed_tokens.weight").shape == std::vector<int64_t>{97, 64});
  const auto emb = model.read_float("model.embed_tokens.weight", {97, 64});
  CHECK(emb.size() == 97 * 64);
  CHECK(std::all_of(emb.begin(), emb.end(), [](float f) { return std::isfinite(f); }));
  CHECK(std::any_of(emb.begin(), emb.end(), [](float f) { return f != 0.0f; }));
  CHECK(model.info("model.layers.0.seq_modeling_block.learnable_token_idx").shape == std::vector<int64_t>{16});
  CHECK_FALSE(model.contains("lm_head.weight"));  // tied embeddings are not saved
  CHECK(model.metadata().at("format") == "pt");

  const auto expected = SafeTensors::load(dir / "expected.safetensors");
  CHECK(expected.info("input_ids").dtype == DType::I64);
  const auto ids = expected.read_int("input_ids", {2, 40});
  CHECK(std::all_of(ids.begin(), ids.end(), [](int64_t t) { return t >= 0 && t < 97; }));
  CHECK(expected.info("logits").shape == std::vector<int64_t>{2, 40, 97});
  CHECK(expected.info("hidden.0").shape == std::vector<int64_t>{2, 40, 64});
  CHECK(expected.info("loss").shape.empty());
  CHECK(expected.read_float("loss").size() == 1);
  CHECK_THROWS_MENTIONING(ttt::FormatError, expected.read_float("input_ids"), "expected.safetensors", "'input_ids'",
                          "I64");
  CHECK_THROWS_MENTIONING(ttt::ShapeError, model.read_float("model.embed_tokens.weight", {64, 97}),
                          "model.safetensors", "[97, 64]", "[64, 97]");
  // Every parameter has its gradient, with the same shape.
  for (const auto& name : model.names()) {
    CAPTURE(name);
    REQUIRE(expected.contains("grad." + name));
    CHECK(expected.info("grad." + name).shape == model.info(name).shape);
  }
}

TEST_CASE("reference: every reference file parses and rewrites byte for byte") {
  const fs::path ref = ttt_test::reference_dir();
  if (ref.empty()) {
    MESSAGE("skipped: no reference directory at " TTT_REFERENCE_DIR);
    return;
  }
  int files = 0;
  for (const auto& e : fs::recursive_directory_iterator(ref)) {
    if (e.path().extension() != ".safetensors") continue;
    CAPTURE(e.path().string());
    const std::string bytes = ttt::io::read_file(e.path());
    const auto st = SafeTensors::parse(bytes, e.path().string());
    ttt::io::SafeTensorsWriter w;
    for (const auto& name : st.names()) {
      const auto& t = st.info(name);
      w.add_raw(name, t.dtype, t.shape, st.raw(name));
    }
    for (const auto& [k, v] : st.metadata()) w.set_metadata(k, v);
    const auto again = SafeTensors::parse(w.serialize(), "rewritten");
    REQUIRE(again.names() == st.names());
    for (const auto& name : st.names()) CHECK(again.raw(name) == st.raw(name));
    ++files;
  }
  CHECK(files >= 6);
}

TEST_CASE("reference: every truncation of a real file is rejected") {
  const fs::path dir = linear_tiny();
  if (dir.empty()) {
    MESSAGE("skipped: no reference directory at " TTT_REFERENCE_DIR);
    return;
  }
  const std::string full = ttt::io::read_file(dir / "model.safetensors");
  REQUIRE_NOTHROW(SafeTensors::parse(full, "full"));
  const uint64_t n = ttt_test::header_length(full);
  std::vector<size_t> lengths;
  for (size_t len = 0; len < 8 + n + 64; ++len) lengths.push_back(len);  // every cut through the header
  for (size_t len = 8 + n + 64; len < full.size(); len += 997) lengths.push_back(len);
  for (size_t k = 1; k <= 8; ++k) lengths.push_back(full.size() - k);
  for (size_t len : lengths) {
    CAPTURE(len);
    CHECK_THROWS_AS(SafeTensors::parse(full.substr(0, len), "cut.safetensors"), ttt::FormatError);
  }
  CHECK_THROWS_MENTIONING(ttt::FormatError, SafeTensors::parse(full + '\0', "long.safetensors"), "long.safetensors",
                          "data past the end");
}

}  // namespace test_reference_files
