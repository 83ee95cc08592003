#pragma once
/// \file ad/ops.hpp
/// The differentiable ops of the tape (ad/tape.hpp), each with its VJP. Activations are (n, C)
/// matrices, one row per position; weights have PyTorch's [out, in] layout; vectors (biases,
/// norm weights) are (1, C) rows.
///
/// \code
///   ttt::ad::Tape<double> t;
///   auto x = t.leaf(X);                                   // (n, in)
///   auto W = t.param(Wm, &dW);                            // (out, in); dW receives the gradient
///   auto loss = ttt::ad::sum(ttt::ad::gelu(ttt::ad::linear(x, W)));
///   t.backward(loss);
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <numbers>
#include <string>
#include <type_traits>
#include <vector>

#include "../blocks/attention.hpp"
#include "../core/error.hpp"
#include "tape.hpp"

namespace ttt::ad {

namespace detail {
inline std::string shp(Eigen::Index r, Eigen::Index c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}
template <class T>
void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw ShapeError(std::string("ad::") + op + ": " + what);
}
template <class T>
std::string shp(Var<T> v) {
  return shp(v.rows(), v.cols());
}
}  // namespace detail

// ---- linear algebra ---------------------------------------------------------------------------

/// y = x W^T.                                       x: (n, in); W: (out, in); y: (n, out)
template <class T>
Var<T> linear(Var<T> x, Var<T> W) {
  detail::check<T>(x.cols() == W.cols(), "linear", "x " + detail::shp(x) + " and W " + detail::shp(W) + " (W is [out, in])");
  Matrix<T> y = x.value() * W.value().transpose();
  return x.tape->record(std::move(y), x.requires_grad() || W.requires_grad(), [x, W](const Matrix<T>& dy, Tape<T>& t) {
    if (t.requires_grad(x)) t.accumulate(x, dy * W.value());
    if (t.requires_grad(W)) t.accumulate(W, dy.transpose() * x.value());
  });
}

/// x + b with b a (1, C) row added to every row.
template <class T>
Var<T> add_row(Var<T> x, Var<T> b) {
  detail::check<T>(b.rows() == 1 && b.cols() == x.cols(), "add_row", "x " + detail::shp(x) + ", b " + detail::shp(b));
  Matrix<T> y = x.value().rowwise() + b.value().row(0);
  return x.tape->record(std::move(y), x.requires_grad() || b.requires_grad(), [x, b](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(x, dy);
    if (t.requires_grad(b)) t.accumulate(b, dy.colwise().sum());
  });
}

/// y = x W^T + b.
template <class T>
Var<T> linear(Var<T> x, Var<T> W, Var<T> b) {
  return add_row(linear(x, W), b);
}

template <class T>
Var<T> add(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "add", detail::shp(a) + " + " + detail::shp(b));
  Matrix<T> y = a.value() + b.value();
  return a.tape->record(std::move(y), a.requires_grad() || b.requires_grad(), [a, b](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(a, dy);
    t.accumulate(b, dy);
  });
}

/// Elementwise product.
template <class T>
Var<T> mul(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "mul", detail::shp(a) + " * " + detail::shp(b));
  Matrix<T> y = a.value().cwiseProduct(b.value());
  return a.tape->record(std::move(y), a.requires_grad() || b.requires_grad(), [a, b](const Matrix<T>& dy, Tape<T>& t) {
    if (t.requires_grad(a)) t.accumulate(a, dy.cwiseProduct(b.value()));
    if (t.requires_grad(b)) t.accumulate(b, dy.cwiseProduct(a.value()));
  });
}

/// c * a for a constant c.
template <class T>
Var<T> scale(Var<T> a, T c) {
  Matrix<T> y = a.value() * c;
  return a.tape->record(std::move(y), a.requires_grad(), [a, c](const Matrix<T>& dy, Tape<T>& t) { t.accumulate(a, dy * c); });
}

/// The sum of all entries, (1, 1).
template <class T>
Var<T> sum(Var<T> a) {
  Matrix<T> y = Matrix<T>::Constant(1, 1, a.value().sum());
  return a.tape->record(std::move(y), a.requires_grad(), [a](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(a, Matrix<T>::Constant(a.rows(), a.cols(), dy(0, 0)));
  });
}

// ---- slicing and index maps -------------------------------------------------------------------

