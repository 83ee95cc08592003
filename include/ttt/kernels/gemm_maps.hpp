#pragma once
/// \file kernels/gemm_maps.hpp
/// C = alpha op(A) op(B) (or C += ...) through Eigen maps, whichever Eigen they come from: the one
/// body of kernels::gemm's plain twin (kernels/gemm.hpp, the build's Eigen) and of the tables' GEMM
/// (include/ttt/precompiled/isa/eigen_gemm.hpp, Eigen compiled for an instruction set in a
/// namespace of its own). It includes no Eigen nor library header: the ISA units include it after
/// their renamed <Eigen/Core>, and its instances differ by the maps' types (no two Eigens share one).
#include <cstddef>
#include <vector>

namespace ttt::kernels::detail {

/// Whether C (+)= alpha A B may leave alpha out: alpha is 1, and a constant where the scalar is
/// recorded for differentiation (ad::Real: a 1 that depends on a parameter still carries its
/// gradient through the product).
template <class S>
bool unit_scale(const S& alpha) {
  if constexpr (requires { alpha.constant(); }) return alpha.constant() && alpha == S(1);
  else return alpha == S(1);
}

/// run(op(A), op(B)) on the const maps In of A (m x k, lda; `ta`: its transpose, k x m) and B
/// (k x n, ldb; `tb`: its transpose), with outer strides of type Stride: the four transpositions,
/// each its own instance of run.
template <class In, class Stride, class S, class Run>
void with_ops(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const S* a, std::ptrdiff_t lda,
              const S* b, std::ptrdiff_t ldb, const Run& run) {
  const In A(a, ta ? k : m, ta ? m : k, Stride(lda));
  const In B(b, tb ? n : k, tb ? k : n, Stride(ldb));
  if (!ta && !tb) run(A, B);
  else if (!ta) run(A, B.transpose());
  else if (!tb) run(A.transpose(), B);
  else run(A.transpose(), B.transpose());
}

/// kernels::gemm's arguments (kernels/gemm.hpp) on the maps In (const, row-major) and Out with
/// outer strides of type Stride: C (m x n, ldc) (+)= alpha op(A) op(B), op(A) A (m x k, lda) or, `ta`,
/// the transpose of A (k x m); op(B) likewise with `tb`. Float, here and in the ISA units.
template <class In, class Out, class Stride, class S>
void gemm_maps(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const S* a, std::ptrdiff_t lda,
               const S* b, std::ptrdiff_t ldb, S* c, std::ptrdiff_t ldc, bool accumulate, S alpha) {
  Out C(c, m, n, Stride(ldc));
  with_ops<In, Stride>(ta, tb, m, n, k, a, lda, b, ldb, [&](const auto& opa, const auto& opb) {
    if (unit_scale(alpha)) {
      if (accumulate) C.noalias() += opa * opb;
      else C.noalias() = opa * opb;
    } else {
      if (accumulate) C.noalias() += alpha * (opa * opb);
      else C.noalias() = alpha * (opa * opb);
    }
  });
}

/// gemm_maps with products that are never scaled (C = op(A) op(B), C += ..., C -= ...), any other
/// alpha applied to C, or to a temporary added into C, after. Eigen compiles a scaled product
/// alpha (A B) as a product of its own, (alpha A) B, and with it the matrix-vector products it
/// falls back to at run time: this compiles a quarter of gemm_maps' products. blocks::matmul's
/// plain twin, for every scalar; the ISA units keep gemm_maps (alpha inside the GEMM kernel).
template <class In, class Out, class Stride, class S>
void gemm_maps_unscaled(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const S* a,
                        std::ptrdiff_t lda, const S* b, std::ptrdiff_t ldb, S* c, std::ptrdiff_t ldc, bool accumulate,
                        S alpha) {
  Out C(c, m, n, Stride(ldc));
  const bool unit = unit_scale(alpha), minus = !unit && unit_scale(S(0) - alpha);
  with_ops<In, Stride>(ta, tb, m, n, k, a, lda, b, ldb, [&](const auto& opa, const auto& opb) {
    if (!accumulate) {
      C.noalias() = opa * opb;
      if (!unit) C *= alpha;
    } else if (unit) {
      C.noalias() += opa * opb;
    } else if (minus) {
      C.noalias() -= opa * opb;
    } else {
      std::vector<S> buf(static_cast<std::size_t>(m * n));
      Out T(buf.data(), m, n, Stride(n));
      T.noalias() = opa * opb;
      C += alpha * T;
    }
  });
}

}  // namespace ttt::kernels::detail
