#pragma once
/// \file kernels/simd.hpp
/// xsimd overloads (`backend::simd`) of the element-wise kernels of the hot paths (TTT-MLP's GELU,
/// SwiGLU); the remainder past the last full batch uses the scalar element functions. A kernel
/// missing here falls back to its kernels/scalar.hpp loop through the backend tag chain. Each one
/// is tested against its scalar twin in tests/kernels/test_kernels.cpp.
#include <xsimd/xsimd.hpp>

#include "scalar.hpp"

namespace ttt::kernels {

namespace detail {
using fbatch = xsimd::batch<float>;
template <class Op, class Tail>
inline void simd_map(const float* x, float* y, std::size_t n, Op op, Tail tail) {
  constexpr std::size_t W = fbatch::size;
  std::size_t i = 0;
  for (; i + W <= n; i += W) op(fbatch::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = tail(x[i]);
}
}  // namespace detail

inline void gelu_tanh(backend::simd, const float* x, float* y, std::size_t n) {
  using B = detail::fbatch;
  detail::simd_map(
      x, y, n,
      [](B v) {
        const B k(0.7978845608028654f), c(0.044715f), half(0.5f), one(1.0f);
        return half * v * (one + xsimd::tanh(k * (v + c * v * v * v)));
      },
      gelu_tanh_scalar);
}

inline void gelu_tanh_grad(backend::simd, const float* x, float* y, std::size_t n) {
  using B = detail::fbatch;
  detail::simd_map(
      x, y, n,
      [](B v) {
        const B k(0.79788456f), c(0.044715f), c2(0.1070322243f), half(0.5f), one(1.0f);
        const B t = xsimd::tanh(k * v * (one + c * v * v));
        return half * v * ((one - t * t) * (k + c2 * v * v)) + half * (one + t);
      },
      gelu_tanh_grad_scalar);
}

inline void silu_mul(backend::simd, float* g, const float* u, std::size_t n) {
  using B = detail::fbatch;
  constexpr std::size_t W = B::size;
  std::size_t i = 0;
  const B one(1.0f);
  for (; i + W <= n; i += W) {
    const B v = B::load_unaligned(g + i);
    (v / (one + xsimd::exp(-v)) * B::load_unaligned(u + i)).store_unaligned(g + i);
  }
  for (; i < n; ++i) g[i] = silu_scalar(g[i]) * u[i];
}

}  // namespace ttt::kernels
