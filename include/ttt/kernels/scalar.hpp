#pragma once
/// \file kernels/scalar.hpp
/// The specification every faster kernel is tested against (tests/kernels/test_kernels.cpp):
/// - element functions (`*_scalar`), TTT_HOST_DEVICE so a GPU kernel shares the same formulas;
/// - plain-loop kernels taking `backend::scalar`, the fallback for every backend tag.
/// The xsimd overloads of the loops live in kernels/simd.hpp.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../core/config.hpp"
#include "backend.hpp"

namespace ttt::kernels {

/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): torch's gelu(approximate="tanh").
TTT_HOST_DEVICE inline float gelu_tanh_scalar(float x) {
  constexpr float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
/// d gelu_tanh / dx with the constants of the reference's `gelu_bwd`.
TTT_HOST_DEVICE inline float gelu_tanh_grad_scalar(float x) {
  const float t = std::tanh(0.79788456f * x * (1.0f + 0.044715f * x * x));
  return 0.5f * x * ((1.0f - t * t) * (0.79788456f + 0.1070322243f * x * x)) + 0.5f * (1.0f + t);
}
/// d gelu_tanh / dx (torch's constants: the exact derivative of gelu_tanh_scalar), one tanh.
TTT_HOST_DEVICE inline float gelu_tanh_dx_scalar(float x) {
  constexpr float k = 0.7978845608028654f;
  const float t = std::tanh(k * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
}
/// d gelu_tanh_grad / dx (the derivative of the reference's `gelu_bwd`), one tanh.
TTT_HOST_DEVICE inline float gelu_tanh_grad_dx_scalar(float x) {
  constexpr float c1 = 0.79788456f, c2 = 0.1070322243f;
  const float t = std::tanh(c1 * x * (1.0f + 0.044715f * x * x)), s = 1.0f - t * t;
  const float dt = s * (c1 + 3.0f * c1 * 0.044715f * x * x), p = c1 + c2 * x * x;
  return 0.5f * s * p - x * t * dt * p + x * s * c2 * x + 0.5f * dt;
}
/// x sigmoid(x)
TTT_HOST_DEVICE inline float silu_scalar(float x) { return x / (1.0f + std::exp(-x)); }
/// 1 / (1 + exp(-x))
TTT_HOST_DEVICE inline float sigmoid_scalar(float x) { return 1.0f / (1.0f + std::exp(-x)); }

/// y[i] = gelu_tanh(x[i]); x == y (in place) is allowed.
inline void gelu_tanh(backend::scalar, const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = gelu_tanh_scalar(x[i]);
}
/// y[i] = gelu_tanh'(x[i])
inline void gelu_tanh_grad(backend::scalar, const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = gelu_tanh_grad_scalar(x[i]);
}
/// y[i] = gelu_tanh_dx(x[i]) (the backward of gelu_tanh)
inline void gelu_tanh_dx(backend::scalar, const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = gelu_tanh_dx_scalar(x[i]);
}
/// y[i] = gelu_tanh_grad_dx(x[i]) (the backward of gelu_tanh_grad)
inline void gelu_tanh_grad_dx(backend::scalar, const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = gelu_tanh_grad_dx_scalar(x[i]);
}
/// y[i] = gelu_tanh(x[i]), dy[i] = gelu_tanh_dx(x[i]) (the SIMD kernel shares one tanh between them)
inline void gelu_tanh_pair(backend::scalar, const float* x, float* y, float* dy, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = gelu_tanh_scalar(v), dy[i] = gelu_tanh_dx_scalar(v);
  }
}
/// y[i] = gelu_tanh_grad(x[i]), dy[i] = gelu_tanh_grad_dx(x[i])
inline void gelu_tanh_grad_pair(backend::scalar, const float* x, float* y, float* dy, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = gelu_tanh_grad_scalar(v), dy[i] = gelu_tanh_grad_dx_scalar(v);
  }
}
/// g[i] = silu(g[i]) * u[i]  (SwiGLU's inner product)
inline void silu_mul(backend::scalar, float* g, const float* u, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) g[i] = silu_scalar(g[i]) * u[i];
}

/// sg[i] = sigmoid(a[i]) (not written when sg is null), h[i] = a[i] sg[i] b[i]; h may be a or b
inline void silu_gate(backend::scalar, const float* a, const float* b, float* sg, float* h, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const float x = a[i], s = sigmoid_scalar(x), y = x * s * b[i];
    if (sg) sg[i] = s;
    h[i] = y;
  }
}

/// SwiGLU's reverse under silu, a = silu(g) u: with s = sigmoid(g[i]), dg[i] = da[i] s u[i] (1 + g[i] (1 - s))
/// and du[i] = da[i] s g[i] (g: the gate's pre-activation, da: a's cotangent); dg and du must not
/// alias the inputs. Any scalar (float: sigmoid_scalar's expression).
template <class T>
void silu_mul_bwd(backend::scalar, const T* g, const T* u, const T* da, T* dg, T* du, std::size_t n) {
  using std::exp;
  for (std::size_t i = 0; i < n; ++i) {
    const T x = g[i], s = T(1) / (T(1) + exp(-x)), ds = da[i] * s;
    dg[i] = ds * u[i] * (T(1) + x * (T(1) - s));
    du[i] = ds * x;
  }
}

