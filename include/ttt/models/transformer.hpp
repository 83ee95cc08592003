#pragma once
/// \file transformer.hpp
/// The attention baselines of the scaling study, built from the same blocks as TTTModel: token
/// embedding, blocks of x += Attn(RMSNorm(x)) and x += SwiGLU(RMSNorm(x)), final RMSNorm, LM head
/// (tied to the embedding by default). The sequence mixer is causal multi-head softmax attention
/// with interleaved RoPE (nn::apply_rope, the TTT layer's JAX convention, but at absolute positions,
/// not positions inside a mini-batch) and 1/sqrt(head_dim) scaling, tiled (attention.hpp); an
/// optional sliding `window` turns it into the sliding-window baseline (a fixed-size state, like an
/// RNN). A KV cache (growing, or a ring of `window` rows) makes chunked prefill and one-token
/// decode one code path, with the meaning of TTTModel::forward.
///
/// \code
///   ttt::AttnConfig cfg(ttt::ModelConfig::sized("attn", 256, 128, 4, 4, 344), /*window=*/-1);
///   ttt::TransformerModel model(cfg);
///   model.init_weights(1);
///   auto st = model.new_state();
///   ttt::Mat last;
///   model.forward(st, prompt, &last, ttt::Logits::last);        // prefill
///   model.forward(st, std::span(&next, 1), &last, ttt::Logits::last);  // decode
///   ttt::TransformerModel grad(cfg);
///   double loss = ttt::train::loss_and_grad(model, batch, grad);  // float, hand-written backward
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../blocks/attention.hpp"
#include "../core/error.hpp"
#include "ttt_model.hpp"  // Logits
#include "model_config.hpp"
#include "../blocks/nn.hpp"
#include "../core/params.hpp"
#include "../core/tensor.hpp"
#include "../train/ops.hpp"

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
    if (window < -1) throw ConfigError(source + ": attention window must be >= 0, or -1 for full attention; got " +
                                       std::to_string(window));
  }
  nlohmann::json to_json() const {
    nlohmann::json j = ModelConfig::to_json();
    j["attention_window"] = window;
    j["architectures"] = {"TransformerForCausalLM"};
    return j;
  }
};

class TransformerModel {
 public:
  struct Block {
    RowVec seq_norm, ffn_norm;  // [C]
    Mat q, k, v, o;             // [C, C] (Linear [out, in])
    Mat gate, up, down;         // [I, C], [I, C], [C, I]
  };

  /// Per-sequence state: the position, one KV cache per layer, reusable buffers.
  struct State {
    int64_t pos = 0;
    std::vector<attn::KVCache> caches;
    struct Buffers {
      Mat h, xn, XQ, XK, XV, A, gate, up, hn;
      nn::RopeTable rope;  // cos/sin of this call's rows (n, f/2): nothing grows with the position
      std::vector<int64_t> rows;
    } ws;
  };

  AttnConfig cfg;
  Mat embed;    // [V, C]
  Mat lm_head;  // [V, C] only when the embeddings are not tied
  RowVec norm;  // [C]
  std::vector<Block> blocks;

  explicit TransformerModel(const AttnConfig& c) : cfg(c) {
    cfg.validate();
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
    embed = Mat::Zero(V, C);
    if (!cfg.tie_word_embeddings) lm_head = Mat::Zero(V, C);
    norm = RowVec::Ones(C);
    blocks.resize(size_t(cfg.num_hidden_layers));
    for (auto& b : blocks) {
      b.seq_norm = RowVec::Ones(C);
      b.ffn_norm = RowVec::Ones(C);
      b.q = b.k = b.v = b.o = Mat::Zero(C, C);
      b.gate = Mat::Zero(I, C);
      b.up = Mat::Zero(I, C);
      b.down = Mat::Zero(C, I);
    }
  }

  int64_t head_dim() const { return cfg.head_dim(); }
  int64_t window() const { return cfg.window; }