/// Rows [r0, r0 + n).
template <class T>
Var<T> rows(Var<T> x, Eigen::Index r0, Eigen::Index n) {
  detail::check<T>(r0 >= 0 && n >= 0 && r0 + n <= x.rows(), "rows", "rows [" + std::to_string(r0) + ", " +
                   std::to_string(r0 + n) + ") of " + detail::shp(x));
  Matrix<T> y = x.value().middleRows(r0, n);
  return x.tape->record(std::move(y), x.requires_grad(), [x, r0, n](const Matrix<T>& dy, Tape<T>& t) {
    t.grad_buffer(x).middleRows(r0, n) += dy;
  });
}

/// Columns [c0, c0 + n).
template <class T>
Var<T> cols(Var<T> x, Eigen::Index c0, Eigen::Index n) {
  detail::check<T>(c0 >= 0 && n >= 0 && c0 + n <= x.cols(), "cols", "columns [" + std::to_string(c0) + ", " +
                   std::to_string(c0 + n) + ") of " + detail::shp(x));
  Matrix<T> y = x.value().middleCols(c0, n);
  return x.tape->record(std::move(y), x.requires_grad(), [x, c0, n](const Matrix<T>& dy, Tape<T>& t) {
    t.grad_buffer(x).middleCols(c0, n) += dy;
  });
}

/// Side by side: all parts have the same number of rows.
template <class T>
Var<T> concat_cols(const std::vector<Var<T>>& parts) {
  detail::check<T>(!parts.empty(), "concat_cols", "no parts");
  Eigen::Index c = 0;
  bool rg = false;
  for (const auto& p : parts) {
    detail::check<T>(p.rows() == parts[0].rows(), "concat_cols", detail::shp(p) + " beside " + detail::shp(parts[0]));
    c += p.cols();
    rg = rg || p.requires_grad();
  }
  Matrix<T> y(parts[0].rows(), c);
  c = 0;
  for (const auto& p : parts) {
    y.middleCols(c, p.cols()) = p.value();
    c += p.cols();
  }
  return parts[0].tape->record(std::move(y), rg, [parts](const Matrix<T>& dy, Tape<T>& t) {
    Eigen::Index c0 = 0;
    for (const auto& p : parts) {
      t.accumulate(p, dy.middleCols(c0, p.cols()));
      c0 += p.cols();
    }
  });
}

/// One above the other: all parts have the same number of columns.
template <class T>
Var<T> concat_rows(const std::vector<Var<T>>& parts) {
  detail::check<T>(!parts.empty(), "concat_rows", "no parts");
  Eigen::Index r = 0;
  bool rg = false;
  for (const auto& p : parts) {
    detail::check<T>(p.cols() == parts[0].cols(), "concat_rows", detail::shp(p) + " below " + detail::shp(parts[0]));
    r += p.rows();
    rg = rg || p.requires_grad();
  }
  Matrix<T> y(r, parts[0].cols());
  r = 0;
  for (const auto& p : parts) {
    y.middleRows(r, p.rows()) = p.value();
    r += p.rows();
  }
  return parts[0].tape->record(std::move(y), rg, [parts](const Matrix<T>& dy, Tape<T>& t) {
    Eigen::Index r0 = 0;
    for (const auto& p : parts) {
      t.accumulate(p, dy.middleRows(r0, p.rows()));
      r0 += p.rows();
    }
  });
}

/// y.row(i) = x.row(idx[i]), or zeros where idx[i] < 0. Covers embedding lookup, padding,
/// cropping, shifting, repeating and interleaving of rows; the VJP scatter-adds.
template <class T>
Var<T> gather_rows(Var<T> x, std::vector<int64_t> idx) {
  const Eigen::Index n = x.rows();
  for (size_t i = 0; i < idx.size(); ++i)
    detail::check<T>(idx[i] < n, "gather_rows", "index " + std::to_string(idx[i]) + " at " + std::to_string(i) +
                     " outside the " + std::to_string(n) + " rows of the input");
  Matrix<T> y(Eigen::Index(idx.size()), x.cols());
  for (size_t i = 0; i < idx.size(); ++i) {
    if (idx[i] < 0)
      y.row(Eigen::Index(i)).setZero();
    else
      y.row(Eigen::Index(i)) = x.value().row(idx[i]);
  }
  return x.tape->record(std::move(y), x.requires_grad(), [x, idx = std::move(idx)](const Matrix<T>& dy, Tape<T>& t) {
    Matrix<T>& g = t.grad_buffer(x);
    for (size_t i = 0; i < idx.size(); ++i)
      if (idx[i] >= 0) g.row(idx[i]) += dy.row(Eigen::Index(i));
  });
}

