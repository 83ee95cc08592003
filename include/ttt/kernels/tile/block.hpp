#pragma once
/// \file kernels/tile/block.hpp
/// What a thread block's share of work looks like, written once for the GPU and the CPU. A scan
/// over one head (tile/linear_scan.hpp, tile/mlp_scan.hpp) is a sequence of *phases*; in a phase
/// thread `tid` of `nt` computes the outputs o = tid, tid + nt, ... of one small product or row
/// operation, and no phase reads what the same phase writes. A `Block` runs a phase:
///
///   blk.each([&](int tid, int nt) { ... });
///
/// On the GPU (kernels/cuda/scan.cuh) every thread runs its share and the block synchronises;
/// `HostBlock` below runs the shares one after the other on the CPU. The CPU tests run the scans
/// on a HostBlock of several thread counts, so the arithmetic the GPU runs, share by share, is the
/// arithmetic the test suite checks against the library's dual forms.
#include <cmath>

#include "../../core/config.hpp"

namespace ttt::tile {

/// The CPU's block: `nt` shares, run in order (host and device code may name it; it is meant for
/// the host).
struct HostBlock {
  int nt = 1;
  template <class F>
  TTT_HOST_DEVICE void each(F&& f) const {
    for (int t = 0; t < nt; ++t) f(t, nt);
  }
};

/// A row-major matrix view, optionally read transposed: (r, c) is p[r * ld + c], or p[c * ld + r]
/// when `t`.
template <class S>
struct MatRef {
  const S* p;
  int ld;
  bool t = false;
  TTT_HOST_DEVICE S operator()(int r, int c) const { return t ? p[c * ld + r] : p[r * ld + c]; }
};

/// Rows per thread in the products below: each value read from B (or W) serves kRows outputs.
inline constexpr int kRows = 4;

/// The share of thread `tid` of `nt` in C (m x n, row-major, leading dimension n) = A B (+ bias
/// row), k terms; `post(o, value)` gives what is stored at C[o]. A thread computes one column c of
/// kRows consecutive rows (a row past m repeats the last one and is not stored); neighbouring
/// threads take neighbouring columns, so B's row is read contiguously and A's entries are one value
/// for them. A transposed B (read down a column of its storage) is summed in a rotated order,
/// i = (step + c) mod k, so that neighbouring threads read different shared-memory banks.
template <class S, class Post>
TTT_HOST_DEVICE void gemm_share(int tid, int nt, int m, int n, int k, MatRef<S> A, MatRef<S> B, const S* bias, S* C,
                                Post post) {
  const int quads = (m + kRows - 1) / kRows;
  for (int o = tid; o < quads * n; o += nt) {
    const int r0 = (o / n) * kRows, c = o % n;
    int r[kRows];
    S acc[kRows];
    for (int j = 0; j < kRows; ++j) r[j] = r0 + j < m ? r0 + j : m - 1, acc[j] = bias ? bias[c] : S(0);
    if (B.t) {
      for (int s = 0, i = c % k; s < k; ++s, i = i + 1 == k ? 0 : i + 1) {
        const S b = B(i, c);
        for (int j = 0; j < kRows; ++j) acc[j] += A(r[j], i) * b;
      }
    } else {
      for (int i = 0; i < k; ++i) {
        const S b = B(i, c);
        for (int j = 0; j < kRows; ++j) acc[j] += A(r[j], i) * b;
      }
    }
    for (int j = 0; j < kRows && r0 + j < m; ++j) C[(r0 + j) * n + c] = post((r0 + j) * n + c, acc[j]);
  }
}
template <class S>
TTT_HOST_DEVICE void gemm_share(int tid, int nt, int m, int n, int k, MatRef<S> A, MatRef<S> B, const S* bias, S* C) {
  gemm_share(tid, nt, m, n, k, A, B, bias, C, [](int, S v) { return v; });
}

/// The masked, scaled attention-like matrix of the dual form (its share; n x n, row-major):
///   A[t, j] = eta_t lr_j (x_t . y_j + 1) for j <= t, else 0,  x, y: n x d rows
/// (the dot product in the rotated order of gemm_share's transposed case).
template <class S>
TTT_HOST_DEVICE void dual_mask_share(int tid, int nt, int n, int d, const S* x, const S* y, const S* token_eta,
                                     const S* lr, S* A) {
  for (int o = tid; o < n * n; o += nt) {
    const int t = o / n, j = o % n;
    S a = 0;
    if (j <= t) {
      S dot = 1;
      for (int s = 0, i = j % d; s < d; ++s, i = i + 1 == d ? 0 : i + 1) dot += x[t * d + i] * y[j * d + i];
      a = token_eta[t] * lr[j] * dot;
    }
    A[o] = a;
  }
}

/// The dual form's output for n rows of one segment (its share; n x m, row k of x is the input):
///   out[t] = x_t W + b - sum_{j<=t} A[t, j] G[j] - eta_t (x_t gW + gb)   (the last term unless fresh)
/// W: k x m then b: m (one block of the state), gW, gb likewise in the accumulated gradient.
/// `post(o, value)` gives what is stored at out[t * ldo + c].
/// A thread computes one column of kRows consecutive rows, as gemm_share (A's zeros above the
/// diagonal enter the last sum for the quad's earlier rows).
template <class S, class Post>
TTT_HOST_DEVICE void dual_out_share(int tid, int nt, int n, int k, int m, const S* x, const S* W, const S* gW,
                                    bool fresh, const S* A, const S* G, const S* token_eta, S* out, int ldo,
                                    Post post) {
  const S *b = W + k * m, *gb = gW + k * m;
  const int quads = (n + kRows - 1) / kRows;
  for (int o = tid; o < quads * m; o += nt) {
    const int t0 = (o / m) * kRows, c = o % m;
    int t[kRows];
    S acc[kRows];
    for (int j = 0; j < kRows; ++j) t[j] = t0 + j < n ? t0 + j : n - 1, acc[j] = b[c];
    for (int i = 0; i < k; ++i) {
      const S w = W[i * m + c];
      for (int j = 0; j < kRows; ++j) acc[j] += x[t[j] * k + i] * w;
    }
    if (!fresh) {
      S g[kRows];
      for (int j = 0; j < kRows; ++j) g[j] = gb[c];
      for (int i = 0; i < k; ++i) {
        const S w = gW[i * m + c];
        for (int j = 0; j < kRows; ++j) g[j] += x[t[j] * k + i] * w;
      }
      for (int j = 0; j < kRows; ++j) acc[j] -= token_eta[t[j]] * g[j];
    }
    for (int l = 0; l <= t[kRows - 1]; ++l) {
      const S gl = G[l * m + c];
      for (int j = 0; j < kRows; ++j) acc[j] -= A[t[j] * n + l] * gl;
    }
    for (int j = 0; j < kRows && t0 + j < n; ++j) out[(t0 + j) * ldo + c] = post((t0 + j) * m + c, acc[j]);
  }
}

/// The state's step for one segment of n rows (its share over the k m + m entries of W then b):
///   D = x^T diag(lr) G (and lr^T G for b); at the mini-batch's end (`ends`) W -= eta_end (gacc + D)
///   and gacc = 0, else gacc += D. `fresh`: gacc is zero on entry (not read).
/// A thread takes one column c of kRows consecutive rows i of W (each lr_j G[j, c] serves them
/// all); the threads after those take b.
template <class S>
TTT_HOST_DEVICE void update_share(int tid, int nt, int n, int k, int m, const S* x, const S* G, const S* lr, bool fresh,
                                  bool ends, S eta_end, S* W, S* gacc) {
  const int quads = (k + kRows - 1) / kRows;
  auto step = [&](int e, S d) {
    const S g = fresh ? d : gacc[e] + d;
    if (ends) {
      W[e] -= eta_end * g;
      if (!fresh) gacc[e] = S(0);
    } else {
      gacc[e] = g;
    }
  };
  for (int o = tid; o < quads * m + m; o += nt) {
    if (o < quads * m) {
      const int i0 = (o / m) * kRows, c = o % m;
      int i[kRows];
      S d[kRows];
      for (int q = 0; q < kRows; ++q) i[q] = i0 + q < k ? i0 + q : k - 1, d[q] = S(0);
      for (int j = 0; j < n; ++j) {
        const S g = lr[j] * G[j * m + c];
        for (int q = 0; q < kRows; ++q) d[q] += x[j * k + i[q]] * g;
      }
      for (int q = 0; q < kRows && i0 + q < k; ++q) step((i0 + q) * m + c, d[q]);
    } else {
      const int c = o - quads * m;
      S d = 0;
      for (int j = 0; j < n; ++j) d += lr[j] * G[j * m + c];
      step(k * m + c, d);
    }
  }
}

/// Where a chunk's segment starting at row r0 lies: rows r0 .. r0 + n - 1 of the chunk are
/// positions phase .. phase + n - 1 of one mini-batch (the chunk's first row is at position pos0
/// of its sequence); `fresh`: it starts the mini-batch, `ends`: it completes it.
struct SegmentRows {
  int phase, n;
  bool fresh, ends;
};
TTT_HOST_DEVICE inline SegmentRows segment_at(int pos0, int r0, int L, int mini_batch) {
  const int phase = (pos0 + r0) % mini_batch;
  const int n = mini_batch - phase < L - r0 ? mini_batch - phase : L - r0;
  return {phase, n, phase == 0, phase + n == mini_batch};
}

/// A segment's inputs in the compute type (its share of the n x f values): Q = q, K = k and the
/// reconstruction target T = v - k.
template <class S, class T>
TTT_HOST_DEVICE void load_share(int tid, int nt, int n, int f, const T* q, const T* k, const T* v, S* Q, S* K, S* Tg) {
  for (int o = tid; o < n * f; o += nt) {
    const S kv = static_cast<S>(k[o]);
    Q[o] = static_cast<S>(q[o]), K[o] = kv, Tg[o] = static_cast<S>(v[o]) - kv;
  }
}

/// Copies n values (any input type convertible to S), its share.
template <class S, class T>
TTT_HOST_DEVICE void copy_share(int tid, int nt, int n, const T* from, S* to) {
  for (int o = tid; o < n; o += nt) to[o] = static_cast<S>(from[o]);
}

/// The frame of one head's scan over a chunk of L rows from position pos0: the P values of the
/// state copied from theta into W (the workspace) when `state_in_workspace` and back at the end;
/// for each segment its inputs loaded into Q, K, Tg (load_share), then `body(seg, r0)` runs the
/// learner's phases on rows r0 .. r0 + seg.n - 1.
template <class Block, class S, class T, class Body>
TTT_HOST_DEVICE void scan_segments(const Block& blk, int L, int f, int mini_batch, int pos0, const T* XQ, const T* XK,
                                   const T* XV, S* theta, S* W, int P, bool state_in_workspace, S* Q, S* K, S* Tg,
                                   Body body) {
  if (state_in_workspace) blk.each([&](int tid, int nt) { copy_share(tid, nt, P, theta, W); });
  for (int r0 = 0; r0 < L;) {
    const SegmentRows seg = segment_at(pos0, r0, L, mini_batch);
    const size_t at = size_t(r0) * f;
    blk.each([&](int tid, int nt) { load_share(tid, nt, seg.n, f, XQ + at, XK + at, XV + at, Q, K, Tg); });
    body(seg, r0);
    r0 += seg.n;
  }
  if (state_in_workspace) blk.each([&](int tid, int nt) { copy_share(tid, nt, P, W, theta); });
}

/// tanh-approximated GELU (blocks/activations.hpp's gelu) and the reference's derivative
/// (gelu_bwd_ref), for host and device.
template <class S>
TTT_HOST_DEVICE S gelu_tanh_hd(S x) {
#if defined(__CUDA_ARCH__)
  return S(0.5) * x * (S(1) + ::tanh(S(0.7978845608028654) * (x + S(0.044715) * x * x * x)));
#else
  return S(0.5) * x * (S(1) + std::tanh(S(0.7978845608028654) * (x + S(0.044715) * x * x * x)));
#endif
}
template <class S>
TTT_HOST_DEVICE S gelu_bwd_ref_hd(S x) {
#if defined(__CUDA_ARCH__)
  const S t = ::tanh(S(0.79788456) * x * (S(1) + S(0.044715) * x * x));
#else
  const S t = std::tanh(S(0.79788456) * x * (S(1) + S(0.044715) * x * x));
#endif
  return S(0.5) * x * ((S(1) - t * t) * (S(0.79788456) + S(0.1070322243) * x * x)) + S(0.5) * (S(1) + t);
}

}  // namespace ttt::tile
