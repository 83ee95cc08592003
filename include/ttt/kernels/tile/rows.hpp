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

/// Threads per row of ln_l2_grad_block: each sums every parts-th column of its row.
inline constexpr int kLnParts = 16;
TTT_HOST_DEVICE inline int ln_parts(int nt, int n, int f) {
  int p = nt / (n > 0 ? n : 1);
  p = p > kLnParts ? kLnParts : p;
  p = p > f ? f : p;
  return p < 1 ? 1 : p;
}

/// ln_l2_grad_row for n rows at once by a whole block (tile/block.hpp), in four phases: the
/// row sums, the squared deviations from the mean, gx and the sums s1 = sum gx, s2 = sum gx xh,
/// then g. A row's P = ln_parts(nt, n, f) threads each take every P-th column and leave partial
/// sums in `part` (n x 4 kLnParts values); every thread sums its row's P partials itself.
/// `first(tid, nt)` runs in the first phase beside the row sums (other independent work).
/// The terms are summed in another order than ln_l2_grad_row's: equal to rounding.
template <class Block, class S, class F>
TTT_HOST_DEVICE void ln_l2_grad_block(const Block& blk, int n, int f, const S* z, const S* target, const S* gamma,
                                      const S* beta, S* g, S* part, F first, S eps = S(1e-6)) {
  constexpr int K = kLnParts;
  auto total = [&](int r, int slot, int P) {
    S s = 0;
    for (int q = 0; q < P; ++q) s += part[(r * 4 + slot) * K + q];
    return s;
  };
  blk.each([&](int tid, int nt) {
    const int P = ln_parts(nt, n, f);
    for (int o = tid; o < n * P; o += nt) {
      const int r = o / P, p = o % P;
      S s = 0;
      for (int c = p; c < f; c += P) s += z[r * f + c];
      part[(r * 4 + 0) * K + p] = s;
    }
    first(tid, nt);
  });
  blk.each([&](int tid, int nt) {
    const int P = ln_parts(nt, n, f);
    for (int o = tid; o < n * P; o += nt) {
      const int r = o / P, p = o % P;
      const S mu = total(r, 0, P) / S(f);
      S v = 0;
      for (int c = p; c < f; c += P) v += (z[r * f + c] - mu) * (z[r * f + c] - mu);
      part[(r * 4 + 1) * K + p] = v;
    }
  });
  blk.each([&](int tid, int nt) {
    const int P = ln_parts(nt, n, f);
    for (int o = tid; o < n * P; o += nt) {
      const int r = o / P, p = o % P;
      const S mu = total(r, 0, P) / S(f), inv = S(1) / sqrt_hd(total(r, 1, P) / S(f) + eps);
      S s1 = 0, s2 = 0;
      for (int c = p; c < f; c += P) {
        const S xh = (z[r * f + c] - mu) * inv;
        const S gx = (gamma[c] * xh + beta[c] - target[r * f + c]) * gamma[c];
        g[r * f + c] = gx, s1 += gx, s2 += gx * xh;
      }
      part[(r * 4 + 2) * K + p] = s1, part[(r * 4 + 3) * K + p] = s2;
    }
  });
  blk.each([&](int tid, int nt) {
    const int P = ln_parts(nt, n, f);
    for (int o = tid; o < n * P; o += nt) {
      const int r = o / P, p = o % P;
      const S mu = total(r, 0, P) / S(f), inv = S(1) / sqrt_hd(total(r, 1, P) / S(f) + eps);
      const S s1 = total(r, 2, P), s2 = total(r, 3, P), scale = inv / S(f);
      for (int c = p; c < f; c += P) g[r * f + c] = (S(f) * g[r * f + c] - s1 - (z[r * f + c] - mu) * inv * s2) * scale;
    }
  });
}

}  // namespace ttt::tile
