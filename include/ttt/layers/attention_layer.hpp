#pragma once
/// \file layers/attention_layer.hpp
/// Causal multi-head softmax attention as a sequence mixer (the attention baselines' layer):
/// q, k, v projections, interleaved RoPE at absolute positions (the TTT layer's JAX convention,
/// blocks/rope.hpp), 1/sqrt(head_dim) scaling, the tiled kernel of blocks/attention.hpp, an
/// optional sliding `window` (a fixed-size state, like an RNN), and the output projection. A KV
/// cache (growing, or a ring of `window` rows) makes chunked prefill and one-token decode one code
/// path. Its training forward and reverse pass (`MixerGrad<AttentionLayer<S>>`) follow the layer.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../blocks/attention.hpp"
#include "../blocks/kv_cache.hpp"
#include "../blocks/rope.hpp"
#include "../core/model_config.hpp"
#include "../core/parallel.hpp"
#include "../core/params.hpp"
#include "mixer.hpp"

namespace ttt {

/// The sizes of ModelConfig (vocab_size, hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads, hidden_act, rms_norm_eps, rope_theta, tie_word_embeddings,
/// initializer_range) plus the attention window; the TTT-only options (ttt_layer_type,
/// mini_batch_size, ttt_base_lr, pre_conv, share_qk, use_gate) are ignored. So a TTT model and its
/// attention baseline are made from one ModelConfig: `AttnConfig(ttt_cfg)` or
/// `AttnConfig(ttt_cfg, 512)`.
struct AttnConfig : ModelConfig {
  /// Sliding window: a token sees itself and the `window` tokens before it; < 0: all earlier tokens.
  int64_t window = -1;

  AttnConfig() = default;
  explicit AttnConfig(const ModelConfig& m, int64_t w = -1) : ModelConfig(m), window(w) {}

  void validate(const std::string& source = "config") const {
    ModelConfig::validate(source);
    if (window < -1)
      throw ConfigError(source + ": attention window must be >= 0, or -1 for full attention; got " +
                        std::to_string(window));
  }
  bool operator==(const AttnConfig&) const = default;
};

template <class S = float>
class AttentionLayer {
 public:
  using Scalar = S;
  using Config = AttnConfig;
  using M = MatT<S>;
  template <class T>
  using Rebind = AttentionLayer<T>;
  /// Checkpoint names: "model.layers.{i}.self_attn.{q,k,v,o}_proj.weight" (Llama's).
  static constexpr const char* kPrefix = "self_attn.";
  static constexpr bool kPreConv = false;

  int64_t C = 0, H = 0, f = 0, window = -1;
  double rope_theta = 10000.0;
  M q, k, v, o;  // [C, C] (Linear [out, in])

  /// Per sequence: the KV cache (its length is the position of the next token).
  struct State {
    attn::KVCacheT<S> cache;
  };
  struct Workspace {
    M XQ, XK, XV, A;
    blocks::RopeTable rope;  // cos/sin of this call's rows (n, f/2): nothing grows with the position
    std::vector<int64_t> rows;
  };

  AttentionLayer() = default;
  explicit AttentionLayer(const AttnConfig& cfg)
      : C(cfg.hidden_size), H(cfg.num_attention_heads), f(cfg.head_dim()), window(cfg.window), rope_theta(cfg.rope_theta) {
    q = k = v = o = M::Zero(C, C);
  }

  /// q_proj, k_proj, v_proj, o_proj under `prefix` ("model.layers.{i}.self_attn.").
  template <class F>
  void visit_params(const std::string& prefix, F&& fn) {
    fn(make_param(prefix + "q_proj.weight", {C, C}, q.data()));
    fn(make_param(prefix + "k_proj.weight", {C, C}, k.data()));
    fn(make_param(prefix + "v_proj.weight", {C, C}, v.data()));
    fn(make_param(prefix + "o_proj.weight", {C, C}, o.data()));
  }

  bool same_shape(const AttentionLayer& other) const { return other.C == C && other.H == H && other.window == window; }

  State new_state() const { return State{attn::KVCacheT<S>(C, window)}; }

  S scale() const { return S(1) / std::sqrt(S(f)); }

  /// out = attention of the n rows of X (n, C) at positions pos0 ... over the cache and
  /// themselves; the cache advances.
  void forward(const M& X, State& st, int64_t pos0, Workspace& ws, M& out) const;

  /// XQ, XK, XV of X with RoPE (row r at table row rows[r]).
  void project(const M& X, const blocks::RopeTable& rope, const int64_t* rows, M& XQ, M& XK, M& XV) const {
    const int64_t n = X.rows();
    ensure_size(XQ, n, C);
    ensure_size(XK, n, C);
    ensure_size(XV, n, C);
    blocks::matmul(mv(XQ), cv(X), cv(q).transpose());
    blocks::matmul(mv(XK), cv(X), cv(k).transpose());
    blocks::matmul(mv(XV), cv(X), cv(v).transpose());
    blocks::rope(XQ, f, rope, rows);
    blocks::rope(XK, f, rope, rows);
  }