  /// Every parameter, named as a Llama-style checkpoint would (norms named as in TTTModel).
  template <class F>
  void visit_params(F&& fn) {
    using I = ParamRef::Init;
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, In = cfg.intermediate_size;
    const double std = cfg.initializer_range;
    fn(make_param("model.embed_tokens.weight", {V, C}, embed.data(), I::normal, std));
    for (size_t i = 0; i < blocks.size(); ++i) {
      Block& b = blocks[i];
      const std::string pre = "model.layers." + std::to_string(i) + ".";
      fn(make_param(pre + "self_attn.q_proj.weight", {C, C}, b.q.data(), I::normal, std));
      fn(make_param(pre + "self_attn.k_proj.weight", {C, C}, b.k.data(), I::normal, std));
      fn(make_param(pre + "self_attn.v_proj.weight", {C, C}, b.v.data(), I::normal, std));
      fn(make_param(pre + "self_attn.o_proj.weight", {C, C}, b.o.data(), I::normal, std));
      fn(make_param(pre + "mlp.gate_proj.weight", {In, C}, b.gate.data(), I::normal, std));
      fn(make_param(pre + "mlp.up_proj.weight", {In, C}, b.up.data(), I::normal, std));
      fn(make_param(pre + "mlp.down_proj.weight", {C, In}, b.down.data(), I::normal, std));
      fn(make_param(pre + "seq_norm.weight", {C}, b.seq_norm.data(), I::ones, 0, true));
      fn(make_param(pre + "ffn_norm.weight", {C}, b.ffn_norm.data(), I::ones, 0, true));
    }
    fn(make_param("model.norm.weight", {C}, norm.data(), I::ones, 0, true));
    if (!cfg.tie_word_embeddings) fn(make_param("lm_head.weight", {V, C}, lm_head.data(), I::normal, std));
  }

  void init_weights(uint64_t seed) {
    std::mt19937_64 rng(seed);
    visit_params([&](const ParamRef& p) { init_param(p, rng); });
  }

  int64_t num_params() {
    int64_t n = 0;
    visit_params([&](const ParamRef& p) { n += p.numel(); });
    return n;
  }

  State new_state() const {
    State s;
    for (size_t i = 0; i < blocks.size(); ++i) s.caches.emplace_back(cfg.hidden_size, cfg.window);
    return s;
  }

  /// KV-cache bytes of one sequence after `context` tokens (all layers; K and V, float):
  /// 2 * layers * min(context, window) * hidden_size * 4, or with context in place of the min
  /// for full attention.
  int64_t state_bytes(int64_t context) const {
    return int64_t(blocks.size()) * attn::KVCache::bytes_at(context, cfg.hidden_size, cfg.window);
  }
  /// KV-cache bytes that `st` holds now.
  int64_t state_bytes(const State& st) const {
    int64_t n = 0;
    for (const auto& c : st.caches) n += c.bytes();
    return n;
  }

  const Mat& head() const { return cfg.tie_word_embeddings ? embed : lm_head; }

