#include "load.hpp"

namespace ttt_cli {

Model load_model(const std::string& dir) { return Model::load(dir); }

HierModel load_hier_model(const std::string& dir) { return HierModel::load(dir); }

}  // namespace ttt_cli
