#pragma once
/// \file zoo.hpp
/// The study's model zoo: a name picks the sequence mixer and, for TTT, the inner learner and
/// the backbone. Everything past the name goes through one small interface (`Model`) that wraps
/// the library's models: training steps (loss_and_grad + clipping + AdamW), per-position
/// evaluation, prefill/decode timing and state bytes.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <ttt/core/parallel.hpp>
#include <ttt/inner/registry.hpp>
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/inner/linear_attention.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/model_grad.hpp>
#include <ttt/train/optim.hpp>
#include <ttt/models/transformer.hpp>

#include "study.hpp"

namespace study {

struct Timing {
  double prefill_s = 0;      ///< prefill of `context` tokens from an empty state
  double decode_s = 0;       ///< mean time of one decoded token after the prefill
};

/// One model of the zoo, type-erased.
class Model {
 public:
  virtual ~Model() = default;
  virtual int64_t num_params() = 0;
  /// The parameters that run for every token at inference, what the zoo matches: all of them but
  /// an embedding table that is only looked up (a tied one is the output head and counts) and the
  /// hierarchical model's training-only heads (the compressors' reconstruction heads, to_recon,
  /// and the hierarchical predictions, to_hierarchical_preds).
  virtual int64_t per_token_params() = 0;
  virtual void init(uint64_t seed) = 0;
  /// Bytes a sequence's state holds after `context` tokens (TTT: fixed; attention: KV cache).
  virtual int64_t state_bytes(int64_t context) const = 0;
  /// About the bytes of work buffers a prefill of `context` tokens needs besides the state (the
  /// memory check before any work starts). Default: 24 rows of hidden floats per token.
  virtual int64_t prefill_bytes(int64_t context) const = 0;
  /// One optimiser step on `batch` (split over `threads` threads); returns the mean loss. `targets`
  /// (empty: every next token): what each position predicts, -1 where not counted (the
  /// hierarchical models train on the original's loss of every position and ignore them).
  virtual double train_step(const std::vector<Seq>& batch, const std::vector<std::vector<int64_t>>& targets, double lr,
                            double ttt_lr_scale, int threads) = 0;
  /// The logits (n - 1, V) of a sequence of n tokens read without its last one: row t predicts s[t + 1].
  virtual ttt::Mat logits(const Seq& s) = 0;
  /// Prefill `prompt`, then decode 4 untimed and `decode` timed tokens one at a time (greedy).
  virtual Timing time(const Seq& prompt, int64_t decode) = 0;
  /// Every parameter's floats, in visit_params order (for resuming after training).
  virtual std::string weights() = 0;
  virtual void set_weights(const std::string& bytes, const std::string& source) = 0;
};

namespace detail {

template <class M>
void scale_add(M& acc, M& g, double s_acc, double s_g) {
  std::vector<ttt::ParamRef> a, b;
  acc.visit_params([&](ttt::ParamRef p) { a.push_back(std::move(p)); });
  g.visit_params([&](ttt::ParamRef p) { b.push_back(std::move(p)); });
  for (size_t k = 0; k < a.size(); ++k) {
    const ttt::ParamRef &x = a[k], &y = b[k];
    x.for_pair(y, 0, x.numel(), [&](int64_t, float& v, float w) { v = float(s_acc * v + s_g * w); });
  }
}

/// `Cfg` builds `M` (ModelConfig for TTTModel, AttnConfig for TransformerModel, HierConfig for
/// the hierarchical transformer).
template <class M, class Cfg>
class Wrap final : public Model {
 public:
  static constexpr bool kHier = std::is_same_v<M, ttt::hier::HierarchicalTransformer>;
  static constexpr bool kTTT = kHier || requires(M& m) { m.blocks[0].ttt; };  // has an inner lr to warm up
  explicit Wrap(const Cfg& c) : cfg_(c), m_(c), g_(c), base_lr_(c.ttt_base_lr) {}

  int64_t num_params() override { return m_.num_params(); }
  int64_t per_token_params() override {
    int64_t n = 0;
    m_.visit_params([&](const auto& p) {
      const std::string& k = p.name;
      if (k.find("token_emb.") == std::string::npos && k.find("to_recon") == std::string::npos &&
          k.find("to_hierarchical_preds") == std::string::npos)
        n += p.numel();
    });
    return n;
  }
  void init(uint64_t seed) override {
    m_.init_weights(seed);
    opt_ = ttt::train::AdamW({.weight_decay = 0.1});
    opt_.init(m_);
  }
  int64_t state_bytes(int64_t context) const override {
    if constexpr (kHier) return ttt::hier::Decoder<float>::state_bytes_at(m_, context);
    else if constexpr (requires { m_.state_bytes(context); }) return m_.state_bytes(context);
    else return m_.state_bytes();
  }
  int64_t prefill_bytes(int64_t context) const override {
    if constexpr (kHier) return m_.forward_bytes(std::min(context, ttt::hier::Decoder<float>::kPrefillChunk));
    else return context * cfg_.hidden_size * 4 * 24;
  }

