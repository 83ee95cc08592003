#pragma once
/// \file train/ops.hpp
/// Building blocks of the training backward pass, each with its vector-Jacobian product (VJP):
/// RMSNorm, LayerNorm, the LayerNorm-fused L2 gradient of the inner loss (whose VJP is the second
/// derivative of the inner loss), gelu (tanh) and the reference's `gelu_bwd`, interleaved RoPE,
/// depthwise causal conv and the SwiGLU activations. Every function is generic over the scalar
/// (float for training, double for the finite-difference tests) and takes Eigen matrices or
/// blocks of them. Conventions: forward functions write their output (a matrix is resized, a block
/// must have the right shape); `*_bwd` functions ADD into their gradient outputs (callers zero
/// them), so several paths into one tensor simply accumulate. No function allocates.
#include <cmath>
#include <concepts>
#include <cstdint>

#include "../blocks/nn.hpp"
#include "../core/tensor.hpp"

namespace ttt::train {

/// Row-major matrix / row vector of scalar S (float: training; double: finite-difference checks).
template <class S>
using MatT = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using RowT = Eigen::Matrix<S, 1, Eigen::Dynamic>;
/// Views of a matrix or of a block of one (e.g. one head's columns of an (n, C) matrix).
template <class S>
using RefT = Eigen::Ref<MatT<S>, 0, Eigen::OuterStride<>>;
template <class S>
using CRefT = Eigen::Ref<const MatT<S>, 0, Eigen::OuterStride<>>;

using MatD = ttt::MatD;  ///< row-major double matrix
using RowD = RowT<double>;

namespace ops {

namespace detail {
/// Write access to an Eigen output passed as a temporary block (Eigen's documented idiom), resized
/// when it is a matrix.
template <class Y>
auto& out(const Eigen::MatrixBase<Y>& y, Eigen::Index r, Eigen::Index c) {
  auto& w = const_cast<Eigen::MatrixBase<Y>&>(y);
  w.derived().resize(r, c);
  return w;
}
template <class Y>
auto& inout(const Eigen::MatrixBase<Y>& y) {
  return const_cast<Eigen::MatrixBase<Y>&>(y);
}
}  // namespace detail

// ---- RMSNorm: y = w * x / sqrt(mean(x^2) + eps), row by row --------------------------------

template <class X, class W, class Y>
void rms(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, double eps, const Eigen::MatrixBase<Y>& y_) {
  using S = typename X::Scalar;
  auto& y = detail::out(y_, x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S r = S(1) / std::sqrt(x.row(t).squaredNorm() / S(x.cols()) + S(eps));
    y.row(t) = (x.row(t) * r).cwiseProduct(w);
  }
}
/// dx += d/dx, dw += d/dw of <dy, rms(x, w)>.
template <class X, class W, class DY, class DX, class DW>
void rms_bwd(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, double eps, const Eigen::MatrixBase<DY>& dy,
             const Eigen::MatrixBase<DX>& dx_, const Eigen::MatrixBase<DW>& dw_) {
  using S = typename X::Scalar;
  auto& dx = detail::inout(dx_);
  auto& dw = detail::inout(dw_);
  const S D = S(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S r = S(1) / std::sqrt(x.row(t).squaredNorm() / D + S(eps));
    dw += (dy.row(t).cwiseProduct(x.row(t)) * r);
    const S dot = dy.row(t).cwiseProduct(w).dot(x.row(t)) * r;  // <g, xh>, g = dy o w
    dx.row(t) += r * (dy.row(t).cwiseProduct(w) - x.row(t) * (r * dot / D));
  }
}

// ---- LayerNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta (biased variance) -------------

template <class X, class Y>
void ln(const Eigen::MatrixBase<X>& x, const typename X::Scalar* g, const typename X::Scalar* b, double eps,
        const Eigen::MatrixBase<Y>& y_) {
  using S = typename X::Scalar;
  const Eigen::Index d = x.cols();
  auto& y = detail::out(y_, x.rows(), d);
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S mu = x.row(t).mean();
    const S var = (x.row(t).array() - mu).square().mean();
    const S inv = S(1) / std::sqrt(var + S(eps));
    for (Eigen::Index c = 0; c < d; ++c) y(t, c) = g[c] * (x(t, c) - mu) * inv + b[c];
  }
}
/// dx += ..., dg += ..., db += ... of <dy, ln(x, g, b)>. dg/db may be null.
template <class X, class DY, class DX>
void ln_bwd(const Eigen::MatrixBase<X>& x, const typename X::Scalar* g, double eps, const Eigen::MatrixBase<DY>& dy,
            const Eigen::MatrixBase<DX>& dx_, typename X::Scalar* dg, typename X::Scalar* db) {
  using S = typename X::Scalar;
  auto& dx = detail::inout(dx_);
  const Eigen::Index d = x.cols();
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const S mu = x.row(t).mean();
    const S var = (x.row(t).array() - mu).square().mean();
    const S inv = S(1) / std::sqrt(var + S(eps));
    S m1 = 0, m2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const S xh = (x(t, c) - mu) * inv, dxh = dy(t, c) * g[c];
      if (dg) dg[c] += dy(t, c) * xh;
      if (db) db[c] += dy(t, c);
      m1 += dxh;
      m2 += dxh * xh;
    }
    m1 /= S(d);
    m2 /= S(d);
    for (Eigen::Index c = 0; c < d; ++c) {
      const S xh = (x(t, c) - mu) * inv;
      dx(t, c) += inv * (dy(t, c) * g[c] - m1 - xh * m2);
    }
  }
}

