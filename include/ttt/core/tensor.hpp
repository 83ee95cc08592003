#pragma once
/// \file core/tensor.hpp
/// The dense types the library computes with: row-major Eigen matrices, so that a (n, C)
/// activation and a PyTorch [out, in] weight have the memory layout of the reference. Every block
/// is generic over the scalar S: float for inference and training, double for the
/// finite-difference checks.
#include <Eigen/Core>
#include <cstdint>
#include <vector>

namespace ttt {

/// Row-major matrix, row vector and views of scalar S.
template <class S>
using MatT = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using RowT = Eigen::Matrix<S, 1, Eigen::Dynamic>;
/// A writable view of a row-major block (e.g. one head's columns of an (n, C) matrix).
template <class S>
using RefT = Eigen::Ref<MatT<S>, 0, Eigen::OuterStride<>>;
/// A read-only view of a row-major block; never copies (an incompatible argument fails to compile).
template <class S>
using CRefT = Eigen::Ref<const MatT<S>, 0, Eigen::OuterStride<>>;

using Mat = MatT<float>;
using MatD = MatT<double>;
using Vec = Eigen::VectorXf;
using RowVec = RowT<float>;
using RowD = RowT<double>;
using MatRef = RefT<float>;
using CMatRef = CRefT<float>;
using MapMat = Eigen::Map<Mat>;
using CMapMat = Eigen::Map<const Mat>;
using MapRow = Eigen::Map<RowVec>;
using CMapRow = Eigen::Map<const RowVec>;

/// Flat storage for values the library views as matrices (Eigen::Map over a state, a work
/// buffer): allocated at Eigen's own alignment. Eigen's vectorised reductions (a sum, a dot
/// product) over a view whose alignment it cannot see start their packets at the first aligned
/// entry, so the same values summed from a 16-byte-aligned std::vector buffer split differently
/// from one run to the next as the heap's history changes the address, and a run is not
/// reproducible bit for bit; at Eigen's alignment the split is the same in every run.
template <class S>
using aligned_vector = std::vector<S, Eigen::aligned_allocator<S>>;

/// A read-only view (Eigen::Ref) of a matrix, a block of one or a Map, of scalar S; `mv` the same,
/// writable: one type for a function's argument whatever the caller holds (a plain matrix, a head's
/// columns, a parameter in a flat array), so the function is compiled once. Only plain storage is
/// passed (a transposed or computed expression would be copied into a temporary). Products go
/// through blocks::matmul, which compiles Eigen's product once per scalar type whatever the views.
template <class X>
CRefT<typename X::Scalar> cv(const Eigen::MatrixBase<X>& x) {
  return CRefT<typename X::Scalar>(x.derived());
}
template <class X>
RefT<typename X::Scalar> mv(Eigen::MatrixBase<X>& x) {
  return RefT<typename X::Scalar>(x.derived());
}
template <class X>
RefT<typename X::Scalar> mv(Eigen::MatrixBase<X>&& x) {
  return RefT<typename X::Scalar>(x.derived());
}

/// Resize without touching the contents when the size is unchanged (no allocation in steady state).
template <class S>
inline void ensure_size(MatT<S>& m, Eigen::Index rows, Eigen::Index cols) {
  if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
}
template <class S>
inline void ensure_size(RowT<S>& v, Eigen::Index n) {
  if (v.size() != n) v.resize(n);
}

/// out = [A; B], the rows of A above those of B (sized as ensure_size does): one product
/// [A; B] W reads W once for both (the keys' and the queries' first layer in a dual form).
template <class S>
inline void stack_rows(CRefT<S> A, CRefT<S> B, MatT<S>& out) {
  ensure_size(out, A.rows() + B.rows(), A.cols());
  out.topRows(A.rows()) = A;
  out.bottomRows(B.rows()) = B;
}

/// A matrix cast to scalar T (a copy), or the matrix itself when it already is T.
template <class T, class S>
MatT<T> cast_to(const MatT<S>& m) {
  return m.template cast<T>();
}

}  // namespace ttt
