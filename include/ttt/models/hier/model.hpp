#pragma once
/// \file hier/model.hpp
/// lucidrains' simple-hierarchical-transformer (0.2.0, with local-attention 1.11.2) as its code
/// computes it, on the autodiff tape of ttt/ad: logits, the loss and its three parts, and exact
/// gradients. Templated on the scalar type (float for use, double for finite-difference checks).
///
/// The computation, per sequence (n tokens; hierarchy h: compression c, stride s, a = c / s):
///  1. embedding at width D = max(dims); per hierarchy a compression (c = 1: Linear(D, d) without
///     bias, or nothing when d = D; c > 1: causal Conv1d(D, 4D, c, stride s) -> SiLU -> Conv1d(4D, d,
///     1)), then a LayerNorm. Row k of hierarchy h covers tokens [k s - c + 1, k s].
///  2. each layer runs one block per hierarchy on a interleaved phases (rows j, j + a, ...; the end
///     zero-padded to a multiple of a), each an independent causal sequence:
///     x = attn(shift(x)) + x; x = ff(shift(x)) + x, where shift moves the last floor(d/2) channels
///     one step down the phase. attn is full attention (l2-RMSNorm, rotary + xPos centred at
///     m // 2) or, with a window w, LocalMHA (LayerNorm, rotary, keys [i - w, i]); w = 0: none.
///  3. after every layer (several hierarchies) the merge: all hierarchies side by side (strided
///     ones repeated s times, cropped to n) -> RMSNorm -> Linear -> SiLU -> Linear, added to the
///     predicting hierarchy (or split and added to all, subsampled by stride, with merge_all).
///  4. final LayerNorms; logits from the predicting hierarchy (or all, side by side).
///  5. loss = CE(ignore_index) + w_r * recon + w_ar * ar (see `loss`).
///
/// \code
///   auto m = ttt::hier::HierarchicalTransformer::load("path/to/checkpoint");
///   ttt::Mat logits = m.forward({1, 5, 9, 2});                      // (n, V)
///   ttt::hier::HierarchicalTransformer g(m.cfg);                     // zero gradients
///   auto L = m.loss({{1, 5, 9, 2, 7}}, &g);                          // L.total, L.ce, L.recon, L.ar
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "../../ad/ops.hpp"
#include "../../blocks/attention.hpp"
#include "../../ad/tape.hpp"
#include "../../core/error.hpp"
#include "../../io/file.hpp"
#include "../../inner/linear.hpp"
#include "../../inner/mlp.hpp"
#include "../../io/safetensors.hpp"
#include "../../layers/ttt_layer.hpp"
#include "../../core/params.hpp"
#include "../../train/backward.hpp"
#include "config.hpp"

namespace ttt::hier {

/// The loss of `HierarchicalTransformerT::loss`: the total and its three unweighted parts.
struct Losses {
  double total = 0, ce = 0, recon = 0, ar = 0;
};

template <class T>
class HierarchicalTransformerT {
 public:
  using M = ad::Matrix<T>;
  using V = ad::Var<T>;

  /// How a tensor is initialised (PyTorch's defaults) and whether it takes weight decay.
  enum class Init { normal1, ones, zeros, kaiming };  // kaiming: U(-1/sqrt(fan_in), 1/sqrt(fan_in))

  struct Attn {
    bool local = false;
    M norm_w, norm_b;        // LayerNorm (local) or RMSNorm gamma in norm_w (full)
    M qkv, out;              // (3 h dh, d), (d, h dh)
    M inv_freq, xpos_scale;  // buffers (1, dh / 2); xpos only for full attention
  };
  struct Block {
    bool has_attn = false;
    Attn attn;  // with a TTT mixer: only norm_w, norm_b (its pre-LayerNorm)
    // the TTT mixer (cfg.mixer), float weights for either T (the double model runs them in double)
    std::optional<TTTLayer<inner::Linear>> ttt_linear;
    std::optional<TTTLayer<inner::MLP>> ttt_mlp;
    bool ttt() const { return ttt_linear.has_value() || ttt_mlp.has_value(); }
    M ff_gamma, ff_w1, ff_w2;
  };
  struct Compress {
    bool has_proj = false;  // c = 1 and d != D
    M proj;                 // (d, D)
    M conv_w, conv_b;       // (4D, D * c) (PyTorch [4D, D, c]), (1, 4D)
    M pw_w, pw_b;           // (d, 4D), (1, d)
    bool has_recon = false;
    M recon;                // (c V, d)
  };
  struct Merge {
    M gamma, w1, b1, w2, b2;
  };

  HierConfig cfg;
  M emb;                                   // (V, D)
  std::vector<M> hpred_w, hpred_b;         // per hierarchy, empty for c = 1
  std::vector<Compress> compress;
  std::vector<M> post_w, post_b;           // post-embedding LayerNorms
  std::vector<std::vector<Block>> layers;  // [depth][H]
  std::vector<Merge> merges;               // [depth] when H > 1
  std::vector<M> norm_w, norm_b;           // final LayerNorms
  M to_logits;                             // (V, logit_in)