  void check_ids(std::span<const int64_t> ids) const {
    if (ids.empty()) throw ShapeError("input_ids: empty sequence (need at least one token)");
    for (size_t t = 0; t < ids.size(); ++t)
      if (ids[t] < 0 || ids[t] >= cfg.vocab_size)
        throw ShapeError("input_ids: token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                         " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
  }

  /// Run the n tokens `ids` of one sequence from the position and caches in `st`, advancing them.
  /// logits: (n, V) for Logits::all, (1, V) for Logits::last. hidden (optional): output of each
  /// block, (n, C) each. Any chunking of a sequence computes what one full forward computes.
  void forward(State& st, std::span<const int64_t> ids, Mat* logits, Logits which = Logits::all,
               std::vector<Mat>* hidden = nullptr) const {
    check_ids(ids);
    if (st.caches.size() != blocks.size())
      throw ShapeError("TransformerModel::forward: the state has " + std::to_string(st.caches.size()) +
                       " layer caches, the model " + std::to_string(blocks.size()) + " layers (use new_state())");
    const int64_t n = int64_t(ids.size()), C = cfg.hidden_size, H = cfg.num_attention_heads, f = head_dim();
    auto& w = st.ws;
    rope_rows(st.pos, n, w.rope);
    w.rows.resize(size_t(n));
    for (int64_t r = 0; r < n; ++r) w.rows[size_t(r)] = r;
    ensure_size(w.h, n, C);
    for (int64_t t = 0; t < n; ++t) w.h.row(t) = embed.row(ids[size_t(t)]);
    if (hidden) hidden->resize(blocks.size());
    const nn::Act act = nn::act_from_name(cfg.hidden_act);
    const float scale = 1.0f / std::sqrt(float(f));
    for (size_t i = 0; i < blocks.size(); ++i) {
      const Block& b = blocks[i];
      nn::rms_norm(w.h, b.seq_norm, cfg.rms_norm_eps, w.xn);  // x = x + Attn(RMSNorm(x))
      ensure_size(w.XQ, n, C);
      ensure_size(w.XK, n, C);
      ensure_size(w.XV, n, C);
      ensure_size(w.A, n, C);
      w.XQ.noalias() = w.xn * b.q.transpose();
      w.XK.noalias() = w.xn * b.k.transpose();
      w.XV.noalias() = w.xn * b.v.transpose();
      nn::apply_rope(w.XQ, f, w.rope, w.rows.data());
      nn::apply_rope(w.XK, f, w.rope, w.rows.data());
      attn::attend(st.caches[i], w.XQ, w.XK, w.XV, H, scale, w.A);
      w.h.noalias() += w.A * b.o.transpose();
      nn::rms_norm(w.h, b.ffn_norm, cfg.rms_norm_eps, w.xn);  // x = x + down(act(gate x) * up x)
      ensure_size(w.gate, n, cfg.intermediate_size);
      ensure_size(w.up, n, cfg.intermediate_size);
      w.gate.noalias() = w.xn * b.gate.transpose();
      w.up.noalias() = w.xn * b.up.transpose();
      nn::act_mul(act, w.gate.data(), w.up.data(), size_t(w.gate.size()));
      w.h.noalias() += w.gate * b.down.transpose();
      if (hidden) (*hidden)[i] = w.h;
    }
    st.pos += n;
    if (which == Logits::none || !logits) return;
    if (which == Logits::last) {
      ensure_size(w.hn, 1, C);
      nn::rms_norm(w.h.bottomRows(1), norm, cfg.rms_norm_eps, w.hn);
    } else {
      nn::rms_norm(w.h, norm, cfg.rms_norm_eps, w.hn);
    }
    ensure_size(*logits, w.hn.rows(), cfg.vocab_size);
    logits->noalias() = w.hn * head().transpose();
  }

  /// Full-sequence forward from a fresh state: (n, V) logits.
  Mat forward(std::span<const int64_t> ids, std::vector<Mat>* hidden = nullptr) const {
    State st = new_state();
    Mat logits;
    forward(st, ids, &logits, Logits::all, hidden);
    return logits;
  }

  /// FLOPs of a prefill of n tokens from position 0 (projections, exact attention pairs of the
  /// window, SwiGLU, LM head on every row).
  double prefill_flops(int64_t n) const { return chunk_flops(n, 0); }
  /// Mean FLOPs per token of a prefill of `context` tokens (what training and prefill pay).
  double flops_per_token(int64_t context) const {
    return context > 0 ? prefill_flops(context) / double(context) : chunk_flops(1, 0);
  }
  /// FLOPs of decoding one token with `context` tokens already in the cache.
  double decode_flops(int64_t context) const { return chunk_flops(1, context); }

 private:
  double chunk_flops(int64_t n, int64_t pos0) const {
    const double C = double(cfg.hidden_size), I = double(cfg.intermediate_size), V = double(cfg.vocab_size);
    const double dense = 8.0 * C * C + 6.0 * C * I;
    const double att = double(cfg.num_attention_heads) *
                       attn::forward_flops(n, pos0 + n, head_dim(), cfg.window, pos0, 0);
    return double(blocks.size()) * (dense * double(n) + att) + 2.0 * C * V * double(n);
  }

  /// cos/sin of positions pos0 .. pos0+n-1 into rows 0..n-1 of t, with nn::RopeTable's float
  /// formula (the training path uses a RopeTable: the same values).
  void rope_rows(int64_t pos0, int64_t n, nn::RopeTable& t) const {
    const int64_t f = head_dim();
    ensure_size(t.cos, n, f / 2);
    ensure_size(t.sin, n, f / 2);
    for (int64_t i = 0; i < f / 2; ++i) {
      const float inv_freq = 1.0f / std::pow(float(cfg.rope_theta), float(2 * i) / float(f));
      for (int64_t r = 0; r < n; ++r) {
        const float a = float(pos0 + r) * inv_freq;
        t.cos(r, i) = std::cos(a);
        t.sin(r, i) = std::sin(a);
      }
    }
  }
};

namespace train {
namespace detail {

template <class T>
using MatT = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using RowT = Eigen::Matrix<T, 1, Eigen::Dynamic>;

/// A TransformerModel's parameters (or their gradients) in precision T.
template <class T>
struct AttnWeights {
  struct Block {
    RowT<T> seq_norm, ffn_norm;
    MatT<T> q, k, v, o, gate, up, down;
  };
  MatT<T> embed, lm_head;
  RowT<T> norm;
  std::vector<Block> blocks;
};

/// fn(model tensor, weights tensor) for every tensor pair.
template <class M, class W, class F>
void zip_attn(M& m, W& w, F&& fn) {
  w.blocks.resize(m.blocks.size());
  fn(m.embed, w.embed), fn(m.lm_head, w.lm_head), fn(m.norm, w.norm);
  for (size_t i = 0; i < m.blocks.size(); ++i) {
    auto& a = m.blocks[i];
    auto& b = w.blocks[i];
    fn(a.seq_norm, b.seq_norm), fn(a.ffn_norm, b.ffn_norm), fn(a.q, b.q), fn(a.k, b.k), fn(a.v, b.v), fn(a.o, b.o);
    fn(a.gate, b.gate), fn(a.up, b.up), fn(a.down, b.down);
  }
}

/// The training forward (whole sequences from position 0) and its reverse pass, in precision T.
template <class T>
struct AttnRunner {
  using M = MatT<T>;
  using R = RowT<T>;
  const TransformerModel& model;
  const AttnWeights<T>& W;
  AttnWeights<T>& dW;
  const AttnConfig& cfg;
  int64_t C, H, f, window;
  nn::Act act;
  T scale;
  M cos_t, sin_t;  // RoPE table at absolute positions: the inference table's float values, as T

