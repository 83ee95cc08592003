#pragma once
/// \file blocks/causal_conv.hpp
/// Depthwise causal conv1d with bias over time (the TTT model's pre-conv and share_qk convs, torch's
/// Conv1d(C, C, K, groups=C, padding=K-1) cropped to the causal part), on an extended input `ext`:
/// the K-1 inputs before the chunk (zeros at the start of a sequence, the carried history in
/// decode) followed by the chunk's n inputs. So prefill, decode and any chunking are one code path.
///   out[t, c] = bias[c] + sum_k W[c, k] ext[t + k, c]      ext: (K-1+n, C); W: (C, K) (torch [C, 1, K])
#include "../core/tensor.hpp"
#include "eigen_out.hpp"

namespace ttt::blocks {

/// out = conv(ext).                                                            out: (n, C)
template <class E, class W, class B, class Y>
void causal_conv(const Eigen::MatrixBase<E>& ext, const Eigen::MatrixBase<W>& w, const Eigen::MatrixBase<B>& bias,
                 const Eigen::MatrixBase<Y>& out_) {
  const Eigen::Index K = w.cols(), n = ext.rows() - (K - 1), C = ext.cols();
  auto& out = detail::out(out_, n, C);
  for (Eigen::Index t = 0; t < n; ++t) {
    auto o = out.row(t);
    o = bias;
    for (Eigen::Index k = 0; k < K; ++k) o.array() += ext.row(t + k).array() * w.col(k).transpose().array();
  }
}

/// dext += ..., dW += ..., dbias += ... of <dout, causal_conv(ext, W, bias)>.
template <class E, class W, class DY, class DE, class DW, class DB>
void causal_conv_bwd(const Eigen::MatrixBase<E>& ext, const Eigen::MatrixBase<W>& w, const Eigen::MatrixBase<DY>& dy,
                     const Eigen::MatrixBase<DE>& dext_, const Eigen::MatrixBase<DW>& dW_,
                     const Eigen::MatrixBase<DB>& db_) {
  auto& dext = detail::inout(dext_);
  auto& dW = detail::inout(dW_);
  auto& db = detail::inout(db_);
  const Eigen::Index n = dy.rows(), K = w.cols();
  for (Eigen::Index t = 0; t < n; ++t) {
    db += dy.row(t);
    for (Eigen::Index k = 0; k < K; ++k) {
      dW.col(k).array() += (dy.row(t).array() * ext.row(t + k).array()).transpose();
      dext.row(t + k).array() += dy.row(t).array() * w.col(k).transpose().array();
    }
  }
}

/// ext = [history; X], then history advances past X.         history: (K-1, C); X: (n, C)
template <class S, class X>
void extend_history(const Eigen::MatrixBase<X>& x, MatT<S>& history, MatT<S>& ext) {
  const Eigen::Index km1 = history.rows(), n = x.rows();
  ensure_size(ext, km1 + n, x.cols());
  if (km1 > 0) ext.topRows(km1) = history;
  ext.bottomRows(n) = x;
  if (km1 > 0) history = ext.bottomRows(km1);
}

/// ext = [K-1 zero rows; X]: the start of a sequence.
template <class S, class X>
void zero_history(const Eigen::MatrixBase<X>& x, Eigen::Index K, MatT<S>& ext) {
  ensure_size(ext, K - 1 + x.rows(), x.cols());
  ext.topRows(K - 1).setZero();
  ext.bottomRows(x.rows()) = x;
}

}  // namespace ttt::blocks
