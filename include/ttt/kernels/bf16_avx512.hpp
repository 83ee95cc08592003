#pragma once
/// \file kernels/bf16_avx512.hpp
/// The x86 AVX-512 kernels of kernels/bf16.hpp (bf16-stored weights, fp32 activations): raw-pointer
/// functions compiled with `__attribute__((target(...)))`, so the library needs no -m flag; the
/// caller (`bf16_matmul_nt`) runs them only after the runtime check `cpu_has_avx512bw()`.
/// Elsewhere (another CPU family, another compiler) this header declares no-op stubs and a check
/// that says no.
///
/// - `bf16_tile_avx512` (decode: n <= 8 rows of X): out(r, j) [+]= sum_p x(r, p) w(j, p) as dot
///   products along p (W rows are contiguous, PyTorch's [out, in] layout). X comes packed "split":
///   in each block of 32 inputs, the 16 even ones, then the 16 odd ones. A 512-bit load of 32 bf16
///   weights, read as 16 uint32 lanes, holds weight 2i in the low half of lane i and weight 2i + 1
///   in the high half, so `lane << 16` is the even weights as floats and `lane & 0xFFFF0000` the
///   odd ones: two integer ops widen 32 weights, no shuffle. X and W are read 64-byte aligned with
///   a row stride that is a multiple of 32, padded with zeros (Bf16Matrix's layout): no remainder
///   loop over p.
/// - `bf16_pack_panel` + `bf16_micro` (prefill): 48 rows of W gathered, widened and transposed into
///   an fp32 panel [k][48], then 8 x 48 outputs per micro-tile in 24 zmm accumulators, one
///   broadcast of x(r, p) and three panel loads per 24 FMAs (Eigen's AVX-512 GEMM shape, 48 x 8).
/// - `bf16_pairs_avx512` + `bf16_pack_panel_pairs` + `bf16_dp_micro` (prefill with bf16
///   activations, AVX512_BF16, opt-in): X rounded to bf16 pairs, W's own 32-bit pairs gathered into
///   [k/2][48] panels, 8 x 48 outputs per micro-tile from 24 `vdpbf16ps` per input pair.
#include <cstdint>
#include <type_traits>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define TTT_BF16_X86_TILES 1
#include <immintrin.h>
#endif

namespace ttt::kernels::detail {

#if defined(TTT_BF16_X86_TILES)

/// AVX-512 F + BW (every server AVX-512 CPU since Skylake-SP), enabled by the OS.
inline bool cpu_has_avx512bw() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
  }();
  return yes;
}
// GCC 12 warns (-Wuninitialized) inside its own AVX-512 intrinsics, at their _mm512_undefined_*
// placeholders, wherever they are inlined: silenced for the tiles only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define TTT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,fma")))

/// The sum of the 16 lanes, by in-register halvings.
TTT_TARGET_AVX512 inline float bf16_sum16(__m512 a) {
  a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(1, 0, 3, 2)));
  a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
  a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(1, 0, 3, 2)));
  a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(a);
}

/// The mask of the first `have` of 16 lanes (none when have <= 0, all from 16 on).
inline __mmask16 first_lanes(int64_t have) {
  return have >= 16 ? __mmask16(0xFFFF) : have <= 0 ? __mmask16(0) : __mmask16((1u << have) - 1u);
}

/// f(std::integral_constant<int, n>{}) for n rows of X (1..7; 8 for 8 and more): a row count to
/// the tile compiled for it.
template <class F>
inline void with_rows8(int64_t n, F&& f) {
  switch (n) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

/// N rows of split-packed X (stride kp) times R rows of W (stride ldw): N x R results to out
/// (row stride ldo), prefetching the R rows at `next` meanwhile. S = 2 keeps the even and odd
/// halves in separate sums (twice the independent FMA chains, for small N x R where the FMA
/// latency would limit). From N = 2 on, a row's two X vectors are loaded once per step and kept
/// in registers: GCC otherwise folds the loads into each of the R FMAs that use them, and at
/// N = 8 the loads set the pace (8 rows by a cold W 1.8x faster without them on the AMD EPYC
/// (Zen 5); one row, bound by DRAM, read W 5-14% slower with them: benchmarks/README.md,
/// "Batched decode").
template <int N, int R, int S>
TTT_TARGET_AVX512 inline void bf16_tile_avx512_nr(const float* xs, int64_t kp, const uint16_t* w, int64_t ldw,
                                                 const uint16_t* next, float* out, int64_t ldo, bool accumulate) {
  __m512 acc[N][R][S];
#pragma GCC unroll 8
  for (int r = 0; r < N; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j)
#pragma GCC unroll 2
      for (int s = 0; s < S; ++s) acc[r][j][s] = _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  for (int64_t p = 0; p < kp; p += 32) {
    __m512 we[R], wo[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(next + j * ldw + p), _MM_HINT_T0);
      const __m512i v = _mm512_load_si512(static_cast<const void*>(w + j * ldw + p));
      we[j] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));     // weights p, p+2, ..., p+30
      wo[j] = _mm512_castsi512_ps(_mm512_and_si512(v, high));    // weights p+1, p+3, ..., p+31
    }