  /// A model of this configuration with zero parameters and the rotary buffers filled in (the
  /// shape of a gradient); call `init_weights` for PyTorch's default initialisation.
  explicit HierarchicalTransformerT(HierConfig c) : cfg(std::move(c)) {
    cfg.validate();
    const int64_t H = cfg.num_hierarchies(), D = cfg.token_dim(), Vn = cfg.num_tokens;
    emb = M::Zero(Vn, D);
    hpred_w.resize(static_cast<size_t>(H));
    hpred_b.resize(static_cast<size_t>(H));
    compress.resize(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) {
      const int64_t d = cfg.dim_of(h), ch = cfg.compression(h);
      if (ch > 1) {
        hpred_w[size_t(h)] = M::Zero(d, d);
        hpred_b[size_t(h)] = M::Zero(1, d);
      }
      Compress& cp = compress[size_t(h)];
      if (ch == 1) {
        cp.has_proj = d != D;
        if (cp.has_proj) cp.proj = M::Zero(d, D);
      } else {
        cp.conv_w = M::Zero(4 * D, D * ch);
        cp.conv_b = M::Zero(1, 4 * D);
        cp.pw_w = M::Zero(d, 4 * D);
        cp.pw_b = M::Zero(1, d);
        cp.has_recon = cfg.should_recon();
        if (cp.has_recon) cp.recon = M::Zero(ch * Vn, d);
      }
      post_w.push_back(M::Zero(1, d));
      post_b.push_back(M::Zero(1, d));
      norm_w.push_back(M::Zero(1, d));
      norm_b.push_back(M::Zero(1, d));
    }
    layers.resize(size_t(cfg.depth));
    for (auto& layer : layers)
      for (int64_t h = 0; h < H; ++h) {
        Block b;
        const int64_t d = cfg.dim_of(h), inner = cfg.dim_head_of(h) * cfg.heads_of(h), dh = cfg.dim_head_of(h);
        b.has_attn = cfg.has_attn(h);
        if (b.has_attn && cfg.ttt_mixer(h)) {
          b.attn.local = true;  // its norm is a LayerNorm
          b.attn.norm_w = M::Zero(1, d);
          b.attn.norm_b = M::Zero(1, d);
          const ModelConfig mc = ttt_config(h);
          if (cfg.mixer_of(h) == "ttt-linear") b.ttt_linear.emplace(mc);
          else b.ttt_mlp.emplace(mc);
          zero_ttt(b);
        } else if (b.has_attn) {
          b.attn.local = cfg.local_attn(h);
          b.attn.norm_w = M::Zero(1, d);
          if (b.attn.local) b.attn.norm_b = M::Zero(1, d);
          b.attn.qkv = M::Zero(3 * inner, d);
          b.attn.out = M::Zero(d, inner);
          // inv_freq = 1 / 10000^(arange(0, dh, 2) / dh) and the xPos scale (arange(0, dh, 2) + 0.4 dh) / (1.4 dh),
          // in float32 as torch builds them
          b.attn.inv_freq = M(1, dh / 2);
          b.attn.xpos_scale = M(1, dh / 2);
          for (int64_t i = 0; i < dh / 2; ++i) {
            const float e = float(2 * i) / float(dh);
            b.attn.inv_freq(0, i) = T(1.0f / std::pow(10000.0f, e));
            b.attn.xpos_scale(0, i) = T((float(2 * i) + 0.4f * float(dh)) / (1.4f * float(dh)));
          }
          if (b.attn.local) b.attn.xpos_scale.resize(0, 0);
        }
        b.ff_gamma = M::Zero(1, d);
        b.ff_w1 = M::Zero(cfg.ff_inner(h), d);
        b.ff_w2 = M::Zero(d, cfg.ff_inner(h));
        layer.push_back(std::move(b));
      }
    if (cfg.need_merge())
      for (int64_t l = 0; l < cfg.depth; ++l) {
        const int64_t S = cfg.sum_dims(), o = cfg.merge_out();
        merges.push_back({M::Zero(1, S), M::Zero(2 * o, S), M::Zero(1, 2 * o), M::Zero(o, 2 * o), M::Zero(1, o)});
      }
    to_logits = M::Zero(Vn, cfg.logit_in());
  }

  // ---- parameters ----

