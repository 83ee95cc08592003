#pragma once
// Records in every benchmark program's context (the console header and the JSON "context") which
// table of SIMD kernels ran: kernels/simd_table.hpp picks the best one the program holds and the CPU
// runs, or TTT_SIMD's, so two runs of the same binary can differ by it. A bad TTT_SIMD ends the
// program here with its one-line error.
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

#include <benchmark/benchmark.h>

#include <ttt/kernels/simd_table.hpp>

namespace ttt_bench {
inline const bool simd_context = [] {
  try {
    std::string all;
    for (const std::string& n : ttt::kernels::simd_names()) all += (all.empty() ? "" : ", ") + n;
    benchmark::AddCustomContext("ttt_simd", ttt::kernels::simd_kernels().name);
    benchmark::AddCustomContext("ttt_simd_runnable", all);
  } catch (const std::invalid_argument& e) {
    std::cerr << e.what() << "\n";
    std::exit(2);
  }
  return true;
}();
}  // namespace ttt_bench
