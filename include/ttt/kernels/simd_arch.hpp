#pragma once
/// \file kernels/simd_arch.hpp
/// The xsimd kernels of the hot paths, each a template on xsimd's instruction set `A`
/// (`xsimd::batch<float, A>`): the element-wise ones (TTT-MLP's GELU, SwiGLU), the few-rows
/// products (rows_wt, rows_w), the dual forms' row kernels (the LN-L2 gradient, the causal scores
/// and their product), TTT-Linear's fused dual form and the bf16-weight dot products. They do the whole-batch part of the work;
/// the remainders (a width that is not whole batches, the last n % batch values) are the entry
/// points' (kernels/simd.hpp), which send them to the plain twins of kernels/scalar.hpp.
///
/// Runtime dispatch (kernels/simd_table.hpp) compiles this header a second and third time, in
/// ttt::simd_dispatch's translation units built with -mavx2 -mfma and with -mavx512*: so that no
/// function emitted there can stand in for one of the baseline build's (the linker keeps one copy
/// of each inline function), every function here is a template on A and calls only functions that
/// are, or ones the compiler expands in place at -O3 (std::sqrt(float), memcpy; those units are
/// compiled at -O3 in every build type); no std::min, std::copy. The tests check the objects'
/// symbols (tests/kernels/check_isa_objects.py).
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "dual_segment.hpp"

