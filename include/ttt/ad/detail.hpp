#pragma once
/// \file ad/detail.hpp
/// Shape checks shared by the ops of the tape (ad/linalg.hpp, ad/nn.hpp, ad/attention.hpp,
/// ad/loss.hpp): a ShapeError "ad::OP: what" when a condition fails, and shape strings.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "tape.hpp"

namespace ttt::ad::detail {

inline std::string shp(Eigen::Index r, Eigen::Index c) {
  std::string s = "[";  // (appended, not "[" + ...: GCC 12 warns falsely (-Wrestrict) on that form)
  s += std::to_string(r);
  s += ", ";
  s += std::to_string(c);
  s += "]";
  return s;
}
template <class T>
void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw ShapeError(std::string("ad::") + op + ": " + what);
}
template <class T>
std::string shp(Var<T> v) {
  return shp(v.rows(), v.cols());
}

/// fn(r0, r1) over row ranges of a (rows, cols) row-wise job: one range per OpenMP thread when
/// the job has 64k values or more (parallel_ranges), else fn(0, rows). Each row is computed the
/// same way whatever the cut, so results do not depend on the thread count.
template <class F>
void by_rows(Eigen::Index rows, Eigen::Index cols, F&& fn) {
  parallel_ranges(int64_t(rows), std::max<int64_t>(2, (int64_t(1) << 16) / std::max<int64_t>(1, int64_t(cols))),
                  [&](int64_t r0, int64_t r1) { fn(Eigen::Index(r0), Eigen::Index(r1)); });
}

}  // namespace ttt::ad::detail
