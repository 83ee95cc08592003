#pragma once
/// \file layers/ttt_layer_grad.hpp
/// The training side of the TTT layer: a forward over a whole sequence from position 0 that keeps
/// what the reverse pass needs (the projections, the gate, the inner state at the start of every
/// mini-batch, or of every group of G mini-batches with scan checkpointing), and the hand-derived
/// reverse pass, as autograd on the reference computes it (second-order terms of the inner steps
/// included). The inner loop is reversed mini-batch by mini-batch, carrying the cotangent of the
/// inner state; each mini-batch's reverse is the learner's `train::LearnerGrad<L>::backward`.
/// The layer-level pieces are TTTLayer's own (`project`, `lr_gate`, `output`, ...): the layer is
/// written once, and this file adds only what the reverse pass needs.
///
/// `MixerGrad<TTTLayer<L, S>>` is what the model's training engine (train/model_grad.hpp) calls;
/// `train::LayerGrad<L, S>` is the same for code that puts TTT layers into its own network.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../blocks/layer_norm.hpp"
#include "../blocks/matmul.hpp"
#include "../core/error.hpp"
#include "../inner/token_step_grad.hpp"
#include "../inner/update_grad.hpp"
#include "../inner/derived.hpp"
#include "../inner/learner_grad.hpp"
#include "mixer.hpp"
#include "ttt_layer.hpp"

namespace ttt {

template <class L, class S, class Opts>
struct MixerGrad<TTTLayer<L, S, Opts>> {
  using Layer = TTTLayer<L, S, Opts>;
  using M = MatT<S>;

  /// What the reverse pass of one layer needs.
  struct Tape {
    int64_t n = 0, group = 1;  // group 0: every mini-batch's state and (kKept) forward intermediates
    bool plain_gd = true;
    M X;                                  // (n, C) the layer's input
    typename Layer::Proj p;               // XQ, XK, XV (and the share_qk conv input)
    M sig, LRt, alpha;                    // (H, n); alpha: the forgetting gate (decay_gate)
    M Zq, O, Yn, G, gpre, Y;              // (n, C)
    std::vector<aligned_vector<S>> ckpt;  // [h] inner states at checkpoints, P + Q each
    // [h][mini-batch] the learner's forward intermediates (group 0, a learner with kept slots:
    // train::Scratch), read once by the reverse pass
    mutable std::vector<std::vector<train::Scratch<S>>> kept;
    aligned_vector<S> eta;                // (mb) token_eta
    bool ready = false;
  };
  /// Per-head buffers of one forward or backward call.
  struct HeadBuffers {
    aligned_vector<S> theta, next, dtheta, dprev, grp, deta;
    train::Scratch<S> scratch;
    train::UpdateBuffers<S> update;
    train::TokenStepBuffers<S> token;
    M zq;  // (mb, f) recomputed Zq, discarded
  };
  /// Buffers shared by every layer of a model (one layer runs at a time).
  struct Buffers {
    std::vector<HeadBuffers> heads;
    M dY, dYn, dO, dXQ, dXK, dXV, dZq, dext, dLRt, da, dAlpha;
  };

  /// out = layer(X) for X: (n, C) from position 0, recording `tp`. group: scan-checkpoint group (>= 1).
  static void forward(const Layer& w, CRefT<S> X, M& out, Tape& tp, Buffers& b, int64_t group);

  /// dX += d/dX and g += d/d(weights) of <dout, out>, from the tape of the last forward.
  static void backward(const Layer& w, Layer& g, CRefT<S> dout, RefT<S> dX, const Tape& tp, Buffers& b);

