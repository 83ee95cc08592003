#pragma once
/// \file kernels/simd.hpp
/// xsimd overloads (`backend::simd`) of the kernels of the hot paths: the element-wise ones
/// (TTT-MLP's GELU, SwiGLU), the few-rows products (rows_wt, rows_w), and the dual forms' row
/// kernels (the LN-L2 gradient, the causal scores and their product); the remainder past the last
/// full batch uses the scalar element functions or the twin. A kernel missing here falls back to
/// its kernels/scalar.hpp loop through the backend tag chain. Each one is tested against its
/// scalar twin in tests/kernels/test_kernels.cpp (the dual forms' in test_dual_kernels.cpp).
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
/// Keeps `v` in a register. In rows_wt_tile GCC otherwise folds the load of an X row into each of
/// the NW FMAs that use it: NW loads of the same X values per step instead of one, and the loads,
/// not the FMAs, set the pace (one core of the AMD EPYC (Zen 5), a small program: 8 rows by
/// 3-row tiles of a W in L2 at 160-190 GFLOP/s with the folded loads, 205-220 without;
/// benchmarks/README.md, "Batched decode").
inline void in_register([[maybe_unused]] fbatch& v) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+v"(v.data));
#endif
}

/// rows_wt for rows b0 .. b0+NB-1 and weight rows j .. j+NW-1: NW x NB accumulators over one
/// pass of the NW weight rows. The tile's weight rows and the next tile's are contiguous: while
/// this tile runs, each of its steps prefetches lines of the next one, the whole of it by the
/// tile's end (`ahead`: the floats of W from w on; 0: no prefetch). That lead of one tile (not of
/// a fixed distance inside each row) keeps DRAM busy while the FMAs run: with in_register, 8 rows
/// by a cold W at 26 GB/s instead of 16 on one core of the Zen 5 (`F32RowsCold` in bench_bf16;
/// benchmarks/README.md, "Batched decode"). Each sum runs in the same order whatever NW and NB, so
/// a row's result depends neither on the tile nor on how many rows come with it.
template <std::size_t NW, std::size_t NB>
inline void rows_wt_tile(const float* X, std::ptrdiff_t ldx, std::size_t k, const float* w, std::size_t ahead,
                         float* y, std::ptrdiff_t ldy, bool accumulate) {
  constexpr std::size_t W = fbatch::size, kLine = 64 / sizeof(float);
  fbatch a[NW][NB];
  for (std::size_t q = 0; q < NW; ++q)
    for (std::size_t r = 0; r < NB; ++r) a[q][r] = fbatch(0.0f);
  [[maybe_unused]] const float* next = w + NW * k;
  std::size_t i = 0;
  for (; i + W <= k; i += W) {
#if defined(__GNUC__)
    if (i % kLine == 0)  // NW lines of the next tile per kLine floats of a row: all NW k floats of it
      for (std::size_t q = 0; q < NW; ++q) {
        const std::size_t off = (i / kLine * NW + q) * kLine;
        if (NW * k + off < ahead) __builtin_prefetch(next + off);
      }
#endif
    fbatch wv[NW];
    for (std::size_t q = 0; q < NW; ++q) wv[q] = fbatch::load_unaligned(w + q * k + i);
    for (std::size_t r = 0; r < NB; ++r) {
      fbatch xv = fbatch::load_unaligned(X + std::ptrdiff_t(r) * ldx + std::ptrdiff_t(i));
      in_register(xv);
      for (std::size_t q = 0; q < NW; ++q) a[q][r] = xsimd::fma(xv, wv[q], a[q][r]);
    }
  }
  for (std::size_t q = 0; q < NW; ++q)
    for (std::size_t r = 0; r < NB; ++r) {
      float s = xsimd::hadd(a[q][r]);
      for (std::size_t t = i; t < k; ++t) s += X[std::ptrdiff_t(r) * ldx + std::ptrdiff_t(t)] * w[q * k + t];
      float& out = y[std::ptrdiff_t(r) * ldy + std::ptrdiff_t(q)];
      out = accumulate ? out + s : s;
    }
}

