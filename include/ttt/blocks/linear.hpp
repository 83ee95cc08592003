#pragma once
/// \file blocks/linear.hpp
/// y = x W^T (or y += x W^T): torch's Linear without bias, W in its [out, in] layout, x (n, in)
/// and y (n, out) row-major views. One row (decode of one sequence) and many rows (prefill,
/// training) go to Eigen (its GEMV, its GEMM); 2 to 64 rows in float (batched decode: one token of
/// each of n sequences) go to kernels::rows_wt, which reads W once for all the rows, where Eigen's
/// GEMM would pack (copy) W first and run its kernel on a thin panel: 2-4x faster at n = 8
/// (benchmarks/README.md, "Batched decode"). Both compute the same sums in another order.
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/simd.hpp"

namespace ttt::blocks {

/// The most rows kernels::rows_wt takes (its W row stays in L1 across all of them; X stays in L2).
inline constexpr Eigen::Index kFewRowsMax = 64;

/// `few_rows`: the caller is batched decode (rows of different sequences). Only then do 2..64
/// float rows go to the kernel: every other caller (prefill, training, their tests' bit-for-bit
/// trajectories) keeps Eigen's summation order.
template <class S>
void linear(CRefT<S> x, CRefT<S> W, RefT<S> y, bool accumulate = false, bool few_rows = false) {
  if constexpr (std::is_same_v<S, float>) {
    if (few_rows && x.rows() >= 2 && x.rows() <= kFewRowsMax && W.outerStride() == W.cols()) {
      kernels::rows_wt(backend::cpu_default{}, x.data(), x.outerStride(), size_t(x.rows()), size_t(x.cols()), W.data(),
                       size_t(W.rows()), y.data(), y.outerStride(), accumulate);
      return;
    }
  }
  if (accumulate) y.noalias() += x * W.transpose();
  else y.noalias() = x * W.transpose();
}

}  // namespace ttt::blocks
