// The whole 125m-shaped TTT model (12 layers, C = 768, 12 heads, intermediate 2048, vocab 32000),
// TTT-Linear and TTT-MLP, random weights (init_weights) and random tokens:
//   Model/<L>/prefill/n   n tokens from a fresh state, logits of the last position only (as
//                         generation does); tokens/s and GFLOP/s
//   Model/<L>/decode      after a 512-token prefill, one token per iteration; ms/token
//   Model/<L>/decode_batch/B   one batched step (forward_rows) of B sequences per iteration, each
//                         after a 16-token prompt; items = tokens (B per step), so tokens/s compares
//                         across B; GFLOP/s counts B * flops_per_token per step
//   Model/<L>/prefill_long/n/chunk   n tokens with max_chunk = chunk (0: one chunk, as before
//                         chunking); the 32k-token prompt against the 2k one
//   Model/<L>/bf16/...    prefill, decode and decode_batch with the weights in bf16
//                         (set_weight_dtype: half the weight bytes per token; the same FLOPs)
//   Model/<L>/bf16act/prefill/n   bf16 weights and the large products' activations rounded to bf16
//                         (set_bf16_activations: vdpbf16ps; skipped on a CPU without AVX512_BF16)
// GFLOP/s come from TTTModel::flops_per_token() (model.hpp). That count includes the LM head
// (2 C V) for every token; prefill with Logits::last runs the head once, so prefill counts
// n * (flops_per_token - 2 C V) + 2 C V.
// Run with OMP_NUM_THREADS set to the cores to use; the full run takes a few minutes on 2 cores.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "ttt/inner/linear.hpp"
#include "ttt/inner/mlp.hpp"
#include "ttt/models/ttt_model.hpp"
#include "ttt/core/model_config.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;

template <class L, bool Bf16 = false>
ttt::TTTModel<L>& bench_model() {  // not const: prefill_long sets max_chunk
  static ttt::TTTModel<L> model = [] {
    ttt::TTTModel<L> m(ttt::ModelConfig::preset_125m(std::string(L::name)));
    m.init_weights(2024);
    if (Bf16) m.set_weight_dtype(ttt::WeightDtype::bf16);
    return m;
  }();
  return model;
}

std::vector<int64_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(0, vocab - 1);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = d(rng);
  return ids;
}

template <class L>
double head_flops(const ttt::TTTModel<L>& m) {
  return 2.0 * double(m.cfg.hidden_size) * double(m.cfg.vocab_size);
}