#pragma GCC unroll 8
    for (int r = 0; r < N; ++r) {
      __m512 xe = _mm512_load_ps(xs + r * kp + p), xo = _mm512_load_ps(xs + r * kp + p + 16);
      if constexpr (N >= 2) __asm__("" : "+v"(xe), "+v"(xo));  // in registers (see above)
#pragma GCC unroll 4
      for (int j = 0; j < R; ++j) {
        acc[r][j][0] = _mm512_fmadd_ps(xe, we[j], acc[r][j][0]);
        acc[r][j][S - 1] = _mm512_fmadd_ps(xo, wo[j], acc[r][j][S - 1]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < N; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
      const __m512 a = S == 2 ? _mm512_add_ps(acc[r][j][0], acc[r][j][S - 1]) : acc[r][j][0];
      const float sum = bf16_sum16(a);
      float& o = out[r * ldo + j];
      o = accumulate ? o + sum : sum;
    }
}

/// N rows of X times `rows` rows of W, R at a time, then one at a time for the rest; W has
/// `ahead` >= rows valid rows from w on (the tiles prefetch into the next block too).
template <int N>
TTT_TARGET_AVX512 void bf16_rows_avx512(const float* xs, int64_t kp, const uint16_t* w, int64_t ldw, int64_t rows,
                                        int64_t ahead, float* out, int64_t ldo, bool accumulate) {
  // accumulators N x R x S + 2R widened weights + 2 activations stay within the 32 zmm registers
  constexpr int R = N <= 4 ? 4 : 2;
  constexpr int S = N * R <= 8 ? 2 : 1;
  // Each tile prefetches the rows of the next one (itself at the very end): the hardware
  // prefetchers alone left a cold (DRAM) stream at ~10 GB/s on one core.
  int64_t j = 0;
  for (; j + R <= rows; j += R) {
    const uint16_t* next = w + (j + 2 * R <= ahead ? j + R : j) * ldw;
    bf16_tile_avx512_nr<N, R, S>(xs, kp, w + j * ldw, ldw, next, out + j, ldo, accumulate);
  }
  for (; j < rows; ++j) bf16_tile_avx512_nr<N, 1, 2>(xs, kp, w + j * ldw, ldw, w + j * ldw, out + j, ldo, accumulate);
}

/// The exact tile: n (1..8) rows of split-packed X times `rows` rows of W (`ahead` >= rows of
/// them valid from w on, for the prefetches).
inline void bf16_tile_avx512(int64_t n, const float* xs, int64_t kp, const uint16_t* w, int64_t ldw, int64_t rows,
                             int64_t ahead, float* out, int64_t ldo, bool accumulate) {
  with_rows8(n, [&](auto N) { bf16_rows_avx512<decltype(N)::value>(xs, kp, w, ldw, rows, ahead, out, ldo, accumulate); });
}

// ---- the GEMM for large n: W packed (widened, transposed) into panels of 48 rows --------------

/// Rows of W per packed panel, and rows of X per micro-tile (8 x 48 outputs in 24 registers).
inline constexpr int64_t kBf16PanelRows = 48;
inline constexpr int64_t kBf16MicroRows = 8;

/// The gather of a panel's 48 rows (rows of them real, row stride ldw, a multiple of 2): for the
/// 16 rows of vector v, idx[v] holds each row's offset in 32-bit words and valid[v] the real ones.
TTT_TARGET_AVX512 inline void bf16_panel_gather(int64_t ldw, int64_t rows, __m512i idx[3], __mmask16 valid[3]) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i half_stride = _mm512_set1_epi32(int32_t(ldw / 2));
  for (int v = 0; v < 3; ++v) {
    idx[v] = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(16 * v)), half_stride);
    valid[v] = first_lanes(rows - 16 * v);
  }
}

