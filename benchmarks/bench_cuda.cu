// The CUDA scans (kernels/cuda/scan.cuh) on a GPU, timed with CUDA events (Google Benchmark's
// manual time): TTT-Linear's and TTT-MLP's prefill scan (fp32 and bf16 inputs) at the
// 125m-shaped model's heads (12 heads of 64) for 2k, 8k and 32k tokens and batches 1..64, next
// to cuBLAS's fp32 GEMM (SGEMM) of the same FLOPs measured in the same run; decode ms/token at
// batch 1 and 64; the 125m-shaped model (models/cuda/model.hpp, random weights): prefill tokens/s
// at 2k, 8k and 32k tokens, decode ms/token at batch 1 and 64. benchmarks/README.md has the
// numbers and the command (scripts/gpu_check.sh).
//
// FLOPs per token and head, mini-batch b, head dim f (inner::Linear / inner::MLP's
// flops_per_token, the counts the CPU benchmarks use):
//   TTT-Linear  6 f^2 + 2 b f + 20 f      (Z, XQ W, the gradient's step; the dual form's two
//                                          masked products; LayerNorm rows)
//   TTT-MLP     56 f^2 + 20 b f + 60 f    (seven f x 4f products, the masked products of both layers)
// The GEMM of the same FLOPs is square: n = cbrt(FLOPs / 2) rounded to a multiple of 32.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <ttt/kernels/cuda/scan.cuh>
#include <ttt/models/cuda/model.cuh>  // this program's one .cu file: it defines the model's members
#include <vector>

