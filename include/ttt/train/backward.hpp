#pragma once
/// \file train/backward.hpp
/// Exact gradients of the next-token cross entropy with respect to every parameter of a
/// TTTModel<L>, through the inner gradient steps (second-order terms included), as autograd on the
/// reference computes them; and the same for one TTT layer alone (`LayerGrad`), for code that puts
/// TTT layers into its own network.
///
/// \code
///   ttt::TTTModel<ttt::inner::Linear> model = ...;
///   ttt::TTTModel<ttt::inner::Linear> grad(model.cfg);
///   double loss = ttt::train::loss_and_grad(model, batch, grad);  // grad.embed, grad.blocks[i].ttt.q, ...
///   // double precision (finite-difference checks), inner states kept every 4 mini-batches:
///   double l2 = ttt::train::loss_and_grad<double>(model, batch, grad, {.scan_checkpoint_group = 4});
/// \endcode
///
/// How: a forward over each full sequence (from position 0, mini-batches of `mini_batch_size` then
/// the remainder, as the reference's full-sequence forward) that keeps what the reverse pass needs
/// (per block its activations; per head the inner state at the start of every mini-batch, or of
/// every group of G mini-batches with scan checkpointing), then a hand-derived reverse pass. The
/// inner loop is reversed mini-batch by mini-batch, carrying the cotangent of the inner state; each
/// mini-batch's reverse is the learner's `LearnerGrad<L>::backward` (train/learner_grad.hpp), the
/// one piece a new learner has to supply. The scalar S is float (as the reference's float32
/// autograd; the loss is summed in double) or double (the finite-difference tests). Buffers are
/// sized by the first sequence and reused: nothing is allocated inside the mini-batch loop.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../layers/ttt_layer.hpp"
#include "../models/ttt_model.hpp"
#include "../core/tensor.hpp"
#include "learner_grad.hpp"
#include "ops.hpp"

namespace ttt::train {

/// How gradients are computed (memory against recomputation); the result does not depend on it.
struct GradOptions {
  /// Inner states kept by the forward, as the reference's `scan_checkpoint_group_size`:
  /// -1: the model config's `scan_checkpoint_group_size`; 0 or 1: the start of every mini-batch;
  /// G > 1: the start of every group of G mini-batches, the group's inner forward recomputed in the
  /// reverse pass (memory per head: (mini-batches / G + G) states instead of one per mini-batch).
  int64_t scan_checkpoint_group = -1;
  /// Keep only each block's input in the forward and recompute one block's forward at a time in
  /// the reverse pass (one more forward; activations of one block instead of all).
  bool recompute_blocks = false;
};

namespace detail {

template <class S>
using M_ = MatT<S>;
template <class S>
using R_ = RowT<S>;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/// Copy / cast between the float model's tensors and scalar-S mirrors.
struct Load {
  template <class A, class B>
  void operator()(A& ours, const B& theirs) const {
    if constexpr (requires { ours.setZero(); }) ours = theirs.template cast<typename A::Scalar>();
    else ours.assign(theirs.begin(), theirs.end());
  }
};
struct Store {
  bool add = false;
  template <class A, class B>
  void operator()(const A& ours, B& theirs) const {
    if (theirs.size() == 0) return;
    if constexpr (requires { theirs.setZero(); }) {
      if (add) theirs += ours.template cast<float>();
      else theirs = ours.template cast<float>();
    } else {
      for (size_t i = 0; i < theirs.size(); ++i) theirs[i] = (add ? theirs[i] : 0.0f) + float(ours[i]);
    }
  }
};
struct Zero {
  template <class A>
  void operator()(A& x) const {
    if constexpr (requires { x.setZero(); }) x.setZero();
    else std::fill(x.begin(), x.end(), 0);
  }
};

/// One TTT layer's parameters (or their gradients) in scalar S.
template <class S>
struct LayerW {
  M_<S> q, k, v, o, g, conv_q, conv_k, lr_w, ln_w, ln_b;
  R_<S> conv_q_b, conv_k_b, lr_b, token_idx, post_w, post_b;
  std::vector<S> theta0;  // [H, P]

