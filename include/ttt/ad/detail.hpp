#pragma once
/// \file ad/detail.hpp
/// Shape checks shared by the ops of the tape (ad/linalg.hpp, ad/nn.hpp, ad/attention.hpp,
/// ad/loss.hpp): a ShapeError "ad::OP: what" when a condition fails, and shape strings.
#include <string>

#include "../core/error.hpp"
#include "tape.hpp"

namespace ttt::ad::detail {

inline std::string shp(Eigen::Index r, Eigen::Index c) {
  return "[" + std::to_string(r) + ", " + std::to_string(c) + "]";
}
template <class T>
void check(bool ok, const char* op, const std::string& what) {
  if (!ok) throw ShapeError(std::string("ad::") + op + ": " + what);
}
template <class T>
std::string shp(Var<T> v) {
  return shp(v.rows(), v.cols());
}

}  // namespace ttt::ad::detail
