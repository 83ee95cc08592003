#pragma once
/// \file kernels/bf16.hpp
/// bf16-stored weights with fp32 activations and fp32 accumulation (issue 15, item 1):
/// - `to_bf16` / `from_bf16`: fp32 -> bf16 rounding to nearest even (NaN stays NaN, denormals are
///   rounded, not flushed), bf16 -> fp32 exact; one value or a buffer;
/// - `Bf16Matrix`: a [rows, cols] weight in bf16, row-major (PyTorch's [out, in] layout);
/// - `bf16_matmul_nt(X, W, out)`: out(n, m) = X(n, k) W^T, the library's `X * W.transpose()` for a
///   projection, reading half the bytes of the fp32 weight.
///
/// The kernels, each tested against the plain twin `bf16_matmul_nt(backend::scalar, ...)` (the
/// specification; tests/kernels/test_bf16.cpp):
///
/// | `Bf16Kernel` | n <= 24 (decode, small batches) | n > 24 (prefill) |
/// |---|---|---|
/// | `avx512` (runtime check: AVX-512 F+BW) | dot-product tiles streaming W once per 8 rows of X (kernels/bf16_avx512.hpp) | W packed to fp32 in 48-row panels, 8 x 48 FMA micro-tiles |
/// | `portable` | dot products in xsimd (the instruction set chosen at run time, kernels/simd_table.hpp), one weight row at a time | W widened to fp32 block by block, the run-time table's GEMM on each block (kernels/gemm.hpp) |
/// | `avx512_bf16` (runtime check: AVX512_BF16; opt-in, `set_bf16_activations`) | as `avx512` | X rounded to bf16 pairs, W's pairs gathered into 48-row panels, 8 x 48 `vdpbf16ps` micro-tiles |
/// | `automatic` | `avx512` where the CPU has it, `portable` elsewhere; `avx512_bf16` after the opt-in | |
///
/// Accuracy: every exact path multiplies the fp32 activations by the exact fp32 values of the bf16
/// weights and sums in fp32, as the twin does, in another order (|difference| <= 2 gamma_k
/// sum_p |x_p w_p|, tested). What bf16 weights cost against the fp32 weights they were rounded
/// from: bf16 keeps 8 significant bits, so a weight errs by up to 2^-8 of its binade (~1.6e-3 of
/// itself rms), and so does an output: relative Frobenius error 1.65e-3 measured (Gaussian X and
/// W, k = 768). `avx512_bf16` rounds the activations of a large product to bf16 too (as to_bf16;
/// a second rounding error of the same size) and then computes what the twin computes on them
/// (tested; bf16 denormals read as zero). It is not the default: on the Sapphire-Rapids-class Xeon
/// measured `vdpbf16ps` retires one per 2 cycles, 32 multiply-adds, half the 2 x 16 of
/// `vfmadd231ps` (38 vs 79 GMAC/s on one core), so it is slower as well as less accurate there;
/// on the AMD EPYC (Zen 5) measured it has twice the multiply-adds (78-80 vs 36-41 GMAC/s).
///
/// Decode is memory bound: a tile reads each weight row once for all n rows of X and widens 32 bf16
/// weights with one shift and one AND. Prefill is compute bound: W is widened once per panel and
/// reused by every row of X. The work is split over OpenMP threads by blocks of output columns (W
/// rows), each thread a contiguous range, when it is large enough to pay for a parallel region.
///
/// \code
/// ttt::kernels::Bf16Matrix W(w_fp32);              // [out, in], rounded once
/// ttt::Mat y(x.rows(), W.rows());
/// ttt::kernels::bf16_matmul_nt(ttt::backend::cpu_default{}, x, W, y);   // y = x W^T
/// \endcode
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "backend.hpp"
#include "bf16_avx512.hpp"
#include "gemm.hpp"
#include "simd_table.hpp"