  /// fn(ours, theirs) over every tensor; Layer: TTTLayer<L> or const TTTLayer<L>.
  template <class Self, class Layer, class F>
  static void zip(Self& a, Layer& l, F&& fn) {
    fn(a.q, l.q), fn(a.k, l.k), fn(a.v, l.v), fn(a.o, l.o), fn(a.g, l.g), fn(a.conv_q, l.conv_q);
    fn(a.conv_k, l.conv_k), fn(a.lr_w, l.lr_w), fn(a.ln_w, l.ln_w), fn(a.ln_b, l.ln_b);
    fn(a.conv_q_b, l.conv_q_b), fn(a.conv_k_b, l.conv_k_b), fn(a.lr_b, l.lr_b), fn(a.token_idx, l.token_idx);
    fn(a.post_w, l.post_w), fn(a.post_b, l.post_b), fn(a.theta0, l.theta0);
  }
  template <class F>
  void each(F&& fn) {
    fn(q), fn(k), fn(v), fn(o), fn(g), fn(conv_q), fn(conv_k), fn(lr_w), fn(ln_w), fn(ln_b);
    fn(conv_q_b), fn(conv_k_b), fn(lr_b), fn(token_idx), fn(post_w), fn(post_b), fn(theta0);
  }
  template <class L>
  void load(const TTTLayer<L>& l) {
    zip(*this, l, Load{});
  }
  template <class L>
  void store(TTTLayer<L>& l, bool add) const {
    zip(*this, l, Store{add});
  }
  void zero() { each(Zero{}); }
};

/// The engine of one TTT layer in scalar S: a forward that records a tape, a reverse pass that
/// consumes it. Weights and gradient accumulators are passed in (a model shares them).
template <class L, class S>
class LayerCore {
 public:
  using M = M_<S>;

  /// Per-head buffers used inside one forward or backward call (shared by every layer of a model).
  struct HeadWs {
    std::vector<S> theta, next, dtheta, dprev, grp, deta;
    Scratch<S> scratch;
    M zq;  // (mb, f) recomputed Zq, discarded
  };
  struct Shared {
    std::vector<HeadWs> heads;
    M dY, dYn, dO, dXQ, dXK, dXV, dZq, dxq, dLRt, da;
  };
  /// What the reverse pass of one layer needs.
  struct Tape {
    int64_t n = 0, group = 1;
    M X, xq, XQ, XK, XV, sigT, LRt, Zq, O, Yn, gpre, Y;  // sigT, LRt: (H, n)
    std::vector<std::vector<S>> ckpt;                    // [h] inner states at checkpoints, P each
    std::vector<S> eta_tab;                              // (mb) token_eta
    bool ready = false;
  };

  const TTTLayer<L>* lay = nullptr;
  int64_t C = 0, H = 0, f = 0, P = 0, mb = 0;
  S base_lr = 1;

  LayerCore() = default;
  explicit LayerCore(const TTTLayer<L>& l)
      : lay(&l), C(l.C), H(l.H), f(l.f), P(l.P), mb(l.mb), base_lr(S(l.base_lr)) {}

  static void ensure(M& m, Eigen::Index r, Eigen::Index c) {
    if (m.rows() != r || m.cols() != c) m.resize(r, c);
  }
  static void ensure(std::vector<S>& v, size_t n) {
    if (v.size() < n) v.resize(n);
  }

  /// out = TTT(X) for X: (n, C) from position 0, recording `tp`. group: scan checkpoint group (>= 1).
  void forward(const LayerW<S>& w, CRefT<S> X, RefT<S> out, Tape& tp, Shared& sh, int64_t group) const {
    const int64_t n = X.rows();
    tp.n = n;
    tp.group = std::max<int64_t>(group, 1);
    ensure(tp.X, n, C);
    tp.X = X;
    ensure(tp.XQ, n, C), ensure(tp.XK, n, C), ensure(tp.XV, n, C);
    if (lay->share_qk) {
      ensure(tp.xq, n, C);
      tp.xq.noalias() = tp.X * w.q.transpose();
      ops::conv(tp.xq, w.conv_q, w.conv_q_b, tp.XQ);
      ops::conv(tp.xq, w.conv_k, w.conv_k_b, tp.XK);
    } else {
      tp.XQ.noalias() = tp.X * w.q.transpose();
      tp.XK.noalias() = tp.X * w.k.transpose();
    }
    tp.XV.noalias() = tp.X * w.v.transpose();
    ops::rope(tp.XQ, f, lay->rope, mb, false);
    ops::rope(tp.XK, f, lay->rope, mb, false);
    // lr[h, t] = base_lr * sigmoid(X[t] . w_lr[h] + b_lr[h]) / f                            (H, n)
    ensure(tp.sigT, H, n), ensure(tp.LRt, H, n);
    tp.sigT.noalias() = w.lr_w * tp.X.transpose();
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t) {
        tp.sigT(h, t) = ops::sigmoid(tp.sigT(h, t) + w.lr_b[h]);
        tp.LRt(h, t) = base_lr * tp.sigT(h, t) / S(f);
      }
    tp.eta_tab.resize(size_t(mb));
    for (int64_t t = 0; t < mb; ++t) tp.eta_tab[size_t(t)] = std::max(S(1) / S(t + 1) + w.token_idx[t], S(0));
    ensure(tp.Zq, n, C), ensure(tp.O, n, C);
    if (tp.ckpt.size() != size_t(H)) tp.ckpt.resize(size_t(H));
    if (sh.heads.size() != size_t(H)) sh.heads.resize(size_t(H));
    // heads are independent: each writes its own columns of Zq and O, its own checkpoints
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1)
#endif
    for (int64_t h = 0; h < H; ++h) head_forward(w, h, tp, sh.heads[size_t(h)]);
    ensure(tp.Yn, n, C);
    ops::ln(tp.O, w.post_w.data(), w.post_b.data(), 1e-6, tp.Yn);
    if (lay->use_gate) {
      ensure(tp.gpre, n, C), ensure(tp.Y, n, C);
      tp.gpre.noalias() = tp.X * w.g.transpose();
      tp.Y = tp.Yn.cwiseProduct(ops::gelu(tp.gpre));
      out.noalias() = tp.Y * w.o.transpose();
    } else {
      out.noalias() = tp.Yn * w.o.transpose();
    }
    tp.ready = true;
  }

