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

/// The share of thread `tid` of `nt` in C (m x n, row-major, leading dimension n) = A B (+ bias
/// row), k terms; `post(o, value)` gives what is stored. Output o = r * n + c, so neighbouring
/// threads take neighbouring columns: B's row is read contiguously and A's entry is one value for
/// them. A transposed B (read down a column of its storage) is summed in a rotated order,
/// i = (step + c) mod k, so that neighbouring threads read different shared-memory banks.
template <class S, class Post>
TTT_HOST_DEVICE void gemm_share(int tid, int nt, int m, int n, int k, MatRef<S> A, MatRef<S> B, const S* bias, S* C,
                                Post post) {
  for (int o = tid; o < m * n; o += nt) {
    const int r = o / n, c = o % n;
    S acc = bias ? bias[c] : S(0);
    if (B.t) {
      for (int s = 0, i = c % k; s < k; ++s, i = i + 1 == k ? 0 : i + 1) acc += A(r, i) * B(i, c);
    } else {
      for (int i = 0; i < k; ++i) acc += A(r, i) * B(i, c);
    }
    C[o] = post(o, acc);
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
template <class S, class Post>
TTT_HOST_DEVICE void dual_out_share(int tid, int nt, int n, int k, int m, const S* x, const S* W, const S* gW,
                                    bool fresh, const S* A, const S* G, const S* token_eta, S* out, int ldo, Post post) {
  const S *b = W + k * m, *gb = gW + k * m;
  for (int o = tid; o < n * m; o += nt) {
    const int t = o / m, c = o % m;
    S acc = b[c];
    for (int i = 0; i < k; ++i) acc += x[t * k + i] * W[i * m + c];
    if (!fresh) {
      S g = gb[c];
      for (int i = 0; i < k; ++i) g += x[t * k + i] * gW[i * m + c];
      acc -= token_eta[t] * g;
    }
    for (int j = 0; j <= t; ++j) acc -= A[t * n + j] * G[j * m + c];
    out[t * ldo + c] = post(o, acc);
  }
}

/// The state's step for one segment of n rows (its share over the k m + m entries of W then b):
///   D = x^T diag(lr) G (and lr^T G for b); at the mini-batch's end (`ends`) W -= eta_end (gacc + D)
///   and gacc = 0, else gacc += D. `fresh`: gacc is zero on entry (not read).
template <class S>
TTT_HOST_DEVICE void update_share(int tid, int nt, int n, int k, int m, const S* x, const S* G, const S* lr, bool fresh,
                                  bool ends, S eta_end, S* W, S* gacc) {
  for (int e = tid; e < k * m + m; e += nt) {
    S d = 0;
    if (e < k * m) {
      const int i = e / m, c = e % m;
      for (int j = 0; j < n; ++j) d += x[j * k + i] * (lr[j] * G[j * m + c]);
    } else {
      const int c = e - k * m;
      for (int j = 0; j < n; ++j) d += lr[j] * G[j * m + c];
    }
    const S g = fresh ? d : gacc[e] + d;
    if (ends) {
      W[e] -= eta_end * g;
      if (!fresh) gacc[e] = S(0);
    } else {
      gacc[e] = g;
    }
  }
}

/// Copies n values (any input type convertible to S), its share.
template <class S, class T>
TTT_HOST_DEVICE void copy_share(int tid, int nt, int n, const T* from, S* to) {
  for (int o = tid; o < n; o += nt) to[o] = static_cast<S>(from[o]);
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
