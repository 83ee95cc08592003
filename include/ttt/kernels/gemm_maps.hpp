#pragma once
/// \file kernels/gemm_maps.hpp
/// C = alpha op(A) op(B) (or C += ...) through Eigen maps, whichever Eigen they come from: the one
/// body of kernels::gemm's plain twin (kernels/gemm.hpp, the build's Eigen) and of the tables' GEMM
/// (include/ttt/precompiled/isa/eigen_gemm.hpp, Eigen compiled for an instruction set in a
/// namespace of its own). It includes no Eigen nor library header: the ISA units include it after
/// their renamed <Eigen/Core>, and its instances differ by the maps' types (no two Eigens share one).
#include <cstddef>

namespace ttt::kernels::detail {

/// kernels::gemm's arguments (kernels/gemm.hpp) on the maps In (const, row-major) and Out with
/// outer strides of type Stride: C (m x n, ldc) (+)= alpha op(A) op(B), op(A) A (m x k, lda) or, `ta`,
/// the transpose of A (k x m); op(B) likewise with `tb`.
template <class In, class Out, class Stride>
void gemm_maps(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const float* a,
               std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc, bool accumulate,
               float alpha) {
  Out C(c, m, n, Stride(ldc));
  const In A(a, ta ? k : m, ta ? m : k, Stride(lda));
  const In B(b, tb ? n : k, tb ? k : n, Stride(ldb));
  const auto run = [&](const auto& opa, const auto& opb) {
    if (alpha == 1.0f) {
      if (accumulate) C.noalias() += opa * opb;
      else C.noalias() = opa * opb;
    } else {
      if (accumulate) C.noalias() += alpha * (opa * opb);
      else C.noalias() = alpha * (opa * opb);
    }
  };
  if (!ta && !tb) run(A, B);
  else if (!ta) run(A, B.transpose());
  else if (!tb) run(A.transpose(), B);
  else run(A.transpose(), B.transpose());
}

}  // namespace ttt::kernels::detail