  /// dX += d/dX and dw += d/d(weights) of <dout, out>, from the tape of the last forward.
  void backward(const LayerW<S>& w, LayerW<S>& dw, CRefT<S> dout, RefT<S> dX, const Tape& tp, Shared& sh) const {
    const int64_t n = tp.n;
    const M& X = tp.X;
    const M& Y = lay->use_gate ? tp.Y : tp.Yn;
    dw.o.noalias() += dout.transpose() * Y;
    ensure(sh.dY, n, C);
    sh.dY.noalias() = dout * w.o;
    const M* dYn = &sh.dY;
    if (lay->use_gate) {
      ensure(sh.dYn, n, C);
      sh.dYn = sh.dY.cwiseProduct(ops::gelu(tp.gpre));
      dYn = &sh.dYn;
      sh.dY = sh.dY.cwiseProduct(tp.Yn).cwiseProduct(ops::gelu_grad(tp.gpre));  // now d gpre
      dw.g.noalias() += sh.dY.transpose() * X;
      dX.noalias() += sh.dY * w.g;
    }
    ensure(sh.dO, n, C);
    sh.dO.setZero();
    ops::ln_bwd(tp.O, w.post_w.data(), 1e-6, *dYn, sh.dO, dw.post_w.data(), dw.post_b.data());
    ensure(sh.dXQ, n, C), ensure(sh.dXK, n, C), ensure(sh.dXV, n, C), ensure(sh.dZq, n, C), ensure(sh.dLRt, H, n);
    sh.dXQ = sh.dO;  // O = XQ + LN(Zq)
    sh.dXK.setZero(), sh.dXV.setZero(), sh.dLRt.setZero();
    // heads are independent: each writes its own columns of dXQ, dXK, dXV, dZq, its own row of
    // dLRt and of the ln_w / ln_b gradients, its own slice of theta0's gradient and its own deta
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1)
#endif
    for (int64_t h = 0; h < H; ++h) head_backward(w, dw, h, tp, sh, sh.heads[size_t(h)]);
    // token_eta = clamp_min(1/(t+1) + token_idx, 0): torch passes the gradient where input >= 0
    for (int64_t t = 0; t < mb; ++t)
      if (S(1) / S(t + 1) + w.token_idx[t] >= S(0))
        for (int64_t h = 0; h < H; ++h) dw.token_idx[t] += sh.heads[size_t(h)].deta[size_t(t)];
    // LR = base_lr / f * sigmoid(lr_w X^T + lr_b)                                            (H, n)
    ensure(sh.da, H, n);
    sh.da = sh.dLRt.cwiseProduct(tp.sigT.cwiseProduct((S(1) - tp.sigT.array()).matrix())) * (base_lr / S(f));
    dw.lr_w.noalias() += sh.da * X;
    dw.lr_b += sh.da.rowwise().sum().transpose();
    dX.noalias() += sh.da.transpose() * w.lr_w;
    ops::rope(sh.dXQ, f, lay->rope, mb, true);
    ops::rope(sh.dXK, f, lay->rope, mb, true);
    if (lay->share_qk) {
      ensure(sh.dxq, n, C);
      sh.dxq.setZero();
      ops::conv_bwd(tp.xq, w.conv_q, sh.dXQ, sh.dxq, dw.conv_q, dw.conv_q_b);
      ops::conv_bwd(tp.xq, w.conv_k, sh.dXK, sh.dxq, dw.conv_k, dw.conv_k_b);
      dw.q.noalias() += sh.dxq.transpose() * X;
      dX.noalias() += sh.dxq * w.q;
    } else {
      dw.q.noalias() += sh.dXQ.transpose() * X;
      dw.k.noalias() += sh.dXK.transpose() * X;
      dX.noalias() += sh.dXQ * w.q;
      dX.noalias() += sh.dXK * w.k;
    }
    dw.v.noalias() += sh.dXV.transpose() * X;
    dX.noalias() += sh.dXV * w.v;
  }

  /// Bytes held by a tape (activations and inner-state checkpoints).
  static int64_t tape_bytes(const Tape& tp) {
    int64_t b = 0;
    for (const M* m : {&tp.X, &tp.xq, &tp.XQ, &tp.XK, &tp.XV, &tp.sigT, &tp.LRt, &tp.Zq, &tp.O, &tp.Yn, &tp.gpre, &tp.Y})
      b += int64_t(m->size());
    for (const auto& c : tp.ckpt) b += int64_t(c.size());
    return b * int64_t(sizeof(S));
  }

 private:
  Segment<S> segment(const LayerW<S>& w, const Tape& tp, int64_t h, int64_t r0, int64_t len) const {
    return Segment<S>{tp.XQ.block(r0, h * f, len, f),
                      tp.XK.block(r0, h * f, len, f),
                      tp.XV.block(r0, h * f, len, f),
                      tp.eta_tab.data(),
                      tp.LRt.row(h).data() + r0,
                      w.ln_w.row(h).data(),
                      w.ln_b.row(h).data()};
  }

  void head_forward(const LayerW<S>& w, int64_t h, Tape& tp, HeadWs& hw) const {
    const int64_t n = tp.n, nseg = ceil_div(n, mb), G = tp.group;
    ensure(hw.theta, size_t(P)), ensure(hw.next, size_t(P));
    std::copy(w.theta0.begin() + h * P, w.theta0.begin() + (h + 1) * P, hw.theta.begin());
    auto& ck = tp.ckpt[size_t(h)];
    ensure(ck, size_t(ceil_div(nseg, G) * P));
    for (int64_t si = 0; si < nseg; ++si) {
      const int64_t r0 = si * mb, len = std::min(mb, n - r0);
      if (si % G == 0) std::copy(hw.theta.begin(), hw.theta.begin() + P, ck.begin() + (si / G) * P);
      LearnerGrad<L>::forward(hw.theta.data(), f, segment(w, tp, h, r0, len), RefT<S>(tp.Zq.block(r0, h * f, len, f)),
                              hw.next.data(), hw.scratch);
      std::swap(hw.theta, hw.next);
    }
    // O = XQ + LN(Zq) for this head
    auto Oh = tp.O.block(0, h * f, n, f);
    ops::ln(tp.Zq.block(0, h * f, n, f), w.ln_w.row(h).data(), w.ln_b.row(h).data(), 1e-6, Oh);
    Oh += tp.XQ.block(0, h * f, n, f);
  }

  void head_backward(const LayerW<S>& w, LayerW<S>& dw, int64_t h, const Tape& tp, Shared& sh, HeadWs& hw) const {
    const int64_t n = tp.n, nseg = ceil_div(n, mb), G = tp.group;
    auto dZq = sh.dZq.block(0, h * f, n, f);
    dZq.setZero();
    ops::ln_bwd(tp.Zq.block(0, h * f, n, f), w.ln_w.row(h).data(), 1e-6, sh.dO.block(0, h * f, n, f), dZq,
                dw.ln_w.row(h).data(), dw.ln_b.row(h).data());
    ensure(hw.dtheta, size_t(P)), ensure(hw.dprev, size_t(P)), ensure(hw.deta, size_t(mb));
    std::fill(hw.dtheta.begin(), hw.dtheta.begin() + P, S(0));
    std::fill(hw.deta.begin(), hw.deta.begin() + mb, S(0));
    if (G > 1) ensure(hw.grp, size_t(G * P)), ensure(hw.zq, mb, f);
    const auto& ck = tp.ckpt[size_t(h)];
    for (int64_t g = ceil_div(nseg, G); g-- > 0;) {
      const int64_t s0 = g * G, s1 = std::min(nseg, s0 + G);
      const S* states = ck.data() + g * P;  // state at the start of segment s0 + i: states + i * P
      if (G > 1) {  // recompute the group's inner states from its checkpoint
        std::copy(states, states + P, hw.grp.begin());
        for (int64_t si = s0; si + 1 < s1; ++si) {
          const int64_t r0 = si * mb, len = std::min(mb, n - r0);
          LearnerGrad<L>::forward(hw.grp.data() + (si - s0) * P, f, segment(w, tp, h, r0, len),
                                  RefT<S>(hw.zq.topRows(len)), hw.grp.data() + (si - s0 + 1) * P, hw.scratch);
        }
        states = hw.grp.data();
      }
      for (int64_t si = s1; si-- > s0;) {
        const int64_t r0 = si * mb, len = std::min(mb, n - r0);
        std::fill(hw.dprev.begin(), hw.dprev.begin() + P, S(0));
        SegmentGrad<S> o{sh.dXQ.block(r0, h * f, len, f),
                         sh.dXK.block(r0, h * f, len, f),
                         sh.dXV.block(r0, h * f, len, f),
                         hw.deta.data(),
                         sh.dLRt.row(h).data() + r0,
                         dw.ln_w.row(h).data(),
                         dw.ln_b.row(h).data()};
        LearnerGrad<L>::backward(states + (si - s0) * P, f, segment(w, tp, h, r0, len),
                                 CRefT<S>(dZq.middleRows(r0, len)), hw.dtheta.data(), hw.dprev.data(), o, hw.scratch);
        std::swap(hw.dtheta, hw.dprev);
      }
    }
    for (int64_t i = 0; i < P; ++i) dw.theta0[size_t(h * P + i)] += hw.dtheta[size_t(i)];
  }
};