  struct BlockTape {
    M X, XQ, XK, XV, A, h_mid, xn, gt, up, a;
    std::vector<T> lse;  // [H, n]
  };
  /// Everything sized by the sequence length, kept from call to call (one set per thread), so that
  /// steady-state training reallocates nothing.
  struct Buffers {
    std::vector<M> block_in;
    M h, hn, dlogits, dhn, dh, hi, ag, da, dgt, dup, dxn, dA, dXQ, dXK, dXV, dX;
    BlockTape tape;
  };
  Buffers& buf;

  AttnRunner(const TransformerModel& m, const AttnWeights<T>& w, AttnWeights<T>& dw, int64_t max_len, Buffers& b)
      : model(m), W(w), dW(dw), cfg(m.cfg), C(m.cfg.hidden_size), H(m.cfg.num_attention_heads), f(m.cfg.head_dim()),
        window(m.cfg.window), act(nn::act_from_name(m.cfg.hidden_act)), scale(T(1) / std::sqrt(T(m.cfg.head_dim()))), buf(b) {
    // the same float angles as the inference path (TransformerModel::forward)
    const nn::RopeTable t(std::max<int64_t>(max_len, 1), f, cfg.rope_theta);
    cos_t = t.cos.cast<T>();
    sin_t = t.sin.cast<T>();
  }