/// rows_wt_tile for nb (1..8) rows of X and NW weight rows from w.
template <std::size_t NW>
inline void rows_wt_rows(std::size_t nb, const float* x, std::ptrdiff_t ldx, std::size_t k, const float* w,
                         std::size_t ahead, float* y, std::ptrdiff_t ldy, bool accumulate) {
  switch (nb) {
    case 8: rows_wt_tile<NW, 8>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 7: rows_wt_tile<NW, 7>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 6: rows_wt_tile<NW, 6>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 5: rows_wt_tile<NW, 5>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 4: rows_wt_tile<NW, 4>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 3: rows_wt_tile<NW, 3>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 2: rows_wt_tile<NW, 2>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    default: rows_wt_tile<NW, 1>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
  }
}

/// rows_wt for n >= 2 rows: tiles of NW weight rows (the last m % NW rows one at a time) by up to 8
/// rows of X, the blocks of weight rows split over the OpenMP threads when there is enough work.
/// Every NW gives the same sums bit for bit (tests/kernels/test_kernels.cpp).
template <std::size_t NW>
inline void rows_wt_blocks(const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                           std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  const std::ptrdiff_t blocks = std::ptrdiff_t((m + NW - 1) / NW);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (m * k * n >= (std::size_t(1) << 17))
#endif
  for (std::ptrdiff_t b = 0; b < blocks; ++b) {
    const std::size_t j0 = std::size_t(b) * NW, j1 = std::min(m, j0 + NW);
    for (std::size_t b0 = 0; b0 < n; b0 += 8) {
      const float* x = X + std::ptrdiff_t(b0) * ldx;
      float* y = Y + std::ptrdiff_t(b0) * ldy;
      const std::size_t nb = std::min<std::size_t>(8, n - b0);
      const bool first = b0 == 0;  // the later passes find the next tile already fetched
      if (j1 - j0 == NW) {
        rows_wt_rows<NW>(nb, x, ldx, k, W + j0 * k, first ? (m - j0) * k : 0, y + std::ptrdiff_t(j0), ldy, accumulate);
      } else {
        for (std::size_t j = j0; j < j1; ++j)
          rows_wt_rows<1>(nb, x, ldx, k, W + j * k, first ? (m - j) * k : 0, y + std::ptrdiff_t(j), ldy, accumulate);
      }
    }
  }
}

/// Weight rows per tile of rows_wt at n >= 2: 3 with 512-bit batches (AVX-512's 32 registers hold
/// the 3 x 8 accumulators; one core of the 2-core AMD EPYC (Zen 5) multiplied 8 rows by a cold W
/// 1.2-1.3x faster than with 1: benchmarks/README.md, "Batched decode"), else 1 (with 16 registers
/// the tiles spill).
inline constexpr std::size_t kRowsTileW = fbatch::size >= 16 ? 3 : 1;

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

/// rows_wt (kernels/scalar.hpp) reading W once: for each tile of kRowsTileW weight rows, every row
/// of X (kept in the caches) in tiles of up to 8 rows; one row of X (decode) takes 4 weight rows at
/// a time. OpenMP over the weight rows when there is enough work.
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
  detail::rows_wt_blocks<detail::kRowsTileW>(X, ldx, n, k, W, m, Y, ldy, accumulate);
}

