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
/// g[i] = silu(g[i]) * u[i]  (SwiGLU's inner product)
inline void silu_mul(backend::scalar, float* g, const float* u, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) g[i] = silu_scalar(g[i]) * u[i];
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

}  // namespace ttt::kernels