namespace ttt::kernels::isa {

template <class A>
using fb = xsimd::batch<float, A>;

template <class A, class Op>
inline void map_batches(const float* x, float* y, std::size_t n, Op op) {
  constexpr std::size_t W = fb<A>::size;
  for (std::size_t i = 0; i + W <= n; i += W) op(fb<A>::load_unaligned(x + i)).store_unaligned(y + i);
}

// The GELU family in parts: the tanh of each form and the values made from it. The single
// kernels and the pair kernels below are built from the same parts, so a pair's two values are the
// singles' bit for bit (tests/kernels/test_kernels.cpp checks it under every table).
/// tanh(k (v + c v^3)): torch's gelu(approximate="tanh") and its derivative.
template <class A>
inline fb<A> gelu_t(fb<A> v) {
  const fb<A> k(0.7978845608028654f), c(0.044715f);
  return xsimd::tanh(k * (v + c * v * v * v));
}
/// gelu_tanh from gelu_t.
template <class A>
inline fb<A> gelu_of(fb<A> v, fb<A> t) {
  const fb<A> half(0.5f), one(1.0f);
  return half * v * (one + t);
}
/// gelu_tanh_dx (its derivative) from gelu_t.
template <class A>
inline fb<A> gelu_dx_of(fb<A> v, fb<A> t) {
  const fb<A> k(0.7978845608028654f), c3(3.0f * 0.044715f), half(0.5f), one(1.0f);
  return half * (one + t) + half * v * (one - t * t) * k * (one + c3 * v * v);
}
/// tanh(c1 v (1 + c v^2)) with the constants of the reference's `gelu_bwd`.
template <class A>
inline fb<A> gelu_bwd_t(fb<A> v) {
  const fb<A> c1(0.79788456f), c(0.044715f), one(1.0f);
  return xsimd::tanh(c1 * v * (one + c * v * v));
}
/// gelu_tanh_grad (the reference's `gelu_bwd`) from gelu_bwd_t.
template <class A>
inline fb<A> gelu_bwd_of(fb<A> v, fb<A> t) {
  const fb<A> c1(0.79788456f), c2(0.1070322243f), half(0.5f), one(1.0f);
  return half * v * ((one - t * t) * (c1 + c2 * v * v)) + half * (one + t);
}
/// gelu_tanh_grad_dx (the derivative of `gelu_bwd`) from gelu_bwd_t.
template <class A>
inline fb<A> gelu_bwd_dx_of(fb<A> v, fb<A> t) {
  const fb<A> c1(0.79788456f), c2(0.1070322243f), c13(3.0f * 0.79788456f * 0.044715f), half(0.5f), one(1.0f);
  const fb<A> s = one - t * t, dt = s * (c1 + c13 * v * v), p = c1 + c2 * v * v;
  return half * s * p - v * t * dt * p + v * s * c2 * v + half * dt;
}

/// The kernels below take the first n - n % batch values of their rows (the entry points finish).
template <class A>
void gelu_tanh(const float* x, float* y, std::size_t n) {
  map_batches<A>(x, y, n, [](fb<A> v) { return gelu_of<A>(v, gelu_t<A>(v)); });
}

template <class A>
void gelu_tanh_grad(const float* x, float* y, std::size_t n) {
  map_batches<A>(x, y, n, [](fb<A> v) { return gelu_bwd_of<A>(v, gelu_bwd_t<A>(v)); });
}

template <class A>
void gelu_tanh_dx(const float* x, float* y, std::size_t n) {
  map_batches<A>(x, y, n, [](fb<A> v) { return gelu_dx_of<A>(v, gelu_t<A>(v)); });
}

template <class A>
void gelu_tanh_grad_dx(const float* x, float* y, std::size_t n) {
  map_batches<A>(x, y, n, [](fb<A> v) { return gelu_bwd_dx_of<A>(v, gelu_bwd_t<A>(v)); });
}

/// y = yf(v, t) and dy = dyf(v, t) with t = tf(v), over whole batches: a pair kernel.
template <class A, class T, class Y, class DY>
inline void map_pair_batches(const float* x, float* y, float* dy, std::size_t n, T tf, Y yf, DY dyf) {
  constexpr std::size_t W = fb<A>::size;
  for (std::size_t i = 0; i + W <= n; i += W) {
    const fb<A> v = fb<A>::load_unaligned(x + i), t = tf(v);
    yf(v, t).store_unaligned(y + i);
    dyf(v, t).store_unaligned(dy + i);
  }
}

/// gelu_tanh and gelu_tanh_dx of the same x from one tanh (TTT-MLP's reverse needs both, of the
/// hidden units and of the queries').
template <class A>
void gelu_tanh_pair(const float* x, float* y, float* dy, std::size_t n) {
  map_pair_batches<A>(x, y, dy, n, gelu_t<A>, gelu_of<A>, gelu_dx_of<A>);
}

/// gelu_tanh_grad and gelu_tanh_grad_dx of the same x from one tanh.
template <class A>
void gelu_tanh_grad_pair(const float* x, float* y, float* dy, std::size_t n) {
  map_pair_batches<A>(x, y, dy, n, gelu_bwd_t<A>, gelu_bwd_of<A>, gelu_bwd_dx_of<A>);
}

template <class A>
void silu_mul(float* g, const float* u, std::size_t n) {
  using B = fb<A>;
  constexpr std::size_t W = B::size;
  const B one(1.0f);
  for (std::size_t i = 0; i + W <= n; i += W) {
    const B v = B::load_unaligned(g + i);
    (v / (one + xsimd::exp(-v)) * B::load_unaligned(u + i)).store_unaligned(g + i);
  }
}

/// sg = sigmoid(a) (skipped when sg is null), h = a sg b: SwiGLU fast weights' hidden units (their
/// sigmoid kept for the derivatives).
template <class A>
void silu_gate(const float* a, const float* b, float* sg, float* h, std::size_t n) {
  using B = fb<A>;
  constexpr std::size_t W = B::size;
  const B one(1.0f);
  for (std::size_t i = 0; i + W <= n; i += W) {
    const B x = B::load_unaligned(a + i), s = one / (one + xsimd::exp(-x));
    const B y = x * s * B::load_unaligned(b + i);
    if (sg) s.store_unaligned(sg + i);
    y.store_unaligned(h + i);
  }
}

/// silu_mul_bwd (kernels/scalar.hpp): SwiGLU's reverse under silu, one exp per element.
template <class A>
void silu_mul_bwd(const float* g, const float* u, const float* da, float* dg, float* du, std::size_t n) {
  using B = fb<A>;
  constexpr std::size_t W = B::size;
  const B one(1.0f);
  for (std::size_t i = 0; i + W <= n; i += W) {
    const B x = B::load_unaligned(g + i), s = one / (one + xsimd::exp(-x)), ds = B::load_unaligned(da + i) * s;
    (ds * B::load_unaligned(u + i) * (one + x * (one - s))).store_unaligned(dg + i);
    (ds * x).store_unaligned(du + i);
  }
}

/// exp_affine_sum (kernels/scalar.hpp) over whole batches; the sum of the batches' values.
template <class A>
float exp_affine_sum(float* x, std::size_t n, float a, float b) {
  using B = fb<A>;
  constexpr std::size_t W = B::size;
  const B av(a), bv(b);
  B s(0.0f);
  for (std::size_t i = 0; i + W <= n; i += W) {
    const B e = xsimd::exp(xsimd::fms(av, B::load_unaligned(x + i), bv));
    e.store_unaligned(x + i);
    s += e;
  }
  return xsimd::hadd(s);
}

/// Keeps `v` in a register. In rows_wt_tile GCC otherwise folds the load of an X row into each of
/// the NW FMAs that use it: NW loads of the same X values per step instead of one, and the loads,
/// not the FMAs, set the pace (one core of the AMD EPYC (Zen 5), a small program: 8 rows by
/// 3-row tiles of a W in L2 at 160-190 GFLOP/s with the folded loads, 205-220 without;
/// benchmarks/README.md, "Batched decode").
template <class A>
inline void in_register([[maybe_unused]] fb<A>& v) {
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
template <class A, std::size_t NW, std::size_t NB>
inline void rows_wt_tile(const float* X, std::ptrdiff_t ldx, std::size_t k, const float* w, std::size_t ahead,
                         float* y, std::ptrdiff_t ldy, bool accumulate) {
  using B = fb<A>;
  constexpr std::size_t W = B::size, kLine = 64 / sizeof(float);
  B a[NW][NB];
  for (std::size_t q = 0; q < NW; ++q)
    for (std::size_t r = 0; r < NB; ++r) a[q][r] = B(0.0f);
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
    B wv[NW];
    for (std::size_t q = 0; q < NW; ++q) wv[q] = B::load_unaligned(w + q * k + i);
    for (std::size_t r = 0; r < NB; ++r) {
      B xv = B::load_unaligned(X + std::ptrdiff_t(r) * ldx + std::ptrdiff_t(i));
      in_register<A>(xv);
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
template <class A, std::size_t NW>
inline void rows_wt_rows(std::size_t nb, const float* x, std::ptrdiff_t ldx, std::size_t k, const float* w,
                         std::size_t ahead, float* y, std::ptrdiff_t ldy, bool accumulate) {
  switch (nb) {
    case 8: rows_wt_tile<A, NW, 8>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 7: rows_wt_tile<A, NW, 7>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 6: rows_wt_tile<A, NW, 6>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 5: rows_wt_tile<A, NW, 5>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 4: rows_wt_tile<A, NW, 4>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 3: rows_wt_tile<A, NW, 3>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    case 2: rows_wt_tile<A, NW, 2>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
    default: rows_wt_tile<A, NW, 1>(x, ldx, k, w, ahead, y, ldy, accumulate); break;
  }
}

/// rows_wt for n >= 2 rows: tiles of NW weight rows (the last m % NW rows one at a time) by up to 8
/// rows of X, the blocks of weight rows split over the OpenMP threads when there is enough work.
/// Every NW gives the same sums bit for bit (tests/kernels/test_kernels.cpp).
template <class A, std::size_t NW>
inline void rows_wt_blocks(const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                           std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  const std::ptrdiff_t blocks = std::ptrdiff_t((m + NW - 1) / NW);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (m * k * n >= (std::size_t(1) << 17))
#endif
  for (std::ptrdiff_t b = 0; b < blocks; ++b) {
    const std::size_t j0 = std::size_t(b) * NW, j1 = m < j0 + NW ? m : j0 + NW;
    for (std::size_t b0 = 0; b0 < n; b0 += 8) {
      const float* x = X + std::ptrdiff_t(b0) * ldx;
      float* y = Y + std::ptrdiff_t(b0) * ldy;
      const std::size_t nb = n - b0 < 8 ? n - b0 : 8;
      const bool first = b0 == 0;  // the later passes find the next tile already fetched
      if (j1 - j0 == NW) {
        rows_wt_rows<A, NW>(nb, x, ldx, k, W + j0 * k, first ? (m - j0) * k : 0, y + std::ptrdiff_t(j0), ldy,
                            accumulate);
      } else {
        for (std::size_t j = j0; j < j1; ++j)
          rows_wt_rows<A, 1>(nb, x, ldx, k, W + j * k, first ? (m - j) * k : 0, y + std::ptrdiff_t(j), ldy,
                             accumulate);
      }
    }
  }
}

/// Weight rows per tile of rows_wt at n >= 2: 3 with 512-bit batches (AVX-512's 32 registers hold
/// the 3 x 8 accumulators; one core of the 2-core AMD EPYC (Zen 5) multiplied 8 rows by a cold W
/// 1.2-1.3x faster than with 1: benchmarks/README.md, "Batched decode"), else 1 (with 16 registers
/// the tiles spill).
template <class A>
inline constexpr std::size_t kRowsTileW = fb<A>::size >= 16 ? 3 : 1;

/// One row x against weight rows w .. w + (NW-1) k: NW accumulators (independent FMA chains), each
/// weight row's sum in the order rows_wt_tile gives it (so a row's result does not depend on n).
template <class A, std::size_t NW>
inline void row_wt_tile(const float* x, std::size_t k, const float* w, float* y, bool accumulate) {
  using B = fb<A>;
  constexpr std::size_t W = B::size;
  B a[NW];
  for (std::size_t q = 0; q < NW; ++q) a[q] = B(0.0f);
  std::size_t i = 0;
  for (; i + W <= k; i += W) {
    const B xv = B::load_unaligned(x + i);
    for (std::size_t q = 0; q < NW; ++q) a[q] = xsimd::fma(xv, B::load_unaligned(w + q * k + i), a[q]);
  }
  for (std::size_t q = 0; q < NW; ++q) {
    float s = xsimd::hadd(a[q]);
    for (std::size_t t = i; t < k; ++t) s += x[t] * w[q * k + t];
    y[q] = accumulate ? y[q] + s : s;
  }
}

/// rows_wt (kernels/scalar.hpp) reading W once, any k: for each tile of kRowsTileW weight rows,
/// every row of X (kept in the caches) in tiles of up to 8 rows; one row of X (decode) takes 4
/// weight rows at a time. OpenMP over the weight rows when there is enough work.
template <class A>
void rows_wt(const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W, std::size_t m,
             float* Y, std::ptrdiff_t ldy, bool accumulate) {
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
        row_wt_tile<A, kNW>(X, k, w, Y + j, accumulate);
      } else {
        for (std::ptrdiff_t q = j; q < M; ++q) row_wt_tile<A, 1>(X, k, W + std::size_t(q) * k, Y + q, accumulate);
      }
    }
    return;
  }
  rows_wt_blocks<A, kRowsTileW<A>>(X, ldx, n, k, W, m, Y, ldy, accumulate);
}

/// rows_w for R rows of X and V batches of columns: R x V accumulators (Y's values with
/// `accumulate`, else 0); per step i, V loads of W's row i (kept in registers) and R broadcasts of
/// X (X[r, i] at X[r ldx + i incx]), R x V FMAs.
template <class A, std::size_t R, std::size_t V>
inline void rows_w_tile(const float* X, std::ptrdiff_t ldx, std::ptrdiff_t incx, std::size_t k, const float* W,
                        std::ptrdiff_t ldw, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  Bt a[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v)
      a[r][v] = accumulate ? Bt::load_unaligned(Y + std::ptrdiff_t(r) * ldy + std::ptrdiff_t(v * B)) : Bt(0.0f);
  for (std::size_t i = 0; i < k; ++i) {
    Bt w[V];
    for (std::size_t v = 0; v < V; ++v) {
      w[v] = Bt::load_unaligned(W + std::ptrdiff_t(i) * ldw + std::ptrdiff_t(v * B));
      in_register<A>(w[v]);
    }
    for (std::size_t r = 0; r < R; ++r) {
      const Bt x(X[std::ptrdiff_t(r) * ldx + std::ptrdiff_t(i) * incx]);
      for (std::size_t v = 0; v < V; ++v) a[r][v] = xsimd::fma(x, w[v], a[r][v]);
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) a[r][v].store_unaligned(Y + std::ptrdiff_t(r) * ldy + std::ptrdiff_t(v * B));
}

/// rows_w_tile over all the rows for V batches of columns from W and Y on: tiles of kR rows, the
/// rest 4, 2, 1 at a time.
template <class A, std::size_t V>
inline void rows_w_columns(const float* X, std::ptrdiff_t ldx, std::ptrdiff_t incx, std::size_t n, std::size_t k,
                           const float* W, std::ptrdiff_t ldw, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  // 6 x 4 accumulators with AVX-512's 32 registers, 2 x 4 with 16
  constexpr std::size_t kR = fb<A>::size >= 16 ? 6 : 2;
  auto tile = [&](auto rows, std::size_t b) {
    rows_w_tile<A, decltype(rows)::value, V>(X + std::ptrdiff_t(b) * ldx, ldx, incx, k, W, ldw,
                                             Y + std::ptrdiff_t(b) * ldy, ldy, accumulate);
  };
  std::size_t b = 0;
  for (; b + kR <= n; b += kR) tile(std::integral_constant<std::size_t, kR>{}, b);
  if constexpr (kR > 4)
    if (b + 4 <= n) tile(std::integral_constant<std::size_t, 4>{}, b), b += 4;
  if constexpr (kR > 2)
    if (b + 2 <= n) tile(std::integral_constant<std::size_t, 2>{}, b), b += 2;
  for (; b < n; ++b) tile(std::integral_constant<std::size_t, 1>{}, b);
}

/// rows_w (kernels/scalar.hpp) with W read in place, for the first m - m % batch columns: for
/// each block of 4 batches of columns, the rows of X in register tiles, W's rows of that block
/// (k x 4 batches) staying in L1 across them. Eigen's GEMM would copy W into its packed layout
/// first, for every product: the inner learners' mini-batch products (16-32 rows times a 64 x 256
/// or 256 x 64 fast weight) run 1.3-1.8x faster this way on one core of the AMD EPYC (Zen 5)
/// (benchmarks/README.md, "The layer against the GEMM rate"). Each sum runs over i in order, as
/// the twin's, with FMAs.
template <class A>
void rows_w(const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W, std::ptrdiff_t ldw,
            std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate, std::ptrdiff_t incx) {
  constexpr std::size_t B = fb<A>::size;
  std::size_t j = 0;
  for (; j + 4 * B <= m; j += 4 * B) rows_w_columns<A, 4>(X, ldx, incx, n, k, W + j, ldw, Y + j, ldy, accumulate);
  for (; j + B <= m; j += B) rows_w_columns<A, 1>(X, ldx, incx, n, k, W + j, ldw, Y + j, ldy, accumulate);
}

/// ln_l2_grad_rows for R rows at once (d a multiple of the batch size): four passes over the rows,
/// the R rows' independent sums interleaved (one row alone is a chain of dependent reductions).
/// xhat as (z - mean) times 1 / std, not divided by std.
template <class A, std::size_t R>
inline void ln_l2_rows_tile(std::size_t d, const float* z, std::ptrdiff_t ldz, const float* a, std::ptrdiff_t lda,
                            const float* b, std::ptrdiff_t ldb, const float* gamma, const float* beta, float* g,
                            std::ptrdiff_t ldg, float eps) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  auto zr = [&](std::size_t r, std::size_t c) {
    return Bt::load_unaligned(z + std::ptrdiff_t(r) * ldz + std::ptrdiff_t(c));
  };
  Bt s[R], v[R], s1[R], s2[R], mu[R], inv[R], scale[R];
  for (std::size_t r = 0; r < R; ++r) s[r] = v[r] = s1[r] = s2[r] = Bt(0.0f);
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) s[r] += zr(r, c);
  for (std::size_t r = 0; r < R; ++r) mu[r] = Bt(xsimd::hadd(s[r]) / float(d));
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) {
      const Bt x = zr(r, c) - mu[r];
      v[r] = xsimd::fma(x, x, v[r]);
    }
  const Bt vd = Bt(float(d));
  for (std::size_t r = 0; r < R; ++r) {
    const float stdv = std::sqrt(xsimd::hadd(v[r]) / float(d) + eps);  // inlined (sqrtss) at -O3
    inv[r] = Bt(1.0f / stdv);
    scale[r] = Bt(1.0f / (float(d) * stdv));
  }
  for (std::size_t c = 0; c < d; c += B) {
    const Bt gm = Bt::load_unaligned(gamma + c), bt = Bt::load_unaligned(beta + c);
    for (std::size_t r = 0; r < R; ++r) {
      const Bt xhat = (zr(r, c) - mu[r]) * inv[r];
      Bt target = Bt::load_unaligned(a + std::ptrdiff_t(r) * lda + std::ptrdiff_t(c));
      if (b) target -= Bt::load_unaligned(b + std::ptrdiff_t(r) * ldb + std::ptrdiff_t(c));
      const Bt gx = (xsimd::fma(gm, xhat, bt) - target) * gm;
      gx.store_unaligned(g + std::ptrdiff_t(r) * ldg + std::ptrdiff_t(c));
      s1[r] += gx;
      s2[r] = xsimd::fma(gx, xhat, s2[r]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    s1[r] = Bt(xsimd::hadd(s1[r]));
    s2[r] = Bt(xsimd::hadd(s2[r]));
  }
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) {
      float* gr = g + std::ptrdiff_t(r) * ldg + std::ptrdiff_t(c);
      const Bt xhat = (zr(r, c) - mu[r]) * inv[r];
      ((vd * Bt::load_unaligned(gr) - s1[r] - xhat * s2[r]) * scale[r]).store_unaligned(gr);
    }
}

