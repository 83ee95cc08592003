#pragma once
/// \file kernels/backend.hpp
/// Backend tags with a fallback chain (xsimd's `struct avx2 : avx` idiom): a kernel written for
/// `scalar` serves every backend; a `simd` overload, when present, wins by overload resolution.
namespace ttt::backend {
struct scalar {};
struct simd : scalar {};
#if defined(TTT_WITH_CUDA)
struct cuda : simd {};
#endif
/// The backend the CPU code paths use.
using cpu_default = simd;
}  // namespace ttt::backend
