// Tokens/s of each level of the teaching ladder on one TTT-Linear head (README.md here has the
// measured numbers). Float, head dim f = 64 (the 125M model's), L = 2048 tokens, mini-batch b = 16
// (the paper's). Counters: tokens/s, GFLOP/s from each level's flops_per_token (written next to
// its code), and x_level1, the speed-up over level 1 on the same machine and run (CPU time, one
// thread: OMP_NUM_THREADS=1).
//   build-teach/examples/teaching/bench_ladder [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <ctime>

#include "level1_naive.hpp"
#include "level2_minibatch.hpp"
#include "level3_dual.hpp"
#include "level4_library.hpp"

namespace {

using S = float;
constexpr int64_t kL = 2048, kD = 64, kF = 64, kB = 16;
constexpr S kEta = S(0.5 / double(kF));

const teach::Views<S>& head() {
  static const auto x = teach::random_head<S>(kL, kD, kF, 7);
  return x;
}
const teach::Mat<S>& W0() {
  static const auto W = teach::random_matrix<S>(kF, kF, 0.02, 99);
  return W;
}

double level1_seconds = 0;  // per sequence, set by the level 1 benchmark (registered first)

/// Process CPU time, as Google Benchmark's CPU time and its rate counters (the machine this was
/// measured on is shared; wall time there includes other people's work).
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

/// Times `run` (one sequence per iteration) and sets the counters.
template <class Run>
double time_level(benchmark::State& state, double flops_per_token, Run run) {
  teach::Mat<S> W;
  const double start = cpu_seconds();
  for (auto _ : state) {
    W = W0();  // every sequence starts from the same W_0 (a 64 x 64 copy)
    benchmark::DoNotOptimize(run(W).data());
    benchmark::ClobberMemory();
  }
  const double secs = (cpu_seconds() - start) / double(state.iterations());
  state.counters["tokens/s"] = benchmark::Counter(double(kL) * double(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_token * double(kL) * double(state.iterations()) * 1e-9,
                                                 benchmark::Counter::kIsRate);
  state.counters["flops/token"] = flops_per_token;
  return secs;
}

void set_speedup(benchmark::State& state, double secs) {
  if (level1_seconds == 0) {  // level 1 filtered out: time it once here
    auto W = W0();
    const double t0 = cpu_seconds();
    benchmark::DoNotOptimize(teach::level1::forward(head(), W, kEta).data());
    level1_seconds = cpu_seconds() - t0;
  }
  state.counters["x_level1"] = level1_seconds / secs;
}

void BM_level1_naive(benchmark::State& state) {
  level1_seconds = time_level(state, teach::level1::flops_per_token(kF),
                              [](teach::Mat<S>& W) { return teach::level1::forward(head(), W, kEta); });
  state.counters["x_level1"] = 1.0;
}
void BM_level2_minibatch(benchmark::State& state) {
  const int64_t b = state.range(0);
  set_speedup(state, time_level(state, teach::level2::flops_per_token(kF),
                                [b](teach::Mat<S>& W) { return teach::level2::forward(head(), W, kEta, b); }));
}
void BM_level3_dual(benchmark::State& state) {
  const int64_t b = state.range(0);
  set_speedup(state, time_level(state, teach::level3::flops_per_token(kF, b),
                                [b](teach::Mat<S>& W) { return teach::level3::forward(head(), W, kEta, b); }));
}
void BM_level4_library(benchmark::State& state) {
  const int64_t b = state.range(0);
  set_speedup(state, time_level(state, teach::level4::flops_per_token(kF, b),
                                [b](teach::Mat<S>& W) { return teach::level4::forward(head(), W, kEta, b); }));
}

}  // namespace

BENCHMARK(BM_level1_naive)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_level2_minibatch)->Arg(kB)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_level3_dual)->Arg(kB)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_level4_library)->Arg(kB)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