/// ln_l2_grad_rows (kernels/scalar.hpp) for d a multiple of the batch size, four rows at a time.
template <class A>
void ln_l2_grad_rows(std::size_t n, std::size_t d, const float* z, std::ptrdiff_t ldz, const float* a,
                     std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, const float* gamma, const float* beta,
                     float* g, std::ptrdiff_t ldg, float eps) {
  auto at = [](auto* p, std::ptrdiff_t ld, std::size_t r) { return p ? p + std::ptrdiff_t(r) * ld : p; };
  std::size_t r = 0;
  for (; r + 4 <= n; r += 4)
    ln_l2_rows_tile<A, 4>(d, at(z, ldz, r), ldz, at(a, lda, r), lda, at(b, ldb, r), ldb, gamma, beta, at(g, ldg, r),
                          ldg, eps);
  for (; r < n; ++r)
    ln_l2_rows_tile<A, 1>(d, at(z, ldz, r), ldz, at(a, lda, r), lda, at(b, ldb, r), ldb, gamma, beta, at(g, ldg, r),
                          ldg, eps);
}

/// layer_norm_bwd_rows (kernels/scalar.hpp) for R rows at once (d a multiple of the batch size):
/// the R rows' sums interleaved, then one pass that writes dx and adds the R rows to dgamma and
/// dbeta in row order.
template <class A, std::size_t R>
inline void layer_norm_bwd_tile(std::size_t d, const float* x, std::ptrdiff_t ldx, const float* dy, std::ptrdiff_t ldy,
                                const float* gamma, float eps, float* dx, std::ptrdiff_t lddx, float* dgamma,
                                float* dbeta) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  auto xr = [&](std::size_t r, std::size_t c) {
    return Bt::load_unaligned(x + std::ptrdiff_t(r) * ldx + std::ptrdiff_t(c));
  };
  auto dyr = [&](std::size_t r, std::size_t c) {
    return Bt::load_unaligned(dy + std::ptrdiff_t(r) * ldy + std::ptrdiff_t(c));
  };
  Bt s[R], v[R], m1[R], m2[R], mu[R], inv[R];
  for (std::size_t r = 0; r < R; ++r) s[r] = v[r] = m1[r] = m2[r] = Bt(0.0f);
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) s[r] += xr(r, c);
  for (std::size_t r = 0; r < R; ++r) mu[r] = Bt(xsimd::hadd(s[r]) / float(d));
  for (std::size_t c = 0; c < d; c += B)
    for (std::size_t r = 0; r < R; ++r) {
      const Bt xc = xr(r, c) - mu[r];
      v[r] = xsimd::fma(xc, xc, v[r]);
    }
  for (std::size_t r = 0; r < R; ++r) inv[r] = Bt(1.0f / std::sqrt(xsimd::hadd(v[r]) / float(d) + eps));
  for (std::size_t c = 0; c < d; c += B) {
    const Bt gm = Bt::load_unaligned(gamma + c);
    for (std::size_t r = 0; r < R; ++r) {
      const Bt g = dyr(r, c) * gm;
      m1[r] += g;
      m2[r] = xsimd::fma(g, (xr(r, c) - mu[r]) * inv[r], m2[r]);
    }
  }
  for (std::size_t r = 0; r < R; ++r) {
    m1[r] = Bt(xsimd::hadd(m1[r]) / float(d));
    m2[r] = Bt(xsimd::hadd(m2[r]) / float(d));
  }
  for (std::size_t c = 0; c < d; c += B) {
    const Bt gm = Bt::load_unaligned(gamma + c);
    Bt dg = dgamma ? Bt::load_unaligned(dgamma + c) : Bt(0.0f), db = dbeta ? Bt::load_unaligned(dbeta + c) : Bt(0.0f);
    for (std::size_t r = 0; r < R; ++r) {
      const Bt xh = (xr(r, c) - mu[r]) * inv[r], g = dyr(r, c);
      float* out = dx + std::ptrdiff_t(r) * lddx + std::ptrdiff_t(c);
      (Bt::load_unaligned(out) + inv[r] * (g * gm - m1[r] - xh * m2[r])).store_unaligned(out);
      dg = xsimd::fma(g, xh, dg);
      db += g;
    }
    if (dgamma) dg.store_unaligned(dgamma + c);
    if (dbeta) db.store_unaligned(dbeta + c);
  }
}

