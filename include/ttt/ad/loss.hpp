#pragma once
/// \file ad/loss.hpp
/// The tape's losses, (1, 1) sums over rows: cross_entropy_sum (blocks::cross_entropy, and
/// blocks::cross_entropy_grad for its VJP) with count_targets for PyTorch's mean, and cosine_sum
/// (the hierarchical-AR loss's cosine similarities).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../blocks/cross_entropy.hpp"
#include "detail.hpp"
#include "tape.hpp"

namespace ttt::ad {

/// Sum over rows of -log softmax(logits)[target] for rows whose target != ignore_index, (1, 1)
/// (divide by `count_targets` for PyTorch's mean): blocks::cross_entropy (exponentials in T, the
/// log and the sum over rows in double). The VJP (blocks::cross_entropy_bwd) recomputes the
/// softmax and adds into the logits' gradient: the tape holds no second (n, V) matrix.
template <class T>
Var<T> cross_entropy_sum(Var<T> logits, std::vector<int64_t> targets, int64_t ignore_index) {
  const Eigen::Index n = logits.rows(), V = logits.cols();
  detail::check<T>(Eigen::Index(targets.size()) == n, "cross_entropy_sum",
                   std::to_string(targets.size()) + " targets for " + std::to_string(n) + " rows of logits");
  for (const int64_t y : targets)
    if (y != ignore_index && (y < 0 || y >= V))
      detail::check<T>(false, "cross_entropy_sum", "target " + std::to_string(y) + " outside [0, " + std::to_string(V) + ")");
  const double total = blocks::cross_entropy(logits.value(), targets, nullptr, ignore_index);
  Matrix<T> out = Matrix<T>::Constant(1, 1, T(total));
  return logits.tape->record(std::move(out), logits.requires_grad(),
                             [logits, targets = std::move(targets), ignore_index](const Matrix<T>& dy, Tape<T>& t) {
    blocks::cross_entropy_bwd(logits.value(), targets, dy(0, 0), t.grad_buffer(logits), ignore_index);
  });
}

/// How many targets are not ignore_index.
inline int64_t count_targets(const std::vector<int64_t>& targets, int64_t ignore_index) {
  return int64_t(std::count_if(targets.begin(), targets.end(), [&](int64_t y) { return y != ignore_index; }));
}

/// Sum over rows of the cosine similarity of a.row(i) and b.row(i), each normalised as
/// F.normalize does (x / max(||x||, 1e-12)), (1, 1).
template <class T>
Var<T> cosine_sum(Var<T> a, Var<T> b) {
  detail::check<T>(a.rows() == b.rows() && a.cols() == b.cols(), "cosine_sum", detail::shp(a) + " vs " + detail::shp(b));
  const T eps = T(1e-12);
  double total = 0.0;
  for (Eigen::Index r = 0; r < a.rows(); ++r)
    total += double(a.value().row(r).dot(b.value().row(r)) /
                    (std::max(a.value().row(r).norm(), eps) * std::max(b.value().row(r).norm(), eps)));
  Matrix<T> out = Matrix<T>::Constant(1, 1, T(total));
  return a.tape->record(std::move(out), a.requires_grad() || b.requires_grad(), [a, b, eps](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = a.rows(), C = a.cols();
    Matrix<T> da(n, C), db(n, C);
    for (Eigen::Index r = 0; r < n; ++r) {
      const T ra = a.value().row(r).norm(), rb = b.value().row(r).norm();
      const T na = std::max(ra, eps), nb = std::max(rb, eps);
      const Matrix<T> ah = a.value().row(r) / na, bh = b.value().row(r) / nb;
      const T c = ah.row(0).dot(bh.row(0));
      da.row(r) = (ra > eps ? (bh - ah * c) : bh) / na * dy(0, 0);
      db.row(r) = (rb > eps ? (ah - bh * c) : ah) / nb * dy(0, 0);
    }
    t.accumulate(a, da);
    t.accumulate(b, db);
  });
}

}  // namespace ttt::ad
