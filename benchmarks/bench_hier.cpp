// The hierarchical transformer (ttt/hier, simple-hierarchical-transformer) against the flat
// full-attention model of the same code, at 1k, 4k and 16k tokens. Four configurations, all with
// dim 128, depth 2, 4 heads of 32, ff_mult 4, byte vocabulary 259, random weights (init_weights):
//   flat-full    hierarchies (1), full attention                     O(n^2) per layer
//   flat-local   hierarchies (1), local window 128                   O(n w)
//   h128-local   hierarchies (1, 2, 8), local windows 128 at each     O(n w) per hierarchy
//   h128-ttt     hierarchies (1, 2, 8), windows 128 at 1x and 2x, TTT-Linear (mini-batch 16) at 8x
// Benchmarks, one sequence of n tokens:
//   Hier/<model>/prefill/n   HierarchicalTransformer::forward (every position's logits, as the
//                            original's forward)
//   Hier/<model>/prefill_decoder/n  hier::Decoder::prefill: the prompt through Decoder::advance in
//                            chunks of 1,024 tokens (the caches filled, the last position's logits:
//                            what a prefill before decoding needs; work buffers of one chunk)
//   Hier/<model>/train/n     loss (CE + recon + hierarchical AR) and its gradient (one training
//                            step without the optimiser), n + 1 tokens
//   Hier/<model>/decode/n    hier::Decoder::step with n tokens already in the caches (filled by
//                            Decoder::prefill before timing; each timed step adds one token)
// Counters: items_per_second = tokens/s; GFLOP/s from HierarchicalTransformer::forward_flops /
// train_flops (matrix products only; the decode count is forward_flops(n + 1) - forward_flops(n));
// state_MiB (decode): the decoder's cache bytes.
// Run with OMP_NUM_THREADS=1 or 2 (the attention kernels spread query tiles over threads).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ttt/models/hier/decode.hpp"
#include "ttt/models/hier/model.hpp"
#include "simd_context.hpp"

namespace {

using Model = ttt::hier::HierarchicalTransformer;

const char* kConfigs[] = {
    R"({"num_tokens": 259, "dim": 128, "depth": 2, "seq_len": 32768, "dim_head": 32, "heads": 4, "ff_mult": 4,
        "hierarchies": 1, "window_sizes": null})",
    R"({"num_tokens": 259, "dim": 128, "depth": 2, "seq_len": 32768, "dim_head": 32, "heads": 4, "ff_mult": 4,
        "hierarchies": 1, "window_sizes": 128})",
    R"({"num_tokens": 259, "dim": 128, "depth": 2, "seq_len": 32768, "dim_head": 32, "heads": 4, "ff_mult": 4,
        "hierarchies": [1, 2, 8], "window_sizes": [128, 128, 128]})",
    R"({"num_tokens": 259, "dim": 128, "depth": 2, "seq_len": 32768, "dim_head": 32, "heads": 4, "ff_mult": 4,
        "hierarchies": [1, 2, 8], "window_sizes": [128, 128, null], "mixer": ["attention", "attention", "ttt-linear"],
        "ttt_mini_batch_size": 16})",
};
const char* kNames[] = {"flat-full", "flat-local", "h128-local", "h128-ttt"};

const Model& bench_model(int64_t k) {
  static std::map<int64_t, std::unique_ptr<Model>> models;
  auto& m = models[k];
  if (!m) {
    m = std::make_unique<Model>(ttt::hier::HierConfig::from_json(nlohmann::json::parse(kConfigs[k])));
    m->init_weights(2024);
  }
  return *m;
}

std::vector<int64_t> random_tokens(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int64_t(rng() % 256);
  return ids;
}

void BM_Prefill(benchmark::State& state, int64_t k, int64_t n) {
  const Model& m = bench_model(k);
  const auto ids = random_tokens(n, 11);
  for (auto _ : state) {
    const auto logits = m.forward(ids);
    benchmark::DoNotOptimize(logits.data());
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] = benchmark::Counter(it * m.forward_flops(n) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_PrefillDecoder(benchmark::State& state, int64_t k, int64_t n) {
  const Model& m = bench_model(k);
  const auto ids = random_tokens(n, 11);
  for (auto _ : state) {
    ttt::hier::Decoder<float> dec(m);
    const auto logits = dec.prefill(ids);
    benchmark::DoNotOptimize(logits.data());
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] = benchmark::Counter(it * m.forward_flops(n) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_Train(benchmark::State& state, int64_t k, int64_t n) {
  const Model& m = bench_model(k);
  const std::vector<std::vector<int64_t>> batch = {random_tokens(n + 1, 12)};
  Model g(m.cfg);
  for (auto _ : state) {
    const double loss = ttt::hier::loss_and_grad(m, batch, g);
    benchmark::DoNotOptimize(loss);
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] = benchmark::Counter(it * m.train_flops(n) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_Decode(benchmark::State& state, int64_t k, int64_t n) {
  const Model& m = bench_model(k);
  ttt::hier::Decoder<float> dec(m);
  const auto ids = random_tokens(n, 13);
  dec.prefill(ids);  // untimed: n tokens into the caches
  int64_t tok = 7;
  for (auto _ : state) {
    const auto logits = dec.step(tok);
    benchmark::DoNotOptimize(logits.data());
    tok = (tok + 1) % 256;
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it));
  state.counters["GFLOP/s"] = benchmark::Counter(it * (m.forward_flops(n + 1) - m.forward_flops(n)) * 1e-9,
                                                 benchmark::Counter::kIsRate);
  state.counters["state_MiB"] = double(dec.state_bytes()) / (1024.0 * 1024.0);
}

}  // namespace

int main(int argc, char** argv) {
  for (int64_t k = 0; k < 4; ++k)
    for (int64_t n : {1024, 4096, 16384}) {
      auto name = [&](const char* kind) { return "Hier/" + std::string(kNames[k]) + "/" + kind + "/" + std::to_string(n); };
      benchmark::RegisterBenchmark(name("prefill").c_str(), BM_Prefill, k, n)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(n >= 16384 ? 1 : 3);
      benchmark::RegisterBenchmark(name("prefill_decoder").c_str(), BM_PrefillDecoder, k, n)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(n >= 16384 ? 1 : 3);
      benchmark::RegisterBenchmark(name("train").c_str(), BM_Train, k, n)
          ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
      benchmark::RegisterBenchmark(name("decode").c_str(), BM_Decode, k, n)
          ->Unit(benchmark::kMicrosecond)->UseRealTime()->Iterations(200);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
