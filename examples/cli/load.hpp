#pragma once
// Loading checkpoints, compiled once (load.cpp) for every subcommand: AnyModelT::load and
// HierarchicalTransformerT::load instantiate the loader of every learner, which took each
// subcommand's file 10-20 s of optimisation when every file compiled its own copy.
#include <string>

#include "hier_model.hpp"
#include "learners.hpp"

namespace ttt_cli {

/// The TTT checkpoint in `dir` (config.json + model.safetensors or its shards).
Model load_model(const std::string& dir);
/// The simple-hierarchical-transformer checkpoint in `dir`.
HierModel load_hier_model(const std::string& dir);

}  // namespace ttt_cli
