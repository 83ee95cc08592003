#pragma once
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <ttt/ttt.hpp>

namespace th {

#ifndef TTT_REFERENCE_DIR
#define TTT_REFERENCE_DIR "../shared/reference"
#endif
inline std::filesystem::path reference_dir() { return TTT_REFERENCE_DIR; }

/// ||a - e|| / ||e|| in double
template <class A, class E>
double rel_err(const A* a, const E* e, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(e[i]);
    num += d * d;
    den += double(e[i]) * double(e[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
inline double rel_err(const ttt::Mat& a, const ttt::Mat& e) {
  REQUIRE(a.rows() == e.rows());
  REQUIRE(a.cols() == e.cols());
  return rel_err(a.data(), e.data(), size_t(a.size()));
}

/// Every parameter random and non-trivial: weights N(0, scale), norm weights 1 + N(0, 0.2),
/// biases and the token index N(0, 0.3) (so that the clamp of the token index bites).
template <class Model>
void randomize(Model& m, uint64_t seed, double scale = 0.1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  m.visit_params([&](const auto& p) {  // a float or a double model: the same values
    for (int64_t i = 0; i < p.numel(); ++i) {
      float v;
      if (p.init == ttt::ParamInit::ones) v = 1.0f + 0.2f * n01(rng);
      else if (p.no_decay) v = 0.3f * n01(rng);
      else v = float(scale) * n01(rng);
      p.at(i) = v;
    }
  });
}

inline std::vector<int64_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(0, vocab - 1);
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

inline ttt::ModelConfig small_config(const std::string& type = "linear") {
  return ttt::ModelConfig::sized(type, /*vocab=*/53, /*hidden=*/32, /*layers=*/2, /*heads=*/4, /*intermediate=*/48,
                                 /*mini_batch=*/8);
}

/// Logits of `ids` computed as: prefill the first P tokens (all their logits), then feed the rest
/// one token at a time.                                                          (L, V)
template <class Model>
ttt::Mat prefill_then_decode(const Model& m, const std::vector<int64_t>& ids, int64_t P) {
  const int64_t L = int64_t(ids.size());
  auto st = m.new_state();
  ttt::Mat got(L, m.cfg.vocab_size), lg;
  m.forward(st, std::span<const int64_t>(ids.data(), size_t(P)), &lg, ttt::Logits::all);
  got.topRows(P) = lg;
  for (int64_t t = P; t < L; ++t) {
    m.forward(st, std::span<const int64_t>(ids.data() + t, 1), &lg, ttt::Logits::last);
    got.row(t) = lg.row(0);
  }
  return got;
}

}  // namespace th
