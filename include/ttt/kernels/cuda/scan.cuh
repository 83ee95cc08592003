#pragma once
/// \file kernels/cuda/scan.cuh
/// The TTT scans on the GPU, compiled in the user's own .cu translation unit: TTT-Linear's and
/// TTT-MLP's prefill scan and decode step. One thread block per (sequence, head) walks the rows
/// of a chunk mini-batch by mini-batch, running the block phases of kernels/tile/linear.hpp or
/// kernels/tile/mlp.hpp (the same source the CPU tests run on a HostBlock against the library's
/// dual forms), fp32 arithmetic and state, fp32 / bf16 / fp16 inputs.
///
/// - **prefill** (`scan`): the inner weights are copied into shared memory at the chunk's start and
///   stay there for the whole chunk (written back at its end), with the mini-batch's tiles beside
///   them; where they do not fit (TTT-MLP at head dim 128: 0.5 MiB per head) they are read and
///   written in global memory (L2) and only the tiles are on chip.
/// - **decode** (`decode`): the same phases with the state in global memory, for a step of one (or
///   a few) tokens for a batch of sequences.
/// A chunk may start mid-mini-batch from a carried state (theta, gacc), as on the CPU, so chunked
/// prefill followed by decode equals one forward.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../../core/error.hpp"
#include "../tile/linear.hpp"
#include "../tile/mlp.hpp"

namespace ttt::cuda {

/// The inner learner a scan runs.
enum class Learner { linear, mlp };

/// Values of one head's state: W, b (TTT-Linear) or W1, b1, W2, b2 (TTT-MLP, hidden 4f).
inline int state_size(Learner l, int f) { return l == Learner::linear ? f * f + f : 8 * f * f + 5 * f; }

/// One chunk of rows for BH = sequences x heads, row-major, device pointers; block i is sequence
/// i / heads, head i % heads. T: float, __nv_bfloat16 or __half (cuda_bf16.h / cuda_fp16.h).
template <class T>
struct ScanArgs {
  int BH = 0, heads = 1;             ///< blocks; heads (ln_w, ln_b are per head)
  int L = 0, f = 0;                  ///< rows of the chunk; head dim
  int mini_batch = 16, pos0 = 0;     ///< mini-batch size; position of the chunk's first row
  const T* XQ = nullptr;             ///< [BH, L, f] queries (after RoPE)
  const T* XK = nullptr;             ///< [BH, L, f] keys
  const T* XV = nullptr;             ///< [BH, L, f] values
  const int* pos = nullptr;          ///< [BH / heads] each sequence's pos0 (null: pos0 for all)
  const float* token_eta = nullptr;  ///< [mini_batch] the eta factor by position in a mini-batch
  const float* lr = nullptr;         ///< [BH, L] the learning-rate gate per row
  const float* ln_w = nullptr;       ///< [heads, f] the inner loss's LayerNorm weight
  const float* ln_b = nullptr;       ///< [heads, f] ... and bias
  float* theta = nullptr;            ///< [BH, state_size] at the current mini-batch's start (in/out)
  float* gacc = nullptr;             ///< [BH, state_size] the accumulated gradient (in/out)
  float* Zq = nullptr;               ///< [BH, L, f] out: the inner model's output for the queries
};

/// A CUDA thread block as tile/block.hpp's Block: every thread runs its share, then a barrier.
struct DeviceBlock {
  template <class F>
  __device__ void each(F&& f) const {
    f(int(threadIdx.x), int(blockDim.x));
    __syncthreads();
  }
};

/// The kernel: block blockIdx.x runs one head's scan (a template so that several .cu files can
/// include this header).
template <Learner K, class T>
__global__ void scan_kernel(ScanArgs<T> a, bool state_on_chip) {
  extern __shared__ float ws[];
  const int bh = blockIdx.x, f = a.f, P = K == Learner::linear ? f * f + f : 8 * f * f + 5 * f;
  const size_t rows = size_t(bh) * size_t(a.L) * size_t(f);
  const float *ln_w = a.ln_w + (bh % a.heads) * f, *ln_b = a.ln_b + (bh % a.heads) * f;
  const float* lr = a.lr + size_t(bh) * a.L;
  float *theta = a.theta + size_t(bh) * P, *gacc = a.gacc + size_t(bh) * P;
  const int pos0 = a.pos ? a.pos[bh / a.heads] : a.pos0;
  if constexpr (K == Learner::linear)
    tile::linear_scan_block(DeviceBlock{}, a.L, f, a.mini_batch, pos0, a.XQ + rows, a.XK + rows, a.XV + rows,
                            a.token_eta, lr, ln_w, ln_b, theta, gacc, a.Zq + rows, ws, state_on_chip);
  else
    tile::mlp_scan_block(DeviceBlock{}, a.L, f, a.mini_batch, pos0, a.XQ + rows, a.XK + rows, a.XV + rows, a.token_eta,
                         lr, ln_w, ln_b, theta, gacc, a.Zq + rows, ws, state_on_chip);
}

/// Throws ttt::Error naming `what` unless `e` is cudaSuccess.
inline void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error(what + ": " + cudaGetErrorString(e));
}

