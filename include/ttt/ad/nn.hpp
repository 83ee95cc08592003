#pragma once
/// \file ad/nn.hpp
/// The tape's neural-network ops, each with its VJP: the GELU (exact erf form) and SiLU
/// activations, the two norms (layer_norm, and l2_rms_norm of simple-hierarchical-transformer),
/// the causal strided conv1d and the rotate_half rotary embedding with xPos. Where a building
/// block of ttt/blocks computes the same function, the op calls it (forward and VJP); the others
/// say why they are not the block's version.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include <Eigen/Core>

#include "../blocks/activations.hpp"
#include "../blocks/layer_norm.hpp"
#include "detail.hpp"
#include "tape.hpp"

namespace ttt::ad {

// ---- pointwise --------------------------------------------------------------------------------

namespace detail {
/// An activation op: y = act(x) and the VJP dy o act'(x), both row-parallel (by_rows). act and
/// grad map a block of rows of x to an Eigen expression of its shape.
template <class T, class Act, class Grad>
Var<T> activation(Var<T> x, Act act, Grad grad) {
  const Matrix<T>& xv = x.value();
  Matrix<T> y(xv.rows(), xv.cols());
  by_rows(xv.rows(), xv.cols(), [&](Eigen::Index r0, Eigen::Index r1) { y.middleRows(r0, r1 - r0) = act(xv.middleRows(r0, r1 - r0)); });
  return x.tape->record(std::move(y), x.requires_grad(), [x, grad](const Matrix<T>& dy, Tape<T>& t) {
    const Matrix<T>& xv = x.value();
    Matrix<T> g(xv.rows(), xv.cols());
    by_rows(xv.rows(), xv.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
      g.middleRows(r0, r1 - r0) = dy.middleRows(r0, r1 - r0).cwiseProduct(grad(xv.middleRows(r0, r1 - r0)));
    });
    t.accumulate(x, g);
  });
}
}  // namespace detail

/// GELU with the exact erf form (torch.nn.GELU()): blocks::gelu_erf / gelu_erf_grad, vectorised
/// (the scalar act(Act::gelu) per element: ~12 ns each, 25x the vectorised form with AVX-512).
template <class T>
Var<T> gelu(Var<T> x) {
  return detail::activation<T>(x, [](const auto& b) { return blocks::gelu_erf(b); }, [](const auto& b) { return blocks::gelu_erf_grad(b); });
}

/// SiLU: x * sigmoid(x), blocks::silu / silu_grad.
template <class T>
Var<T> silu(Var<T> x) {
  return detail::activation<T>(x, [](const auto& b) { return blocks::silu(b); }, [](const auto& b) { return blocks::silu_grad(b); });
}

// ---- norms ------------------------------------------------------------------------------------

/// The RMSNorm of simple-hierarchical-transformer: F.normalize(x) * sqrt(C) * gamma, i.e.
/// x / max(||x||, 1e-12) * sqrt(C) * gamma row by row (no eps inside a mean).     gamma: (1, C)
/// Not blocks::rms_norm: that one is w x / sqrt(mean(x^2) + eps), with eps inside the root. With
/// eps = 0 it is this function for ||x|| > 1e-12, but a zero row (the model's zero padding) gives
/// 0 / 0 there where F.normalize clamps the norm; a positive eps shifts every row instead.
template <class T>
Var<T> l2_rms_norm(Var<T> x, Var<T> gamma) {
  const Eigen::Index C = x.cols();
  detail::check<T>(gamma.rows() == 1 && gamma.cols() == C, "l2_rms_norm", "x " + detail::shp(x) + ", gamma " + detail::shp(gamma));
  const T s = std::sqrt(T(C)), eps = T(1e-12);
  Matrix<T> y(x.rows(), C);
  detail::by_rows(x.rows(), C, [&](Eigen::Index r0, Eigen::Index r1) {
    for (Eigen::Index r = r0; r < r1; ++r) {
      const T nrm = std::max(x.value().row(r).norm(), eps);
      y.row(r) = (x.value().row(r) / nrm * s).cwiseProduct(gamma.value().row(0));
    }
  });
  return x.tape->record(std::move(y), x.requires_grad() || gamma.requires_grad(), [x, gamma, s, eps](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = x.rows(), C = x.cols();
    Matrix<T> dx(n, C), dg = Matrix<T>::Zero(1, C);
    for (Eigen::Index r = 0; r < n; ++r) {
      const T raw = x.value().row(r).norm(), nrm = std::max(raw, eps);
      const auto xh = x.value().row(r) / nrm;  // (1, C)
      dg += dy.row(r).cwiseProduct(xh) * s;
      const Matrix<T> u = dy.row(r).cwiseProduct(gamma.value().row(0)) * s;
      if (raw > eps)
        dx.row(r) = (u - xh * u.row(0).dot(xh)) / nrm;
      else
        dx.row(r) = u / nrm;
    }
    t.accumulate(x, dx);
    t.accumulate(gamma, dg);
  });
}