// ---- pointwise --------------------------------------------------------------------------------

/// GELU with the exact erf form (torch.nn.GELU()).
template <class T>
Var<T> gelu(Var<T> x) {
  const T r2 = T(std::numbers::sqrt2);
  Matrix<T> y = x.value().unaryExpr([r2](T v) { return T(0.5) * v * (T(1) + std::erf(v / r2)); });
  return x.tape->record(std::move(y), x.requires_grad(), [x, r2](const Matrix<T>& dy, Tape<T>& t) {
    const T c = T(1.0 / std::sqrt(2.0 * std::numbers::pi));
    Matrix<T> d = x.value().unaryExpr([&](T v) { return T(0.5) * (T(1) + std::erf(v / r2)) + v * c * std::exp(T(-0.5) * v * v); });
    t.accumulate(x, dy.cwiseProduct(d));
  });
}

/// SiLU: x * sigmoid(x).
template <class T>
Var<T> silu(Var<T> x) {
  Matrix<T> y = x.value().unaryExpr([](T v) { return v / (T(1) + std::exp(-v)); });
  return x.tape->record(std::move(y), x.requires_grad(), [x](const Matrix<T>& dy, Tape<T>& t) {
    Matrix<T> d = x.value().unaryExpr([](T v) {
      const T s = T(1) / (T(1) + std::exp(-v));
      return s + v * s * (T(1) - s);
    });
    t.accumulate(x, dy.cwiseProduct(d));
  });
}

// ---- norms ------------------------------------------------------------------------------------

/// The RMSNorm of simple-hierarchical-transformer: F.normalize(x) * sqrt(C) * gamma, i.e.
/// x / max(||x||, 1e-12) * sqrt(C) * gamma row by row (no eps inside a mean).     gamma: (1, C)
template <class T>
Var<T> l2_rms_norm(Var<T> x, Var<T> gamma) {
  const Eigen::Index C = x.cols();
  detail::check<T>(gamma.rows() == 1 && gamma.cols() == C, "l2_rms_norm", "x " + detail::shp(x) + ", gamma " + detail::shp(gamma));
  const T s = std::sqrt(T(C)), eps = T(1e-12);
  Matrix<T> y(x.rows(), C);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const T nrm = std::max(x.value().row(r).norm(), eps);
    y.row(r) = (x.value().row(r) / nrm * s).cwiseProduct(gamma.value().row(0));
  }
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