  double train_step(const std::vector<Seq>& batch, const std::vector<std::vector<int64_t>>& targets, double lr,
                    double ttt_lr_scale, int threads) override {
    using ttt::train::set_ttt_base_lr;  // or hier::set_ttt_base_lr, by argument-dependent lookup
    using ttt::train::loss_and_grad;    // or hier::loss_and_grad (the original's total loss)
    if constexpr (kTTT) {
      set_ttt_base_lr(m_, base_lr_ * ttt_lr_scale);  // the recipe's warm-up of the inner lr
      set_ttt_base_lr(g_, base_lr_ * ttt_lr_scale);
    }
    // Sequences split into `threads` contiguous shares; shares combined in a fixed order.
    const size_t T = size_t(std::clamp<int64_t>(threads, 1, int64_t(batch.size())));
    while (extra_.size() + 1 < T) extra_.emplace_back(cfg_);
    const bool masked = !kHier && !targets.empty();
    std::vector<std::vector<Seq>> parts(T), tparts(T);
    std::vector<double> loss(T), pos(T);
    for (size_t i = 0; i < batch.size(); ++i) {
      const size_t k = i * T / batch.size();
      parts[k].push_back(batch[i]);
      if (masked) tparts[k].push_back(targets[i]);
    }
    for (size_t k = 0; k < T; ++k) {  // the positions a share counts: its weight in the batch's mean
      for (const auto& s : parts[k]) pos[k] += masked ? 0.0 : double(s.size() - 1);
      for (const auto& t : tparts[k]) pos[k] += double(std::count_if(t.begin(), t.end(), [](int64_t y) { return y >= 0; }));
    }
    auto grad = [&](size_t k) -> M& { return k == 0 ? g_ : extra_[k - 1]; };
    if constexpr (kTTT)
      for (auto& e : extra_) set_ttt_base_lr(e, base_lr_ * ttt_lr_scale);
    // One task per share, each into its own gradient; the threads split the batch, so their
    // OpenMP (head) loops get one thread each.
    ttt::parallel_for(
        int64_t(T), int(T),
        [&](int64_t k) {
          if constexpr (!kHier)
            if (masked) {
              loss[size_t(k)] = ttt::train::loss_and_grad(m_, parts[size_t(k)], tparts[size_t(k)], grad(size_t(k)));
              return;
            }
          loss[size_t(k)] = loss_and_grad(m_, parts[size_t(k)], grad(size_t(k)));
        },
        /*inner_threads=*/1);
    double total = 0, out = 0;
    for (double p : pos) total += p;
    for (size_t k = 0; k < T; ++k) out += loss[k] * pos[k] / total;
    if (T > 1) {
      scale_add(g_, g_, 0.0, pos[0] / total);
      for (size_t k = 1; k < T; ++k) scale_add(g_, grad(k), 1.0, pos[k] / total);
    }
    ttt::train::clip_grad_norm(g_, 1.0);
    opt_.step(m_, g_, lr);
    return out;
  }

  ttt::Mat logits(const Seq& s) override {
    ttt::Mat out;
    if constexpr (kHier) {
      out = m_.forward(std::span<const int64_t>(s.data(), s.size() - 1));
    } else {
      auto st = m_.new_state();
      m_.forward(st, std::span<const int64_t>(s.data(), s.size() - 1), &out, ttt::Logits::all);
    }
    return out;
  }