inline int64_t effective_group(const GradOptions& o, const ModelConfig& cfg) {
  const int64_t g = o.scan_checkpoint_group >= 0 ? o.scan_checkpoint_group : cfg.scan_checkpoint_group_size;
  return std::max<int64_t>(g, 1);
}

}  // namespace detail

/// Set every parameter of a layer (used as a gradient accumulator) to zero.
template <class L>
void zero_grad(TTTLayer<L>& g) {
  g.visit_params("", [](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = 0.0f;
  });
}

/// Gradients through one TTT layer, for code that puts TTT layers into its own network (an
/// autodiff tape, a hierarchical model): `forward` computes the layer's output for a whole
/// sequence X (n, C) from position 0 (exactly `TTTLayer::forward` from a fresh state) and keeps
/// what `backward` needs; `backward` takes dY and returns dX, and ADDS the layer's parameter
/// gradients into a gradient layer of the same shape (zero it yourself when a step starts).
/// The layer is read at every `forward` (after an optimizer step the next forward sees the new
/// weights). S = float (training) or double (checks); one forward, then one backward.
///
/// \code
///   const ttt::TTTLayer<ttt::inner::MLP>& layer = model.blocks[0].ttt;
///   ttt::TTTLayer<ttt::inner::MLP> grad(model.cfg);
///   ttt::train::zero_grad(grad);                               // every tensor 0
///   ttt::train::LayerGrad<ttt::inner::MLP> op(layer, /*scan_checkpoint_group=*/4);
///   ttt::Mat Y, dX;
///   op.forward(X, Y);         // X: (n, C) normed block input; Y: (n, C)
///   ...                       // dY = d loss / d Y from the rest of the network
///   op.backward(dY, dX, grad);  // dX: (n, C); grad.q, grad.theta0, ... += d loss / d param
/// \endcode
template <class L, class S = float>
class LayerGrad {
 public:
  using Matrix = MatT<S>;

