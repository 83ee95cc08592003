#pragma once
/// \file ad/linalg.hpp
/// The tape's linear algebra and shape ops, each with its VJP: linear (x W^T, + b), add_row, add,
/// mul, scale, sum; rows / cols slices, concat_cols / concat_rows, gather_rows (embedding lookup,
/// padding, shifting, repeating). Activations are (n, C) matrices, one row per position; weights
/// have PyTorch's [out, in] layout; vectors (biases) are (1, C) rows.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "detail.hpp"
#include "tape.hpp"

namespace ttt::ad {

// ---- linear algebra ---------------------------------------------------------------------------

/// y = x W^T.                                       x: (n, in); W: (out, in); y: (n, out)
template <class T>
Var<T> linear(Var<T> x, Var<T> W) {
  detail::check<T>(x.cols() == W.cols(), "linear", "x " + detail::shp(x) + " and W " + detail::shp(W) + " (W is [out, in])");
  Matrix<T> y;
  blocks::matmul(y, x.value(), W.value().transpose());
  return x.tape->record(std::move(y), x.requires_grad() || W.requires_grad(), [x, W](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate_product(x, dy, W.value());
    t.accumulate_product(W, dy.transpose(), x.value());
  });
}

/// x + b with b a (1, C) row added to every row.
template <class T>
Var<T> add_row(Var<T> x, Var<T> b) {
  detail::check<T>(b.rows() == 1 && b.cols() == x.cols(), "add_row", "x " + detail::shp(x) + ", b " + detail::shp(b));
  Matrix<T> y(x.rows(), x.cols());
  detail::by_rows(x.rows(), x.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
    y.middleRows(r0, r1 - r0) = x.value().middleRows(r0, r1 - r0).rowwise() + b.value().row(0);
  });
  return x.tape->record(std::move(y), x.requires_grad() || b.requires_grad(), [x, b](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(x, dy);
    if (t.requires_grad(b)) t.accumulate(b, dy.colwise().sum());
  });
}

/// y = x W^T + b.
template <class T>
Var<T> linear(Var<T> x, Var<T> W, Var<T> b) {
  return add_row(linear(x, W), b);
}

template <class T>
Var<T> add(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "add", detail::shp(a) + " + " + detail::shp(b));
  Matrix<T> y(a.rows(), a.cols());
  detail::by_rows(a.rows(), a.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
    y.middleRows(r0, r1 - r0) = a.value().middleRows(r0, r1 - r0) + b.value().middleRows(r0, r1 - r0);
  });
  return a.tape->record(std::move(y), a.requires_grad() || b.requires_grad(), [a, b](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(a, dy);
    t.accumulate(b, dy);
  });
}

/// Elementwise product.
template <class T>
Var<T> mul(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "mul", detail::shp(a) + " * " + detail::shp(b));
  Matrix<T> y = a.value().cwiseProduct(b.value());
  return a.tape->record(std::move(y), a.requires_grad() || b.requires_grad(), [a, b](const Matrix<T>& dy, Tape<T>& t) {
    if (t.requires_grad(a)) t.accumulate(a, dy.cwiseProduct(b.value()));
    if (t.requires_grad(b)) t.accumulate(b, dy.cwiseProduct(a.value()));
  });
}

/// c * a for a constant c.
template <class T>
Var<T> scale(Var<T> a, T c) {
  Matrix<T> y = a.value() * c;
  return a.tape->record(std::move(y), a.requires_grad(), [a, c](const Matrix<T>& dy, Tape<T>& t) { t.accumulate(a, dy * c); });
}

/// The sum of all entries, (1, 1).
template <class T>
Var<T> sum(Var<T> a) {
  Matrix<T> y = Matrix<T>::Constant(1, 1, a.value().sum());
  return a.tape->record(std::move(y), a.requires_grad(), [a](const Matrix<T>& dy, Tape<T>& t) {
    t.accumulate(a, Matrix<T>::Constant(a.rows(), a.cols(), dy(0, 0)));
  });
}

// ---- slicing and index maps -------------------------------------------------------------------

/// Rows [r0, r0 + n).
template <class T>
Var<T> rows(Var<T> x, Eigen::Index r0, Eigen::Index n) {
  detail::check<T>(r0 >= 0 && n >= 0 && r0 + n <= x.rows(), "rows", "rows [" + std::to_string(r0) + ", " +
                   std::to_string(r0 + n) + ") of " + detail::shp(x));
  Matrix<T> y = x.value().middleRows(r0, n);
  return x.tape->record(std::move(y), x.requires_grad(), [x, r0, n](const Matrix<T>& dy, Tape<T>& t) {
    t.grad_buffer(x).middleRows(r0, n) += dy;
  });
}

