// Eigen's float GEMM for AVX2 + FMA (kernels/simd_table.hpp's `gemm`; eigen_gemm.hpp). CMake
// compiles this file with -mavx2 -mfma, as fma3_avx2.cpp.
#if !defined(__AVX2__) || !defined(__FMA__)
#error "include/ttt/precompiled/isa/eigen_gemm_fma3_avx2.cpp needs -mavx2 -mfma"
#endif
#define Eigen ttt_eigen_fma3_avx2
#define TTT_GEMM_NAME gemm_fma3_avx2
#include "eigen_gemm.hpp"