// ---- the inner loss gradient (reference `ln_fused_l2_bwd`) and its VJP ------------------------
//   per row:  xh = (z - mean) / s, s = sqrt(var + eps), gx = (gamma xh + beta - target) gamma
//             G  = (D gx - sum(gx) - xh sum(gx xh)) / (D s)
// i.e. G = d/dz 0.5 ||gamma LN(z) + beta - target||^2.

template <class Z, class T, class G>
void ln_l2_grad(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<T>& tg, const typename Z::Scalar* g,
                const typename Z::Scalar* b, const Eigen::MatrixBase<G>& G_, double eps = 1e-6) {
  using S = typename Z::Scalar;
  const Eigen::Index d = z.cols();
  const S D = S(d);
  auto& Gm = detail::out(G_, z.rows(), d);
  for (Eigen::Index t = 0; t < z.rows(); ++t) {
    const S mu = z.row(t).mean();
    const S var = (z.row(t).array() - mu).square().mean();
    const S s = std::sqrt(var + S(eps)), inv = S(1) / s;
    S s1 = 0, s2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const S xh = (z(t, c) - mu) * inv;
      const S gx = (g[c] * xh + b[c] - tg(t, c)) * g[c];
      Gm(t, c) = gx;
      s1 += gx;
      s2 += gx * xh;
    }
    for (Eigen::Index c = 0; c < d; ++c) {
      const S xh = (z(t, c) - mu) * inv;
      Gm(t, c) = (D * Gm(t, c) - s1 - xh * s2) / (D * s);
    }
  }
}

/// The VJP of ln_l2_grad: given dG, add to dZ, dT, dg, db (dZ, dT: (n, f); dg, db: (f)).
/// This is where the second derivative of the inner loss enters the outer gradient.
template <class Z, class T, class DG, class DZ, class DT>
void ln_l2_grad_bwd(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<T>& tg, const typename Z::Scalar* g,
                    const typename Z::Scalar* b, const Eigen::MatrixBase<DG>& dG, const Eigen::MatrixBase<DZ>& dZ_,
                    const Eigen::MatrixBase<DT>& dT_, typename Z::Scalar* dg, typename Z::Scalar* db,
                    double eps = 1e-6) {
  using S = typename Z::Scalar;
  auto& dZ = detail::inout(dZ_);
  auto& dT = detail::inout(dT_);
  const Eigen::Index d = z.cols();
  const S D = S(d);
  for (Eigen::Index t = 0; t < z.rows(); ++t) {
    const S mu = z.row(t).mean();
    const S var = (z.row(t).array() - mu).square().mean();
    const S s = std::sqrt(var + S(eps)), inv = S(1) / s;
    auto xh = [&](Eigen::Index c) { return (z(t, c) - mu) * inv; };
    auto gx = [&](Eigen::Index c) { return (g[c] * xh(c) + b[c] - tg(t, c)) * g[c]; };
    S s1 = 0, s2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const S v = gx(c);
      s1 += v;
      s2 += v * xh(c);
    }
    // G_c = (D gx_c - s1 - xh_c s2) / (D s); u = dG / (D s)
    const S Ds = D * s;
    S U = 0, ds2 = 0, ds = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const S u = dG(t, c) / Ds, x = xh(c);
      U += u;
      ds2 -= u * x;
      ds -= (D * gx(c) - s1 - x * s2) / Ds * dG(t, c) * inv;  // G is proportional to 1/s at fixed xh, gx
    }
    // dxh_c = -u_c s2 + ds2 gx_c + dgx_c g_c^2, dgx_c = D u_c - U + ds2 xh_c
    auto dgx = [&](Eigen::Index c) { return D * (dG(t, c) / Ds) - U + ds2 * xh(c); };
    auto dxh = [&](Eigen::Index c) { return -(dG(t, c) / Ds) * s2 + ds2 * gx(c) + dgx(c) * g[c] * g[c]; };
    S sum_dxh = 0, sum_xh = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const S x = xh(c), e = dgx(c), h = dxh(c);
      if (dg) dg[c] += e * (S(2) * g[c] * x + b[c] - tg(t, c));
      if (db) db[c] += e * g[c];
      dT(t, c) -= e * g[c];
      ds -= h * x * inv;  // xh = xc / s
      sum_dxh += h;
      sum_xh += x;
    }
    const S dvar = ds / (S(2) * s);
    // dxc = dxh / s + dvar 2 xh s / D (xc = xh s); dZ = dxc - mean(dxc)
    const S mean_dxc = (sum_dxh * inv + dvar * S(2) * s / D * sum_xh) / D;
    for (Eigen::Index c = 0; c < d; ++c) dZ(t, c) += dxh(c) * inv + dvar * S(2) * xh(c) * s / D - mean_dxc;
  }
}

