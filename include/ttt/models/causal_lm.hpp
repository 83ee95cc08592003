#pragma once
/// \file models/causal_lm.hpp
/// The one language-model stack of the library, over any sequence mixer (layers/mixer.hpp):
/// token embedding; blocks of [optional pre-conv: x += conv(RMSNorm(x))], x += Mixer(RMSNorm(x)),
/// x += SwiGLU(RMSNorm(x)); final RMSNorm; LM head (tied to the embedding by default). With a TTT
/// layer as the mixer it is ttt-lm-pytorch's `TTTForCausalLM` (models/ttt_model.hpp); with
/// softmax attention, the attention baselines (models/transformer.hpp). `forward` processes any
/// chunk of a sequence and carries a `State`, so prefill, decode and any chunking are one code
/// path. Training is train/model_grad.hpp, on the same weights.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../blocks/activations.hpp"
#include "../blocks/causal_conv.hpp"
#include "../blocks/linear.hpp"
#include "../blocks/rms_norm.hpp"
#include "../blocks/swiglu.hpp"
#include "../core/error.hpp"
#include "../core/params.hpp"
#include "../core/weight_dtype.hpp"
#include "../layers/mixer.hpp"

namespace ttt {

/// Which rows of logits `forward` computes.
enum class Logits { all, last, none };

template <class Mixer>
class CausalLM {
 public:
  using Scalar = typename Mixer::Scalar;
  using S = Scalar;
  using Config = typename Mixer::Config;
  using M = MatT<S>;
  using R = RowT<S>;

  struct Block {
    R seq_norm, ffn_norm;  // [C]
    Mixer mixer;
    blocks::SwiGLU<S> mlp;
    R conv_norm;  // pre-conv: [C]
    M conv_w;     // pre-conv: [C, K]
    R conv_b;     // pre-conv: [C]
  };

  /// Per-sequence state: one per layer, plus the position and reusable buffers.
  struct State {
    int64_t pos = 0;
    std::vector<typename Mixer::State> layers;
    std::vector<M> conv_hist;  // pre-conv: [K-1, C] per layer (normed inputs)
    struct Buffers {
      M h, xn, t, ext, conv_out, hn;
      typename blocks::SwiGLU<S>::Tape mlp;
      typename Mixer::Workspace mixer;
    } ws;
  };

  Config cfg;
  M embed;    // [V, C]
  M lm_head;  // [V, C] only when the embeddings are not tied
  R norm;     // [C]
  std::vector<Block> blocks;

  explicit CausalLM(const Config& c) : cfg(c) {
    cfg.validate();
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
    embed = M::Zero(V, C);
    if (!cfg.tie_word_embeddings) lm_head = M::Zero(V, C);
    norm = R::Ones(C);
    blocks.resize(size_t(cfg.num_hidden_layers));
    for (auto& b : blocks) {
      b.seq_norm = R::Ones(C);
      b.ffn_norm = R::Ones(C);
      b.mixer = Mixer(cfg);
      b.mlp = blocks::SwiGLU<S>(C, I);
      if (pre_conv()) {
        b.conv_norm = R::Ones(C);
        b.conv_w = M::Zero(C, cfg.conv_kernel);
        b.conv_b = R::Zero(C);
      }
    }
  }

  /// The mixer-specific model option pre_conv (TTT models) is on.
  bool pre_conv() const { return Mixer::kPreConv && cfg.pre_conv; }

  /// Every parameter under its Hugging Face name, in the reference's order: fn(const BasicParamRef<S>&)
  /// for each (the walk is `visit_param_refs`, compiled once per model type).
  template <class F>
  void visit_params(F&& fn) {
    visit_param_refs(ParamVisitor<S>(fn));
  }
  void visit_param_refs(ParamVisitor<S> fn);

  /// Initialise every parameter as the reference does for training from scratch.
  void init_weights(uint64_t seed) {
    std::mt19937_64 rng(seed);
    visit_params([&](const auto& p) { init_param(p, rng); });
  }

