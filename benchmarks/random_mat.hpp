#pragma once
// Random inputs of the benchmark programs: an (r, c) float matrix of normal values (mean 0,
// standard deviation `scale`), the same for the same seed.
#include <cstdint>
#include <random>

#include <ttt/core/tensor.hpp>

namespace ttt_bench {
inline ttt::Mat random_mat(int64_t r, int64_t c, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  ttt::Mat m(r, c);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}
}  // namespace ttt_bench
