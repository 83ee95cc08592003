#pragma once
/// \file blocks/kv_cache.hpp
/// Attention over a sequence's past for chunked prefill and decode: the keys and values of one
/// attention layer (all heads) kept per sequence, growing for full attention and a ring of
/// `window` rows for a sliding window, and `attend`, which runs the n new tokens against the cache
/// and themselves with the tiled kernel of blocks/attention.hpp, then appends them.
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "attention.hpp"

namespace ttt::attn {

/// Partial forward, for attending to keys held in several pieces (a ring-buffer KV cache): starts
/// from (O, mx, sm) as left by `begin` or an earlier `accumulate`, adds the keys K, V at k0.
/// O is unnormalised until `finish`. Unchecked: the caller sizes everything.
template <class T>
void begin(RefT<std::type_identity_t<T>> O, T* mx, T* sm) {
  O.setZero();
  for (int64_t i = 0; i < O.rows(); ++i) {
    mx[i] = detail::kNegInfT<T>;
    sm[i] = T(0);
  }
}
template <class T>
void accumulate(CRefT<std::type_identity_t<T>> Q, CRefT<std::type_identity_t<T>> K, CRefT<std::type_identity_t<T>> V,
                std::type_identity_t<T> scale, int64_t window, int64_t q0, int64_t k0, RefT<std::type_identity_t<T>> O,
                T* mx, T* sm) {
  const int64_t n = Q.rows();
  if (K.rows() == 0) return;
  detail::in_team([&] {
    for (int64_t i0 = 0; i0 < n; i0 += kBlockQ)
      detail::accumulate_rows<T>(Q, K, V, scale, window, q0, k0, i0, std::min(n, i0 + kBlockQ), O, mx, sm);
  }, double(std::min(n, kBlockQ)) * double(K.rows()) * double(Q.cols()));
}
/// O /= sum; lse (optional) = max + log(sum), -inf for a row that saw no key.
template <class T>
void finish(RefT<std::type_identity_t<T>> O, const T* mx, const T* sm, T* lse) {
  detail::finish<T>(O, mx, sm, lse);
}

/// Keys and values of all heads of one attention layer for one sequence, for decode.
/// window < 0: every past row is kept (the cache grows; capacity doubles, so appends are
/// amortised). window >= 0: a ring buffer of the last `window` rows: with the current chunk's own
/// keys that is everything a later query can see (positions [p - window, p]).
template <class T>
struct KVCacheT {
  int64_t window = -1;
  int64_t width = 0;  ///< H * d
  int64_t len = 0;    ///< tokens appended so far = absolute position of the next token
  MatT<T> K, V;       ///< (capacity, width); rows [0, rows()) valid, ring order when window >= 0
  // reusable buffers of attend()
  MatT<T> acc;
  aligned_vector<T> mx, sm;

  KVCacheT() = default;
  KVCacheT(int64_t width_, int64_t window_) : window(window_), width(width_) {
    if (window >= 0) {
      K = MatT<T>::Zero(window, width);
      V = MatT<T>::Zero(window, width);
    }
  }

  /// Rows currently held.
  int64_t rows() const { return window < 0 ? len : std::min(len, window); }
  /// Bytes the cache holds for this sequence (valid rows of K and V).
  int64_t bytes() const { return 2 * rows() * width * int64_t(sizeof(T)); }
  /// Bytes a cache holds after `context` tokens: 2 (K, V) x min(context, window) x width values.
  static int64_t bytes_at(int64_t context, int64_t width, int64_t window) {
    const int64_t r = window < 0 ? context : std::min(context, window);
    return 2 * r * width * int64_t(sizeof(T));
  }