  /// Prefill: the fastest of repeated runs from a fresh state (repeated until about 0.3 s are
  /// spent, at most 15 times: a short prefill takes milliseconds, less than one scheduler slice
  /// on a shared machine). Decode: the median of the per-token times from a state holding the
  /// prompt. The hierarchical model's prefill is hier::Decoder::prefill (the prompt in chunks of
  /// 1,024 tokens through Decoder::advance: the caches filled and the last position's logits, the
  /// work the other models' prefill does; its forward, every position's logits as the original
  /// computes, is what bench_hier's Hier/<model>/prefill times).
  Timing time(const Seq& prompt, int64_t decode) override {
    using clock = std::chrono::steady_clock;
    auto secs = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };
    const std::span<const int64_t> p(prompt);
    ttt::Mat last;
    auto prefill = [&](std::span<const int64_t> ids) {
      if constexpr (kHier) {
        ttt::hier::Decoder<float> d(m_);
        last = d.prefill(ids);
      } else {
        auto st = m_.new_state();
        m_.forward(st, ids, &last, ttt::Logits::last);
      }
    };
    prefill(p.first(std::min<size_t>(p.size(), 2048)));  // warm-up: first touch of weights and buffers, thread pool
    Timing t;
    t.prefill_s = INFINITY;
    double spent = 0;
    for (int rep = 0; rep < 15 && (rep == 0 || spent < 0.3); ++rep) {
      const auto t0 = clock::now();
      prefill(p);
      const double s = secs(t0);
      t.prefill_s = std::min(t.prefill_s, s), spent += s;
    }
    auto state = [&] {
      if constexpr (kHier) return ttt::hier::Decoder<float>(m_);
      else return m_.new_state();
    }();
    auto feed = [&](std::span<const int64_t> ids) {
      if constexpr (kHier) {
        if (state.position() == 0) last = state.prefill(ids);
        else for (int64_t tok : ids) last = state.step(tok);
      } else {
        m_.forward(state, ids, &last, ttt::Logits::last);
      }
    };
    feed(p);
    int64_t next = 0;
    auto step = [&] {
      Eigen::Index arg = 0;
      last.row(0).maxCoeff(&arg);
      next = int64_t(arg);
      feed(std::span<const int64_t>(&next, 1));
    };
    for (int i = 0; i < 4; ++i) step();  // untimed: the first one-token call resizes the work buffers
    std::vector<double> per_token;
    for (int64_t i = 0; i < decode; ++i) {
      const auto t0 = clock::now();
      step();
      per_token.push_back(secs(t0));
    }
    t.decode_s = per_token.empty() ? 0.0 : median(per_token);  // as the study's other medians
    return t;
  }

  std::string weights() override {
    std::string out;
    m_.visit_params([&](const ttt::ParamRef& p) {
      const size_t at = out.size();
      out.resize(at + size_t(p.numel()) * 4);
      p.copy_out(reinterpret_cast<float*>(out.data() + at));
    });
    return out;
  }
  void set_weights(const std::string& bytes, const std::string& source) override {
    size_t need = 0;
    m_.visit_params([&](const ttt::ParamRef& p) { need += size_t(p.numel()) * 4; });
    if (bytes.size() != need)
      throw ttt::FormatError(source + ": " + std::to_string(bytes.size()) + " bytes of weights, this model needs " +
                             std::to_string(need));
    size_t at = 0;
    m_.visit_params([&](const ttt::ParamRef& p) {
      p.copy_in(reinterpret_cast<const float*>(bytes.data() + at));
      at += size_t(p.numel()) * 4;
    });
  }

 private:
  Cfg cfg_;
  M m_, g_;
  std::vector<M> extra_;
  double base_lr_;
  ttt::train::AdamW opt_;
};

}  // namespace detail

/// The hierarchical models: the original's blocks (local attention, GELU feedforward of width
/// `ff`, token shift) at width `hidden` for every hierarchy, `layers` deep, local windows of
/// `window`; the hybrid puts TTT-Linear (mini-batch `mini_batch`) in the 8x slot. seq_len is
/// unbounded (no window is clamped to full attention); ignore_index -1 (every target counts, as
/// in the other models' loss).
inline ttt::hier::HierConfig hier_config(const std::string& name, const Spec& s, int64_t ff) {
  nlohmann::json j = {{"num_tokens", s.vocab}, {"dim", s.hidden}, {"depth", s.layers}, {"seq_len", int64_t(1) << 30},
                      {"heads", s.heads}, {"dim_head", std::max<int64_t>(2, s.hidden / s.heads / 2 * 2)},
                      {"ff_mult", (double(ff) + 0.5) / double(s.hidden)}, {"ignore_index", -1}};
  if (name == "hier-local") j["hierarchies"] = 1, j["window_sizes"] = s.window;
  else if (name == "hier-1-2") j["hierarchies"] = {1, 2}, j["window_sizes"] = s.window;
  else if (name == "hier-1-2-8") j["hierarchies"] = {1, 2, 8}, j["window_sizes"] = s.window;
  else if (name == "hier-ttt") {
    j["hierarchies"] = {1, 2, 8};
    j["window_sizes"] = {nlohmann::json(s.window), nlohmann::json(s.window), nlohmann::json(nullptr)};
    j["mixer"] = {"attention", "attention", "ttt-linear"};
    j["ttt_mini_batch_size"] = s.mini_batch;
  } else {
    throw ttt::Error("unknown hierarchical model '" + name + "'");
  }
  return ttt::hier::HierConfig::from_json(j, name);
}