  int64_t num_params() const {
    int64_t n = 0;
    const_cast<CausalLM*>(this)->visit_params([&](const auto& p) { n += p.numel(); });
    return n;
  }

  /// Whether `other` has this model's shape (a gradient model for it).
  bool same_shape(const CausalLM& other) const { return cfg == other.cfg; }

  State new_state() const {
    State s;
    for (const auto& b : blocks) {
      s.layers.push_back(b.mixer.new_state());
      if (pre_conv()) s.conv_hist.push_back(M::Zero(cfg.conv_kernel - 1, cfg.hidden_size));
    }
    return s;
  }

  const M& head() const { return cfg.tie_word_embeddings ? embed : lm_head; }

  /// Run the weight matrices in bf16 (core/weight_dtype.hpp) or back in fp32. bf16 rounds the
  /// embedding, the LM head, every block's SwiGLU and the mixers' projections to bf16 values in
  /// place and keeps bf16 copies that forward / forward_rows read (fp32 activations, fp32
  /// accumulation); norms, convolutions, gates and the TTT inner learner stay fp32. fp32 drops the
  /// copies (the weights keep their rounded values: reload for the originals). Inference only: the
  /// copies go stale if the weights change, so train::train refuses a bf16 model. ConfigError for a
  /// double model or a mixer without a bf16 path (the attention baselines), nothing changed then.
  void set_weight_dtype(WeightDtype d) {
    if (d == WeightDtype::bf16) {
      if constexpr (!std::is_same_v<S, float>)
        throw ConfigError("dtype bf16: bf16 weights need a float model (this one is double)");
      if constexpr (!requires(Mixer& m) { m.set_weight_dtype(d); })
        throw ConfigError("dtype bf16: this model's sequence mixer has no bf16 path (TTT layers have one; the "
                          "attention baselines do not)");
    }
    if constexpr (std::is_same_v<S, float> && requires(Mixer& m) { m.set_weight_dtype(d); }) {
      for (auto& b : blocks) {
        b.mixer.set_weight_dtype(d);
        b.mlp.set_weight_dtype(d);
      }
      if (d == WeightDtype::bf16) {
        kernels::Bf16Matrix e = blocks::round_to_bf16(embed);
        head16 = std::make_shared<const kernels::Bf16Matrix>(cfg.tie_word_embeddings ? std::move(e)
                                                                                    : blocks::round_to_bf16(lm_head));
      } else {
        head16.reset();
      }
      dtype_ = d;
    }
  }
  WeightDtype weight_dtype() const { return dtype_; }