/// torch.nn.LayerNorm over each row (biased variance): blocks::layer_norm, and blocks::layer_norm_bwd
/// as the VJP (it recomputes the row moments from x, so the op keeps nothing).      w, b: (1, C)
template <class T>
Var<T> layer_norm(Var<T> x, Var<T> w, Var<T> b, T eps = T(1e-5)) {
  const Eigen::Index C = x.cols();
  detail::check<T>(w.rows() == 1 && w.cols() == C && b.rows() == 1 && b.cols() == C, "layer_norm",
                   "x " + detail::shp(x) + ", weight " + detail::shp(w) + ", bias " + detail::shp(b));
  const Matrix<T>& xv = x.value();
  Matrix<T> y(xv.rows(), C);
  detail::by_rows(xv.rows(), C, [&](Eigen::Index r0, Eigen::Index r1) {
    blocks::layer_norm(xv.middleRows(r0, r1 - r0), w.value().data(), b.value().data(), double(eps), y.middleRows(r0, r1 - r0));
  });
  const bool rg = x.requires_grad() || w.requires_grad() || b.requires_grad();
  return x.tape->record(std::move(y), rg, [x, w, b, eps](const Matrix<T>& dy, Tape<T>& t) {
    // the block adds into its outputs: the gradient buffers directly, a scratch dx when x needs none
    T* dw = t.requires_grad(w) ? t.grad_buffer(w).data() : nullptr;
    T* db = t.requires_grad(b) ? t.grad_buffer(b).data() : nullptr;
    if (t.requires_grad(x)) {
      blocks::layer_norm_bwd(x.value(), w.value().data(), double(eps), dy, t.grad_buffer(x), dw, db);
    } else {
      Matrix<T> scratch = Matrix<T>::Zero(dy.rows(), dy.cols());
      blocks::layer_norm_bwd(x.value(), w.value().data(), double(eps), dy, scratch, dw, db);
    }
  });
}

// ---- convolution ------------------------------------------------------------------------------

/// Causal strided Conv1d over rows: x is left-padded with k - 1 zero rows and output row r reads
/// input rows r * stride - k + 1 + j, j = 0..k-1. W is PyTorch's [out, in, k] stored as
/// (out, in * k); b: (1, out). Output: (ceil(n / stride), out).
/// Computed as one product with the unfolded input (im2col): Xc(r, i k + j) = x(r s - k + 1 + j, i),
/// in W's column order, so that y = Xc W^T + b and dW = dy^T Xc are single contiguous GEMMs
/// (k products with a strided view of W packed k times slower). Xc is rebuilt in the backward
/// rather than kept (m x in k values).
/// Not blocks::causal_conv: that block is the depthwise (groups = C), stride-1 conv of the TTT
/// layers; this is a dense in -> out conv with a stride (the hierarchical model's compressors).
template <class T>
Var<T> causal_conv1d(Var<T> x, Var<T> W, Var<T> b, int64_t k, int64_t stride) {
  const Eigen::Index n = x.rows(), in = x.cols(), out = W.rows();
  detail::check<T>(k >= 1 && stride >= 1, "causal_conv1d", "kernel " + std::to_string(k) + ", stride " + std::to_string(stride));
  detail::check<T>(W.cols() == in * k && b.rows() == 1 && b.cols() == out, "causal_conv1d",
                   "x " + detail::shp(x) + ", W " + detail::shp(W) + " (expected [out, " + std::to_string(in * k) + "]), b " + detail::shp(b));
  const Eigen::Index m = (n + stride - 1) / stride;
  auto unfold = [k, stride](const Matrix<T>& xv) {  // (m, in * k)
    const Eigen::Index n = xv.rows(), in = xv.cols(), m = (n + stride - 1) / stride;
    Matrix<T> Xc(m, in * k);
    detail::by_rows(m, in * k, [&](Eigen::Index r0, Eigen::Index r1) {
      for (Eigen::Index r = r0; r < r1; ++r)
        for (int64_t j = 0; j < k; ++j) {
          const Eigen::Index s = r * stride - k + 1 + j;
          T* dst = Xc.data() + r * in * k + j;
          if (s < 0 || s >= n) {
            for (Eigen::Index i = 0; i < in; ++i) dst[i * k] = T(0);
          } else {
            const T* src = xv.data() + s * in;
            for (Eigen::Index i = 0; i < in; ++i) dst[i * k] = src[i];
          }
        }
    });
    return Xc;
  };
  Matrix<T> y = b.value().replicate(m, 1);
  blocks::matmul(y, unfold(x.value()), W.value().transpose(), true);
  const bool rg = x.requires_grad() || W.requires_grad() || b.requires_grad();
  return x.tape->record(std::move(y), rg, [x, W, b, k, stride, unfold](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = x.rows(), in = x.cols();
    if (t.requires_grad(b)) t.accumulate(b, dy.colwise().sum());
    if (t.requires_grad(W)) {
      Matrix<T> dW;
      blocks::matmul(dW, dy.transpose(), unfold(x.value()));  // (out, in * k)
      t.accumulate(W, dW);
    }
    if (t.requires_grad(x)) {
      Matrix<T> dXc;
      blocks::matmul(dXc, dy, W.value());  // (m, in * k)
      Matrix<T>& gx = t.grad_buffer(x);
      // rows of x receive from several output rows: split the columns instead (the same sums in
      // the same order whatever the cut)
      detail::by_rows(in, dy.rows() * k, [&](Eigen::Index i0, Eigen::Index i1) {
        for (Eigen::Index r = 0; r < dy.rows(); ++r)
          for (int64_t j = 0; j < k; ++j) {
            const Eigen::Index s = r * stride - k + 1 + j;
            if (s < 0 || s >= n) continue;
            const T* src = dXc.data() + r * in * k + j;
            T* dst = gx.data() + s * in;
            for (Eigen::Index i = i0; i < i1; ++i) dst[i] += src[i * k];
          }
      });
    }
  });
}

