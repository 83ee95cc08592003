#pragma once
/// \file blocks/attention.hpp
/// Causal softmax attention of one head, tiled the flash-attention way: the keys are visited in
/// blocks with an online softmax (running max and sum per query row), so no n x m score matrix is
/// ever formed and a sliding window of w keys costs O(n * w). The forward stores each row's
/// log-sum-exp; the backward recomputes the probabilities from it (FlashAttention-2, Dao 2023).
///
/// Positions: query row i is at absolute position q0 + i, key row j at k0 + j. A query at position
/// p sees the keys at positions [p - window, p] (window + 1 keys) when window >= 0, and every key at
/// a position <= p when window < 0. A query that sees no key at all (possible only when the keys
/// start after it) gets a zero output and lse = -inf.
///
/// \code
///   ttt::Mat O(n, d);
///   std::vector<float> lse(n);
///   ttt::attn::forward(Q, K, V, 1.0f / std::sqrt(float(d)), -1, 0, 0, O, lse.data());
///   ttt::attn::backward(Q, K, V, O, dO, lse.data(), scale, -1, 0, 0, dQ, dK, dV);  // adds
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/simd.hpp"
#include "matmul.hpp"

namespace ttt::attn {

/// Rows of queries and keys per tile. The score tile lives on the stack: no heap allocation.
inline constexpr int64_t kBlockQ = 64;
inline constexpr int64_t kBlockK = 128;

/// Views of double matrices: forward and backward also exist in double (gradient checks).
using MatRefD = RefT<double>;
using CMatRefD = CRefT<double>;

namespace detail {

template <class T>
using Tile = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor, kBlockQ, kBlockK>;
template <class T>
inline constexpr T kNegInfT = -std::numeric_limits<T>::infinity();
inline constexpr float kNegInf = kNegInfT<float>;

/// Visible key rows of query row i: [lo, hi] (empty when lo > hi), clipped to [0, m).
struct Range {
  int64_t lo, hi;
};
inline Range visible(int64_t i, int64_t m, int64_t window, int64_t q0, int64_t k0) {
  const int64_t p = q0 + i;
  const int64_t hi = std::min(m - 1, p - k0);
  const int64_t lo = window < 0 ? 0 : std::max<int64_t>(0, p - window - k0);
  return {lo, hi};
}

/// p = exp(a p - b) over a score row, returning its sum: float through kernels::exp_affine_sum (the
/// instruction set chosen at run time), double through Eigen's vectorised exp.
template <class R, class T>
T exp_affine_sum(R&& p, T a, T b) {
  if constexpr (std::is_same_v<T, float>) {
    return kernels::exp_affine_sum(backend::cpu_default{}, p.data(), size_t(p.size()), a, b);
  } else {
    p = (p.array() * a - b).exp().matrix();
    return p.sum();
  }
}

/// The online-softmax pass over keys [0, m) for query rows [i0, i1): O rows hold the unnormalised
/// accumulator, mx / sm the running max and sum (continued from their values on entry).
template <class T>
void accumulate_rows(const CRefT<T>& Q, const CRefT<T>& K, const CRefT<T>& V, T scale, int64_t window, int64_t q0,
                     int64_t k0, int64_t i0, int64_t i1, RefT<T>& O, T* mx, T* sm) {
  constexpr T kNegInf = kNegInfT<T>;
  const int64_t m = K.rows();
  const Range first = visible(i0, m, window, q0, k0), last = visible(i1 - 1, m, window, q0, k0);
  const int64_t jlo = first.lo, jhi = last.hi;  // both bounds grow with i
  if (jlo > jhi) return;
  const int64_t bq = i1 - i0;
  Tile<T> S;
  for (int64_t j0 = jlo; j0 <= jhi; j0 += kBlockK) {
    const int64_t j1 = std::min(jhi + 1, j0 + kBlockK), bk = j1 - j0;
    S.resize(bq, bk);
    blocks::matmul(S, Q.middleRows(i0, bq), K.middleRows(j0, bk).transpose());  // (bq, bk)
    S *= scale;
    // mask only the tiles that cross a row's range
    const bool full = j0 >= last.lo && j1 - 1 <= first.hi;
    for (int64_t r = 0; r < bq; ++r) {
      if (!full) {  // columns outside [lo, hi] of this row: -inf
        const Range rg = visible(i0 + r, m, window, q0, k0);
        const int64_t c0 = std::clamp<int64_t>(rg.lo - j0, 0, bk), c1 = std::clamp<int64_t>(rg.hi - j0 + 1, c0, bk);
        S.row(r).head(c0).setConstant(kNegInf);
        S.row(r).tail(bk - c1).setConstant(kNegInf);
      }
      const T mnew = std::max(mx[i0 + r], T(S.row(r).maxCoeff()));
      if (mnew == kNegInf) {  // nothing visible yet in this row
        S.row(r).setZero();
        continue;
      }
      const T corr = std::exp(mx[i0 + r] - mnew);  // exp(-inf) = 0 on the first visible tile
      sm[i0 + r] = sm[i0 + r] * corr + exp_affine_sum(S.row(r), T(1), mnew);
      mx[i0 + r] = mnew;
      if (corr != T(1)) O.row(i0 + r) *= corr;
    }
    blocks::matmul(O.middleRows(i0, bq), S, V.middleRows(j0, bk), true);  // (bq, d)
  }
}

/// Throws ShapeError("attn: " + what()) when !ok; the message is built only then (no allocation
/// on the decode path).
template <class Msg>
void check(bool ok, Msg&& what) {
  if (!ok) throw ShapeError("attn: " + std::string(what()));
}
template <class A>
std::string shp(const A& m) {
  std::string s(1, '(');  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "(" + std::string
  s += std::to_string(m.rows());
  s += ", ";
  s += std::to_string(m.cols());
  s += ')';
  return s;
}

template <class T>
void check_qkv(const CRefT<T>& Q, const CRefT<T>& K, const CRefT<T>& V) {
  check(K.cols() == Q.cols(), [&] { return "K is " + shp(K) + " but Q is " + shp(Q) + ": head dims differ"; });
  check(V.rows() == K.rows(), [&] { return "V is " + shp(V) + " but K is " + shp(K) + ": key counts differ"; });
}

/// O /= sum; lse (optional) = max + log(sum), -inf for a row that saw no key.
template <class T>
void finish(RefT<T> O, const T* mx, const T* sm, T* lse) {
  for (int64_t i = 0; i < O.rows(); ++i) {
    if (sm[i] > T(0)) O.row(i) /= sm[i];
    if (lse) lse[i] = sm[i] > T(0) ? mx[i] + std::log(sm[i]) : kNegInfT<T>;
  }
}

template <class T>
void forward(const CRefT<T>& Q, const CRefT<T>& K, const CRefT<T>& V, T scale, int64_t window, int64_t q0, int64_t k0,
             RefT<T> O, T* lse) {
  check_qkv<T>(Q, K, V);
  check(O.rows() == Q.rows() && O.cols() == V.cols(), [&] {
    return "O is " + shp(O) + ", expected (" + std::to_string(Q.rows()) + ", " + std::to_string(V.cols()) + ")";
  });
  const int64_t n = Q.rows(), tiles = (n + kBlockQ - 1) / kBlockQ;
  O.setZero();
  auto tile = [&](int64_t i0) {  // one query tile: its rows of O and lse, running stats on the stack
    T mx_s[kBlockQ], sm_s[kBlockQ];
    const int64_t i1 = std::min(n, i0 + kBlockQ), bq = i1 - i0;
    for (int64_t r = 0; r < bq; ++r) {
      mx_s[r] = kNegInfT<T>;
      sm_s[r] = T(0);
    }
    if (K.rows() > 0) accumulate_rows<T>(Q, K, V, scale, window, q0, k0, i0, i1, O, mx_s - i0, sm_s - i0);
    finish<T>(O.middleRows(i0, bq), mx_s, sm_s, lse ? lse + i0 : nullptr);
  };
#if defined(_OPENMP)
  // query tiles over the threads (inside, Eigen's products stay serial); small work (decode) runs
  // directly: Eigen parallelises no product below 50k multiply-adds
  if (!omp_in_parallel() && double(std::min(n, kBlockQ)) * double(K.rows()) * double(Q.cols()) > 5e4) {
    const int nt = int(std::min<int64_t>(tiles, omp_get_max_threads()));
    RegionErrors errors;  // no exception may leave the region (core/parallel.hpp)
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t t = 0; t < tiles; ++t) errors.run([&] { tile(t * kBlockQ); });
    errors.rethrow();
    return;
  }
#endif
  for (int64_t t = 0; t < tiles; ++t) tile(t * kBlockQ);
}

/// Runs fn() with the calling thread's OpenMP loops on one thread (its setting restored after):
/// the tile products then never start an OpenMP team of their own (Eigen parallelises a large
/// enough product, which for one 64 x 128 tile costs more than it saves). An earlier form ran fn
/// in a team of one thread (`omp parallel num_threads(1)`), which is an inactive region: Eigen
/// sees one thread in the team and may open a nested team of two per tile product. With it the
/// hierarchical model's training step (its attention backward ran here, head after head) took
/// 3-4x longer on two threads than on one (flat full attention, 4k tokens: 6.9-9.0 s against
/// 2.3 s; benchmarks/README.md, Hierarchical transformer).
template <class F>
void in_team(F&& fn, double work = 1e9) {
  if (work > 5e4 && max_threads() > 1) {  // below 50k multiply-adds Eigen stays serial anyway
    const InnerThreads one(1);
    fn();
    return;
  }
  fn();
}

template <class T>
void backward_tiles(const CRefT<T>& Q, const CRefT<T>& K, const CRefT<T>& V, const CRefT<T>& O, const CRefT<T>& dO,
                    const T* lse, T scale, int64_t window, int64_t q0, int64_t k0, RefT<T>& dQ, RefT<T>& dK,
                    RefT<T>& dV) {
  const int64_t n = Q.rows(), m = K.rows();
  T D[kBlockQ];
  Tile<T> P, dP;
  for (int64_t i0 = 0; i0 < n; i0 += kBlockQ) {
    const int64_t i1 = std::min(n, i0 + kBlockQ), bq = i1 - i0;
    const Range first = visible(i0, m, window, q0, k0), last = visible(i1 - 1, m, window, q0, k0);
    if (first.lo > last.hi) continue;
    for (int64_t r = 0; r < bq; ++r) D[r] = dO.row(i0 + r).dot(O.row(i0 + r));
    for (int64_t j0 = first.lo; j0 <= last.hi; j0 += kBlockK) {
      const int64_t j1 = std::min(last.hi + 1, j0 + kBlockK), bk = j1 - j0;
      P.resize(bq, bk);
      dP.resize(bq, bk);
      blocks::matmul(P, Q.middleRows(i0, bq), K.middleRows(j0, bk).transpose());
      blocks::matmul(dP, dO.middleRows(i0, bq), V.middleRows(j0, bk).transpose());  // (bq, bk)
      const bool full = j0 >= last.lo && j1 - 1 <= first.hi;
      for (int64_t r = 0; r < bq; ++r) {
        const T l = lse[i0 + r];
        int64_t c0 = 0, c1 = bk;  // visible columns [c0, c1) of this row
        if (!full) {
          const Range rg = visible(i0 + r, m, window, q0, k0);
          c0 = std::clamp<int64_t>(rg.lo - j0, 0, bk), c1 = std::clamp<int64_t>(rg.hi - j0 + 1, c0, bk);
        }
        if (l == kNegInfT<T>) c1 = c0;  // the row saw no key
        P.row(r).head(c0).setZero();
        P.row(r).tail(bk - c1).setZero();
        exp_affine_sum(P.row(r).segment(c0, c1 - c0), scale, l);
        dP.row(r) = (P.row(r).array() * (dP.row(r).array() - D[r]) * scale).matrix();  // dS, scale folded in
      }
      blocks::matmul(dV.middleRows(j0, bk), P.transpose(), dO.middleRows(i0, bq), true);
      blocks::matmul(dQ.middleRows(i0, bq), dP, K.middleRows(j0, bk), true);
      blocks::matmul(dK.middleRows(j0, bk), dP.transpose(), Q.middleRows(i0, bq), true);
    }
  }
}

template <class T>
void backward(const CRefT<T>& Q, const CRefT<T>& K, const CRefT<T>& V, const CRefT<T>& O, const CRefT<T>& dO,
              const T* lse, T scale, int64_t window, int64_t q0, int64_t k0, RefT<T> dQ, RefT<T> dK, RefT<T> dV) {
  check_qkv<T>(Q, K, V);
  check(O.rows() == Q.rows() && O.cols() == V.cols(), [&] { return "O is " + shp(O) + " (expected n x d of V)"; });
  check(dO.rows() == O.rows() && dO.cols() == O.cols(), [&] { return "dO is " + shp(dO) + ", O is " + shp(O); });
  check(dQ.rows() == Q.rows() && dQ.cols() == Q.cols(), [&] { return "dQ is " + shp(dQ) + ", Q is " + shp(Q); });
  check(dK.rows() == K.rows() && dK.cols() == K.cols(), [&] { return "dK is " + shp(dK) + ", K is " + shp(K); });
  check(dV.rows() == V.rows() && dV.cols() == V.cols(), [&] { return "dV is " + shp(dV) + ", V is " + shp(V); });
  if (K.rows() == 0) return;
  in_team([&] { backward_tiles<T>(Q, K, V, O, dO, lse, scale, window, q0, k0, dQ, dK, dV); },
          double(std::min(Q.rows(), kBlockQ)) * double(K.rows()) * double(Q.cols()));
}

}  // namespace detail

