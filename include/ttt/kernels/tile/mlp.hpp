#pragma once
/// \file kernels/tile/mlp.hpp
/// TTT-MLP's scan over one head as a thread block's phases (tile/block.hpp), for the kernel of
/// kernels/cuda/scan.cuh and the CPU tests (against inner::MLP::dual_form). The inner model is
/// gelu_tanh(x W1 + b1) W2 + b2 with hidden width h = 4 f; the state theta = (W1 [f, h], b1 [h],
/// W2 [h, f], b2 [f]) in inner::MLP's order, gacc likewise. Per segment of n rows, the linear
/// recipe (tile/linear.hpp) twice, the second time on the hidden activations:
///
///   Z1 = XK W1 + b1, X2 = gelu(Z1), Z2 = X2 W2 + b2, G2 = ln_l2_grad(Z2, XV - XK),
///   G1 = (G2 W2^T) * gelu'(Z1)
///   X2q = gelu(XQ W1 + b1 - A1 G1 - eta (XQ gW1 + gb1)),   A1 = mask(XQ XK^T)
///   Zq  = X2q W2 + b2 - A2 G2 - eta (X2q gW2 + gb2),        A2 = mask(X2q X2^T)
///   then each layer's step as TTT-Linear's (D1 = XK^T diag(lr) G1, D2 = X2^T diag(lr) G2).
#include <cstddef>

#include "block.hpp"
#include "rows.hpp"

namespace ttt::tile {

/// Values of the workspace the MLP scan needs: the state when kept there (2 f h + h + f), five
/// mini_batch x f tiles (Q, K, target, Z2, G2), three mini_batch x h (Z1 -> gelu'(Z1) -> G1,
/// X2, X2q), the two mini_batch x mini_batch matrices and the LayerNorm's partial sums.
inline size_t mlp_scan_workspace(int f, int mini_batch, bool state_in_workspace) {
  const size_t h = 4 * size_t(f), mb = size_t(mini_batch);
  return (state_in_workspace ? 2 * size_t(f) * h + h + size_t(f) : 0) + 5 * mb * size_t(f) + 3 * mb * h + 2 * mb * mb +
         4 * size_t(kLnParts) * mb;
}

/// One head's TTT-MLP scan over a chunk of L rows from position pos0; arguments as
/// linear_scan_block's.
template <class Block, class S, class T>
TTT_HOST_DEVICE void mlp_scan_block(const Block& blk, int L, int f, int mini_batch, int pos0, const T* XQ, const T* XK,
                                    const T* XV, const S* token_eta, const S* lr, const S* ln_w, const S* ln_b,
                                    S* theta, S* gacc, S* Zq, S* ws, bool state_in_workspace) {
  const int mb = mini_batch, h = 4 * f, P1 = f * h + h, P = 2 * f * h + h + f;
  S* W1 = state_in_workspace ? ws : theta;
  S* W2 = W1 + P1;  // then b2
  S *gW1 = gacc, *gW2 = gacc + P1;
  S* Q = ws + (state_in_workspace ? P : 0);
  S *K = Q + mb * f, *Tg = K + mb * f, *Z2 = Tg + mb * f, *G2 = Z2 + mb * f;
  S *H1 = G2 + mb * f, *X2 = H1 + mb * h, *X2q = X2 + mb * h, *A1 = X2q + mb * h, *A2 = A1 + mb * mb;
  S* part = A2 + mb * mb;
  scan_segments(
      blk, L, f, mb, pos0, XQ, XK, XV, theta, W1, P, state_in_workspace, Q, K, Tg, [&](const SegmentRows& seg, int r0) {
        const int n = seg.n;
        const bool fresh = seg.fresh, ends = seg.ends;
        const S *eta = token_eta + seg.phase, *lr_ = lr + r0;
        S* zq = Zq + size_t(r0) * f;
        // keys: Z1 (into H1) and X2 = gelu(Z1), H1 = gelu'(Z1); A1
        blk.each([&](int tid, int nt) {
          gemm_share(tid, nt, n, h, f, MatRef<S>{K, f}, MatRef<S>{W1, h}, W1 + f * h, H1, [&](int o, S z) {
            X2[o] = gelu_tanh_hd(z);
            return gelu_bwd_ref_hd(z);
          });
          dual_mask_share(tid, nt, n, f, Q, K, eta, lr_, A1);
        });
        blk.each([&](int tid, int nt) {
          gemm_share(tid, nt, n, f, h, MatRef<S>{X2, h}, MatRef<S>{W2, f}, W2 + h * f, Z2);
        });
        ln_l2_grad_block(blk, n, f, Z2, Tg, ln_w, ln_b, G2, part, [](int, int) {});
        // G1 = (G2 W2^T) * gelu'(Z1), in place of gelu'(Z1)
        blk.each([&](int tid, int nt) {
          gemm_share(tid, nt, n, h, f, MatRef<S>{G2, f}, MatRef<S>{W2, f, true}, static_cast<const S*>(nullptr), H1,
                     [&](int o, S g) { return g * H1[o]; });
        });
        // queries, layer 1: X2q = gelu(dual output)
        blk.each([&](int tid, int nt) {
          dual_out_share(tid, nt, n, f, h, Q, W1, gW1, fresh, A1, H1, eta, X2q, h,
                         [](int, S z) { return gelu_tanh_hd(z); });
        });
        blk.each([&](int tid, int nt) { dual_mask_share(tid, nt, n, h, X2q, X2, eta, lr_, A2); });
        blk.each([&](int tid, int nt) {
          dual_out_share(tid, nt, n, h, f, X2q, W2, gW2, fresh, A2, G2, eta, zq, f, [](int, S z) { return z; });
        });
        blk.each([&](int tid, int nt) {
          update_share(tid, nt, n, f, h, K, H1, lr_, fresh, ends, eta[n - 1], W1, gW1);
          update_share(tid, nt, n, h, f, X2, G2, lr_, fresh, ends, eta[n - 1], W2, gW2);
        });
      });
}

}  // namespace ttt::tile
