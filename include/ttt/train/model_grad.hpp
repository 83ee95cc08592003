#pragma once
/// \file train/model_grad.hpp
/// Exact gradients of the next-token cross entropy with respect to every parameter of a language
/// model of the library's stack (models/causal_lm.hpp: TTTModel<L>, TransformerModel), through
/// the mixers' reverse passes (for TTT layers the inner gradient steps, second-order terms
/// included), as autograd on the reference computes them. The gradient is computed on the
/// model's own weights (no copy) in the model's scalar; `loss_and_grad<double>` on a float model
/// runs its double twin (the finite-difference checks).
///
/// \code
///   ttt::TTTModel<ttt::inner::Linear> model = ...;
///   ttt::TTTModel<ttt::inner::Linear> grad(model.cfg);
///   double loss = ttt::train::loss_and_grad(model, batch, grad);  // grad.embed, grad.blocks[i].mixer.q, ...
///   // double precision, inner states kept every 4 mini-batches:
///   double l2 = ttt::train::loss_and_grad<double>(model, batch, grad, {.scan_checkpoint_group = 4});
/// \endcode
///
/// How: a forward over each full sequence (from position 0) that keeps what the reverse pass needs
/// (per block its activations and the mixer's tape), then the reverse pass block by block: the
/// LM head and cross entropy, the final RMSNorm, each block's SwiGLU, mixer, pre-conv and norms,
/// the embedding. Buffers are sized by the first sequence and reused.
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../blocks/causal_conv.hpp"
#include "../blocks/cross_entropy.hpp"
#include "../blocks/matmul.hpp"
#include "../blocks/rms_norm.hpp"
#include "../blocks/swiglu.hpp"
#include "../core/error.hpp"
#include "../core/params.hpp"
#include "../layers/attention_layer.hpp"
#include "../layers/mixer.hpp"
#include "../layers/ttt_layer_grad.hpp"
#include "../models/causal_lm.hpp"

namespace ttt::train {

/// Sets every parameter of a model (used as a gradient accumulator) to zero.
template <class Model>
void zero_params(Model& m) {
  m.visit_params([](const auto& p) { p.fill(0); });
}

/// The loss and gradient of a whole model, with buffers kept from call to call (a training loop
/// holds one; `loss_and_grad` below keeps one per thread).
template <class Model>
class ModelGrad {
 public:
  using S = typename Model::Scalar;
  using Mixer = std::remove_cvref_t<decltype(std::declval<Model&>().blocks[0].mixer)>;
  using MG = MixerGrad<Mixer>;
  using M = MatT<S>;
  using R = RowT<S>;

  explicit ModelGrad(GradOptions opt = {}) : opt_(opt) {}

  /// See `loss_and_grad`: the mean next-token loss of `batch`; `grad` overwritten. `targets`
  /// (optional): what each position predicts instead of the next id, negative where not counted.
  double operator()(const Model& model, const std::vector<std::vector<int64_t>>& batch, Model& grad,
                    const std::vector<std::vector<int64_t>>* targets = nullptr);

  /// Bytes of activations and mixer tapes held by the last call.
  int64_t tape_bytes() const {
    int64_t b = 0;
    for (const auto& t : tapes_) {
      b += MG::tape_bytes(t.mixer);
      for (const M* m : {&t.h0, &t.ext, &t.h1, &t.h2, &t.xn, &t.mlp.pre, &t.mlp.up, &t.mlp.a})
        b += int64_t(m->size()) * int64_t(sizeof(S));
    }
    for (const auto& m : block_in_) b += int64_t(m.size()) * int64_t(sizeof(S));
    return b;
  }

 private:
  struct BlockTape {
    M h0, ext, h1, h2, xn;  // pre-conv input and its [zeros; RMSNorm] input, mixer input, SwiGLU input (raw, normed)
    typename blocks::SwiGLU<S>::Tape mlp;
    typename MG::Tape mixer;
  };

  GradOptions opt_;
  const Model* m_ = nullptr;
  Model* g_ = nullptr;
  blocks::Act act_ = blocks::Act::silu;
  int64_t group_ = 1;
  std::vector<BlockTape> tapes_;
  std::vector<M> block_in_;
  typename MG::Buffers mixer_buf_;
  typename blocks::SwiGLU<S>::Grad mlp_buf_;
  M h_, hn_, dlogits_, dhn_, dh_, X_, out_, dX_, dxn_, dext_, c_, xc_;

  bool recompute() const {
    if constexpr (requires { MG::kRecompute; }) return MG::kRecompute || opt_.recompute_blocks;
    else return opt_.recompute_blocks;
  }

