#pragma once
/// \file model.hpp
/// The TTT language model of ttt-lm-pytorch (`TTTForCausalLM`): embedding, blocks of
/// [optional pre-conv] + TTT layer + SwiGLU MLP with RMSNorms, final RMSNorm and LM head (tied to
/// the embedding by default). `forward` processes any chunk of a sequence and carries a `State`,
/// so prefill, decode and any chunking are one code path.
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../layers/ttt_layer.hpp"
#include "model_config.hpp"
#include "../blocks/nn.hpp"
#include "../core/params.hpp"

namespace ttt {

/// Which rows of logits `forward` computes.
enum class Logits { all, last, none };

template <class L>
class TTTModel {
 public:
  using Learner = L;
  using Layer = TTTLayer<L>;

  struct Block {
    RowVec seq_norm, ffn_norm;  // [C]
    Mat gate, up, down;         // [I, C], [I, C], [C, I]
    Layer ttt;
    RowVec conv_norm;           // pre_conv: [C]
    Mat conv_w;                 // pre_conv: [C, K]
    RowVec conv_b;              // pre_conv: [C]
  };

  /// Per-sequence state: one per layer, plus the position and reusable buffers.
  struct State {
    int64_t pos = 0;
    std::vector<typename Layer::State> layers;
    std::vector<Mat> conv_hist;  // pre_conv: [K-1, C] per layer (normed inputs)
    struct Buffers {
      Mat h, xn, t, gate, up, ext, conv_out, hn;
      typename Layer::Workspace layer;
    } ws;
  };

  ModelConfig cfg;
  Mat embed;    // [V, C]
  Mat lm_head;  // [V, C] only when the embeddings are not tied
  RowVec norm;  // [C]
  std::vector<Block> blocks;

  explicit TTTModel(const ModelConfig& c) : cfg(c) {
    cfg.validate();
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
    embed = Mat::Zero(V, C);
    if (!cfg.tie_word_embeddings) lm_head = Mat::Zero(V, C);
    norm = RowVec::Ones(C);
    blocks.resize(size_t(cfg.num_hidden_layers));
    for (auto& b : blocks) {
      b.seq_norm = RowVec::Ones(C);
      b.ffn_norm = RowVec::Ones(C);
      b.gate = Mat::Zero(I, C);
      b.up = Mat::Zero(I, C);
      b.down = Mat::Zero(C, I);
      b.ttt = Layer(cfg);
      if (cfg.pre_conv) {
        b.conv_norm = RowVec::Ones(C);
        b.conv_w = Mat::Zero(C, cfg.conv_kernel);
        b.conv_b = RowVec::Zero(C);
      }
    }
  }

  /// Every parameter under its Hugging Face name, in the reference's order.
  template <class F>
  void visit_params(F&& fn) {
    using I = ParamRef::Init;
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, In = cfg.intermediate_size, K = cfg.conv_kernel;
    const double std = cfg.initializer_range;
    fn(make_param("model.embed_tokens.weight", {V, C}, embed.data(), I::normal, std));
    for (size_t i = 0; i < blocks.size(); ++i) {
      Block& b = blocks[i];
      const std::string pre = "model.layers." + std::to_string(i) + ".";
      b.ttt.visit_params(pre + "seq_modeling_block.", [&](ParamRef p) {
        if (p.init == I::normal) p.init_scale = std;
        fn(std::move(p));
      });
      fn(make_param(pre + "mlp.gate_proj.weight", {In, C}, b.gate.data(), I::normal, std));
      fn(make_param(pre + "mlp.up_proj.weight", {In, C}, b.up.data(), I::normal, std));
      fn(make_param(pre + "mlp.down_proj.weight", {C, In}, b.down.data(), I::normal, std));
      if (cfg.pre_conv) {
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

  /// Initialise every parameter as the reference does for training from scratch.
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
    for (const auto& b : blocks) {
      s.layers.push_back(b.ttt.new_state());
      if (cfg.pre_conv) s.conv_hist.push_back(Mat::Zero(cfg.conv_kernel - 1, cfg.hidden_size));
    }
    return s;
  }

  /// Bytes of a State (excluding reusable buffers): what a sequence costs to keep.
  int64_t state_bytes() const {
    int64_t n = 0;
    for (const auto& b : blocks) n += b.ttt.state_bytes();
    if (cfg.pre_conv) n += int64_t(blocks.size()) * (cfg.conv_kernel - 1) * cfg.hidden_size * 4;
    return n;
  }

  const Mat& head() const { return cfg.tie_word_embeddings ? embed : lm_head; }

  /// Check that every id is in [0, vocab_size); ShapeError naming the position otherwise.
  void check_ids(std::span<const int64_t> ids) const {
    if (ids.empty()) throw ShapeError("input_ids: empty sequence (need at least one token)");
    for (size_t t = 0; t < ids.size(); ++t)
      if (ids[t] < 0 || ids[t] >= cfg.vocab_size)
        throw ShapeError("input_ids: token id " + std::to_string(ids[t]) + " at position " + std::to_string(t) +
                         " is outside the vocabulary [0, " + std::to_string(cfg.vocab_size) + ")");
  }

  /// Run the n tokens `ids` of one sequence from the position and state in `st`, advancing it.
  /// logits: (n, V) for Logits::all, (1, V) for Logits::last. hidden (optional): output of each
  /// block, (n, C) each.
  void forward(State& st, std::span<const int64_t> ids, Mat* logits, Logits which = Logits::all,
               std::vector<Mat>* hidden = nullptr) const {
    check_ids(ids);
    const int64_t n = int64_t(ids.size()), C = cfg.hidden_size;
    auto& w = st.ws;
    ensure_size(w.h, n, C);
    for (int64_t t = 0; t < n; ++t) w.h.row(t) = embed.row(ids[size_t(t)]);
    if (hidden) hidden->resize(blocks.size());
    const nn::Act act = nn::act_from_name(cfg.hidden_act);
    for (size_t i = 0; i < blocks.size(); ++i) {
      const Block& b = blocks[i];
      if (cfg.pre_conv) {  // x = x + conv(RMSNorm(x))
        nn::rms_norm(w.h, b.conv_norm, cfg.rms_norm_eps, w.xn);
        nn::extend_history(w.xn, st.conv_hist[i], w.ext);
        nn::causal_conv_ext(w.ext, b.conv_w, b.conv_b, w.conv_out);
        w.h += w.conv_out;
      }
      nn::rms_norm(w.h, b.seq_norm, cfg.rms_norm_eps, w.xn);  // x = x + TTT(RMSNorm(x))
      b.ttt.forward(w.xn, st.layers[i], st.pos, w.layer, w.t);
      w.h += w.t;
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

  /// FLOPs of one token's forward (all layers + head), for benchmarks.
  double flops_per_token() const {
    const double C = double(cfg.hidden_size), I = double(cfg.intermediate_size), V = double(cfg.vocab_size);
    double per_block = blocks.empty() ? 0.0 : blocks[0].ttt.flops_per_token();
    per_block += 6.0 * C * I;
    if (cfg.pre_conv) per_block += 2.0 * C * double(cfg.conv_kernel);
    return double(blocks.size()) * per_block + 2.0 * C * V;
  }
};

}  // namespace ttt