/// layer_norm_bwd_rows (kernels/scalar.hpp) for d a multiple of the batch size, four rows at a time.
template <class A>
void layer_norm_bwd_rows(std::size_t n, std::size_t d, const float* x, std::ptrdiff_t ldx, const float* dy,
                         std::ptrdiff_t ldy, const float* gamma, float eps, float* dx, std::ptrdiff_t lddx,
                         float* dgamma, float* dbeta) {
  std::size_t r = 0;
  auto at = [&](auto* p, std::ptrdiff_t ld) { return p + std::ptrdiff_t(r) * ld; };
  for (; r + 4 <= n; r += 4)
    layer_norm_bwd_tile<A, 4>(d, at(x, ldx), ldx, at(dy, ldy), ldy, gamma, eps, at(dx, lddx), lddx, dgamma, dbeta);
  for (; r < n; ++r)
    layer_norm_bwd_tile<A, 1>(d, at(x, ldx), ldx, at(dy, ldy), ldy, gamma, eps, at(dx, lddx), lddx, dgamma, dbeta);
}

/// rms_norm_bwd_rows (kernels/scalar.hpp) for d a multiple of the batch size, row by row.
template <class A>
void rms_norm_bwd_rows(std::size_t n, std::size_t d, const float* x, std::ptrdiff_t ldx, const float* dy,
                       std::ptrdiff_t ldy, const float* w, float eps, float* dx, std::ptrdiff_t lddx, float* dw) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  for (std::size_t t = 0; t < n; ++t, x += ldx, dy += ldy, dx += lddx) {
    Bt ss(0.0f), dot(0.0f);
    for (std::size_t c = 0; c < d; c += B) {
      const Bt xv = Bt::load_unaligned(x + c);
      ss = xsimd::fma(xv, xv, ss);
      dot = xsimd::fma(Bt::load_unaligned(dy + c) * Bt::load_unaligned(w + c), xv, dot);
    }
    const float r = 1.0f / std::sqrt(xsimd::hadd(ss) / float(d) + eps);
    const float q = r * (r * xsimd::hadd(dot) * r) / float(d);
    const Bt rv(r), qv(q);
    for (std::size_t c = 0; c < d; c += B) {
      const Bt xv = Bt::load_unaligned(x + c), g = Bt::load_unaligned(dy + c);
      xsimd::fma(g * xv, rv, Bt::load_unaligned(dw + c)).store_unaligned(dw + c);
      xsimd::fnma(xv, qv, xsimd::fma(rv, g * Bt::load_unaligned(w + c), Bt::load_unaligned(dx + c)))
          .store_unaligned(dx + c);
    }
  }
}

