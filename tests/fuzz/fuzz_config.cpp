// libFuzzer target: config_from_json_text on arbitrary bytes.
// FormatError / ConfigError (any ttt::Error) is the expected answer to a bad config; any other
// exception or a sanitizer report is a finding. An accepted config must save (to_json) into a
// config that loads again and saves identically.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ttt/io/config_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  ttt::ModelConfig c;
  try {
    c = ttt::config_from_json_text(text, "fuzz/config.json");
  } catch (const ttt::Error&) {
    return 0;  // rejected cleanly
  }
  const nlohmann::json saved = ttt::to_json(c);
  const ttt::ModelConfig again = ttt::config_from_json_text(saved.dump(), "resaved/config.json");
  if (ttt::to_json(again) != saved) {
    std::fprintf(stderr, "fuzz_config: save -> load -> save changed the config\n%s\n%s\n", saved.dump().c_str(),
                 ttt::to_json(again).dump().c_str());
    std::abort();
  }
  return 0;
}