  /// f(name, matrix, pytorch_shape, init, fan_in) for every parameter, in state_dict order.
  template <class F>
  void visit(F&& f) {
    const int64_t H = cfg.num_hierarchies(), D = cfg.token_dim();
    auto vec = [](const M& m) { return std::vector<int64_t>{m.cols()}; };
    auto mat = [](const M& m) { return std::vector<int64_t>{m.rows(), m.cols()}; };
    f("token_emb.weight", emb, mat(emb), Init::normal1, 0);
    for (int64_t h = 0; h < H; ++h)
      if (hpred_w[size_t(h)].size()) {
        const std::string p = "to_hierarchical_preds." + std::to_string(h);
        f(p + ".weight", hpred_w[size_t(h)], mat(hpred_w[size_t(h)]), Init::kaiming, cfg.dim_of(h));
        f(p + ".bias", hpred_b[size_t(h)], vec(hpred_b[size_t(h)]), Init::kaiming, cfg.dim_of(h));
      }
    for (int64_t h = 0; h < H; ++h) {
      Compress& cp = compress[size_t(h)];
      const std::string p = "compressors." + std::to_string(h);
      const int64_t ch = cfg.compression(h);
      if (ch == 1) {
        if (cp.has_proj) f(p + ".compress_fn.weight", cp.proj, mat(cp.proj), Init::kaiming, D);
      } else {
        f(p + ".compress_fn.1.conv.weight", cp.conv_w, std::vector<int64_t>{4 * D, D, ch}, Init::kaiming, D * ch);
        f(p + ".compress_fn.1.conv.bias", cp.conv_b, vec(cp.conv_b), Init::kaiming, D * ch);
        f(p + ".compress_fn.3.weight", cp.pw_w, std::vector<int64_t>{cp.pw_w.rows(), 4 * D, 1}, Init::kaiming, 4 * D);
        f(p + ".compress_fn.3.bias", cp.pw_b, vec(cp.pw_b), Init::kaiming, 4 * D);
        if (cp.has_recon) f(p + ".to_recon.weight", cp.recon, mat(cp.recon), Init::kaiming, cfg.dim_of(h));
      }
    }
    for (int64_t h = 0; h < H; ++h) {
      const std::string p = "post_token_emb_norms." + std::to_string(h);
      f(p + ".weight", post_w[size_t(h)], vec(post_w[size_t(h)]), Init::ones, 0);
      f(p + ".bias", post_b[size_t(h)], vec(post_b[size_t(h)]), Init::zeros, 0);
    }
    for (int64_t l = 0; l < cfg.depth; ++l)
      for (int64_t h = 0; h < H; ++h) {
        Block& b = layers[size_t(l)][size_t(h)];
        const std::string p = "layers." + std::to_string(l) + "." + std::to_string(h);
        if (b.has_attn && b.ttt()) {
          f(p + ".attn.norm.weight", b.attn.norm_w, vec(b.attn.norm_w), Init::ones, 0);
          f(p + ".attn.norm.bias", b.attn.norm_b, vec(b.attn.norm_b), Init::zeros, 0);
        } else if (b.has_attn) {
          if (b.attn.local) {
            f(p + ".attn.norm.weight", b.attn.norm_w, vec(b.attn.norm_w), Init::ones, 0);
            f(p + ".attn.norm.bias", b.attn.norm_b, vec(b.attn.norm_b), Init::zeros, 0);
          } else {
            f(p + ".attn.norm.gamma", b.attn.norm_w, vec(b.attn.norm_w), Init::ones, 0);
          }
          f(p + ".attn.to_qkv.weight", b.attn.qkv, mat(b.attn.qkv), Init::kaiming, b.attn.qkv.cols());
          f(p + ".attn.to_out.weight", b.attn.out, mat(b.attn.out), Init::kaiming, b.attn.out.cols());
        }
        f(p + ".ff.net.0.gamma", b.ff_gamma, vec(b.ff_gamma), Init::ones, 0);
        f(p + ".ff.net.1.weight", b.ff_w1, mat(b.ff_w1), Init::kaiming, b.ff_w1.cols());
        f(p + ".ff.net.3.weight", b.ff_w2, mat(b.ff_w2), Init::kaiming, b.ff_w2.cols());
      }
    for (size_t l = 0; l < merges.size(); ++l) {
      Merge& m = merges[l];
      const std::string p = "hierarchical_merges." + std::to_string(l) + ".net";
      f(p + ".0.gamma", m.gamma, vec(m.gamma), Init::ones, 0);
      f(p + ".1.weight", m.w1, mat(m.w1), Init::kaiming, m.w1.cols());
      f(p + ".1.bias", m.b1, vec(m.b1), Init::kaiming, m.w1.cols());
      f(p + ".3.weight", m.w2, mat(m.w2), Init::kaiming, m.w2.cols());
      f(p + ".3.bias", m.b2, vec(m.b2), Init::kaiming, m.w2.cols());
    }
    for (int64_t h = 0; h < H; ++h) {
      const std::string p = "norms." + std::to_string(h);
      f(p + ".weight", norm_w[size_t(h)], vec(norm_w[size_t(h)]), Init::ones, 0);
      f(p + ".bias", norm_b[size_t(h)], vec(norm_b[size_t(h)]), Init::zeros, 0);
    }
    f("to_logits.weight", to_logits, mat(to_logits), Init::kaiming, to_logits.cols());
  }

  /// f(name, matrix, shape) for the persistent buffers of the state_dict (rotary inv_freq, xPos scale).
  template <class F>
  void visit_buffers(F&& f) {
    for (int64_t l = 0; l < cfg.depth; ++l)
      for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
        Block& b = layers[size_t(l)][size_t(h)];
        if (!b.has_attn || b.ttt()) continue;
        const std::string p = "layers." + std::to_string(l) + "." + std::to_string(h) + ".attn.";
        if (b.attn.local) {
          f(p + "attn_fn.rel_pos.inv_freq", b.attn.inv_freq, std::vector<int64_t>{b.attn.inv_freq.cols()});
        } else {
          f(p + "rotary_emb.inv_freq", b.attn.inv_freq, std::vector<int64_t>{b.attn.inv_freq.cols()});
          f(p + "rotary_emb.scale", b.attn.xpos_scale, std::vector<int64_t>{b.attn.xpos_scale.cols()});
        }
      }
  }

  /// ParamRefs (checkpoint names and shapes) for the optimiser, checkpoint code and counts.
  template <class F>
  void visit_params(F&& f)
    requires std::is_same_v<T, float>
  {
    visit([&](const std::string& name, M& m, const std::vector<int64_t>& shape, Init init, int64_t fan_in) {
      ParamRef::Init ki = init == Init::normal1 ? ParamRef::Init::normal
                          : init == Init::ones  ? ParamRef::Init::ones
                          : init == Init::zeros ? ParamRef::Init::zeros
                                                : ParamRef::Init::uniform_fan_in;
      const bool no_decay = shape.size() == 1;  // norms and biases
      f(make_param(name, shape, m.data(), ki, init == Init::normal1 ? 1.0 : double(fan_in), no_decay));
    });
    visit_ttt(f);
  }

