#pragma once
/// \file hier/params.hpp
/// The parameters of the hierarchical transformer (HierParams<T>, the base of
/// HierarchicalTransformerT<T>): the per-module structs, construction from a HierConfig (zero
/// parameters, rotary buffers filled in, the TTT mixers chosen through inner/registry.hpp), the
/// visitors that name every tensor as the original's state_dict does (visit, visit_buffers,
/// visit_params, visit_ttt), PyTorch's default initialisation, zero and the parameter count.
/// Nothing here computes the model: see graph.hpp (forward), loss.hpp, costs.hpp, checkpoint.hpp.
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../../ad/tape.hpp"
#include "../../core/error.hpp"
#include "../../core/function_ref.hpp"
#include "../../core/params.hpp"
#include "../../inner/linear.hpp"
#include "../../inner/mlp.hpp"
#include "../../inner/registry.hpp"
#include "../../layers/ttt_layer.hpp"
#include "config.hpp"

namespace ttt::hier {

/// fn.template operator()<L>() for the learner L of hierarchy h's TTT mixer (cfg.mixer
/// "ttt-<learner>[-<optimizer>]", through inner::with_learner over `Learners`, the built-in ones by
/// default); a ConfigError naming the mixer and the valid ones for any other mixer (attention
/// included: it has no learner).
template <class Learners = inner::Builtin, class F>
decltype(auto) with_mixer_learner(const HierConfig& cfg, int64_t h, F&& fn) {
  const std::string& mx = cfg.mixer_of(h);
  const std::optional<std::string_view> learner = mixer_learner<Learners>(mx);
  if (!learner)
    throw ConfigError("mixer '" + mx + "' at hierarchy " + std::to_string(cfg.compression(h)) +
                      "x is not a TTT mixer (valid: " + ttt_mixer_names<Learners>() + ")");
  return inner::with_learner<Learners>(*learner, "mixer '" + mx + "'", std::forward<F>(fn));
}

namespace detail {
/// std::variant<std::monostate, TTTLayer<L, T>...> over the registry's learners.
template <class Tuple, class T>
struct ttt_layers_of;
template <class... L, class T>
struct ttt_layers_of<std::tuple<L...>, T> {
  using Layer = std::variant<std::monostate, TTTLayer<L, T>...>;
};
}  // namespace detail

/// The parameters of a hierarchical transformer in scalar T whose TTT mixers may name the learners
/// of `Learners` (a std::tuple; the built-in ones by default, a program with learners of its own
/// passes a longer tuple, e.g. std::tuple_cat(inner::Builtin{}, std::tuple<Mine>{})).
template <class T, class Learners = inner::Builtin>
struct HierParams {
  using Scalar = T;
  /// The learners a TTT mixer may name.
  using LearnerTuple = Learners;
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
    /// The TTT mixer (cfg.mixer) in scalar T: a TTTLayer of one of the registry's learners, or
    /// none (monostate).
    typename detail::ttt_layers_of<Learners, T>::Layer ttt_layer;
    bool ttt() const { return ttt_layer.index() != 0; }
    /// fn(layer) on the TTT layer, when the block has one.
    template <class F>
    void with_ttt(F&& fn) {
      std::visit([&](auto& l) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(l)>, std::monostate>) fn(l);
      }, ttt_layer);
    }
    template <class F>
    void with_ttt(F&& fn) const {
      std::visit([&](const auto& l) {
        if constexpr (!std::is_same_v<std::decay_t<decltype(l)>, std::monostate>) fn(l);
      }, ttt_layer);
    }
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

  /// The parameters of this configuration, all zero, with the rotary buffers filled in (the
  /// shape of a gradient); `init_weights` gives PyTorch's default initialisation.
  explicit HierParams(HierConfig c) : cfg(std::move(c)) {
    cfg.template validate<Learners>();
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
          with_mixer_learner<Learners>(cfg, h, [&]<class L>() { b.ttt_layer.template emplace<TTTLayer<L, T>>(mc); });
          b.with_ttt([](auto& l) {
            l.visit_params("", [](const auto& p) { p.fill(T(0)); });
          });
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

  /// What `visit` calls for each parameter: f(name, matrix, pytorch_shape, init, fan_in).
  using TensorVisitor = FunctionRef<void(const std::string&, M&, const std::vector<int64_t>&, Init, int64_t)>;

  /// f(name, matrix, pytorch_shape, init, fan_in) for every parameter, in state_dict order (the
  /// walk is `visit_tensors`, compiled once per model type: core/function_ref.hpp).
  template <class F>
  void visit(F&& f) {
    visit_tensors(TensorVisitor(f));
  }
  void visit_tensors(TensorVisitor f);

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

  /// ParamRefs (checkpoint names and shapes) for the optimiser, checkpoint code and counts:
  /// f(const ParamRef&) for each (the walk is `visit_param_refs`).
  template <class F>
  void visit_params(F&& f)
    requires std::is_same_v<T, float>
  {
    visit_param_refs(ParamVisitor<T>(f));
  }
  void visit_param_refs(ParamVisitor<T> f)
    requires std::is_same_v<T, float>;

  /// f(const BasicParamRef<T>&) for the TTT mixers' parameters, named
  /// "layers.{l}.{h}.attn.ttt.<TTT layer name>".
  template <class F>
  void visit_ttt(F&& f) {
    visit_ttt_refs(ParamVisitor<T>(f));
  }
  void visit_ttt_refs(ParamVisitor<T> f);

  /// The TTT layer configuration of hierarchy h's mixer (ttt_layer_type: its learner's name, see
  /// `with_mixer_learner`; a ConfigError for a hierarchy without a TTT mixer).
  ModelConfig ttt_config(int64_t h) const {
    ModelConfig mc;
    mc.hidden_size = cfg.dim_of(h);
    mc.num_attention_heads = cfg.heads_of(h);
    mc.mini_batch_size = cfg.ttt_mini_batch_size;
    mc.ttt_base_lr = cfg.ttt_base_lr;
    mc.use_gate = cfg.ttt_use_gate;
    mc.share_qk = false;
    mc.ttt_layer_type = with_mixer_learner<Learners>(cfg, h, []<class L>() { return std::string(L::name); });
    const auto m = *ttt_mixer<Learners>(cfg.mixer_of(h));
    mc.ttt_inner_optimizer = std::string(m.optimizer);
    mc.ttt_query_order = inner::order_name(m.order);
    return mc;
  }

  int64_t num_params() {
    int64_t n = 0;
    visit([&](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { n += int64_t(m.size()); });
    visit_ttt([&](const auto& p) { n += p.numel(); });
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
    visit_ttt([&](const auto& p) { init_param(p, rng); });  // as the TTT model initialises its layers
  }

  /// Set every parameter to zero (a gradient accumulator).
  void zero() {
    visit([](const std::string&, M& m, const std::vector<int64_t>&, Init, int64_t) { m.setZero(); });
    visit_ttt([](const auto& p) { p.fill(T(0)); });
  }
};

template <class T, class Learners>
void HierParams<T, Learners>::visit_tensors(TensorVisitor f) {
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

template <class T, class Learners>
void HierParams<T, Learners>::visit_param_refs(ParamVisitor<T> f)
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
  visit_ttt_refs(f);
}

template <class T, class Learners>
void HierParams<T, Learners>::visit_ttt_refs(ParamVisitor<T> f) {
  for (int64_t l = 0; l < cfg.depth; ++l)
    for (int64_t h = 0; h < cfg.num_hierarchies(); ++h) {
      Block& b = layers[size_t(l)][size_t(h)];
      const std::string p = "layers." + std::to_string(l) + "." + std::to_string(h) + ".attn.ttt.";
      b.with_ttt([&](auto& layer) { layer.visit_params(p, f); });
    }
}

/// The model class (model.hpp): HierParams and the operations on them.
template <class T, class Learners = inner::Builtin>
class HierarchicalTransformerT;

}  // namespace ttt::hier

#if defined(TTT_PRECOMPILED)  // compiled once in ttt::precompiled (precompiled/instantiate_models.hpp)
namespace ttt::hier {
extern template struct HierParams<float>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double: tests (TTT_PRECOMPILED_DOUBLE)
extern template struct HierParams<double>;
#endif
}  // namespace ttt::hier
#endif