/// Columns [c0, c0 + n).
template <class T>
Var<T> cols(Var<T> x, Eigen::Index c0, Eigen::Index n) {
  detail::check<T>(c0 >= 0 && n >= 0 && c0 + n <= x.cols(), "cols", "columns [" + std::to_string(c0) + ", " +
                   std::to_string(c0 + n) + ") of " + detail::shp(x));
  Matrix<T> y(x.rows(), n);
  detail::by_rows(x.rows(), n, [&](Eigen::Index r0, Eigen::Index r1) {
    y.middleRows(r0, r1 - r0) = x.value().block(r0, c0, r1 - r0, n);
  });
  return x.tape->record(std::move(y), x.requires_grad(), [x, c0, n](const Matrix<T>& dy, Tape<T>& t) {
    t.grad_buffer(x).middleCols(c0, n) += dy;
  });
}

/// Side by side: all parts have the same number of rows.
template <class T>
Var<T> concat_cols(const std::vector<Var<T>>& parts) {
  detail::check<T>(!parts.empty(), "concat_cols", "no parts");
  Eigen::Index c = 0;
  bool rg = false;
  for (const auto& p : parts) {
    detail::check<T>(p.rows() == parts[0].rows(), "concat_cols", detail::shp(p) + " beside " + detail::shp(parts[0]));
    c += p.cols();
    rg = rg || p.requires_grad();
  }
  Matrix<T> y(parts[0].rows(), c);
  detail::by_rows(y.rows(), y.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
    Eigen::Index c0 = 0;
    for (const auto& p : parts) {
      y.block(r0, c0, r1 - r0, p.cols()) = p.value().middleRows(r0, r1 - r0);
      c0 += p.cols();
    }
  });
  return parts[0].tape->record(std::move(y), rg, [parts](const Matrix<T>& dy, Tape<T>& t) {
    Eigen::Index c0 = 0;
    for (const auto& p : parts) {
      t.accumulate(p, dy.middleCols(c0, p.cols()));
      c0 += p.cols();
    }
  });
}

/// One above the other: all parts have the same number of columns.
template <class T>
Var<T> concat_rows(const std::vector<Var<T>>& parts) {
  detail::check<T>(!parts.empty(), "concat_rows", "no parts");
  Eigen::Index r = 0;
  bool rg = false;
  for (const auto& p : parts) {
    detail::check<T>(p.cols() == parts[0].cols(), "concat_rows", detail::shp(p) + " below " + detail::shp(parts[0]));
    r += p.rows();
    rg = rg || p.requires_grad();
  }
  Matrix<T> y(r, parts[0].cols());
  r = 0;
  for (const auto& p : parts) {
    y.middleRows(r, p.rows()) = p.value();
    r += p.rows();
  }
  return parts[0].tape->record(std::move(y), rg, [parts](const Matrix<T>& dy, Tape<T>& t) {
    Eigen::Index r0 = 0;
    for (const auto& p : parts) {
      t.accumulate(p, dy.middleRows(r0, p.rows()));
      r0 += p.rows();
    }
  });
}

/// y.row(i) = x.row(idx[i]), or zeros where idx[i] < 0. Covers embedding lookup, padding,
/// cropping, shifting, repeating and interleaving of rows; the VJP scatter-adds.
template <class T>
Var<T> gather_rows(Var<T> x, std::vector<int64_t> idx) {
  const Eigen::Index n = x.rows();
  for (size_t i = 0; i < idx.size(); ++i)
    detail::check<T>(idx[i] < n, "gather_rows", "index " + std::to_string(idx[i]) + " at " + std::to_string(i) +
                     " outside the " + std::to_string(n) + " rows of the input");
  Matrix<T> y(Eigen::Index(idx.size()), x.cols());
  detail::by_rows(y.rows(), y.cols(), [&](Eigen::Index r0, Eigen::Index r1) {
    for (Eigen::Index i = r0; i < r1; ++i) {
      if (idx[size_t(i)] < 0)
        y.row(i).setZero();
      else
        y.row(i) = x.value().row(idx[size_t(i)]);
    }
  });
  return x.tape->record(std::move(y), x.requires_grad(), [x, idx = std::move(idx)](const Matrix<T>& dy, Tape<T>& t) {
    Matrix<T>& g = t.grad_buffer(x);
    for (size_t i = 0; i < idx.size(); ++i)
      if (idx[i] >= 0) g.row(idx[i]) += dy.row(Eigen::Index(i));
  });
}

}  // namespace ttt::ad