namespace {

using ttt::cuda::Learner;

constexpr int kHeads = 12, kF = 64, kMiniBatch = 16;

double flops_per_token(Learner l, int f, int b) {
  const double F = f, B = b;
  return l == Learner::linear ? 6 * F * F + 2 * B * F + 20 * F : 56 * F * F + 20 * B * F + 60 * F;
}

struct Device {
  void* p = nullptr;
  explicit Device(size_t bytes) { ttt::cuda::check(cudaMalloc(&p, bytes), "cudaMalloc"); }
  Device(const Device&) = delete;
  ~Device() { cudaFree(p); }
  template <class T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// Fills n floats with small values (a deterministic pattern; the timing does not depend on them).
__global__ void fill(float* x, size_t n, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = scale * (float((i * 2654435761u) % 1000u) / 500.f - 1.f);
}
__global__ void fill(__nv_bfloat16* x, size_t n, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = __float2bfloat16(scale * (float((i * 2654435761u) % 1000u) / 500.f - 1.f));
}
template <class T>
void fill_buffer(T* x, size_t n, float scale) {
  fill<<<256, 256>>>(x, n, scale);
  ttt::cuda::check(cudaGetLastError(), "fill");
}

// Times `run` with CUDA events per iteration.
template <class F>
void timed(benchmark::State& state, F run) {
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  run();  // warm-up
  ttt::cuda::check(cudaDeviceSynchronize(), "warm-up");
  for (auto _ : state) {
    cudaEventRecord(a);
    run();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    state.SetIterationTime(ms / 1e3);
  }
  ttt::cuda::check(cudaGetLastError(), "benchmark");
  cudaEventDestroy(a), cudaEventDestroy(b);
}

// The tensors of one scan: B sequences x 12 heads of 64, L rows.
template <class T>
struct ScanProblem {
  int BH, L, P;
  Device q, k, v, lr, eta, lnw, lnb, theta, gacc, z;
  ScanProblem(Learner l, int B, int L_)
      : BH(B * kHeads),
        L(L_),
        P(ttt::cuda::state_size(l, kF)),
        q(sizeof(T) * size_t(BH) * L * kF),
        k(sizeof(T) * size_t(BH) * L * kF),
        v(sizeof(T) * size_t(BH) * L * kF),
        lr(sizeof(float) * size_t(BH) * L),
        eta(sizeof(float) * kMiniBatch),
        lnw(sizeof(float) * kHeads * kF),
        lnb(sizeof(float) * kHeads * kF),
        theta(sizeof(float) * size_t(BH) * P),
        gacc(sizeof(float) * size_t(BH) * P),
        z(sizeof(float) * size_t(BH) * L * kF) {
    fill_buffer(q.as<T>(), size_t(BH) * L * kF, 1.f), fill_buffer(k.as<T>(), size_t(BH) * L * kF, 1.f);
    fill_buffer(v.as<T>(), size_t(BH) * L * kF, 1.f), fill_buffer(lr.as<float>(), size_t(BH) * L, 0.01f);
    fill_buffer(eta.as<float>(), kMiniBatch, 0.5f), fill_buffer(lnw.as<float>(), kHeads * kF, 1.f);
    fill_buffer(lnb.as<float>(), kHeads * kF, 0.1f), fill_buffer(theta.as<float>(), size_t(BH) * P, 0.02f);
    ttt::cuda::check(cudaMemset(gacc.p, 0, sizeof(float) * size_t(BH) * P), "cudaMemset");
  }
  ttt::cuda::ScanArgs<T> args(int rows, int pos0) const {
    ttt::cuda::ScanArgs<T> a;
    a.BH = BH, a.heads = kHeads, a.L = rows, a.f = kF, a.mini_batch = kMiniBatch, a.pos0 = pos0;
    a.XQ = q.as<T>(), a.XK = k.as<T>(), a.XV = v.as<T>(), a.token_eta = eta.as<float>(), a.lr = lr.as<float>();
    a.ln_w = lnw.as<float>(), a.ln_b = lnb.as<float>(), a.theta = theta.as<float>(), a.gacc = gacc.as<float>();
    a.Zq = z.as<float>();
    return a;
  }
};

// Prefill scan: args = {batch, tokens, threads per block (0: cuda::default_threads)}.
template <Learner K, class T>
void BM_scan(benchmark::State& state) {
  const int B = int(state.range(0)), L = int(state.range(1)), threads = int(state.range(2));
  ScanProblem<T> p(K, B, L);
  const auto a = p.args(L, 0);
  timed(state, [&] { ttt::cuda::scan(K, a, ttt::cuda::StateIn::automatic, threads); });
  const double flops = flops_per_token(K, kF, kMiniBatch) * double(p.BH) * L;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(double(B) * L, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["on_chip"] = ttt::cuda::state_fits_on_chip(K, kF, kMiniBatch) ? 1 : 0;
}

// Decode: one token per sequence per step, 64 steps per iteration (every position of 4
// mini-batches); args = {batch}. Reports ms per token step.
template <Learner K>
void BM_decode(benchmark::State& state) {
  const int B = int(state.range(0)), steps = 64;
  ScanProblem<float> p(K, B, 1);
  timed(state, [&] {
    for (int t = 0; t < steps; ++t) ttt::cuda::decode(K, p.args(1, t));
  });
  state.counters["ms/token"] =
      benchmark::Counter(1e3 / steps, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["tokens/s"] = benchmark::Counter(double(B) * steps, benchmark::Counter::kIsIterationInvariantRate);
}

// cuBLAS SGEMM (fp32, no tensor cores) of the FLOPs of BM_scan<K> at {batch, tokens}: a square
// n x n x n product, n = cbrt(FLOPs / 2) rounded to a multiple of 32.
// FLOPs per token of one TTT layer of the 125m shape (BM_layer): projections, gate, scan.
double layer_flops_per_token(Learner l) {
  const double C = 768;
  return 8 * C * C + 2 * C * kHeads + kHeads * flops_per_token(l, kF, kMiniBatch);
}

// `Layer`: the FLOPs of BM_layer<K> instead of BM_scan<K>'s.
template <Learner K, bool Layer = false>
void BM_cublas_same_flops(benchmark::State& state) {
  const int B = int(state.range(0)), L = int(state.range(1));
  const double flops =
      (Layer ? layer_flops_per_token(K) : flops_per_token(K, kF, kMiniBatch) * kHeads) * double(B) * L;
  const int n = std::max(32, int(std::lround(std::cbrt(flops / 2) / 32)) * 32);
  Device a(sizeof(float) * size_t(n) * n), b(sizeof(float) * size_t(n) * n), c(sizeof(float) * size_t(n) * n);
  fill_buffer(a.as<float>(), size_t(n) * n, 1.f), fill_buffer(b.as<float>(), size_t(n) * n, 1.f);
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw std::runtime_error("cublasCreate failed");
  cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH);  // plain fp32: no TF32 tensor cores
  const float one = 1, zero = 0;
  timed(state, [&] {
    if (cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.as<float>(), n, b.as<float>(), n, &zero,
                    c.as<float>(), n) != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("cublasSgemm failed");
  });
  cublasDestroy(h);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["n"] = n;
}

// ---- the 125m-shaped model (768 wide, 12 layers of 12 heads, SwiGLU 2048, vocabulary 32000) ----

// Random weights of that shape (normal(0, 0.02) for the matrices, ones for the norms). `layers`,
// `I` and `V` other than 12, 2048 and 32000: the one-layer model that BM_layer times.
ttt::cuda::ModelWeights model_125m(Learner l, int layers = 12, int I = 2048, int V = 32000) {
  ttt::cuda::ModelWeights w;
  w.learner = l == Learner::linear ? "linear" : "mlp";
  w.C = 768, w.H = kHeads, w.f = kF, w.mini_batch = kMiniBatch, w.I = I, w.V = V;
  std::mt19937 rng(1);
  std::normal_distribution<float> N(0.f, 0.02f);
  auto randn = [&](size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = N(rng);
    return v;
  };
  const size_t C = size_t(w.C);
  w.embed = randn(size_t(w.V) * C), w.norm.assign(C, 1.f);
  for (int i = 0; i < layers; ++i) {
    ttt::cuda::LayerWeights L;
    L.seq_norm.assign(C, 1.f), L.ffn_norm.assign(C, 1.f);
    L.q = randn(C * C), L.k = randn(C * C), L.v = randn(C * C), L.o = randn(C * C);
    L.lr_w = randn(size_t(kHeads) * C), L.lr_b.assign(kHeads, 0.f), L.token_idx.assign(kMiniBatch, 0.f);
    L.ln_w.assign(C, 1.f), L.ln_b.assign(C, 0.f), L.post_w.assign(C, 1.f), L.post_b.assign(C, 0.f);
    L.theta0 = randn(size_t(kHeads) * ttt::cuda::state_size(l, kF));
    L.gate = randn(size_t(w.I) * C), L.up = randn(size_t(w.I) * C), L.down = randn(C * size_t(w.I));
    w.layers.push_back(std::move(L));
  }
  return w;
}

// FLOPs of one token through the model: per layer the projections q, k, v, o (8 C^2), the
// learning-rate gate (2 C H), the scan (H x flops_per_token), SwiGLU (6 C I); then the LM head (2 C V).
double model_flops_per_token(Learner l) {
  const double C = 768, I = 2048, V = 32000;
  return 12 * (8 * C * C + 2 * C * kHeads + kHeads * flops_per_token(l, kF, kMiniBatch) + 6 * C * I) + 2 * C * V;
}

// Prefill of one prompt of `tokens` (the last row's logits); args = {tokens}.
template <Learner K>
void BM_model_prefill(benchmark::State& state) {
  const int L = int(state.range(0));
  static const ttt::cuda::Model model(model_125m(K));
  std::vector<int64_t> ids(static_cast<size_t>(L));
  for (int t = 0; t < L; ++t) ids[size_t(t)] = (t * 7919) % 32000;
  std::vector<float> logits(32000);
  timed(state, [&] {
    auto st = model.new_state(1);
    model.forward(st, ids.data(), L, logits.data(), ttt::cuda::LogitRows::last);
  });
  state.counters["tokens/s"] = benchmark::Counter(double(L), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(model_flops_per_token(K) * L * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// One TTT layer of the 125m shape with what runs per token around it (the RMSNorm before it, the
// residual): a one-layer model with a SwiGLU of width 16 (1.5% of the layer's FLOPs; its norm and
// three small products are timed with it) and no logits, so the time is the layer's: projections,
// gates, RoPE, the scan, the norms, o_proj. FLOPs per token: 8 C^2 + 2 C H + H flops_per_token
// (the SwiGLU's not counted). args = {batch, tokens}.
template <Learner K>
void BM_layer(benchmark::State& state) {
  const int B = int(state.range(0)), L = int(state.range(1));
  static const ttt::cuda::Model model(model_125m(K, 1, 16, 16));
  std::vector<int64_t> ids(size_t(B) * L);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i % 16);
  timed(state, [&] {
    auto st = model.new_state(B);
    model.forward(st, ids.data(), L, nullptr, ttt::cuda::LogitRows::none);
  });
  const double flops = layer_flops_per_token(K);
  state.counters["tokens/s"] = benchmark::Counter(double(B) * L, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * B * L * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Decode: one token for each of `batch` sequences per step, 32 steps after a prompt of 64 tokens;
// args = {batch}. Reports ms per step (every sequence gets one token per step).
template <Learner K>
void BM_model_decode(benchmark::State& state) {
  const int B = int(state.range(0)), steps = 32;
  static const ttt::cuda::Model model(model_125m(K));
  std::vector<int64_t> prompt(size_t(B) * 64), next(static_cast<size_t>(B));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int64_t((i * 7919) % 32000);
  std::vector<float> logits(size_t(B) * 32000);
  auto st = model.new_state(B);
  model.forward(st, prompt.data(), 64, nullptr, ttt::cuda::LogitRows::none);
  timed(state, [&] {
    for (int s = 0; s < steps; ++s) {
      for (int b = 0; b < B; ++b) next[size_t(b)] = (s * 31 + b) % 32000;
      model.forward(st, next.data(), 1, logits.data());
    }
  });
  state.counters["ms/token"] =
      benchmark::Counter(1e3 / steps, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.counters["tokens/s"] = benchmark::Counter(double(B) * steps, benchmark::Counter::kIsIterationInvariantRate);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int B : {1, 8, 64}) b->Args({B, 2048, 0});
  b->Args({1, 8192, 0})->Args({1, 32768, 0})->Args({8, 8192, 0});
  b->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_scan<Learner::linear, float>)->Apply(shapes)->Args({1, 2048, 256})->Args({64, 2048, 512});
BENCHMARK(BM_scan<Learner::linear, __nv_bfloat16>)->Apply(shapes);
BENCHMARK(BM_cublas_same_flops<Learner::linear>)->Apply(shapes);
BENCHMARK(BM_scan<Learner::mlp, float>)->Apply(shapes)->Args({1, 2048, 256})->Args({64, 2048, 256});
BENCHMARK(BM_scan<Learner::mlp, __nv_bfloat16>)->Apply(shapes);
BENCHMARK(BM_cublas_same_flops<Learner::mlp>)->Apply(shapes);
BENCHMARK(BM_decode<Learner::linear>)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_decode<Learner::mlp>)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer<Learner::linear>)->Args({1, 2048})->Args({8, 2048})->Args({64, 2048})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_layer<Learner::mlp>)->Args({1, 2048})->Args({8, 2048})->Args({64, 2048})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cublas_same_flops<Learner::linear, true>)->Args({1, 2048})->Args({8, 2048})->Args({64, 2048})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_cublas_same_flops<Learner::mlp, true>)->Args({1, 2048})->Args({8, 2048})->Args({64, 2048})->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_model_prefill<Learner::linear>)
    ->Arg(2048)
    ->Arg(8192)
    ->Arg(32768)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_model_prefill<Learner::mlp>)
    ->Arg(2048)
    ->Arg(8192)
    ->Arg(32768)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_model_decode<Learner::linear>)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_model_decode<Learner::mlp>)->Arg(1)->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