  /// Check that every id is in [0, vocab_size); ShapeError naming the position otherwise.
  void check_ids(std::span<const int64_t> ids) const {
    if (ids.empty()) throw ShapeError("input_ids: empty sequence (need at least one token)");
    for (size_t t = 0; t < ids.size(); ++t)
      if (ids[t] < 0 || ids[t] >= cfg.vocab_size)
        throw ShapeError("input_ids: token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                         " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
  }

  /// Inputs longer than this many tokens are run in chunks of it (0: always one chunk): the work
  /// buffers of a chunk stay in the caches, so a 32k-token prompt runs at the speed of a 2k one
  /// (benchmarks/README.md, "Long prompts"). A chunking computes what one chunk computes.
  int64_t max_chunk = 2048;

  /// The LM head's bf16 copy (set_weight_dtype(bf16)), else null.
  std::shared_ptr<const kernels::Bf16Matrix> head16;

  /// Run the n tokens `ids` of one sequence from the position and state in `st`, advancing it.
  /// logits: (n, V) for Logits::all, (1, V) for Logits::last. hidden (optional): output of each
  /// block, (n, C) each. Any chunking of a sequence computes what one full forward computes.
  void forward(State& st, std::span<const int64_t> ids, M* logits, Logits which = Logits::all,
               std::vector<M>* hidden = nullptr) const;

  /// One token for each of B sequences at once (batched decode): ids[b] continues the sequence of
  /// `*states[b]`, each at its own position (prompts of different lengths are fine). Each weight
  /// matrix is read once for the B tokens. logits: (B, V), row b what forward(*states[b], ids[b])
  /// gives, to the rounding of the products. The buffers of `*states[0]` serve the whole batch.
  void forward_rows(std::span<State* const> states, std::span<const int64_t> ids, M* logits) const;

  /// Full-sequence forward from a fresh state: (n, V) logits.
  M forward(std::span<const int64_t> ids, std::vector<M>* hidden = nullptr) const {
    State st = new_state();
    M logits;
    forward(st, ids, &logits, Logits::all, hidden);
    return logits;
  }

  /// FLOPs of the dense parts of one token (SwiGLU, pre-conv, LM head; not the mixers).
  double dense_flops_per_token() const {
    const double C = double(cfg.hidden_size), V = double(cfg.vocab_size);
    double per_block = blocks.empty() ? 0.0 : blocks[0].mlp.flops_per_token();
    if (pre_conv()) per_block += 2.0 * C * double(cfg.conv_kernel);
    return double(blocks.size()) * per_block + 2.0 * C * V;
  }

 private:
  void check_state(const State& st) const;
  /// forward() of one chunk (ids checked).
  void forward_chunk(State& st, std::span<const int64_t> ids, M* logits, Logits which, std::vector<M>* hidden) const;
  WeightDtype dtype_ = WeightDtype::fp32;
};

template <class Mixer>
void CausalLM<Mixer>::visit_param_refs(ParamVisitor<S> fn) {
  using I = ParamInit;
  const int64_t C = cfg.hidden_size, V = cfg.vocab_size, K = cfg.conv_kernel;
  const double std = cfg.initializer_range;
  fn(make_param("model.embed_tokens.weight", {V, C}, embed.data(), I::normal, std));
  for (size_t i = 0; i < blocks.size(); ++i) {
    Block& b = blocks[i];
    const std::string pre = "model.layers." + std::to_string(i) + ".";
    b.mixer.visit_params(pre + Mixer::kPrefix, [&](BasicParamRef<S> p) {
      if (p.init == I::normal) p.init_scale = std;
      fn(p);
    });
    b.mlp.visit_params(pre + "mlp.", std, fn);
    if (pre_conv()) {
      fn(make_param(pre + "conv.norm.weight", {C}, b.conv_norm.data(), I::ones, 0, true));
      fn(make_param(pre + "conv.conv.weight", {C, 1, K}, b.conv_w.data(), I::uniform_fan_in, double(K)));
      fn(make_param(pre + "conv.conv.bias", {C}, b.conv_b.data(), I::uniform_fan_in, double(K), true));
    }
    fn(make_param(pre + "seq_norm.weight", {C}, b.seq_norm.data(), I::ones, 0, true));
    fn(make_param(pre + "ffn_norm.weight", {C}, b.ffn_norm.data(), I::ones, 0, true));
  }
  fn(make_param("model.norm.weight", {C}, norm.data(), I::ones, 0, true));
  if (!cfg.tie_word_embeddings) fn(make_param("lm_head.weight", {V, C}, lm_head.data(), I::normal, std));
}

template <class Mixer>
void CausalLM<Mixer>::forward(State& st, std::span<const int64_t> ids, M* logits, Logits which,
                              std::vector<M>* hidden) const {
  check_ids(ids);
  check_state(st);
  const int64_t n = int64_t(ids.size());
  if (max_chunk <= 0 || n <= max_chunk) return forward_chunk(st, ids, logits, which, hidden);
  const int64_t C = cfg.hidden_size;
  if (which == Logits::all && logits) ensure_size(*logits, n, cfg.vocab_size);
  if (hidden) hidden->assign(blocks.size(), M(n, C));
  M part;
  std::vector<M> hpart;
  for (int64_t off = 0; off < n; off += max_chunk) {
    const int64_t len = std::min(max_chunk, n - off);
    const bool last = off + len == n;
    const Logits w = which == Logits::all ? Logits::all : (last ? which : Logits::none);
    forward_chunk(st, ids.subspan(size_t(off), size_t(len)), logits ? &part : nullptr, w, hidden ? &hpart : nullptr);
    if (logits && which == Logits::all) logits->middleRows(off, len) = part;
    if (logits && which == Logits::last && last) logits->swap(part);
    if (hidden)
      for (size_t i = 0; i < blocks.size(); ++i) (*hidden)[i].middleRows(off, len) = hpart[i];
  }
}

template <class Mixer>
void CausalLM<Mixer>::check_state(const State& st) const {
  if (st.layers.size() != blocks.size())
    throw ShapeError("forward: the state has " + std::to_string(st.layers.size()) + " layer caches, the model " +
                     std::to_string(blocks.size()) + " layers (use new_state())");
}

template <class Mixer>
void CausalLM<Mixer>::forward_chunk(State& st, std::span<const int64_t> ids, M* logits, Logits which,
                                    std::vector<M>* hidden) const {
  const int64_t n = int64_t(ids.size()), C = cfg.hidden_size;
  auto& w = st.ws;
  ensure_size(w.h, n, C);
  for (int64_t t = 0; t < n; ++t) w.h.row(t) = embed.row(ids[size_t(t)]);
  if (hidden) hidden->resize(blocks.size());
  const blocks::Act act = blocks::act_from_name(cfg.hidden_act);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& b = blocks[i];
    if (pre_conv()) {  // x = x + conv(RMSNorm(x))
      blocks::rms_norm(w.h, b.conv_norm, cfg.rms_norm_eps, w.xn);
      blocks::extend_history(w.xn, st.conv_hist[i], w.ext);
      blocks::causal_conv(w.ext, b.conv_w, b.conv_b, w.conv_out);
      w.h += w.conv_out;
    }
    blocks::rms_norm(w.h, b.seq_norm, cfg.rms_norm_eps, w.xn);  // x = x + Mixer(RMSNorm(x))
    b.mixer.forward(w.xn, st.layers[i], st.pos, w.mixer, w.t);
    w.h += w.t;
    blocks::rms_norm(w.h, b.ffn_norm, cfg.rms_norm_eps, w.xn);  // x = x + SwiGLU(RMSNorm(x))
    b.mlp.forward(w.xn, act, w.mlp, w.h);
    if (hidden) (*hidden)[i] = w.h;
  }
  st.pos += n;
  if (which == Logits::none || !logits) return;
  if (which == Logits::last) {
    ensure_size(w.hn, 1, C);
    blocks::rms_norm(w.h.bottomRows(1), norm, cfg.rms_norm_eps, w.hn);
  } else {
    blocks::rms_norm(w.h, norm, cfg.rms_norm_eps, w.hn);
  }
  ensure_size(*logits, w.hn.rows(), cfg.vocab_size);
  blocks::linear<S>(cv(w.hn), cv(head()), head16.get(), mv(*logits));
}


template <class Mixer>
void CausalLM<Mixer>::forward_rows(std::span<State* const> states, std::span<const int64_t> ids, M* logits) const {
  const int64_t B = int64_t(ids.size()), C = cfg.hidden_size;
  if (B == 0) throw ShapeError("forward_rows: no sequences (need one token for each of at least one sequence)");
  if (states.size() != ids.size())
    throw ShapeError("forward_rows: " + std::to_string(ids.size()) + " tokens for " + std::to_string(states.size()) +
                     " sequences (one token per sequence)");
  for (int64_t b = 0; b < B; ++b) {
    State* s = states[size_t(b)];
    if (s == nullptr) throw ShapeError("forward_rows: sequence " + std::to_string(b) + " has no state");
    check_state(*s);
    for (int64_t a = 0; a < b; ++a)
      if (states[size_t(a)] == s)
        throw ShapeError("forward_rows: sequences " + std::to_string(a) + " and " + std::to_string(b) +
                         " are the same state (each sequence needs its own)");
    if (ids[size_t(b)] < 0 || ids[size_t(b)] >= cfg.vocab_size)
      throw ShapeError("input_ids: token id " + std::to_string(ids[size_t(b)]) + " of sequence " + std::to_string(b) +
                       " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
  }
  auto& w = states[0]->ws;
  ensure_size(w.h, B, C);
  std::vector<int64_t> pos(static_cast<size_t>(B));
  std::vector<typename Mixer::State*> layer_states(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    w.h.row(b) = embed.row(ids[size_t(b)]);
    pos[size_t(b)] = states[size_t(b)]->pos;
  }
  const blocks::Act act = blocks::act_from_name(cfg.hidden_act);
  M x1, t1;  // the per-row fallback of mixers without forward_rows
  for (size_t i = 0; i < blocks.size(); ++i) {
    const Block& blk = blocks[i];
    if (pre_conv()) {  // x = x + conv(RMSNorm(x)), each row with its own history
      blocks::rms_norm(w.h, blk.conv_norm, cfg.rms_norm_eps, w.xn);
      ensure_size(w.conv_out, B, C);
      for (int64_t b = 0; b < B; ++b) {
        blocks::extend_history(w.xn.row(b), states[size_t(b)]->conv_hist[i], w.ext);
        blocks::causal_conv(w.ext, blk.conv_w, blk.conv_b, w.conv_out.row(b));
      }
      w.h += w.conv_out;
    }
    blocks::rms_norm(w.h, blk.seq_norm, cfg.rms_norm_eps, w.xn);
    for (int64_t b = 0; b < B; ++b) layer_states[size_t(b)] = &states[size_t(b)]->layers[i];
    if constexpr (requires { blk.mixer.forward_rows(w.xn, std::span<typename Mixer::State* const>(layer_states), std::span<const int64_t>(pos), w.mixer, w.t); }) {
      blk.mixer.forward_rows(w.xn, std::span<typename Mixer::State* const>(layer_states), std::span<const int64_t>(pos),
                             w.mixer, w.t);
    } else {  // one row at a time (the mixer's weights are read B times)
      ensure_size(w.t, B, C);
      for (int64_t b = 0; b < B; ++b) {
        x1 = w.xn.row(b);
        blk.mixer.forward(x1, *layer_states[size_t(b)], pos[size_t(b)], w.mixer, t1);
        w.t.row(b) = t1;
      }
    }
    w.h += w.t;
    blocks::rms_norm(w.h, blk.ffn_norm, cfg.rms_norm_eps, w.xn);
    blk.mlp.forward(w.xn, act, w.mlp, w.h, /*keep_pre=*/false, /*batched=*/true);
  }
  for (State* s : states) s->pos += 1;
  if (!logits) return;
  blocks::rms_norm(w.h, norm, cfg.rms_norm_eps, w.hn);
  ensure_size(*logits, B, cfg.vocab_size);
  blocks::linear<S>(cv(w.hn), cv(head()), head16.get(), mv(*logits), false, /*few_rows=*/true);
}
}  // namespace ttt

#if defined(TTT_PRECOMPILED)
#include "../inner/linear.hpp"
#include "../inner/linear_attention.hpp"
#include "../inner/mlp.hpp"
#include "../inner/swiglu.hpp"
#include "../layers/attention_layer.hpp"
#include "../layers/ttt_layer.hpp"
namespace ttt {
extern template class CausalLM<TTTLayer<inner::Linear, float>>;
extern template class CausalLM<TTTLayer<inner::MLP, float>>;
extern template class CausalLM<TTTLayer<inner::SwiGLU, float>>;
extern template class CausalLM<TTTLayer<inner::LinearAttention, float>>;
extern template class CausalLM<AttentionLayer<float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template class CausalLM<TTTLayer<inner::Linear, double>>;
extern template class CausalLM<TTTLayer<inner::MLP, double>>;
extern template class CausalLM<TTTLayer<inner::SwiGLU, double>>;
extern template class CausalLM<TTTLayer<inner::LinearAttention, double>>;
extern template class CausalLM<AttentionLayer<double>>;
#endif
}  // namespace ttt
#endif
