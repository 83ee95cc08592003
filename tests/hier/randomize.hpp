#pragma once
// Shared by the hierarchical model's tests: weights that make every term of a check matter.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ttt/models/hier/model.hpp>

namespace hier_test {

/// PyTorch-style init (init_weights), then noise on the norms (so that no weight is trivial) and,
/// for TTT mixers, projections 15x larger and noisy inner weights (so that the inner loop matters).
/// Models without TTT mixers draw the same numbers whether or not they have any.
template <class Model>
void randomize(Model& m, uint64_t seed) {
  using T = typename Model::Scalar;
  m.init_weights(seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> n(0.0, 0.3);
  m.visit([&](const std::string&, ttt::ad::Matrix<T>& x, const std::vector<int64_t>&, typename Model::Init init, int64_t) {
    if (init == Model::Init::ones || init == Model::Init::zeros)
      for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] += T(n(rng));
  });
  m.visit_ttt([&](const auto& p) {
    const bool proj = p.name.find("_proj") != std::string::npos;
    for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = proj ? p.at(i) * 15.0f : p.at(i) + float(n(rng));
  });
}

}  // namespace hier_test
