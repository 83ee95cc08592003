#pragma once
/// \file train/ops.hpp
/// Double-precision building blocks of the training backward pass, each with its vector-Jacobian
/// product (VJP): RMSNorm, LayerNorm, the LayerNorm-fused L2 gradient of the inner loss (whose VJP
/// is the second derivative of the inner loss), gelu (tanh) and the reference's `gelu_bwd`,
/// interleaved RoPE, depthwise causal conv and the SwiGLU activations. Conventions: forward
/// functions write their output; `*_bwd` functions ADD into their gradient outputs (callers zero
/// them), so several paths into one tensor simply accumulate.
#include <cmath>
#include <cstdint>
#include <vector>

#include "../nn.hpp"
#include "../tensor.hpp"

namespace ttt::train {

using MatD = ttt::MatD;                             ///< row-major double matrix
using RowD = Eigen::Matrix<double, 1, Eigen::Dynamic>;  ///< double row vector

namespace ops {

// ---- RMSNorm: y = w * x / sqrt(mean(x^2) + eps), row by row --------------------------------

inline void rms(const MatD& x, const RowD& w, double eps, MatD& y) {
  y.resize(x.rows(), x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double r = 1.0 / std::sqrt(x.row(t).squaredNorm() / double(x.cols()) + eps);
    y.row(t) = (x.row(t) * r).cwiseProduct(w);
  }
}
/// dx += d/dx, dw += d/dw of <dy, rms(x, w)>.
inline void rms_bwd(const MatD& x, const RowD& w, double eps, const MatD& dy, MatD& dx, RowD& dw) {
  const double D = double(x.cols());
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double r = 1.0 / std::sqrt(x.row(t).squaredNorm() / D + eps);
    const RowD xh = x.row(t) * r;
    dw += dy.row(t).cwiseProduct(xh);
    const RowD g = dy.row(t).cwiseProduct(w);
    const double dot = g.dot(xh);
    dx.row(t) += r * (g - xh * (dot / D));
  }
}

// ---- LayerNorm: y = gamma * (x - mean) / sqrt(var + eps) + beta (biased variance) -------------

inline void ln(const MatD& x, const double* g, const double* b, double eps, MatD& y) {
  const Eigen::Index d = x.cols();
  y.resize(x.rows(), d);
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double mu = x.row(t).mean();
    const double var = (x.row(t).array() - mu).square().mean();
    const double inv = 1.0 / std::sqrt(var + eps);
    for (Eigen::Index c = 0; c < d; ++c) y(t, c) = g[c] * (x(t, c) - mu) * inv + b[c];
  }
}
/// dx += ..., dg += ..., db += ... of <dy, ln(x, g, b)>. dg/db may be null.
inline void ln_bwd(const MatD& x, const double* g, double eps, const MatD& dy, MatD& dx, double* dg, double* db) {
  const Eigen::Index d = x.cols();
  std::vector<double> xh(static_cast<size_t>(d)), dxh(static_cast<size_t>(d));
  for (Eigen::Index t = 0; t < x.rows(); ++t) {
    const double mu = x.row(t).mean();
    const double var = (x.row(t).array() - mu).square().mean();
    const double inv = 1.0 / std::sqrt(var + eps);
    double m1 = 0, m2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const size_t k = size_t(c);
      xh[k] = (x(t, c) - mu) * inv;
      dxh[k] = dy(t, c) * g[c];
      if (dg) dg[c] += dy(t, c) * xh[k];
      if (db) db[c] += dy(t, c);
      m1 += dxh[k];
      m2 += dxh[k] * xh[k];
    }
    m1 /= double(d);
    m2 /= double(d);
    for (Eigen::Index c = 0; c < d; ++c) dx(t, c) += inv * (dxh[size_t(c)] - m1 - xh[size_t(c)] * m2);
  }
}

// ---- the inner loss gradient (reference `ln_fused_l2_bwd`) and its VJP ------------------------
//   per row:  xh = (z - mean) / s, s = sqrt(var + eps), gx = (gamma xh + beta - target) gamma
//             G  = (D gx - sum(gx) - xh sum(gx xh)) / (D s)
// i.e. G = d/dz 0.5 ||gamma LN(z) + beta - target||^2.

