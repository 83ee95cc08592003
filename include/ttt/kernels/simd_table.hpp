#pragma once
/// \file kernels/simd_table.hpp
/// Runtime dispatch of the xsimd kernels (kernels/simd_arch.hpp): `SimdKernels` is a table of one
/// instruction set's instances; the CPU code paths call through `simd_kernels()`, the best table
/// this program holds that this CPU runs.
///
/// - Every program holds the table of its own build's instruction set (`xsimd::default_arch`:
///   SSE2 on x86-64 without -march).
/// - A program that links ttt::simd_dispatch (ttt::precompiled does) on x86-64 (GCC or Clang;
///   CMake option TTT_SIMD_DISPATCH, ON by default) also holds the tables for AVX2 + FMA and for
///   AVX-512 (F/CD/DQ/BW), compiled in translation units of their own with those flags
///   (include/ttt/precompiled/isa/); the CPU is asked at the first call (`__builtin_cpu_supports`,
///   which also checks that the OS saves the registers). So a portable build runs the
///   kernels at the width of the CPU it runs on.
/// - The AVX2 and AVX-512 tables also carry `gemm`: Eigen's float GEMM compiled for their
///   instruction set (include/ttt/precompiled/isa/eigen_gemm.hpp, Eigen in a namespace of its own
///   there), which kernels::gemm (kernels/gemm.hpp) calls; the build's own table has none, and
///   kernels::gemm then runs the build's Eigen. So a portable build's large products run at the
///   CPU's width too.
/// - `TTT_SIMD=<name>` in the environment, or `use_simd(name)`, picks a table by name (for
///   comparisons and tests): `sse2`, `fma3+avx2`, `avx512bw`, ... (`simd_names()` lists them).
///   A name this program or CPU lacks is an error that lists the ones it has.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "simd_arch.hpp"

