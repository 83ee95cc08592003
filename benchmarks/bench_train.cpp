// Training step of a small TTT language model (hidden 256, 4 layers, 4 heads, intermediate 688,
// mini-batch 16, byte vocabulary 259 as `ttt train` builds it), TTT-Linear, TTT-MLP and SwiGLU
// fast weights (its default hidden width, 4f; forward and G = 0 / 1 steps only), random
// weights (init_weights) and random tokens, one sequence of n tokens per iteration:
//   Train/<L>/forward/n        TTTModel::forward over the sequence, all logits (the training
//                              forward's work, without keeping anything)
//   Train/<L>/step/n/G         ttt::train::loss_and_grad (float): forward + backward, no optimizer
//                              step; G = scan checkpoint group (0: every mini-batch's inner state
//                              kept and, for TTT-MLP and SwiGLU, their inner forward's products; 1: every
//                              state, each mini-batch's inner forward recomputed in the reverse
//                              pass; G > 1: every G-th state, the rest recomputed too)
// Counters: items_per_second (tokens/s); GFLOP/s from the FLOP counts below; peak_MiB: peak RSS
// growth of one call measured in a fresh child process (this program re-executed with
// --peak-rss ..., getrusage(RUSAGE_SELF).ru_maxrss minus the RSS before the call), so the
// numbers of one benchmark don't depend on what ran before; tape_MiB: the bytes of activations
// and inner-state checkpoints the backward keeps (ModelGrad::tape_bytes); faults: minor page
// faults per call (getrusage's ru_minflt over the timed calls: first touches of fresh memory, 0
// once the buffers are sized).
//
// FLOP counts (napkin math, per sequence of n tokens):
//   forward = n * TTTModel::flops_per_token()  (projections, SwiGLU, inner loop, LM head)
//   step    = 3 * forward + (inner-loop FLOPs of the forward) * (recompute + groups)
//     the backward of a matrix product costs two products (3x in all); the learner's backward
//     recomputes its mini-batch's forward (recompute = 1 x inner loop; 0 for TTT-MLP at G = 0,
//     which keeps it; TTT-Linear recomputes only Z = XK W + b, counted as 1 all the same), and
//     with G > 1 the group's forward once more (groups = (G-1)/G x inner loop).
//   Train/<L>/step/<optimizer>/<order>/n   the same step (G = 0) under another inner update
//                              (ttt_inner_optimizer, ttt_query_order). Tokens/s only: the FLOP
//                              counts above are gd's. Under order `before`, and under `after`
//                              with momentum or decay (affine queries), the mini-batch runs on the
//                              fast path (the learner's gd dual form, two of its gd reverses and
//                              the step's reverse, inner/update_grad.hpp); adam and muon under
//                              `after` run token by token (inner/token_step_grad.hpp; muon's
//                              Newton-Schulz at every token: n = 64 there).
//   Train/LinearAttention/{forward,step}/n   linear attention (inner/linear_attention.hpp): the
//                              same model with the whole sequence as one mini-batch
//                              (mini_batch_size 4096), G = 0; its mini-batch runs in blocks of 64
//                              rows, so the counts above hold with the learner's flops_per_token.
// Run with OMP_NUM_THREADS=1 (the per-head loops are tiny at f = 64; `ttt train` runs them on
// one thread and spreads the sequences of a batch over threads instead).
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "ttt/inner/linear.hpp"
#include "ttt/inner/linear_attention.hpp"
#include "ttt/inner/mlp.hpp"
#include "ttt/inner/swiglu.hpp"
#include "ttt/models/ttt_model.hpp"
#include "ttt/core/model_config.hpp"
#include "ttt/train/model_grad.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;

/// Linear attention's mini-batch is the whole sequence: the longest one benchmarked.
constexpr int64_t kLinearAttentionLength = 4096;

template <class L>
ttt::ModelConfig bench_config() {
  const bool whole = std::is_same_v<L, ttt::inner::LinearAttention>;
  return ttt::ModelConfig::sized(std::string(L::name), /*vocab=*/259, /*hidden=*/256, /*layers=*/4, /*heads=*/4,
                                 /*intermediate=*/688, /*mini_batch=*/whole ? kLinearAttentionLength : 16);
}

