#pragma once
/// \file kernels/linear_dual.hpp
/// TTT-Linear's dual form over one head's segment (n <= mini-batch rows), fused: the plain twin
/// (`backend::scalar`, any scalar: the specification, tested against inner::Linear::dual_form's
/// Eigen form in double) and its xsimd specialisation (`backend::simd`, float), tested against the
/// twin (tests/kernels/test_dual_kernels.cpp). With the state theta0 = (W [f, f], b [f]) at the
/// mini-batch's start and the gradient gacc = (gW, gb) carried from its earlier rows:
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
#include <algorithm>
#include <cmath>
#include <cstddef>

#include "simd.hpp"

namespace ttt::kernels {

/// One segment's rows and per-row parameters: XQ, XK, XV row-major [n, f] with row strides
/// ldq, ldk, ldv; token_eta, lr: n values; ln_w, ln_b: f values.
template <class T>
struct DualSegment {
  std::size_t n, f;
  const T *XQ, *XK, *XV;
  std::ptrdiff_t ldq, ldk, ldv;
  const T *token_eta, *lr, *ln_w, *ln_b;
  bool fresh;  ///< the segment starts a mini-batch: gacc is zero and not read
  T gscale;
};

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

/// Whether the specialisation takes rows of width f (whole SIMD batches).
inline bool linear_dual_fits(std::size_t f) { return f > 0 && f % detail::fbatch::size == 0; }

/// The dual form above for float rows of width f with linear_dual_fits(f) (else the plain twin).
inline void linear_dual(backend::simd, const DualSegment<float>& s, const float* theta0, float* gacc, float* Zq,
                        std::ptrdiff_t ldz, float* ws) {
  const std::size_t n = s.n, f = s.f;
  if (!linear_dual_fits(f)) return linear_dual(backend::scalar{}, s, theta0, gacc, Zq, ldz, ws);
  const float *W = theta0, *b = theta0 + f * f;
  float *gW = gacc, *gb = gacc + f * f;
  float *G = ws, *A = G + n * f, *WG = A + n * n;
  const std::ptrdiff_t F = std::ptrdiff_t(f);
  for (std::size_t t = 0; t < n; ++t) std::copy(b, b + f, Zq + std::ptrdiff_t(t) * ldz);  // Z = b + XK W, in Zq
  rows_w(backend::simd{}, s.XK, s.ldk, n, f, W, F, f, Zq, ldz, /*accumulate=*/true);
  ln_l2_grad_rows(backend::simd{}, n, f, Zq, ldz, s.XV, s.ldv, s.XK, s.ldk, s.ln_w, s.ln_b, G, F);
  causal_scores(backend::simd{}, n, f, s.XQ, s.ldq, s.XK, s.ldk, s.token_eta, s.lr, 1.0f, A, std::ptrdiff_t(n));
  for (std::size_t t = 0; t < n; ++t) std::copy(b, b + f, Zq + std::ptrdiff_t(t) * ldz);
  rows_w(backend::simd{}, s.XQ, s.ldq, n, f, W, F, f, Zq, ldz, /*accumulate=*/true);
  if (!s.fresh) {  // Zq[t] -= eta_t (XQ[t] gW + gb)
    for (std::size_t t = 0; t < n; ++t) std::copy(gb, gb + f, WG + t * f);
    rows_w(backend::simd{}, s.XQ, s.ldq, n, f, gW, F, f, WG, F, /*accumulate=*/true);
    for (std::size_t t = 0; t < n; ++t) {
      const detail::fbatch e(s.token_eta[t]);
      float* zq = Zq + std::ptrdiff_t(t) * ldz;
      for (std::size_t c = 0; c < f; c += detail::fbatch::size)
        xsimd::fnma(e, detail::fbatch::load_unaligned(WG + t * f + c), detail::fbatch::load_unaligned(zq + c))
            .store_unaligned(zq + c);
    }
  }
  causal_apply(backend::simd{}, n, f, A, std::ptrdiff_t(n), G, F, Zq, ldz);
  // theta0 is read no more: gacc may be it. gW += XK^T (gscale diag(lr) G), gb += its column sums.
  for (std::size_t t = 0; t < n; ++t) {
    const detail::fbatch w(s.gscale * s.lr[t]);
    for (std::size_t c = 0; c < f; c += detail::fbatch::size)
      (w * detail::fbatch::load_unaligned(G + t * f + c)).store_unaligned(G + t * f + c);
  }
  rows_w(backend::simd{}, s.XK, 1, f, n, G, F, f, gW, F, /*accumulate=*/true, s.ldk);
  for (std::size_t c = 0; c < f; c += detail::fbatch::size) {
    detail::fbatch acc = detail::fbatch::load_unaligned(gb + c);
    for (std::size_t t = 0; t < n; ++t) acc += detail::fbatch::load_unaligned(G + t * f + c);
    acc.store_unaligned(gb + c);
  }
}

}  // namespace ttt::kernels