// ---- activations ------------------------------------------------------------------------------

inline constexpr double kSqrt2OverPi = 0.79788456080286535588;

/// torch's gelu(approximate="tanh") and its derivative.
template <std::floating_point S>
S gelu(S x) {
  return S(0.5) * x * (S(1) + std::tanh(S(kSqrt2OverPi) * (x + S(0.044715) * x * x * x)));
}
template <std::floating_point S>
S gelu_grad(S x) {
  const S t = std::tanh(S(kSqrt2OverPi) * (x + S(0.044715) * x * x * x));
  return S(0.5) * (S(1) + t) + S(0.5) * x * (S(1) - t * t) * S(kSqrt2OverPi) * (S(1) + S(3.0 * 0.044715) * x * x);
}
/// The reference's `gelu_bwd` (Megatron's constants), which the inner MLP gradient uses, and its
/// own derivative (the outer gradient differentiates through it).
template <std::floating_point S>
S gelu_bwd_ref(S x) {
  const S t = std::tanh(S(0.79788456) * x * (S(1) + S(0.044715) * x * x));
  return S(0.5) * x * ((S(1) - t * t) * (S(0.79788456) + S(0.1070322243) * x * x)) + S(0.5) * (S(1) + t);
}
template <std::floating_point S>
S gelu_bwd_ref_grad(S x) {
  const S c1 = S(0.79788456), c2 = S(0.1070322243);
  const S t = std::tanh(c1 * x * (S(1) + S(0.044715) * x * x));
  const S dt = (S(1) - t * t) * (c1 + S(3) * c1 * S(0.044715) * x * x);
  const S p = c1 + c2 * x * x;
  return S(0.5) * (S(1) - t * t) * p - x * t * dt * p + x * (S(1) - t * t) * c2 * x + S(0.5) * dt;
}
/// Elementwise on a matrix: expressions (no temporary) on Eigen's array tanh, which is vectorised
/// for float (a scalar std::tanh per element would cost as much as the mini-batch's products).
template <class X>
auto gelu(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  return (S(0.5) * a * (S(1) + (S(kSqrt2OverPi) * (a + S(0.044715) * a.cube())).tanh())).matrix();
}
template <class X>
auto gelu_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  const auto t = (S(kSqrt2OverPi) * (a + S(0.044715) * a.cube())).tanh();
  return (S(0.5) * (S(1) + t) + S(0.5) * a * (S(1) - t.square()) * S(kSqrt2OverPi) * (S(1) + S(3.0 * 0.044715) * a.square()))
      .matrix();
}
template <class X>
auto gelu_bwd_ref(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  const auto t = (S(0.79788456) * a * (S(1) + S(0.044715) * a.square())).tanh();
  return (S(0.5) * a * ((S(1) - t.square()) * (S(0.79788456) + S(0.1070322243) * a.square())) + S(0.5) * (S(1) + t))
      .matrix();
}
template <class X>
auto gelu_bwd_ref_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const S c1 = S(0.79788456), c2 = S(0.1070322243);
  const auto a = x.array();
  const auto t = (c1 * a * (S(1) + S(0.044715) * a.square())).tanh();
  const auto dt = (S(1) - t.square()) * (c1 + S(3) * c1 * S(0.044715) * a.square());
  const auto p = c1 + c2 * a.square();
  return (S(0.5) * (S(1) - t.square()) * p - a * t * dt * p + a * (S(1) - t.square()) * c2 * a + S(0.5) * dt).matrix();
}
/// silu(x) = x sigmoid(x) and its derivative, as expressions (vectorised exp).
template <class X>
auto silu(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  return (x.array() / (S(1) + (-x.array()).exp())).matrix();
}
template <class X>
auto silu_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto s = (S(1) + (-x.array()).exp()).inverse();
  return (s * (S(1) + x.array() * (S(1) - s))).matrix();
}

