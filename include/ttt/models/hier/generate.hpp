#pragma once
/// \file hier/generate.hpp
/// Sampling from a HierarchicalTransformer: the original's sampler (keep the top (1 - filter_thres)
/// of the logits, Gumbel noise, temperature) and the library's (`ttt::sample_next`, generate.hpp).
///
/// Generation here is the original's: one full forward over the last seq_len tokens per new token
/// (no cache yet; cached decode is future work).
///
/// \code
///   auto m = ttt::hier::HierarchicalTransformer::load("dir");
///   std::mt19937_64 rng(0);
///   auto toks = ttt::hier::generate(m, {1, 5, 9}, 32, ttt::hier::original_sampler(0.9, 1.0f), rng);
///   ttt::SamplingOptions o; o.top_p = 0.9f;
///   auto more = ttt::hier::generate(m, {1, 5, 9}, 32, ttt::hier::library_sampler(o), rng);
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../../core/error.hpp"
#include "../generate.hpp"
#include "model.hpp"

namespace ttt::hier {

/// Picks a token from one row of logits.
using Sampler = std::function<int64_t(std::span<const float> logits, std::mt19937_64& rng)>;

/// The original's `top_k(logits, thres)` then `gumbel_sample(logits, temperature)`: the
/// k = ceil((1 - filter_thres) V) largest logits are kept (ties: lower token id first), the rest
/// are -inf; the token is argmax(logits / max(temperature, 1e-10) + g), g = -log(-log(u)) with
/// u uniform in [0, 1) and both logs clamped at 1e-20, as the original.
inline int64_t sample_top_k_gumbel(std::span<const float> logits, double filter_thres, float temperature,
                                   std::mt19937_64& rng) {
  const size_t V = logits.size();
  if (V == 0) throw Error("hier::sample_top_k_gumbel: empty logits");
  if (!(filter_thres >= 0.0 && filter_thres < 1.0))
    throw Error("hier::sample_top_k_gumbel: filter_thres must be in [0, 1), got " + std::to_string(filter_thres));
  if (!(temperature >= 0.0f)) throw Error("hier::sample_top_k_gumbel: temperature must be >= 0, got " + ttt::detail::float_str(temperature));
  for (size_t i = 0; i < V; ++i)
    if (std::isnan(logits[i])) throw Error("hier::sample_top_k_gumbel: NaN logit at token " + std::to_string(i));
  const size_t k = std::max<size_t>(1, size_t(std::ceil((1.0 - filter_thres) * double(V))));
  std::vector<size_t> order(V);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
  const double t = std::max(double(temperature), 1e-10);
  auto lg = [](double x) { return std::log(std::max(x, 1e-20)); };
  int64_t best = int64_t(order[0]);
  double best_v = -std::numeric_limits<double>::infinity();
  for (size_t j = 0; j < k; ++j) {  // the -inf rest can never win
    const size_t i = order[j];
    const double g = -lg(-lg(ttt::detail::uniform01(rng)));
    const double v = double(logits[i]) / t + g;
    if (v > best_v) best_v = v, best = int64_t(i);
  }
  return best;
}

/// The original's sampler (filter_thres 0.9 and temperature 1 are its defaults).
inline Sampler original_sampler(double filter_thres = 0.9, float temperature = 1.0f) {
  return [=](std::span<const float> l, std::mt19937_64& rng) { return sample_top_k_gumbel(l, filter_thres, temperature, rng); };
}

/// The library's sampler (temperature, top_k, top_p, greedy; see ttt/generate.hpp).
inline Sampler library_sampler(SamplingOptions opt) {
  validate(opt);
  return [opt](std::span<const float> l, std::mt19937_64& rng) { return sample_next(l, opt, rng); };
}

/// `n_new` tokens after `prompt` (not repeated in the result): per token, one forward over the last
/// seq_len tokens so far and the sampler on the last row. `on_token(tok)` may return false to stop.
template <class T, class Learners>
std::vector<int64_t> generate(const HierarchicalTransformerT<T, Learners>& m, const std::vector<int64_t>& prompt, int64_t n_new,
                              const Sampler& sampler, std::mt19937_64& rng,
                              const std::function<bool(int64_t)>& on_token = nullptr) {
  if (prompt.empty()) throw ShapeError("hier::generate: the prompt must hold at least one token");
  if (n_new < 0) throw ShapeError("hier::generate: n_new must be >= 0, got " + std::to_string(n_new));
  std::vector<int64_t> seq = prompt, out;
  std::vector<float> row(size_t(m.cfg.num_tokens));
  for (int64_t i = 0; i < n_new; ++i) {
    const size_t start = seq.size() > size_t(m.cfg.seq_len) ? seq.size() - size_t(m.cfg.seq_len) : 0;
    const std::vector<int64_t> window(seq.begin() + std::ptrdiff_t(start), seq.end());
    const auto logits = m.forward(window);
    for (Eigen::Index j = 0; j < logits.cols(); ++j) row[size_t(j)] = float(logits(logits.rows() - 1, j));
    const int64_t tok = sampler(row, rng);
    seq.push_back(tok);
    out.push_back(tok);
    if (on_token && !on_token(tok)) break;
  }
  return out;
}

}  // namespace ttt::hier