  void rms(const M& x, const R& w, M& y) const {
    const T eps = T(cfg.rms_norm_eps);
    y.resize(x.rows(), x.cols());
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const T r = T(1) / std::sqrt(x.row(t).squaredNorm() / T(x.cols()) + eps);
      y.row(t) = (x.row(t) * r).cwiseProduct(w);
    }
  }
  /// dx += ..., dw += ... of <dy, rms(x, w)> (train/ops.hpp's rms_bwd in precision T).
  void rms_bwd(const M& x, const R& w, const M& dy, M& dx, R& dw) const {
    const T eps = T(cfg.rms_norm_eps), D = T(x.cols());
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const T r = T(1) / std::sqrt(x.row(t).squaredNorm() / D + eps);
      const R xh = x.row(t) * r;
      dw += dy.row(t).cwiseProduct(xh);
      const R g = dy.row(t).cwiseProduct(w);
      dx.row(t) += r * (g - xh * (g.dot(xh) / D));
    }
  }
  /// Interleaved RoPE at positions 0..n-1; `inverse` rotates back (the VJP: rotations are orthogonal).
  void rope(M& X, bool inverse) const {
    const int64_t half = f / 2;
    for (Eigen::Index r = 0; r < X.rows(); ++r)
      for (int64_t h = 0; h < H; ++h) {
        T* x = X.row(r).data() + h * f;
        for (int64_t i = 0; i < half; ++i) {
          const T c = cos_t(r, i), s = inverse ? -sin_t(r, i) : sin_t(r, i);
          const T a = x[2 * i], b = x[2 * i + 1];
          x[2 * i] = a * c - b * s;
          x[2 * i + 1] = b * c + a * s;
        }
      }
  }

  /// out = act(x); SiLU vectorised (Eigen's exp), other activations by train/ops.hpp's scalar form.
  void act_fwd(const M& x, M& out) const {
    if (act == nn::Act::silu) out = x.array() / (T(1) + (-x.array()).exp());
    else out = x.unaryExpr([this](T v) { return T(ops::act(act, double(v))); });
  }
  /// out = act'(x).
  void act_grad(const M& x, M& out) const {
    if (act == nn::Act::silu) {  // s (1 + x (1 - s)), s = sigmoid(x)
      out = (T(1) / (T(1) + (-x.array()).exp())).matrix();
      out.array() *= T(1) + x.array() * (T(1) - out.array());
    } else {
      out = x.unaryExpr([this](T v) { return T(ops::act_grad(act, double(v))); });
    }
  }

  /// Block i on h (its input, replaced by its output), keeping what its reverse pass needs.
  void block_forward(size_t i, M& h, BlockTape& tp) const {
    const auto& b = W.blocks[i];
    const int64_t n = h.rows();
    rms(h, b.seq_norm, tp.X);
    tp.XQ.noalias() = tp.X * b.q.transpose();
    tp.XK.noalias() = tp.X * b.k.transpose();
    tp.XV.noalias() = tp.X * b.v.transpose();
    rope(tp.XQ, false);
    rope(tp.XK, false);
    tp.A.resize(n, C);
    tp.lse.resize(size_t(H * n));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1 && n >= 64)
#endif
    for (int64_t hd = 0; hd < H; ++hd)
      attn::forward(tp.XQ.middleCols(hd * f, f), tp.XK.middleCols(hd * f, f), tp.XV.middleCols(hd * f, f), scale,
                    window, 0, 0, tp.A.middleCols(hd * f, f), tp.lse.data() + hd * n);
    h.noalias() += tp.A * b.o.transpose();
    tp.h_mid = h;
    rms(h, b.ffn_norm, tp.xn);
    tp.gt.noalias() = tp.xn * b.gate.transpose();
    tp.up.noalias() = tp.xn * b.up.transpose();
    act_fwd(tp.gt, buf.ag);
    tp.a = buf.ag.cwiseProduct(tp.up);
    h.noalias() += tp.a * b.down.transpose();
  }

