// bf16-stored weights with fp32 activations (kernels/bf16.hpp) against fp32 weights in Eigen, for a
// projection out (n, m) = X (n, k) W^T, W [m, k] in PyTorch's [out, in] layout:
//   F32/n/m/k            Eigen, the library's own form: mv(out).noalias() = cv(X) * cv(W).transpose()
//   Bf16/n/m/k           bf16_matmul_nt(backend::cpu_default): Bf16Kernel::automatic (avx512 on an
//                        AVX-512 CPU, whatever the build flags; portable elsewhere)
//   Bf16Portable/n/m/k   Bf16Kernel::portable: xsimd dot products in the instruction set chosen at run
//                        time (kernels/simd_table.hpp; TTT_SIMD=sse2|fma3+avx2|avx512bw) for n <= 24
//                        (one weight row at a time, in W's order), W widened to fp32 block by block
//                        + Eigen's GEMM above
//   Bf16Act/n/m/k        Bf16Kernel::avx512_bf16 at prefill sizes (n = 64, 2048): the activations
//                        rounded to bf16 too, vdpbf16ps (skipped on a CPU without AVX512_BF16)
//   F32Cold, Bf16Cold    decode sizes (n = 1, 8) cycling over copies of W that add up to 1 GiB of
//                        fp32 (512 MiB of bf16), so that every call reads its weights from DRAM, as a
//                        decode step of a whole model does (438 MB of fp32 weights for the 125m shape)
//   F32Rows, F32RowsCold decode sizes, fp32 weights through blocks::linear as batched decode calls it
//                        (few_rows: kernels::rows_wt, W read once for all n rows), warm and cold
// n = 1, 8 (decode), 64, 2048 (prefill) at (m, k) = (768, 768) (a 125m projection), (2048, 768)
// (its SwiGLU gate / up) and (32000, 768) (the LM head). Outside the Cold rows the weights stay in
// the caches between calls where they fit (768 x 768 bf16: 1.2 MB, in L2).
// Counters: GFLOP/s from flops() = 2 n m k per call; GB/s = weight bytes per second (m k x 4 for
// fp32, x 2 for bf16), the traffic a decode-sized product cannot avoid; items_per_second = rows of
// X per second (tokens/s).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ttt/blocks/linear.hpp"
#include "ttt/kernels/bf16.hpp"
#include "random_mat.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;
using ttt::kernels::Bf16Kernel;
using ttt::kernels::Bf16Matrix;

/// multiply-adds x 2 of out = X W^T
double flops(int64_t n, int64_t m, int64_t k) { return 2.0 * double(n) * double(m) * double(k); }

using ttt_bench::random_mat;

