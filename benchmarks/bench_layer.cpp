// One TTT layer of the 125m shape (C = 768, H = 12, f = 64, mini-batch b = 16), Linear and MLP:
//   BM_LayerPrefill<L>/n   n tokens from a fresh state per iteration (tokens/s, GFLOP/s); bf16/: the
//                          projections' weights in bf16 (set_weight_dtype); bf16act/: and their
//                          activations (set_bf16_activations; skipped without AVX512_BF16)
//   BM_LayerVsGemm<L>/n    the same prefill, then a square fp32 GEMM of the same FLOPs, alternating
//                          in one run: the layer's rate as a fraction of the GEMM's (of_gemm)
//   BM_LayerDecode<L>      one token per iteration with a warm state (time per token)
//   BM_Learner*            one head, one mini-batch of 16 tokens: dual form vs primal form (inner
//                          gradient by hand or derived); BM_LearnerTrain: the training forward +
//                          reverse, hand-written vs derived; train_kept: the forward's products kept
//                          for the reverse (scan_checkpoint_group 0, the default)
// GFLOP/s use TTTLayer::flops_per_token() (layer.hpp) and the learners' flops_per_token
// (inner/linear.hpp, inner/mlp.hpp). Quick smoke run (seconds):
//   bench_layer --benchmark_filter='/512$|Decode|Learner' --benchmark_min_time=0.01
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ttt/inner/learner.hpp"
#include "ttt/inner/linear.hpp"
#include "ttt/inner/mlp.hpp"
#include "ttt/inner/swiglu.hpp"
#include "ttt/inner/derived.hpp"
#include "ttt/inner/primal.hpp"
#include "ttt/layers/ttt_layer.hpp"
#include "ttt/kernels/gemm.hpp"
#include "ttt/core/model_config.hpp"
#include "ttt/core/params.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;

/// The inner optimizers the Layer/<L>/prefill/<optimizer> rows run.
constexpr const char* kOptimizers[] = {"gd", "momentum", "decay", "muon", "adam"};

/// A layer of the 125m shape with the reference's random initialisation (std 0.02), under inner
/// optimizer kOptimizers[Opt]; Bf16: its projections' weights in bf16 (set_weight_dtype: the same
/// weights rounded).
template <class L, int Opt = 0, bool Bf16 = false>
const ttt::TTTLayer<L>& bench_layer() {
  static const ttt::TTTLayer<L> layer = [] {
    auto cfg = ttt::ModelConfig::preset_125m(std::string(L::name));
    cfg.ttt_inner_optimizer = kOptimizers[Opt];
    ttt::TTTLayer<L> l(cfg);
    std::mt19937_64 rng(1234);
    l.visit_params("", [&](const ttt::ParamRef& p) { ttt::init_param(p, rng); });
    if (Bf16) l.set_weight_dtype(ttt::WeightDtype::bf16);
    return l;
  }();
  return layer;
}

/// (n, C) standard-normal rows: what the RMSNorm in front of the layer produces, roughly.
Mat random_rows(int64_t n, int64_t C, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  Mat X(n, C);
  for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = d(rng);
  return X;
}

void set_counters(benchmark::State& state, int64_t tokens, double flops_per_token) {
  state.SetItemsProcessed(tokens);
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(tokens) * flops_per_token * 1e-9, benchmark::Counter::kIsRate);
}