/// causal_apply for rows t0 .. t0+R-1 and the first V batches of columns of G and Y (the caller
/// offsets both to the column block): R x V accumulators, one load of each G row's batches per R
/// rows.
template <class A, std::size_t R, std::size_t V>
inline void causal_apply_tile(std::size_t t0, const float* Am, std::ptrdiff_t lda, const float* G, std::ptrdiff_t ldg,
                              float* Y, std::ptrdiff_t ldy) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  auto y_at = [&](std::size_t r, std::size_t v) { return Y + std::ptrdiff_t(t0 + r) * ldy + std::ptrdiff_t(v * B); };
  Bt y[R][V];
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[r][v] = Bt::load_unaligned(y_at(r, v));
  for (std::size_t j = 0; j < t0 + R; ++j) {
    Bt g[V];
    for (std::size_t v = 0; v < V; ++v) g[v] = Bt::load_unaligned(G + std::ptrdiff_t(j) * ldg + std::ptrdiff_t(v * B));
    for (std::size_t r = 0; r < R; ++r)
      if (j <= t0 + r) {
        const Bt a(Am[std::ptrdiff_t(t0 + r) * lda + std::ptrdiff_t(j)]);
        for (std::size_t v = 0; v < V; ++v) y[r][v] = xsimd::fnma(a, g[v], y[r][v]);
      }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < V; ++v) y[r][v].store_unaligned(y_at(r, v));
}

