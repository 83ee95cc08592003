// The large float products (kernels/gemm.hpp), the build's Eigen against the tables' GEMM, at the
// shapes of bench_train's model (n = 2,048 tokens, hidden C = 256, SwiGLU intermediate I = 688)
// and of an inner learner's mini-batch (16 rows, f = 64, 4f = 256):
//   Gemm/<shape>/build    kernels::gemm(backend::scalar): Eigen as this program is compiled (a
//                         portable build: SSE2)
//   Gemm/<shape>/<table>  kernels::gemm(backend::simd) under that table (use_simd): Eigen's GEMM
//                         compiled for fma3+avx2 or avx512bw (include/ttt/precompiled/isa/
//                         eigen_gemm.hpp); the build's own table has no GEMM of its own and runs
//                         the build's Eigen. Skipped where the CPU lacks the instruction set.
// Shapes (C = op(A) op(B), row-major as the library's matrices):
//   xWt    y (n, I) = x (n, C) W^T, W (I, C)        SwiGLU's gate / up, a projection's forward
//   dhW    da (n, I) = dh (n, C) W, W (C, I)         their backward to the input
//   dyTx   dW (C, I) += dh^T (C, n) a (n, I)         a weight's gradient (accumulated)
//   mbWt   (16, 64) = x (16, 256) W^T, W (64, 256)  an inner learner's reverse, x W^T
//   mbW    (16, 256) = x (16, 64) W, W (64, 256)    its forward, x W
// One thread unless OMP_NUM_THREADS says otherwise (Eigen's OpenMP split, both sides alike).
// Counter: GFLOP/s from 2 m n k per call.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ttt/kernels/gemm.hpp"
#include "random_mat.hpp"
#include "simd_context.hpp"

namespace {

using ttt::Mat;

using ttt_bench::random_mat;

struct Shape {
  const char* name;
  bool ta, tb, accumulate;
  int64_t m, n, k;
};

constexpr Shape kShapes[] = {{"xWt", false, true, false, 2048, 688, 256},
                             {"dhW", false, false, false, 2048, 688, 256},
                             {"dyTx", true, false, true, 256, 688, 2048},
                             {"mbWt", false, true, false, 16, 64, 256},
                             {"mbW", false, false, false, 16, 256, 64}};

/// table: "" for the build's Eigen (backend::scalar), else a table's name.
void BM_Gemm(benchmark::State& state, Shape s, std::string table) {
  const std::string before = ttt::kernels::simd_kernels().name;
  if (!table.empty()) {
    try {
      ttt::kernels::use_simd(table);
    } catch (const std::invalid_argument& e) {
      state.SkipWithError(e.what());
      return;
    }
  }
  const Mat A = s.ta ? random_mat(s.k, s.m, 1) : random_mat(s.m, s.k, 1);
  const Mat B = s.tb ? random_mat(s.n, s.k, 2) : random_mat(s.k, s.n, 2);
  Mat C = Mat::Zero(s.m, s.n);
  for (auto _ : state) {
    if (table.empty())
      ttt::kernels::gemm(ttt::backend::scalar{}, s.ta, s.tb, s.m, s.n, s.k, A.data(), A.cols(), B.data(), B.cols(),
                         C.data(), C.cols(), s.accumulate);
    else
      ttt::kernels::gemm(ttt::backend::simd{}, s.ta, s.tb, s.m, s.n, s.k, A.data(), A.cols(), B.data(), B.cols(),
                         C.data(), C.cols(), s.accumulate);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(double(state.iterations()) * 2.0 * double(s.m) * double(s.n) *
                                                     double(s.k) * 1e-9,
                                                 benchmark::Counter::kIsRate);
  ttt::kernels::use_simd(before);
}

const bool registered = [] {
  for (const Shape& s : kShapes)
    for (const char* table : {"", "sse2", "fma3+avx2", "avx512bw"})
      benchmark::RegisterBenchmark((std::string("Gemm/") + s.name + "/" + (*table ? table : "build")).c_str(), BM_Gemm,
                                   s, std::string(table))
          ->Unit(benchmark::kMicrosecond)
          ->UseRealTime();
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
