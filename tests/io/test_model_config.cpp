// ModelConfig parsing: the reference configs load, and malformed or unworkable ones are refused
// with FormatError / ConfigError naming the file and the key.
#include <filesystem>
#include <string>

#include <doctest/doctest.h>

#include "helpers.hpp"
#include "ttt/core/presets.hpp"
#include "ttt/io/config_json.hpp"

namespace test_model_config {

namespace fs = std::filesystem;
using ttt::ModelConfig;

constexpr const char* src = "cfg.json";
ModelConfig parse(const std::string& text) { return ttt::config_from_json_text(text, src); }

TEST_CASE("config: the reference config.json files load") {
  const fs::path ref = ttt_test::reference_dir();
  if (ref.empty()) {
    MESSAGE("skipped: no reference directory at " TTT_REFERENCE_DIR);
    return;
  }
  int n = 0;
  for (const auto& e : fs::directory_iterator(ref / "ttt-lm-pytorch")) {
    CAPTURE(e.path().string());
    const ModelConfig c = ttt::load_config(e.path() / "config.json");
    CHECK(c.hidden_size == 64);
    CHECK(c.num_attention_heads == 4);
    CHECK(c.head_dim() == 16);
    CHECK(c.vocab_size == 97);
    CHECK(c.num_hidden_layers == 2);
    CHECK(c.mini_batch_size == 16);
    CHECK_FALSE(c.pad_token_id.has_value());
    CHECK(c.extra.contains("torch_dtype"));  // unknown keys are kept
    // to_json -> from_json gives the same configuration.
    const ModelConfig again = ttt::config_from_json(to_json(c));
    CHECK(to_json(again) == to_json(c));
    ++n;
  }
  CHECK(n >= 3);
  const ModelConfig mlp = ttt::load_config(ref / "ttt-lm-pytorch" / "mlp_tiny" / "config.json");
  CHECK(mlp.ttt_layer_type == "mlp");
}

TEST_CASE("config: missing file and malformed JSON") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, ttt::load_config("/nonexistent/dir/config.json"),
                          "/nonexistent/dir/config.json");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse("{\"hidden_size\": 64,"), src, "not valid JSON");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(""), src, "not valid JSON");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse("[1, 2]"), src, "object");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse("42"), src, "object");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"model_type": "llama"})"), src, "model_type");
}

TEST_CASE("config: wrongly typed values name the key") {
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"hidden_size": "64"})"), src, "'hidden_size'", "integer");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"hidden_size": 64.5})"), src, "'hidden_size'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"num_attention_heads": null})"), src, "'num_attention_heads'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"use_gate": 1})"), src, "'use_gate'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"hidden_act": 3})"), src, "'hidden_act'", "string");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"rms_norm_eps": "1e-6"})"), src, "'rms_norm_eps'", "number");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"ttt_layer_type": ["linear"]})"), src, "'ttt_layer_type'");
  CHECK_THROWS_MENTIONING(ttt::FormatError, parse(R"({"pad_token_id": "0"})"), src, "'pad_token_id'");
  // Integral floats are accepted for integer keys (some writers emit 64.0).
  CHECK(parse(R"({"hidden_size": 64.0, "num_attention_heads": 4})").hidden_size == 64);
}

TEST_CASE("config: unworkable values give ConfigError naming the option") {
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"hidden_size": 65, "num_attention_heads": 4})"), src,
                          "hidden_size", "num_attention_heads", "divisible");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"mini_batch_size": 0})"), src, "mini_batch_size");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"mini_batch_size": -3})"), src, "mini_batch_size");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"hidden_size": 12, "num_attention_heads": 4})"), src,
                          "head_dim", "even");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"num_attention_heads": 0})"), src, "num_attention_heads");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"vocab_size": 0})"), src, "vocab_size");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"rms_norm_eps": 0})"), src, "rms_norm_eps");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"hidden_act": "tanh"})"), src, "hidden_act", "tanh");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"scan_checkpoint_group_size": -1})"), src,
                          "scan_checkpoint_group_size");
  CHECK_THROWS_MENTIONING(ttt::ConfigError, parse(R"({"vocab_size": 9000000000000000, "hidden_size": 4096})"), src,
                          "too large");
}

TEST_CASE("config: defaults and the 125m preset validate") {
  CHECK_NOTHROW(ModelConfig().validate());
  CHECK_NOTHROW(ModelConfig::preset_125m("mlp").validate());
  const ModelConfig c = parse("{}");
  CHECK(c.hidden_size == ModelConfig().hidden_size);
}

TEST_CASE("standard configurations: TTT_STANDARD_CONFIGS by name; 1b is the default config; other names listed") {
  struct Want {
    const char* name;
    int64_t hidden, intermediate, layers, heads;
  };
  for (const Want w : {Want{"125m", 768, 2048, 12, 12}, Want{"350m", 1024, 2736, 24, 16}, Want{"760m", 1536, 4096, 24, 16},
                       Want{"1b", 2048, 5504, 24, 32}}) {
    const ttt::ModelConfig c = ttt::standard_config(w.name, "mlp");
    CHECK(c.hidden_size == w.hidden);
    CHECK(c.intermediate_size == w.intermediate);
    CHECK(c.num_hidden_layers == w.layers);
    CHECK(c.num_attention_heads == w.heads);
    CHECK(c.ttt_layer_type == "mlp");
    CHECK(c.vocab_size == 32000);
    c.validate(w.name);
  }
  const ttt::ModelConfig one_b = ttt::standard_config("1b"), dflt;
  CHECK(one_b.hidden_size == dflt.hidden_size);
  CHECK(one_b.intermediate_size == dflt.intermediate_size);
  CHECK(one_b.num_hidden_layers == dflt.num_hidden_layers);
  CHECK(one_b.num_attention_heads == dflt.num_attention_heads);
  CHECK_THROWS_WITH_AS(ttt::standard_config("2b"), doctest::Contains("'2b' (125m, 350m, 760m, 1b)"), ttt::ConfigError);
}

}  // namespace test_model_config