template <class A, std::size_t V>
inline void causal_apply_columns(std::size_t n, const float* Am, std::ptrdiff_t lda, const float* G,
                                 std::ptrdiff_t ldg, float* Y, std::ptrdiff_t ldy) {
  std::size_t t = 0;
  for (; t + 2 <= n; t += 2) causal_apply_tile<A, 2, V>(t, Am, lda, G, ldg, Y, ldy);
  if (t < n) causal_apply_tile<A, 1, V>(t, Am, lda, G, ldg, Y, ldy);
}

/// causal_apply (kernels/scalar.hpp) for the first m - m % batch columns: pairs of rows by four
/// batches of columns in registers, the masked half skipped.
template <class A>
void causal_apply(std::size_t n, std::size_t m, const float* Am, std::ptrdiff_t lda, const float* G,
                  std::ptrdiff_t ldg, float* Y, std::ptrdiff_t ldy) {
  constexpr std::size_t B = fb<A>::size;
  std::size_t c = 0;
  for (; c + 4 * B <= m; c += 4 * B) causal_apply_columns<A, 4>(n, Am, lda, G + c, ldg, Y + c, ldy);
  for (; c + B <= m; c += B) causal_apply_columns<A, 1>(n, Am, lda, G + c, ldg, Y + c, ldy);
}