  /// Block i on h (its input, replaced by its output), keeping what its reverse pass needs.
  void block_forward(size_t i, M& h, BlockTape& tp) {
    const auto& b = m_->blocks[i];
    const int64_t n = h.rows(), C = h.cols();
    const double eps = m_->cfg.rms_norm_eps;
    if (m_->pre_conv()) {
      tp.h0 = h;
      blocks::rms_norm(h, b.conv_norm, eps, xc_);
      blocks::zero_history(xc_, m_->cfg.conv_kernel, tp.ext);
      blocks::causal_conv(tp.ext, b.conv_w, b.conv_b, c_);
      h += c_;
    }
    tp.h1 = h;
    ensure_size(X_, n, C);
    blocks::rms_norm(h, b.seq_norm, eps, X_);
    MG::forward(b.mixer, X_, out_, tp.mixer, mixer_buf_, group_);
    h += out_;
    tp.h2 = h;
    blocks::rms_norm(h, b.ffn_norm, eps, tp.xn);
    b.mlp.forward(tp.xn, act_, tp.mlp, h, /*keep_pre=*/true);
  }

  /// dh: cotangent of block i's output on entry, of its input on return.
  void block_backward(size_t i, M& dh, const BlockTape& tp) {
    const auto& b = m_->blocks[i];
    auto& g = g_->blocks[i];
    const int64_t n = dh.rows(), C = dh.cols();
    const double eps = m_->cfg.rms_norm_eps;
    b.mlp.backward(tp.xn, act_, tp.mlp, dh, dxn_, g.mlp, mlp_buf_);
    blocks::rms_norm_bwd(tp.h2, b.ffn_norm, eps, dxn_, dh, g.ffn_norm);
    ensure_size(dX_, n, C);
    dX_.setZero();
    MG::backward(b.mixer, g.mixer, dh, dX_, tp.mixer, mixer_buf_);
    blocks::rms_norm_bwd(tp.h1, b.seq_norm, eps, dX_, dh, g.seq_norm);
    if (m_->pre_conv()) {
      ensure_size(dext_, tp.ext.rows(), C);
      dext_.setZero();
      blocks::causal_conv_bwd(tp.ext, b.conv_w, dh, dext_, g.conv_w, g.conv_b);
      blocks::rms_norm_bwd(tp.h0, b.conv_norm, eps, dext_.bottomRows(n), dh, g.conv_norm);
    }
  }

  /// Sum over positions t < n-1 of the cross entropy of predicting targets[t] (ids[t+1] unless
  /// given; negative: not counted); gradients scaled by `scale` (1 / counted positions of the
  /// batch) are added to the gradient model.
  double sequence(std::span<const int64_t> ids, std::span<const int64_t> targets, S scale) {
    const Model& m = *m_;
    const int64_t n = int64_t(ids.size()), C = m.cfg.hidden_size;
    const double eps = m.cfg.rms_norm_eps;
    const size_t nb = m.blocks.size();
    ensure_size(h_, n, C);
    for (int64_t t = 0; t < n; ++t) h_.row(t) = m.embed.row(ids[size_t(t)]);
    for (size_t i = 0; i < nb; ++i) {
      if (recompute()) block_in_[i] = h_;
      block_forward(i, h_, tapes_[recompute() ? 0 : i]);
    }
    ensure_size(hn_, n, C);
    blocks::rms_norm(h_, m.norm, eps, hn_);
    const M& head = m.head();
    ensure_size(dlogits_, n - 1, m.cfg.vocab_size);
    blocks::matmul(dlogits_, hn_.topRows(n - 1), head.transpose());  // logits, then their gradient
    const double loss = blocks::cross_entropy_grad(dlogits_, targets, scale);
    // reverse
    M& dhead = m.cfg.tie_word_embeddings ? g_->embed : g_->lm_head;
    blocks::matmul(dhead, dlogits_.transpose(), hn_.topRows(n - 1), true);
    ensure_size(dhn_, n, C);
    blocks::matmul(dhn_.topRows(n - 1), dlogits_, head);
    dhn_.row(n - 1).setZero();
    dh_.setZero(n, C);
    blocks::rms_norm_bwd(h_, m.norm, eps, dhn_, dh_, g_->norm);
    for (size_t i = nb; i-- > 0;) {
      if (recompute()) block_forward(i, block_in_[i], tapes_[0]);
      block_backward(i, dh_, tapes_[recompute() ? 0 : i]);
    }
    for (int64_t t = 0; t < n; ++t) g_->embed.row(ids[size_t(t)]) += dh_.row(t);
    return loss;
  }
};

template <class Model>
double ModelGrad<Model>::operator()(const Model& model, const std::vector<std::vector<int64_t>>& batch, Model& grad,
                                    const std::vector<std::vector<int64_t>>* targets) {
  if (!model.same_shape(grad))
    throw ShapeError("loss_and_grad: the gradient model's configuration differs from the model's");
  if (targets && targets->size() != batch.size())
    throw ShapeError("loss_and_grad: " + std::to_string(targets->size()) + " target rows for a batch of " +
                     std::to_string(batch.size()) + " sequences");
  int64_t positions = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& seq = batch[i];
    model.check_ids(seq);
    if (!targets) {
      positions += int64_t(seq.size()) - 1;
      continue;
    }
    const auto& tg = (*targets)[i];
    if (seq.size() >= 2 && tg.size() != seq.size() - 1)
      throw ShapeError("loss_and_grad: sequence " + std::to_string(i) + " has " + std::to_string(seq.size()) +
                       " ids, so " + std::to_string(seq.size() - 1) + " targets, not " + std::to_string(tg.size()));
    for (int64_t y : tg) {
      if (y >= model.cfg.vocab_size)
        throw ShapeError("loss_and_grad: target " + std::to_string(y) + " of sequence " + std::to_string(i) +
                         " is outside the vocabulary [0, " + std::to_string(model.cfg.vocab_size) + ")");
      positions += y >= 0;
    }
  }
  if (positions <= 0)
    throw ShapeError(targets ? "loss_and_grad: no target is counted (every target negative)"
                             : "loss_and_grad: the batch has no next-token position (need sequences of >= 2 tokens)");
  zero_params(grad);
  m_ = &model;
  g_ = &grad;
  act_ = blocks::act_from_name(model.cfg.hidden_act);
  if constexpr (requires { model.cfg.scan_checkpoint_group_size; })
    group_ = std::max<int64_t>(opt_.scan_checkpoint_group >= 0 ? opt_.scan_checkpoint_group
                                                               : model.cfg.scan_checkpoint_group_size,
                               0);
  const size_t nb = model.blocks.size();
  tapes_.resize(recompute() ? 1 : nb);
  block_in_.resize(recompute() ? nb : 0);
  const double scale = 1.0 / double(positions);
  double sum = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& seq = batch[i];
    if (seq.size() < 2) continue;
    const std::span<const int64_t> ids(seq.data(), seq.size());
    sum += sequence(ids, targets ? std::span<const int64_t>((*targets)[i]) : ids.subspan(1), S(scale));
  }
  return sum * scale;
}

