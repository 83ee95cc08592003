// Sampling from the hierarchical transformer: the original's top-k + Gumbel sampler (what it keeps,
// its temperature limit, its distribution against the softmax of the kept logits), errors, and
// `generate` (each token is the sampler on the last row of a full forward of the sequence so far;
// the library's sampler plugs in the same way).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <ttt/models/hier/generate.hpp>

using namespace ttt;

TEST_CASE("hier sampler: top (1 - filter_thres) of the logits, Gumbel-max distribution, temperature") {
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> l(40);
  for (float& x : l) x = n(rng);
  // keep ceil(0.1 * 40) = 4 tokens
  std::vector<size_t> order(l.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return l[a] > l[b]; });
  std::vector<int> count(l.size(), 0);
  const int N = 40000;
  for (int s = 0; s < N; ++s) ++count[size_t(hier::sample_top_k_gumbel(l, 0.9, 1.0f, rng))];
  for (size_t j = 4; j < l.size(); ++j) CHECK(count[order[j]] == 0);
  // Gumbel-max: frequencies are the softmax of the kept logits
  double z = 0;
  for (size_t j = 0; j < 4; ++j) z += std::exp(double(l[order[j]]) - double(l[order[0]]));
  for (size_t j = 0; j < 4; ++j) {
    const double p = std::exp(double(l[order[j]]) - double(l[order[0]])) / z, f = double(count[order[j]]) / N;
    INFO("rank " << j << ": p " << p << ", frequency " << f);
    CHECK(std::abs(f - p) <= 4 * std::sqrt(p * (1 - p) / N) + 1e-3);
  }
  // temperature 0: the argmax; filter_thres 0: every token may be drawn
  for (int s = 0; s < 50; ++s) CHECK(hier::sample_top_k_gumbel(l, 0.9, 0.0f, rng) == int64_t(order[0]));
  std::vector<float> flat(5, 0.0f);
  std::vector<int> seen(5, 0);
  for (int s = 0; s < 500; ++s) ++seen[size_t(hier::sample_top_k_gumbel(flat, 0.0, 1.0f, rng))];
  for (int c : seen) CHECK(c > 0);
  CHECK_THROWS_WITH_AS(hier::sample_top_k_gumbel(l, 1.0, 1.0f, rng), doctest::Contains("filter_thres"), Error);
  CHECK_THROWS_WITH_AS(hier::sample_top_k_gumbel(l, 0.9, -1.0f, rng), doctest::Contains("temperature"), Error);
  l[3] = std::nanf("");
  CHECK_THROWS_WITH_AS(hier::sample_top_k_gumbel(l, 0.9, 1.0f, rng), doctest::Contains("NaN"), Error);
}

TEST_CASE("hier generate: each token is the sampler on a full forward of the sequence so far") {
  const auto cfg = hier::HierConfig::from_json(nlohmann::json::parse(
      R"({"num_tokens": 13, "dim": 8, "depth": 1, "seq_len": 12, "dim_head": 4, "heads": 2, "ff_mult": 2,
          "hierarchies": [1, 2], "window_sizes": [null, 3], "mixer": ["attention", "ttt-linear"], "ttt_mini_batch_size": 2})"));
  hier::HierarchicalTransformer m(cfg);
  m.init_weights(3);
  const std::vector<int64_t> prompt = {1, 4, 7};
  for (int which = 0; which < 2; ++which) {
    SamplingOptions so;
    so.top_k = 5;
    const hier::Sampler s = which == 0 ? hier::original_sampler(0.9, 1.0f) : hier::library_sampler(so);
    std::mt19937_64 rng(7), rng2(7);
    const auto out = hier::generate(m, prompt, 15, s, rng);  // runs past seq_len: the last 12 tokens
    REQUIRE(out.size() == 15);
    std::vector<int64_t> seq = prompt;
    for (int64_t tok : out) {
      const size_t start = seq.size() > 12 ? seq.size() - 12 : 0;
      const auto lg = m.forward(std::vector<int64_t>(seq.begin() + std::ptrdiff_t(start), seq.end()));
      std::vector<float> row(lg.cols());
      for (Eigen::Index j = 0; j < lg.cols(); ++j) row[size_t(j)] = lg(lg.rows() - 1, j);
      CHECK(tok == s(row, rng2));
      seq.push_back(tok);
    }
    int calls = 0;
    CHECK(hier::generate(m, prompt, 10, s, rng, [&](int64_t) { return ++calls < 3; }).size() == 3);
  }
  std::mt19937_64 rng(0);
  CHECK_THROWS_AS(hier::generate(m, {}, 3, hier::original_sampler(), rng), ShapeError);
}