namespace detail {
/// rows_w for R rows of X and V batches of columns: R x V accumulators (Y's values with
/// `accumulate`, else 0); per step i, V loads of W's row i (kept in registers) and R broadcasts of
/// X (X[r, i] at X[r ldx + i incx]), R x V FMAs.
template <std::size_t R, std::size_t V>
inline void rows_w_tile(const float* X, std::ptrdiff_t ldx, std::ptrdiff_t incx, std::size_t k, const float* W,
                        std::ptrdiff_t ldw, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  constexpr std::size_t B = fbatch::size;
  fbatch a[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v)
      a[r][v] = accumulate ? fbatch::load_unaligned(Y + std::ptrdiff_t(r) * ldy + std::ptrdiff_t(v * B)) : fbatch(0.0f);
  for (std::size_t i = 0; i < k; ++i) {
    fbatch w[V];
    for (std::size_t v = 0; v < V; ++v) {
      w[v] = fbatch::load_unaligned(W + std::ptrdiff_t(i) * ldw + std::ptrdiff_t(v * B));
      in_register(w[v]);
    }
    for (std::size_t r = 0; r < R; ++r) {
      const fbatch x(X[std::ptrdiff_t(r) * ldx + std::ptrdiff_t(i) * incx]);
      for (std::size_t v = 0; v < V; ++v) a[r][v] = xsimd::fma(x, w[v], a[r][v]);
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) a[r][v].store_unaligned(Y + std::ptrdiff_t(r) * ldy + std::ptrdiff_t(v * B));
}

/// rows_w_tile over all the rows for V batches of columns from W and Y on: tiles of kR rows, the
/// rest 4, 2, 1 at a time.
template <std::size_t V>
inline void rows_w_columns(const float* X, std::ptrdiff_t ldx, std::ptrdiff_t incx, std::size_t n, std::size_t k,
                           const float* W, std::ptrdiff_t ldw, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  // 6 x 4 accumulators with AVX-512's 32 registers, 2 x 4 with 16
  constexpr std::size_t kR = fbatch::size >= 16 ? 6 : 2;
  std::size_t b = 0;
  for (; b + kR <= n; b += kR)
    rows_w_tile<kR, V>(X + std::ptrdiff_t(b) * ldx, ldx, incx, k, W, ldw, Y + std::ptrdiff_t(b) * ldy, ldy, accumulate);
  if constexpr (kR > 4)
    if (b + 4 <= n)
      rows_w_tile<4, V>(X + std::ptrdiff_t(b) * ldx, ldx, incx, k, W, ldw, Y + std::ptrdiff_t(b) * ldy, ldy, accumulate), b += 4;
  if constexpr (kR > 2)
    if (b + 2 <= n)
      rows_w_tile<2, V>(X + std::ptrdiff_t(b) * ldx, ldx, incx, k, W, ldw, Y + std::ptrdiff_t(b) * ldy, ldy, accumulate), b += 2;
  for (; b < n; ++b)
    rows_w_tile<1, V>(X + std::ptrdiff_t(b) * ldx, ldx, incx, k, W, ldw, Y + std::ptrdiff_t(b) * ldy, ldy, accumulate);
}
}  // namespace detail

/// rows_w (kernels/scalar.hpp) with W read in place: for each block of 4 batches of columns, the
/// rows of X in register tiles, W's rows of that block (k x 4 batches) staying in L1 across them.
/// Eigen's GEMM would copy W into its packed layout first, for every product: the inner learners'
/// mini-batch products (16-32 rows times a 64 x 256 or 256 x 64 fast weight) run 1.3-1.8x faster
/// this way on one core of the AMD EPYC (Zen 5) (benchmarks/README.md, "The layer against the GEMM
/// rate"). Each sum runs over i in order, as the twin's, with FMAs.
inline void rows_w(backend::simd, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                   std::ptrdiff_t ldw, std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate = false,
                   std::ptrdiff_t incx = 1) {
  constexpr std::size_t B = detail::fbatch::size;
  std::size_t j = 0;
  for (; j + 4 * B <= m; j += 4 * B) detail::rows_w_columns<4>(X, ldx, incx, n, k, W + j, ldw, Y + j, ldy, accumulate);
  for (; j + B <= m; j += B) detail::rows_w_columns<1>(X, ldx, incx, n, k, W + j, ldw, Y + j, ldy, accumulate);
  if (j < m)  // the last m % B columns
    rows_w(backend::scalar{}, X, ldx, n, k, W + j, ldw, m - j, Y + std::ptrdiff_t(j), ldy, accumulate, incx);
}

namespace detail {
/// ln_l2_grad_rows for R rows at once (d a multiple of the batch size): four passes over the rows,
/// the R rows' independent sums interleaved (one row alone is a chain of dependent reductions).
template <std::size_t R>
inline void ln_l2_rows_tile(std::size_t d, const float* z, std::ptrdiff_t ldz, const float* a, std::ptrdiff_t lda,
                            const float* b, std::ptrdiff_t ldb, const float* gamma, const float* beta, float* g,
                            std::ptrdiff_t ldg, float eps) {
  constexpr std::size_t B = fbatch::size;
  auto zr = [&](std::size_t r, std::size_t c) {
    return fbatch::load_unaligned(z + std::ptrdiff_t(r) * ldz + std::ptrdiff_t(c));
  };
  fbatch s[R], v[R], s1[R], s2[R], mu[R], inv[R];
  for (std::size_t r = 0; r < R; ++r) s[r] = v[r] = s1[r] = s2[r] = fbatch(0.0f);
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) s[r] += zr(r, c);
  for (std::size_t r = 0; r < R; ++r) mu[r] = fbatch(xsimd::hadd(s[r]) / float(d));
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) {
      const fbatch x = zr(r, c) - mu[r];
      v[r] = xsimd::fma(x, x, v[r]);
    }
  float stdv[R];
  for (std::size_t r = 0; r < R; ++r) {
    stdv[r] = std::sqrt(xsimd::hadd(v[r]) / float(d) + eps);
    inv[r] = fbatch(1.0f / stdv[r]);
  }
  for (std::size_t c = 0; c < d; c += B) {
    const fbatch gm = fbatch::load_unaligned(gamma + c), bt = fbatch::load_unaligned(beta + c);
    for (std::size_t r = 0; r < R; ++r) {
      const fbatch xhat = (zr(r, c) - mu[r]) * inv[r];
      fbatch target = fbatch::load_unaligned(a + std::ptrdiff_t(r) * lda + std::ptrdiff_t(c));
      if (b) target -= fbatch::load_unaligned(b + std::ptrdiff_t(r) * ldb + std::ptrdiff_t(c));
      const fbatch gx = (xsimd::fma(gm, xhat, bt) - target) * gm;
      gx.store_unaligned(g + std::ptrdiff_t(r) * ldg + std::ptrdiff_t(c));
      s1[r] += gx;
      s2[r] = xsimd::fma(gx, xhat, s2[r]);
    }
  }
  const fbatch vd = fbatch(float(d));
  fbatch scale[R];
  for (std::size_t r = 0; r < R; ++r) {
    s1[r] = fbatch(xsimd::hadd(s1[r]));
    s2[r] = fbatch(xsimd::hadd(s2[r]));
    scale[r] = fbatch(1.0f / (float(d) * stdv[r]));
  }
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) {
      float* gr = g + std::ptrdiff_t(r) * ldg + std::ptrdiff_t(c);
      const fbatch xhat = (zr(r, c) - mu[r]) * inv[r];
      ((vd * fbatch::load_unaligned(gr) - s1[r] - xhat * s2[r]) * scale[r]).store_unaligned(gr);
    }
}
}  // namespace detail