/// Stores (or, with `add`, adds) the MR x 48 accumulators of a micro-tile to out (row stride ldo),
/// the columns c < cols only.
template <int MR>
TTT_TARGET_AVX512 inline void bf16_store_tile(const __m512 (&acc)[MR][3], float* out, int64_t ldo, int64_t cols,
                                              bool add) {
  __mmask16 valid[3];
#pragma GCC unroll 3
  for (int v = 0; v < 3; ++v) valid[v] = first_lanes(cols - 16 * v);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      float* o = out + r * ldo + 16 * v;
      __m512 val = acc[r][v];
      if (add) val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(valid[v], o));
      _mm512_mask_storeu_ps(o, valid[v], val);
    }
}

/// Packs W rows [0, rows) (rows <= 48; the missing ones as zeros), inputs [0, kc), of the matrix
/// at w (row stride ldw, a multiple of 2; w 4-byte aligned) into bp as fp32 [kc rounded up to
/// even][48]: row p of the panel is W(:, p), the column the micro-tile multiplies by x(r, p).
/// A gather reads the pair (p, p+1) of 16 rows as 32-bit lanes; shift and AND split it into the
/// two columns, as in the dot-product tiles.
TTT_TARGET_AVX512 inline void bf16_pack_panel(const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc, float* bp) {
  const __m512i high = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  __m512i idx[3];
  __mmask16 valid[3];
  bf16_panel_gather(ldw, rows, idx, valid);
  for (int64_t p = 0; p < kc; p += 2) {
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) {
      const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid[v], idx[v], w + p, 4);
      _mm512_store_ps(bp + p * 48 + 16 * v, _mm512_castsi512_ps(_mm512_slli_epi32(g, 16)));
      _mm512_store_ps(bp + (p + 1) * 48 + 16 * v, _mm512_castsi512_ps(_mm512_and_si512(g, high)));
    }
  }
}

/// out(r, c) (=|+=) sum_p x(r, p) bp(p, c) for MR rows r (x row stride ldx) and the columns c < 48
/// that `cols` allows (the rest of the panel is padding): 3 x MR accumulators.
template <int MR>
TTT_TARGET_AVX512 void bf16_micro_tile(const float* x, int64_t ldx, const float* bp, int64_t kc, float* out, int64_t ldo,
                                       int64_t cols, bool add) {
  __m512 acc[MR][3];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m512 b0 = _mm512_load_ps(bp + p * 48), b1 = _mm512_load_ps(bp + p * 48 + 16),
                 b2 = _mm512_load_ps(bp + p * 48 + 32);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + p]);
      acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(a, b2, acc[r][2]);
    }
  }
  bf16_store_tile<MR>(acc, out, ldo, cols, add);
}

/// The micro-tile for n (1..8) rows of X.
inline void bf16_micro(int64_t n, const float* x, int64_t ldx, const float* bp, int64_t kc, float* out, int64_t ldo,
                       int64_t cols, bool add) {
  with_rows8(n, [&](auto MR) { bf16_micro_tile<decltype(MR)::value>(x, ldx, bp, kc, out, ldo, cols, add); });
}

// ---- AVX512_BF16 (`vdpbf16ps`) for large n, the activations rounded to bf16 too (opt-in) -------

#define TTT_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,fma")))

/// AVX512_BF16 (with F + BW), enabled by the OS.
inline bool cpu_has_avx512bf16() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return cpu_has_avx512bw() && __builtin_cpu_supports("avx512bf16");
  }();
  return yes;
}

/// to_bf16 of 16 lanes (nearest, ties to even; NaN stays a quiet NaN), each result in its lane's
/// high half.
TTT_TARGET_AVX512BF16 inline __m512i bf16_round16(__m512i u) {
  const __m512i r = _mm512_add_epi32(
      u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)), _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
}

/// x[0 .. k) -> k/2 (rounded up) bf16 pairs: input 2i in the low half of word i, 2i + 1 in the
/// high half, a zero past k; each value rounded as to_bf16 does.
TTT_TARGET_AVX512BF16 inline void bf16_pairs_avx512(const float* x, int64_t k, uint32_t* out) {
  const __m512i even_idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_idx = _mm512_add_epi32(even_idx, _mm512_set1_epi32(1));
  const __m512i high = _mm512_set1_epi32(int32_t(0xFFFF0000u));
  for (int64_t p = 0; p < k; p += 32) {  // 32 inputs: the even ones and the odd ones, rounded, interleaved by halves
    const int64_t left = k - p;           // the last block reads zeros past k (masked loads)
    const __mmask16 ma = first_lanes(left), mb = first_lanes(left - 16);
    const __m512i a = _mm512_maskz_loadu_epi32(ma, static_cast<const void*>(x + p)),
                  b = _mm512_maskz_loadu_epi32(mb, static_cast<const void*>(x + p + 16));
    const __m512i e = bf16_round16(_mm512_permutex2var_epi32(a, even_idx, b)),
                  o = bf16_round16(_mm512_permutex2var_epi32(a, odd_idx, b));
    _mm512_mask_storeu_epi32(static_cast<void*>(out + p / 2), first_lanes((left + 1) / 2),
                             _mm512_or_si512(_mm512_srli_epi32(e, 16), _mm512_and_si512(o, high)));
  }
}

