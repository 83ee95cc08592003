#pragma once
/// \file hier/receptive_field.hpp
/// Which input tokens the hierarchical transformer's logits can depend on, computed from the
/// configuration alone by following the model's index maps: compression (row k of hierarchy h
/// covers tokens [k s - c + 1, k s]), token shift (one step back along a phase, a rows back),
/// attention (keys [i - w, i] of a phase, or all earlier ones), the merge (strided rows repeated)
/// and the prediction head. A local-window stack sees a bounded past; e.g. one hierarchy with
/// window w and depth L: the logits at t depend on tokens [t - L (w + 2), t] (each layer adds w
/// for the window and 1 for each of its two token shifts).
///
/// \code
///   auto lo = ttt::hier::earliest_dependency(cfg, 1024);  // lo[t]: first token the logits at t see
/// \endcode
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "config.hpp"

namespace ttt::hier {

/// lo[t] for t < n: the logits at position t depend on tokens lo[t] .. t and on no earlier one
/// (for weights in general position).
inline std::vector<int64_t> earliest_dependency(const HierConfig& cfg, int64_t n) {
  cfg.validate();
  const int64_t H = cfg.num_hierarchies();
  using Vec = std::vector<int64_t>;
  std::vector<Vec> lo(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t c = cfg.compression(h), s = cfg.stride(h), L = (n + s - 1) / s;
    for (int64_t k = 0; k < L; ++k) lo[size_t(h)].push_back(std::max<int64_t>(0, k * s - c + 1));
  }
  auto shift = [](Vec v, int64_t a, int64_t d) {  // token_shift moves channels only when d >= 2
    if (d >= 2)
      for (int64_t k = int64_t(v.size()) - 1; k >= a; --k) v[size_t(k)] = std::min(v[size_t(k)], v[size_t(k - a)]);
    return v;
  };
  auto attend = [](const Vec& v, int64_t a, std::optional<int64_t> w) {
    Vec out = v;
    for (int64_t k = 0; k < int64_t(v.size()); ++k)
      for (int64_t j = k, steps = 0; j >= 0 && (!w || steps <= *w); j -= a, ++steps)
        out[size_t(k)] = std::min(out[size_t(k)], v[size_t(j)]);
    return out;
  };
  auto cat = [&](const std::vector<Vec>& xs) {  // hierarchical_cat: row t <- row t / s of each
    int64_t m = INT64_MAX;
    for (int64_t h = 0; h < H; ++h) m = std::min<int64_t>(m, int64_t(xs[size_t(h)].size()) * cfg.stride(h));
    Vec out(static_cast<size_t>(m), INT64_MAX);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t h = 0; h < H; ++h) out[size_t(t)] = std::min(out[size_t(t)], xs[size_t(h)][size_t(t / cfg.stride(h))]);
    return out;
  };
  const int64_t p = cfg.predict_index();
  for (int64_t l = 0; l < cfg.depth; ++l) {
    for (int64_t h = 0; h < H; ++h) {
      Vec& v = lo[size_t(h)];
      const int64_t a = cfg.axial(h), d = cfg.dim_of(h);
      if (cfg.has_attn(h)) {
        const Vec att = attend(shift(v, a, d), a, cfg.ttt_mixer(h) ? std::optional<int64_t>() : cfg.window(h));
        for (size_t k = 0; k < v.size(); ++k) v[k] = std::min(v[k], att[k]);
      }
      v = shift(v, a, d);  // x = ff(shift(x)) + x; the feedforward is row-wise
    }
    if (!cfg.need_merge()) continue;
    const Vec pooled = cat(lo);
    if (cfg.hierarchy_merge_all) {
      for (int64_t h = 0; h < H; ++h)
        for (int64_t k = 0; k < int64_t(lo[size_t(h)].size()); ++k)
          if (k * cfg.stride(h) < int64_t(pooled.size()))
            lo[size_t(h)][size_t(k)] = std::min(lo[size_t(h)][size_t(k)], pooled[size_t(k * cfg.stride(h))]);
    } else {
      for (size_t t = 0; t < lo[size_t(p)].size(); ++t) lo[size_t(p)][t] = std::min(lo[size_t(p)][t], pooled[t]);
    }
  }
  Vec out = cfg.predict_use_all_hierarchy ? cat(lo) : lo[size_t(p)];
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace ttt::hier
