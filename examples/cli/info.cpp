// ttt info: what a checkpoint holds (its config, parameter count and, for TTT models, state size).
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include <ttt/io/config_json.hpp>
#include <ttt/models/any_model.hpp>
#include <ttt/models/hier/model.hpp>

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"
#include "load.hpp"

namespace ttt_cli {
namespace {

/// "model = DIR", then "key = value" for every key of the config.
void print_config(const std::string& dir, const nlohmann::json& j) {
  std::cout << "model = " << dir << "\n";
  for (auto it = j.begin(); it != j.end(); ++it)
    std::cout << it.key() << " = " << (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()) << "\n";
}

int run_info(const std::string& dir) {
  if (is_hier_checkpoint(dir)) {
    auto m = load_hier_model(dir);
    print_config(dir, m.cfg.to_json());
    std::cout << "parameters = " << m.num_params() << "\n";
    return 0;
  }
  const Model m = load_model(dir);
  print_config(dir, ttt::to_json(m.cfg()));
  std::cout << "learner = " << m.learner() << "\n";
  std::cout << "head_dim = " << m.cfg().head_dim() << "\n";
  std::cout << "parameters = " << m.num_params() << "\n";
  std::cout << "state_bytes_per_sequence = " << m.state_bytes() << "\n";
  return 0;
}

}  // namespace

Command add_info(CLI::App& app) {
  auto model = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("info", "Print a checkpoint's config, parameter count and state size.");
  sub->add_option("--model", *model, "Checkpoint folder (config.json + model.safetensors)")->required();
  return {sub, [model] { return run_info(*model); }};
}

}  // namespace ttt_cli
