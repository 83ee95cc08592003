#pragma once
/// \file blocks/linear.hpp
/// y = x W^T (or y += x W^T): torch's Linear without bias, W in its [out, in] layout, x (n, in)
/// and y (n, out) row-major views. Many rows (prefill, training) go to Eigen's GEMM through
/// blocks::matmul (compiled for the CPU's instruction set where the program has it); one float row
/// (decode) and 2 to 64 rows in float (batched decode: one token of each of n sequences) go to
/// kernels::rows_wt, which reads W once for all the rows, where Eigen's
/// GEMM would pack (copy) W first and run its kernel on a thin panel: 2-4x faster at n = 8
/// (benchmarks/README.md, "Batched decode"). Both compute the same sums in another order.
/// A weight with a bf16 copy (a model run with bf16 weights, core/weight_dtype.hpp) goes to
/// kernels::bf16_matmul_nt instead, for any number of rows.
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/bf16.hpp"
#include "../kernels/simd.hpp"
#include "matmul.hpp"

namespace ttt::blocks {

/// The most rows kernels::rows_wt takes (its W row stays in L1 across all of them; X stays in L2).
inline constexpr Eigen::Index kFewRowsMax = 64;

/// One float row (decode of one sequence) always goes to the kernel too: Eigen's matrix-vector
/// product runs on one thread, the kernel splits the weight rows over the OpenMP threads (a row's
/// products are summed in the same order whatever tile it is in). `few_rows`: the caller is
/// batched decode (rows of different sequences). Only then do 2..64 float rows go to the kernel:
/// every other caller (prefill, training, their tests' bit-for-bit trajectories) keeps Eigen's
/// summation order.
template <class S>
void linear(CRefT<S> x, CRefT<S> W, RefT<S> y, bool accumulate = false, bool few_rows = false) {
  if constexpr (std::is_same_v<S, float>) {
    const bool kernel_rows = x.rows() == 1 || (few_rows && x.rows() >= 2 && x.rows() <= kFewRowsMax);
    if (kernel_rows && W.outerStride() == W.cols()) {
      kernels::rows_wt(backend::cpu_default{}, x.data(), x.outerStride(), size_t(x.rows()), size_t(x.cols()), W.data(),
                       size_t(W.rows()), y.data(), y.outerStride(), accumulate);
      return;
    }
  }
  matmul(y, x, W.transpose(), accumulate);
}

/// y = x W (or y += x W) for a few rows x (an inner learner's mini-batch: its keys, queries or
/// hidden rows) and a matrix W (k, m), row-major: float rows (up to kFewRowsMax) through
/// kernels::rows_w, which reads W in place where Eigen's GEMM would copy it into its packed layout
/// for every product; other scalars (double: the checks' twins) and more rows through Eigen.
template <class S>
void rows_times(CRefT<S> x, CRefT<S> W, RefT<S> y, bool accumulate = false) {
  if constexpr (std::is_same_v<S, float>) {
    if (x.rows() <= kFewRowsMax) {
      kernels::rows_w(backend::cpu_default{}, x.data(), x.outerStride(), size_t(x.rows()), size_t(x.cols()), W.data(),
                      W.outerStride(), size_t(W.cols()), y.data(), y.outerStride(), accumulate);
      return;
    }
  }
  matmul(y, x, W, accumulate);
}

/// y = x^T W (or y += x^T W) for x (k, n) and W (k, m) with few rows k (a mini-batch): a fast
/// weight's gradient, the mini-batch's inputs against its per-token output gradients. As
/// rows_times, float through kernels::rows_w (x read transposed in place), else Eigen.
template <class S>
void xt_times(CRefT<S> x, CRefT<S> W, RefT<S> y, bool accumulate = false) {
  if constexpr (std::is_same_v<S, float>) {
    if (x.rows() <= kFewRowsMax) {
      kernels::rows_w(backend::cpu_default{}, x.data(), 1, size_t(x.cols()), size_t(x.rows()), W.data(),
                      W.outerStride(), size_t(W.cols()), y.data(), y.outerStride(), accumulate, x.outerStride());
      return;
    }
  }
  matmul(y, x.transpose(), W, accumulate);
}

/// Round the float weight `w` to bf16 values in place and return its bf16 copy: afterwards the
/// fp32 products (paths without a bf16 kernel) and the bf16 ones read the same weights.
inline kernels::Bf16Matrix round_to_bf16(Mat& w) {
  kernels::Bf16Matrix b(w);
  w = b.to_float();
  return b;
}

/// linear() of a weight that may have a bf16 copy `W16` (its values rounded to bf16; W holds the
/// same values in S): with one, y [+]= x W16^T in fp32 from the bf16 values, reading half the
/// bytes; without (null), linear(x, W, y, ...). S = float only may have a copy.
template <class S>
void linear(CRefT<S> x, CRefT<S> W, const kernels::Bf16Matrix* W16, RefT<S> y, bool accumulate = false,
            bool few_rows = false) {
  if constexpr (std::is_same_v<S, float>) {
    if (W16) {
      kernels::bf16_matmul_nt(backend::cpu_default{}, x, *W16, y, accumulate);
      return;
    }
  }
  linear<S>(x, W, y, accumulate, few_rows);
}

}  // namespace ttt::blocks
