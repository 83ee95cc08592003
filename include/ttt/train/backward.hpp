#pragma once
/// \file train/backward.hpp
/// Exact gradients of the next-token cross entropy with respect to every parameter of a
/// TTTModel<L>, through the inner gradient steps (second-order terms included), as autograd on the
/// reference computes them.
///
/// \code
///   ttt::TTTModel<ttt::inner::Linear> model = ...;
///   ttt::TTTModel<ttt::inner::Linear> grad(model.cfg);
///   double loss = ttt::train::loss_and_grad(model, batch, grad);  // grad.embed, grad.blocks[i].ttt.q, ...
/// \endcode
///
/// How: a double-precision forward over each full sequence (from position 0, mini-batches of
/// `mini_batch_size` then the remainder, as the reference's full-sequence forward) that keeps what
/// the reverse pass needs (per block the activations; per head the inner state at the start of
/// every mini-batch), then a hand-derived reverse pass. The inner loop is reversed mini-batch by
/// mini-batch, carrying the cotangent of the inner state; each mini-batch's reverse is the
/// learner's `LearnerGrad<L>::backward` (train/learner_grad.hpp), the one piece a new learner has
/// to supply. Everything is computed in double and stored as float at the end.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../error.hpp"
#include "../model.hpp"
#include "../tensor.hpp"
#include "learner_grad.hpp"
#include "ops.hpp"

namespace ttt::train {

namespace detail {

/// Double mirror of one TTT layer's parameters (or of their gradients).
struct LayerD {
  MatD q, k, v, o, g, conv_q, conv_k, lr_w, ln_w, ln_b;
  RowD conv_q_b, conv_k_b, lr_b, token_idx, post_w, post_b;
  std::vector<double> theta0;  // [H, P]
};
struct BlockD {
  RowD seq_norm, ffn_norm, conv_norm, conv_b;
  MatD gate, up, down, conv_w;
  LayerD ttt;
};
struct ModelD {
  MatD embed, lm_head;
  RowD norm;
  std::vector<BlockD> blocks;