/// Packs W rows [0, rows) (rows <= 48; the missing ones as zeros), inputs [0, kc) (kc even, or the
/// pair past it in W's zero padding), of the matrix at w (row stride ldw) into bp as kc/2 rows of
/// 48 input pairs, row q holding W(c, 2q) | W(c, 2q+1) << 16 for c < 48: the layout `vdpbf16ps`
/// multiplies by a broadcast pair of x. The pairs are W's own 32-bit words, gathered.
TTT_TARGET_AVX512BF16 inline void bf16_pack_panel_pairs(const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc,
                                                        uint32_t* bp) {
  __m512i idx[3];
  __mmask16 valid[3];
  bf16_panel_gather(ldw, rows, idx, valid);
  for (int64_t p = 0; p < kc; p += 2) {
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v)
      _mm512_store_si512(static_cast<void*>(bp + p / 2 * 48 + 16 * v),
                         _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid[v], idx[v], w + p, 4));
  }
}

/// out(r, c) (=|+=) sum_p x(r, p) w(c, p) for MR rows r of bf16 pairs (xb, row stride ldxb words)
/// and the columns c < 48 that `cols` allows, from a panel of bf16_pack_panel_pairs: 3 x MR
/// accumulators, one `vdpbf16ps` per 16 outputs and input pair (odd product added first, then the
/// even one, each rounded; bf16 denormals read as zero).
template <int MR>
TTT_TARGET_AVX512BF16 void bf16_dp_micro_tile(const uint32_t* xb, int64_t ldxb, const uint32_t* bp, int64_t pairs,
                                              float* out, int64_t ldo, int64_t cols, bool add) {
  __m512 acc[MR][3];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 3
    for (int v = 0; v < 3; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < pairs; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(static_cast<const void*>(bp + q * 48)),
                   b1 = (__m512bh)_mm512_load_si512(static_cast<const void*>(bp + q * 48 + 16)),
                   b2 = (__m512bh)_mm512_load_si512(static_cast<const void*>(bp + q * 48 + 32));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int32_t(xb[r * ldxb + q]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, b1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], a, b2);
    }
  }
  bf16_store_tile<MR>(acc, out, ldo, cols, add);
}

/// The `vdpbf16ps` micro-tile for n (1..8) rows of X.
inline void bf16_dp_micro(int64_t n, const uint32_t* xb, int64_t ldxb, const uint32_t* bp, int64_t pairs, float* out,
                          int64_t ldo, int64_t cols, bool add) {
  with_rows8(n, [&](auto MR) { bf16_dp_micro_tile<decltype(MR)::value>(xb, ldxb, bp, pairs, out, ldo, cols, add); });
}

#undef TTT_TARGET_AVX512BF16

#undef TTT_TARGET_AVX512
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else

inline bool cpu_has_avx512bw() { return false; }
// Never called (the CPU checks above say no); declared so that the dispatcher compiles everywhere.
inline void bf16_tile_avx512(int64_t, const float*, int64_t, const uint16_t*, int64_t, int64_t, int64_t, float*, int64_t,
                             bool) {}
inline constexpr int64_t kBf16PanelRows = 48;
inline constexpr int64_t kBf16MicroRows = 8;
inline void bf16_pack_panel(const uint16_t*, int64_t, int64_t, int64_t, float*) {}
inline void bf16_micro(int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t, bool) {}
inline bool cpu_has_avx512bf16() { return false; }
inline void bf16_pairs_avx512(const float*, int64_t, uint32_t*) {}
inline void bf16_pack_panel_pairs(const uint16_t*, int64_t, int64_t, int64_t, uint32_t*) {}
inline void bf16_dp_micro(int64_t, const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t, int64_t, bool) {}

#endif

}  // namespace ttt::kernels::detail

#undef TTT_BF16_X86_TILES
