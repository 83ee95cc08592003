#pragma once
/// \file kernels/linear_dual.hpp
/// TTT-Linear's dual form over one head's segment (n <= mini-batch rows), fused: the plain twin
/// (`backend::scalar`, any scalar: the specification, tested against inner::Linear::dual_form's
/// Eigen form in double) and its xsimd specialisation (`backend::simd`, float; its body is
/// isa::linear_dual in kernels/simd_arch.hpp, run through the active table of kernels/simd_table.hpp),
/// tested against the twin (tests/kernels/test_dual_kernels.cpp). With the state theta0 = (W [f, f],
/// b [f]) at the mini-batch's start and the gradient gacc = (gW, gb) carried from its earlier rows:
///
///   Z = XK W + b,   G = ln_l2_grad(Z, XV - XK)                          (row by row)
///   A[t, j] = eta_t lr_j (XQ[t].XK[j] + 1),  j <= t
///   Zq[t] = XQ[t] W + b - sum_{j<=t} A[t, j] G[j] - eta_t (XQ[t] gW + gb)   (the last term: !fresh)
///   gW += gscale XK^T diag(lr) G,   gb += gscale lr^T G                  (after the last read of theta0)
///
/// gacc may be theta0 itself (the layer's fused plain GD step: gscale = -eta_b, a fresh whole
/// mini-batch): the update comes last. The specialisation runs the segment as one sequence of
/// kernels with no Eigen temporaries, the head's W (16 KB at f = 64) in L1 throughout:
///   - the products with W through rows_w (W read in place, no packing; Z is built in Zq's rows);
///   - the LN-L2 gradient through ln_l2_grad_rows, four rows' reductions interleaved, the target
///     XV - XK read, not stored;
///   - only the unmasked half of the b x b products (causal_scores, causal_apply).
/// One head and mini-batch of the 125m shape (f = 64, b = 16), one core of the AMD EPYC (Zen 5):
/// 3.1 us against 3.8 for the Eigen form's float path before it (benchmarks/README.md, "The
/// dual forms' kernels").
#include <cstddef>

#include "dual_segment.hpp"
#include "simd.hpp"

namespace ttt::kernels {

/// Values of workspace linear_dual needs: G (n f), A (n n), and XQ gW + gb (n f) when !fresh.
inline std::size_t linear_dual_workspace(std::size_t n, std::size_t f) { return 2 * n * f + n * n; }

/// The dual form above in plain loops. W, gW: [f, f] row-major; b, gb: f values right after them
/// (theta's layout); Zq: [n, f] with row stride ldz; ws: linear_dual_workspace(n, f) values.
template <class T>
void linear_dual(backend::scalar, const DualSegment<T>& s, const T* theta0, T* gacc, T* Zq, std::ptrdiff_t ldz,
                 T* ws) {
  const std::size_t n = s.n, f = s.f;
  const T *W = theta0, *b = theta0 + f * f;
  T *gW = gacc, *gb = gacc + f * f;
  T* G = ws;
  auto q = [&](std::size_t t) { return s.XQ + std::ptrdiff_t(t) * s.ldq; };
  auto k = [&](std::size_t t) { return s.XK + std::ptrdiff_t(t) * s.ldk; };
  for (std::size_t t = 0; t < n; ++t) {  // Z (in Zq's row for now), then G
    T* z = Zq + std::ptrdiff_t(t) * ldz;
    for (std::size_t c = 0; c < f; ++c) {
      T v = b[c];
      for (std::size_t i = 0; i < f; ++i) v += k(t)[i] * W[i * f + c];
      z[c] = v;
    }
  }
  ln_l2_grad_rows(backend::scalar{}, n, f, Zq, ldz, s.XV, s.ldv, s.XK, s.ldk, s.ln_w, s.ln_b, G, std::ptrdiff_t(f));
  for (std::size_t t = 0; t < n; ++t) {
    T* zq = Zq + std::ptrdiff_t(t) * ldz;
    for (std::size_t c = 0; c < f; ++c) {
      T v = b[c];
      for (std::size_t i = 0; i < f; ++i) v += q(t)[i] * W[i * f + c];
      if (!s.fresh) {
        T u = gb[c];
        for (std::size_t i = 0; i < f; ++i) u += q(t)[i] * gW[i * f + c];
        v -= s.token_eta[t] * u;
      }
      zq[c] = v;
    }
  }
  T* A = G + n * f;
  causal_scores(backend::scalar{}, n, f, s.XQ, s.ldq, s.XK, s.ldk, s.token_eta, s.lr, T(1), A, std::ptrdiff_t(n));
  causal_apply(backend::scalar{}, n, f, A, std::ptrdiff_t(n), G, std::ptrdiff_t(f), Zq, ldz);
  for (std::size_t t = 0; t < n; ++t) {  // theta0 is read no more: gacc may be it
    const T w = s.gscale * s.lr[t];
    for (std::size_t i = 0; i < f; ++i)
      for (std::size_t c = 0; c < f; ++c) gW[i * f + c] += w * k(t)[i] * G[t * f + c];
    for (std::size_t c = 0; c < f; ++c) gb[c] += w * G[t * f + c];
  }
}

/// Whether the specialisation takes rows of width f (whole SIMD batches of the active table).
inline bool linear_dual_fits(std::size_t f) { return f > 0 && f % simd_kernels().width == 0; }

/// The dual form above for float rows of width f with linear_dual_fits(f) (isa::linear_dual), else
/// the plain twin.
inline void linear_dual(backend::simd, const DualSegment<float>& s, const float* theta0, float* gacc, float* Zq,
                        std::ptrdiff_t ldz, float* ws) {
  if (!linear_dual_fits(s.f)) return linear_dual(backend::scalar{}, s, theta0, gacc, Zq, ldz, ws);
  simd_kernels().linear_dual(s, theta0, gacc, Zq, ldz, ws);
}

}  // namespace ttt::kernels
