#pragma once
/// \file kernels/cuda/linear_scan.cuh
/// TTT-Linear's prefill scan on the GPU, compiled in the user's own .cu translation unit: one
/// thread block per (sequence, head) walks the rows of a chunk mini-batch by mini-batch, from any
/// position (a chunk may start mid-mini-batch, carrying theta0 and the accumulated gradient in
/// the state, exactly as the CPU layer does), running kernels/tile/linear_tile.hpp's three phases
/// with one thread per row or column and a block-wide barrier between them, then gd's step at
/// each mini-batch end. fp32 throughout.
///
/// First version: the state and the per-mini-batch gradient live in global memory (the tile
/// maths is the CPU-tested source; keeping W on chip, bf16/fp16 inputs, the layer around the scan
/// and decode are the next steps). Not yet run on a GPU when this was written: scripts/gpu_check.sh
/// runs tests/cuda/test_linear_scan.cu, which compares it with the same maths on the host.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../../core/error.hpp"
#include "../tile/linear_tile.hpp"

namespace ttt::cuda {

/// One chunk of rows for BH = sequences x heads (sequence-major: block i is sequence i / heads,
/// head i % heads). Row-major tensors; pointers are device pointers.
struct LinearScanArgs {
  int BH = 0, heads = 1;           ///< blocks; heads (ln_w, ln_b are per head)
  int L = 0, f = 0;                ///< rows of the chunk, head dim
  int mini_batch = 16, pos0 = 0;   ///< mini-batch size; position of the chunk's first row
  const float* XQ = nullptr;       ///< [BH, L, f]
  const float* XK = nullptr;       ///< [BH, L, f]
  const float* XV = nullptr;       ///< [BH, L, f]
  const float* token_eta = nullptr;  ///< [L] the eta factor of each row's position
  const float* lr = nullptr;       ///< [BH, L] the learning-rate gate per row
  const float* ln_w = nullptr;     ///< [heads, f] the inner loss's LayerNorm weight
  const float* ln_b = nullptr;     ///< [heads, f] ... and bias
  float* theta = nullptr;          ///< [BH, f * f + f] W then b at the current mini-batch's start (in/out)
  float* gacc = nullptr;           ///< [BH, f * f + f] the accumulated gradient (in/out)
  float* Zq = nullptr;             ///< [BH, L, f] out: the inner model's output for the queries
  float* scratch = nullptr;        ///< linear_scan_scratch_floats(...) floats
};

/// Floats of scratch linear_scan needs: per block G (mini_batch x f) and 2 f per thread.
inline size_t linear_scan_scratch_floats(int BH, int mini_batch, int f, int threads) {
  return size_t(BH) * (size_t(mini_batch) * size_t(f) + size_t(threads) * 2 * size_t(f));
}

/// The kernel (a template only so that the header can be included by several .cu files).
template <class Args>
__global__ void linear_scan_kernel(Args a) {
  const int bh = blockIdx.x, f = a.f, P = f * f + f;
  const size_t rows = size_t(bh) * size_t(a.L) * size_t(f);
  const float *XQ = a.XQ + rows, *XK = a.XK + rows, *XV = a.XV + rows, *lr = a.lr + size_t(bh) * a.L;
  const float *ln_w = a.ln_w + (bh % a.heads) * f, *ln_b = a.ln_b + (bh % a.heads) * f;
  float *theta = a.theta + size_t(bh) * P, *gacc = a.gacc + size_t(bh) * P, *Zq = a.Zq + rows;
  float* G = a.scratch + size_t(bh) * (size_t(a.mini_batch) * f + size_t(blockDim.x) * 2 * f);
  float* z = G + size_t(a.mini_batch) * f + size_t(threadIdx.x) * 2 * f;
  float* target = z + f;
  for (int r0 = 0; r0 < a.L;) {
    const int phase = (a.pos0 + r0) % a.mini_batch;
    const int n = min(a.mini_batch - phase, a.L - r0);
    const float *q = XQ + r0 * f, *k = XK + r0 * f, *v = XV + r0 * f;
    for (int r = threadIdx.x; r < n; r += blockDim.x)
      tile::linear_grad_row(r, theta, theta + f * f, k, v, ln_w, ln_b, f, z, target, G);
    __syncthreads();
    for (int t = threadIdx.x; t < n; t += blockDim.x)
      tile::linear_dual_row(t, theta, theta + f * f, gacc, gacc + f * f, phase == 0, q, k, G, a.token_eta + r0,
                            lr + r0, f, Zq + r0 * f);
    __syncthreads();
    for (int c = threadIdx.x; c < f; c += blockDim.x)
      tile::linear_accumulate_col(c, n, k, G, lr + r0, f, gacc, gacc + f * f);
    __syncthreads();
    if (phase + n == a.mini_batch) {
      const float eta_end = a.token_eta[r0 + n - 1];
      for (int e = threadIdx.x; e < P; e += blockDim.x) tile::gd_step_entry(e, eta_end, theta, gacc);
      __syncthreads();
    }
    r0 += n;
  }
}

/// Throws ttt::Error naming `what` unless `e` is cudaSuccess.
inline void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + ": " + cudaGetErrorString(e));
}

/// Launches the scan (asynchronous on `stream`); a launch error throws ttt::Error.
inline void linear_scan(const LinearScanArgs& a, int threads = 128, cudaStream_t stream = nullptr) {
  if (a.BH < 1 || a.heads < 1 || a.L < 0 || a.f < 1 || a.mini_batch < 1 || a.pos0 < 0 || threads < 1)
    throw Error("cuda::linear_scan: BH, heads, f, mini_batch and threads must be >= 1, L and pos0 >= 0");
  if (a.L == 0) return;
  linear_scan_kernel<LinearScanArgs><<<a.BH, threads, 0, stream>>>(a);
  check(cudaGetLastError(), "cuda::linear_scan launch");
}

}  // namespace ttt::cuda