  /// Call fn on every tensor (Eigen objects and theta vectors).
  template <class F>
  void each(F&& fn) {
    fn(embed), fn(lm_head), fn(norm);
    for (auto& b : blocks) {
      fn(b.seq_norm), fn(b.ffn_norm), fn(b.conv_norm), fn(b.conv_b), fn(b.gate), fn(b.up), fn(b.down), fn(b.conv_w);
      LayerD& l = b.ttt;
      fn(l.q), fn(l.k), fn(l.v), fn(l.o), fn(l.g), fn(l.conv_q), fn(l.conv_k), fn(l.lr_w), fn(l.ln_w), fn(l.ln_b);
      fn(l.conv_q_b), fn(l.conv_k_b), fn(l.lr_b), fn(l.token_idx), fn(l.post_w), fn(l.post_b), fn(l.theta0);
    }
  }
};

template <class L>
ModelD to_double(const TTTModel<L>& m) {
  auto M = [](const Mat& x) -> MatD { return x.cast<double>(); };
  auto R = [](const RowVec& x) -> RowD { return x.cast<double>(); };
  ModelD d;
  d.embed = M(m.embed);
  d.lm_head = M(m.lm_head);
  d.norm = R(m.norm);
  for (const auto& b : m.blocks) {
    BlockD e;
    e.seq_norm = R(b.seq_norm), e.ffn_norm = R(b.ffn_norm), e.conv_norm = R(b.conv_norm), e.conv_b = R(b.conv_b);
    e.gate = M(b.gate), e.up = M(b.up), e.down = M(b.down), e.conv_w = M(b.conv_w);
    const auto& l = b.ttt;
    LayerD& k = e.ttt;
    k.q = M(l.q), k.k = M(l.k), k.v = M(l.v), k.o = M(l.o), k.g = M(l.g), k.conv_q = M(l.conv_q);
    k.conv_k = M(l.conv_k), k.lr_w = M(l.lr_w), k.ln_w = M(l.ln_w), k.ln_b = M(l.ln_b);
    k.conv_q_b = R(l.conv_q_b), k.conv_k_b = R(l.conv_k_b), k.lr_b = R(l.lr_b), k.token_idx = R(l.token_idx);
    k.post_w = R(l.post_w), k.post_b = R(l.post_b);
    k.theta0.assign(l.theta0.begin(), l.theta0.end());
    d.blocks.push_back(std::move(e));
  }
  return d;
}

/// Store the double gradients into the float model `g` (same configuration).
template <class L>
void store(const ModelD& d, TTTModel<L>& g) {
  auto M = [](const MatD& x, Mat& y) {
    if (y.size() != 0) y = x.cast<float>();
  };
  auto R = [](const RowD& x, RowVec& y) {
    if (y.size() != 0) y = x.cast<float>();
  };
  M(d.embed, g.embed);
  M(d.lm_head, g.lm_head);
  R(d.norm, g.norm);
  for (size_t i = 0; i < g.blocks.size(); ++i) {
    const BlockD& e = d.blocks[i];
    auto& b = g.blocks[i];
    R(e.seq_norm, b.seq_norm), R(e.ffn_norm, b.ffn_norm), R(e.conv_norm, b.conv_norm), R(e.conv_b, b.conv_b);
    M(e.gate, b.gate), M(e.up, b.up), M(e.down, b.down), M(e.conv_w, b.conv_w);
    const LayerD& k = e.ttt;
    auto& l = b.ttt;
    M(k.q, l.q), M(k.k, l.k), M(k.v, l.v), M(k.o, l.o), M(k.g, l.g), M(k.conv_q, l.conv_q), M(k.conv_k, l.conv_k);
    M(k.lr_w, l.lr_w), M(k.ln_w, l.ln_w), M(k.ln_b, l.ln_b);
    R(k.conv_q_b, l.conv_q_b), R(k.conv_k_b, l.conv_k_b), R(k.lr_b, l.lr_b), R(k.token_idx, l.token_idx);
    R(k.post_w, l.post_w), R(k.post_b, l.post_b);
    for (size_t j = 0; j < l.theta0.size(); ++j) l.theta0[j] = float(k.theta0[j]);
  }
}

/// What the reverse pass of one TTT layer needs.
struct LayerTape {
  MatD X, xq, XQ, XK, XV, sig, Zq, O, Yn, gpre, Y;  // sig: (n, H)
  std::vector<double> eta_tab;                       // (mb) token_eta
  std::vector<std::vector<std::vector<double>>> theta;  // [h][segment] inner state at its start
};
struct BlockTape {
  MatD h0, xc, h1, h2, xn, gt, up, a;
  LayerTape layer;
};

/// Mini-batches of a sequence of n tokens from position 0: [start, start + len).
inline std::vector<std::pair<int64_t, int64_t>> segments(int64_t n, int64_t mb) {
  std::vector<std::pair<int64_t, int64_t>> s;
  for (int64_t r = 0; r < n; r += mb) s.emplace_back(r, std::min(mb, n - r));
  return s;
}

template <class L>
struct Runner {
  const TTTModel<L>& model;
  const ModelD& W;  // weights in double
  ModelD& dW;       // gradient accumulators
  const ModelConfig& cfg;
  int64_t C, H, f, P, mb;
  nn::Act act;

  Runner(const TTTModel<L>& m, const ModelD& w, ModelD& dw)
      : model(m), W(w), dW(dw), cfg(m.cfg), C(m.cfg.hidden_size), H(m.cfg.num_attention_heads),
        f(m.cfg.head_dim()), P(inner::param_count(L::param_specs(m.cfg.head_dim()))), mb(m.cfg.mini_batch_size),
        act(nn::act_from_name(m.cfg.hidden_act)) {}

  MatD head_cols(const MatD& X, int64_t h, int64_t r0, int64_t len) const { return X.block(r0, h * f, len, f); }