  explicit LayerGrad(const TTTLayer<L>& layer, int64_t scan_checkpoint_group = 0)
      : layer_(&layer), core_(layer), group_(std::max<int64_t>(scan_checkpoint_group, 1)) {
    static_assert(HasLearnerGrad<L>, "ttt::train::LayerGrad: no backward for this inner learner; specialise "
                                     "ttt::train::LearnerGrad<YourLearner> (see ttt/train/learner_grad.hpp)");
  }

  /// Y = layer(X), X: (n, C), n >= 1; keeps the tape for backward.
  void forward(CRefT<S> X, Matrix& Y) {
    if (X.cols() != layer_->C || X.rows() < 1)
      throw ShapeError("LayerGrad::forward: X is (" + std::to_string(X.rows()) + ", " + std::to_string(X.cols()) +
                       "), expected (n >= 1, " + std::to_string(layer_->C) + ")");
    w_.load(*layer_);
    Y.resize(X.rows(), layer_->C);
    core_.forward(w_, X, Y, tape_, shared_, group_);
  }

  /// dX = dY (dY/dX); grad += the layer's parameter gradients. dY: the shape of the last Y.
  void backward(CRefT<S> dY, Matrix& dX, TTTLayer<L>& grad) {
    if (!tape_.ready) throw Error("LayerGrad::backward: no forward to reverse");
    if (dY.rows() != tape_.n || dY.cols() != layer_->C)
      throw ShapeError("LayerGrad::backward: dY is (" + std::to_string(dY.rows()) + ", " + std::to_string(dY.cols()) +
                       "), expected (" + std::to_string(tape_.n) + ", " + std::to_string(layer_->C) + ")");
    if (grad.C != layer_->C || grad.H != layer_->H || grad.P != layer_->P || grad.mb != layer_->mb ||
        grad.share_qk != layer_->share_qk || grad.use_gate != layer_->use_gate || grad.K != layer_->K)
      throw ShapeError("LayerGrad::backward: the gradient layer's shape differs from the layer's");
    if (dw_.q.size() == 0) dw_ = w_;
    dw_.zero();
    dX.setZero(tape_.n, layer_->C);
    core_.backward(w_, dw_, dY, dX, tape_, shared_);
    dw_.store(grad, /*add=*/true);
  }