/// O = softmax(scale Q K^T + causal/window mask) V, and lse[i] = log sum_j exp(scale q_i . k_j)
/// over the visible keys (lse may be null).      Q: (n, d); K, V: (m, d); O: (n, d); lse: [n]
/// T (float; double for gradient checks) is the type of `scale`.
template <class T>
void forward(CRefT<std::type_identity_t<T>> Q, CRefT<std::type_identity_t<T>> K, CRefT<std::type_identity_t<T>> V,
             T scale, int64_t window, int64_t q0, int64_t k0, RefT<std::type_identity_t<T>> O,
             std::type_identity_t<T>* lse) {
  detail::forward<T>(Q, K, V, scale, window, q0, k0, O, lse);
}

/// Gradients of forward's O given dO, ADDED into dQ, dK, dV. Probabilities are recomputed per tile
/// from lse: P = exp(scale q.k - lse); D_i = dO_i . O_i; dS = P (dO V^T - D); dQ += scale dS K;
/// dK += scale dS^T Q; dV += P^T dO.
template <class T>
void backward(CRefT<std::type_identity_t<T>> Q, CRefT<std::type_identity_t<T>> K, CRefT<std::type_identity_t<T>> V,
              CRefT<std::type_identity_t<T>> O, CRefT<std::type_identity_t<T>> dO, const std::type_identity_t<T>* lse,
              T scale, int64_t window, int64_t q0, int64_t k0, RefT<std::type_identity_t<T>> dQ,
              RefT<std::type_identity_t<T>> dK, RefT<std::type_identity_t<T>> dV) {
  detail::backward<T>(Q, K, V, O, dO, lse, scale, window, q0, k0, dQ, dK, dV);
}

/// Number of (query, key) pairs that forward scores: sum over rows of the visible keys.
inline double visible_pairs(int64_t n, int64_t m, int64_t window, int64_t q0, int64_t k0) {
  double pairs = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const detail::Range r = detail::visible(i, m, window, q0, k0);
    if (r.hi >= r.lo) pairs += double(r.hi - r.lo + 1);
  }
  return pairs;
}
/// FLOPs of forward: 2d for q.k and 2d for p v per visible pair (the exp and the mask not counted).
inline double forward_flops(int64_t n, int64_t m, int64_t d, int64_t window, int64_t q0 = 0, int64_t k0 = 0) {
  return 4.0 * double(d) * visible_pairs(n, m, window, q0, k0);
}
/// FLOPs of backward: q.k recomputed, dO.v, dV, dQ and dK: 10d per visible pair.
inline double backward_flops(int64_t n, int64_t m, int64_t d, int64_t window, int64_t q0 = 0, int64_t k0 = 0) {
  return 10.0 * double(d) * visible_pairs(n, m, window, q0, k0);
}

}  // namespace ttt::attn
