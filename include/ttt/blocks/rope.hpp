#pragma once
/// \file blocks/rope.hpp
/// Rotary position embedding in the JAX convention of the TTT reference: the interleaved pairs
/// (2i, 2i+1) of every head rotate by the angle pos * inv_freq[i], inv_freq[i] = theta^(-2i/f),
/// with the angles computed in float32 as the reference computes them (a double model uses the
/// same float tables). The rotation is orthogonal, so its vector-Jacobian product is the inverse
/// rotation (`inverse = true`).
#include <cmath>
#include <cstdint>

#include "../core/tensor.hpp"
#include "eigen_out.hpp"

namespace ttt::blocks {

/// cos/sin of positions p0 .. p0 + P - 1 for head dim f: (P, f/2) each.
struct RopeTable {
  Mat cos, sin;
  RopeTable() = default;
  /// Positions 0 .. positions-1.
  RopeTable(int64_t positions, int64_t f, double theta) { fill(0, positions, f, theta); }
  /// Rows 0..n-1 for positions p0 .. p0+n-1 (reuses the buffers: nothing grows with the position).
  void fill(int64_t p0, int64_t n, int64_t f, double theta) {
    ensure_size(cos, n, f / 2);
    ensure_size(sin, n, f / 2);
    for (int64_t i = 0; i < f / 2; ++i) {
      const float inv_freq = 1.0f / std::pow(float(theta), float(2 * i) / float(f));
      for (int64_t r = 0; r < n; ++r) {
        const float a = float(p0 + r) * inv_freq;
        cos(r, i) = std::cos(a);
        sin(r, i) = std::sin(a);
      }
    }
  }
};

/// Rotate every head of X: (n, H*f) in place; row r uses table row pos[r]. `inverse` rotates back.
template <class X>
void rope(const Eigen::MatrixBase<X>& X_, int64_t f, const RopeTable& t, const int64_t* pos, bool inverse = false) {
  using S = typename X::Scalar;
  auto& x = detail::inout(X_);
  const int64_t heads = x.cols() / f, half = f / 2;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const float* c = t.cos.row(pos[r]).data();
    const float* s = t.sin.row(pos[r]).data();
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const S cs = S(c[i]), sn = inverse ? -S(s[i]) : S(s[i]);
        S& a = x(r, h * f + 2 * i);
        S& b = x(r, h * f + 2 * i + 1);
        const S a0 = a, b0 = b;
        a = a0 * cs - b0 * sn;
        b = b0 * cs + a0 * sn;
      }
  }
}

}  // namespace ttt::blocks