  /// dh: gradient at the block's output on entry, at its input on return (h_in: the block's input).
  void block_backward(size_t i, const M& h_in, const BlockTape& tp, M& dh) const {
    const auto& b = W.blocks[i];
    auto& g = dW.blocks[i];
    const int64_t n = h_in.rows();
    // SwiGLU: h_out = h_mid + (act(gt) * up) down^T
    g.down.noalias() += dh.transpose() * tp.a;
    auto &da = buf.da, &dgt = buf.dgt, &dup = buf.dup, &dxn = buf.dxn;
    da.noalias() = dh * b.down;
    act_grad(tp.gt, dgt);
    dgt.array() *= da.array() * tp.up.array();
    act_fwd(tp.gt, dup);
    dup.array() *= da.array();
    g.gate.noalias() += dgt.transpose() * tp.xn;
    g.up.noalias() += dup.transpose() * tp.xn;
    dxn.noalias() = dgt * b.gate;
    dxn.noalias() += dup * b.up;
    rms_bwd(tp.h_mid, b.ffn_norm, dxn, dh, g.ffn_norm);  // dh: now at h_mid
    // attention: h_mid = h_in + A o^T
    g.o.noalias() += dh.transpose() * tp.A;
    auto &dA = buf.dA, &dXQ = buf.dXQ, &dXK = buf.dXK, &dXV = buf.dXV, &dX = buf.dX;
    dA.noalias() = dh * b.o;
    dXQ.setZero(n, C);
    dXK.setZero(n, C);
    dXV.setZero(n, C);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1 && n >= 64)
#endif
    for (int64_t hd = 0; hd < H; ++hd)
      attn::backward(tp.XQ.middleCols(hd * f, f), tp.XK.middleCols(hd * f, f), tp.XV.middleCols(hd * f, f),
                     tp.A.middleCols(hd * f, f), dA.middleCols(hd * f, f), tp.lse.data() + hd * n, scale, window, 0, 0,
                     dXQ.middleCols(hd * f, f), dXK.middleCols(hd * f, f), dXV.middleCols(hd * f, f));
    rope(dXQ, true);
    rope(dXK, true);
    g.q.noalias() += dXQ.transpose() * tp.X;
    g.k.noalias() += dXK.transpose() * tp.X;
    g.v.noalias() += dXV.transpose() * tp.X;
    dX.noalias() = dXQ * b.q;
    dX.noalias() += dXK * b.k;
    dX.noalias() += dXV * b.v;
    rms_bwd(h_in, b.seq_norm, dX, dh, g.seq_norm);
  }

  /// Sum over positions t < n-1 of the cross entropy of predicting ids[t+1]; gradients times
  /// `loss_scale` added to dW. The forward keeps each block's input only; the reverse pass
  /// recomputes one block's forward at a time (memory: one block's activations).
  double sequence(std::span<const int64_t> ids, double loss_scale) const {
    const int64_t n = int64_t(ids.size());
    auto& block_in = buf.block_in;
    block_in.resize(W.blocks.size());
    M& h = buf.h;
    h.resize(n, C);
    for (int64_t t = 0; t < n; ++t) h.row(t) = W.embed.row(ids[size_t(t)]);
    for (size_t i = 0; i < W.blocks.size(); ++i) {
      block_in[i] = h;
      block_forward(i, h, buf.tape);
    }
    M& hn = buf.hn;
    rms(h, W.norm, hn);
    const M& head = cfg.tie_word_embeddings ? W.embed : W.lm_head;
    M& dlogits = buf.dlogits;  // logits, then their gradient in place      (n, V)
    dlogits.noalias() = hn * head.transpose();
    double loss = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (t + 1 == n) {
        dlogits.row(t).setZero();
        break;
      }
      const T mx = dlogits.row(t).maxCoeff();
      const int64_t y = ids[size_t(t + 1)];
      const T zy = dlogits(t, y);
      dlogits.row(t) = (dlogits.row(t).array() - mx).exp().matrix();
      const double se = double(dlogits.row(t).sum());
      loss += double(mx) + std::log(se) - double(zy);
      dlogits.row(t) *= T(loss_scale / se);
      dlogits(t, y) -= T(loss_scale);
    }
    auto& dhead = cfg.tie_word_embeddings ? dW.embed : dW.lm_head;
    dhead.noalias() += dlogits.transpose() * hn;
    buf.dhn.noalias() = dlogits * head;
    M& dh = buf.dh;
    dh.setZero(n, C);
    rms_bwd(h, W.norm, buf.dhn, dh, dW.norm);
    for (size_t i = W.blocks.size(); i-- > 0;) {
      buf.hi = block_in[i];
      block_forward(i, buf.hi, buf.tape);
      block_backward(i, block_in[i], buf.tape, dh);
    }
    for (int64_t t = 0; t < n; ++t) dW.embed.row(ids[size_t(t)]) += dh.row(t);
    return loss;
  }
};

