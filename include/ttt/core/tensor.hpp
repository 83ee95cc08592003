#pragma once
/// \file tensor.hpp
/// The dense types the library computes with: row-major float matrices (Eigen), so that a
/// [L, C] activation and a PyTorch [out, in] weight have the memory layout of the reference.
#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace ttt {

using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::VectorXf;
using RowVec = Eigen::RowVectorXf;
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A writable view of a row-major block (e.g. one head's columns of a [L, C] matrix).
using MatRef = Eigen::Ref<Mat, 0, Eigen::OuterStride<>>;
/// A read-only view of a row-major block; never copies (an incompatible argument fails to compile).
using CMatRef = Eigen::Ref<const Mat, 0, Eigen::OuterStride<>>;
using MapMat = Eigen::Map<Mat>;
using CMapMat = Eigen::Map<const Mat>;
using MapRow = Eigen::Map<RowVec>;
using CMapRow = Eigen::Map<const RowVec>;

/// Resize without touching the contents when the size is unchanged (no allocation in steady state).
inline void ensure_size(Mat& m, Eigen::Index rows, Eigen::Index cols) {
  if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
}
inline void ensure_size(RowVec& v, Eigen::Index n) {
  if (v.size() != n) v.resize(n);
}

}  // namespace ttt