  // ---- one TTT layer ----
  void layer_forward(size_t li, const MatD& X, LayerTape& tp, MatD& out) const {
    const LayerD& w = W.blocks[li].ttt;
    const auto& lay = model.blocks[li].ttt;
    const int64_t n = X.rows();
    tp.X = X;
    if (cfg.share_qk) {
      tp.xq = X * w.q.transpose();
      ops::conv(tp.xq, w.conv_q, w.conv_q_b, tp.XQ);
      ops::conv(tp.xq, w.conv_k, w.conv_k_b, tp.XK);
    } else {
      tp.XQ = X * w.q.transpose();
      tp.XK = X * w.k.transpose();
    }
    tp.XV = X * w.v.transpose();
    ops::rope(tp.XQ, f, lay.rope, mb, false);
    ops::rope(tp.XK, f, lay.rope, mb, false);
    tp.sig = X * w.lr_w.transpose();  // (n, H)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < H; ++h) tp.sig(t, h) = ops::sigmoid(tp.sig(t, h) + w.lr_b[h]);
    tp.eta_tab.resize(size_t(mb));
    for (int64_t t = 0; t < mb; ++t) tp.eta_tab[size_t(t)] = std::max(1.0 / double(t + 1) + w.token_idx[t], 0.0);
    tp.Zq.resize(n, C);
    tp.O.resize(n, C);
    tp.theta.assign(size_t(H), {});
    const auto segs = segments(n, mb);
    // heads are independent: each writes its own columns of Zq and O and its own theta list
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1)
#endif
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> theta(w.theta0.begin() + h * P, w.theta0.begin() + (h + 1) * P), next(static_cast<size_t>(P));
      for (const auto& [r0, len] : segs) {
        tp.theta[size_t(h)].push_back(theta);
        const MatD xq = head_cols(tp.XQ, h, r0, len), xk = head_cols(tp.XK, h, r0, len),
                   xv = head_cols(tp.XV, h, r0, len);
        std::vector<double> lr(static_cast<size_t>(len));
        for (int64_t t = 0; t < len; ++t) lr[size_t(t)] = cfg.ttt_base_lr * tp.sig(r0 + t, h) / double(f);
        const SegmentD s{xq, xk, xv, tp.eta_tab.data(), lr.data(), w.ln_w.row(h).data(), w.ln_b.row(h).data()};
        MatD Zq;
        LearnerGrad<L>::forward(theta.data(), f, s, Zq, next.data());
        tp.Zq.block(r0, h * f, len, f) = Zq;
        theta.swap(next);
      }
      MatD o;
      ops::ln(MatD(tp.Zq.middleCols(h * f, f)), w.ln_w.row(h).data(), w.ln_b.row(h).data(), 1e-6, o);
      tp.O.middleCols(h * f, f) = o + tp.XQ.middleCols(h * f, f);
    }
    ops::ln(tp.O, w.post_w.data(), w.post_b.data(), 1e-6, tp.Yn);
    if (cfg.use_gate) {
      tp.gpre = X * w.g.transpose();
      tp.Y = tp.Yn.cwiseProduct(ops::gelu(tp.gpre));
    } else {
      tp.Y = tp.Yn;
    }
    out = tp.Y * w.o.transpose();
  }

