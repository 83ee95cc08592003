#pragma once
/// \file kernels/simd.hpp
/// The xsimd overloads (`backend::simd`) of the kernels of the hot paths: the element-wise ones
/// (TTT-MLP's GELU, SwiGLU and its reverse, attention's exponentials), the norms' reverses
/// (LayerNorm, RMSNorm), the few-rows products (rows_wt, rows_w), and the dual forms' row kernels
/// (the LN-L2 gradient, the causal scores and their product). Each runs the whole-batch part
/// through the active table of kernels/simd_table.hpp (the instruction set chosen at run time:
/// kernels/simd_arch.hpp's instances) and the rest through its kernels/scalar.hpp twin; a
/// kernel missing here falls back to the twin through the backend tag chain. Each one is tested
/// against its twin under every table the test machine runs (tests/kernels/test_kernels.cpp, the
/// dual forms' in test_dual_kernels.cpp, the norms' in test_norms.cpp).
#include <cstddef>

#include "scalar.hpp"
#include "simd_table.hpp"

namespace ttt::kernels {

namespace detail {
/// y[i] = f(x[i]): the active table's kernel `batches` for the whole batches, the element
/// function for the rest.
inline void simd_map(void (*SimdKernels::*batches)(const float*, float*, std::size_t), float (*tail)(float),
                     const float* x, float* y, std::size_t n) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  (t.*batches)(x, y, head);
  for (std::size_t i = head; i < n; ++i) y[i] = tail(x[i]);
}
/// y[i] = f(x[i]), dy[i] = df(x[i]): the active table's pair kernel for the whole batches, the
/// element functions for the rest.
inline void simd_map_pair(void (*SimdKernels::*batches)(const float*, float*, float*, std::size_t),
                          float (*tail)(float), float (*dtail)(float), const float* x, float* y, float* dy,
                          std::size_t n) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  (t.*batches)(x, y, dy, head);
  for (std::size_t i = head; i < n; ++i) {
    const float v = x[i];
    y[i] = tail(v), dy[i] = dtail(v);
  }
}
}  // namespace detail

inline void gelu_tanh(backend::simd, const float* x, float* y, std::size_t n) {
  detail::simd_map(&SimdKernels::gelu_tanh, gelu_tanh_scalar, x, y, n);
}
inline void gelu_tanh_grad(backend::simd, const float* x, float* y, std::size_t n) {
  detail::simd_map(&SimdKernels::gelu_tanh_grad, gelu_tanh_grad_scalar, x, y, n);
}
inline void gelu_tanh_dx(backend::simd, const float* x, float* y, std::size_t n) {
  detail::simd_map(&SimdKernels::gelu_tanh_dx, gelu_tanh_dx_scalar, x, y, n);
}
inline void gelu_tanh_grad_dx(backend::simd, const float* x, float* y, std::size_t n) {
  detail::simd_map(&SimdKernels::gelu_tanh_grad_dx, gelu_tanh_grad_dx_scalar, x, y, n);
}

inline void gelu_tanh_pair(backend::simd, const float* x, float* y, float* dy, std::size_t n) {
  detail::simd_map_pair(&SimdKernels::gelu_tanh_pair, gelu_tanh_scalar, gelu_tanh_dx_scalar, x, y, dy, n);
}
inline void gelu_tanh_grad_pair(backend::simd, const float* x, float* y, float* dy, std::size_t n) {
  detail::simd_map_pair(&SimdKernels::gelu_tanh_grad_pair, gelu_tanh_grad_scalar, gelu_tanh_grad_dx_scalar, x, y, dy,
                        n);
}

inline void silu_mul(backend::simd, float* g, const float* u, std::size_t n) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  t.silu_mul(g, u, head);
  silu_mul(backend::scalar{}, g + head, u + head, n - head);
}

inline void silu_gate(backend::simd, const float* a, const float* b, float* sg, float* h, std::size_t n) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  t.silu_gate(a, b, sg, h, head);
  silu_gate(backend::scalar{}, a + head, b + head, sg ? sg + head : nullptr, h + head, n - head);
}

inline void silu_mul_bwd(backend::simd, const float* g, const float* u, const float* da, float* dg, float* du,
                         std::size_t n) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  t.silu_mul_bwd(g, u, da, dg, du, head);
  silu_mul_bwd(backend::scalar{}, g + head, u + head, da + head, dg + head, du + head, n - head);
}

inline float exp_affine_sum(backend::simd, float* x, std::size_t n, float a, float b) {
  const SimdKernels& t = simd_kernels();
  const std::size_t head = n - n % t.width;
  return t.exp_affine_sum(x, head, a, b) + exp_affine_sum(backend::scalar{}, x + head, n - head, a, b);
}

/// rows_wt (kernels/scalar.hpp) reading W once (isa::rows_wt).
inline void rows_wt(backend::simd, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                    std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate) {
  simd_kernels().rows_wt(X, ldx, n, k, W, m, Y, ldy, accumulate);
}