/// Act: with the activations of the large products rounded to bf16 too (set_bf16_activations).
template <class L, bool Bf16 = false, bool Act = false>
void BM_ModelPrefill(benchmark::State& state) {
  if (Act && !ttt::kernels::bf16_kernel_available(ttt::kernels::Bf16Kernel::avx512_bf16)) {
    state.SkipWithError("this CPU has no AVX512_BF16");
    return;
  }
  ttt::kernels::set_bf16_activations(Act);
  const auto& model = bench_model<L, Bf16>();
  const int64_t n = state.range(0);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  auto st = model.new_state();
  Mat logits;
  // Untimed warm-up of the same length: sizes st's buffers, so the timed run measures steady state
  // (a first touch of ~50 KB of buffers per token costs page faults: see README).
  model.forward(st, std::span<const int64_t>(ids), &logits, ttt::Logits::last, nullptr);
  for (auto _ : state) {
    state.PauseTiming();
    auto fresh = model.new_state();  // fresh sequence; keep st's buffers
    st.layers = std::move(fresh.layers);
    st.conv_hist = std::move(fresh.conv_hist);
    st.pos = 0;
    state.ResumeTiming();
    model.forward(st, std::span<const int64_t>(ids), &logits, ttt::Logits::last, nullptr);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  const double flops = double(n) * (model.flops_per_token() - head_flops(model)) + head_flops(model);
  state.counters["GFLOP/s"] = benchmark::Counter(it * flops * 1e-9, benchmark::Counter::kIsRate);
  ttt::kernels::set_bf16_activations(false);
}

template <class L, bool Bf16 = false>
void BM_ModelDecode(benchmark::State& state) {
  const auto& model = bench_model<L, Bf16>();
  constexpr int64_t kPrefill = 512;
  const auto prompt = random_tokens(kPrefill, model.cfg.vocab_size, 12);
  const auto next = random_tokens(1024, model.cfg.vocab_size, 13);
  auto st = model.new_state();
  Mat logits;
  model.forward(st, std::span<const int64_t>(prompt), &logits, ttt::Logits::last, nullptr);
  size_t i = 0;
  for (; i < 4; ++i)  // untimed: resize the buffers from 512 rows to 1
    model.forward(st, std::span<const int64_t>(&next[i], 1), &logits, ttt::Logits::last, nullptr);
  for (auto _ : state) {
    model.forward(st, std::span<const int64_t>(&next[i++ % next.size()], 1), &logits, ttt::Logits::last, nullptr);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(state.iterations()) * model.flops_per_token() * 1e-9, benchmark::Counter::kIsRate);
}

template <class L, bool Bf16 = false>
void BM_ModelDecodeBatch(benchmark::State& state) {
  const auto& model = bench_model<L, Bf16>();
  const int64_t B = state.range(0);
  std::vector<typename ttt::TTTModel<L>::State> seqs;
  std::vector<typename ttt::TTTModel<L>::State*> ptrs;
  Mat logits;
  for (int64_t b = 0; b < B; ++b) {
    seqs.push_back(model.new_state());
    const auto prompt = random_tokens(16, model.cfg.vocab_size, 100 + uint64_t(b));
    model.forward(seqs.back(), std::span<const int64_t>(prompt), &logits, ttt::Logits::last, nullptr);
  }
  for (auto& s : seqs) ptrs.push_back(&s);
  const auto next = random_tokens(B * 64, model.cfg.vocab_size, 13);
  size_t step = 0;
  auto ids = [&] { return std::span<const int64_t>(next.data() + (step++ % 64) * size_t(B), size_t(B)); };
  for (int i = 0; i < 2; ++i) model.forward_rows(ptrs, ids(), &logits);  // untimed: size the buffers
  for (auto _ : state) {
    model.forward_rows(ptrs, ids(), &logits);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * B);
  state.counters["GFLOP/s"] = benchmark::Counter(double(state.iterations()) * double(B) * model.flops_per_token() * 1e-9,
                                                 benchmark::Counter::kIsRate);
}

template <class L>
void BM_ModelPrefillLong(benchmark::State& state) {
  auto& model = bench_model<L>();
  const int64_t n = state.range(0);
  const int64_t saved = model.max_chunk;
  model.max_chunk = state.range(1);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  for (auto _ : state) {
    auto st = model.new_state();  // fresh buffers every run: as a new prompt meets them
    Mat logits;
    model.forward(st, std::span<const int64_t>(ids), &logits, ttt::Logits::last, nullptr);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  model.max_chunk = saved;
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  const double flops = double(n) * (model.flops_per_token() - head_flops(model)) + head_flops(model);
  state.counters["GFLOP/s"] = benchmark::Counter(it * flops * 1e-9, benchmark::Counter::kIsRate);
}

using ttt::inner::Linear;
using ttt::inner::MLP;

// Fixed iteration counts keep the whole run to a few minutes on a 2-core machine.
void prefill_args(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_ModelPrefill<Linear>)->Name("Model/Linear/prefill")->Apply(prefill_args)
    ->Arg(512)->Arg(1024)->Arg(2048)->Arg(4096)->Arg(8192)->Iterations(1);
BENCHMARK(BM_ModelPrefill<MLP>)->Name("Model/MLP/prefill")->Apply(prefill_args)
    ->Arg(512)->Arg(1024)->Arg(2048)->Arg(4096)->Arg(8192)->Iterations(1);
// 48 timed tokens = three full mini-batches (after the 512-token prompt and 4 warm-up tokens).
BENCHMARK(BM_ModelDecode<Linear>)->Name("Model/Linear/decode")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Iterations(48);
BENCHMARK(BM_ModelDecode<MLP>)->Name("Model/MLP/decode")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Iterations(48);

// tokens/s at B = 8 against B = 1 is issue 15's batched-decode goal (>= 4x)
BENCHMARK(BM_ModelDecodeBatch<Linear>)->Name("Model/Linear/decode_batch")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Arg(1)->Arg(8)->Arg(64)->Iterations(32);
BENCHMARK(BM_ModelDecodeBatch<MLP>)->Name("Model/MLP/decode_batch")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Arg(1)->Arg(8)->Arg(64)->Iterations(32);
// bf16 weights (issue 15 item 1: decode at most 0.6x the fp32 time per token)
BENCHMARK(BM_ModelPrefill<Linear, true>)->Name("Model/Linear/bf16/prefill")->Apply(prefill_args)->Arg(2048)
    ->Iterations(1);
BENCHMARK(BM_ModelPrefill<MLP, true>)->Name("Model/MLP/bf16/prefill")->Apply(prefill_args)->Arg(2048)->Iterations(1);
BENCHMARK(BM_ModelPrefill<Linear, true, true>)->Name("Model/Linear/bf16act/prefill")->Apply(prefill_args)->Arg(2048)
    ->Iterations(1);
BENCHMARK(BM_ModelPrefill<MLP, true, true>)->Name("Model/MLP/bf16act/prefill")->Apply(prefill_args)->Arg(2048)
    ->Iterations(1);
BENCHMARK(BM_ModelDecode<Linear, true>)->Name("Model/Linear/bf16/decode")->Unit(benchmark::kMillisecond)
    ->UseRealTime()->Iterations(48);
BENCHMARK(BM_ModelDecode<MLP, true>)->Name("Model/MLP/bf16/decode")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Iterations(48);
BENCHMARK(BM_ModelDecodeBatch<Linear, true>)->Name("Model/Linear/bf16/decode_batch")->Unit(benchmark::kMillisecond)
    ->UseRealTime()->Arg(8)->Iterations(32);
BENCHMARK(BM_ModelDecodeBatch<MLP, true>)->Name("Model/MLP/bf16/decode_batch")->Unit(benchmark::kMillisecond)
    ->UseRealTime()->Arg(8)->Iterations(32);
// One run each: a 32k-token prompt of the 125m model takes tens of seconds on 2 cores.
BENCHMARK(BM_ModelPrefillLong<Linear>)->Name("Model/Linear/prefill_long")->Apply(prefill_args)
    ->Args({2048, 0})->Args({32768, 0})->Args({32768, 2048})->Args({32768, 1024})->Iterations(1);
BENCHMARK(BM_ModelPrefillLong<MLP>)->Name("Model/MLP/prefill_long")->Apply(prefill_args)
    ->Args({2048, 0})->Args({32768, 0})->Args({32768, 2048})->Args({32768, 1024})->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
