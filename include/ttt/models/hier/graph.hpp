#pragma once
/// \file hier/graph.hpp
/// The computation of the hierarchical transformer on the autodiff tape of ttt/ad (`build`), as
/// lucidrains' simple-hierarchical-transformer 0.2.0 (with local-attention 1.11.2) computes it,
/// and `forward_logits` with its optional taps (ForwardExtras: what hier::Decoder::prefill reads).
///
/// Per sequence (n tokens; hierarchy h: compression c, stride s, a = c / s):
///  1. embedding at width D = max(dims); per hierarchy a compression (c = 1: Linear(D, d) without
///     bias, or nothing when d = D; c > 1: causal Conv1d(D, 4D, c, stride s) -> SiLU -> Conv1d(4D, d,
///     1)), then a LayerNorm. Row k of hierarchy h covers tokens [k s - c + 1, k s].
///  2. each layer runs one block per hierarchy on a interleaved phases (rows j, j + a, ...; the end
///     zero-padded to a multiple of a), each an independent causal sequence:
///     x = attn(shift(x)) + x; x = ff(shift(x)) + x, where shift moves the last floor(d/2) channels
///     one step down the phase. attn is full attention (l2-RMSNorm, rotary + xPos centred at
///     m // 2) or, with a window w, LocalMHA (LayerNorm, rotary, keys [i - w, i]); w = 0: none;
///     or a TTT mixer (LayerNorm, then a TTT layer as one tape op).
///  3. after every layer (several hierarchies) the merge: all hierarchies side by side (strided
///     ones repeated s times, cropped to n) -> RMSNorm -> Linear -> SiLU -> Linear, added to the
///     predicting hierarchy (or split and added to all, subsampled by stride, with merge_all).
///  4. final LayerNorms; logits from the predicting hierarchy (or all, side by side).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "../../ad/ops.hpp"
#include "../../ad/tape.hpp"
#include "../../core/error.hpp"
#include "../../layers/ttt_layer.hpp"
#include "../../layers/ttt_layer_grad.hpp"
#include "params.hpp"