/// A model's twin in scalar T (Model::Rebind<T>) with the same weights, cast.
template <class T, class Model>
typename Model::template Rebind<T> cast_model(const Model& m) {
  typename Model::template Rebind<T> out(m.cfg);
  copy_params(m, out);
  return out;
}

/// The mean next-token cross entropy of `batch` (sequences, each from position 0; position t
/// predicts token t+1; the mean is over all next-token positions of all sequences, as torch's
/// CrossEntropyLoss on shifted logits) and its exact gradient with respect to every parameter of
/// `model`, stored in `grad` (a model of the same configuration; every parameter overwritten; with
/// tied embeddings the embedding's gradient includes the head's). Returns the loss. S: the scalar
/// the computation runs in; a float model with S = double runs its double twin (checks). A training
/// loop that wants its buffers kept from step to step holds a ModelGrad instead.
template <class S = void, class Model>
double loss_and_grad(const Model& model, const std::vector<std::vector<int64_t>>& batch, Model& grad,
                     const GradOptions& opt = {}) {
  using MS = typename Model::Scalar;
  if constexpr (std::is_void_v<S> || std::is_same_v<S, MS>) {
    ModelGrad<Model> run(opt);
    return run(model, batch, grad);
  } else {
    using Twin = typename Model::template Rebind<S>;
    const Twin m = cast_model<S>(model);
    Twin g(model.cfg);
    ModelGrad<Twin> run(opt);
    const double loss = run(m, batch, g);
    copy_params(g, grad);
    return loss;
  }
}

/// As above with the targets given: targets[i][t] is what position t of sequence i predicts
/// (batch[i][t + 1] in the form above; size batch[i].size() - 1); a negative target is not counted
/// (torch's ignore_index), and the loss is the mean over the counted ones. For tasks scored on
/// some positions only (associative recall: the answers).
template <class Model>
double loss_and_grad(const Model& model, const std::vector<std::vector<int64_t>>& batch,
                     const std::vector<std::vector<int64_t>>& targets, Model& grad, const GradOptions& opt = {}) {
  ModelGrad<Model> run(opt);
  return run(model, batch, grad, &targets);
}

}  // namespace ttt::train

#if defined(TTT_PRECOMPILED)
#include "../inner/linear.hpp"
#include "../inner/linear_attention.hpp"
#include "../inner/mlp.hpp"
#include "../inner/swiglu.hpp"
#include "../models/transformer.hpp"
#include "../models/ttt_model.hpp"
namespace ttt::train {
extern template class ModelGrad<TTTModel<inner::Linear, float>>;
extern template class ModelGrad<TTTModel<inner::MLP, float>>;
extern template class ModelGrad<TTTModel<inner::SwiGLU, float>>;
extern template class ModelGrad<TTTModel<inner::LinearAttention, float>>;
extern template class ModelGrad<TransformerModelT<float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template class ModelGrad<TTTModel<inner::Linear, double>>;
extern template class ModelGrad<TTTModel<inner::MLP, double>>;
extern template class ModelGrad<TTTModel<inner::SwiGLU, double>>;
extern template class ModelGrad<TTTModel<inner::LinearAttention, double>>;
extern template class ModelGrad<TransformerModelT<double>>;
#endif
}  // namespace ttt::train
#endif