  /// Bytes held by a tape (activations and inner-state checkpoints).
  static int64_t tape_bytes(const Tape& tp) {
    int64_t n = 0;
    for (const M* m : {&tp.X, &tp.p.xq, &tp.p.ext, &tp.p.XQ, &tp.p.XK, &tp.p.XV, &tp.sig, &tp.LRt, &tp.alpha, &tp.Zq,
                       &tp.O, &tp.Yn, &tp.G, &tp.gpre, &tp.Y})
      n += int64_t(m->size());
    for (const auto& c : tp.ckpt) n += int64_t(c.size());
    int64_t kept = 0;
    if (keeps(tp))
      for (const auto& h : tp.kept)
        for (const auto& k : h) kept += k.bytes();
    return n * int64_t(sizeof(S)) + kept;
  }

 private:
  static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
  template <class V>
  static void grow(V& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }

  static inner::Segment<S> segment(const Layer& w, const Tape& tp, int64_t h, int64_t r0, int64_t len) {
    const int64_t f = w.f;
    return inner::Segment<S>{CRefT<S>(tp.p.XQ.block(r0, h * f, len, f)),
                             CRefT<S>(tp.p.XK.block(r0, h * f, len, f)),
                             CRefT<S>(tp.p.XV.block(r0, h * f, len, f)),
                             tp.eta.data(),
                             tp.LRt.row(h).data() + r0,
                             w.ln_w.row(h).data(),
                             w.ln_b.row(h).data(),
                             true,
                             w.decay_gate ? tp.alpha.row(h).data() + r0 : nullptr};
  }

  /// Whether the learner's LearnerGrad is hand-written (not the derived default).
  static constexpr bool hand_grad = !std::is_base_of_v<train::DerivedGrad<L>, train::LearnerGrad<L>>;
  /// Slots of the learner's forward that a group-0 tape keeps per mini-batch (train::Scratch).
  static constexpr size_t kKept = train::kept_slots<train::LearnerGrad<L>>();
  /// Whether the tape keeps every mini-batch's forward intermediates: group 0 (everything kept, as
  /// the reference without scan checkpointing), plain gd, a learner that declares kept slots.
  static bool keeps(const Tape& tp) { return kKept > 0 && tp.group == 0 && tp.plain_gd; }
  /// Whether the reverse chains the state's cotangent through one buffer (plain gd, and a learner
  /// whose backward takes dtheta0 == dtheta_end): no zero-fill, copy or add per mini-batch.
  static bool in_place(const Layer& w) {
    return train::state_grad_in_place<train::LearnerGrad<L>>() && w.rule.is_plain_gd();
  }