inline void ln_l2_grad(const MatD& Z, const MatD& T, const double* g, const double* b, MatD& G, double eps = 1e-6) {
  const Eigen::Index d = Z.cols();
  const double D = double(d);
  G.resize(Z.rows(), d);
  std::vector<double> xh(static_cast<size_t>(d));
  for (Eigen::Index t = 0; t < Z.rows(); ++t) {
    const double mu = Z.row(t).mean();
    const double var = (Z.row(t).array() - mu).square().mean();
    const double s = std::sqrt(var + eps);
    double s1 = 0, s2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      xh[size_t(c)] = (Z(t, c) - mu) / s;
      const double gx = (g[c] * xh[size_t(c)] + b[c] - T(t, c)) * g[c];
      G(t, c) = gx;
      s1 += gx;
      s2 += gx * xh[size_t(c)];
    }
    for (Eigen::Index c = 0; c < d; ++c) G(t, c) = (D * G(t, c) - s1 - xh[size_t(c)] * s2) / (D * s);
  }
}

/// The VJP of ln_l2_grad: given dG, add to dZ, dT, dg, db (dZ, dT: (n, f); dg, db: (f)).
/// This is where the second derivative of the inner loss enters the outer gradient.
inline void ln_l2_grad_bwd(const MatD& Z, const MatD& T, const double* g, const double* b, const MatD& dG, MatD& dZ,
                           MatD& dT, double* dg, double* db, double eps = 1e-6) {
  const Eigen::Index d = Z.cols();
  const double D = double(d);
  std::vector<double> xh(static_cast<size_t>(d)), gx(static_cast<size_t>(d)), u(static_cast<size_t>(d)),
      dxh(static_cast<size_t>(d)), dxc(static_cast<size_t>(d));
  for (Eigen::Index t = 0; t < Z.rows(); ++t) {
    const double mu = Z.row(t).mean();
    const double var = (Z.row(t).array() - mu).square().mean();
    const double s = std::sqrt(var + eps);
    double s1 = 0, s2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const size_t k = size_t(c);
      xh[k] = (Z(t, c) - mu) / s;
      gx[k] = (g[c] * xh[k] + b[c] - T(t, c)) * g[c];
      s1 += gx[k];
      s2 += gx[k] * xh[k];
    }
    // G_c = (D gx_c - s1 - xh_c s2) / (D s); u = dG / (D s)
    double U = 0, ds2 = 0, ds_direct = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const size_t k = size_t(c);
      u[k] = dG(t, c) / (D * s);
      U += u[k];
      ds2 -= u[k] * xh[k];
      const double Gc = (D * gx[k] - s1 - xh[k] * s2) / (D * s);
      ds_direct -= Gc * dG(t, c) / s;  // G is proportional to 1/s at fixed xh, gx
    }
    double ds = ds_direct;
    for (Eigen::Index c = 0; c < d; ++c) {
      const size_t k = size_t(c);
      const double dgx = D * u[k] - U + ds2 * xh[k];
      dxh[k] = -u[k] * s2 + ds2 * gx[k] + dgx * g[c] * g[c];
      if (dg) dg[c] += dgx * (2.0 * g[c] * xh[k] + b[c] - T(t, c));
      if (db) db[c] += dgx * g[c];
      dT(t, c) -= dgx * g[c];
      ds -= dxh[k] * xh[k] / s;  // xh = xc / s
    }
    const double dvar = ds / (2.0 * s);
    double mean_dxc = 0;
    for (Eigen::Index c = 0; c < d; ++c) {
      const size_t k = size_t(c);
      dxc[k] = dxh[k] / s + dvar * 2.0 * xh[k] * s / D;  // xc = xh * s
      mean_dxc += dxc[k];
    }
    mean_dxc /= D;
    for (Eigen::Index c = 0; c < d; ++c) dZ(t, c) += dxc[size_t(c)] - mean_dxc;
  }
}

// ---- activations ------------------------------------------------------------------------------

inline constexpr double kSqrt2OverPi = 0.79788456080286535588;