// ---- position encoding ------------------------------------------------------------------------

/// Rotary embedding in the rotate_half convention (the two halves of each head are the pairs),
/// times a per-position, per-frequency factor (xPos; none when `factor` is empty):
///   y1 = (x1 cos - x2 sin) f,  y2 = (x2 cos + x1 sin) f       x: (n, heads * dh)
/// cos, sin, factor: (n, dh / 2) constants.
/// Not blocks::rope: that block rotates the interleaved pairs (2i, 2i + 1) from float tables of
/// the TTT reference, with no scale; simple-hierarchical-transformer pairs dimension i with
/// i + dh / 2 (rotate_half) and multiplies by the xPos factor.
template <class T>
Var<T> rotary(Var<T> x, int64_t heads, const Matrix<T>& cos, const Matrix<T>& sin, const Matrix<T>& factor) {
  const Eigen::Index n = x.rows();
  detail::check<T>(heads > 0 && x.cols() % (2 * heads) == 0, "rotary", "x " + detail::shp(x) + " with " + std::to_string(heads) + " heads of even size");
  const int64_t dh = x.cols() / heads, half = dh / 2;
  detail::check<T>(cos.rows() == n && cos.cols() == half && sin.rows() == n && sin.cols() == half &&
                   (factor.size() == 0 || (factor.rows() == n && factor.cols() == half)),
                   "rotary", "tables must be (" + std::to_string(n) + ", " + std::to_string(half) + ")");
  auto C = std::make_shared<Matrix<T>>(cos), S = std::make_shared<Matrix<T>>(sin);
  if (factor.size()) {
    *C = C->cwiseProduct(factor);
    *S = S->cwiseProduct(factor);
  }
  auto apply = [heads, dh, half](const Matrix<T>& in, const Matrix<T>& c, const Matrix<T>& s, T sign) {
    Matrix<T> y(in.rows(), in.cols());
    detail::by_rows(in.rows(), in.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
      const Eigen::Index m = r1 - r0;
      const auto cr = c.middleRows(r0, m).array(), sr = s.middleRows(r0, m).array();
      for (int64_t h = 0; h < heads; ++h) {
        const auto x1 = in.block(r0, h * dh, m, half).array(), x2 = in.block(r0, h * dh + half, m, half).array();
        y.block(r0, h * dh, m, half) = x1 * cr - sign * x2 * sr;
        y.block(r0, h * dh + half, m, half) = x2 * cr + sign * x1 * sr;
      }
    });
    return y;
  };
  Matrix<T> y = apply(x.value(), *C, *S, T(1));
  return x.tape->record(std::move(y), x.requires_grad(), [x, C, S, apply](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(x, apply(dy, *C, *S, T(-1)));  // the transposed rotation
  });
}

}  // namespace ttt::ad