/// x[i] = exp(a x[i] - b) over n values, returning their sum: a row of attention's probabilities
/// from its scores (blocks/attention.hpp; x[i] = -inf, a masked score, gives 0).
inline float exp_affine_sum(backend::scalar, float* x, std::size_t n, float a, float b) {
  float s = 0.0f;
  for (std::size_t i = 0; i < n; ++i) s += (x[i] = std::exp(a * x[i] - b));
  return s;
}

/// Y[b, j] = sum_i X[b, i] W[j, i] (or += with `accumulate`), b < n, j < m, i < k: a few rows
/// times the transpose of a torch Linear weight W (m, k), row-major; X and Y row-major with row
/// strides ldx and ldy. The few-rows product of batched decode (blocks/linear.hpp).
inline void rows_wt(backend::scalar, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                    std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  for (std::size_t b = 0; b < n; ++b)
    for (std::size_t j = 0; j < m; ++j) {
      float s = 0.0f;
      for (std::size_t i = 0; i < k; ++i) s += X[std::ptrdiff_t(b) * ldx + std::ptrdiff_t(i)] * W[j * k + i];
      float& y = Y[std::ptrdiff_t(b) * ldy + std::ptrdiff_t(j)];
      y = accumulate ? y + s : s;
    }
}

/// Y[b, j] = sum_i X[b, i] W[i, j] (or += with `accumulate`), b < n, j < m, i < k: a few rows of X
/// times a matrix W (k, m) read in place; W and Y row-major with row strides ldw and ldy, X[b, i]
/// at X[b ldx + i incx] (row-major: incx = 1; incx = the row stride and ldx = 1 for the transpose
/// of a row-major (k, n) matrix: Y = X^T W, a fast weight's gradient from a mini-batch's rows). The
/// inner learners' products of a mini-batch's rows with their fast weights (blocks::rows_times,
/// blocks::xt_times).
inline void rows_w(backend::scalar, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                   std::ptrdiff_t ldw, std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate = false,
                   std::ptrdiff_t incx = 1) {
  for (std::size_t b = 0; b < n; ++b)
    for (std::size_t j = 0; j < m; ++j) {
      float& y = Y[std::ptrdiff_t(b) * ldy + std::ptrdiff_t(j)];
      float s = accumulate ? y : 0.0f;
      for (std::size_t i = 0; i < k; ++i)
        s += X[std::ptrdiff_t(b) * ldx + std::ptrdiff_t(i) * incx] * W[std::ptrdiff_t(i) * ldw + std::ptrdiff_t(j)];
      y = s;
    }
}

/// g = d/dz 0.5 ||gamma LN(z) + beta - (a - b)||^2 for n rows of d values (blocks/ln_l2.hpp's
/// formula), row r of z at z + r ldz (likewise a, b, g); b may be null (target a); g must not
/// alias z. Plain loops, any scalar.
template <class T>
void ln_l2_grad_rows(backend::scalar, std::size_t n, std::size_t d, const T* z, std::ptrdiff_t ldz, const T* a,
                     std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb, const T* gamma, const T* beta, T* g,
                     std::ptrdiff_t ldg, double eps = 1e-6) {
  for (std::size_t r = 0; r < n; ++r, z += ldz, a += lda, g += ldg) {
    T mu = 0;
    for (std::size_t c = 0; c < d; ++c) mu += z[c];
    mu /= T(d);
    T var = 0;
    for (std::size_t c = 0; c < d; ++c) var += (z[c] - mu) * (z[c] - mu);
    using std::sqrt;  // or the scalar's own, by argument-dependent lookup
    const T stdv = sqrt(var / T(d) + T(eps));
    T s1 = 0, s2 = 0;
    for (std::size_t c = 0; c < d; ++c) {
      const T xhat = (z[c] - mu) / stdv, target = b ? a[c] - b[std::ptrdiff_t(r) * ldb + std::ptrdiff_t(c)] : a[c];
      const T gx = (gamma[c] * xhat + beta[c] - target) * gamma[c];
      g[c] = gx;
      s1 += gx;
      s2 += gx * xhat;
    }
    const T scale = T(1) / (T(d) * stdv);
    for (std::size_t c = 0; c < d; ++c) g[c] = (T(d) * g[c] - s1 - (z[c] - mu) / stdv * s2) * scale;
  }
}