/// loss_and_grad in precision T (float for training, double for gradient checks).
template <class T>
double transformer_loss_and_grad(const TransformerModel& model, const std::vector<std::vector<int64_t>>& batch,
                                 TransformerModel& grad) {
  if (grad.cfg.to_json() != model.cfg.to_json())
    throw ShapeError("loss_and_grad: the gradient model's configuration differs from the model's");
  int64_t positions = 0, longest = 0;
  for (const auto& seq : batch) {
    model.check_ids(seq);
    positions += int64_t(seq.size()) - 1;
    longest = std::max<int64_t>(longest, int64_t(seq.size()));
  }
  if (positions <= 0)
    throw ShapeError("loss_and_grad: the batch has no next-token position (need sequences of >= 2 tokens)");
  AttnWeights<T> W, dW;
  zip_attn(model, W, [](const auto& a, auto& b) { b = a.template cast<T>(); });
  zip_attn(model, dW, [](const auto& a, auto& b) { b.setZero(a.rows(), a.cols()); });
  static thread_local typename AttnRunner<T>::Buffers buffers;  // reused by the next call on this thread
  const AttnRunner<T> run(model, W, dW, longest, buffers);
  const double scale = 1.0 / double(positions);
  double sum = 0;
  for (const auto& seq : batch) sum += run.sequence(std::span<const int64_t>(seq.data(), seq.size()), scale);
  zip_attn(grad, dW, [](auto& a, const auto& b) {
    if (a.size() != 0) a = b.template cast<float>();
  });
  return sum * scale;
}

}  // namespace detail

/// The mean next-token cross entropy of `batch` (each sequence from position 0; the mean over all
/// next-token positions of all sequences) and its gradient with respect to every parameter of the
/// attention model, stored in `grad` (same configuration; every parameter overwritten; with tied
/// embeddings the embedding's gradient includes the head's). Computed in float with a hand-written
/// reverse pass (attention's from attn::backward). The contract of the TTT loss_and_grad.
inline double loss_and_grad(const TransformerModel& model, const std::vector<std::vector<int64_t>>& batch,
                            TransformerModel& grad) {
  return detail::transformer_loss_and_grad<float>(model, batch, grad);
}

}  // namespace train
}  // namespace ttt