/// out[j] = q . k_j for the m rows k_j = k + j ldk (d a multiple of the batch size): four rows
/// per pass over q.
template <class A>
inline void dots(const float* q, const float* k, std::ptrdiff_t ldk, std::size_t m, std::size_t d, float* out) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  std::size_t j = 0;
  for (; j + 4 <= m; j += 4) {
    const float* k0 = k + std::ptrdiff_t(j) * ldk;
    Bt a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
    for (std::size_t c = 0; c < d; c += B) {
      const Bt qv = Bt::load_unaligned(q + c);
      a0 = xsimd::fma(qv, Bt::load_unaligned(k0 + c), a0);
      a1 = xsimd::fma(qv, Bt::load_unaligned(k0 + ldk + c), a1);
      a2 = xsimd::fma(qv, Bt::load_unaligned(k0 + 2 * ldk + c), a2);
      a3 = xsimd::fma(qv, Bt::load_unaligned(k0 + 3 * ldk + c), a3);
    }
    out[j] = xsimd::hadd(a0);
    out[j + 1] = xsimd::hadd(a1);
    out[j + 2] = xsimd::hadd(a2);
    out[j + 3] = xsimd::hadd(a3);
  }
  for (; j < m; ++j) {
    const float* kj = k + std::ptrdiff_t(j) * ldk;
    Bt a0(0.0f);
    for (std::size_t c = 0; c < d; c += B) a0 = xsimd::fma(Bt::load_unaligned(q + c), Bt::load_unaligned(kj + c), a0);
    out[j] = xsimd::hadd(a0);
  }
}

/// causal_scores (kernels/scalar.hpp) for k a multiple of the batch size: the dot products of the
/// unmasked half only, four keys per pass over a query row.
template <class A>
void causal_scores(std::size_t n, std::size_t k, const float* Q, std::ptrdiff_t ldq, const float* K,
                   std::ptrdiff_t ldk, const float* eta, const float* lr, float bias, float* Am, std::ptrdiff_t lda) {
  for (std::size_t t = 0; t < n; ++t) {
    float* a = Am + std::ptrdiff_t(t) * lda;
    dots<A>(Q + std::ptrdiff_t(t) * ldq, K, ldk, t + 1, k, a);
    for (std::size_t j = 0; j <= t; ++j) a[j] = eta[t] * lr[j] * (a[j] + bias);
  }
}

/// kernels/linear_dual.hpp's dual form for float rows of f values, f a multiple of the batch size,
/// as one sequence of the kernels above with no temporaries of its own, the head's W in L1
/// throughout: the products with W through rows_w (W read in place; Z is built in Zq's rows), the
/// LN-L2 gradient through ln_l2_grad_rows (the target XV - XK read, not stored), only the unmasked
/// half of the b x b products (causal_scores, causal_apply).
template <class A>
void linear_dual(const DualSegment<float>& s, const float* theta0, float* gacc, float* Zq, std::ptrdiff_t ldz,
                 float* ws) {
  using Bt = fb<A>;
  constexpr std::size_t B = Bt::size;
  const std::size_t n = s.n, f = s.f;
  const float *W = theta0, *b = theta0 + f * f;
  float *gW = gacc, *gb = gacc + f * f;
  float *G = ws, *Am = G + n * f, *WG = Am + n * n;
  const std::ptrdiff_t F = std::ptrdiff_t(f);
  auto rows_of_b = [&](float* Y, std::ptrdiff_t ldy, const float* v) {
    for (std::size_t t = 0; t < n; ++t) std::memcpy(Y + std::ptrdiff_t(t) * ldy, v, f * sizeof(float));
  };
  rows_of_b(Zq, ldz, b);  // Z = b + XK W, in Zq
  rows_w<A>(s.XK, s.ldk, n, f, W, F, f, Zq, ldz, /*accumulate=*/true, 1);
  ln_l2_grad_rows<A>(n, f, Zq, ldz, s.XV, s.ldv, s.XK, s.ldk, s.ln_w, s.ln_b, G, F, 1e-6f);
  causal_scores<A>(n, f, s.XQ, s.ldq, s.XK, s.ldk, s.token_eta, s.lr, 1.0f, Am, std::ptrdiff_t(n));
  rows_of_b(Zq, ldz, b);
  rows_w<A>(s.XQ, s.ldq, n, f, W, F, f, Zq, ldz, /*accumulate=*/true, 1);
  if (!s.fresh) {  // Zq[t] -= eta_t (XQ[t] gW + gb)
    rows_of_b(WG, F, gb);
    rows_w<A>(s.XQ, s.ldq, n, f, gW, F, f, WG, F, /*accumulate=*/true, 1);
    for (std::size_t t = 0; t < n; ++t) {
      const Bt e(s.token_eta[t]);
      float* zq = Zq + std::ptrdiff_t(t) * ldz;
      for (std::size_t c = 0; c < f; c += B)
        xsimd::fnma(e, Bt::load_unaligned(WG + t * f + c), Bt::load_unaligned(zq + c)).store_unaligned(zq + c);
    }
  }
  causal_apply<A>(n, f, Am, std::ptrdiff_t(n), G, F, Zq, ldz);
  // theta0 is read no more: gacc may be it. gW += XK^T (gscale diag(lr) G), gb += its column sums.
  for (std::size_t t = 0; t < n; ++t) {
    const Bt w(s.gscale * s.lr[t]);
    for (std::size_t c = 0; c < f; c += B) (w * Bt::load_unaligned(G + t * f + c)).store_unaligned(G + t * f + c);
  }
  rows_w<A>(s.XK, 1, f, n, G, F, f, gW, F, /*accumulate=*/true, s.ldk);
  for (std::size_t c = 0; c < f; c += B) {
    Bt acc = Bt::load_unaligned(gb + c);
    for (std::size_t t = 0; t < n; ++t) acc += Bt::load_unaligned(G + t * f + c);
    acc.store_unaligned(gb + c);
  }
}

// -- bf16 weights (kernels/bf16.hpp's `portable` dot-product tiles) --

