#pragma once
/// \file kernels/tile/linear.hpp
/// TTT-Linear's scan over one head, written as a thread block's phases (tile/block.hpp): the
/// kernel of kernels/cuda/scan.cuh runs it with a CUDA block, the CPU tests with a HostBlock
/// against inner::Linear::dual_form. The state theta = (W [f, f], b [f]) is at the current
/// mini-batch's start, the accumulated gradient gacc = (gW, gb) zero at a mini-batch's start
/// (inner/linear.hpp). Per segment of n <= mini_batch rows of one mini-batch:
///
///   Z = XK W + b,   G = ln_l2_grad(Z, XV - XK)                        (row by row)
///   A[t, j] = eta_t lr_j (XQ[t].XK[j] + 1), j <= t
///   Zq = XQ W + b - A G - eta_t (XQ gW + gb)                          (the last term mid-mini-batch)
///   D = XK^T diag(lr) G; at the mini-batch's end W -= eta_end (gacc + D), gacc = 0; else gacc += D
///
/// A chunk may start and end anywhere (pos0): the carried (theta, gacc) make chunked prefill and
/// decode equal to one forward, as on the CPU.
#include <cstddef>

#include "block.hpp"
#include "rows.hpp"

namespace ttt::tile {

/// Values of the workspace the scan needs: the state when it is kept there, five mini_batch x f
/// tiles, the mini_batch x mini_batch matrix A and the LayerNorm's partial sums.
inline size_t linear_scan_workspace(int f, int mini_batch, bool state_in_workspace) {
  return (state_in_workspace ? size_t(f) * f + f : 0) + 5 * size_t(mini_batch) * f + size_t(mini_batch) * mini_batch +
         4 * size_t(kLnParts) * mini_batch;
}

/// One head's scan over a chunk of L rows starting at position pos0 (row-major [L, f] inputs of
/// type T, fp32 or narrower on the GPU; compute type S). token_eta: the mini_batch_size entries
/// of the eta table (position p in its mini-batch reads token_eta[p]); lr: one per row.
/// theta, gacc: the carried state (in/out).
/// `ws`: linear_scan_workspace(f, mini_batch, state_in_workspace) values (shared memory on the
/// GPU); `state_in_workspace`: W and b are copied there for the chunk (on chip) and back at its
/// end, else they are read and written where theta is (decode: state in global memory).
template <class Block, class S, class T>
TTT_HOST_DEVICE void linear_scan_block(const Block& blk, int L, int f, int mini_batch, int pos0, const T* XQ,
                                       const T* XK, const T* XV, const S* token_eta, const S* lr, const S* ln_w,
                                       const S* ln_b, S* theta, S* gacc, S* Zq, S* ws, bool state_in_workspace) {
  const int mb = mini_batch, P = f * f + f;
  S* W = state_in_workspace ? ws : theta;
  S* Q = ws + (state_in_workspace ? P : 0);
  S *K = Q + mb * f, *Tg = K + mb * f, *Z = Tg + mb * f, *G = Z + mb * f, *A = G + mb * f, *part = A + mb * mb;
  scan_segments(
      blk, L, f, mb, pos0, XQ, XK, XV, theta, W, P, state_in_workspace, Q, K, Tg, [&](const SegmentRows& seg, int r0) {
        const int n = seg.n;
        const bool fresh = seg.fresh, ends = seg.ends;
        const S *eta = token_eta + seg.phase, *lr_ = lr + r0;
        S* zq = Zq + size_t(r0) * f;
        blk.each([&](int tid, int nt) {
          gemm_share(tid, nt, n, f, f, MatRef<S>{K, f}, MatRef<S>{W, f}, W + f * f, Z);
        });
        ln_l2_grad_block(blk, n, f, Z, Tg, ln_w, ln_b, G, part,
                         [&](int tid, int nt) { dual_mask_share(tid, nt, n, f, Q, K, eta, lr_, A); });
        blk.each([&](int tid, int nt) {
          dual_out_share(tid, nt, n, f, f, Q, W, gacc, fresh, A, G, eta, zq, f, [](int, S v) { return v; });
        });
        blk.each([&](int tid, int nt) { update_share(tid, nt, n, f, f, K, G, lr_, fresh, ends, eta[n - 1], W, gacc); });
      });
}

}  // namespace ttt::tile