/// torch.nn.LayerNorm over each row (biased variance).                w, b: (1, C)
template <class T>
Var<T> layer_norm(Var<T> x, Var<T> w, Var<T> b, T eps = T(1e-5)) {
  const Eigen::Index n = x.rows(), C = x.cols();
  detail::check<T>(w.rows() == 1 && w.cols() == C && b.rows() == 1 && b.cols() == C, "layer_norm",
                   "x " + detail::shp(x) + ", weight " + detail::shp(w) + ", bias " + detail::shp(b));
  auto xhat = std::make_shared<Matrix<T>>(n, C);
  auto inv = std::make_shared<std::vector<T>>(static_cast<size_t>(n));
  for (Eigen::Index r = 0; r < n; ++r) {
    const T mu = x.value().row(r).mean();
    const T var = (x.value().row(r).array() - mu).square().mean();
    (*inv)[size_t(r)] = T(1) / std::sqrt(var + eps);
    xhat->row(r) = (x.value().row(r).array() - mu) * (*inv)[size_t(r)];
  }
  Matrix<T> y = (xhat->array().rowwise() * w.value().row(0).array()).rowwise() + b.value().row(0).array();
  const bool rg = x.requires_grad() || w.requires_grad() || b.requires_grad();
  return x.tape->record(std::move(y), rg, [x, w, b, xhat, inv](const Matrix<T>& dy, Tape<T>& t) {
    if (t.requires_grad(w)) t.accumulate(w, dy.cwiseProduct(*xhat).colwise().sum());
    if (t.requires_grad(b)) t.accumulate(b, dy.colwise().sum());
    if (!t.requires_grad(x)) return;
    const Eigen::Index n = dy.rows();
    Matrix<T> dx(n, dy.cols());
    for (Eigen::Index r = 0; r < n; ++r) {
      const Matrix<T> g = dy.row(r).cwiseProduct(w.value().row(0));
      const T m1 = g.mean(), m2 = g.row(0).dot(xhat->row(r)) / T(dy.cols());
      dx.row(r) = ((g.array() - m1) - xhat->row(r).array() * m2) * (*inv)[size_t(r)];
    }
    t.accumulate(x, dx);
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
    for (Eigen::Index r = 0; r < m; ++r)
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
    return Xc;
  };
  Matrix<T> y = b.value().replicate(m, 1);
  y.noalias() += unfold(x.value()) * W.value().transpose();
  const bool rg = x.requires_grad() || W.requires_grad() || b.requires_grad();
  return x.tape->record(std::move(y), rg, [x, W, b, k, stride, unfold](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = x.rows(), in = x.cols();
    if (t.requires_grad(b)) t.accumulate(b, dy.colwise().sum());
    if (t.requires_grad(W)) {
      Matrix<T> dW;
      dW.noalias() = dy.transpose() * unfold(x.value());  // (out, in * k)
      t.accumulate(W, dW);
    }
    if (t.requires_grad(x)) {
      Matrix<T> dXc;
      dXc.noalias() = dy * W.value();  // (m, in * k)
      Matrix<T>& gx = t.grad_buffer(x);
      for (Eigen::Index r = 0; r < dy.rows(); ++r)
        for (int64_t j = 0; j < k; ++j) {
          const Eigen::Index s = r * stride - k + 1 + j;
          if (s < 0 || s >= n) continue;
          const T* src = dXc.data() + r * in * k + j;
          T* dst = gx.data() + s * in;
          for (Eigen::Index i = 0; i < in; ++i) dst[i] += src[i * k];
        }
    }
  });
}

// ---- position encoding and attention ----------------------------------------------------------

/// Rotary embedding in the rotate_half convention (the two halves of each head are the pairs),
/// times a per-position, per-frequency factor (xPos; none when `factor` is empty):
///   y1 = (x1 cos - x2 sin) f,  y2 = (x2 cos + x1 sin) f       x: (n, heads * dh)
/// cos, sin, factor: (n, dh / 2) constants.
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
    for (int64_t h = 0; h < heads; ++h) {
      const auto x1 = in.middleCols(h * dh, half).array(), x2 = in.middleCols(h * dh + half, half).array();
      y.middleCols(h * dh, half) = x1 * c.array() - sign * x2 * s.array();
      y.middleCols(h * dh + half, half) = x2 * c.array() + sign * x1 * s.array();
    }
    return y;
  };
  Matrix<T> y = apply(x.value(), *C, *S, T(1));
  return x.tape->record(std::move(y), x.requires_grad(), [x, C, S, apply](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(x, apply(dy, *C, *S, T(-1)));  // the transposed rotation
  });
}

