#pragma once
/// \file kernels/dual_segment.hpp
/// The rows of one head's segment that a fused dual form reads (kernels/linear_dual.hpp).
#include <cstddef>

namespace ttt::kernels {

/// One segment's rows and per-row parameters: XQ, XK, XV row-major [n, f] with row strides
/// ldq, ldk, ldv; token_eta, lr: n values; ln_w, ln_b: f values.
template <class T>
struct DualSegment {
  std::size_t n, f;
  const T *XQ, *XK, *XV;
  std::ptrdiff_t ldq, ldk, ldv;
  const T *token_eta, *lr, *ln_w, *ln_b;
  bool fresh;  ///< the segment starts a mini-batch: gacc is zero and not read
  T gscale;
};

}  // namespace ttt::kernels