template <std::floating_point S>
S sigmoid(S x) {
  return S(1) / (S(1) + std::exp(-x));
}

/// The SwiGLU activation by kind, and its derivative.
template <std::floating_point S>
S act(nn::Act a, S x) {
  switch (a) {
    case nn::Act::silu: return x * sigmoid(x);
    case nn::Act::gelu_tanh: return gelu(x);
    case nn::Act::gelu: return S(0.5) * x * (S(1) + std::erf(x * S(0.70710678118654752440)));
    case nn::Act::relu: return x > 0 ? x : S(0);
  }
  return S(0);
}
template <std::floating_point S>
S act_grad(nn::Act a, S x) {
  switch (a) {
    case nn::Act::silu: {
      const S s = sigmoid(x);
      return s * (S(1) + x * (S(1) - s));
    }
    case nn::Act::gelu_tanh: return gelu_grad(x);
    case nn::Act::gelu:
      return S(0.5) * (S(1) + std::erf(x * S(0.70710678118654752440))) +
             x * S(0.39894228040143267794) * std::exp(S(-0.5) * x * x);
    case nn::Act::relu: return x > 0 ? S(1) : S(0);
  }
  return S(0);
}

// ---- RoPE (interleaved pairs, the library's float tables as the reference computes them) -------

/// Rotate every head of X: (n, H*f) in place; row r at position pos(r) = r % mb. `inverse` rotates
/// back, which is the VJP (the rotation is orthogonal).
template <class X>
void rope(const Eigen::MatrixBase<X>& X_, int64_t f, const nn::RopeTable& tab, int64_t mb, bool inverse) {
  using S = typename X::Scalar;
  auto& Xm = detail::inout(X_);
  const int64_t heads = Xm.cols() / f, half = f / 2;
  const S sgn = inverse ? S(-1) : S(1);
  for (Eigen::Index r = 0; r < Xm.rows(); ++r) {
    const int64_t p = int64_t(r) % mb;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const S c = S(tab.cos(p, i)), s = sgn * S(tab.sin(p, i));
        S& a = Xm(r, h * f + 2 * i);
        S& b = Xm(r, h * f + 2 * i + 1);
        const S a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
  }
}

// ---- depthwise causal conv (zero history): y[t, c] = b[c] + sum_k W[c, k] x[t - K + 1 + k, c] --

template <class X, class W, class B, class Y>
void conv(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, const Eigen::MatrixBase<B>& b,
          const Eigen::MatrixBase<Y>& y_) {
  const Eigen::Index n = x.rows(), C = x.cols(), K = w.cols();
  auto& y = detail::out(y_, n, C);
  for (Eigen::Index t = 0; t < n; ++t) {
    y.row(t) = b;
    for (Eigen::Index k = 0; k < K; ++k) {
      const Eigen::Index src = t - (K - 1) + k;
      if (src >= 0) y.row(t).array() += x.row(src).array() * w.col(k).transpose().array();
    }
  }
}
template <class X, class W, class DY, class DX, class DW, class DB>
void conv_bwd(const Eigen::MatrixBase<X>& x, const Eigen::MatrixBase<W>& w, const Eigen::MatrixBase<DY>& dy,
              const Eigen::MatrixBase<DX>& dx_, const Eigen::MatrixBase<DW>& dW_, const Eigen::MatrixBase<DB>& db_) {
  auto& dx = detail::inout(dx_);
  auto& dW = detail::inout(dW_);
  auto& db = detail::inout(db_);
  const Eigen::Index n = x.rows(), K = w.cols();
  for (Eigen::Index t = 0; t < n; ++t) {
    db += dy.row(t);
    for (Eigen::Index k = 0; k < K; ++k) {
      const Eigen::Index src = t - (K - 1) + k;
      if (src < 0) continue;
      dW.col(k).array() += (dy.row(t).array() * x.row(src).array()).transpose();
      dx.row(src).array() += dy.row(t).array() * w.col(k).transpose().array();
    }
  }
}

}  // namespace ops
}  // namespace ttt::train
