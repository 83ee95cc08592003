#pragma once
/// \file ad/attention.hpp
/// The tape's causal softmax attention per head: `attention`, forward and VJP by the tiled kernels
/// of blocks/attention.hpp (ttt::attn), and `attention_naive`, the plain (n, n) reference path the
/// tests compare it with.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../blocks/attention.hpp"
#include "detail.hpp"
#include "tape.hpp"

namespace ttt::ad {

/// Causal softmax attention per head, the plain reference path ((n, n) scores per head; the
/// tests compare `attention` with it). Query i sees keys [i - window, i] (window >= 0) or [0, i]
/// (window < 0).                                                   q, k, v: (n, heads * dh)
template <class T>
Var<T> attention_naive(Var<T> q, Var<T> k, Var<T> v, int64_t heads, int64_t window, T scale) {
  const Eigen::Index n = q.rows(), D = q.cols();
  detail::check<T>(heads > 0 && D % heads == 0 && k.rows() == n && v.rows() == n && k.cols() == D && v.cols() == D,
                   "attention", "q " + detail::shp(q) + ", k " + detail::shp(k) + ", v " + detail::shp(v) + ", heads " + std::to_string(heads));
  const int64_t dh = D / heads;
  auto P = std::make_shared<std::vector<Matrix<T>>>(static_cast<size_t>(heads));
  Matrix<T> y(n, D);
  for (int64_t h = 0; h < heads; ++h) {
    Matrix<T>& p = (*P)[size_t(h)];
    blocks::matmul(p, q.value().middleCols(h * dh, dh), k.value().middleCols(h * dh, dh).transpose());
    p *= scale;
    for (Eigen::Index i = 0; i < n; ++i) {
      const Eigen::Index lo = window < 0 ? 0 : std::max<Eigen::Index>(0, i - window);
      T mx = -std::numeric_limits<T>::infinity();
      for (Eigen::Index j = lo; j <= i; ++j) mx = std::max(mx, p(i, j));
      T s = 0;
      for (Eigen::Index j = 0; j < n; ++j) {
        if (j < lo || j > i) {
          p(i, j) = 0;
        } else {
          p(i, j) = std::exp(p(i, j) - mx);
          s += p(i, j);
        }
      }
      p.row(i) /= s;
    }
    blocks::matmul(y.middleCols(h * dh, dh), p, v.value().middleCols(h * dh, dh));
  }
  const bool rg = q.requires_grad() || k.requires_grad() || v.requires_grad();
  return q.tape->record(std::move(y), rg, [q, k, v, heads, dh, scale, P](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = dy.rows(), D = dy.cols();
    Matrix<T> dq = Matrix<T>::Zero(n, D), dk = Matrix<T>::Zero(n, D), dv = Matrix<T>::Zero(n, D);
    for (int64_t h = 0; h < heads; ++h) {
      const Matrix<T>& p = (*P)[size_t(h)];
      const auto dOh = dy.middleCols(h * dh, dh);
      blocks::matmul(dv.middleCols(h * dh, dh), p.transpose(), dOh);
      Matrix<T> dp = dOh * v.value().middleCols(h * dh, dh).transpose();  // (n, n)
      for (Eigen::Index i = 0; i < n; ++i) {
        const T rs = dp.row(i).dot(p.row(i));
        dp.row(i) = p.row(i).cwiseProduct((dp.row(i).array() - rs).matrix());
      }
      dp *= scale;
      blocks::matmul(dq.middleCols(h * dh, dh), dp, k.value().middleCols(h * dh, dh));
      blocks::matmul(dk.middleCols(h * dh, dh), dp.transpose(), q.value().middleCols(h * dh, dh));
    }
    t.accumulate(q, dq);
    t.accumulate(k, dk);
    t.accumulate(v, dv);
  });
}

/// Causal softmax attention per head with ttt::attn's tiled kernels of blocks/attention.hpp
/// (O(n * window) for a window; the backward recomputes probabilities from the row log-sum-exp;
/// the forward splits each head's query tiles over the OpenMP threads, the backward the heads).
/// Query i sees keys [i - window, i] (window >= 0) or [0, i] (window < 0).  q, k, v: (n, heads * dh)
template <class T>
  requires(std::is_same_v<T, float> || std::is_same_v<T, double>)
Var<T> attention(Var<T> q, Var<T> k, Var<T> v, int64_t heads, int64_t window, T scale) {
  const Eigen::Index n = q.rows(), D = q.cols();
  detail::check<T>(heads > 0 && D % heads == 0 && k.rows() == n && v.rows() == n && k.cols() == D && v.cols() == D,
                   "attention", "q " + detail::shp(q) + ", k " + detail::shp(k) + ", v " + detail::shp(v) + ", heads " + std::to_string(heads));
  const int64_t dh = D / heads;
  auto lse = std::make_shared<std::vector<T>>(static_cast<size_t>(n * heads));
  Matrix<T> y(n, D);
  for (int64_t h = 0; h < heads; ++h)
    attn::forward(q.value().middleCols(h * dh, dh), k.value().middleCols(h * dh, dh), v.value().middleCols(h * dh, dh), scale,
                  window, 0, 0, y.middleCols(h * dh, dh), lse->data() + h * n);
  const bool rg = q.requires_grad() || k.requires_grad() || v.requires_grad();
  // the backward reads the output O from the op's own node (set below), not from a copy
  auto self = std::make_shared<Var<T>>();
  const Var<T> out = q.tape->record(std::move(y), rg, [q, k, v, heads, dh, window, scale, lse, self](const Matrix<T>& dy, Tape<T>& t) {
    const Eigen::Index n = dy.rows(), D = dy.cols();
    const Matrix<T>& O = t.value(*self);
    Matrix<T> dq = Matrix<T>::Zero(n, D), dk = Matrix<T>::Zero(n, D), dv = Matrix<T>::Zero(n, D);
    // heads over the threads (each writes its own columns; a head's backward is one serial sweep)
    parallel_heads(heads, n >= 64, [&](int64_t h) {
      attn::backward(q.value().middleCols(h * dh, dh), k.value().middleCols(h * dh, dh), v.value().middleCols(h * dh, dh),
                     O.middleCols(h * dh, dh), dy.middleCols(h * dh, dh), lse->data() + h * n, scale, window, 0, 0,
                     dq.middleCols(h * dh, dh), dk.middleCols(h * dh, dh), dv.middleCols(h * dh, dh));
    });
    t.accumulate(q, dq);
    t.accumulate(k, dk);
    t.accumulate(v, dv);
  });
  *self = out;
  return out;
}

}  // namespace ttt::ad
