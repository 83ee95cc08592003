// Eigen's float GEMM for AVX-512 (kernels/simd_table.hpp's `gemm`; eigen_gemm.hpp). CMake compiles
// this file with -mavx512f -mavx512cd -mavx512dq -mavx512bw -mfma, as avx512bw.cpp.
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__FMA__)
#error "include/ttt/precompiled/isa/eigen_gemm_avx512bw.cpp needs -mavx512f -mavx512cd -mavx512dq -mavx512bw -mfma"
#endif
// GCC 12 warns (-Wmaybe-uninitialized) inside its own AVX-512 intrinsics, at their
// _mm512_undefined_* placeholders (as avx512bw.cpp): silenced for this unit.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#define Eigen ttt_eigen_avx512bw
#define TTT_GEMM_NAME gemm_avx512bw
#include "eigen_gemm.hpp"