/// ln_l2_grad_rows (kernels/scalar.hpp), four rows at a time; d not a multiple of the batch size:
/// the twin. xhat as (z - mean) times 1 / std, not divided by std.
inline void ln_l2_grad_rows(backend::simd, std::size_t n, std::size_t d, const float* z, std::ptrdiff_t ldz,
                            const float* a, std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, const float* gamma,
                            const float* beta, float* g, std::ptrdiff_t ldg, double eps = 1e-6) {
  if (d % detail::fbatch::size != 0)
    return ln_l2_grad_rows(backend::scalar{}, n, d, z, ldz, a, lda, b, ldb, gamma, beta, g, ldg, eps);
  auto at = [](auto* p, std::ptrdiff_t ld, std::size_t r) { return p ? p + std::ptrdiff_t(r) * ld : p; };
  std::size_t r = 0;
  for (; r + 4 <= n; r += 4)
    detail::ln_l2_rows_tile<4>(d, at(z, ldz, r), ldz, at(a, lda, r), lda, at(b, ldb, r), ldb, gamma, beta,
                               at(g, ldg, r), ldg, float(eps));
  for (; r < n; ++r)
    detail::ln_l2_rows_tile<1>(d, at(z, ldz, r), ldz, at(a, lda, r), lda, at(b, ldb, r), ldb, gamma, beta,
                               at(g, ldg, r), ldg, float(eps));
}

