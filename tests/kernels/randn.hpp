#pragma once
// Normal random vectors for the kernel tests (test_tile.cpp, test_dual_kernels.cpp).
#include <cstddef>
#include <random>
#include <vector>

namespace ttt::test {

/// n values drawn from N(0, scale^2) in double, converted to S.
template <class S>
std::vector<S> randn(std::size_t n, std::mt19937_64& rng, double scale = 1.0) {
  std::normal_distribution<double> N(0.0, scale);
  std::vector<S> v(n);
  for (auto& x : v) x = S(N(rng));
  return v;
}

}  // namespace ttt::test
