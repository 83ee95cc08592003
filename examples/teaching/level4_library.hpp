#pragma once
/// \file examples/teaching/level4_library.hpp
/// Level 4: the library's own fast path for the same computation.
///
/// The library's TTT-Linear learner, `ttt::inner::Linear` (include/ttt/inner/linear.hpp), computes
/// more than the ladder's head, as the official code does (arXiv 2407.04620, Sec. 2.7 and its
/// Sec. 2.5 dual form):
///   - a bias: f(k) = k W1 + b1;
///   - LayerNorm and a residual inside the loss: l = 0.5 ||gamma LN(k W1 + b1) + beta - (v - k)||^2
///     (blocks/ln_l2.hpp: ln_l2_grad), and the layer outputs q + LN(Zq), not Zq;
///   - a learnable learning rate: eta is a matrix eta[t, s] = token_eta[t] * lr[s], with
///     lr[s] = ttt_base_lr * sigmoid(x_s . w_lr + b_lr) / f (per token, learned gate) and
///     token_eta[t] = max(1/(t+1) + learnable_token_idx[t], 0) (per position in the mini-batch).
/// Its LayerNorm cannot be switched off. The learner in which the library computes exactly the
/// ladder's loss is `ttt::inner::LinearAttention` (include/ttt/inner/linear_attention.hpp): the
/// same TTT-Linear inner loop with `ln_residual_loss = false`, i.e. f(k) = k W, no bias, loss
/// 0.5 ||k W - v||^2 (the first row of the paper's Table 1, Sec. 2.6). Its `dual_form` is the
/// library's fast path for level 3, run here on one head with token_eta[t] = 1 and lr[s] = eta,
/// so that eta[t, s] = eta as in levels 1-3. `forward` below calls it; `forward_ttt_linear` calls
/// `inner::Linear::dual_form` with the extras (tested against a level 2 extended with them).
///
/// Differences that remain in `forward`: none in the maths. The library splits a mini-batch
/// longer than LinearAttention::kBlock (64) rows into sub-blocks of 64 (the chunked form of
/// linear attention), all with gradients at W_0, and carries the sum of the gradients in `gacc`
/// (W_t = W_0 - token_eta[t] gacc_t), which the caller folds into W_0 at the end of each mini-batch
/// (the layer does the same, include/ttt/layers/ttt_layer.hpp).
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ttt/inner/linear.hpp>
#include <ttt/inner/linear_attention.hpp>

#include "problem.hpp"

namespace teach::level4 {

/// Same contract as level3::forward. Z: (L, f); W: (f, f) W_0 in, final state out.
template <class S>
Mat<S> forward(const Views<S>& x, Mat<S>& W, S eta, int64_t b) {
  using Learner = ttt::inner::LinearAttention;
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  Mat<S> Z(L, f), gacc = Mat<S>::Zero(f, f);  // theta (W1 alone: no bias) lives in W
  const std::vector<S> token_eta(size_t(b), S(1)), lr(size_t(b), eta);
  typename Learner::template Workspace<S> ws;
  for (int64_t t0 = 0; t0 < L; t0 += b) {
    const int64_t n = std::min(b, L - t0);
    const ttt::inner::Segment<S> seg{x.XQ.middleRows(t0, n), x.XK.middleRows(t0, n), x.XV.middleRows(t0, n),
                                     token_eta.data(), lr.data(), nullptr, nullptr, /*fresh=*/true};
    Learner::dual_form(W.data(), gacc.data(), seg, ttt::RefT<S>(Z.middleRows(t0, n)), ws);
    W -= token_eta[size_t(n - 1)] * gacc;  // the state after the mini-batch's last token
    gacc.setZero();
  }
  return Z;
}

/// FLOPs per token: as level 3 (6 f^2 + 4 b f for b <= 64; the library's own estimate, which
/// counts a carried-gradient product this fresh-start use skips, is LinearAttention::flops_per_token).
inline double flops_per_token(int64_t f, int64_t b) {
  const double B = double(std::min<int64_t>(b, ttt::inner::LinearAttention::kBlock));
  return 6.0 * double(f) * double(f) + 4.0 * B * double(f);
}

/// The library's TTT-Linear learner itself, with its extras: theta = [W1 (f, f), b1 (1, f)] flat,
/// updated in place; ln_w, ln_b (f) the inner LayerNorm's weight and bias; token_eta (b) and
/// lr (L) as in the layer (include/ttt/layers/ttt_layer.hpp). Returns Zq (L, f), the inner
/// model's outputs BEFORE the layer's q + LN(Zq).
template <class S>
Mat<S> forward_ttt_linear(const Views<S>& x, std::vector<S>& theta, const std::vector<S>& ln_w,
                          const std::vector<S>& ln_b, const std::vector<S>& token_eta, const std::vector<S>& lr,
                          int64_t b) {
  using Learner = ttt::inner::Linear;
  const int64_t L = x.XK.rows(), f = x.XK.cols();
  Mat<S> Z(L, f);
  std::vector<S> gacc(theta.size());
  typename Learner::template Workspace<S> ws;
  for (int64_t t0 = 0; t0 < L; t0 += b) {
    const int64_t n = std::min(b, L - t0);
    std::fill(gacc.begin(), gacc.end(), S(0));
    const ttt::inner::Segment<S> seg{x.XQ.middleRows(t0, n), x.XK.middleRows(t0, n), x.XV.middleRows(t0, n),
                                     token_eta.data(), lr.data() + t0, ln_w.data(), ln_b.data(), /*fresh=*/true};
    Learner::dual_form(theta.data(), gacc.data(), seg, ttt::RefT<S>(Z.middleRows(t0, n)), ws);
    for (size_t i = 0; i < theta.size(); ++i) theta[i] -= token_eta[size_t(n - 1)] * gacc[i];
  }
  return Z;
}

}  // namespace teach::level4
