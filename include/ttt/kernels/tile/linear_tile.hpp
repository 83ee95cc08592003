#pragma once
/// \file kernels/tile/linear_tile.hpp
/// TTT-Linear's per-tile maths for one head on raw row-major pointers, as TTT_HOST_DEVICE
/// functions: the same source runs in the CPU tests (against inner::Linear::dual_form and the
/// layer's LayerNorms) and inside the CUDA kernels (kernels/cuda/linear_scan.cuh), where each
/// call is one thread's share (one row, or one column). A segment is n <= mini_batch_size rows of
/// one mini-batch; the state is theta0 = (W [f, f], b [f]) at the mini-batch's start and the
/// accumulated gradient gacc = (gW, gb), zero at a mini-batch's start (inner/linear.hpp):
///
///   Z = XK W + b,   G = ln_l2_grad(Z, XV - XK)                                  (row by row)
///   Zq[t] = XQ[t] W + b - eta_t (XQ[t] gW + gb) - sum_{j<=t} eta_t lr_j (XQ[t].XK[j] + 1) G[j]
///   gW += XK^T diag(lr) G,  gb += lr^T G                                        (column by column)
///   at the mini-batch's last row: W -= eta_end gW, b -= eta_end gb, gacc = 0    (gd's step)
///
/// The order of the three phases matters (every G before any Zq row, every Zq row before the
/// update): on the GPU a block synchronises between them. `linear_segment` runs the phases in
/// order on one thread: the plain twin the tests compare with the library's dual form.
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

/// Phase 1, row r: G[r] = ln_l2_grad(XK[r] W + b, XV[r] - XK[r]); `z` and `target` are f values
/// of the caller's scratch.
template <class S>
TTT_HOST_DEVICE void linear_grad_row(int r, const S* W, const S* b, const S* XK, const S* XV, const S* ln_w,
                                     const S* ln_b, int f, S* z, S* target, S* G) {
  const S* k = XK + r * f;
  for (int c = 0; c < f; ++c) {
    S acc = b[c];
    for (int i = 0; i < f; ++i) acc += k[i] * W[i * f + c];
    z[c] = acc;
    target[c] = XV[r * f + c] - k[c];
  }
  ln_l2_grad_row(z, target, ln_w, ln_b, f, G + r * f);
}

/// Phase 2, row t: Zq[t] (see the file comment); `fresh`: gacc is zero (not read).
template <class S>
TTT_HOST_DEVICE void linear_dual_row(int t, const S* W, const S* b, const S* gW, const S* gb, bool fresh,
                                     const S* XQ, const S* XK, const S* G, const S* token_eta, const S* lr, int f,
                                     S* Zq) {
  const S* q = XQ + t * f;
  const S eta = token_eta[t];
  for (int c = 0; c < f; ++c) {
    S acc = b[c];
    for (int i = 0; i < f; ++i) acc += q[i] * W[i * f + c];
    if (!fresh) {
      S g = gb[c];
      for (int i = 0; i < f; ++i) g += q[i] * gW[i * f + c];
      acc -= eta * g;
    }
    Zq[t * f + c] = acc;
  }
  for (int j = 0; j <= t; ++j) {
    S qk = 1;
    for (int i = 0; i < f; ++i) qk += q[i] * XK[j * f + i];
    const S a = eta * lr[j] * qk;
    for (int c = 0; c < f; ++c) Zq[t * f + c] -= a * G[j * f + c];
  }
}

/// Phase 3, column c: gW[:, c] += sum_j lr_j XK[j] G[j][c], gb[c] += sum_j lr_j G[j][c].
template <class S>
TTT_HOST_DEVICE void linear_accumulate_col(int c, int n, const S* XK, const S* G, const S* lr, int f, S* gW,
                                           S* gb) {
  S sb = 0;
  for (int j = 0; j < n; ++j) sb += lr[j] * G[j * f + c];
  gb[c] += sb;
  for (int i = 0; i < f; ++i) {
    S s = 0;
    for (int j = 0; j < n; ++j) s += XK[j * f + i] * lr[j] * G[j * f + c];
    gW[i * f + c] += s;
  }
}

/// At a mini-batch's end, entry e of theta (W then b, f * f + f entries): theta -= eta_end gacc,
/// gacc = 0 (the gd step, inner/optimizers/gd.hpp).
template <class S>
TTT_HOST_DEVICE void gd_step_entry(int e, S eta_end, S* theta, S* gacc) {
  theta[e] -= eta_end * gacc[e];
  gacc[e] = S(0);
}

/// The three phases on one thread, in order: Zq (n, f) of a segment of n rows and the updated
/// gacc (theta = W [f * f] then b [f]; gacc likewise). `scratch`: 2 f + n f values.
template <class S>
TTT_HOST_DEVICE void linear_segment(const S* theta, S* gacc, bool fresh, int n, int f, const S* XQ, const S* XK,
                                    const S* XV, const S* token_eta, const S* lr, const S* ln_w, const S* ln_b, S* Zq,
                                    S* scratch) {
  const S *W = theta, *b = theta + f * f;
  S *gW = gacc, *gb = gacc + f * f;
  S *z = scratch, *target = scratch + f, *G = scratch + 2 * f;
  for (int r = 0; r < n; ++r) linear_grad_row(r, W, b, XK, XV, ln_w, ln_b, f, z, target, G);
  for (int t = 0; t < n; ++t) linear_dual_row(t, W, b, gW, gb, fresh, XQ, XK, G, token_eta, lr, f, Zq);
  for (int c = 0; c < f; ++c) linear_accumulate_col(c, n, XK, G, lr, f, gW, gb);
}

/// The scan of one head over a chunk of L rows starting at position pos0, on one thread: what
/// one block of kernels/cuda/linear_scan.cuh computes (the CUDA test's reference). theta and gacc
/// are the carried state (in/out); `scratch`: 2 f + mini_batch f values.
template <class S>
TTT_HOST_DEVICE void linear_scan_head(int L, int f, int mini_batch, int pos0, const S* XQ, const S* XK, const S* XV,
                                      const S* token_eta, const S* lr, const S* ln_w, const S* ln_b, S* theta,
                                      S* gacc, S* Zq, S* scratch) {
  for (int r0 = 0; r0 < L;) {
    const int phase = (pos0 + r0) % mini_batch;
    const int n = mini_batch - phase < L - r0 ? mini_batch - phase : L - r0;
    linear_segment(theta, gacc, phase == 0, n, f, XQ + r0 * f, XK + r0 * f, XV + r0 * f, token_eta + r0, lr + r0,
                   ln_w, ln_b, Zq + r0 * f, scratch);
    if (phase + n == mini_batch)
      for (int e = 0; e < f * f + f; ++e) gd_step_entry(e, token_eta[r0 + n - 1], theta, gacc);
    r0 += n;
  }
}

}  // namespace ttt::tile
