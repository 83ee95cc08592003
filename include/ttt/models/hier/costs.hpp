#pragma once
/// \file hier/costs.hpp
/// Napkin-math costs of the hierarchical transformer over n tokens, from its configuration and
/// mixers alone (nothing is run): the FLOPs of a forward and of a training step, and about the
/// bytes a forward keeps on its tape. FLOPs count matrix products, 2 per multiply-add; norms,
/// activations and exp are not counted. HierarchicalTransformerT's forward_flops, train_flops and
/// forward_bytes forward here.
#include <cstdint>
#include <optional>

#include "../../blocks/attention.hpp"
#include "params.hpp"

namespace ttt::hier {

/// FLOPs of `forward` over n tokens: compression (conv + pointwise, or the 1x projection), per
/// layer and hierarchy (L_h = ceil(n / s) rows, a phases of ceil(L_h / a)) the mixer (attention:
/// qkv and output projections + attn::forward_flops per head and phase, O(L_h w) for a window;
/// TTT: TTTLayer::flops_per_token per row) and the feedforward (2 products), the merges, the logits.
template <class T, class Ls>
double forward_flops(const HierParams<T, Ls>& p, int64_t n) {
  const HierConfig& cfg = p.cfg;
  const int64_t H = cfg.num_hierarchies(), D = cfg.token_dim();
  double f = 0;
  for (int64_t h = 0; h < H; ++h) {
    const double d = double(cfg.dim_of(h)), c = double(cfg.compression(h));
    const int64_t Lh = (n + cfg.stride(h) - 1) / cfg.stride(h);
    if (cfg.compression(h) > 1) f += 2.0 * double(Lh) * (4.0 * double(D) * double(D) * c + 4.0 * double(D) * d);
    else if (p.compress[size_t(h)].has_proj) f += 2.0 * double(n) * d * double(D);
    const int64_t a = cfg.axial(h), m = (Lh + a - 1) / a;
    const int64_t heads = cfg.heads_of(h), dh = cfg.dim_head_of(h), inner = heads * dh;
    const std::optional<int64_t> w = cfg.window(h);
    for (int64_t l = 0; l < cfg.depth; ++l) {
      const auto& b = p.layers[size_t(l)][size_t(h)];
      if (b.ttt()) b.with_ttt([&](const auto& layer) { f += double(Lh) * layer.flops_per_token(); });
      else if (b.has_attn)
        f += 2.0 * double(Lh) * d * 4.0 * double(inner) +
             double(a * heads) * attn::forward_flops(m, m, dh, cfg.local_attn(h) ? *w : int64_t(-1));
      f += 4.0 * double(Lh) * d * double(cfg.ff_inner(h));
    }
  }
  if (cfg.need_merge()) {
    const double S = double(cfg.sum_dims()), o = double(cfg.merge_out());
    f += double(cfg.depth) * 2.0 * double(n) * (S * 2.0 * o + 2.0 * o * o);
  }
  return f + 2.0 * double(n) * double(cfg.logit_in()) * double(cfg.num_tokens);
}

/// FLOPs of one `loss` + backward on a sequence of n + 1 tokens (n inputs): 3x the forward and
/// the loss heads (a product's backward is two products), plus attention's backward beyond 2x its
/// forward (attn::backward_flops recomputes q.k: 10d instead of 8d per pair) ignored.
template <class T, class Ls>
double train_flops(const HierParams<T, Ls>& p, int64_t n) {
  const HierConfig& cfg = p.cfg;
  double heads = 0;
  for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
    if (cfg.compression(h) == 1) continue;
    const double Lh = double((n + cfg.stride(h) - 1) / cfg.stride(h)), d = double(cfg.dim_of(h));
    heads += 2.0 * Lh * d * d;  // hierarchical AR predictor
    if (cfg.should_recon()) heads += 2.0 * Lh * d * double(cfg.compression(h) * cfg.num_tokens);
  }
  return 3.0 * (hier::forward_flops(p, n) + heads);
}

/// About the bytes `forward` keeps on its tape over n tokens (every intermediate value lives
/// until the tape ends): per hierarchy and layer the rows of the norms, projections, attention
/// or TTT output, feedforward and phase gathers; the unfolded compression input; the merges; the
/// logits. A rough count (for memory checks before a long run), not a bound.
template <class T, class Ls>
int64_t forward_bytes(const HierParams<T, Ls>& p, int64_t n) {
  const HierConfig& cfg = p.cfg;
  const int64_t H = cfg.num_hierarchies(), D = cfg.token_dim();
  int64_t f = n * D;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t d = cfg.dim_of(h), c = cfg.compression(h), R = (n + cfg.stride(h) - 1) / cfg.stride(h);
    const int64_t inner = cfg.heads_of(h) * cfg.dim_head_of(h);
    f += c > 1 ? R * (D * c + 8 * D + 2 * d) : 2 * n * d;
    f += cfg.depth * R * (12 * d + 9 * inner + 2 * cfg.ff_inner(h) + (cfg.ttt_mixer(h) ? 16 * d : 0));
  }
  if (cfg.need_merge()) f += cfg.depth * n * (2 * cfg.sum_dims() + 6 * cfg.merge_out());
  f += n * (2 * cfg.logit_in() + cfg.num_tokens);
  return f * int64_t(sizeof(T));
}

}  // namespace ttt::hier