  /// Append n rows (positions len .. len+n-1).
  void append(const CRefT<T>& Kn, const CRefT<T>& Vn) {
    const int64_t n = Kn.rows();
    if (window < 0) {
      if (len + n > K.rows()) {
        const int64_t cap = std::max<int64_t>(len + n, 2 * K.rows());
        K.conservativeResize(cap, width);
        V.conservativeResize(cap, width);
      }
      K.middleRows(len, n) = Kn;
      V.middleRows(len, n) = Vn;
    } else if (window > 0) {
      const int64_t skip = std::max<int64_t>(0, n - window);  // rows that would be overwritten anyway
      for (int64_t r = skip; r < n; ++r) {
        const int64_t slot = (len + r) % window;
        K.row(slot) = Kn.row(r);
        V.row(slot) = Vn.row(r);
      }
    }
    len += n;
  }
};
using KVCache = KVCacheT<float>;

/// Attention of the n new tokens of one sequence over the cache and themselves, then append them.
/// Q, Kn, Vn: (n, H*d) at positions cache.len ...; O: (n, H*d). RoPE etc. are the caller's.
template <class T>
void attend(KVCacheT<T>& c, CRefT<std::type_identity_t<T>> Q, CRefT<std::type_identity_t<T>> Kn,
            CRefT<std::type_identity_t<T>> Vn, int64_t heads, std::type_identity_t<T> scale,
            RefT<std::type_identity_t<T>> O) {
  const int64_t n = Q.rows(), W = c.width;
  detail::check(heads > 0 && W % heads == 0, [&] {
    return "KVCache width " + std::to_string(W) + " not divisible by heads " + std::to_string(heads);
  });
  detail::check(Q.cols() == W && Kn.cols() == W && Vn.cols() == W && Kn.rows() == n && Vn.rows() == n &&
                    O.rows() == n && O.cols() == W,
                [&] {
                  return "attend: Q " + detail::shp(Q) + ", K " + detail::shp(Kn) + ", V " + detail::shp(Vn) + ", O " +
                         detail::shp(O) + " must all be (n, " + std::to_string(W) + ")";
                });
  const int64_t d = W / heads, q0 = c.len;
  if (c.window < 0) {
    c.append(Kn, Vn);  // keys [0, len + n) are contiguous: one call per head
    parallel_heads(heads, double(n) * double(c.len) * double(d) >= 1e6, [&](int64_t h) {
      detail::forward<T>(Q.middleCols(h * d, d), c.K.topRows(c.len).middleCols(h * d, d),
                         c.V.topRows(c.len).middleCols(h * d, d), scale, -1, q0, 0, O.middleCols(h * d, d), nullptr);
    });
    return;
  }
  // ring: the held rows are two position-ordered runs: [head, rows) then [0, head)
  const int64_t held = c.rows(), k_first = c.len - held;
  const int64_t head = c.window > 0 ? c.len % c.window : 0;
  const int64_t runA = c.len >= c.window ? c.window - head : 0;  // oldest run (positions k_first ...)
  ensure_size(c.acc, n, W);
  c.mx.resize(size_t(n * heads));
  c.sm.resize(size_t(n * heads));
  parallel_heads(heads, double(n) * double(held + n) * double(d) >= 1e6, [&](int64_t h) {
    RefT<T> A(c.acc.middleCols(h * d, d));
    T* mx = c.mx.data() + h * n;
    T* sm = c.sm.data() + h * n;
    const CRefT<T> Qh(Q.middleCols(h * d, d));
    begin<T>(A, mx, sm);
    if (runA > 0)
      accumulate<T>(Qh, c.K.block(head, h * d, runA, d), c.V.block(head, h * d, runA, d), scale, c.window, q0, k_first, A,
                 mx, sm);
    if (held - runA > 0)
      accumulate<T>(Qh, c.K.block(0, h * d, held - runA, d), c.V.block(0, h * d, held - runA, d), scale, c.window, q0,
                 k_first + runA, A, mx, sm);
    accumulate<T>(Qh, Kn.middleCols(h * d, d), Vn.middleCols(h * d, d), scale, c.window, q0, q0, A, mx, sm);
    finish<T>(A, mx, sm, nullptr);
  });
  O = c.acc;
  c.append(Kn, Vn);
}

}  // namespace ttt::attn