  /// f(ParamRef) for the TTT mixers' parameters (float for either T), named
  /// "layers.{l}.{h}.attn.ttt.<TTT layer name>".
  template <class F>
  void visit_ttt(F&& f) {
    for (int64_t l = 0; l < cfg.depth; ++l)
      for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
        Block& b = layers[size_t(l)][size_t(h)];
        const std::string p = "layers." + std::to_string(l) + "." + std::to_string(h) + ".attn.ttt.";
        if (b.ttt_linear) b.ttt_linear->visit_params(p, f);
        if (b.ttt_mlp) b.ttt_mlp->visit_params(p, f);
      }
  }

  /// The TTT layer configuration of hierarchy h's mixer.
  ModelConfig ttt_config(int64_t h) const {
    ModelConfig mc;
    mc.hidden_size = cfg.dim_of(h);
    mc.num_attention_heads = cfg.heads_of(h);
    mc.mini_batch_size = cfg.ttt_mini_batch_size;
    mc.ttt_base_lr = cfg.ttt_base_lr;
    mc.use_gate = cfg.ttt_use_gate;
    mc.share_qk = false;
    mc.ttt_layer_type = cfg.mixer_of(h) == "ttt-linear" ? "linear" : "mlp";
    return mc;
  }

  int64_t num_params() {
    int64_t n = 0;
    visit([&](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { n += int64_t(m.size()); });
    visit_ttt([&](const ParamRef& p) { n += p.numel(); });
    return n;
  }

  /// PyTorch's default initialisation: Linear / Conv1d weights and biases U(+-1/sqrt(fan_in)),
  /// the embedding N(0, 1), norms 1 and 0 (same distributions, not the same random stream).
  void init_weights(uint64_t seed) {
    std::mt19937_64 rng(seed);
    visit([&](const std::string&, M& m, const std::vector<int64_t>&, Init init, int64_t fan_in) {
      std::normal_distribution<double> normal(0.0, 1.0);
      const double bound = fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
      std::uniform_real_distribution<double> uni(-bound, bound);
      for (Eigen::Index i = 0; i < m.size(); ++i) {
        double v = 0;
        switch (init) {
          case Init::normal1: v = normal(rng); break;
          case Init::ones: v = 1; break;
          case Init::zeros: v = 0; break;
          case Init::kaiming: v = uni(rng); break;
        }
        m.data()[i] = T(v);
      }
    });
    visit_ttt([&](const ParamRef& p) { init_param(p, rng); });  // as the TTT model initialises its layers
  }

  /// Set every parameter to zero (a gradient accumulator).
  void zero() {
    visit([](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { m.setZero(); });
    visit_ttt([](const ParamRef& p) {
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = 0.0f;
    });
  }

  // ---- FLOP counts (napkin math: matrix products, 2 per multiply-add; norms, activations, exp not counted) ----

  /// FLOPs of `forward` over n tokens: compression (conv + pointwise, or the 1x projection), per
  /// layer and hierarchy (L_h = ceil(n / s) rows, a phases of ceil(L_h / a)) the mixer (attention:
  /// qkv and output projections + attn::forward_flops per head and phase, O(L_h w) for a window;
  /// TTT: TTTLayer::flops_per_token per row) and the feedforward (2 products), the merges, the logits.
  double forward_flops(int64_t n) const {
    const int64_t H = cfg.num_hierarchies(), D = cfg.token_dim();
    double f = 0;
    for (int64_t h = 0; h < H; ++h) {
      const double d = double(cfg.dim_of(h)), c = double(cfg.compression(h));
      const int64_t Lh = (n + cfg.stride(h) - 1) / cfg.stride(h);
      if (cfg.compression(h) > 1) f += 2.0 * double(Lh) * (4.0 * double(D) * double(D) * c + 4.0 * double(D) * d);
      else if (compress[size_t(h)].has_proj) f += 2.0 * double(n) * d * double(D);
      const int64_t a = cfg.axial(h), m = (Lh + a - 1) / a;
      const int64_t heads = cfg.heads_of(h), dh = cfg.dim_head_of(h), inner = heads * dh;
      const std::optional<int64_t> w = cfg.window(h);
      for (int64_t l = 0; l < cfg.depth; ++l) {
        const Block& b = layers[size_t(l)][size_t(h)];
        if (b.ttt_linear) f += double(Lh) * b.ttt_linear->flops_per_token();
        else if (b.ttt_mlp) f += double(Lh) * b.ttt_mlp->flops_per_token();
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
  double train_flops(int64_t n) const {
    double heads = 0;
    for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
      if (cfg.compression(h) == 1) continue;
      const double Lh = double((n + cfg.stride(h) - 1) / cfg.stride(h)), d = double(cfg.dim_of(h));
      heads += 2.0 * Lh * d * d;  // hierarchical AR predictor
      if (cfg.should_recon()) heads += 2.0 * Lh * d * double(cfg.compression(h) * cfg.num_tokens);
    }
    return 3.0 * (forward_flops(n) + heads);
  }

  /// About the bytes `forward` keeps on its tape over n tokens (every intermediate value lives
  /// until the tape ends): per hierarchy and layer the rows of the norms, projections, attention
  /// or TTT output, feedforward and phase gathers; the unfolded compression input; the merges; the
  /// logits. A rough count (for memory checks before a long run), not a bound.
  int64_t forward_bytes(int64_t n) const {
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

  // ---- checkpoints ----

  /// Build from `dir/config.json` + `dir/model.safetensors` (state_dict names; F32/F16/BF16).
  /// Missing or mis-shaped tensors and tensors that belong to no parameter are errors naming them.
  static HierarchicalTransformerT load(const std::filesystem::path& dir) {
    const auto cfgp = dir / "config.json";
    if (!std::filesystem::exists(cfgp)) throw FormatError(cfgp.string() + ": no such file (expected a model folder with config.json)");
    HierarchicalTransformerT m(HierConfig::load(cfgp));
    m.load_weights(io::SafeTensors::load(dir / "model.safetensors"));
    return m;
  }

  void load_weights(const io::SafeTensors& st) {
    std::set<std::string> used;
    auto read = [&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
      const std::vector<float> v = st.read_float(name, shape);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(v[size_t(i)]);
      used.insert(name);
    };
    visit([&](const std::string& name, M& m, const std::vector<int64_t>& shape, Init, int64_t) {
      if (!st.contains(name))
        throw FormatError(st.source() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
      read(name, m, shape);
    });
    visit_ttt([&](const ParamRef& p) {
      if (!st.contains(p.name))
        throw FormatError(st.source() + ": missing tensor '" + p.name + "' (expected shape " + shape_str(p.shape) + ")");
      const std::vector<float> v = st.read_float(p.name, p.shape);
      p.copy_in(v.data());
      used.insert(p.name);
    });
    visit_buffers([&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
      if (st.contains(name)) read(name, m, shape);  // buffers are optional: the constructor computed them
    });
    for (const std::string& name : st.names())
      if (!used.count(name))
        throw FormatError(st.source() + ": unexpected tensor '" + name +
                          "' (not a parameter or buffer of this HierarchicalTransformer; check config.json)");
  }

  /// Write `dir/config.json` and `dir/model.safetensors` (F32, parameters and buffers).
  void save(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw Error(dir.string() + ": cannot create directory: " + ec.message());
    io::write_file_atomic(dir / "model.safetensors", serialize_weights());
    io::write_file_atomic(dir / "config.json", cfg.to_json().dump(2) + "\n");
  }

  /// The bytes of `model.safetensors`: every parameter and buffer as F32, state_dict names.
  std::string serialize_weights() {
    io::SafeTensorsWriter w;
    w.set_metadata("format", "pt");
    auto put = [&](const std::string& name, M& m, const std::vector<int64_t>& shape) {
      std::vector<float> buf(size_t(m.size()));
      for (Eigen::Index i = 0; i < m.size(); ++i) buf[size_t(i)] = float(m.data()[i]);
      w.add(name, shape, buf);
    };
    visit([&](const std::string& name, M& m, const std::vector<int64_t>& shape, Init, int64_t) { put(name, m, shape); });
    visit_ttt([&](const ParamRef& p) {
      std::vector<float> buf(size_t(p.numel()));
      p.copy_out(buf.data());
      w.add(p.name, p.shape, buf);
    });
    visit_buffers(put);
    return w.serialize();
  }

  // ---- forward ----

  /// Optional outputs of `forward`: per hierarchy, the embeddings after compression and the
  /// post-embedding norm, and the final normalised embeddings. (L_h, d_h) each.
  struct Extras {
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

  /// Logits (n, V) of one sequence (n <= seq_len).
  M forward(const std::vector<int64_t>& ids, Extras* extras = nullptr) const {
    ad::Tape<T> tape;
    Leaves leaves(tape, *this, nullptr);
    if (extras && extras->phases) {
      leaves.tap = extras;
      extras->phase_rows.clear();
      extras->block_out.assign(size_t(cfg.depth), std::vector<M>(size_t(cfg.num_hierarchies())));
    }
    Graph g = build(leaves, ids);
    if (extras) {
      extras->token_embeds.clear();
      extras->hidden_embeds.clear();
      for (const V& v : g.token_embeds) extras->token_embeds.push_back(v.value());
      for (const V& v : g.embeds) extras->hidden_embeds.push_back(v.value());
    }
    return g.logits.value();
  }

  /// Logits (n, V) of one sequence given as a span (ttt::train::windows_loss and other code that
  /// takes any model call this).
  M forward(std::span<const int64_t> ids) const { return forward(std::vector<int64_t>(ids.begin(), ids.end())); }

  /// The training loss of the original on a batch: each sequence's first L - 1 tokens are the
  /// input and its last L - 1 the labels, and
  ///   total = ce + recon_loss_weight * recon + hierarchical_ar_loss_weight * ar
  ///   ce    = mean next-token cross entropy over labels != ignore_index (the whole batch)
  ///   recon = sum over hierarchies c > 1 of the mean cross entropy of to_recon(embeds) against
  ///           the c tokens each row covers (left-padded with 0; always ignoring 0, as the original)
  ///   ar    = sum over hierarchies c > 1 of 1 - mean cosine(Linear(e)[:-1], e[1:])
  /// With `grad`, d total / d parameter is ADDED into grad's parameters.
  Losses loss(const std::vector<std::vector<int64_t>>& batch, HierarchicalTransformerT* grad = nullptr) const {
    if (batch.empty()) throw ShapeError("HierarchicalTransformer::loss: empty batch");
    if (grad) check_same_shape(*grad);
    ad::Tape<T> tape;
    Leaves leaves(tape, *this, grad);
    const int64_t H = cfg.num_hierarchies(), Vn = cfg.num_tokens;
    std::vector<V> ce_parts;
    int64_t ce_count = 0;
    std::vector<std::vector<V>> rec_parts(static_cast<size_t>(H)), ar_parts(static_cast<size_t>(H));
    std::vector<int64_t> rec_count(size_t(H), 0), ar_count(size_t(H), 0);
    for (size_t b = 0; b < batch.size(); ++b) {
      const auto& seq = batch[b];
      if (seq.size() < 2)
        throw ShapeError("HierarchicalTransformer::loss: sequence " + std::to_string(b) + " has " +
                         std::to_string(seq.size()) + " tokens; the loss needs at least 2");
      const std::vector<int64_t> in(seq.begin(), seq.end() - 1), labels(seq.begin() + 1, seq.end());
      Graph g = build(leaves, in);
      ce_parts.push_back(ad::cross_entropy_sum(g.logits, labels, cfg.ignore_index));
      ce_count += ad::count_targets(labels, cfg.ignore_index);
      const int64_t n = int64_t(in.size());
      for (int64_t h = 0; h < H; ++h) {
        const int64_t c = cfg.compression(h), s = cfg.stride(h);
        if (c == 1) continue;
        const V e = g.embeds[size_t(h)];
        const int64_t Lh = e.rows();
        if (cfg.should_recon()) {
          const V rl = ad::linear(e, leaves(compress[size_t(h)].recon));  // (L_h, c V)
          for (int64_t i = 0; i < c; ++i) {
            std::vector<int64_t> tgt(static_cast<size_t>(Lh));
            for (int64_t k = 0; k < Lh; ++k) {
              const int64_t pos = k * s - c + 1 + i;
              tgt[size_t(k)] = pos < 0 || pos >= n ? 0 : in[size_t(pos)];
            }
            rec_count[size_t(h)] += ad::count_targets(tgt, 0);
            rec_parts[size_t(h)].push_back(ad::cross_entropy_sum(ad::cols(rl, i * Vn, Vn), std::move(tgt), int64_t(0)));
          }
        }
        const V pred = ad::linear(e, leaves(hpred_w[size_t(h)]), leaves(hpred_b[size_t(h)]));
        if (Lh > 1) ar_parts[size_t(h)].push_back(ad::cosine_sum(ad::rows(pred, 0, Lh - 1), ad::rows(e, 1, Lh - 1)));
        ar_count[size_t(h)] += Lh - 1;
      }
    }
    auto total_of = [](const std::vector<V>& parts) { return parts.size() == 1 ? parts[0] : ad::sum(ad::concat_rows(parts)); };
    // PyTorch's mean: sum over the non-ignored targets / their count (0 / 0 = nan when none)
    const V ce = ad::scale(total_of(ce_parts), T(1) / T(ce_count));
    std::vector<V> terms = {ce};
    Losses out;
    out.ce = double(ce.value()(0, 0));
    for (int64_t h = 0; h < H; ++h) {
      if (cfg.compression(h) == 1) continue;
      if (cfg.should_recon()) {
        const V r = ad::scale(total_of(rec_parts[size_t(h)]), T(1) / T(rec_count[size_t(h)]));
        out.recon += double(r.value()(0, 0));
        terms.push_back(ad::scale(r, T(cfg.recon_loss_weight)));
      }
      // 1 - mean cosine; the constant 1 does not enter the gradient
      const double mean_cos = ar_parts[size_t(h)].empty()
                                  ? std::nan("")
                                  : double(total_of(ar_parts[size_t(h)]).value()(0, 0)) / double(ar_count[size_t(h)]);
      out.ar += 1.0 - mean_cos;
      if (!ar_parts[size_t(h)].empty())
        terms.push_back(ad::scale(total_of(ar_parts[size_t(h)]), T(-cfg.hierarchical_ar_loss_weight / double(ar_count[size_t(h)]))));
    }
    const V total = total_of(terms);
    out.total = double(T(out.ce) + T(cfg.recon_loss_weight) * T(out.recon) + T(cfg.hierarchical_ar_loss_weight) * T(out.ar));
    if (grad) tape.backward(total);
    return out;
  }

 private:
  /// Parameter leaves of one tape: each parameter enters once, with its gradient sink.
  struct Leaves {
    ad::Tape<T>& tape;
    HierarchicalTransformerT* grad = nullptr;  // where the TTT mixers' parameter gradients go
    Extras* tap = nullptr;                     // forward(ids, extras) with extras->phases: rows recorded here
    int64_t layer = 0;                         // the layer being built (for the tap)
    std::unordered_map<const M*, V> vars;
    std::unordered_map<const M*, M*> sinks;
    Leaves(ad::Tape<T>& t, const HierarchicalTransformerT& model, HierarchicalTransformerT* g) : tape(t), grad(g) {
      if (!grad) return;
      std::vector<const M*> a;
      std::vector<M*> b;
      const_cast<HierarchicalTransformerT&>(model).visit(
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

  struct Graph {
    std::vector<V> token_embeds, embeds;
    V logits;
  };

  void check_same_shape(HierarchicalTransformerT& g) const {
    std::vector<std::pair<std::string, std::pair<Eigen::Index, Eigen::Index>>> a;
    const_cast<HierarchicalTransformerT*>(this)->visit(
        [&](const std::string& n, M& m, const std::vector<int64_t>&, Init, int64_t) { a.push_back({n, {m.rows(), m.cols()}}); });
    size_t i = 0;
    g.visit([&](const std::string& n, M& m, const std::vector<int64_t>&, Init, int64_t) {
      if (i >= a.size() || a[i].first != n || a[i].second != std::make_pair(m.rows(), m.cols()))
        throw ShapeError("HierarchicalTransformer::loss: the gradient model does not have this model's configuration "
                         "(first difference at '" + n + "')");
      ++i;
    });
    if (i != a.size()) throw ShapeError("HierarchicalTransformer::loss: the gradient model has fewer parameters");
    for (int64_t h = 0; h < cfg.num_hierarchies(); ++h)
      if (g.cfg.mixer_of(h) != cfg.mixer_of(h) || g.cfg.ttt_mini_batch_size != cfg.ttt_mini_batch_size ||
          g.cfg.ttt_use_gate != cfg.ttt_use_gate)
        throw ShapeError("HierarchicalTransformer::loss: the gradient model's mixers differ from the model's");
  }

  /// The rows of all hierarchies side by side, strided ones repeated (row t <- row t / s),
  /// cropped to the shortest (hierarchical_cat of the original).
  V hierarchical_cat(const std::vector<V>& xs) const {
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
  static V token_shift(V x) {
    const Eigen::Index d = x.cols(), m = x.rows(), h1 = (d + 1) / 2;  // chunk(2): first part ceil(d / 2)
    if (d - h1 == 0) return x;
    std::vector<int64_t> idx(static_cast<size_t>(m));
    for (Eigen::Index i = 0; i < m; ++i) idx[size_t(i)] = i - 1;
    return ad::concat_cols(std::vector<V>{ad::cols(x, 0, h1), ad::gather_rows(ad::cols(x, h1, d - h1), std::move(idx))});
  }

  /// Attention of one phase sequence z (m, d).
  V attention(Leaves& P, const Block& b, int64_t h, V z, M* xn_out) const {
    const Attn& a = b.attn;
    const int64_t m = z.rows(), heads = cfg.heads_of(h), dh = cfg.dim_head_of(h), inner = heads * dh, half = dh / 2;
    const V xn = a.local ? ad::layer_norm(z, P(a.norm_w), P(a.norm_b)) : ad::l2_rms_norm(z, P(a.norm_w));
    if (xn_out) *xn_out = xn.value();
    const V qkv = ad::linear(xn, P(a.qkv));
    V q = ad::cols(qkv, 0, inner), k = ad::cols(qkv, inner, inner), v = ad::cols(qkv, 2 * inner, inner);
    // angles t * inv_freq and the xPos factors: in float32 as torch forms them for T = float, in
    // double for T = double (so that the double model is exact: xPos cancels in q.k)
    using R = std::conditional_t<std::is_same_v<T, float>, float, double>;
    M cs(m, half), sn(m, half), fq, fk;
    for (int64_t t = 0; t < m; ++t)
      for (int64_t i = 0; i < half; ++i) {
        const R ang = R(t) * R(a.inv_freq(0, i));
        cs(t, i) = T(std::cos(double(ang)));
        sn(t, i) = T(std::sin(double(ang)));
      }
    if (!a.local) {
      // xPos: q * scale^power, k / scale^power, power = (t - m // 2) / 512 (cancels in q.k up to rounding)
      fq.resize(m, half);
      fk.resize(m, half);
      for (int64_t t = 0; t < m; ++t) {
        const R power = (R(t) - R(m / 2)) / R(512);
        for (int64_t i = 0; i < half; ++i) {
          const R f = R(std::pow(double(a.xpos_scale(0, i)), double(power)));
          fq(t, i) = T(f);
          fk(t, i) = T(R(1) / f);
        }
      }
    }
    q = ad::rotary(q, heads, cs, sn, fq);
    k = ad::rotary(k, heads, cs, sn, fk);
    const std::optional<int64_t> w = cfg.window(h);
    const V o = ad::attention(q, k, v, heads, a.local ? *w : int64_t(-1), T(1) / std::sqrt(T(dh)));
    return ad::linear(o, P(a.out));
  }

  static void zero_ttt(Block& b) {
    auto z = [](const ParamRef& p) {
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = 0.0f;
    };
    if (b.ttt_linear) b.ttt_linear->visit_params("", z);
    if (b.ttt_mlp) b.ttt_mlp->visit_params("", z);
  }

  /// A TTT layer on one phase sequence xn (m, d) (already normed) as a tape op: LayerGrad's
  /// forward from the layer's initial state, its backward as the VJP (parameter gradients into
  /// `glayer` when given).
  template <class L>
  static V ttt_op(const TTTLayer<L>& layer, TTTLayer<L>* glayer, V xn) {
    auto op = std::make_shared<train::LayerGrad<L, T>>(layer);
    M Y;
    op->forward(xn.value(), Y);
    return xn.tape->custom({xn}, std::move(Y), [op, glayer, &layer](const M& dy, std::span<M> dx) {
      M dX;
      if (glayer) {
        op->backward(dy, dX, *glayer);
      } else {
        TTTLayer<L> sink = layer;  // parameter gradients not wanted: a throw-away accumulator
        op->backward(dy, dX, sink);
      }
      if (dx[0].size()) dx[0] += dX;
    });
  }

  /// The TTT mixer of one phase sequence z (m, d): LayerNorm then the TTT layer.
  V ttt_mixer(Leaves& P, const Block& b, Block* gb, V z, M* xn_out) const {
    const V xn = ad::layer_norm(z, P(b.attn.norm_w), P(b.attn.norm_b));
    if (xn_out) *xn_out = xn.value();
    if (b.ttt_linear) return ttt_op(*b.ttt_linear, gb ? &*gb->ttt_linear : nullptr, xn);
    return ttt_op(*b.ttt_mlp, gb ? &*gb->ttt_mlp : nullptr, xn);
  }

  /// One HierarchicalBlock on hierarchy h's rows x (L_h, d). gb: the gradient model's block (or null).
  V block(Leaves& P, const Block& b, Block* gb, int64_t h, V x) const {
    const int64_t L = x.rows(), a = cfg.axial(h);
    auto run = [&](V z, int64_t phase) {
      typename Extras::PhaseRows* tap = nullptr;
      if (P.tap) {
        P.tap->phase_rows.push_back({P.layer, h, phase, z.value(), M(), M()});
        tap = &P.tap->phase_rows.back();  // a deque: stays valid
      }
      M* xn = tap ? &tap->mixer_in : nullptr;
      if (b.has_attn && b.ttt()) z = ad::add(ttt_mixer(P, b, gb, token_shift(z), xn), z);
      else if (b.has_attn) z = ad::add(attention(P, b, h, token_shift(z), xn), z);
      if (tap) tap->mid = z.value();
      const V f = ad::linear(ad::gelu(ad::linear(ad::l2_rms_norm(token_shift(z), P(b.ff_gamma)), P(b.ff_w1))), P(b.ff_w2));
      return ad::add(f, z);
    };
    if (a == 1) return run(x, 0);
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
    return ad::gather_rows(ad::concat_rows(phases), std::move(back));
  }

  Graph build(Leaves& P, const std::vector<int64_t>& ids) const {
    const int64_t n = int64_t(ids.size()), H = cfg.num_hierarchies();
    if (n == 0) throw ShapeError("HierarchicalTransformer: empty input");
    if (n > cfg.seq_len)
      throw ShapeError("HierarchicalTransformer: input of " + std::to_string(n) + " tokens is longer than seq_len = " +
                       std::to_string(cfg.seq_len));
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= cfg.num_tokens)
        throw ShapeError("HierarchicalTransformer: token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                         " is outside the vocabulary [0, " + std::to_string(cfg.num_tokens) + ")");
    Graph g;
    const V x = ad::gather_rows(P(emb), ids);  // (n, D)
    std::vector<V> tok;
    for (int64_t h = 0; h < H; ++h) {
      const Compress& cp = compress[size_t(h)];
      const int64_t c = cfg.compression(h);
      V t = x;
      if (c == 1) {
        if (cp.has_proj) t = ad::linear(x, P(cp.proj));
      } else {
        t = ad::silu(ad::causal_conv1d(x, P(cp.conv_w), P(cp.conv_b), c, cfg.stride(h)));  // (ceil(n / s), 4D)
        t = ad::linear(t, P(cp.pw_w), P(cp.pw_b));
      }
      tok.push_back(ad::layer_norm(t, P(post_w[size_t(h)]), P(post_b[size_t(h)])));
    }
    g.token_embeds = tok;
    const int64_t p = cfg.predict_index();
    for (int64_t l = 0; l < cfg.depth; ++l) {
      P.layer = l;
      for (int64_t h = 0; h < H; ++h) {
        tok[size_t(h)] = block(P, layers[size_t(l)][size_t(h)], P.grad ? &P.grad->layers[size_t(l)][size_t(h)] : nullptr, h, tok[size_t(h)]);
        if (P.tap) P.tap->block_out[size_t(l)][size_t(h)] = tok[size_t(h)].value();
      }
      if (!cfg.need_merge()) continue;
      const Merge& mg = merges[size_t(l)];
      V pooled = ad::l2_rms_norm(hierarchical_cat(tok), P(mg.gamma));
      pooled = ad::linear(ad::silu(ad::linear(pooled, P(mg.w1), P(mg.b1))), P(mg.w2), P(mg.b2));
      if (cfg.hierarchy_merge_all) {
        int64_t c0 = 0;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t d = cfg.dim_of(h), s = cfg.stride(h), Lh = tok[size_t(h)].rows();
          std::vector<int64_t> idx(static_cast<size_t>(Lh));
          for (int64_t k = 0; k < Lh; ++k) idx[size_t(k)] = k * s < pooled.rows() ? k * s : -1;
          tok[size_t(h)] = ad::add(tok[size_t(h)], ad::gather_rows(ad::cols(pooled, c0, d), std::move(idx)));
          c0 += d;
        }
      } else {
        tok[size_t(p)] = ad::add(tok[size_t(p)], pooled);
      }
    }
    for (int64_t h = 0; h < H; ++h) g.embeds.push_back(ad::layer_norm(tok[size_t(h)], P(norm_w[size_t(h)]), P(norm_b[size_t(h)])));
    const V pe = cfg.predict_use_all_hierarchy ? hierarchical_cat(g.embeds) : g.embeds[size_t(p)];
    g.logits = ad::linear(pe, P(to_logits));
    return g;
  }
};

using HierarchicalTransformer = HierarchicalTransformerT<float>;

/// The inner learning rate of every TTT mixer (ttt::train's trainer warms it up from 0; found by
/// argument-dependent lookup, preferred over train::set_ttt_base_lr as the more specialised).
template <class T>
void set_ttt_base_lr(HierarchicalTransformerT<T>& model, double v) {
  model.cfg.ttt_base_lr = v;
  for (auto& layer : model.layers)
    for (auto& b : layer) {
      if (b.ttt_linear) b.ttt_linear->base_lr = v;
      if (b.ttt_mlp) b.ttt_mlp->base_lr = v;
    }
}

/// The training step's loss and gradient in the trainer's form (ttt::train::train and
/// parallel_loss_and_grad call it): `grad` is overwritten with d total / d parameter and the
/// original's total loss (ce + recon_loss_weight recon + hierarchical_ar_loss_weight ar) is
/// returned. GradOptions do not apply (the TTT mixers keep every mini-batch's state).
template <class T>
double loss_and_grad(const HierarchicalTransformerT<T>& model, const std::vector<std::vector<int64_t>>& batch,
                     HierarchicalTransformerT<T>& grad, const train::GradOptions& = {}) {
  grad.zero();
  return model.loss(batch, &grad).total;
}

}  // namespace ttt::hier