namespace ttt::kernels {

// ---- conversions --------------------------------------------------------------------------------

/// fp32 -> bf16 bits, rounding to nearest, ties to even. NaN stays a (quiet) NaN with its sign;
/// +-inf stay infinite; values past the largest bf16 (3.3895e38) by half an ulp or more become
/// infinite; denormals are rounded like any other value (no flush to zero).
constexpr uint16_t to_bf16(float x) noexcept {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // no wrap: u <= 0xFF800000 here
}
/// bf16 bits -> fp32: the top half of a float, so exact.
constexpr float from_bf16(uint16_t b) noexcept { return std::bit_cast<float>(uint32_t(b) << 16); }

/// y[i] = to_bf16(x[i]) for i < n.
inline void to_bf16(const float* x, uint16_t* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = to_bf16(x[i]);
}
/// y[i] = from_bf16(b[i]) for i < n.
inline void from_bf16(const uint16_t* b, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = from_bf16(b[i]);
}

namespace detail {
/// std::allocator with a fixed alignment (the AVX-512 tiles read whole 64-byte lines, aligned).
template <class T, std::size_t Align>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, Align>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, Align>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{Align})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{Align}); }
  friend bool operator==(const AlignedAllocator&, const AlignedAllocator&) noexcept { return true; }
};
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T, 64>>;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace detail

// ---- the weight -------------------------------------------------------------------------------

/// A [rows, cols] matrix of bf16 values, row-major: a projection weight in PyTorch's [out, in]
/// layout, applied as X W^T. Rows start on 64-byte boundaries: the row stride is `cols` rounded up
/// to 32 values, the padding is zero (the kernels read whole 32-value blocks).
class Bf16Matrix {
 public:
  /// Values per row-stride unit: the stride is a multiple of this.
  static constexpr int64_t kStrideAlign = 32;
  using Storage = detail::AlignedVector<uint16_t>;

  Bf16Matrix() = default;
  /// rows x cols zeros.
  Bf16Matrix(int64_t rows, int64_t cols)
      : rows_(rows), cols_(cols), stride_(detail::ceil_div(cols, kStrideAlign) * kStrideAlign) {
    if (rows < 0 || cols < 0)
      throw ShapeError("Bf16Matrix: negative shape " + shape_str({rows, cols}));
    data_.assign(static_cast<std::size_t>(rows_ * stride_), uint16_t(0));
  }
  /// An fp32 matrix (any Eigen storage order, a Map, a block), each value rounded with to_bf16.
  template <class Derived>
  explicit Bf16Matrix(const Eigen::MatrixBase<Derived>& w) : Bf16Matrix(int64_t(w.rows()), int64_t(w.cols())) {
    static_assert(std::is_same_v<typename Derived::Scalar, float>,
                  "Bf16Matrix: built from a float matrix (cast a double one with .cast<float>() first)");
    for (int64_t i = 0; i < rows_; ++i) {
      uint16_t* d = row(i);
      for (int64_t j = 0; j < cols_; ++j) d[j] = to_bf16(w(Eigen::Index(i), Eigen::Index(j)));
    }
  }
  /// From bf16 bits already (a BF16 tensor of a checkpoint): row-major, `cols` values per row.
  static Bf16Matrix from_bits(int64_t rows, int64_t cols, const uint16_t* bits) {
    Bf16Matrix m(rows, cols);
    for (int64_t i = 0; i < rows; ++i) std::copy_n(bits + i * cols, cols, m.row(i));
    return m;
  }

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  /// Distance between rows, in values: cols rounded up to kStrideAlign.
  int64_t stride() const { return stride_; }
  /// Bytes of the weights themselves (rows x cols x 2; the padding excluded).
  std::size_t bytes() const { return static_cast<std::size_t>(rows_ * cols_) * 2; }
  const uint16_t* row(int64_t i) const { return data_.data() + i * stride_; }
  uint16_t* row(int64_t i) { return data_.data() + i * stride_; }
  /// Element (i, j) as a float (exact).
  float operator()(int64_t i, int64_t j) const { return from_bf16(row(i)[j]); }
  /// The fp32 matrix these bf16 values are (exact).
  Mat to_float() const {
    Mat m(rows_, cols_);
    for (int64_t i = 0; i < rows_; ++i) from_bf16(row(i), m.row(i).data(), static_cast<std::size_t>(cols_));
    return m;
  }
  const Storage& storage() const { return data_; }

