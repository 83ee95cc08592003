#pragma once
/// \file hier/loss.hpp
/// The training loss of the hierarchical transformer as the original computes it (`loss`: the
/// next-token cross entropy, the reconstruction and hierarchical-AR parts, their weighted total
/// and its exact gradient on the tape), and the trainer's hooks for the model (loss_and_grad,
/// set_ttt_base_lr, found by argument-dependent lookup). HierarchicalTransformerT::loss forwards here.
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../../ad/ops.hpp"
#include "../../ad/tape.hpp"
#include "../../core/error.hpp"
#include "../../layers/mixer.hpp"
#include "graph.hpp"
#include "params.hpp"

namespace ttt::hier {

/// The loss of `HierarchicalTransformerT::loss`: the total and its three unweighted parts.
struct Losses {
  double total = 0, ce = 0, recon = 0, ar = 0;
};

namespace detail {

/// A ShapeError unless g has p's parameters (names and shapes, in order) and mixers.
template <class T, class Ls>
void check_same_shape(const HierParams<T, Ls>& p, HierParams<T, Ls>& g) {
  using M = typename HierParams<T, Ls>::M;
  using Init = typename HierParams<T, Ls>::Init;
  std::vector<std::pair<std::string, std::pair<Eigen::Index, Eigen::Index>>> a;
  const_cast<HierParams<T, Ls>&>(p).visit(
      [&](const std::string& n, M& m, const std::vector<int64_t>&, Init, int64_t) { a.push_back({n, {m.rows(), m.cols()}}); });
  size_t i = 0;
  g.visit([&](const std::string& n, M& m, const std::vector<int64_t>&, Init, int64_t) {
    if (i >= a.size() || a[i].first != n || a[i].second != std::make_pair(m.rows(), m.cols()))
      throw ShapeError("HierarchicalTransformer::loss: the gradient model does not have this model's configuration "
                       "(first difference at '" + n + "')");
    ++i;
  });
  if (i != a.size()) throw ShapeError("HierarchicalTransformer::loss: the gradient model has fewer parameters");
  for (int64_t h = 0; h < p.cfg.num_hierarchies(); ++h)
    if (g.cfg.mixer_of(h) != p.cfg.mixer_of(h) || g.cfg.ttt_mini_batch_size != p.cfg.ttt_mini_batch_size ||
        g.cfg.ttt_use_gate != p.cfg.ttt_use_gate)
      throw ShapeError("HierarchicalTransformer::loss: the gradient model's mixers differ from the model's");
}

}  // namespace detail

/// The training loss of the original on a batch: each sequence's first L - 1 tokens are the
/// input and its last L - 1 the labels, and
///   total = ce + recon_loss_weight * recon + hierarchical_ar_loss_weight * ar
///   ce    = mean next-token cross entropy over labels != ignore_index (the whole batch)
///   recon = sum over hierarchies c > 1 of the mean cross entropy of to_recon(embeds) against
///           the c tokens each row covers (left-padded with 0; always ignoring 0, as the original)
///   ar    = sum over hierarchies c > 1 of 1 - mean cosine(Linear(e)[:-1], e[1:])
/// With `grad`, d total / d parameter is ADDED into grad's parameters. Without, it runs on an
/// inference tape (ad::no_grad): each sequence's intermediates are freed once its loss terms are
/// formed, and the TTT mixers run their layer's plain forward.
template <class T, class Ls>
Losses loss(const HierParams<T, Ls>& p, const std::vector<std::vector<int64_t>>& batch, HierParams<T, Ls>* grad = nullptr) {
  using V = ad::Var<T>;
  const HierConfig& cfg = p.cfg;
  if (batch.empty()) throw ShapeError("HierarchicalTransformer::loss: empty batch");
  if (grad) detail::check_same_shape(p, *grad);
  ad::Tape<T> grad_tape, eval_tape{ad::no_grad};
  ad::Tape<T>& tape = grad ? grad_tape : eval_tape;
  detail::Leaves<T, Ls> leaves(tape, p, grad);
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
    const size_t mark = tape.size();
    std::vector<V> terms_b;  // this sequence's 1 x 1 loss terms: all an inference tape keeps of it
    detail::Graph<T> g = detail::build(p, leaves, in);
    ce_parts.push_back(ad::cross_entropy_sum(g.logits, labels, cfg.ignore_index));
    terms_b.push_back(ce_parts.back());
    ce_count += ad::count_targets(labels, cfg.ignore_index);
    const int64_t n = int64_t(in.size());
    for (int64_t h = 0; h < H; ++h) {
      const int64_t c = cfg.compression(h), s = cfg.stride(h);
      if (c == 1) continue;
      const V e = g.embeds[size_t(h)];
      const int64_t Lh = e.rows();
      if (cfg.should_recon()) {
        const V rl = ad::linear(e, leaves(p.compress[size_t(h)].recon));  // (L_h, c V)
        for (int64_t i = 0; i < c; ++i) {
          std::vector<int64_t> tgt(static_cast<size_t>(Lh));
          for (int64_t k = 0; k < Lh; ++k) {
            const int64_t pos = k * s - c + 1 + i;
            tgt[size_t(k)] = pos < 0 || pos >= n ? 0 : in[size_t(pos)];
          }
          rec_count[size_t(h)] += ad::count_targets(tgt, 0);
          rec_parts[size_t(h)].push_back(ad::cross_entropy_sum(ad::cols(rl, i * Vn, Vn), std::move(tgt), int64_t(0)));
          terms_b.push_back(rec_parts[size_t(h)].back());
        }
      }
      const V pred = ad::linear(e, leaves(p.hpred_w[size_t(h)]), leaves(p.hpred_b[size_t(h)]));
      if (Lh > 1) {
        ar_parts[size_t(h)].push_back(ad::cosine_sum(ad::rows(pred, 0, Lh - 1), ad::rows(e, 1, Lh - 1)));
        terms_b.push_back(ar_parts[size_t(h)].back());
      }
      ar_count[size_t(h)] += Lh - 1;
    }
    tape.release(mark, terms_b);  // (nothing on a gradient tape)
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

// The trainer's hooks take the model class itself (model.hpp), not HierParams: ttt::train's
// generic set_ttt_base_lr(Model&) / loss_and_grad(const Model&, ...) would otherwise win overload
// resolution (an exact match beats a derived-to-base conversion). (HierarchicalTransformerT is
// declared in params.hpp.)

/// The inner learning rate of every TTT mixer (ttt::train's trainer warms it up from 0; found by
/// argument-dependent lookup, preferred over train::set_ttt_base_lr as the more specialised).
template <class T, class Ls>
void set_ttt_base_lr(HierarchicalTransformerT<T, Ls>& model, double v) {
  model.cfg.ttt_base_lr = v;
  for (auto& layer : model.layers)
    for (auto& b : layer) b.with_ttt([&](auto& l) { l.base_lr = v; });
}

/// The training step's loss and gradient in the trainer's form (ttt::train::train and
/// parallel_loss_and_grad call it): `grad` is overwritten with d total / d parameter and the
/// original's total loss (ce + recon_loss_weight recon + hierarchical_ar_loss_weight ar) is
/// returned. GradOptions do not apply (the TTT mixers keep every mini-batch's state).
template <class T, class Ls>
double loss_and_grad(const HierarchicalTransformerT<T, Ls>& model, const std::vector<std::vector<int64_t>>& batch,
                     HierarchicalTransformerT<T, Ls>& grad, const train::GradOptions& = {}) {
  grad.zero();
  return hier::loss(model, batch, &grad).total;
}

}  // namespace ttt::hier

#if defined(TTT_PRECOMPILED)
namespace ttt::hier {
extern template Losses loss<float>(const HierParams<float>&, const std::vector<std::vector<int64_t>>&, HierParams<float>*);
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template Losses loss<double>(const HierParams<double>&, const std::vector<std::vector<int64_t>>&,
                                    HierParams<double>*);
#endif
}  // namespace ttt::hier
#endif