/// The model of a name with feedforward width `intermediate` (SwiGLU; GELU for hier-*).
inline std::unique_ptr<Model> make_model(const std::string& name, const Spec& s, int64_t intermediate) {
  check_model_name(name);
  // ttt-<learner>[-mamba]: the learner by its registry name; the other models use none ("linear"
  // fills the config's field).
  const auto tn = parse_ttt_name(name);
  const bool ttt_model = tn.has_value();
  const std::string learner = ttt_model ? tn->learner : "linear";
  ttt::ModelConfig c =
      ttt::ModelConfig::sized(learner, s.vocab, s.hidden, s.layers, s.heads, intermediate, s.mini_batch);
  c.max_position_embeddings = 1 << 30;
  if (ttt_model) c.ttt_inner_optimizer = tn->optimizer;
  if (ttt_model && tn->before) c.ttt_query_order = "before";
  if (ttt_model && tn->mamba) c.pre_conv = c.share_qk = c.use_gate = true;
  if (name == "linear-attn") {  // inner/linear_attention.hpp: the whole sequence is one mini-batch
    c.ttt_layer_type = "linear_attention";
    if (s.max_len > (int64_t(1) << 16))
      throw ttt::Error("linear-attn: sequences of " + std::to_string(s.max_len) +
                       " tokens (the longest --contexts + 1, or --time-contexts + decode) are beyond its limit of "
                       "65536: it runs the whole sequence as one TTT mini-batch (mini_batch_size <= 65536); lower "
                       "the contexts or leave linear-attn out of --models");
    c.mini_batch_size = s.max_len;
    return std::make_unique<detail::Wrap<ttt::TTTModel<ttt::inner::LinearAttention>, ttt::ModelConfig>>(c);
  }
  if (name.rfind("hier-", 0) == 0) return std::make_unique<detail::Wrap<ttt::hier::HierarchicalTransformer, ttt::hier::HierConfig>>(
                                             hier_config(name, s, intermediate));
  if (ttt_model)
    return ttt::inner::with_learner<Learners>(learner, name, [&]<class L>() -> std::unique_ptr<Model> {
      return std::make_unique<detail::Wrap<ttt::TTTModel<L>, ttt::ModelConfig>>(c);
    });
  const ttt::AttnConfig a(c, name == "swa" ? s.window : -1);
  return std::make_unique<detail::Wrap<ttt::TransformerModel, ttt::AttnConfig>>(a);
}

/// Feedforward widths (SwiGLU; GELU for hier-*) that give every model about the per-token
/// parameter count (Model::per_token_params) of the largest one at the base width 8C/3 (rounded
/// to 8), among `names` and `reference`: the rest of a model's parameters differ with the mixer.
/// Matching the per-token count keeps a flat baseline from absorbing the hierarchical model's
/// training-only reconstruction heads (8 x 256 x 64 weights at the (1, 2, 8) level 8 alone) into
/// a wider feedforward. With a fixed `reference` (the study passes its seven standard models) a
/// model has the same size whichever others run beside it.
inline std::vector<int64_t> matched_widths(const std::vector<std::string>& names, const Spec& s,
                                           const std::vector<std::string>& reference = {}) {
  const int64_t base = (8 * s.hidden / 3 + 7) / 8 * 8;
  std::vector<int64_t> n;
  for (const auto& m : names) n.push_back(make_model(m, s, base)->per_token_params());
  int64_t target = *std::max_element(n.begin(), n.end());
  for (const auto& m : reference) target = std::max(target, make_model(m, s, base)->per_token_params());
  std::vector<int64_t> w;
  for (size_t i = 0; i < names.size(); ++i) {
    // parameters per unit of width, measured (3 hidden x layers for SwiGLU; 2 hidden x layers x
    // hierarchies for the hierarchical models' GELU feedforward)
    const double per_unit = double(make_model(names[i], s, base + 64)->per_token_params() - n[i]) / 64.0;
    w.push_back(std::max<int64_t>(1, base + int64_t(std::llround(double(target - n[i]) / per_unit))));
  }
  return w;
}

}  // namespace study