 private:
  int64_t rows_ = 0, cols_ = 0, stride_ = 0;
  Storage data_;
};

// ---- the product --------------------------------------------------------------------------------

/// Which implementation of `bf16_matmul_nt` runs (table at the top of this file).
enum class Bf16Kernel { automatic, portable, avx512, avx512_bf16 };

/// Whether this CPU (and compiler) can run `k`.
inline bool bf16_kernel_available(Bf16Kernel k) {
  switch (k) {
    case Bf16Kernel::automatic:
    case Bf16Kernel::portable: return true;
    case Bf16Kernel::avx512: return detail::cpu_has_avx512bw();
    case Bf16Kernel::avx512_bf16: return detail::cpu_has_avx512bf16();
  }
  return false;
}
inline const char* bf16_kernel_name(Bf16Kernel k) {
  switch (k) {
    case Bf16Kernel::automatic: return "automatic";
    case Bf16Kernel::portable: return "portable";
    case Bf16Kernel::avx512: return "avx512";
    case Bf16Kernel::avx512_bf16: return "avx512-bf16";
  }
  return "?";
}

namespace detail {
inline std::atomic<bool>& bf16_activations_flag() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace detail

/// Whether `automatic` rounds the activations of large products (prefill: more than kDotMaxRows
/// rows) to bf16 too, running `avx512_bf16`. Off by default: every product then multiplies the
/// fp32 activations exactly. Process-wide, like the thread count.
inline bool bf16_activations() { return detail::bf16_activations_flag().load(std::memory_order_relaxed); }

/// Opt in to (or out of) bf16 activations in large bf16 products: faster where `vdpbf16ps` has
/// twice the multiply-adds of an fp32 FMA (the AMD EPYC of benchmarks/README.md, "bf16
/// activations"), slower where it has half (the Xeon measured), and a second rounding error the
/// size of the weights'. Throws Error on a CPU without AVX512_BF16 (no silent fall-back to exact
/// activations).
inline void set_bf16_activations(bool on) {
  if (on && !detail::cpu_has_avx512bf16())
    throw Error("bf16 activations: this CPU has no AVX512_BF16 (vdpbf16ps); the products stay exact without the option");
  detail::bf16_activations_flag().store(on, std::memory_order_relaxed);
}

/// What `automatic` runs here for large products.
inline Bf16Kernel bf16_kernel_chosen() {
  if (bf16_activations()) return Bf16Kernel::avx512_bf16;
  return detail::cpu_has_avx512bw() ? Bf16Kernel::avx512 : Bf16Kernel::portable;
}

namespace detail {

/// Rows of X one tile takes (the tiles are compiled for 1..8).
constexpr int64_t kTileRows = 8;
/// Up to this many rows of X the dot-product tiles (groups of 8 rows, W streamed once per group)
/// beat the GEMMs (AVX-512 panels; portable: widened W + Eigen): measured crossover 24-32 rows at
/// m = 768 .. 32000, k = 768, on 1 and 2 threads (SSE2 Eigen: the tiles win at 48 too).
constexpr int64_t kDotMaxRows = 24;
/// Rows of W per task of the dot-product path: small, so that the tasks split evenly over the
/// threads (each thread streams a contiguous range of W).
constexpr int64_t kDotBlockCols = 32;
/// Threads only for products with at least this many m x k x (n + 16) (~ weight loads + MACs):
/// below it the start of a parallel region costs more than it saves.
constexpr double kParallelWork = 4e6;

inline void check_shapes(const char* fn, const CMatRef& X, const Bf16Matrix& W, const MatRef& out) {
  if (X.cols() != W.cols())
    throw ShapeError(std::string(fn) + ": X is " + shape_str({X.rows(), X.cols()}) + " but W is " +
                     shape_str({W.rows(), W.cols()}) + " (X's columns must be W's columns: out = X W^T)");
  if (out.rows() != X.rows() || out.cols() != W.rows())
    throw ShapeError(std::string(fn) + ": out must be " + shape_str({X.rows(), W.rows()}) + ", is " +
                     shape_str({out.rows(), out.cols()}));
}

/// One row of X packed "split": per block of P values, the P/2 even ones then the P/2 odd ones;
/// zeros past k up to kp (the layout the dot-product tiles widen W into).
inline void pack_split(const float* x, int64_t k, int64_t kp, int64_t P, float* xs) {
  const int64_t h = P / 2;
  for (int64_t b = 0; b < kp; b += P)
    for (int64_t i = 0; i < h; ++i) {
      const int64_t e = b + 2 * i, o = e + 1;
      xs[b + i] = e < k ? x[e] : 0.0f;
      xs[b + h + i] = o < k ? x[o] : 0.0f;
    }
}

// -- the three kinds of tile, as the driver below sees them --

struct PortableTiles {
  using XElem = float;
  // the xsimd tiles of the active table (kernels/simd_table.hpp: isa::bf16_rows), P = 2 x its width
  static void pack(const float* x, int64_t k, int64_t kp, float* xs) {
    pack_split(x, k, kp, 2 * int64_t(simd_kernels().width), xs);
  }
  static void tile(int64_t n, const float* xs, int64_t kp, const uint16_t* w, int64_t ldw, int64_t rows, int64_t ahead,
                   float* out, int64_t ldo, bool accumulate) {
    simd_kernels().bf16_rows(n, xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
  }
};
struct Avx512Tiles {
  using XElem = float;
  static void pack(const float* x, int64_t k, int64_t kp, float* xs) { pack_split(x, k, kp, 32, xs); }
  static void tile(int64_t n, const float* xs, int64_t kp, const uint16_t* w, int64_t ldw, int64_t rows, int64_t ahead,
                   float* out, int64_t ldo, bool accumulate) {
    bf16_tile_avx512(n, xs, kp, w, ldw, rows, ahead, out, ldo, accumulate);
  }
};
/// out [+]= X W^T as dot products of X rows with W rows (the path for n <= kDotMaxRows): X is
/// packed once by the calling thread; tasks of kDotBlockCols rows of W are split into contiguous
/// ranges over the threads; a task runs the tiles over groups of 8 rows of X.
template <class Tiles>
void bf16_dot_product(const CMatRef& X, const Bf16Matrix& W, MatRef& out, bool accumulate) {
  using XElem = typename Tiles::XElem;
  const int64_t n = X.rows(), m = W.rows(), k = W.cols(), kp = W.stride(), ldo = out.outerStride();
  thread_local AlignedVector<XElem> packed;
  if (packed.size() < static_cast<std::size_t>(n * kp)) packed.resize(static_cast<std::size_t>(n * kp));
  for (int64_t r = 0; r < n; ++r) Tiles::pack(X.row(r).data(), k, kp, packed.data() + r * kp);
  const XElem* xs = packed.data();
  const int64_t tasks = ceil_div(m, kDotBlockCols);
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * kDotBlockCols, nw = std::min(kDotBlockCols, m - j0);
      for (int64_t g = 0; g < n; g += kTileRows)
        Tiles::tile(std::min(kTileRows, n - g), xs + g * kp, kp, W.row(j0), W.stride(), nw, m - j0,
                    out.data() + g * ldo + j0, ldo, accumulate);
    }
  };
  // one contiguous range of tasks per thread (core/parallel.hpp) when the product is large enough
  if (double(m) * double(kp) * double(n + 16) >= kParallelWork) parallel_ranges(tasks, 2, run);
  else run(0, tasks);
}

/// The AVX-512 GEMM's two kinds of panels. FmaPanels: fp32 activations, W widened to fp32
/// [kc][48] panels, FMA micro-tiles. DpPanels: activations rounded to bf16 pairs, W's own pairs
/// gathered into [kc/2][48] panels, `vdpbf16ps` micro-tiles.
struct FmaPanels {
  using XElem = float;
  using PanelElem = float;
  static int64_t x_offset(int64_t pc) { return pc; }
  static int64_t panel_elems(int64_t kc2) { return kc2 * kBf16PanelRows; }
  static void pack(const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc, float* bp) {
    bf16_pack_panel(w, ldw, rows, kc, bp);
  }
  static void micro(int64_t n, const float* x, int64_t ldx, const float* bp, int64_t kc, float* out, int64_t ldo,
                    int64_t cols, bool add) {
    bf16_micro(n, x, ldx, bp, kc, out, ldo, cols, add);
  }
};
struct DpPanels {
  using XElem = uint32_t;
  using PanelElem = uint32_t;
  static int64_t x_offset(int64_t pc) { return pc / 2; }  // pc is a multiple of the (even) kc
  static int64_t panel_elems(int64_t kc2) { return kc2 / 2 * kBf16PanelRows; }
  static void pack(const uint16_t* w, int64_t ldw, int64_t rows, int64_t kc, uint32_t* bp) {
    bf16_pack_panel_pairs(w, ldw, rows, kc, bp);
  }
  static void micro(int64_t n, const uint32_t* x, int64_t ldx, const uint32_t* bp, int64_t kc, float* out, int64_t ldo,
                    int64_t cols, bool add) {
    bf16_dp_micro(n, x, ldx, bp, (kc + 1) / 2, out, ldo, cols, add);
  }
};

/// out [+]= X W^T for large n on AVX-512, X given as n rows of G::XElem (row stride ldx): each
/// thread takes a contiguous range of the 48-row panels of W; per 4 panels and per kc inputs it
/// packs them (FmaPanels: fp32, ~600 KB at k = 768, in L2) and runs the 8 x 48 micro-tiles over
/// every row of X.
template <class G>
void bf16_gemm_panels(const typename G::XElem* x, int64_t ldx, int64_t n, const Bf16Matrix& W, MatRef& out,
                      bool accumulate) {
  constexpr int64_t NR = kBf16PanelRows, MR = kBf16MicroRows, kPanelsPerBlock = 4;
  const int64_t m = W.rows(), k = W.cols();
  const int64_t kc = k <= 1024 ? k : 512, kc2 = kc + (kc & 1);  // the packing writes input pairs
  const int64_t panels = ceil_div(m, NR), ldo = out.outerStride();
  auto run = [&](int64_t q0, int64_t q1) {
    thread_local AlignedVector<typename G::PanelElem> bp;
    const int64_t per_panel = G::panel_elems(kc2);
    if (bp.size() < static_cast<std::size_t>(kPanelsPerBlock * per_panel))
      bp.resize(static_cast<std::size_t>(kPanelsPerBlock * per_panel));
    for (int64_t qb = q0; qb < q1; qb += kPanelsPerBlock) {
      const int64_t nq = std::min(kPanelsPerBlock, q1 - qb);
      for (int64_t pc = 0; pc < k; pc += kc) {
        const int64_t kb = std::min(kc, k - pc);
        for (int64_t q = 0; q < nq; ++q) {
          const int64_t j0 = (qb + q) * NR;
          G::pack(W.row(j0) + pc, W.stride(), std::min(NR, m - j0), kb, bp.data() + q * per_panel);
        }
        for (int64_t i = 0; i < n; i += MR)
          for (int64_t q = 0; q < nq; ++q) {
            const int64_t j0 = (qb + q) * NR;
            G::micro(std::min(MR, n - i), x + i * ldx + G::x_offset(pc), ldx, bp.data() + q * per_panel, kb,
                     out.data() + i * ldo + j0, ldo, std::min(NR, m - j0), accumulate || pc > 0);
          }
      }
    }
  };
  // one contiguous range of panels per thread (core/parallel.hpp) when the product is large enough
  if (double(n) * double(m) * double(k) >= kParallelWork) parallel_ranges(panels, 2, run);
  else run(0, panels);
}

/// out [+]= X W^T for large n, fp32 activations (FMA on widened weights).
inline void bf16_gemm_avx512(const CMatRef& X, const Bf16Matrix& W, MatRef& out, bool accumulate) {
  bf16_gemm_panels<FmaPanels>(X.data(), X.outerStride(), X.rows(), W, out, accumulate);
}

/// out [+]= X W^T for large n with `vdpbf16ps`: X rounded to bf16 pairs first (by the calling
/// thread, vectorised), then the panels.
inline void bf16_gemm_avx512bf16(const CMatRef& X, const Bf16Matrix& W, MatRef& out, bool accumulate) {
  const int64_t n = X.rows(), k = W.cols(), ldx = (k + 1) / 2;
  thread_local AlignedVector<uint32_t> xb;
  if (xb.size() < static_cast<std::size_t>(n * ldx)) xb.resize(static_cast<std::size_t>(n * ldx));
  for (int64_t r = 0; r < n; ++r) bf16_pairs_avx512(X.row(r).data(), k, xb.data() + r * ldx);
  bf16_gemm_panels<DpPanels>(xb.data(), ldx, n, W, out, accumulate);
}

/// Bytes of fp32 weights one block of bf16_widen_gemm widens at most (per thread).
constexpr int64_t kWidenBlockBytes = int64_t(4) << 20;
/// bf16_widen_gemm cuts W into a multiple of this many blocks: as many on each of 1, 2 or 4 threads.
constexpr int64_t kWidenBlocksMultiple = 4;

/// out [+]= X W^T with W widened to fp32 in blocks of rows (at most kWidenBlockBytes) and Eigen's
/// GEMM on each block, one block per thread at a time: the portable path for n > kDotMaxRows. The
/// GEMM is kernels::gemm(backend::simd): the active table's (AVX2 + FMA on a CPU without
/// AVX-512, whatever the build's flags) where there is one, else kernels::gemm's plain twin.
/// Each GEMM packs all of X again, so the blocks are as large as that bound allows, in a multiple
/// of kWidenBlocksMultiple, so that 2 or 4 threads get equal shares. The cut depends on W's shape
/// only: Eigen's blocking of a product, and so its sums' order, depends on the block's width, and
/// the result must not depend on the thread count.
template <class = void>  // compiled where it is called (its GEMM twin is kernels::gemm's template)
void bf16_widen_gemm(const CMatRef& X, const Bf16Matrix& W, MatRef& out, bool accumulate) {
  const int64_t m = W.rows(), k = W.cols();
  const int64_t cap = std::max<int64_t>(16, kWidenBlockBytes / (4 * std::max<int64_t>(k, 1)) / 16 * 16);
  const int64_t cut = kWidenBlocksMultiple * ceil_div(m, kWidenBlocksMultiple * cap);
  const int64_t wb = std::min(cap, ceil_div(ceil_div(m, cut), 16) * 16), blocks = ceil_div(m, wb);
  auto run = [&](int64_t t0, int64_t t1) {
    thread_local Mat wf;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * wb, nw = std::min(wb, m - j0);
      ensure_size(wf, wb, k);
      for (int64_t j = 0; j < nw; ++j) from_bf16(W.row(j0 + j), wf.row(j).data(), static_cast<std::size_t>(k));
      gemm(backend::simd{}, false, true, X.rows(), nw, k, X.data(), X.outerStride(), wf.data(), wf.outerStride(),
           out.data() + j0, out.outerStride(), accumulate);
    }
  };
  // one contiguous range of blocks per thread (core/parallel.hpp) when the product is large enough
  // (Eigen's GEMM runs single-threaded inside the region)
  if (double(X.rows()) * double(m) * double(k) >= kParallelWork) parallel_ranges(blocks, 2, run);
  else run(0, blocks);
}

}  // namespace detail