/// Bytes of shared memory a scan takes (state on chip or not).
inline size_t scan_shared_bytes(Learner l, int f, int mini_batch, bool state_on_chip) {
  return sizeof(float) * (l == Learner::linear ? tile::linear_scan_workspace(f, mini_batch, state_on_chip)
                                               : tile::mlp_scan_workspace(f, mini_batch, state_on_chip));
}

/// Threads per block when a launch passes 0, from measurements on an H200 (12 heads of 64, 2k
/// tokens; benchmarks/README.md, "CUDA"): a prefill with fewer blocks than multiprocessors gains
/// from more threads per block (TTT-Linear 512: 1.72 ms against 1.89 at 256 for one sequence), but
/// with many blocks the registers limit how many blocks share a multiprocessor and 256 wins (6.86
/// ms against 10.9 at 512 for 64 sequences); TTT-MLP's on-chip state leaves room for one block per
/// multiprocessor anyway, and 1024 threads win at every batch (9.1 ms against 12.9 for one
/// sequence, 54 against 78 for 64). Decode steps are short: 256 (at 64 sequences 0.15 ms against
/// 0.37 at 512).
inline int default_threads(Learner l, int blocks, bool on_chip, bool decode, int multiprocessors) {
  if (decode) return 256;
  if (l == Learner::mlp) return on_chip ? 1024 : 256;
  return blocks < multiprocessors ? 512 : 256;
}

/// Where the scan keeps the state.
enum class StateIn { automatic, on_chip, global };

namespace detail {
inline constexpr int kMaxDevices = 64;

/// The current device and its opt-in shared memory per block (queried once per device).
inline int max_shared_bytes(int& device, const std::string& name) {
  static int bytes[kMaxDevices] = {};
  check(cudaGetDevice(&device), name);
  if (device < 0 || device >= kMaxDevices) throw Error(name + ": device " + std::to_string(device) + " out of range");
  if (bytes[device] == 0)
    check(cudaDeviceGetAttribute(&bytes[device], cudaDevAttrMaxSharedMemoryPerBlockOptin, device), name);
  return bytes[device];
}

/// The device's multiprocessors (queried once per device).
inline int multiprocessors(int device, const std::string& name) {
  static int count[kMaxDevices] = {};
  if (count[device] == 0) check(cudaDeviceGetAttribute(&count[device], cudaDevAttrMultiProcessorCount, device), name);
  return count[device];
}

/// Raises scan_kernel<K, T>'s dynamic shared memory limit to `bytes` on `device` (once per kernel
/// and size: the call costs more than a decode step's kernel). One record per kernel: the
/// template's static belongs to this <K, T> alone.
template <Learner K, class T>
void allow_shared(int device, size_t bytes, const std::string& name) {
  static size_t allowed[kMaxDevices] = {};
  if (bytes <= 48 * 1024 || bytes <= allowed[device]) return;
  check(cudaFuncSetAttribute(scan_kernel<K, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)), name);
  allowed[device] = bytes;
}