  /// One mini-batch forward from state (P + Q values) to next: the learner's LearnerGrad for
  /// plain gd; for a learner with a hand-written LearnerGrad under the order `before` or an
  /// optimizer with affine queries (momentum, decay), its gd dual form and the optimizer's step
  /// (inner/update_grad.hpp); otherwise the primal form under the layer's optimizer
  /// (inner/optimized.hpp; the derived inner gradient for a learner without accumulate_grad).
  /// Its reverse: LearnerGrad for plain gd; the same fast path (two of the learner's gd reverses
  /// and the optimizer's step_vjp); for a hand-written LearnerGrad under another optimizer in the
  /// order `after` (muon, adam), token by token (inner/token_step_grad.hpp); otherwise the
  /// derived path (inner/derived.hpp), recorded on the ad::Real tape.
  static bool fast_update(const Layer& w) {
    return hand_grad && train::update_fast<L, S>(w.rule, inner::update_reverse<Opts, S>(w.opt));
  }
  static void segment_forward(const Layer& w, const S* state, const inner::Segment<S>& seg, RefT<S> Zq, S* next,
                              HeadBuffers& hb) {
    if (w.rule.is_plain_gd()) {
      train::LearnerGrad<L>::forward(state, w.dims, seg, Zq, next, hb.scratch);
    } else if (fast_update(w)) {
      if constexpr (hand_grad)
        train::update_forward<L, S>(state, w.dims, w.specs, w.rule, w.ofn, inner::update_reverse<Opts, S>(w.opt), seg,
                                    Zq, next, hb.scratch, hb.update);
    } else {
      train::derived_forward<L, S>(state, w.dims, w.specs, w.rule, w.ofn, seg, Zq, next);
    }
  }
  static void segment_backward(const Layer& w, const S* state, const inner::Segment<S>& seg, CRefT<S> dZq,
                               const S* dnext, S* dstate, train::SegmentGrad<S>& o, HeadBuffers& hb) {
    if (w.rule.is_plain_gd()) {
      train::LearnerGrad<L>::backward(state, w.dims, seg, dZq, dnext, dstate, o, hb.scratch);
    } else if (fast_update(w)) {
      if constexpr (hand_grad)
        train::update_backward<L, S>(state, w.dims, w.specs, w.rule, w.Q, inner::update_reverse<Opts, S>(w.opt), seg,
                                     dZq, dnext, dstate, o, hb.scratch, hb.update);
    } else if (hand_grad) {
      if constexpr (hand_grad)
        train::token_step_backward<L, S>(state, w.dims, w.specs, w.rule, w.ofn, inner::step_vjp_fn<Opts, S>(w.opt),
                                         seg, dZq, dnext, dstate, o, hb.scratch, hb.token);
    } else {
      if constexpr (inner::has_generic_apply<L, S>) {
        train::derived_backward<L, S>(state, w.dims, w.specs, w.rule,
                                      inner::optimizer_fn<Opts, ad::Real<S>>(w.opt, w.specs), seg, dZq, dnext, dstate, o);
      } else {
        throw ConfigError("inner learner '" + std::string(L::name) + "': training under ttt_inner_optimizer '" +
                          w.rule.optimizer + "' / ttt_query_order '" + inner::order_name(w.rule.order) +
                          "' differentiates its apply, which must be a template over the scalar");
      }
    }
  }

  static void head_forward(const Layer& w, int64_t h, Tape& tp, HeadBuffers& hb) {
    const int64_t n = tp.n, mb = w.mb, P = w.P + w.Q, f = w.f, nseg = ceil_div(n, mb), G = std::max<int64_t>(tp.group, 1);
    grow(hb.theta, size_t(P)), grow(hb.next, size_t(P));
    std::copy(w.theta0.begin() + h * w.P, w.theta0.begin() + (h + 1) * w.P, hb.theta.begin());
    std::fill(hb.theta.begin() + w.P, hb.theta.begin() + P, S(0));  // the optimizer's state starts at 0
    auto& ck = tp.ckpt[size_t(h)];
    grow(ck, size_t(ceil_div(nseg, G) * P));
    const bool keep = keeps(tp);
    if (keep && tp.kept[size_t(h)].size() < size_t(nseg)) tp.kept[size_t(h)].resize(size_t(nseg));
    for (int64_t si = 0; si < nseg; ++si) {
      const int64_t r0 = si * mb, len = std::min(mb, n - r0);
      if (si % G == 0) std::copy(hb.theta.begin(), hb.theta.begin() + P, ck.begin() + (si / G) * P);
      if (keep) hb.scratch.keep(&tp.kept[size_t(h)][size_t(si)], kKept, false);
      segment_forward(w, hb.theta.data(), segment(w, tp, h, r0, len), RefT<S>(tp.Zq.block(r0, h * f, len, f)),
                      hb.next.data(), hb);
      hb.scratch.release();
      std::swap(hb.theta, hb.next);
    }
  }

