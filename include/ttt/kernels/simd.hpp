#pragma once
/// \file kernels/simd.hpp
/// xsimd overloads (`backend::simd`) of the element-wise kernels of the hot paths (TTT-MLP's GELU,
/// SwiGLU); the remainder past the last full batch uses the scalar element functions. A kernel
/// missing here falls back to its kernels/scalar.hpp loop through the backend tag chain. Each one
/// is tested against its scalar twin in tests/kernels/test_kernels.cpp.
#include <algorithm>
#include <cstddef>

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

inline void gelu_tanh_dx(backend::simd, const float* x, float* y, std::size_t n) {
  using B = detail::fbatch;
  detail::simd_map(
      x, y, n,
      [](B v) {
        const B k(0.7978845608028654f), c(0.044715f), c3(3.0f * 0.044715f), half(0.5f), one(1.0f);
        const B t = xsimd::tanh(k * (v + c * v * v * v));
        return half * (one + t) + half * v * (one - t * t) * k * (one + c3 * v * v);
      },
      gelu_tanh_dx_scalar);
}

inline void gelu_tanh_grad_dx(backend::simd, const float* x, float* y, std::size_t n) {
  using B = detail::fbatch;
  detail::simd_map(
      x, y, n,
      [](B v) {
        const B c1(0.79788456f), c2(0.1070322243f), c(0.044715f), c13(3.0f * 0.79788456f * 0.044715f), half(0.5f),
            one(1.0f);
        const B t = xsimd::tanh(c1 * v * (one + c * v * v)), s = one - t * t;
        const B dt = s * (c1 + c13 * v * v), p = c1 + c2 * v * v;
        return half * s * p - v * t * dt * p + v * s * c2 * v + half * dt;
      },
      gelu_tanh_grad_dx_scalar);
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

namespace detail {
/// How far ahead in W rows_wt_tile prefetches (256 floats, 1 KB): without it one core of the
/// 2-core AMD EPYC (AVX2) multiplied 8 rows by a cold W at 26-34 GFLOP/s, with it 36-40 (128
/// floats: no gain; 512: about the same as 256; benchmarks/README.md, "Batched decode").
inline constexpr std::size_t kRowsPrefetch = 256;

/// rows_wt for rows b0 .. b0+NB-1 and weight row j: NB accumulators over one pass of W's row,
/// prefetching kRowsPrefetch floats ahead while inside W (`ahead`: the floats of W from w on).
template <std::size_t NB>
inline void rows_wt_tile(const float* X, std::ptrdiff_t ldx, std::size_t k, const float* w, std::size_t ahead,
                         float* y, std::ptrdiff_t ldy, bool accumulate) {
  constexpr std::size_t W = fbatch::size;
  fbatch a[NB];
  for (std::size_t r = 0; r < NB; ++r) a[r] = fbatch(0.0f);
  std::size_t i = 0;
  for (; i + W <= k; i += W) {
#if defined(__GNUC__)
    if (i % 16 == 0 && i + kRowsPrefetch < ahead) __builtin_prefetch(w + i + kRowsPrefetch);  // one line per 16
#endif
    const fbatch wv = fbatch::load_unaligned(w + i);
    for (std::size_t r = 0; r < NB; ++r) a[r] = xsimd::fma(fbatch::load_unaligned(X + std::ptrdiff_t(r) * ldx + std::ptrdiff_t(i)), wv, a[r]);
  }
  for (std::size_t r = 0; r < NB; ++r) {
    float s = xsimd::hadd(a[r]);
    for (std::size_t t = i; t < k; ++t) s += X[std::ptrdiff_t(r) * ldx + std::ptrdiff_t(t)] * w[t];
    float& out = y[std::ptrdiff_t(r) * ldy];
    out = accumulate ? out + s : s;
  }
}

/// One row x against weight rows w .. w + (NW-1) k: NW accumulators (independent FMA chains), each
/// weight row's sum in the order rows_wt_tile gives it (so a row's result does not depend on n).
template <std::size_t NW>
inline void row_wt_tile(const float* x, std::size_t k, const float* w, float* y, bool accumulate) {
  constexpr std::size_t W = fbatch::size;
  fbatch a[NW];
  for (std::size_t q = 0; q < NW; ++q) a[q] = fbatch(0.0f);
  std::size_t i = 0;
  for (; i + W <= k; i += W) {
    const fbatch xv = fbatch::load_unaligned(x + i);
    for (std::size_t q = 0; q < NW; ++q) a[q] = xsimd::fma(xv, fbatch::load_unaligned(w + q * k + i), a[q]);
  }
  for (std::size_t q = 0; q < NW; ++q) {
    float s = xsimd::hadd(a[q]);
    for (std::size_t t = i; t < k; ++t) s += x[t] * w[q * k + t];
    y[q] = accumulate ? y[q] + s : s;
  }
}
}  // namespace detail

/// rows_wt (kernels/scalar.hpp) reading W once: for each weight row, every row of X (kept in the
/// caches) in tiles of up to 8 accumulators; one row of X (decode) takes 4 weight rows at a time.
/// OpenMP over the weight rows when there is enough work.
inline void rows_wt(backend::simd, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                    std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  const std::ptrdiff_t M = std::ptrdiff_t(m);
  if (n == 1) {
    constexpr std::ptrdiff_t kNW = 4;
    const std::ptrdiff_t blocks = (M + kNW - 1) / kNW;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (m * k >= (std::size_t(1) << 17))
#endif
    for (std::ptrdiff_t b = 0; b < blocks; ++b) {
      const std::ptrdiff_t j = b * kNW;
      const float* w = W + std::size_t(j) * k;
      if (j + kNW <= M) {
        detail::row_wt_tile<kNW>(X, k, w, Y + j, accumulate);
      } else {
        for (std::ptrdiff_t q = j; q < M; ++q) detail::row_wt_tile<1>(X, k, W + std::size_t(q) * k, Y + q, accumulate);
      }
    }
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (m * k * n >= (std::size_t(1) << 17))
#endif
  for (std::ptrdiff_t j = 0; j < M; ++j) {
    const float* w = W + std::size_t(j) * k;
    const std::size_t ahead = (m - std::size_t(j)) * k;
    for (std::size_t b0 = 0; b0 < n; b0 += 8) {
      const float* x = X + std::ptrdiff_t(b0) * ldx;
      float* y = Y + std::ptrdiff_t(b0) * ldy + j;
      switch (std::min<std::size_t>(8, n - b0)) {
        case 8: detail::rows_wt_tile<8>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 7: detail::rows_wt_tile<7>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 6: detail::rows_wt_tile<6>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 5: detail::rows_wt_tile<5>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 4: detail::rows_wt_tile<4>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 3: detail::rows_wt_tile<3>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        case 2: detail::rows_wt_tile<2>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
        default: detail::rows_wt_tile<1>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
      }
    }
  }
}

}  // namespace ttt::kernels