  /// dX += d/dX, parameter gradients += ..., given dout.
  void layer_backward(size_t li, const LayerTape& tp, const MatD& dout, MatD& dX) const {
    const LayerD& w = W.blocks[li].ttt;
    LayerD& g = dW.blocks[li].ttt;
    const auto& lay = model.blocks[li].ttt;
    const MatD& X = tp.X;
    const int64_t n = X.rows();
    g.o += dout.transpose() * tp.Y;
    const MatD dY = dout * w.o;
    MatD dYn = dY;
    if (cfg.use_gate) {
      dYn = dY.cwiseProduct(ops::gelu(tp.gpre));
      const MatD dgpre = dY.cwiseProduct(tp.Yn).cwiseProduct(ops::gelu_grad(tp.gpre));
      g.g += dgpre.transpose() * X;
      dX += dgpre * w.g;
    }
    MatD dO = MatD::Zero(n, C);
    ops::ln_bwd(tp.O, w.post_w.data(), 1e-6, dYn, dO, g.post_w.data(), g.post_b.data());
    MatD dXQ = dO, dXK = MatD::Zero(n, C), dXV = MatD::Zero(n, C);  // dXQ: through O = XQ + LN(Zq)
    MatD dsig = MatD::Zero(n, H);
    std::vector<std::vector<double>> deta_h(size_t(H), std::vector<double>(size_t(mb), 0.0));
    const auto segs = segments(n, mb);
    // heads are independent: each writes its own columns of dXQ, dXK, dXV, dsig, its own rows of
    // the ln_w / ln_b gradients, its own slice of theta0's gradient and its own deta_h
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1)
#endif
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double>& deta = deta_h[size_t(h)];
      const MatD Zh = tp.Zq.middleCols(h * f, f);
      MatD dZq = MatD::Zero(n, f);
      ops::ln_bwd(Zh, w.ln_w.row(h).data(), 1e-6, MatD(dO.middleCols(h * f, f)), dZq, g.ln_w.row(h).data(),
                  g.ln_b.row(h).data());
      std::vector<double> dtheta(size_t(P), 0.0), dprev(static_cast<size_t>(P));
      for (size_t si = segs.size(); si-- > 0;) {
        const auto [r0, len] = segs[si];
        const MatD xq = head_cols(tp.XQ, h, r0, len), xk = head_cols(tp.XK, h, r0, len),
                   xv = head_cols(tp.XV, h, r0, len);
        std::vector<double> lr(static_cast<size_t>(len));
        for (int64_t t = 0; t < len; ++t) lr[size_t(t)] = cfg.ttt_base_lr * tp.sig(r0 + t, h) / double(f);
        const SegmentD s{xq, xk, xv, tp.eta_tab.data(), lr.data(), w.ln_w.row(h).data(), w.ln_b.row(h).data()};
        SegmentGradD o;
        o.dXQ = MatD::Zero(len, f);
        o.dXK = MatD::Zero(len, f);
        o.dXV = MatD::Zero(len, f);
        o.d_token_eta.assign(size_t(len), 0.0);
        o.d_lr.assign(size_t(len), 0.0);
        o.d_ln_w = g.ln_w.row(h).data();
        o.d_ln_b = g.ln_b.row(h).data();
        std::fill(dprev.begin(), dprev.end(), 0.0);
        LearnerGrad<L>::backward(tp.theta[size_t(h)][si].data(), f, s, MatD(dZq.middleRows(r0, len)), dtheta.data(),
                                 dprev.data(), o);
        dtheta.swap(dprev);
        dXQ.block(r0, h * f, len, f) += o.dXQ;
        dXK.block(r0, h * f, len, f) += o.dXK;
        dXV.block(r0, h * f, len, f) += o.dXV;
        for (int64_t t = 0; t < len; ++t) {
          deta[size_t(t)] += o.d_token_eta[size_t(t)];
          dsig(r0 + t, h) += o.d_lr[size_t(t)] * cfg.ttt_base_lr / double(f);
        }
      }
      for (int64_t i = 0; i < P; ++i) g.theta0[size_t(h * P + i)] += dtheta[size_t(i)];
    }
    // token_eta = clamp_min(1/(t+1) + token_idx, 0): torch passes the gradient where input >= 0
    for (int64_t t = 0; t < mb; ++t)
      if (1.0 / double(t + 1) + w.token_idx[t] >= 0.0)
        for (int64_t h = 0; h < H; ++h) g.token_idx[t] += deta_h[size_t(h)][size_t(t)];
    // sig = sigmoid(X lr_w^T + lr_b)
    MatD da = dsig.cwiseProduct(tp.sig.cwiseProduct((1.0 - tp.sig.array()).matrix()));
    g.lr_w += da.transpose() * X;
    g.lr_b += da.colwise().sum();
    dX += da * w.lr_w;
    ops::rope(dXQ, f, lay.rope, mb, true);
    ops::rope(dXK, f, lay.rope, mb, true);
    if (cfg.share_qk) {
      MatD dxq = MatD::Zero(n, C);
      ops::conv_bwd(tp.xq, w.conv_q, dXQ, dxq, g.conv_q, g.conv_q_b);
      ops::conv_bwd(tp.xq, w.conv_k, dXK, dxq, g.conv_k, g.conv_k_b);
      g.q += dxq.transpose() * X;
      dX += dxq * w.q;
    } else {
      g.q += dXQ.transpose() * X;
      g.k += dXK.transpose() * X;
      dX += dXQ * w.q + dXK * w.k;
    }
    g.v += dXV.transpose() * X;
    dX += dXV * w.v;
  }

  /// Block i on h (its input, replaced by its output), keeping what its reverse pass needs.
  void block_forward(size_t i, MatD& h, BlockTape& tp) const {
    const BlockD& b = W.blocks[i];
    const double eps = cfg.rms_norm_eps;
    tp.h0 = h;
    if (cfg.pre_conv) {
      ops::rms(h, b.conv_norm, eps, tp.xc);
      MatD c;
      ops::conv(tp.xc, b.conv_w, b.conv_b, c);
      h += c;
    }
    tp.h1 = h;
    MatD X, out;
    ops::rms(h, b.seq_norm, eps, X);
    layer_forward(i, X, tp.layer, out);
    h += out;
    tp.h2 = h;
    ops::rms(h, b.ffn_norm, eps, tp.xn);
    tp.gt = tp.xn * b.gate.transpose();
    tp.up = tp.xn * b.up.transpose();
    tp.a = tp.gt.unaryExpr([this](double v) { return ops::act(act, v); }).cwiseProduct(tp.up);
    h += tp.a * b.down.transpose();
  }

  /// Sum over positions t < n-1 of the cross entropy of predicting ids[t+1]; gradients scaled by
  /// `scale` (1 / number of positions of the batch) are added to dW. Memory: the forward keeps
  /// only each block's input; the reverse pass recomputes one block's forward at a time (one more
  /// forward in all), so at most one block's activations and inner states are held.
  double sequence(std::span<const int64_t> ids, double scale) const {
    const int64_t n = int64_t(ids.size()), V = cfg.vocab_size;
    const double eps = cfg.rms_norm_eps;
    std::vector<MatD> block_in(W.blocks.size());
    MatD h(n, C);
    for (int64_t t = 0; t < n; ++t) h.row(t) = W.embed.row(ids[size_t(t)]);
    {
      BlockTape scratch;
      for (size_t i = 0; i < W.blocks.size(); ++i) {
        block_in[i] = h;
        block_forward(i, h, scratch);
      }
    }
    MatD hn;
    ops::rms(h, W.norm, eps, hn);
    const MatD& head = cfg.tie_word_embeddings ? W.embed : W.lm_head;
    const MatD logits = hn * head.transpose();
    // cross entropy and its gradient
    double loss = 0;
    MatD dlogits = MatD::Zero(n, V);
    for (int64_t t = 0; t + 1 < n; ++t) {
      const double mx = logits.row(t).maxCoeff();
      const RowD e = (logits.row(t).array() - mx).exp().matrix();
      const double se = e.sum();
      const int64_t y = ids[size_t(t + 1)];
      loss += mx + std::log(se) - logits(t, y);
      dlogits.row(t) = e * (scale / se);
      dlogits(t, y) -= scale;
    }
    // reverse
    MatD& dhead = cfg.tie_word_embeddings ? dW.embed : dW.lm_head;
    dhead += dlogits.transpose() * hn;
    const MatD dhn = dlogits * head;
    MatD dh = MatD::Zero(n, C);
    ops::rms_bwd(h, W.norm, eps, dhn, dh, dW.norm);
    for (size_t i = W.blocks.size(); i-- > 0;) {
      const BlockD& b = W.blocks[i];
      BlockD& gb = dW.blocks[i];
      BlockTape tp;
      MatD hi = std::move(block_in[i]);
      block_forward(i, hi, tp);
      // SwiGLU
      gb.down += dh.transpose() * tp.a;
      const MatD da = dh * b.down;
      const MatD dgt =
          da.cwiseProduct(tp.up).cwiseProduct(tp.gt.unaryExpr([this](double v) { return ops::act_grad(act, v); }));
      const MatD dup = da.cwiseProduct(tp.gt.unaryExpr([this](double v) { return ops::act(act, v); }));
      gb.gate += dgt.transpose() * tp.xn;
      gb.up += dup.transpose() * tp.xn;
      const MatD dxn = dgt * b.gate + dup * b.up;
      ops::rms_bwd(tp.h2, b.ffn_norm, eps, dxn, dh, gb.ffn_norm);
      // TTT layer
      MatD dX = MatD::Zero(n, C);
      layer_backward(i, tp.layer, dh, dX);
      ops::rms_bwd(tp.h1, b.seq_norm, eps, dX, dh, gb.seq_norm);
      // pre-conv
      if (cfg.pre_conv) {
        MatD dxc = MatD::Zero(n, C);
        ops::conv_bwd(tp.xc, b.conv_w, dh, dxc, gb.conv_w, gb.conv_b);
        ops::rms_bwd(tp.h0, b.conv_norm, eps, dxc, dh, gb.conv_norm);
      }
    }
    for (int64_t t = 0; t < n; ++t) dW.embed.row(ids[size_t(t)]) += dh.row(t);
    return loss;
  }
};

}  // namespace detail