/// rows_w (kernels/scalar.hpp) with W read in place (isa::rows_w); the last m % batch columns
/// through the twin.
inline void rows_w(backend::simd, const float* X, std::ptrdiff_t ldx, std::size_t n, std::size_t k, const float* W,
                   std::ptrdiff_t ldw, std::size_t m, float* Y, std::ptrdiff_t ldy, bool accumulate = false,
                   std::ptrdiff_t incx = 1) {
  const SimdKernels& t = simd_kernels();
  const std::size_t j = m - m % t.width;
  t.rows_w(X, ldx, n, k, W, ldw, j, Y, ldy, accumulate, incx);
  if (j < m) rows_w(backend::scalar{}, X, ldx, n, k, W + j, ldw, m - j, Y + std::ptrdiff_t(j), ldy, accumulate, incx);
}

/// ln_l2_grad_rows (kernels/scalar.hpp), four rows at a time (isa::ln_l2_grad_rows); d not a
/// multiple of the batch size: the twin.
inline void ln_l2_grad_rows(backend::simd, std::size_t n, std::size_t d, const float* z, std::ptrdiff_t ldz,
                            const float* a, std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, const float* gamma,
                            const float* beta, float* g, std::ptrdiff_t ldg, double eps = 1e-6) {
  const SimdKernels& t = simd_kernels();
  if (d % t.width != 0)
    return ln_l2_grad_rows(backend::scalar{}, n, d, z, ldz, a, lda, b, ldb, gamma, beta, g, ldg, eps);
  t.ln_l2_grad_rows(n, d, z, ldz, a, lda, b, ldb, gamma, beta, g, ldg, float(eps));
}

/// layer_norm_bwd_rows (kernels/scalar.hpp), four rows at a time (isa::layer_norm_bwd_rows); d
/// not a multiple of the batch size: the twin.
inline void layer_norm_bwd_rows(backend::simd, std::size_t n, std::size_t d, const float* x, std::ptrdiff_t ldx,
                                const float* dy, std::ptrdiff_t ldy, const float* gamma, double eps, float* dx,
                                std::ptrdiff_t lddx, float* dgamma, float* dbeta) {
  const SimdKernels& t = simd_kernels();
  if (d % t.width != 0)
    return layer_norm_bwd_rows(backend::scalar{}, n, d, x, ldx, dy, ldy, gamma, eps, dx, lddx, dgamma, dbeta);
  t.layer_norm_bwd_rows(n, d, x, ldx, dy, ldy, gamma, float(eps), dx, lddx, dgamma, dbeta);
}

/// rms_norm_bwd_rows (kernels/scalar.hpp) (isa::rms_norm_bwd_rows); d not a multiple of the batch
/// size: the twin.
inline void rms_norm_bwd_rows(backend::simd, std::size_t n, std::size_t d, const float* x, std::ptrdiff_t ldx,
                              const float* dy, std::ptrdiff_t ldy, const float* w, double eps, float* dx,
                              std::ptrdiff_t lddx, float* dw) {
  const SimdKernels& t = simd_kernels();
  if (d % t.width != 0) return rms_norm_bwd_rows(backend::scalar{}, n, d, x, ldx, dy, ldy, w, eps, dx, lddx, dw);
  t.rms_norm_bwd_rows(n, d, x, ldx, dy, ldy, w, float(eps), dx, lddx, dw);
}

/// causal_scores (kernels/scalar.hpp): the unmasked half only (isa::causal_scores); k not a
/// multiple of the batch size: the twin.
inline void causal_scores(backend::simd, std::size_t n, std::size_t k, const float* Q, std::ptrdiff_t ldq,
                          const float* K, std::ptrdiff_t ldk, const float* eta, const float* lr, float bias, float* A,
                          std::ptrdiff_t lda) {
  const SimdKernels& t = simd_kernels();
  if (k % t.width != 0) return causal_scores(backend::scalar{}, n, k, Q, ldq, K, ldk, eta, lr, bias, A, lda);
  t.causal_scores(n, k, Q, ldq, K, ldk, eta, lr, bias, A, lda);
}

/// causal_apply (kernels/scalar.hpp): the masked half skipped (isa::causal_apply); the last
/// m % batch columns through the twin.
inline void causal_apply(backend::simd, std::size_t n, std::size_t m, const float* A, std::ptrdiff_t lda,
                         const float* G, std::ptrdiff_t ldg, float* Y, std::ptrdiff_t ldy) {
  const SimdKernels& t = simd_kernels();
  const std::size_t c = m - m % t.width;
  t.causal_apply(n, c, A, lda, G, ldg, Y, ldy);
  if (c < m) causal_apply(backend::scalar{}, n, m - c, A, lda, G + c, ldg, Y + c, ldy);
}

}  // namespace ttt::kernels