// ---- layer: prefill ------------------------------------------------------------------------------
template <class L, int Opt = 0, bool Bf16 = false, bool Act = false>
void BM_LayerPrefill(benchmark::State& state) {
  if (Act && !ttt::kernels::bf16_kernel_available(ttt::kernels::Bf16Kernel::avx512_bf16)) {
    state.SkipWithError("this CPU has no AVX512_BF16");
    return;
  }
  ttt::kernels::set_bf16_activations(Act);  // Act: the projections' activations rounded to bf16 too
  const auto& layer = bench_layer<L, Opt, Bf16>();
  const int64_t n = state.range(0);
  const Mat X = random_rows(n, layer.C, 42);
  typename ttt::TTTLayer<L>::Workspace ws;  // reused: steady-state buffers, as in a server
  Mat out;
  {  // untimed warm-up: size the buffers (a first touch costs page faults, ~10 us per 4 KiB page in a VM)
    auto st = layer.new_state();
    layer.forward(X, st, 0, ws, out);
  }
  for (auto _ : state) {
    state.PauseTiming();
    auto st = layer.new_state();  // fresh sequence each iteration
    state.ResumeTiming();
    layer.forward(X, st, 0, ws, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, int64_t(state.iterations()) * n, layer.flops_per_token());
  ttt::kernels::set_bf16_activations(false);
}

// ---- layer against a GEMM of the same FLOPs (issue 15, item 3) ----------------------------------
/// Each iteration times the prefill of n tokens (as BM_LayerPrefill) and then a square fp32 GEMM
/// (row-major, C = A B with sides s = cbrt(FLOPs / 2)) of the same FLOPs, in the same process and
/// thread setting: `kernels::gemm(backend::simd)`, the GEMM the layer's large products run on
/// (the run-time table's, AVX2 or AVX-512, in a portable build too; until 2026-12-07 evening it was
/// Eigen's product as this program compiles it, SSE2 in a portable build). Reported time: the
/// layer's. Counters: layer_GFLOPs and gemm_GFLOPs (each from its own summed time), of_gemm =
/// gemm time / layer time (the layer's rate as a fraction of the GEMM rate; 1.0 = the layer's
/// FLOPs run at GEMM speed).
template <class L>
void BM_LayerVsGemm(benchmark::State& state) {
  const auto& layer = bench_layer<L>();
  const int64_t n = state.range(0);
  const Mat X = random_rows(n, layer.C, 42);
  typename ttt::TTTLayer<L>::Workspace ws;
  Mat out;
  const double flops = double(n) * layer.flops_per_token();
  const auto side = Eigen::Index(std::llround(std::cbrt(flops / 2.0)));
  const Mat A = random_rows(side, side, 1), B = random_rows(side, side, 2);
  Mat C(side, side);
  auto gemm = [&] {
    ttt::kernels::gemm(ttt::backend::simd{}, false, false, side, side, side, A.data(), side, B.data(), side, C.data(),
                       side, false);
  };
  {  // untimed warm-up of both
    auto st = layer.new_state();
    layer.forward(X, st, 0, ws, out);
    gemm();
  }
  double t_layer = 0, t_gemm = 0;
  using clock = std::chrono::steady_clock;
  for (auto _ : state) {
    auto st = layer.new_state();
    const auto t0 = clock::now();
    layer.forward(X, st, 0, ws, out);
    const auto t1 = clock::now();
    gemm();
    const auto t2 = clock::now();
    benchmark::DoNotOptimize(out.data());
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
    const double dl = std::chrono::duration<double>(t1 - t0).count(), dg = std::chrono::duration<double>(t2 - t1).count();
    state.SetIterationTime(dl);
    t_layer += dl, t_gemm += dg;
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["layer_GFLOPs"] = it * flops * 1e-9 / t_layer;
  state.counters["gemm_GFLOPs"] = it * 2.0 * double(side) * double(side) * double(side) * 1e-9 / t_gemm;
  state.counters["of_gemm"] = state.counters["layer_GFLOPs"] / state.counters["gemm_GFLOPs"];
}

// ---- layer: decode -------------------------------------------------------------------------------
template <class L>
void BM_LayerDecode(benchmark::State& state) {
  const auto& layer = bench_layer<L>();
  constexpr int64_t kPool = 64, kWarm = 512;
  const Mat pool = random_rows(kPool, layer.C, 7);
  std::vector<Mat> tok(kPool);
  for (int64_t i = 0; i < kPool; ++i) tok[size_t(i)] = pool.row(i);
  typename ttt::TTTLayer<L>::Workspace ws;
  Mat out;
  auto st = layer.new_state();
  layer.forward(random_rows(kWarm, layer.C, 9), st, 0, ws, out);  // warm state: 512 tokens seen
  int64_t pos = kWarm;
  for (auto _ : state) {
    layer.forward(tok[size_t(pos % kPool)], st, pos, ws, out);
    ++pos;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, int64_t(state.iterations()), layer.flops_per_token());
}

// ---- learner micro-benchmark: dual vs primal form on one head, one full mini-batch -------------
struct HeadBatch {
  int64_t f, b;
  Mat XQ, XK, XV;
  std::vector<float> eta, lr, ln_w, ln_b;
  HeadBatch(int64_t f_, int64_t b_) : f(f_), b(b_) {
    XQ = random_rows(b, f, 1) * 0.125f;  // RoPE'd projections of the 125m layer are ~N(0, 0.02^2 C)
    XK = random_rows(b, f, 2) * 0.125f;
    XV = random_rows(b, f, 3) * 0.125f;
    for (int64_t t = 0; t < b; ++t) eta.push_back(1.0f / float(t + 1));
    lr.assign(size_t(b), 0.5f / float(f));
    ln_w.assign(size_t(f), 1.0f);
    ln_b.assign(size_t(f), 0.0f);
  }
  ttt::inner::Segment<float> segment() const {
    return {ttt::CMatRef(XQ), ttt::CMatRef(XK), ttt::CMatRef(XV), eta.data(), lr.data(), ln_w.data(), ln_b.data(),
            true};
  }
};

template <class L>
std::vector<float> random_theta(int64_t f) {
  const int64_t P = ttt::inner::param_count(L::param_specs(f));
  std::mt19937_64 rng(5);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> th(static_cast<size_t>(P));
  for (auto& x : th) x = d(rng);
  return th;
}

// In the layer a learner runs inside the OpenMP loop over heads, where Eigen stays single-threaded;
// called from outside a parallel region Eigen would spread these tiny products over threads.
struct EigenSerial {
  EigenSerial() { Eigen::setNbThreads(1); }
  ~EigenSerial() { Eigen::setNbThreads(-1); }
};

template <class L, bool Dual>
void BM_Learner(benchmark::State& state) {
  const EigenSerial serial;
  constexpr int64_t f = 64, b = 16;
  const HeadBatch hb(f, b);
  const auto seg = hb.segment();
  const std::vector<float> theta = random_theta<L>(f);
  std::vector<float> gacc(theta.size(), 0.0f);
  Mat Zq(b, f);
  typename ttt::inner::head_workspace<L, float>::type dws;
  ttt::inner::PrimalWorkspace<float> pws;
  for (auto _ : state) {
    std::fill(gacc.begin(), gacc.end(), 0.0f);  // a fresh mini-batch, as the layer does
    if constexpr (Dual) ttt::inner::dual_form<L, float>(theta.data(), gacc.data(), f, seg, ttt::MatRef(Zq), dws);
    else ttt::inner::primal_segment<L, float>(theta.data(), gacc.data(), f, seg, ttt::MatRef(Zq), pws);
    benchmark::DoNotOptimize(Zq.data());
    benchmark::DoNotOptimize(gacc.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, int64_t(state.iterations()) * b, ttt::inner::flops_per_token<L>(f, b));
}

// One head, one mini-batch of 16 tokens (f = 64) through the training path: forward and reverse
// (random cotangents), the learner's hand-written LearnerGrad (Derived = false) or the one derived
// from its map on the ad::Real tape (inner/derived.hpp; the correctness twin). FLOPs: not counted
// for the derived path (the tape's work is not the model's); tokens/s only. Kept = true: the
// forward leaves its products in a store of the mini-batch's own and the reverse reads them there
// instead of recomputing them (what the layer does at scan_checkpoint_group 0, the default;
// inner/learner_grad.hpp's Scratch); false: the reverse recomputes them (group >= 1).
template <class L, bool Derived, bool Kept = false>
void BM_LearnerTrain(benchmark::State& state) {
  const EigenSerial serial;
  using G = std::conditional_t<Derived, ttt::train::DerivedGrad<L>, ttt::train::LearnerGrad<L>>;
  constexpr int64_t f = 64, b = 16;
  const HeadBatch hb(f, b);
  const auto seg = hb.segment();
  const std::vector<float> theta = random_theta<L>(f);
  std::vector<float> the(theta.size()), dthe(theta.size(), 0.01f), dth(theta.size());
  Mat Zq(b, f), dZq = Mat::Constant(b, f, 0.01f), dXQ(b, f), dXK(b, f), dXV(b, f);
  std::vector<float> dte(b), dlr(b), dlw(f), dlb(f);
  ttt::train::Scratch<float> ws, store;
  constexpr size_t kept = Kept ? ttt::train::kept_slots<G>() : 0;
  static_assert(!Kept || kept > 0, "Kept: the learner's LearnerGrad keeps no slots");
  for (auto _ : state) {
    if (Kept) ws.keep(&store, kept, false);
    G::template forward<float>(theta.data(), f, seg, ttt::MatRef(Zq), the.data(), ws);
    if (Kept) ws.release(), ws.keep(&store, kept, true);
    dXQ.setZero(), dXK.setZero(), dXV.setZero();
    std::fill(dth.begin(), dth.end(), 0.0f);
    ttt::train::SegmentGrad<float> o{ttt::MatRef(dXQ), ttt::MatRef(dXK), ttt::MatRef(dXV), dte.data(), dlr.data(),
                                     dlw.data(), dlb.data()};
    G::template backward<float>(theta.data(), f, seg, ttt::CMatRef(dZq), dthe.data(), dth.data(), o, ws);
    if (Kept) ws.release();
    benchmark::DoNotOptimize(dth.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * b);
}

using ttt::inner::Linear;
using ttt::inner::MLP;
using ttt::inner::SwiGLU;

BENCHMARK(BM_LayerPrefill<Linear>)->Name("Layer/Linear/prefill")->Arg(512)->Arg(2048)->Arg(8192)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<MLP>)->Name("Layer/MLP/prefill")->Arg(512)->Arg(2048)->Arg(8192)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
// the inner optimizers (primal form; gd above is the dual form) and the SwiGLU learner (gd: its dual form)
BENCHMARK(BM_LayerVsGemm<Linear>)->Name("Layer/Linear/vs_gemm")->Arg(2048)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK(BM_LayerVsGemm<MLP>)->Name("Layer/MLP/vs_gemm")->Arg(2048)->Unit(benchmark::kMillisecond)->UseManualTime();
// bf16 projections (issue 15, items 1 and 3: the layer with the bf16 path against the official one)
BENCHMARK(BM_LayerPrefill<Linear, 0, true>)->Name("Layer/Linear/bf16/prefill")->Arg(2048)->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LayerPrefill<MLP, 0, true>)->Name("Layer/MLP/bf16/prefill")->Arg(2048)->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_LayerPrefill<Linear, 0, true, true>)->Name("Layer/Linear/bf16act/prefill")->Arg(2048)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<MLP, 0, true, true>)->Name("Layer/MLP/bf16act/prefill")->Arg(2048)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<Linear, 1>)->Name("Layer/Linear/prefill/momentum")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<Linear, 2>)->Name("Layer/Linear/prefill/decay")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<Linear, 3>)->Name("Layer/Linear/prefill/muon")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<Linear, 4>)->Name("Layer/Linear/prefill/adam")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<MLP, 1>)->Name("Layer/MLP/prefill/momentum")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<MLP, 3>)->Name("Layer/MLP/prefill/muon")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<SwiGLU>)->Name("Layer/SwiGLU/prefill")->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerPrefill<SwiGLU, 3>)->Name("Layer/SwiGLU/prefill/muon")->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerDecode<SwiGLU>)->Name("Layer/SwiGLU/decode")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<SwiGLU, true>)->Name("Learner/SwiGLU/dual_form")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<SwiGLU, false>)->Name("Learner/SwiGLU/primal")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<SwiGLU, false>)->Name("Learner/SwiGLU/train")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<SwiGLU, false, true>)->Name("Learner/SwiGLU/train_kept")->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_LearnerTrain<SwiGLU, true>)->Name("Learner/SwiGLU/train_derived")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LayerDecode<Linear>)->Name("Layer/Linear/decode")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LayerDecode<MLP>)->Name("Layer/MLP/decode")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<Linear, true>)->Name("Learner/Linear/dual_form")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<Linear, false>)->Name("Learner/Linear/primal")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<MLP, true>)->Name("Learner/MLP/dual_form")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<MLP, false>)->Name("Learner/MLP/primal")->Unit(benchmark::kMicrosecond)->UseRealTime();
// the primal form with the inner gradient derived from the map (ApplyOnly: no accumulate_grad)
BENCHMARK(BM_Learner<ttt::inner::ApplyOnly<Linear>, false>)->Name("Learner/Linear/primal_derived")
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Learner<ttt::inner::ApplyOnly<MLP>, false>)->Name("Learner/MLP/primal_derived")
    ->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<Linear, false>)->Name("Learner/Linear/train")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<Linear, true>)->Name("Learner/Linear/train_derived")->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<MLP, false>)->Name("Learner/MLP/train")->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LearnerTrain<MLP, false, true>)->Name("Learner/MLP/train_kept")->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_LearnerTrain<MLP, true>)->Name("Learner/MLP/train_derived")->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