  static void head_backward(const Layer& w, Layer& g, int64_t h, const Tape& tp, Buffers& b, HeadBuffers& hb) {
    const int64_t n = tp.n, mb = w.mb, P = w.P + w.Q, f = w.f, nseg = ceil_div(n, mb), G = std::max<int64_t>(tp.group, 1);
    auto dZq = b.dZq.block(0, h * f, n, f);
    dZq.setZero();
    blocks::layer_norm_bwd(tp.Zq.block(0, h * f, n, f), w.ln_w.row(h).data(), 1e-6, b.dO.block(0, h * f, n, f), dZq,
                           g.ln_w.row(h).data(), g.ln_b.row(h).data());
    grow(hb.dtheta, size_t(P)), grow(hb.dprev, size_t(P)), grow(hb.deta, size_t(mb));
    std::fill(hb.dtheta.begin(), hb.dtheta.begin() + P, S(0));
    std::fill(hb.deta.begin(), hb.deta.begin() + mb, S(0));
    if (G > 1) {
      grow(hb.grp, size_t(G * P));
      ensure_size(hb.zq, mb, f);
    }
    const auto& ck = tp.ckpt[size_t(h)];
    for (int64_t gi = ceil_div(nseg, G); gi-- > 0;) {
      const int64_t s0 = gi * G, s1 = std::min(nseg, s0 + G);
      const S* states = ck.data() + gi * P;  // state at the start of segment s0 + i: states + i * P
      if (G > 1) {  // recompute the group's inner states from its checkpoint
        std::copy(states, states + P, hb.grp.begin());
        for (int64_t si = s0; si + 1 < s1; ++si) {
          const int64_t r0 = si * mb, len = std::min(mb, n - r0);
          segment_forward(w, hb.grp.data() + (si - s0) * P, segment(w, tp, h, r0, len), RefT<S>(hb.zq.topRows(len)),
                          hb.grp.data() + (si - s0 + 1) * P, hb);
        }
        states = hb.grp.data();
      }
      for (int64_t si = s1; si-- > s0;) {
        const int64_t r0 = si * mb, len = std::min(mb, n - r0);
        if (!in_place(w)) std::fill(hb.dprev.begin(), hb.dprev.begin() + P, S(0));
        train::SegmentGrad<S> o{RefT<S>(b.dXQ.block(r0, h * f, len, f)),
                                RefT<S>(b.dXK.block(r0, h * f, len, f)),
                                RefT<S>(b.dXV.block(r0, h * f, len, f)),
                                hb.deta.data(),
                                b.dLRt.row(h).data() + r0,
                                g.ln_w.row(h).data(),
                                g.ln_b.row(h).data(),
                                w.decay_gate ? b.dAlpha.row(h).data() + r0 : nullptr};
        if (keeps(tp)) hb.scratch.keep(&tp.kept[size_t(h)][size_t(si)], kKept, true);
        segment_backward(w, states + (si - s0) * P, segment(w, tp, h, r0, len), CRefT<S>(dZq.middleRows(r0, len)),
                         hb.dtheta.data(), in_place(w) ? hb.dtheta.data() : hb.dprev.data(), o, hb);
        hb.scratch.release();
        if (!in_place(w)) std::swap(hb.dtheta, hb.dprev);
      }
    }
    for (int64_t i = 0; i < w.P; ++i) g.theta0[size_t(h * w.P + i)] += hb.dtheta[size_t(i)];
  }
};

template <class L, class S, class Opts>
void MixerGrad<TTTLayer<L, S, Opts>>::forward(const Layer& w, CRefT<S> X, M& out, Tape& tp, Buffers& b, int64_t group) {
  const int64_t n = X.rows(), H = w.H;
  tp.n = n;
  tp.group = std::max<int64_t>(group, 0);
  tp.plain_gd = w.rule.is_plain_gd();
  if (keeps(tp) && tp.kept.size() != size_t(H)) tp.kept.resize(size_t(H));
  ensure_size(tp.X, n, w.C);
  tp.X = X;
  w.project(tp.X, nullptr, 0, tp.p);
  w.lr_gate(tp.X, tp.sig, tp.LRt);
  w.eta_table(tp.eta);
  if (w.decay_gate) w.forget_gate(tp.X, tp.alpha);
  ensure_size(tp.Zq, n, w.C);
  ensure_size(tp.O, n, w.C);
  if (tp.ckpt.size() != size_t(H)) tp.ckpt.resize(size_t(H));
  if (b.heads.size() != size_t(H)) b.heads.resize(size_t(H));
  // heads are independent: each writes its own columns of Zq and O, its own checkpoints
  parallel_heads(H, true, [&](int64_t h) {
    head_forward(w, h, tp, b.heads[size_t(h)]);
    w.head_output(h, tp.p.XQ, tp.Zq, tp.O);
  });
  w.output(tp.X, tp.O, tp.Yn, tp.G, &tp.gpre, tp.Y, out);
  tp.ready = true;
}

template <class L, class S, class Opts>
void MixerGrad<TTTLayer<L, S, Opts>>::backward(const Layer& w, Layer& g, CRefT<S> dout, RefT<S> dX, const Tape& tp, Buffers& b) {
  const int64_t n = tp.n, C = w.C, H = w.H, f = w.f;
  const M& X = tp.X;
  const M& Y = w.use_gate ? tp.Y : tp.Yn;
  blocks::matmul(g.o, dout.transpose(), Y, true);
  ensure_size(b.dY, n, C);
  blocks::matmul(b.dY, dout, w.o);
  const M* dYn = &b.dY;
  if (w.use_gate) {
    ensure_size(b.dYn, n, C);
    b.dYn = b.dY.cwiseProduct(tp.G);
    dYn = &b.dYn;
    b.dY = b.dY.cwiseProduct(tp.Yn).cwiseProduct(blocks::gelu_grad(tp.gpre));  // now d gpre
    blocks::matmul(g.g, b.dY.transpose(), X, true);
    blocks::matmul(dX, b.dY, w.g, true);
  }
  ensure_size(b.dO, n, C);
  b.dO.setZero();
  blocks::layer_norm_bwd(tp.O, w.post_w.data(), 1e-6, *dYn, b.dO, g.post_w.data(), g.post_b.data());
  for (M* m : {&b.dXQ, &b.dXK, &b.dXV, &b.dZq}) ensure_size(*m, n, C);
  ensure_size(b.dLRt, H, n);
  b.dXQ = b.dO;  // O = XQ + LN(Zq)
  b.dXK.setZero(), b.dXV.setZero(), b.dLRt.setZero();
  if (w.decay_gate) {
    ensure_size(b.dAlpha, H, n);
    b.dAlpha.setZero();
  }
  // heads are independent: each writes its own columns of dXQ, dXK, dXV, dZq, its own row of
  // dLRt and of the ln_w / ln_b gradients, its own slice of theta0's gradient and its own deta
  parallel_heads(H, true, [&](int64_t h) { head_backward(w, g, h, tp, b, b.heads[size_t(h)]); });
  // token_eta = clamp_min(1/(t+1) + token_idx, 0): torch passes the gradient where input >= 0
  for (int64_t t = 0; t < w.mb; ++t)
    if (S(1) / S(t + 1) + w.token_idx[t] >= S(0))
      for (int64_t h = 0; h < H; ++h) g.token_idx[t] += b.heads[size_t(h)].deta[size_t(t)];
  // LRt = base_lr / f * sigmoid(lr_w X^T + lr_b)                                        (H, n)
  ensure_size(b.da, H, n);
  b.da = b.dLRt.cwiseProduct(tp.sig.cwiseProduct((S(1) - tp.sig.array()).matrix())) * (S(w.base_lr) / S(f));
  blocks::matmul(g.lr_w, b.da, X, true);
  g.lr_b += b.da.rowwise().sum().transpose();
  blocks::matmul(dX, b.da.transpose(), w.lr_w, true);
  if (w.decay_gate) {  // alpha = sigmoid(decay_w X^T + decay_b)                            (H, n)
    b.da = b.dAlpha.cwiseProduct(tp.alpha.cwiseProduct((S(1) - tp.alpha.array()).matrix()));
    blocks::matmul(g.decay_w, b.da, X, true);
    g.decay_b += b.da.rowwise().sum().transpose();
    blocks::matmul(dX, b.da.transpose(), w.decay_w, true);
  }
  blocks::rope(b.dXQ, f, w.rope, tp.p.pos.data(), /*inverse=*/true);
  blocks::rope(b.dXK, f, w.rope, tp.p.pos.data(), /*inverse=*/true);
  if (w.share_qk) {
    ensure_size(b.dext, tp.p.ext.rows(), C);
    b.dext.setZero();
    blocks::causal_conv_bwd(tp.p.ext, w.conv_q, b.dXQ, b.dext, g.conv_q, g.conv_q_b);
    blocks::causal_conv_bwd(tp.p.ext, w.conv_k, b.dXK, b.dext, g.conv_k, g.conv_k_b);
    const auto dxq = b.dext.bottomRows(n);
    blocks::matmul(g.q, dxq.transpose(), X, true);
    blocks::matmul(dX, dxq, w.q, true);
  } else {
    blocks::matmul(g.q, b.dXQ.transpose(), X, true);
    blocks::matmul(g.k, b.dXK.transpose(), X, true);
    blocks::matmul(dX, b.dXQ, w.q, true);
    blocks::matmul(dX, b.dXK, w.k, true);
  }
  blocks::matmul(g.v, b.dXV.transpose(), X, true);
  blocks::matmul(dX, b.dXV, w.v, true);
}

namespace train {

/// Set every parameter of a layer (used as a gradient accumulator) to zero.
template <class L, class S, class Opts>
void zero_grad(TTTLayer<L, S, Opts>& g) {
  g.visit_params("", [](const auto& p) { p.fill(S(0)); });
}

/// Gradients through one TTT layer, for code that puts TTT layers into its own network (an
/// autodiff tape, the hierarchical model): `forward` computes the layer's output for a whole
/// sequence X (n, C) from position 0 (exactly `TTTLayer::forward` from a fresh state) and keeps
/// what `backward` needs; `backward` takes dY and returns dX, and ADDS the layer's parameter
/// gradients into a gradient layer of the same shape (zero it yourself when a step starts). The
/// layer is read at every `forward` (after an optimizer step the next forward sees the new
/// weights). One forward, then one backward.
///
/// \code
///   const ttt::TTTLayer<ttt::inner::MLP>& layer = model.blocks[0].mixer;
///   ttt::TTTLayer<ttt::inner::MLP> grad(model.cfg);
///   ttt::train::zero_grad(grad);                               // every tensor 0
///   ttt::train::LayerGrad<ttt::inner::MLP> op(layer, /*scan_checkpoint_group=*/4);
///   ttt::Mat Y, dX;
///   op.forward(X, Y);           // X: (n, C) normed block input; Y: (n, C)
///   ...                         // dY = d loss / d Y from the rest of the network
///   op.backward(dY, dX, grad);  // dX: (n, C); grad.q, grad.theta0, ... += d loss / d param
/// \endcode
template <class L, class S = float>
class LayerGrad {
 public:
  using Layer = TTTLayer<L, S>;
  using Matrix = MatT<S>;

