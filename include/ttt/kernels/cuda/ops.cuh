#pragma once
/// \file kernels/cuda/ops.cuh
/// The row and element-wise operations of the TTT model around the scan, on the GPU: embedding
/// rows, RMSNorm, LayerNorm, RoPE, the learning-rate gate, the head layout change, the inner
/// LayerNorm + residual, the gate, the SwiGLU activation, and the projections as cuBLAS SGEMMs
/// (fp32, no tensor cores). Each follows its CPU twin in blocks/ (same formula, same order of
/// the reductions' terms up to the tree), so the GPU model's logits match the CPU model's to fp32
/// rounding. Row-wise kernels run one block of kRowThreads threads per row. The kernels are
/// `static` (internal linkage), so several .cu files of one program may include this header.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "../../core/error.hpp"
#include "../tile/block.hpp"

namespace ttt::cuda::ops {

inline constexpr int kRowThreads = 128;

/// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ inline float block_sum(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float s = lane < warps ? part[lane] : 0.f;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

/// h[r] = E[ids[r]], C columns.
static __global__ void embed_rows(const int* ids, const float* E, int C, float* h) {
  const size_t r = blockIdx.x;
  const float* e = E + size_t(ids[r]) * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) h[r * C + c] = e[c];
}

/// y = w * x / sqrt(mean(x^2) + eps), row by row (blocks/rms_norm.hpp).
static __global__ void rms_norm_rows(const float* x, const float* w, int C, float eps, float* y) {
  const size_t r = blockIdx.x;
  const float* xr = x + r * C;
  float s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += xr[c] * xr[c];
  const float inv = 1.f / sqrtf(block_sum(s) / float(C) + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[r * C + c] = xr[c] * inv * w[c];
}

/// Row mean and population variance of x[0..n) (two passes, as blocks/layer_norm.hpp).
__device__ inline void row_moments(const float* x, int n, float& mu, float& var) {
  float s = 0;
  for (int c = threadIdx.x; c < n; c += blockDim.x) s += x[c];
  mu = block_sum(s) / float(n);
  float v = 0;
  for (int c = threadIdx.x; c < n; c += blockDim.x) v += (x[c] - mu) * (x[c] - mu);
  var = block_sum(v) / float(n);
}

/// y = w (x - mean) / sqrt(var + eps) + b, row by row (post_norm; eps 1e-6).
static __global__ void layer_norm_rows(const float* x, const float* w, const float* b, int C, float eps, float* y) {
  const size_t r = blockIdx.x;
  float mu, var;
  row_moments(x + r * C, C, mu, var);
  const float inv = 1.f / sqrtf(var + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) y[r * C + c] = w[c] * (x[r * C + c] - mu) * inv + b[c];
}

/// Rotates the interleaved pairs of every head of X [B * n, H * f] in place (blocks/rope.hpp):
/// row b * n + t is at position (pos[b] + t) % mini_batch; cos, sin: [mini_batch, f / 2].
static __global__ void rope_rows(float* X, int n, int H, int f, int mini_batch, const int* pos, const float* cos_t,
                                 const float* sin_t) {
  const size_t r = blockIdx.x;
  const int b = int(r / n), t = int(r % n), p = (pos[b] + t) % mini_batch, half = f / 2;
  for (int e = threadIdx.x; e < H * half; e += blockDim.x) {
    const int h = e / half, i = e % half;
    float* x = X + r * size_t(H) * f + h * f + 2 * i;
    const float cs = cos_t[p * half + i], sn = sin_t[p * half + i], a0 = x[0], b0 = x[1];
    x[0] = a0 * cs - b0 * sn;
    x[1] = b0 * cs + a0 * sn;
  }
}

/// The learning-rate gate: lg [B * n, H] = X lr_w^T; LRt [B * H, n] = base_lr sigmoid(lg + lr_b) / f.
static __global__ void lr_gate(const float* lg, const float* lr_b, int n, int H, float base_lr, int f, float* LRt) {
  const size_t r = blockIdx.x;  // row b * n + t
  const size_t b = r / n, t = r % n;
  for (int h = threadIdx.x; h < H; h += blockDim.x) {
    const float s = 1.f / (1.f + expf(-(lg[r * H + h] + lr_b[h])));
    LRt[(b * H + h) * n + t] = base_lr * s / float(f);
  }
}

/// [B, n, H, f] -> [B, H, n, f] (the scan's layout: one head's rows contiguous).
static __global__ void to_heads(const float* X, int n, int H, int f, float* Xh) {
  const size_t r = blockIdx.x;  // row b * n + t
  const size_t b = r / n, t = r % n;
  for (int e = threadIdx.x; e < H * f; e += blockDim.x) {
    const int h = e / f, c = e % f;
    Xh[((b * H + h) * n + t) * f + c] = X[r * size_t(H) * f + e];
  }
}

/// O [B, n, H * f] = XQ + LN_h(Zq) per head (the inner loss's LayerNorm weights ln_w, ln_b [H, f],
/// eps 1e-6); XQh, Zq in the scan's layout [B, H, n, f]. One block per (b, h, t) row.
static __global__ void head_output(const float* XQh, const float* Zq, const float* ln_w, const float* ln_b, int n,
                                   int H, int f, float* O) {
  const size_t row = blockIdx.x;  // (b * H + h) * n + t
  const size_t bh = row / n, t = row % n, b = bh / H, h = bh % H;
  const float* z = Zq + row * f;
  float mu, var;
  row_moments(z, f, mu, var);
  const float inv = 1.f / sqrtf(var + 1e-6f);
  for (int c = threadIdx.x; c < f; c += blockDim.x)
    O[(b * n + t) * size_t(H) * f + h * f + c] =
        ln_w[h * f + c] * (z[c] - mu) * inv + ln_b[h * f + c] + XQh[row * f + c];
}

/// The depthwise causal convolution of blocks/causal_conv.hpp over [history; X] per sequence:
///   out[t, c] (+)= bias[c] + sum_k W[c, k] ext[t + k, c],  ext = hist_b's K-1 rows, then X_b's n rows
/// X, out: [B * n, C]; hist: [B, K-1, C]; W: [C, K]. `accumulate`: out += the convolution.
static __global__ void causal_conv_rows(const float* X, const float* hist, const float* W, const float* bias, int n,
                                        int C, int K, bool accumulate, float* out) {
  const size_t r = blockIdx.x;
  const size_t b = r / n;
  const int t = int(r % n);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = bias[c];
    for (int k = 0; k < K; ++k) {
      const int j = t + k;  // row of ext
      const float v = j < K - 1 ? hist[(b * (K - 1) + j) * C + c] : X[(b * n + j - (K - 1)) * C + c];
      acc += v * W[c * K + k];
    }
    out[r * C + c] = accumulate ? out[r * C + c] + acc : acc;
  }
}