namespace ttt::kernels {

/// C (m x n, row-major, leading dimension ldc) = alpha op(A) op(B), or += when `accumulate`; op(A) is
/// (m x k): A row-major (m x k, lda) or, `ta`, its transpose stored row-major (k x m, lda); the
/// same for B (k x n) with `tb`. `threads`: the caller's Eigen::nbThreads().
using GemmFn = void (*)(bool ta, bool tb, std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k, const float* a,
                        std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc,
                        bool accumulate, float alpha, int threads);

/// One instruction set's kernels (kernels/simd_arch.hpp's instances for `A`).
struct SimdKernels {
  const char* name;   ///< xsimd's name of the instruction set
  unsigned version;   ///< xsimd's rank of it (higher: wider or newer)
  std::size_t width;  ///< floats per batch
  void (*gelu_tanh)(const float*, float*, std::size_t);
  void (*gelu_tanh_grad)(const float*, float*, std::size_t);
  void (*gelu_tanh_dx)(const float*, float*, std::size_t);
  void (*gelu_tanh_grad_dx)(const float*, float*, std::size_t);
  void (*gelu_tanh_pair)(const float*, float*, float*, std::size_t);
  void (*gelu_tanh_grad_pair)(const float*, float*, float*, std::size_t);
  void (*silu_mul)(float*, const float*, std::size_t);
  void (*silu_gate)(const float*, const float*, float*, float*, std::size_t);
  void (*silu_mul_bwd)(const float*, const float*, const float*, float*, float*, std::size_t);
  float (*exp_affine_sum)(float*, std::size_t, float, float);
  void (*rows_wt)(const float*, std::ptrdiff_t, std::size_t, std::size_t, const float*, std::size_t, float*,
                  std::ptrdiff_t, bool);
  void (*rows_w)(const float*, std::ptrdiff_t, std::size_t, std::size_t, const float*, std::ptrdiff_t, std::size_t,
                 float*, std::ptrdiff_t, bool, std::ptrdiff_t);
  void (*ln_l2_grad_rows)(std::size_t, std::size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                          const float*, std::ptrdiff_t, const float*, const float*, float*, std::ptrdiff_t, float);
  void (*layer_norm_bwd_rows)(std::size_t, std::size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                              const float*, float, float*, std::ptrdiff_t, float*, float*);
  void (*rms_norm_bwd_rows)(std::size_t, std::size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                            const float*, float, float*, std::ptrdiff_t, float*);
  void (*causal_scores)(std::size_t, std::size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                        const float*, const float*, float, float*, std::ptrdiff_t);
  void (*causal_apply)(std::size_t, std::size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t, float*,
                       std::ptrdiff_t);
  void (*linear_dual)(const DualSegment<float>&, const float*, float*, float*, std::ptrdiff_t, float*);
  void (*bf16_rows)(std::int64_t, const float*, std::int64_t, const std::uint16_t*, std::int64_t, std::int64_t,
                    std::int64_t, float*, std::int64_t, bool);
  /// Eigen's GEMM for this instruction set (kernels/gemm.hpp has the arguments), or null: the
  /// build's own Eigen (the build's table, and a build without ttt::simd_dispatch).
  GemmFn gemm;
};

template <class A>
inline constexpr SimdKernels simd_table{A::name(),
                                        A::version(),
                                        isa::fb<A>::size,
                                        &isa::gelu_tanh<A>,
                                        &isa::gelu_tanh_grad<A>,
                                        &isa::gelu_tanh_dx<A>,
                                        &isa::gelu_tanh_grad_dx<A>,
                                        &isa::gelu_tanh_pair<A>,
                                        &isa::gelu_tanh_grad_pair<A>,
                                        &isa::silu_mul<A>,
                                        &isa::silu_gate<A>,
                                        &isa::silu_mul_bwd<A>,
                                        &isa::exp_affine_sum<A>,
                                        &isa::rows_wt<A>,
                                        &isa::rows_w<A>,
                                        &isa::ln_l2_grad_rows<A>,
                                        &isa::layer_norm_bwd_rows<A>,
                                        &isa::rms_norm_bwd_rows<A>,
                                        &isa::causal_scores<A>,
                                        &isa::causal_apply<A>,
                                        &isa::linear_dual<A>,
                                        &isa::bf16_rows<A>,
                                        nullptr};

namespace detail {
#if defined(TTT_SIMD_DISPATCH)
// Defined in ttt::simd_dispatch (include/ttt/precompiled/isa/*.cpp), each in a translation unit
// compiled for its instruction set.
const SimdKernels& simd_table_fma3_avx2();
const SimdKernels& simd_table_avx512bw();
#endif
// Eigen's float GEMM compiled for AVX2 + FMA and for AVX-512 (ttt::simd_dispatch,
// include/ttt/precompiled/isa/eigen_gemm_*.cpp), which those tables carry.
void gemm_fma3_avx2(bool, bool, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, const float*, std::ptrdiff_t,
                    const float*, std::ptrdiff_t, float*, std::ptrdiff_t, bool, float, int);
void gemm_avx512bw(bool, bool, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, const float*, std::ptrdiff_t,
                   const float*, std::ptrdiff_t, float*, std::ptrdiff_t, bool, float, int);

/// The tables this program holds that this CPU runs, best first, one per name.
inline std::vector<const SimdKernels*> runnable_simd_tables() {
  std::vector<const SimdKernels*> out{&simd_table<xsimd::default_arch>};
#if defined(TTT_SIMD_DISPATCH)
  __builtin_cpu_init();
  auto add = [&](const SimdKernels& t) {
    for (const SimdKernels* have : out)
      if (std::string_view(have->name) == t.name) return;
    out.push_back(&t);
  };
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw"))
    add(simd_table_avx512bw());
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) add(simd_table_fma3_avx2());
  for (std::size_t i = 1; i < out.size(); ++i)  // insertion sort by rank, best first; the build's first on ties
    for (std::size_t j = i; j > 0 && out[j]->version > out[j - 1]->version; --j) std::swap(out[j], out[j - 1]);
#endif
  return out;
}

/// The table named `name` ("" or "best": the first), or a std::invalid_argument naming the choices.
inline const SimdKernels* find_simd_table(std::string_view name) {
  const auto tables = runnable_simd_tables();
  if (name.empty() || name == "best") return tables.front();
  std::string have;
  for (const SimdKernels* t : tables) {
    if (name == t->name) return t;
    have += (have.empty() ? "" : ", ") + std::string(t->name);
  }
  throw std::invalid_argument("SIMD kernels '" + std::string(name) +
                              "': not in this program or not run by this CPU (here: " + have + ")");
}

inline const SimdKernels*& active_simd_table() {
  static const SimdKernels* active = [] {
    const char* env = std::getenv("TTT_SIMD");
    try {
      return find_simd_table(env ? env : "");
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("TTT_SIMD=") + env + ": " + e.what());
    }
  }();
  return active;
}
}  // namespace detail

/// The kernels the CPU code paths call (the best runnable table, or TTT_SIMD's).
inline const SimdKernels& simd_kernels() { return *detail::active_simd_table(); }

/// Makes `name`'s table the active one ("best": the default choice); std::invalid_argument when
/// this program or CPU has no such table. Not while kernels run on other threads.
inline void use_simd(std::string_view name) { detail::active_simd_table() = detail::find_simd_table(name); }

/// The names of the tables this program holds that this CPU runs, best first.
inline std::vector<std::string> simd_names() {
  std::vector<std::string> names;
  for (const SimdKernels* t : detail::runnable_simd_tables()) names.emplace_back(t->name);
  return names;
}

}  // namespace ttt::kernels