/// Causal softmax attention per head, the plain reference path ((n, n) scores per head; the
/// tests compare `attention` with it). Query i sees keys [i - window, i] (window >= 0) or [0, i]
/// (window < 0).                                                   q, k, v: (n, heads * dh)
template <class T>
Var<T> attention_naive(Var<T> q, Var<T> k, Var<T> v, int64_t heads, int64_t window, T scale) {
  const Eigen::Index n = q.rows(), D = q.cols();
  detail::check<T>(heads > 0 && D % heads == 0 && k.rows() == n && v.rows() == n && k.cols() == D && v.cols() == D,
                   "attention", "q " + detail::shp(q) + ", k " + detail::shp(k) + ", v " + detail::shp(v) + ", heads " + std::to_string(heads));
  const int64_t dh = D / heads;
  auto P = std::make_shared<std::vector<Matrix<T>>>(static_cast<size_t>(heads));
  Matrix<T> y(n, D);
  for (int64_t h = 0; h < heads; ++h) {
    Matrix<T>& p = (*P)[size_t(h)];
    p.noalias() = q.value().middleCols(h * dh, dh) * k.value().middleCols(h * dh, dh).transpose();
    p *= scale;
    for (Eigen::Index i = 0; i < n; ++i) {
      const Eigen::Index lo = window < 0 ? 0 : std::max<Eigen::Index>(0, i - window);
      T mx = -std::numeric_limits<T>::infinity();
      for (Eigen::Index j = lo; j <= i; ++j) mx = std::max(mx, p(i, j));
      T s = 0;
      for (Eigen::Index j = 0; j < n; ++j) {
        if (j < lo || j > i) {
          p(i, j) = 0;
        } else {
          p(i, j) = std::exp(p(i, j) - mx);
          s += p(i, j);
        }
      }
      p.row(i) /= s;
    }
    y.middleCols(h * dh, dh).noalias() = p * v.value().middleCols(h * dh, dh);
  }
  const bool rg = q.requires_grad() || k.requires_grad() || v.requires_grad();
  return q.tape->record(std::move(y), rg, [q, k, v, heads, dh, scale, P](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = dy.rows(), D = dy.cols();
    Matrix<T> dq = Matrix<T>::Zero(n, D), dk = Matrix<T>::Zero(n, D), dv = Matrix<T>::Zero(n, D);
    for (int64_t h = 0; h < heads; ++h) {
      const Matrix<T>& p = (*P)[size_t(h)];
      const auto dOh = dy.middleCols(h * dh, dh);
      dv.middleCols(h * dh, dh).noalias() = p.transpose() * dOh;
      Matrix<T> dp = dOh * v.value().middleCols(h * dh, dh).transpose();  // (n, n)
      for (Eigen::Index i = 0; i < n; ++i) {
        const T rs = dp.row(i).dot(p.row(i));
        dp.row(i) = p.row(i).cwiseProduct((dp.row(i).array() - rs).matrix());
      }
      dp *= scale;
      dq.middleCols(h * dh, dh).noalias() = dp * k.value().middleCols(h * dh, dh);
      dk.middleCols(h * dh, dh).noalias() = dp.transpose() * q.value().middleCols(h * dh, dh);
    }
    t.accumulate(q, dq);
    t.accumulate(k, dk);
    t.accumulate(v, dv);
  });
}

/// Causal softmax attention per head with ttt::attn's tiled kernels (O(n * window) for a window;
/// the backward recomputes probabilities from the row log-sum-exp). Query i sees keys
/// [i - window, i] (window >= 0) or [0, i] (window < 0).           q, k, v: (n, heads * dh)
template <class T>
  requires(std::is_same_v<T, float> || std::is_same_v<T, double>)
Var<T> attention(Var<T> q, Var<T> k, Var<T> v, int64_t heads, int64_t window, T scale) {
  const Eigen::Index n = q.rows(), D = q.cols();
  detail::check<T>(heads > 0 && D % heads == 0 && k.rows() == n && v.rows() == n && k.cols() == D && v.cols() == D,
                   "attention", "q " + detail::shp(q) + ", k " + detail::shp(k) + ", v " + detail::shp(v) + ", heads " + std::to_string(heads));
  const int64_t dh = D / heads;
  auto lse = std::make_shared<std::vector<T>>(static_cast<size_t>(n * heads));
  auto O = std::make_shared<Matrix<T>>(n, D);
  for (int64_t h = 0; h < heads; ++h)
    attn::forward(q.value().middleCols(h * dh, dh), k.value().middleCols(h * dh, dh), v.value().middleCols(h * dh, dh), scale,
                  window, 0, 0, O->middleCols(h * dh, dh), lse->data() + h * n);
  Matrix<T> y = *O;
  const bool rg = q.requires_grad() || k.requires_grad() || v.requires_grad();
  return q.tape->record(std::move(y), rg, [q, k, v, heads, dh, window, scale, lse, O](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = dy.rows(), D = dy.cols();
    Matrix<T> dq = Matrix<T>::Zero(n, D), dk = Matrix<T>::Zero(n, D), dv = Matrix<T>::Zero(n, D);
    for (int64_t h = 0; h < heads; ++h)
      attn::backward(q.value().middleCols(h * dh, dh), k.value().middleCols(h * dh, dh), v.value().middleCols(h * dh, dh),
                     O->middleCols(h * dh, dh), dy.middleCols(h * dh, dh), lse->data() + h * n, scale, window, 0, 0,
                     dq.middleCols(h * dh, dh), dk.middleCols(h * dh, dh), dv.middleCols(h * dh, dh));
    t.accumulate(q, dq);
    t.accumulate(k, dk);
    t.accumulate(v, dv);
  });
}