  explicit LayerGrad(const Layer& layer, int64_t scan_checkpoint_group = 0)
      : layer_(&layer), group_(std::max<int64_t>(scan_checkpoint_group, 0)) {
    static_assert(HasLearnerGrad<L>,
                  "ttt::train::LayerGrad: no backward for this inner learner: write its apply as a template over the "
                  "scalar (`template <class S> static void apply(const S*, int64_t, ttt::CRefT<S>, ttt::RefT<S>)`) "
                  "and the backward is derived, or specialise ttt::train::LearnerGrad<YourLearner> (see "
                  "ttt/inner/learner_grad.hpp)");
  }

  /// Y = layer(X), X: (n, C), n >= 1; keeps the tape for backward.
  void forward(CRefT<S> X, Matrix& Y) {
    if constexpr (!std::is_same_v<S, float>)
      if (float_layer_) twin_ = Layer(*float_layer_);
    if (X.cols() != layer_->C || X.rows() < 1)
      throw ShapeError("LayerGrad::forward: X is (" + std::to_string(X.rows()) + ", " + std::to_string(X.cols()) +
                       "), expected (n >= 1, " + std::to_string(layer_->C) + ")");
    Grad::forward(*layer_, X, Y, tape_, buffers_, group_);
  }

  /// dX = dY (dY/dX); grad += the layer's parameter gradients. dY: the shape of the last Y.
  void backward(CRefT<S> dY, Matrix& dX, Layer& grad) {
    if (!tape_.ready) throw Error("LayerGrad::backward: no forward to reverse");
    if (dY.rows() != tape_.n || dY.cols() != layer_->C)
      throw ShapeError("LayerGrad::backward: dY is (" + std::to_string(dY.rows()) + ", " + std::to_string(dY.cols()) +
                       "), expected (" + std::to_string(tape_.n) + ", " + std::to_string(layer_->C) + ")");
    if (!layer_->same_shape(grad)) throw ShapeError("LayerGrad::backward: the gradient layer's shape differs from the layer's");
    dX.setZero(tape_.n, layer_->C);
    Grad::backward(*layer_, grad, dY, dX, tape_, buffers_);
  }

