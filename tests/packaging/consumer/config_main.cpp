// The subdirectory consumer's program: the library's targets wire up (include paths, nlohmann/json
// through ttt::ttt), checked with a config round trip rather than a model (tests/packaging/run.sh
// builds the model program against the installed package, header-only and precompiled).
#include <cstdio>
#include <ttt/core/model_config.hpp>
#include <ttt/io/config_json.hpp>

int main() {
  const auto cfg = ttt::ModelConfig::sized("mlp", /*vocab=*/32, /*hidden=*/16, /*layers=*/1, /*heads=*/2,
                                           /*intermediate=*/32, /*mini_batch=*/4);
  const auto back = ttt::config_from_json(ttt::to_json(cfg));
  std::printf("consumer ok: hidden %ld, head_dim %ld\n", long(back.hidden_size), long(back.head_dim()));
  return back.hidden_size == cfg.hidden_size ? 0 : 1;
}