// ---- losses -----------------------------------------------------------------------------------

/// Sum over rows of -log softmax(logits)[target] for rows whose target != ignore_index, (1, 1)
/// (divide by `count_targets` for PyTorch's mean). The log-sum-exp is taken in double.
template <class T>
Var<T> cross_entropy_sum(Var<T> logits, std::vector<int64_t> targets, int64_t ignore_index) {
  const Eigen::Index n = logits.rows(), V = logits.cols();
  detail::check<T>(Eigen::Index(targets.size()) == n, "cross_entropy_sum",
                   std::to_string(targets.size()) + " targets for " + std::to_string(n) + " rows of logits");
  auto lse = std::make_shared<std::vector<double>>(size_t(n), 0.0);
  double total = 0.0;
  for (Eigen::Index r = 0; r < n; ++r) {
    const int64_t y = targets[size_t(r)];
    if (y == ignore_index) continue;
    detail::check<T>(y >= 0 && y < V, "cross_entropy_sum", "target " + std::to_string(y) + " outside [0, " + std::to_string(V) + ")");
    double mx = -std::numeric_limits<double>::infinity();
    for (Eigen::Index c = 0; c < V; ++c) mx = std::max(mx, double(logits.value()(r, c)));
    double s = 0.0;
    for (Eigen::Index c = 0; c < V; ++c) s += std::exp(double(logits.value()(r, c)) - mx);
    (*lse)[size_t(r)] = mx + std::log(s);
    total += (*lse)[size_t(r)] - double(logits.value()(r, y));
  }
  Matrix<T> out = Matrix<T>::Constant(1, 1, T(total));
  return logits.tape->record(std::move(out), logits.requires_grad(),
                             [logits, targets = std::move(targets), ignore_index, lse](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = logits.rows(), V = logits.cols();
    Matrix<T>& g = t.grad_buffer(logits);
    const T s = dy(0, 0);
    for (Eigen::Index r = 0; r < n; ++r) {
      const int64_t y = targets[size_t(r)];
      if (y == ignore_index) continue;
      for (Eigen::Index c = 0; c < V; ++c) g(r, c) += s * T(std::exp(double(logits.value()(r, c)) - (*lse)[size_t(r)]));
      g(r, y) -= s;
    }
  });
}

/// How many targets are not ignore_index.
inline int64_t count_targets(const std::vector<int64_t>& targets, int64_t ignore_index) {
  return int64_t(std::count_if(targets.begin(), targets.end(), [&](int64_t y) { return y != ignore_index; }));
}

/// Sum over rows of the cosine similarity of a.row(i) and b.row(i), each normalised as
/// F.normalize does (x / max(||x||, 1e-12)), (1, 1).
template <class T>
Var<T> cosine_sum(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "cosine_sum", detail::shp(a) + " vs " + detail::shp(b));
  const T eps = T(1e-12);
  double total = 0.0;
  for (Eigen::Index r = 0; r < a.rows(); ++r)
    total += double(a.value().row(r).dot(b.value().row(r)) /
                    (std::max(a.value().row(r).norm(), eps) * std::max(b.value().row(r).norm(), eps)));
  Matrix<T> out = Matrix<T>::Constant(1, 1, T(total));
  return a.tape->record(std::move(out), a.requires_grad() || b.requires_grad(), [a, b, eps](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = a.rows(), C = a.cols();
    Matrix<T> da(n, C), db(n, C);
    for (Eigen::Index r = 0; r < n; ++r) {
      const T ra = a.value().row(r).norm(), rb = b.value().row(r).norm();
      const T na = std::max(ra, eps), nb = std::max(rb, eps);
      const Matrix<T> ah = a.value().row(r) / na, bh = b.value().row(r) / nb;
      const T c = ah.row(0).dot(bh.row(0));
      da.row(r) = (ra > eps ? (bh - ah * c) : bh) / na * dy(0, 0);
      db.row(r) = (rb > eps ? (ah - bh * c) : ah) / nb * dy(0, 0);
    }
    t.accumulate(a, da);
    t.accumulate(b, db);
  });
}

}  // namespace ttt::ad