/// LayerNorm's reverse (blocks/layer_norm.hpp's formula) for n rows of d values, row r of x at
/// x + r ldx (likewise dy, dx): with xh = (x - mean) inv, inv = 1 / sqrt(var + eps), dxh = dy gamma,
///   dx += inv (dxh - mean(dxh) - xh mean(dxh xh)),  dgamma += dy xh,  dbeta += dy
/// (dgamma, dbeta may be null; dx must not alias x or dy). Plain loops, any scalar.
template <class T>
void layer_norm_bwd_rows(backend::scalar, std::size_t n, std::size_t d, const T* x, std::ptrdiff_t ldx, const T* dy,
                         std::ptrdiff_t ldy, const T* gamma, double eps, T* dx, std::ptrdiff_t lddx, T* dgamma,
                         T* dbeta) {
  for (std::size_t r = 0; r < n; ++r, x += ldx, dy += ldy, dx += lddx) {
    T mu = 0;
    for (std::size_t c = 0; c < d; ++c) mu += x[c];
    mu /= T(d);
    T var = 0;
    for (std::size_t c = 0; c < d; ++c) var += (x[c] - mu) * (x[c] - mu);
    using std::sqrt;
    const T inv = T(1) / sqrt(var / T(d) + T(eps));
    T m1 = 0, m2 = 0;
    for (std::size_t c = 0; c < d; ++c) {
      const T g = dy[c] * gamma[c];
      m1 += g;
      m2 += g * ((x[c] - mu) * inv);
    }
    m1 /= T(d), m2 /= T(d);
    for (std::size_t c = 0; c < d; ++c) {
      const T xh = (x[c] - mu) * inv;
      dx[c] += inv * (dy[c] * gamma[c] - m1 - xh * m2);
      if (dgamma) dgamma[c] += dy[c] * xh;
      if (dbeta) dbeta[c] += dy[c];
    }
  }
}

/// RMSNorm's reverse (blocks/rms_norm.hpp's formula) for n rows of d values: with
/// r = 1 / sqrt(mean(x^2) + eps) and q = r^3 <dy o w, x> / d,
///   dx += r dy w - q x,  dw += r dy x
/// (row strides ldx, ldy, lddx; dx must not alias x or dy). Plain loops, any scalar.
template <class T>
void rms_norm_bwd_rows(backend::scalar, std::size_t n, std::size_t d, const T* x, std::ptrdiff_t ldx, const T* dy,
                       std::ptrdiff_t ldy, const T* w, double eps, T* dx, std::ptrdiff_t lddx, T* dw) {
  for (std::size_t t = 0; t < n; ++t, x += ldx, dy += ldy, dx += lddx) {
    T ss = 0, dot = 0;
    for (std::size_t c = 0; c < d; ++c) ss += x[c] * x[c], dot += dy[c] * w[c] * x[c];
    using std::sqrt;
    const T r = T(1) / sqrt(ss / T(d) + T(eps)), q = r * (r * dot * r) / T(d);
    for (std::size_t c = 0; c < d; ++c) {
      dw[c] += dy[c] * x[c] * r;
      dx[c] += r * (dy[c] * w[c]) - x[c] * q;
    }
  }
}

/// The dual forms' causal scores: A[t, j] = eta[t] lr[j] (Q[t] . K[j] + bias) for j <= t < n
/// (rows of k values; Q, K, A row-major with row strides ldq, ldk, lda). A's entries above the
/// diagonal are neither read nor written by causal_scores / causal_apply.
template <class T>
void causal_scores(backend::scalar, std::size_t n, std::size_t k, const T* Q, std::ptrdiff_t ldq, const T* K,
                   std::ptrdiff_t ldk, const T* eta, const T* lr, T bias, T* A, std::ptrdiff_t lda) {
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t j = 0; j <= t; ++j) {
      T dot = 0;
      for (std::size_t i = 0; i < k; ++i)
        dot += Q[std::ptrdiff_t(t) * ldq + std::ptrdiff_t(i)] * K[std::ptrdiff_t(j) * ldk + std::ptrdiff_t(i)];
      A[std::ptrdiff_t(t) * lda + std::ptrdiff_t(j)] = eta[t] * lr[j] * (dot + bias);
    }
}

/// Y[t] -= sum_{j <= t} A[t, j] G[j] for t < n (rows of m values): the causal scores' product,
/// the masked half skipped.
template <class T>
void causal_apply(backend::scalar, std::size_t n, std::size_t m, const T* A, std::ptrdiff_t lda, const T* G,
                  std::ptrdiff_t ldg, T* Y, std::ptrdiff_t ldy) {
  for (std::size_t t = 0; t < n; ++t)
    for (std::size_t c = 0; c < m; ++c) {
      T v = Y[std::ptrdiff_t(t) * ldy + std::ptrdiff_t(c)];
      for (std::size_t j = 0; j <= t; ++j)
        v -= A[std::ptrdiff_t(t) * lda + std::ptrdiff_t(j)] * G[std::ptrdiff_t(j) * ldg + std::ptrdiff_t(c)];
      Y[std::ptrdiff_t(t) * ldy + std::ptrdiff_t(c)] = v;
    }
}

}  // namespace ttt::kernels
