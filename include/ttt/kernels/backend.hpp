#pragma once
/// \file kernels/backend.hpp
/// Backend tags with a fallback chain (xsimd's `struct avx2 : avx` idiom): a kernel written for
/// `scalar` serves every backend; a `simd` overload, when present, wins by overload resolution.
/// What is where: element functions and the plain-loop kernels (the specification) in
/// kernels/scalar.hpp, xsimd overloads in kernels/simd.hpp. A future backend adds its own tag here,
/// derived from the one it falls back to.
namespace ttt::backend {
struct scalar {};
struct simd : scalar {};
/// The backend the CPU code paths use.
using cpu_default = simd;
}  // namespace ttt::backend