/// The mean next-token cross entropy of `batch` (sequences, each from position 0; position t
/// predicts token t+1; the mean is over all next-token positions of all sequences, as torch's
/// CrossEntropyLoss on shifted logits) and its exact gradient with respect to every parameter of
/// `model`, stored in `grad` (a model of the same configuration; every parameter overwritten, with
/// tied embeddings the embedding's gradient includes the head's). Returns the loss.
template <class L>
double loss_and_grad(const TTTModel<L>& model, const std::vector<std::vector<int64_t>>& batch, TTTModel<L>& grad) {
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
  if (positions <= 0) throw ShapeError("loss_and_grad: the batch has no next-token position (need sequences of >= 2 tokens)");
  const detail::ModelD W = detail::to_double(model);
  detail::ModelD dW = W;
  dW.each([](auto& x) {
    if constexpr (requires { x.setZero(); }) x.setZero();
    else std::fill(x.begin(), x.end(), 0.0);
  });
  const detail::Runner<L> run(model, W, dW);
  const double scale = 1.0 / double(positions);
  double sum = 0;
  for (const auto& seq : batch) sum += run.sequence(std::span<const int64_t>(seq.data(), seq.size()), scale);
  detail::store(dW, grad);
  return sum * scale;
}

}  // namespace ttt::train