namespace detail {
/// causal_apply for rows t0 .. t0+R-1 and the first V batches of columns of G and Y (the caller
/// offsets both to the column block): R x V accumulators, one load of each G row's batches per R
/// rows.
template <std::size_t R, std::size_t V>
inline void causal_apply_tile(std::size_t t0, const float* A, std::ptrdiff_t lda, const float* G, std::ptrdiff_t ldg,
                              float* Y, std::ptrdiff_t ldy) {
  constexpr std::size_t B = fbatch::size;
  auto y_at = [&](std::size_t r, std::size_t v) { return Y + std::ptrdiff_t(t0 + r) * ldy + std::ptrdiff_t(v * B); };
  fbatch y[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[r][v] = fbatch::load_unaligned(y_at(r, v));
  for (std::size_t j = 0; j < t0 + R; ++j) {
    fbatch g[V];
    for (std::size_t v = 0; v < V; ++v)
      g[v] = fbatch::load_unaligned(G + std::ptrdiff_t(j) * ldg + std::ptrdiff_t(v * B));
    for (std::size_t r = 0; r < R; ++r)
      if (j <= t0 + r) {
        const fbatch a(A[std::ptrdiff_t(t0 + r) * lda + std::ptrdiff_t(j)]);
        for (std::size_t v = 0; v < V; ++v) y[r][v] = xsimd::fnma(a, g[v], y[r][v]);
      }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[r][v].store_unaligned(y_at(r, v));
}

template <std::size_t V>
inline void causal_apply_columns(std::size_t n, const float* A, std::ptrdiff_t lda, const float* G, std::ptrdiff_t ldg,
                                 float* Y, std::ptrdiff_t ldy) {
  std::size_t t = 0;
  for (; t + 2 <= n; t += 2) causal_apply_tile<2, V>(t, A, lda, G, ldg, Y, ldy);
  if (t < n) causal_apply_tile<1, V>(t, A, lda, G, ldg, Y, ldy);
}

/// out[j] = q . k_j for the m rows k_j = k + j ldk (d a multiple of the batch size): four rows
/// per pass over q.
inline void dots(const float* q, const float* k, std::ptrdiff_t ldk, std::size_t m, std::size_t d, float* out) {
  constexpr std::size_t B = fbatch::size;
  std::size_t j = 0;
  for (; j + 4 <= m; j += 4) {
    const float* k0 = k + std::ptrdiff_t(j) * ldk;
    fbatch a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
    for (std::size_t c = 0; c < d; c += B) {
      const fbatch qv = fbatch::load_unaligned(q + c);
      a0 = xsimd::fma(qv, fbatch::load_unaligned(k0 + c), a0);
      a1 = xsimd::fma(qv, fbatch::load_unaligned(k0 + ldk + c), a1);
      a2 = xsimd::fma(qv, fbatch::load_unaligned(k0 + 2 * ldk + c), a2);
      a3 = xsimd::fma(qv, fbatch::load_unaligned(k0 + 3 * ldk + c), a3);
    }
    out[j] = xsimd::hadd(a0);
    out[j + 1] = xsimd::hadd(a1);
    out[j + 2] = xsimd::hadd(a2);
    out[j + 3] = xsimd::hadd(a3);
  }
  for (; j < m; ++j) {
    const float* kj = k + std::ptrdiff_t(j) * ldk;
    fbatch a0(0.0f);
    for (std::size_t c = 0; c < d; c += B)
      a0 = xsimd::fma(fbatch::load_unaligned(q + c), fbatch::load_unaligned(kj + c), a0);
    out[j] = xsimd::hadd(a0);
  }
}
}  // namespace detail

/// causal_scores (kernels/scalar.hpp): the dot products of the unmasked half only, four keys per
/// pass over a query row; k not a multiple of the batch size: the twin.
inline void causal_scores(backend::simd, std::size_t n, std::size_t k, const float* Q, std::ptrdiff_t ldq,
                          const float* K, std::ptrdiff_t ldk, const float* eta, const float* lr, float bias, float* A,
                          std::ptrdiff_t lda) {
  if (k % detail::fbatch::size != 0)
    return causal_scores(backend::scalar{}, n, k, Q, ldq, K, ldk, eta, lr, bias, A, lda);
  for (std::size_t t = 0; t < n; ++t) {
    float* a = A + std::ptrdiff_t(t) * lda;
    detail::dots(Q + std::ptrdiff_t(t) * ldq, K, ldk, t + 1, k, a);
    for (std::size_t j = 0; j <= t; ++j) a[j] = eta[t] * lr[j] * (a[j] + bias);
  }
}

/// causal_apply (kernels/scalar.hpp): pairs of rows by four batches of columns in registers, the
/// masked half skipped; the last m % B columns through the twin.
inline void causal_apply(backend::simd, std::size_t n, std::size_t m, const float* A, std::ptrdiff_t lda,
                         const float* G, std::ptrdiff_t ldg, float* Y, std::ptrdiff_t ldy) {
  constexpr std::size_t B = detail::fbatch::size;
  std::size_t c = 0;
  for (; c + 4 * B <= m; c += 4 * B) detail::causal_apply_columns<4>(n, A, lda, G + c, ldg, Y + c, ldy);
  for (; c + B <= m; c += B) detail::causal_apply_columns<1>(n, A, lda, G + c, ldg, Y + c, ldy);
  if (c < m) causal_apply(backend::scalar{}, n, m - c, A, lda, G + c, ldg, Y + c, ldy);
}

}  // namespace ttt::kernels