/// How far ahead of the value being read the bf16 dot products prefetch (512 values, 1 KB of
/// bf16): the hardware prefetchers alone left one core of the 2-core AMD EPYC (AVX2) at 13-14 GB/s
/// on a cold matrix, against 18-19 for a plain read of it; with this and the four partial sums
/// below, 17-18 (benchmarks/README.md, "bf16 decode without AVX-512").
constexpr std::int64_t kBf16Prefetch = 512;

template <class A>
inline fb<A> bits_as_float(const xsimd::batch<std::uint32_t, A>& v) {
#if XSIMD_VERSION_MAJOR >= 10
  return xsimd::bitwise_cast<float>(v);
#else
  return xsimd::bitwise_cast<fb<A>>(v);
#endif
}
template <class A>
inline xsimd::batch<std::uint32_t, A> bits_as_u32(const xsimd::batch<std::uint16_t, A>& v) {
#if XSIMD_VERSION_MAJOR >= 10
  return xsimd::bitwise_cast<std::uint32_t>(v);
#else
  return xsimd::bitwise_cast<xsimd::batch<std::uint32_t, A>>(v);
#endif
}
template <class A>
inline float sum_lanes(const fb<A>& v) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(v);
#else
  return xsimd::hadd(v);
#endif
}

/// One bf16 weight row `w` against N rows of X (packed "split", kernels/bf16.hpp's pack_split):
/// P = 2 x batch width values per load, widened by a shift (even values) and an AND (odd values).
/// W is read in its own order, row after row, each row once for the N rows, prefetched
/// kBf16Prefetch values ahead while inside W (`ahead`: the values of W from w on). U partial sums
/// per row of X, block u of every U blocks in sum u, added in order at the end (U = 4 for one row
/// of X, 2 for two, 1 from three on: at least four independent FMA chains), so a row's sum order
/// depends on N (not bit for bit the same alone and in a batch: within the fp32 summation bound of
/// the plain twin either way). W and X 2 x width-aligned (Bf16Matrix's 64-byte rows).
template <class A, int N, int U>
inline void bf16_row(const float* xs, std::int64_t kp, const std::uint16_t* w, std::int64_t ahead, float* out,
                     std::int64_t ldo, bool accumulate) {
  using Bt = fb<A>;
  using U16 = xsimd::batch<std::uint16_t, A>;
  using U32 = xsimd::batch<std::uint32_t, A>;
  constexpr std::int64_t B = std::int64_t(Bt::size), P = 2 * B;
  constexpr bool little = std::endian::native == std::endian::little;  // value 2i in the low half of lane i
  Bt acc[N][U];
  for (int r = 0; r < N; ++r)
    for (int u = 0; u < U; ++u) acc[r][u] = Bt(0.0f);
  const U32 high(0xFFFF0000u);
  auto block = [&](std::int64_t p, int u) {
#if defined(__GNUC__)
    if (p % 32 == 0 && p + kBf16Prefetch < ahead) __builtin_prefetch(w + p + kBf16Prefetch);  // one line per 32
#endif
    const U32 v = bits_as_u32<A>(U16::load_aligned(w + p));
    const Bt shifted = bits_as_float<A>(v << 16), masked = bits_as_float<A>(v & high);
    const Bt we = little ? shifted : masked, wo = little ? masked : shifted;
    for (int r = 0; r < N; ++r) {
      const Bt xe = Bt::load_aligned(xs + r * kp + p), xo = Bt::load_aligned(xs + r * kp + p + B);
      acc[r][u] = xsimd::fma(xo, wo, xsimd::fma(xe, we, acc[r][u]));
    }
  };
  std::int64_t p = 0;
  for (; p + U * P <= kp; p += U * P)
    for (int u = 0; u < U; ++u) block(p + u * P, u);
  for (; p < kp; p += P) block(p, 0);
  for (int r = 0; r < N; ++r) {
    for (int u = 1; u < U; ++u) acc[r][0] += acc[r][u];
    const float sum = sum_lanes<A>(acc[r][0]);
    float& o = out[r * ldo];
    o = accumulate ? o + sum : sum;
  }
}

/// `rows` bf16 weight rows from w (`ahead` rows of W from w on, for the prefetch) against N rows of X.
template <class A, int N>
inline void bf16_rows_n(const float* xs, std::int64_t kp, const std::uint16_t* w, std::int64_t ldw,
                        std::int64_t rows, std::int64_t ahead, float* out, std::int64_t ldo, bool accumulate) {
  constexpr int U = N == 1 ? 4 : (N == 2 ? 2 : 1);
  for (std::int64_t j = 0; j < rows; ++j)
    bf16_row<A, N, U>(xs, kp, w + j * ldw, (ahead - j) * ldw, out + j, ldo, accumulate);
}

/// out[r ldo + j] (+)= X row r . W row j for n (1..8; 8 for more) rows of X and `rows` rows of W.
template <class A>
void bf16_rows(std::int64_t n, const float* xs, std::int64_t kp, const std::uint16_t* w, std::int64_t ldw,
               std::int64_t rows, std::int64_t ahead, float* out, std::int64_t ldo, bool accumulate) {
  switch (n) {
    case 1: return bf16_rows_n<A, 1>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 2: return bf16_rows_n<A, 2>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 3: return bf16_rows_n<A, 3>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 4: return bf16_rows_n<A, 4>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 5: return bf16_rows_n<A, 5>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 6: return bf16_rows_n<A, 6>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    case 7: return bf16_rows_n<A, 7>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
    default: return bf16_rows_n<A, 8>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
  }
}

}  // namespace ttt::kernels::isa
