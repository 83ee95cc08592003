#pragma once
/// \file kernels/tile/rows.hpp
/// Row operations of the TTT layers on raw pointers, for host and device (TTT_HOST_DEVICE): the
/// moments of a row, the LayerNorm row, the LN-L2 inner-loss gradient row. One thread runs one
/// row; the CPU tests compare them with blocks::layer_norm and blocks::ln_l2_grad.
#include <cmath>

#include "../../core/config.hpp"

namespace ttt::tile {

/// sqrt for host and device code (CUDA's ::sqrt overloads on the device, std::sqrt on the host).
template <class S>
TTT_HOST_DEVICE S sqrt_hd(S x) {
#if defined(__CUDA_ARCH__)
  return ::sqrt(x);
#else
  return std::sqrt(x);
#endif
}

/// Mean and variance (population) of x[0..f).
template <class S>
TTT_HOST_DEVICE void moments(const S* x, int f, S& mu, S& var) {
  S m = 0;
  for (int c = 0; c < f; ++c) m += x[c];
  m /= S(f);
  S v = 0;
  for (int c = 0; c < f; ++c) v += (x[c] - m) * (x[c] - m);
  mu = m, var = v / S(f);
}

/// y = gamma * (x - mean) / sqrt(var + eps) + beta, one row (the layer's LayerNorms).
template <class S>
TTT_HOST_DEVICE void layer_norm_row(const S* x, const S* gamma, const S* beta, int f, S* y, S eps = S(1e-6)) {
  S mu, var;
  moments(x, f, mu, var);
  const S inv = S(1) / sqrt_hd(var + eps);
  for (int c = 0; c < f; ++c) y[c] = gamma[c] * (x[c] - mu) * inv + beta[c];
}

/// g = d/dz 0.5 ||gamma LN(z) + beta - target||^2, one row (blocks/ln_l2.hpp's ln_l2_grad).
template <class S>
TTT_HOST_DEVICE void ln_l2_grad_row(const S* z, const S* target, const S* gamma, const S* beta, int f, S* g,
                                    S eps = S(1e-6)) {
  S mu, var;
  moments(z, f, mu, var);
  const S stdv = sqrt_hd(var + eps);
  S s1 = 0, s2 = 0;
  for (int c = 0; c < f; ++c) {
    const S xh = (z[c] - mu) / stdv;
    const S gx = (gamma[c] * xh + beta[c] - target[c]) * gamma[c];
    g[c] = gx;
    s1 += gx;
    s2 += gx * xh;
  }
  const S scale = S(1) / (S(f) * stdv);
  for (int c = 0; c < f; ++c) {
    const S xh = (z[c] - mu) / stdv;
    g[c] = (S(f) * g[c] - s1 - xh * s2) * scale;
  }
}

}  // namespace ttt::tile