  /// Bytes of the tape the last forward kept.
  int64_t tape_bytes() const { return detail::LayerCore<L, S>::tape_bytes(tape_); }

 private:
  const TTTLayer<L>* layer_;
  detail::LayerCore<L, S> core_;
  int64_t group_;
  detail::LayerW<S> w_, dw_;
  typename detail::LayerCore<L, S>::Tape tape_;
  typename detail::LayerCore<L, S>::Shared shared_;
};

/// The loss and gradient of a whole model, with buffers kept from call to call (a training loop
/// holds one; `loss_and_grad` below makes one per call).
template <class L, class S = float>
class ModelGrad {
 public:
  using M = MatT<S>;
  using R = RowT<S>;

  explicit ModelGrad(GradOptions opt = {}) : opt_(opt) {}

  /// See `loss_and_grad`.
  double operator()(const TTTModel<L>& model, const std::vector<std::vector<int64_t>>& batch, TTTModel<L>& grad) {
    static_assert(HasLearnerGrad<L>,
                  "ttt::train::loss_and_grad: no backward for this inner learner; specialise "
                  "ttt::train::LearnerGrad<YourLearner> (see ttt/train/learner_grad.hpp)");
    if (grad.cfg.to_json() != model.cfg.to_json())
      throw ShapeError("loss_and_grad: the gradient model's configuration differs from the model's");
    int64_t positions = 0;
    for (const auto& seq : batch) {
      model.check_ids(seq);
      positions += int64_t(seq.size()) - 1;
    }
    if (positions <= 0)
      throw ShapeError("loss_and_grad: the batch has no next-token position (need sequences of >= 2 tokens)");
    setup(model);
    const double scale = 1.0 / double(positions);
    double sum = 0;
    for (const auto& seq : batch)
      if (seq.size() >= 2) sum += sequence(std::span<const int64_t>(seq.data(), seq.size()), S(scale));
    store(grad);
    return sum * scale;
  }

  /// Bytes of activations and inner-state checkpoints held by the last call's tapes.
  int64_t tape_bytes() const {
    int64_t b = 0;
    for (const auto& t : tapes_) {
      b += detail::LayerCore<L, S>::tape_bytes(t.layer);
      for (const M* m : {&t.h0, &t.xc, &t.h1, &t.h2, &t.xn, &t.gt, &t.up, &t.a}) b += int64_t(m->size()) * int64_t(sizeof(S));
    }
    for (const auto& m : block_in_) b += int64_t(m.size()) * int64_t(sizeof(S));
    return b;
  }

 private:
  struct BlockW {
    R seq_norm, ffn_norm, conv_norm, conv_b;
    M gate, up, down, conv_w;
    detail::LayerW<S> ttt;
  };
  struct BlockTape {
    M h0, xc, h1, h2, xn, gt, up, a;
    typename detail::LayerCore<L, S>::Tape layer;
  };

  GradOptions opt_;
  const TTTModel<L>* model_ = nullptr;
  ModelConfig cfg_;
  nn::Act act_ = nn::Act::silu;
  int64_t group_ = 1;
  M embed_, lm_head_, d_embed_, d_lm_head_;
  R norm_, d_norm_;
  std::vector<BlockW> W_, dW_;
  std::vector<detail::LayerCore<L, S>> cores_;
  std::vector<BlockTape> tapes_;
  std::vector<M> block_in_;
  typename detail::LayerCore<L, S>::Shared shared_;
  M h_, hn_, logits_, dlogits_, dh_, dhn_, X_, out_, dX_, da_, dgt_, dup_, dxn_, dxc_, c_;