namespace ttt::hier {

/// Optional outputs of `forward`: per hierarchy, the embeddings after compression and the
/// post-embedding norm, and the final normalised embeddings. (L_h, d_h) each.
/// (HierarchicalTransformerT<T>::Extras.)
template <class T>
struct ForwardExtras {
  using M = ad::Matrix<T>;
  std::vector<M> token_embeds, hidden_embeds;
  /// With `phases` set: what hier::Decoder::prefill builds its caches from. Per layer, hierarchy
  /// and phase the phase's rows (zero-padded to ceil(L_h / a)) entering the block (`in`), after
  /// the mixer's residual (`mid`) and entering the mixer after the token shift and its norm
  /// (`mixer_in`; empty without a mixer); per layer and hierarchy the rows after the blocks,
  /// before the merge (`block_out[l][h]`, L_h rows).
  bool phases = false;
  struct PhaseRows {
    int64_t layer = 0, hierarchy = 0, phase = 0;
    M in, mid, mixer_in;
  };
  std::deque<PhaseRows> phase_rows;
  std::vector<std::vector<M>> block_out;
};

namespace detail {

/// Parameter leaves of one tape: each parameter enters once, with its gradient sink.
template <class T, class Ls>
struct Leaves {
  using M = ad::Matrix<T>;
  using V = ad::Var<T>;
  using Init = typename HierParams<T, Ls>::Init;
  ad::Tape<T>& tape;
  HierParams<T, Ls>* grad = nullptr;  // where the TTT mixers' parameter gradients go
  ForwardExtras<T>* tap = nullptr;  // forward with extras->phases: rows recorded here
  int64_t layer = 0;                // the layer being built (for the tap)
  std::unordered_map<const M*, V> vars;
  std::unordered_map<const M*, M*> sinks;
  Leaves(ad::Tape<T>& t, const HierParams<T, Ls>& model, HierParams<T, Ls>* g) : tape(t), grad(g) {
    if (!grad) return;
    std::vector<const M*> a;
    std::vector<M*> b;
    const_cast<HierParams<T, Ls>&>(model).visit(
        [&](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { a.push_back(&m); });
    grad->visit([&](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { b.push_back(&m); });
    for (size_t i = 0; i < a.size(); ++i) sinks[a[i]] = b[i];
  }
  V operator()(const M& m) {
    auto it = vars.find(&m);
    if (it != vars.end()) return it->second;
    auto s = sinks.find(&m);
    const V v = tape.param(m, s == sinks.end() ? nullptr : s->second);
    vars.emplace(&m, v);
    return v;
  }
};

template <class T>
struct Graph {
  std::vector<ad::Var<T>> token_embeds, embeds;
  ad::Var<T> logits;
};

/// The rows of all hierarchies side by side, strided ones repeated (row t <- row t / s),
/// cropped to the shortest (hierarchical_cat of the original).
template <class T>
ad::Var<T> hierarchical_cat(const HierConfig& cfg, const std::vector<ad::Var<T>>& xs) {
  using V = ad::Var<T>;
  const int64_t H = cfg.num_hierarchies();
  bool all1 = true;
  for (int64_t h = 0; h < H; ++h) all1 = all1 && cfg.stride(h) == 1;
  if (all1) return ad::concat_cols(xs);
  int64_t n = INT64_MAX;
  for (int64_t h = 0; h < H; ++h) n = std::min<int64_t>(n, xs[size_t(h)].rows() * cfg.stride(h));
  std::vector<V> parts;
  for (int64_t h = 0; h < H; ++h) {
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) idx[size_t(t)] = t / cfg.stride(h);
    parts.push_back(ad::gather_rows(xs[size_t(h)], std::move(idx)));
  }
  return ad::concat_cols(parts);
}

/// token_shift: the last floor(d / 2) channels move one row down (zeros first).
template <class T>
ad::Var<T> token_shift(ad::Var<T> x) {
  using V = ad::Var<T>;
  const Eigen::Index d = x.cols(), m = x.rows(), h1 = (d + 1) / 2;  // chunk(2): first part ceil(d / 2)
  if (d - h1 == 0) return x;
  std::vector<int64_t> idx(static_cast<size_t>(m));
  for (Eigen::Index i = 0; i < m; ++i) idx[size_t(i)] = i - 1;
  return ad::concat_cols(std::vector<V>{ad::cols(x, 0, h1), ad::gather_rows(ad::cols(x, h1, d - h1), std::move(idx))});
}

/// Attention of one phase sequence z (m, d).
template <class T, class Ls>
ad::Var<T> attention(const HierConfig& cfg, Leaves<T, Ls>& P, const typename HierParams<T, Ls>::Block& b, int64_t h,
                     ad::Var<T> z, ad::Matrix<T>* xn_out) {
  using M = ad::Matrix<T>;
  using V = ad::Var<T>;
  const auto& a = b.attn;
  const int64_t m = z.rows(), heads = cfg.heads_of(h), dh = cfg.dim_head_of(h), inner = heads * dh, half = dh / 2;
  const V xn = a.local ? ad::layer_norm(z, P(a.norm_w), P(a.norm_b)) : ad::l2_rms_norm(z, P(a.norm_w));
  if (xn_out) *xn_out = xn.value();
  const V qkv = ad::linear(xn, P(a.qkv));
  V q = ad::cols(qkv, 0, inner), k = ad::cols(qkv, inner, inner), v = ad::cols(qkv, 2 * inner, inner);
  // angles t * inv_freq and the xPos factors: in float32 as torch forms them for T = float, in
  // double for T = double (so that the double model is exact: xPos cancels in q.k)
  using R = std::conditional_t<std::is_same_v<T, float>, float, double>;
  M cs(m, half), sn(m, half), fq, fk;
  ad::detail::by_rows(m, 32 * half, [&](Eigen::Index t0, Eigen::Index t1) {  // (a cos and a sin cost ~30 adds each)
    for (Eigen::Index t = t0; t < t1; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const R ang = R(t) * R(a.inv_freq(0, i));
        cs(t, i) = T(std::cos(double(ang)));
        sn(t, i) = T(std::sin(double(ang)));
      }
  });
  if (!a.local) {
    // xPos: q * scale^power, k / scale^power, power = (t - m // 2) / 512 (cancels in q.k up to rounding)
    fq.resize(m, half);
    fk.resize(m, half);
    ad::detail::by_rows(m, 32 * half, [&](Eigen::Index t0, Eigen::Index t1) {
      for (Eigen::Index t = t0; t < t1; ++t) {
        const R power = (R(t) - R(m / 2)) / R(512);
        for (int64_t i = 0; i < half; ++i) {
          const R f = R(std::pow(double(a.xpos_scale(0, i)), double(power)));
          fq(t, i) = T(f);
          fk(t, i) = T(R(1) / f);
        }
      }
    });
  }
  q = ad::rotary(q, heads, cs, sn, fq);
  k = ad::rotary(k, heads, cs, sn, fk);
  const std::optional<int64_t> w = cfg.window(h);
  const V o = ad::attention(q, k, v, heads, a.local ? *w : int64_t(-1), T(1) / std::sqrt(T(dh)));
  return ad::linear(o, P(a.out));
}

/// A TTT layer on one phase sequence xn (m, d) (already normed) as a tape op: LayerGrad's
/// forward from the layer's initial state, its backward as the VJP (parameter gradients into
/// `glayer` when given).
template <class T, class L>
ad::Var<T> ttt_op(const TTTLayer<L, T>& layer, TTTLayer<L, T>* glayer, ad::Var<T> xn) {
  using M = ad::Matrix<T>;
  if (xn.tape->inference()) {  // no gradient: the layer's own forward (no per-mini-batch tape)
    auto state = layer.new_state();
    typename TTTLayer<L, T>::Workspace ws;
    M Y;
    layer.forward(xn.value(), state, 0, ws, Y);
    return xn.tape->record(std::move(Y), false, nullptr);
  }
  auto op = std::make_shared<train::LayerGrad<L, T>>(layer);
  M Y;
  op->forward(xn.value(), Y);
  return xn.tape->custom({xn}, std::move(Y), [op, glayer, &layer](const M& dy, std::span<M> dx) {
    M dX;
    if (glayer) {
      op->backward(dy, dX, *glayer);
    } else {
      TTTLayer<L, T> sink = layer;  // parameter gradients not wanted: a throw-away accumulator
      op->backward(dy, dX, sink);
    }
    if (dx[0].size()) dx[0] += dX;
  });
}

/// The TTT mixer of one phase sequence z (m, d): LayerNorm then the TTT layer.
template <class T, class Ls>
ad::Var<T> ttt_mixer(Leaves<T, Ls>& P, const typename HierParams<T, Ls>::Block& b, typename HierParams<T, Ls>::Block* gb,
                     ad::Var<T> z, ad::Matrix<T>* xn_out) {
  const ad::Var<T> xn = ad::layer_norm(z, P(b.attn.norm_w), P(b.attn.norm_b));
  if (xn_out) *xn_out = xn.value();
  ad::Var<T> out = xn;
  b.with_ttt([&](const auto& layer) {
    using Layer = std::decay_t<decltype(layer)>;
    out = detail::ttt_op<T>(layer, gb ? &std::get<Layer>(gb->ttt_layer) : nullptr, xn);
  });
  return out;
}

/// One HierarchicalBlock on hierarchy h's rows x (L_h, d). gb: the gradient model's block (or null).
template <class T, class Ls>
ad::Var<T> block(const HierConfig& cfg, Leaves<T, Ls>& P, const typename HierParams<T, Ls>::Block& b,
                 typename HierParams<T, Ls>::Block* gb, int64_t h, ad::Var<T> x) {
  using M = ad::Matrix<T>;
  using V = ad::Var<T>;
  const int64_t L = x.rows(), a = cfg.axial(h);
  auto run = [&](V z, int64_t phase) {
    const size_t mark = P.tape.size();  // an inference tape frees the phase's intermediates below
    typename ForwardExtras<T>::PhaseRows* tap = nullptr;
    if (P.tap) {
      P.tap->phase_rows.push_back({P.layer, h, phase, z.value(), M(), M()});
      tap = &P.tap->phase_rows.back();  // a deque: stays valid
    }
    M* xn = tap ? &tap->mixer_in : nullptr;
    if (b.has_attn && b.ttt()) z = ad::add(detail::ttt_mixer(P, b, gb, detail::token_shift(z), xn), z);
    else if (b.has_attn) z = ad::add(detail::attention(cfg, P, b, h, detail::token_shift(z), xn), z);
    if (tap) tap->mid = z.value();
    const V f = ad::linear(ad::gelu(ad::linear(ad::l2_rms_norm(detail::token_shift(z), P(b.ff_gamma)), P(b.ff_w1))), P(b.ff_w2));
    const V out = ad::add(f, z);
    P.tape.release(mark, {out});
    return out;
  };
  if (a == 1) return run(x, 0);
  const size_t mark = P.tape.size();
  // 'b (n a) d -> (b a) n d' after zero-padding the end to a multiple of a
  const int64_t m = (L + a - 1) / a;
  std::vector<V> phases;
  for (int64_t j = 0; j < a; ++j) {
    std::vector<int64_t> idx(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) idx[size_t(i)] = j + a * i < L ? j + a * i : -1;
    phases.push_back(run(ad::gather_rows(x, std::move(idx)), j));
  }
  std::vector<int64_t> back(static_cast<size_t>(L));
  for (int64_t t = 0; t < L; ++t) back[size_t(t)] = (t % a) * m + t / a;
  const V out = ad::gather_rows(ad::concat_rows(phases), std::move(back));
  P.tape.release(mark, {out});
  return out;
}

/// The merge after a layer: the hierarchies' rows side by side, normed, through the merge MLP,
/// added back to every hierarchy (hierarchy_merge_all; strided ones read every s-th row) or to
/// the predicting one.
template <class T, class Ls>
void merge(const HierConfig& cfg, Leaves<T, Ls>& P, const typename HierParams<T, Ls>::Merge& mg, std::vector<ad::Var<T>>& tok) {
  ad::Var<T> pooled = ad::l2_rms_norm(hierarchical_cat(cfg, tok), P(mg.gamma));
  pooled = ad::linear(ad::silu(ad::linear(pooled, P(mg.w1), P(mg.b1))), P(mg.w2), P(mg.b2));
  if (!cfg.hierarchy_merge_all) {
    tok[size_t(cfg.predict_index())] = ad::add(tok[size_t(cfg.predict_index())], pooled);
    return;
  }
  int64_t c0 = 0;
  for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
    const int64_t d = cfg.dim_of(h), s = cfg.stride(h), Lh = tok[size_t(h)].rows();
    std::vector<int64_t> idx(static_cast<size_t>(Lh));
    for (int64_t k = 0; k < Lh; ++k) idx[size_t(k)] = k * s < pooled.rows() ? k * s : -1;
    tok[size_t(h)] = ad::add(tok[size_t(h)], ad::gather_rows(ad::cols(pooled, c0, d), std::move(idx)));
    c0 += d;
  }
}

/// The whole model on one sequence `ids` (checked: 1 .. seq_len tokens inside the vocabulary),
/// its parameters entering through P (and its taps, P.tap).
template <class T, class Ls>
Graph<T> build(const HierParams<T, Ls>& p, Leaves<T, Ls>& P, const std::vector<int64_t>& ids) {
  using V = ad::Var<T>;
  const HierConfig& cfg = p.cfg;
  const int64_t n = int64_t(ids.size()), H = cfg.num_hierarchies();
  if (n == 0) throw ShapeError("HierarchicalTransformer: empty input");
  if (n > cfg.seq_len)
    throw ShapeError("HierarchicalTransformer: input of " + std::to_string(n) + " tokens is longer than seq_len = " +
                     std::to_string(cfg.seq_len));
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || ids[i] >= cfg.num_tokens)
      throw ShapeError("HierarchicalTransformer: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                       " is outside the vocabulary [0, " + std::to_string(cfg.num_tokens) + ")");
  Graph<T> g;
  const V x = ad::gather_rows(P(p.emb), ids);  // (n, D)
  std::vector<V> tok;
  for (int64_t h = 0; h < H; ++h) {
    const auto& cp = p.compress[size_t(h)];
    const int64_t c = cfg.compression(h);
    V t = x;
    if (c == 1) {
      if (cp.has_proj) t = ad::linear(x, P(cp.proj));
    } else {
      t = ad::silu(ad::causal_conv1d(x, P(cp.conv_w), P(cp.conv_b), c, cfg.stride(h)));  // (ceil(n / s), 4D)
      t = ad::linear(t, P(cp.pw_w), P(cp.pw_b));
    }
    tok.push_back(ad::layer_norm(t, P(p.post_w[size_t(h)]), P(p.post_b[size_t(h)])));
  }
  g.token_embeds = tok;
  const int64_t pi = cfg.predict_index();
  // an inference tape keeps, from one layer to the next, only the rows of each hierarchy
  const size_t mark = P.tape.size();
  for (int64_t l = 0; l < cfg.depth; ++l) {
    P.layer = l;
    for (int64_t h = 0; h < H; ++h) {
      tok[size_t(h)] = detail::block(cfg, P, p.layers[size_t(l)][size_t(h)], P.grad ? &P.grad->layers[size_t(l)][size_t(h)] : nullptr,
                             h, tok[size_t(h)]);
      if (P.tap) P.tap->block_out[size_t(l)][size_t(h)] = tok[size_t(h)].value();
    }
    if (cfg.need_merge()) detail::merge(cfg, P, p.merges[size_t(l)], tok);
    P.tape.release(mark, tok);
  }
  for (int64_t h = 0; h < H; ++h)
    g.embeds.push_back(ad::layer_norm(tok[size_t(h)], P(p.norm_w[size_t(h)]), P(p.norm_b[size_t(h)])));
  const V pe = cfg.predict_use_all_hierarchy ? detail::hierarchical_cat(cfg, g.embeds) : g.embeds[size_t(pi)];
  g.logits = ad::linear(pe, P(p.to_logits));
  return g;
}

}  // namespace detail

/// Logits (n, V) of one sequence (n <= seq_len); with `extras`, its taps filled in.
template <class T, class Ls>
ad::Matrix<T> forward_logits(const HierParams<T, Ls>& p, const std::vector<int64_t>& ids, ForwardExtras<T>* extras = nullptr) {
  ad::Tape<T> tape{ad::no_grad};  // no gradient: intermediates are freed as the forward goes
  detail::Leaves<T, Ls> leaves(tape, p, nullptr);
  if (extras && extras->phases) {
    leaves.tap = extras;
    extras->phase_rows.clear();
    extras->block_out.assign(size_t(p.cfg.depth), std::vector<ad::Matrix<T>>(size_t(p.cfg.num_hierarchies())));
  }
  detail::Graph<T> g = detail::build(p, leaves, ids);
  if (extras) {
    extras->token_embeds.clear();
    extras->hidden_embeds.clear();
    for (const ad::Var<T>& v : g.token_embeds) extras->token_embeds.push_back(v.value());
    for (const ad::Var<T>& v : g.embeds) extras->hidden_embeds.push_back(v.value());
  }
  return g.logits.value();
}

}  // namespace ttt::hier

#if defined(TTT_PRECOMPILED)
namespace ttt::hier {
extern template ad::Matrix<float> forward_logits<float>(const HierParams<float>&, const std::vector<int64_t>&,
                                                        ForwardExtras<float>*);
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template ad::Matrix<double> forward_logits<double>(const HierParams<double>&, const std::vector<int64_t>&,
                                                          ForwardExtras<double>*);
#endif
}  // namespace ttt::hier
#endif