/// The specification: out(i, j) [+]= sum_p X(i, p) from_bf16(W(j, p)), p = 0 .. k-1 in order, in
/// fp32. out = X W^T, or out += X W^T with `accumulate`. Every other path is tested against it.
inline void bf16_matmul_nt(backend::scalar, CMatRef X, const Bf16Matrix& W, MatRef out, bool accumulate = false) {
  detail::check_shapes("bf16_matmul_nt", X, W, out);
  for (Eigen::Index i = 0; i < X.rows(); ++i)
    for (int64_t j = 0; j < W.rows(); ++j) {
      const uint16_t* w = W.row(j);
      float acc = 0.0f;
      for (int64_t p = 0; p < W.cols(); ++p) acc += X(i, Eigen::Index(p)) * from_bf16(w[p]);
      out(i, Eigen::Index(j)) = accumulate ? out(i, Eigen::Index(j)) + acc : acc;
    }
}

/// out (n, m) = X (n, k) W^T, or out += X W^T with `accumulate`, W a [m, k] bf16 matrix, by the
/// kernel asked for (`automatic`: the fastest exact one this CPU has, or `avx512_bf16` after
/// set_bf16_activations(true)). out must not overlap X.
/// Throws ShapeError on mismatched shapes, Error when `kernel` needs an instruction set this CPU
/// lacks (bf16_kernel_available). Uses the calling thread's OpenMP threads for large products.
/// (A template so that it is compiled where it is called: its portable path's GEMM twin is
/// kernels::gemm's, a template; the backend-tag entry below likewise.)
template <class = void>
void bf16_matmul_nt(Bf16Kernel kernel, CMatRef X, const Bf16Matrix& W, MatRef out, bool accumulate = false) {
  detail::check_shapes("bf16_matmul_nt", X, W, out);
  if (!bf16_kernel_available(kernel))
    throw Error(std::string("bf16_matmul_nt: kernel '") + bf16_kernel_name(kernel) +
                "' needs an instruction set this CPU does not have (see bf16_kernel_available)");
  if (X.rows() == 0 || W.rows() == 0) return;
  if (W.cols() == 0) {
    if (!accumulate) out.setZero();
    return;
  }
  if (kernel == Bf16Kernel::automatic) kernel = bf16_kernel_chosen();
  const bool small = X.rows() <= detail::kDotMaxRows;
  if (kernel == Bf16Kernel::avx512_bf16) {  // a few rows (decode) are memory bound: exact activations
    if (small) return detail::bf16_dot_product<detail::Avx512Tiles>(X, W, out, accumulate);
    return detail::bf16_gemm_avx512bf16(X, W, out, accumulate);
  }
  if (kernel == Bf16Kernel::avx512) {
    if (small) return detail::bf16_dot_product<detail::Avx512Tiles>(X, W, out, accumulate);
    return detail::bf16_gemm_avx512(X, W, out, accumulate);
  }
  if (small) return detail::bf16_dot_product<detail::PortableTiles>(X, W, out, accumulate);
  detail::bf16_widen_gemm(X, W, out, accumulate);
}

/// The backend-tag entry (kernels/backend.hpp): `automatic`.
template <class = void>
void bf16_matmul_nt(backend::simd, CMatRef X, const Bf16Matrix& W, MatRef out, bool accumulate = false) {
  bf16_matmul_nt(Bf16Kernel::automatic, X, W, out, accumulate);
}

}  // namespace ttt::kernels