void counters(benchmark::State& state, int64_t n, int64_t m, int64_t k, double weight_bytes) {
  const double it = double(state.iterations());
  state.SetItemsProcessed(int64_t(it) * n);
  state.counters["GFLOP/s"] = benchmark::Counter(it * flops(n, m, k) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(it * weight_bytes * 1e-9, benchmark::Counter::kIsRate);
}

void BM_Bf16(benchmark::State& state, Bf16Kernel kernel) {
  if (!ttt::kernels::bf16_kernel_available(kernel)) {
    state.SkipWithError((std::string("this CPU cannot run the ") + ttt::kernels::bf16_kernel_name(kernel) + " kernel").c_str());
    return;
  }
  const int64_t n = state.range(0), m = state.range(1), k = state.range(2);
  const Mat X = random_mat(n, k, 1);
  const Bf16Matrix W(random_mat(m, k, 2, 0.02f));
  Mat out(n, m);
  ttt::kernels::bf16_matmul_nt(kernel, X, W, out);  // untimed: sizes the per-thread buffers
  for (auto _ : state) {
    ttt::kernels::bf16_matmul_nt(kernel, X, W, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  counters(state, n, m, k, double(W.bytes()));
}

/// Copies of W adding up to 1 GiB of fp32: more than the last-level cache of the machines measured.
int64_t cold_copies(int64_t m, int64_t k) { return (int64_t(1) << 30) / (4 * m * k) + 1; }

/// fp32 W: Eigen's product (the library's own form) or, with `few_rows`, blocks::linear as batched
/// decode runs it; one W every call (warm) or the next of the copies (cold).
void BM_F32(benchmark::State& state, bool cold, bool few_rows) {
  const int64_t n = state.range(0), m = state.range(1), k = state.range(2);
  const Mat X = random_mat(n, k, 1), W = random_mat(m, k, 2, 0.02f);
  const std::vector<Mat> Ws(size_t(cold ? cold_copies(m, k) : 1), W);
  Mat out(n, m);
  size_t i = 0;
  for (auto _ : state) {
    if (few_rows) ttt::blocks::linear<float>(ttt::cv(X), ttt::cv(Ws[i]), ttt::mv(out), false, /*few_rows=*/true);
    else ttt::mv(out).noalias() = ttt::cv(X) * ttt::cv(Ws[i]).transpose();
    i = (i + 1) % Ws.size();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  counters(state, n, m, k, 4.0 * double(m) * double(k));
}

void BM_Bf16Cold(benchmark::State& state) {
  const int64_t n = state.range(0), m = state.range(1), k = state.range(2);
  const Mat X = random_mat(n, k, 1);
  const std::vector<Bf16Matrix> Ws(size_t(cold_copies(m, k)), Bf16Matrix(random_mat(m, k, 2, 0.02f)));
  Mat out(n, m);
  ttt::kernels::bf16_matmul_nt(ttt::backend::cpu_default{}, X, Ws[0], out);
  size_t i = 0;
  for (auto _ : state) {
    ttt::kernels::bf16_matmul_nt(ttt::backend::cpu_default{}, X, Ws[i], out);
    i = (i + 1) % Ws.size();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  counters(state, n, m, k, double(Ws[0].bytes()));
}

constexpr int64_t kShapes[][2] = {{768, 768}, {2048, 768}, {32000, 768}};

void sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "m", "k"})->Unit(benchmark::kMicrosecond)->UseRealTime();
  for (int64_t n : {1, 8, 64, 2048})
    for (auto [m, k] : kShapes) b->Args({n, m, k});
}
void prefill_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "m", "k"})->Unit(benchmark::kMicrosecond)->UseRealTime();
  for (int64_t n : {64, 2048})
    for (auto [m, k] : kShapes) b->Args({n, m, k});
}
void decode_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "m", "k"})->Unit(benchmark::kMicrosecond)->UseRealTime();
  for (int64_t n : {1, 8})
    for (auto [m, k] : kShapes) b->Args({n, m, k});
}

BENCHMARK_CAPTURE(BM_F32, eigen, false, false)->Name("F32")->Apply(sizes);
BENCHMARK_CAPTURE(BM_Bf16, automatic, Bf16Kernel::automatic)->Name("Bf16")->Apply(sizes);
BENCHMARK_CAPTURE(BM_Bf16, portable, Bf16Kernel::portable)->Name("Bf16Portable")->Apply(sizes);
BENCHMARK_CAPTURE(BM_Bf16, avx512_bf16, Bf16Kernel::avx512_bf16)->Name("Bf16Act")->Apply(prefill_sizes);
BENCHMARK_CAPTURE(BM_F32, eigen_cold, true, false)->Name("F32Cold")->Apply(decode_sizes);
BENCHMARK(BM_Bf16Cold)->Name("Bf16Cold")->Apply(decode_sizes);
BENCHMARK_CAPTURE(BM_F32, rows, false, true)->Name("F32Rows")->Apply(decode_sizes);
BENCHMARK_CAPTURE(BM_F32, rows_cold, true, true)->Name("F32RowsCold")->Apply(decode_sizes);

}  // namespace

BENCHMARK_MAIN();
