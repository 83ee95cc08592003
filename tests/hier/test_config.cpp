// HierConfig: the original's constructor checks (and the combinations it crashes on) as
// ConfigError naming the option and the allowed values; JSON round trip; checkpoint errors.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <unistd.h>

#include <ttt/models/hier/model.hpp>

using namespace ttt;
namespace test_config {

namespace fs = std::filesystem;

std::string error_of(const std::string& extra) {
  std::string text = R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2)";
  if (!extra.empty()) text.append(", ").append(extra);
  text.append("}");
  try {
    hier::HierConfig::from_json(nlohmann::json::parse(text), "cfg");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST_CASE("hier config: invalid combinations are clear errors") {
  CHECK(error_of("") == "");
  CHECK(has(error_of(R"("hierarchies": [1, 3])"), "only powers of two"));
  CHECK(has(error_of(R"("hierarchies": [1, 3])"), "hierarchies"));
  CHECK(has(error_of(R"("hierarchies": [2, 2])"), "unique"));
  CHECK(has(error_of(R"("hierarchies": [1, 4], "hierarchical_stride": [1, 3])"), "powers of two"));
  CHECK(has(error_of(R"("hierarchies": [1, 4], "hierarchical_stride": [1, 8])"), "at most its compression factor"));
  CHECK(has(error_of(R"("hierarchies": [1, 4], "hierarchical_stride": 2)"), "hierarchical_stride"));
  CHECK(has(error_of(R"("hierarchies": [1, 2], "predict_hierarchy": 4)"), "predict_hierarchy 4 is not among the hierarchies [1, 2]"));
  CHECK(has(error_of(R"("hierarchies": [2, 4], "hierarchical_stride": [2, 1])"), "must have hierarchical_stride 1"));
  CHECK(has(error_of(R"("hierarchies": [2, 4], "hierarchical_stride": [2, 1], "hierarchy_merge_all": true)"),
            "hierarchy_merge_all with a strided predicting hierarchy"));
  CHECK(has(error_of(R"("hierarchies": [1, 2], "dim": [8, 8, 8])"), "dim has 3 entries"));
  CHECK(has(error_of(R"("window_sizes": -1)"), "window_sizes"));
  CHECK(has(error_of(R"("dim_head": 5)"), "dim_head"));
  CHECK(has(error_of(R"("model_type": "ttt")"), "model_type"));
  CHECK(has(error_of(R"("hierachies": [1, 2])"), "unknown key 'hierachies'"));
  CHECK(has(error_of(R"("heads": "two")"), "heads"));
}

TEST_CASE("hier config: JSON round trip keeps numbers and lists as given") {
  const auto j = nlohmann::json::parse(R"({"num_tokens": 11, "dim": [8, 6], "depth": 1, "seq_len": 32, "dim_head": 4,
    "heads": [2, 1], "ff_mult": [2, 1.5], "hierarchies": [1, 2], "window_sizes": [4, null], "hierarchical_stride": 1})");
  const auto c = hier::HierConfig::from_json(j);
  const auto k = c.to_json();
  CHECK(k["dim"] == j["dim"]);
  CHECK(k["heads"] == j["heads"]);
  CHECK(k["ff_mult"] == j["ff_mult"]);
  CHECK(k["window_sizes"] == j["window_sizes"]);
  CHECK(k["hierarchical_stride"] == 1);
  CHECK(k["dim_head"] == 4);
  CHECK(k["model_type"] == "simple-hierarchical-transformer");
  CHECK(hier::HierConfig::from_json(k).to_json() == k);
}

TEST_CASE("hier model: input errors, save / load round trip, checkpoint errors") {
  const auto cfg = hier::HierConfig::from_json(nlohmann::json::parse(
      R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 8, "dim_head": 4, "heads": 2, "hierarchies": [1, 2], "window_sizes": [2, null]})"));
  hier::HierarchicalTransformer m(cfg);
  m.init_weights(3);
  CHECK_THROWS_WITH_AS(m.forward(std::vector<int64_t>(9, 1)), doctest::Contains("longer than seq_len = 8"), ShapeError);
  CHECK_THROWS_WITH_AS(m.forward({1, 11}), doctest::Contains("outside the vocabulary"), ShapeError);
  CHECK_THROWS_AS(m.loss({{1}}), ShapeError);
  const fs::path dir = fs::temp_directory_path() / ("ttt_hier_ckpt_" + std::to_string(::getpid()));
  m.save(dir);
  auto r = hier::HierarchicalTransformer::load(dir);
  CHECK((r.forward({1, 2, 3}) - m.forward({1, 2, 3})).norm() == 0);
  // a wrong-shaped tensor and a missing one are named
  io::SafeTensorsWriter w;
  m.visit_params([&](const ParamRef& p) {
    if (p.name == "to_logits.weight") return;
    std::vector<float> buf(size_t(p.numel()));
    p.copy_out(buf.data());
    auto shape = p.shape;
    if (p.name == "token_emb.weight") shape = {8, 11};
    w.add(p.name, shape, buf);
  });
  io::write_file_atomic(dir / "model.safetensors", w.serialize());
  CHECK_THROWS_WITH(hier::HierarchicalTransformer::load(dir), doctest::Contains("token_emb.weight"));
  fs::remove_all(dir);
}

}  // namespace test_config