/// bench_config under optimizer `opt` and order `order` (weights as bench_model's, the decay gate
/// as init_weights makes it).
template <class L>
ttt::TTTModel<L> rule_model(const char* opt, const char* order) {
  auto c = bench_config<L>();
  c.ttt_inner_optimizer = opt;
  c.ttt_query_order = order;
  ttt::TTTModel<L> m(c);
  m.init_weights(2024);
  return m;
}

template <class L>
const ttt::TTTModel<L>& bench_model() {
  static const ttt::TTTModel<L> model = [] {
    ttt::TTTModel<L> m(bench_config<L>());
    m.init_weights(2024);
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

/// FLOPs of the inner loop (all layers) per token.
template <class L>
double inner_flops_per_token(const ttt::TTTModel<L>& m) {
  return double(m.cfg.num_hidden_layers) * double(m.cfg.num_attention_heads) *
         ttt::inner::flops_per_token<L>(ttt::inner::Dims(m.cfg.head_dim(), m.cfg.ttt_hidden_size), m.cfg.mini_batch_size);
}

long rss_kib() {
  std::ifstream f("/proc/self/statm");
  long pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/// Child mode: one loss_and_grad (G >= 0) or forward (G < 0) call; prints the peak RSS growth in KiB.
template <class L>
int peak_rss_child(int64_t n, int64_t G) {
  const auto& model = bench_model<L>();
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  ttt::TTTModel<L> grad(model.cfg);
  const long before = rss_kib();
  if (G >= 0) {
    ttt::train::ModelGrad<ttt::TTTModel<L>> run({.scan_checkpoint_group = G});
    benchmark::DoNotOptimize(run(model, {ids}, grad));
  } else {
    const Mat lg = model.forward(std::span<const int64_t>(ids));
    benchmark::DoNotOptimize(lg.data());
  }
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("%ld\n", ru.ru_maxrss - before);
  return 0;
}

/// Minor page faults of this process so far (first touches of fresh memory: zeroed pages).
long minor_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/// Peak RSS growth (MiB) of one call, from a fresh child process.
double peak_mib(const char* layer, int64_t n, int64_t G) {
  const std::string cmd = "/proc/" + std::to_string(getpid()) + "/exe --peak-rss " + layer + " " + std::to_string(n) +
                          " " + std::to_string(G);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  long kib = -1;
  if (std::fscanf(p, "%ld", &kib) != 1) kib = -1;
  pclose(p);
  return double(kib) / 1024.0;
}

template <class L>
void BM_Forward(benchmark::State& state) {
  const auto& model = bench_model<L>();
  const int64_t n = state.range(0);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  const long faults0 = minor_faults();
  for (auto _ : state) {
    const Mat lg = model.forward(std::span<const int64_t>(ids));
    benchmark::DoNotOptimize(lg.data());
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.counters["faults"] = double(minor_faults() - faults0) / it;
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] =
      benchmark::Counter(it * double(n) * model.flops_per_token() * 1e-9, benchmark::Counter::kIsRate);
  state.counters["peak_MiB"] = peak_mib(L::name.data(), n, -1);
}

template <class L>
void BM_Step(benchmark::State& state) {
  const auto& model = bench_model<L>();
  const int64_t n = state.range(0), G = state.range(1);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  ttt::TTTModel<L> grad(model.cfg);
  ttt::train::ModelGrad<ttt::TTTModel<L>> run({.scan_checkpoint_group = G});
  run(model, {ids}, grad);  // untimed: sizes the buffers
  const long faults0 = minor_faults();
  for (auto _ : state) {
    benchmark::DoNotOptimize(run(model, {ids}, grad));
    benchmark::ClobberMemory();
  }
  const double it = double(state.iterations());
  state.counters["faults"] = double(minor_faults() - faults0) / it;
  state.SetItemsProcessed(int64_t(it) * n);
  const double fwd = double(n) * model.flops_per_token(), inner = double(n) * inner_flops_per_token(model);
  // G = 0 keeps the inner forward of a learner that declares kept slots (inner/learner_grad.hpp)
  const double recompute = G == 0 && ttt::train::kept_slots<ttt::train::LearnerGrad<L>>() > 0 ? 0.0 : 1.0;
  const double flops = 3.0 * fwd + inner * (recompute + (G > 1 ? double(G - 1) / double(G) : 0.0));
  state.counters["GFLOP/s"] = benchmark::Counter(it * flops * 1e-9, benchmark::Counter::kIsRate);
  state.counters["tape_MiB"] = double(run.tape_bytes()) / (1024.0 * 1024.0);
  state.counters["peak_MiB"] = peak_mib(L::name.data(), n, G);
}

template <class L>
void BM_StepRule(benchmark::State& state, const char* opt, const char* order) {
  const auto model = rule_model<L>(opt, order);
  const int64_t n = state.range(0);
  const auto ids = random_tokens(n, model.cfg.vocab_size, 11);
  ttt::TTTModel<L> grad(model.cfg);
  ttt::train::ModelGrad<ttt::TTTModel<L>> run({.scan_checkpoint_group = 0});
  run(model, {ids}, grad);  // untimed: sizes the buffers
  for (auto _ : state) {
    benchmark::DoNotOptimize(run(model, {ids}, grad));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(int64_t(state.iterations()) * n);
}

using ttt::inner::Linear;
using ttt::inner::LinearAttention;
using ttt::inner::MLP;
using ttt::inner::SwiGLU;

/// Train/<L>/step/<optimizer>/<order>: registered from main (the names are built at run time).
template <class L>
void register_step_rules() {
  const struct {
    const char *opt, *order;
    int64_t n;
  } rules[] = {{"gd", "after", 512},       {"gd", "before", 512},    {"momentum", "before", 512},
               {"decay", "before", 512},    {"muon", "before", 512},  {"adam", "before", 512},
               {"momentum", "after", 512},  {"decay", "after", 512},  {"adam", "after", 512},
               {"muon", "after", 64}};
  for (const auto& r : rules) {
    const std::string name = std::string("Train/") + (L::name == "linear" ? "Linear" : "MLP") + "/step/" + r.opt + "/" +
                             r.order;
    benchmark::RegisterBenchmark(name.c_str(), [r](benchmark::State& st) { BM_StepRule<L>(st, r.opt, r.order); })
        ->Arg(r.n)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(2);
  }
}

BENCHMARK(BM_Forward<Linear>)->Name("Train/Linear/forward")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Arg(2048)->Iterations(3);
BENCHMARK(BM_Step<Linear>)->Name("Train/Linear/step")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Args({2048, 0})->Args({2048, 4})->Args({2048, 11})->Iterations(2);
BENCHMARK(BM_Forward<MLP>)->Name("Train/MLP/forward")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Arg(2048)->Iterations(3);
BENCHMARK(BM_Step<MLP>)->Name("Train/MLP/step")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Args({2048, 0})->Args({2048, 1})->Args({2048, 4})->Args({2048, 11})->Iterations(2);
BENCHMARK(BM_Forward<SwiGLU>)->Name("Train/SwiGLU/forward")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Arg(2048)->Iterations(3);
BENCHMARK(BM_Step<SwiGLU>)->Name("Train/SwiGLU/step")->Unit(benchmark::kMillisecond)->UseRealTime()
    ->Args({2048, 0})->Args({2048, 1})->Iterations(2);
BENCHMARK(BM_Forward<LinearAttention>)->Name("Train/LinearAttention/forward")->Unit(benchmark::kMillisecond)
    ->UseRealTime()->Arg(1024)->Arg(kLinearAttentionLength)->Iterations(2);
BENCHMARK(BM_Step<LinearAttention>)->Name("Train/LinearAttention/step")->Unit(benchmark::kMillisecond)
    ->UseRealTime()->Args({1024, 0})->Args({kLinearAttentionLength, 0})->Iterations(2);

}  // namespace

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--peak-rss") == 0) {
    const int64_t n = std::atoll(argv[3]), G = std::atoll(argv[4]);
    if (std::strcmp(argv[2], "linear") == 0) return peak_rss_child<Linear>(n, G);
    if (std::strcmp(argv[2], "mlp") == 0) return peak_rss_child<MLP>(n, G);
    if (std::strcmp(argv[2], "swiglu") == 0) return peak_rss_child<SwiGLU>(n, G);
    if (std::strcmp(argv[2], "linear_attention") == 0) return peak_rss_child<LinearAttention>(n, G);
    return 2;
  }
  register_step_rules<Linear>();
  register_step_rules<MLP>();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