/// torch's gelu(approximate="tanh") and its derivative.
inline double gelu(double x) { return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x))); }
inline double gelu_grad(double x) {
  const double t = std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * 0.044715 * x * x);
}
/// The reference's `gelu_bwd` (Megatron's constants), which the inner MLP gradient uses, and its
/// own derivative (the outer gradient differentiates through it).
inline double gelu_bwd_ref(double x) {
  const double t = std::tanh(0.79788456 * x * (1.0 + 0.044715 * x * x));
  return 0.5 * x * ((1.0 - t * t) * (0.79788456 + 0.1070322243 * x * x)) + 0.5 * (1.0 + t);
}
inline double gelu_bwd_ref_grad(double x) {
  const double c1 = 0.79788456, c2 = 0.1070322243;
  const double t = std::tanh(c1 * x * (1.0 + 0.044715 * x * x));
  const double dt = (1.0 - t * t) * (c1 + 3.0 * c1 * 0.044715 * x * x);
  const double p = c1 + c2 * x * x;
  return 0.5 * (1.0 - t * t) * p - x * t * dt * p + x * (1.0 - t * t) * c2 * x + 0.5 * dt;
}
inline MatD gelu(const MatD& x) { return x.unaryExpr([](double v) { return gelu(v); }); }
inline MatD gelu_grad(const MatD& x) { return x.unaryExpr([](double v) { return gelu_grad(v); }); }

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// The SwiGLU activation by kind, and its derivative.
inline double act(nn::Act a, double x) {
  switch (a) {
    case nn::Act::silu: return x * sigmoid(x);
    case nn::Act::gelu_tanh: return gelu(x);
    case nn::Act::gelu: return 0.5 * x * (1.0 + std::erf(x * 0.70710678118654752440));
    case nn::Act::relu: return x > 0 ? x : 0.0;
  }
  return 0.0;
}
inline double act_grad(nn::Act a, double x) {
  switch (a) {
    case nn::Act::silu: {
      const double s = sigmoid(x);
      return s * (1.0 + x * (1.0 - s));
    }
    case nn::Act::gelu_tanh: return gelu_grad(x);
    case nn::Act::gelu:
      return 0.5 * (1.0 + std::erf(x * 0.70710678118654752440)) + x * 0.39894228040143267794 * std::exp(-0.5 * x * x);
    case nn::Act::relu: return x > 0 ? 1.0 : 0.0;
  }
  return 0.0;
}

// ---- RoPE (interleaved pairs, the library's float tables as the reference computes them) -------

/// Rotate every head of X: (n, H*f) in place; row r at position pos(r) = r % mb. `inverse` rotates
/// back, which is the VJP (the rotation is orthogonal).
inline void rope(MatD& X, int64_t f, const nn::RopeTable& tab, int64_t mb, bool inverse) {
  const int64_t heads = X.cols() / f, half = f / 2;
  const double sgn = inverse ? -1.0 : 1.0;
  for (Eigen::Index r = 0; r < X.rows(); ++r) {
    const int64_t p = int64_t(r) % mb;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const double c = double(tab.cos(p, i)), s = sgn * double(tab.sin(p, i));
        double& a = X(r, h * f + 2 * i);
        double& b = X(r, h * f + 2 * i + 1);
        const double a0 = a, b0 = b;
        a = a0 * c - b0 * s;
        b = b0 * c + a0 * s;
      }
  }
}

// ---- depthwise causal conv (zero history): y[t, c] = b[c] + sum_k W[c, k] x[t - K + 1 + k, c] --

inline void conv(const MatD& x, const MatD& W, const RowD& b, MatD& y) {
  const Eigen::Index n = x.rows(), C = x.cols(), K = W.cols();
  y.resize(n, C);
  for (Eigen::Index t = 0; t < n; ++t) {
    y.row(t) = b;
    for (Eigen::Index k = 0; k < K; ++k) {
      const Eigen::Index src = t - (K - 1) + k;
      if (src >= 0) y.row(t).array() += x.row(src).array() * W.col(k).transpose().array();
    }
  }
}
inline void conv_bwd(const MatD& x, const MatD& W, const MatD& dy, MatD& dx, MatD& dW, RowD& db) {
  const Eigen::Index n = x.rows(), K = W.cols();
  for (Eigen::Index t = 0; t < n; ++t) {
    db += dy.row(t);
    for (Eigen::Index k = 0; k < K; ++k) {
      const Eigen::Index src = t - (K - 1) + k;
      if (src < 0) continue;
      dW.col(k).array() += (dy.row(t).array() * x.row(src).array()).transpose();
      dx.row(src).array() += dy.row(t).array() * W.col(k).transpose().array();
    }
  }
}

}  // namespace ops
}  // namespace ttt::train