template <Learner K, class T>
void launch(const ScanArgs<T>& a, StateIn where, int threads, cudaStream_t stream, bool decode) {
  const char* what = decode ? "decode" : "scan";
  const std::string name = std::string("cuda::") + what + (K == Learner::linear ? " (TTT-Linear)" : " (TTT-MLP)");
  if (a.BH < 1 || a.heads < 1 || a.L < 0 || a.f < 1 || a.mini_batch < 1 || a.pos0 < 0 || threads < 0 || threads > 1024)
    throw Error(
        name +
        ": BH, heads, f and mini_batch must be >= 1, L and pos0 >= 0, threads 0 (default) or in [1, 1024] (got BH " +
        std::to_string(a.BH) + ", heads " + std::to_string(a.heads) + ", L " + std::to_string(a.L) + ", f " +
        std::to_string(a.f) + ", mini_batch " + std::to_string(a.mini_batch) + ", pos0 " + std::to_string(a.pos0) +
        ", threads " + std::to_string(threads) + ")");
  if (a.BH % a.heads != 0)
    throw Error(name + ": BH (" + std::to_string(a.BH) + ") is not a multiple of heads (" + std::to_string(a.heads) +
                ")");
  if (a.L == 0) return;
  int device = 0;
  const int max_bytes = max_shared_bytes(device, name);
  const bool chip = where == StateIn::on_chip ||
                    (where == StateIn::automatic && scan_shared_bytes(K, a.f, a.mini_batch, true) <= size_t(max_bytes));
  if (threads == 0) threads = default_threads(K, a.BH, chip, decode, multiprocessors(device, name));
  const size_t bytes = scan_shared_bytes(K, a.f, a.mini_batch, chip);
  if (bytes > size_t(max_bytes))
    throw Error(name + ": head dim " + std::to_string(a.f) + " with mini-batch " + std::to_string(a.mini_batch) +
                " needs " + std::to_string(bytes) + " bytes of shared memory per block" +
                (chip ? " with the state on chip" : "") + "; this device allows " + std::to_string(max_bytes));
  allow_shared<K, T>(device, bytes, name);
  scan_kernel<K, T><<<a.BH, threads, bytes, stream>>>(a, chip);
  check(cudaGetLastError(), name + " launch");
}
}  // namespace detail

/// Whether a prefill scan keeps the state on chip on the current device (StateIn::automatic).
inline bool state_fits_on_chip(Learner l, int f, int mini_batch) {
  int device = 0;
  return scan_shared_bytes(l, f, mini_batch, true) <=
         size_t(detail::max_shared_bytes(device, "cuda::state_fits_on_chip"));
}

/// The prefill scan over a chunk (asynchronous on `stream`): the state on chip where it fits
/// (StateIn::automatic), or where `where` says; threads per block 0: default_threads. Bad arguments
/// and launch errors throw ttt::Error.
template <class T>
void scan(Learner l, const ScanArgs<T>& a, StateIn where = StateIn::automatic, int threads = 0,
          cudaStream_t stream = nullptr) {
  if (l == Learner::linear)
    detail::launch<Learner::linear>(a, where, threads, stream, false);
  else
    detail::launch<Learner::mlp>(a, where, threads, stream, false);
}

/// A decode step (usually a.L = 1 token per sequence): the state stays in global memory.
template <class T>
void decode(Learner l, const ScanArgs<T>& a, int threads = 0, cudaStream_t stream = nullptr) {
  if (l == Learner::linear)
    detail::launch<Learner::linear>(a, StateIn::global, threads, stream, true);
  else
    detail::launch<Learner::mlp>(a, StateIn::global, threads, stream, true);
}

}  // namespace ttt::cuda