/// hist [B, K-1, C] = the last K-1 rows of [hist_b; X_b] (blocks::extend_history), in place.
static __global__ void advance_history(const float* X, float* hist, int n, int C, int K) {
  const size_t b = blockIdx.x;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    for (int j = 0; j < K - 1; ++j) {  // ascending: row n + j > j is read before it is written
      const int s = n + j;
      hist[(b * (K - 1) + j) * C + c] = s < K - 1 ? hist[(b * (K - 1) + s) * C + c] : X[(b * n + s - (K - 1)) * C + c];
    }
}

/// Y *= gelu_tanh(G), n values (the gate; the scans' tanh-approximated GELU, tile/block.hpp).
static __global__ void gate_mul(float* Y, const float* G, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    Y[i] *= tile::gelu_tanh_hd(G[i]);
}

/// SwiGLU's activations (blocks::Act).
enum class Act { silu, gelu, gelu_tanh, relu };
inline Act act_from_name(const std::string& s) {
  if (s == "gelu") return Act::gelu;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh") return Act::gelu_tanh;
  if (s == "relu") return Act::relu;
  if (s == "silu" || s == "swish") return Act::silu;
  throw Error("hidden_act: '" + s + "' is not one of silu, gelu, gelu_new, gelu_pytorch_tanh, relu");
}

/// a = act(a) * u, n values.
static __global__ void act_mul(Act act, float* a, const float* u, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float x = a[i];
    float y;
    switch (act) {
      case Act::silu:
        y = x / (1.f + expf(-x));
        break;
      case Act::gelu:
        y = 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
        break;
      case Act::gelu_tanh:
        y = tile::gelu_tanh_hd(x);
        break;
      default:
        y = x > 0.f ? x : 0.f;
        break;
    }
    a[i] = y * u[i];
  }
}

/// Grid size of the element-wise kernels for n values.
inline int grid_for(size_t n) { return int(std::min<size_t>((n + 255) / 256, 4096)); }

/// Throws ttt::Error naming `what` unless `s` is CUBLAS_STATUS_SUCCESS.
inline void check_cublas(cublasStatus_t s, const std::string& what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(what + ": cuBLAS status " + std::to_string(int(s)));
}

/// Y [rows, out] = X [rows, in] W^T (+ beta Y), W [out, in] row-major (PyTorch's Linear).
/// In cuBLAS's column-major terms: Y^T (out x rows) = W (as W^T stored, transposed) X^T.
inline void linear(cublasHandle_t h, const float* X, int rows, int in, const float* W, int out, float* Y,
                   float beta = 0.f) {
  const float one = 1.f;
  check_cublas(cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, &one, W, in, X, in, &beta, Y, out),
               "cublasSgemm");
}

}  // namespace ttt::cuda::ops
