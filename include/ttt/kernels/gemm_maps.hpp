#pragma once
/// \file kernels/gemm_maps.hpp
/// C = alpha op(A) op(B) (or C += ...) on Eigen maps, whichever Eigen they come from: the one body
/// of kernels::gemm's plain twin (kernels/gemm.hpp, the build's Eigen) and of the tables' GEMM
/// (include/ttt/precompiled/isa/eigen_gemm.hpp, Eigen compiled for an instruction set in a
/// namespace of its own). It includes nothing: the ISA units include it after their renamed
/// <Eigen/Core>, and its instances differ by the maps' types (no two Eigens share one).
namespace ttt::kernels::detail {

/// A: op(A) is A or, `ta`, A^T; B the same with `tb`; the maps already have their stored shapes.
template <class In, class Out>
void gemm_maps(bool ta, bool tb, const In& A, const In& B, Out& C, bool accumulate, float alpha) {
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