  /// Bytes of the tape the last forward kept.
  int64_t tape_bytes() const { return Grad::tape_bytes(tape_); }

  /// A float layer run in S (double, for the finite-difference checks of a float network): its
  /// twin in S is made at every forward, and `backward` adds the gradients, cast, into a float
  /// gradient layer.
  explicit LayerGrad(const TTTLayer<L, float>& layer, int64_t scan_checkpoint_group = 0)
    requires(!std::is_same_v<S, float>)
      : layer_(&twin_), group_(std::max<int64_t>(scan_checkpoint_group, 0)), float_layer_(&layer) {}
  void backward(CRefT<S> dY, Matrix& dX, TTTLayer<L, float>& grad)
    requires(!std::is_same_v<S, float>)
  {
    Layer g(twin_);
    zero_grad(g);
    backward(dY, dX, g);
    std::vector<std::pair<S*, int64_t>> src;
    g.visit_params("", [&](const auto& p) {
      for (int64_t i = 0; i < p.numel(); ++i) src.emplace_back(&p.at(i), 0);
    });
    size_t k = 0;
    grad.visit_params("", [&](const auto& p) {
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) += float(*src[k++].first);
    });
  }

 private:
  using Grad = MixerGrad<Layer>;
  const Layer* layer_;
  int64_t group_;
  typename Grad::Tape tape_;
  typename Grad::Buffers buffers_;
  Layer twin_;
  const TTTLayer<L, float>* float_layer_ = nullptr;
};

}  // namespace train
}  // namespace ttt

#if defined(TTT_PRECOMPILED)
#include "../inner/linear.hpp"
#include "../inner/linear_attention.hpp"
#include "../inner/mlp.hpp"
#include "../inner/swiglu.hpp"
namespace ttt {
extern template struct MixerGrad<TTTLayer<inner::Linear, float>>;
extern template struct MixerGrad<TTTLayer<inner::MLP, float>>;
extern template struct MixerGrad<TTTLayer<inner::SwiGLU, float>>;
extern template struct MixerGrad<TTTLayer<inner::LinearAttention, float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template struct MixerGrad<TTTLayer<inner::Linear, double>>;
extern template struct MixerGrad<TTTLayer<inner::MLP, double>>;
extern template struct MixerGrad<TTTLayer<inner::SwiGLU, double>>;
extern template struct MixerGrad<TTTLayer<inner::LinearAttention, double>>;
#endif
}  // namespace ttt
#endif