  template <class A, class B, class F>
  static void zip_block(A& a, B& b, F&& fn) {
    fn(a.seq_norm, b.seq_norm), fn(a.ffn_norm, b.ffn_norm), fn(a.conv_norm, b.conv_norm), fn(a.conv_b, b.conv_b);
    fn(a.gate, b.gate), fn(a.up, b.up), fn(a.down, b.down), fn(a.conv_w, b.conv_w);
  }

  void setup(const TTTModel<L>& m) {
    model_ = &m;
    cfg_ = m.cfg;
    act_ = nn::act_from_name(cfg_.hidden_act);
    group_ = detail::effective_group(opt_, cfg_);
    const detail::Load ld;
    ld(embed_, m.embed), ld(lm_head_, m.lm_head), ld(norm_, m.norm);
    const size_t nb = m.blocks.size();
    W_.resize(nb), dW_.resize(nb), cores_.clear();
    for (size_t i = 0; i < nb; ++i) {
      zip_block(W_[i], m.blocks[i], ld);
      W_[i].ttt.load(m.blocks[i].ttt);
      cores_.emplace_back(m.blocks[i].ttt);
      dW_[i] = W_[i];
      zip_block(dW_[i], dW_[i], [](auto& x, auto&) { detail::Zero{}(x); });
      dW_[i].ttt.zero();
    }
    d_embed_.setZero(embed_.rows(), embed_.cols());
    d_lm_head_.setZero(lm_head_.rows(), lm_head_.cols());
    d_norm_.setZero(norm_.size());
    tapes_.resize(opt_.recompute_blocks ? 1 : nb);
    block_in_.resize(opt_.recompute_blocks ? nb : 0);
  }

  void store(TTTModel<L>& g) const {
    const detail::Store st{false};
    st(d_embed_, g.embed), st(d_lm_head_, g.lm_head), st(d_norm_, g.norm);
    for (size_t i = 0; i < g.blocks.size(); ++i) {
      zip_block(dW_[i], g.blocks[i], st);
      dW_[i].ttt.store(g.blocks[i].ttt, false);
    }
  }

  static void ensure(M& m, Eigen::Index r, Eigen::Index c) {
    if (m.rows() != r || m.cols() != c) m.resize(r, c);
  }

  /// Block i on h (its input, replaced by its output), keeping what its reverse pass needs.
  void block_forward(size_t i, M& h, BlockTape& tp) {
    const BlockW& b = W_[i];
    const int64_t n = h.rows(), C = h.cols(), I = b.gate.rows();
    const double eps = cfg_.rms_norm_eps;
    if (cfg_.pre_conv) {
      tp.h0 = h;
      ensure(tp.xc, n, C), ensure(c_, n, C);
      ops::rms(h, b.conv_norm, eps, tp.xc);
      ops::conv(tp.xc, b.conv_w, b.conv_b, c_);
      h += c_;
    }
    tp.h1 = h;
    ensure(X_, n, C), ensure(out_, n, C);
    ops::rms(h, b.seq_norm, eps, X_);
    cores_[i].forward(b.ttt, X_, out_, tp.layer, shared_, group_);
    h += out_;
    tp.h2 = h;
    ensure(tp.xn, n, C), ensure(tp.gt, n, I), ensure(tp.up, n, I), ensure(tp.a, n, I);
    ops::rms(h, b.ffn_norm, eps, tp.xn);
    tp.gt.noalias() = tp.xn * b.gate.transpose();
    tp.up.noalias() = tp.xn * b.up.transpose();
    const nn::Act a = act_;
    if (a == nn::Act::silu) tp.a = ops::silu(tp.gt).cwiseProduct(tp.up);
    else tp.a = tp.gt.unaryExpr([a](S v) { return ops::act(a, v); }).cwiseProduct(tp.up);
    h.noalias() += tp.a * b.down.transpose();
  }

