// The attention baselines (ttt/attention.hpp, ttt/transformer.hpp), full causal and sliding
// window (512), at contexts 512 ... 32k:
//   Attn/<w>/prefill/n   the tiled kernel alone: H = 4 heads of d = 64 over n tokens from position 0
//   Attn/<w>/decode/n    one query attending to a KV cache holding n tokens (attn::attend)
//   Transformer/<w>/prefill/n   the small study-shaped model (hidden 256, 4 layers, 4 heads,
//                               intermediate 688, vocab 256): n tokens from a fresh state, Logits::last
//   Transformer/<w>/decode/n    the same model, one token after n cached tokens, ms/token
// <w> is "full" or "w512". tokens/s = items_per_second; GFLOP/s from attn::forward_flops and
// TransformerModel::prefill_flops / decode_flops (the prefill count includes the LM head on every
// row; Logits::last computes it once, so prefill subtracts (n - 1) * 2 C V).
// Decode benchmarks fill the caches with random keys and values (no prefill) and rewind them by one
// token after each timed step, so every step sees exactly n cached tokens.
// Full-attention prefill at 32k costs ~0.5 TFLOP per 4-head layer: those runs take minutes.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "ttt/blocks/attention.hpp"
#include "ttt/models/transformer.hpp"
#include "random_mat.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;

constexpr int64_t kHeads = 4, kDim = 64, kWindow = 512;

using ttt_bench::random_mat;

std::vector<int64_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int64_t(rng() % uint64_t(vocab));
  return ids;
}

void BM_AttnPrefill(benchmark::State& state) {
  const int64_t window = state.range(0), n = state.range(1), W = kHeads * kDim;
  const Mat Q = random_mat(n, W, 1), K = random_mat(n, W, 2), V = random_mat(n, W, 3);
  Mat O(n, W);
  std::vector<float> lse(static_cast<size_t>(n));
  const float scale = 1.0f / std::sqrt(float(kDim));
  for (auto _ : state) {
    for (int64_t h = 0; h < kHeads; ++h)
      ttt::attn::forward(Q.middleCols(h * kDim, kDim), K.middleCols(h * kDim, kDim), V.middleCols(h * kDim, kDim),
                         scale, window, 0, 0, O.middleCols(h * kDim, kDim), lse.data());
    benchmark::DoNotOptimize(O.data());
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] = benchmark::Counter(
      it * double(kHeads) * ttt::attn::forward_flops(n, n, kDim, window) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_AttnDecode(benchmark::State& state) {
  const int64_t window = state.range(0), n = state.range(1), W = kHeads * kDim;
  ttt::attn::KVCache cache(W, window);
  cache.append(random_mat(n, W, 4), random_mat(n, W, 5));
  const Mat q = random_mat(1, W, 6), k = random_mat(1, W, 7), v = random_mat(1, W, 8);
  Mat o(1, W);
  const float scale = 1.0f / std::sqrt(float(kDim));
  ttt::attn::attend(cache, q, k, v, kHeads, scale, o);  // untimed: sizes the cache's buffers
  cache.len -= 1;
  for (auto _ : state) {
    ttt::attn::attend(cache, q, k, v, kHeads, scale, o);
    cache.len -= 1;  // rewind: the next step again sees n cached tokens
    benchmark::DoNotOptimize(o.data());
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it));
  state.counters["GFLOP/s"] = benchmark::Counter(
      it * double(kHeads) * ttt::attn::forward_flops(1, n + 1, kDim, window, n, 0) * 1e-9, benchmark::Counter::kIsRate);
}

const ttt::TransformerModel& bench_model(int64_t window) {
  auto make = [](int64_t w) {
    ttt::TransformerModel m(ttt::AttnConfig(ttt::ModelConfig::sized("attention", 256, 256, 4, kHeads, 688), w));
    m.init_weights(2024);
    return m;
  };
  static const ttt::TransformerModel full = make(-1), windowed = make(kWindow);
  return window < 0 ? full : windowed;
}

void BM_ModelPrefill(benchmark::State& state) {
  const auto& model = bench_model(state.range(0));
  const int64_t n = state.range(1);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  Mat logits;
  for (auto _ : state) {
    auto st = model.new_state();
    model.forward(st, std::span<const int64_t>(ids), &logits, ttt::Logits::last);
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  const double head = 2.0 * double(model.cfg.hidden_size) * double(model.cfg.vocab_size);
  state.counters["GFLOP/s"] =
      benchmark::Counter(it * (model.prefill_flops(n) - double(n - 1) * head) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_ModelDecode(benchmark::State& state) {
  const auto& model = bench_model(state.range(0));
  const int64_t n = state.range(1), C = model.cfg.hidden_size;
  auto st = model.new_state();
  for (size_t i = 0; i < st.layers.size(); ++i)  // n cached tokens of random keys and values
    st.layers[i].cache.append(random_mat(n, C, 20 + i), random_mat(n, C, 40 + i));
  st.pos = n;
  const int64_t tok = 7;
  Mat logits;
  auto step = [&] {
    model.forward(st, std::span<const int64_t>(&tok, 1), &logits, ttt::Logits::last);
    st.pos -= 1;  // rewind
    for (auto& l : st.layers) l.cache.len -= 1;
  };
  step();  // untimed: sizes the buffers
  for (auto _ : state) {
    step();
    benchmark::DoNotOptimize(logits.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(state.iterations()) * model.decode_flops(n) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["kv_bytes"] = double(model.state_bytes(n));
}

void contexts(benchmark::internal::Benchmark* b) {
  b->ArgNames({"window", "n"})->Unit(benchmark::kMillisecond)->UseRealTime();
  for (int64_t w : {int64_t(-1), kWindow})
    for (int64_t n : {512, 2048, 8192, 32768}) b->Args({w, n});
}

BENCHMARK(BM_AttnPrefill)->Name("Attn/prefill")->Apply(contexts)->Iterations(1);
BENCHMARK(BM_AttnDecode)->Name("Attn/decode")->Apply(contexts)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ModelPrefill)->Name("Transformer/prefill")->Apply(contexts)->Iterations(1);
BENCHMARK(BM_ModelDecode)->Name("Transformer/decode")->Apply(contexts);

}  // namespace

BENCHMARK_MAIN();