  /// FLOPs of the projections per token (the attention pairs depend on the context).
  double flops_per_token() const { return 8.0 * double(C) * double(C); }
};

template <class S>
void AttentionLayer<S>::forward(const M& X, State& st, int64_t pos0, Workspace& ws, M& out) const {
  const int64_t n = X.rows();
  ws.rope.fill(pos0, n, f, rope_theta);
  ws.rows.resize(size_t(n));
  for (int64_t r = 0; r < n; ++r) ws.rows[size_t(r)] = r;
  project(X, ws.rope, ws.rows.data(), ws.XQ, ws.XK, ws.XV);
  ensure_size(ws.A, n, C);
  attn::attend<S>(st.cache, ws.XQ, ws.XK, ws.XV, H, scale(), ws.A);
  ensure_size(out, n, C);
  blocks::matmul(mv(out), cv(ws.A), cv(o).transpose());
}

template <class S>
struct MixerGrad<AttentionLayer<S>> {
  using Layer = AttentionLayer<S>;
  using M = MatT<S>;
  /// The model's training engine recomputes each block's forward in the reverse pass (memory: one
  /// block's activations), as attention's activations grow with the context.
  static constexpr bool kRecompute = true;

  struct Tape {
    M X, XQ, XK, XV, A;
    aligned_vector<S> lse;  // [H, n]
    blocks::RopeTable rope;
    std::vector<int64_t> rows;
  };
  struct Buffers {
    M dA, dXQ, dXK, dXV;
  };

  /// out = layer(X) for a whole sequence from position 0.
  static void forward(const Layer& w, CRefT<S> X, M& out, Tape& tp, Buffers&, int64_t /*group*/);

  /// dX += d/dX, g += d/d(weights) of <dout, out>.
  static void backward(const Layer& w, Layer& g, CRefT<S> dout, RefT<S> dX, const Tape& tp, Buffers& b);

  static int64_t tape_bytes(const Tape& tp) {
    return int64_t(tp.X.size() + tp.XQ.size() + tp.XK.size() + tp.XV.size() + tp.A.size() + tp.lse.size()) *
           int64_t(sizeof(S));
  }
};

template <class S>
void MixerGrad<AttentionLayer<S>>::forward(const Layer& w, CRefT<S> X, M& out, Tape& tp, Buffers&, int64_t) {
  const int64_t n = X.rows(), f = w.f, H = w.H;
  tp.X = X;
  tp.rope.fill(0, n, f, w.rope_theta);
  tp.rows.resize(size_t(n));
  for (int64_t r = 0; r < n; ++r) tp.rows[size_t(r)] = r;
  w.project(tp.X, tp.rope, tp.rows.data(), tp.XQ, tp.XK, tp.XV);
  ensure_size(tp.A, n, w.C);
  tp.lse.resize(size_t(H * n));
  parallel_heads(H, n >= 64, [&](int64_t h) {
    attn::detail::forward<S>(tp.XQ.middleCols(h * f, f), tp.XK.middleCols(h * f, f), tp.XV.middleCols(h * f, f),
                             w.scale(), w.window, 0, 0, tp.A.middleCols(h * f, f), tp.lse.data() + h * n);
  });
  ensure_size(out, n, w.C);
  blocks::matmul(out, tp.A, w.o.transpose());
}

template <class S>
void MixerGrad<AttentionLayer<S>>::backward(const Layer& w, Layer& g, CRefT<S> dout, RefT<S> dX, const Tape& tp, Buffers& b) {
  const int64_t n = tp.X.rows(), f = w.f, H = w.H, C = w.C;
  blocks::matmul(g.o, dout.transpose(), tp.A, true);
  ensure_size(b.dA, n, C);
  blocks::matmul(b.dA, dout, w.o);
  b.dXQ.setZero(n, C);
  b.dXK.setZero(n, C);
  b.dXV.setZero(n, C);
  parallel_heads(H, n >= 64, [&](int64_t h) {
    attn::detail::backward<S>(tp.XQ.middleCols(h * f, f), tp.XK.middleCols(h * f, f), tp.XV.middleCols(h * f, f),
                              tp.A.middleCols(h * f, f), b.dA.middleCols(h * f, f), tp.lse.data() + h * n, w.scale(),
                              w.window, 0, 0, b.dXQ.middleCols(h * f, f), b.dXK.middleCols(h * f, f),
                              b.dXV.middleCols(h * f, f));
  });
  blocks::rope(b.dXQ, f, tp.rope, tp.rows.data(), /*inverse=*/true);
  blocks::rope(b.dXK, f, tp.rope, tp.rows.data(), /*inverse=*/true);
  blocks::matmul(g.q, b.dXQ.transpose(), tp.X, true);
  blocks::matmul(g.k, b.dXK.transpose(), tp.X, true);
  blocks::matmul(g.v, b.dXV.transpose(), tp.X, true);
  blocks::matmul(dX, b.dXQ, w.q, true);
  blocks::matmul(dX, b.dXK, w.k, true);
  blocks::matmul(dX, b.dXV, w.v, true);
}

}  // namespace ttt

#if defined(TTT_PRECOMPILED)
namespace ttt {
extern template class AttentionLayer<float>;
extern template struct MixerGrad<AttentionLayer<float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template class AttentionLayer<double>;
extern template struct MixerGrad<AttentionLayer<double>>;
#endif
}  // namespace ttt
#endif