  /// dh: cotangent of block i's output on entry, of its input on return.
  void block_backward(size_t i, M& dh, const BlockTape& tp) {
    const BlockW& b = W_[i];
    BlockW& gb = dW_[i];
    const int64_t n = dh.rows(), C = dh.cols(), I = b.gate.rows();
    const double eps = cfg_.rms_norm_eps;
    const nn::Act a = act_;
    // SwiGLU
    gb.down.noalias() += dh.transpose() * tp.a;
    ensure(da_, n, I), ensure(dgt_, n, I), ensure(dup_, n, I), ensure(dxn_, n, C);
    da_.noalias() = dh * b.down;
    if (a == nn::Act::silu) {
      dgt_ = da_.cwiseProduct(tp.up).cwiseProduct(ops::silu_grad(tp.gt));
      dup_ = da_.cwiseProduct(ops::silu(tp.gt));
    } else {
      dgt_ = da_.cwiseProduct(tp.up).cwiseProduct(tp.gt.unaryExpr([a](S v) { return ops::act_grad(a, v); }));
      dup_ = da_.cwiseProduct(tp.gt.unaryExpr([a](S v) { return ops::act(a, v); }));
    }
    gb.gate.noalias() += dgt_.transpose() * tp.xn;
    gb.up.noalias() += dup_.transpose() * tp.xn;
    dxn_.noalias() = dgt_ * b.gate;
    dxn_.noalias() += dup_ * b.up;
    ops::rms_bwd(tp.h2, b.ffn_norm, eps, dxn_, dh, gb.ffn_norm);
    // TTT layer
    ensure(dX_, n, C);
    dX_.setZero();
    cores_[i].backward(b.ttt, gb.ttt, dh, dX_, tp.layer, shared_);
    ops::rms_bwd(tp.h1, b.seq_norm, eps, dX_, dh, gb.seq_norm);
    // pre-conv
    if (cfg_.pre_conv) {
      ensure(dxc_, n, C);
      dxc_.setZero();
      ops::conv_bwd(tp.xc, b.conv_w, dh, dxc_, gb.conv_w, gb.conv_b);
      ops::rms_bwd(tp.h0, b.conv_norm, eps, dxc_, dh, gb.conv_norm);
    }
  }

  /// Sum over positions t < n-1 of the cross entropy of predicting ids[t+1]; gradients scaled by
  /// `scale` (1 / number of positions of the batch) are added to the accumulators.
  double sequence(std::span<const int64_t> ids, S scale) {
    const int64_t n = int64_t(ids.size()), V = cfg_.vocab_size, C = cfg_.hidden_size;
    const double eps = cfg_.rms_norm_eps;
    const size_t nb = W_.size();
    ensure(h_, n, C);
    for (int64_t t = 0; t < n; ++t) h_.row(t) = embed_.row(ids[size_t(t)]);
    for (size_t i = 0; i < nb; ++i) {
      if (opt_.recompute_blocks) block_in_[i] = h_;
      block_forward(i, h_, tapes_[opt_.recompute_blocks ? 0 : i]);
    }
    ensure(hn_, n, C), ensure(logits_, n, V), ensure(dlogits_, n, V);
    ops::rms(h_, norm_, eps, hn_);
    const M& head = cfg_.tie_word_embeddings ? embed_ : lm_head_;
    logits_.noalias() = hn_ * head.transpose();
    // cross entropy (summed in double) and its gradient
    double loss = 0;
    dlogits_.row(n - 1).setZero();
    for (int64_t t = 0; t + 1 < n; ++t) {
      const S mx = logits_.row(t).maxCoeff();
      dlogits_.row(t) = (logits_.row(t).array() - mx).exp().matrix();
      const S se = dlogits_.row(t).sum();
      const int64_t y = ids[size_t(t + 1)];
      loss += double(mx) + std::log(double(se)) - double(logits_(t, y));
      dlogits_.row(t) *= scale / se;
      dlogits_(t, y) -= scale;
    }
    // reverse
    M& dhead = cfg_.tie_word_embeddings ? d_embed_ : d_lm_head_;
    dhead.noalias() += dlogits_.transpose() * hn_;
    ensure(dhn_, n, C), ensure(dh_, n, C);
    dhn_.noalias() = dlogits_ * head;
    dh_.setZero();
    ops::rms_bwd(h_, norm_, eps, dhn_, dh_, d_norm_);
    for (size_t i = nb; i-- > 0;) {
      if (opt_.recompute_blocks) block_forward(i, block_in_[i], tapes_[0]);
      block_backward(i, dh_, tapes_[opt_.recompute_blocks ? 0 : i]);
    }
    for (int64_t t = 0; t < n; ++t) d_embed_.row(ids[size_t(t)]) += dh_.row(t);
    return loss;
  }
};

/// The mean next-token cross entropy of `batch` (sequences, each from position 0; position t
/// predicts token t+1; the mean is over all next-token positions of all sequences, as torch's
/// CrossEntropyLoss on shifted logits) and its exact gradient with respect to every parameter of
/// `model`, stored in `grad` (a model of the same configuration; every parameter overwritten, with
/// tied embeddings the embedding's gradient includes the head's). Returns the loss. S: the scalar
/// the computation runs in (float; double for finite-difference checks).
template <class S = float, class L>
double loss_and_grad(const TTTModel<L>& model, const std::vector<std::vector<int64_t>>& batch, TTTModel<L>& grad,
                     const GradOptions& opt = {}) {
  ModelGrad<L, S> run(opt);
  return run(model, batch, grad);
}

}  // namespace ttt::train
