#pragma once
/// \file hier/decode.hpp
/// Cached decoding for HierarchicalTransformerT: one token at a time, the logits of the new
/// position equal to the last row of a full forward (up to rounding), without processing the
/// prefix again. The state of one sequence holds:
///  - the last c_max + 1 token embeddings (the compression convolutions' input history);
///  - per layer, hierarchy and phase: the previous rows entering the two token shifts, and the
///    mixer's state: a KV cache (rotated keys, values; full attention keeps every row of the phase,
///    a window keeps the last w + 1) or a TTT layer's State (fast weights carried from token to token);
///  - per layer and hierarchy: the latest row after the blocks (a strided hierarchy's row is reused
///    by the merges of the s positions it covers), and the latest final row per hierarchy.
/// A hierarchy of stride s gets a new row at positions t with t % s == 0 (row t / s, phase
/// (t / s) % a, position (t / s) / a inside it). xPos is centred at 0 instead of m // 2: the factors
/// cancel in q.k (exact in exact arithmetic), so results agree to rounding.
///
/// \code
///   ttt::hier::Decoder<float> dec(model);
///   dec.prefill(prompt);                              // the prompt, in chunks of 1,024 tokens
///   ttt::ad::Matrix<float> logits = dec.step(next);  // (1, V), then one token at a time
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../../blocks/matmul.hpp"
#include "../../core/error.hpp"
#include "model.hpp"

namespace ttt::hier {

template <class T, class Learners = inner::Builtin>
class Decoder {
 public:
  using Model = HierarchicalTransformerT<T, Learners>;
  using M = ad::Matrix<T>;
  using V = ad::Var<T>;

  explicit Decoder(const Model& m) : m_(&m) { reset(); }

  /// Start a new sequence.
  void reset() {
    const HierConfig& c = m_->cfg;
    const int64_t H = c.num_hierarchies(), Lz = c.depth;
    t_ = 0;
    int64_t cmax = 1;
    for (int64_t h = 0; h < H; ++h) cmax = std::max(cmax, c.compression(h));
    hist_.assign(size_t(cmax + 1), M::Zero(1, c.token_dim()));
    phases_.assign(size_t(Lz), std::vector<std::vector<Phase>>(size_t(H)));
    for (int64_t l = 0; l < Lz; ++l)
      for (int64_t h = 0; h < H; ++h) {
        auto& ph = phases_[size_t(l)][size_t(h)];
        ph.resize(size_t(c.axial(h)));
        const auto& b = m_->layers[size_t(l)][size_t(h)];
        for (Phase& p : ph) {
          p.prev_in = M::Zero(1, c.dim_of(h));
          p.prev_mid = M::Zero(1, c.dim_of(h));
          b.with_ttt([&](const auto& layer) { p.ttt = TTTSlot<std::decay_t<decltype(layer)>>{layer.new_state(), {}}; });
        }
      }
    latest_.assign(size_t(Lz), std::vector<M>(size_t(H)));
    final_.assign(size_t(H), M());
  }

  int64_t position() const { return t_; }

  /// Feed a whole prompt (a fresh sequence only: after construction or reset()); returns the
  /// logits (1, V) of its last position, as `step` on each token in turn would (up to rounding).
  /// With `chunk` > 0 (the default, kPrefillChunk tokens) the prompt goes through `advance` in
  /// chunks: the work buffers are one chunk's, whatever the prompt's length. With `chunk` = 0, one
  /// forward of the model over the whole prompt (Extras::phases, every position's intermediates
  /// at once) gives every phase's rows, and from them the caches are filled: the token-shift
  /// rows, the keys (rotated with the decoder's positions) and values of the rows a window keeps,
  /// a TTT layer's state after the phase (TTTLayer::forward over its rows), the latest rows of the
  /// merges and the final rows; that path is the chunked one's plain twin (tests/hier/test_decode.cpp).
  M prefill(std::span<const int64_t> ids, int64_t chunk = kPrefillChunk);

  /// Tokens per `advance` call in `prefill` (its work buffers: a few rows of this many per layer).
  static constexpr int64_t kPrefillChunk = 1024;

  /// Bytes of the state after `t` tokens (what state_bytes() reports then), from the
  /// configuration alone: hierarchy h has ceil(t / s) rows, phase j of a of them every a-th.
  static int64_t state_bytes_at(const Model& m, int64_t t) {
    const HierConfig& c = m.cfg;
    int64_t cmax = 1;
    for (int64_t h = 0; h < c.num_hierarchies(); ++h) cmax = std::max(cmax, c.compression(h));
    int64_t n = (cmax + 1) * c.token_dim();
    for (int64_t l = 0; l < c.depth; ++l)
      for (int64_t h = 0; h < c.num_hierarchies(); ++h) {
        const auto& b = m.layers[size_t(l)][size_t(h)];
        const int64_t rows = (t + c.stride(h) - 1) / c.stride(h), a = c.axial(h);
        const bool kv = b.has_attn && !b.ttt();
        for (int64_t j = 0; j < a; ++j) {
          const int64_t cnt = rows > j ? (rows - j + a - 1) / a : 0;
          const int64_t kept = !kv ? 0 : c.local_attn(h) ? std::min(cnt, *c.window(h) + 1) : cnt;
          n += 2 * c.dim_of(h) + 2 * kept * c.heads_of(h) * c.dim_head_of(h);
          b.with_ttt([&](const auto& layer) { n += layer.state_bytes() / int64_t(sizeof(T)); });
        }
        n += c.dim_of(h) * 2;
      }
    return n * int64_t(sizeof(T));
  }

  /// Bytes of this sequence's state as it stands: the KV rows kept (full attention: every row of
  /// the phase so far; a window: at most w + 1), TTT fast weights, the token-shift rows, the
  /// convolution history and the latest rows of the merges (buffer capacity not counted).
  int64_t state_bytes() const {
    const HierConfig& c = m_->cfg;
    int64_t n = int64_t(hist_.size()) * c.token_dim();
    for (int64_t l = 0; l < c.depth; ++l)
      for (int64_t h = 0; h < c.num_hierarchies(); ++h) {
        const auto& b = m_->layers[size_t(l)][size_t(h)];
        for (const Phase& p : phases_[size_t(l)][size_t(h)]) {
          n += 2 * c.dim_of(h) + 2 * p.n * p.keys.cols();
          b.with_ttt([&](const auto& layer) { n += layer.state_bytes() / int64_t(sizeof(T)); });
        }
        n += c.dim_of(h) * 2;  // latest row after the blocks, final row
      }
    return n * int64_t(sizeof(T));
  }

  /// Feed the token at the next position; returns its logits (1, V). advance() of one token.
  M step(int64_t token) { return advance(std::span<const int64_t>(&token, 1)); }

  /// Feed `ids` at the next positions (any number, at any position); returns the logits (1, V)
  /// of the last. Every hierarchy's new rows go through the blocks together, phase by phase: the
  /// token shifts read the previous row of the same phase, attention takes the new rows against
  /// the cache and each other (causal, within the window) in blocks of kQueryBlock queries, a TTT
  /// layer continues its state over the phase's new rows, the merges pool each new position.
  M advance(std::span<const int64_t> ids);

 private:
  /// A TTT mixer's per-phase state and buffers.
  template <class Layer>
  struct TTTSlot {
    typename Layer::State state;
    typename Layer::Workspace ws;
  };
  template <class Variant>
  struct slots_of;
  template <class... Ls>
  struct slots_of<std::variant<std::monostate, Ls...>> {
    using type = std::variant<std::monostate, TTTSlot<Ls>...>;
  };
  using TTTSlots = slots_of<typename detail::ttt_layers_of<Learners, T>::Layer>;

  struct Phase {
    M prev_in, prev_mid;  // the previous rows entering the two token shifts
    M keys, values;       // KV cache: rows [lo, lo + n) hold the phase positions kept, rotated keys
    int64_t lo = 0, n = 0;
    typename TTTSlots::type ttt;  // the TTT mixer's state and buffers (monostate: none)
  };

  static constexpr Eigen::Index kQueryBlock = 64;  ///< query rows per score block in advance's attention

  /// ShapeError naming the first token id outside the vocabulary.
  void check_ids(std::span<const int64_t> ids) const {
    for (int64_t id : ids)
      if (id < 0 || id >= m_->cfg.num_tokens)
        throw ShapeError("hier::Decoder: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                         std::to_string(m_->cfg.num_tokens) + ")");
  }

  /// token_shift of rows Z that follow `prev` in their phase: the first ceil(d / 2) channels of each
  /// row, the rest from the row before it (the first from `prev`); `prev` becomes Z's last row.
  static V shift_rows(ad::Tape<T>& tp, V z, M& prev) {
    const Eigen::Index d = z.cols(), h1 = (d + 1) / 2, m = z.rows();
    M before(m, d);
    before.row(0) = prev;
    if (m > 1) before.bottomRows(m - 1) = z.value().topRows(m - 1);
    prev = z.value().bottomRows(1);
    if (d - h1 == 0) return z;
    return ad::concat_cols(std::vector<V>{ad::cols(z, 0, h1), tp.constant(before.rightCols(d - h1))});
  }

  /// One block of layer l, hierarchy h over rows Z of one phase at phase positions i0, i0 + 1, ...
  /// (the phase's next rows): attention or TTT mixer, then the feedforward, each with its shift.
  M block_rows(int64_t l, int64_t h, Phase& ph, int64_t i0, const M& Z) {
    const auto& b = m_->layers[size_t(l)][size_t(h)];
    ad::Tape<T> tp{ad::no_grad};
    auto P = [&](const M& w) { return tp.param(w, nullptr); };
    V z = tp.constant(Z);
    if (b.has_attn) {
      const V sh = shift_rows(tp, z, ph.prev_in);
      V o;
      if (b.ttt()) {
        const V xn = ad::layer_norm(sh, P(b.attn.norm_w), P(b.attn.norm_b));
        M out;
        b.with_ttt([&](const auto& layer) {
          auto& slot = std::get<TTTSlot<std::decay_t<decltype(layer)>>>(ph.ttt);
          layer.forward(xn.value(), slot.state, i0, slot.ws, out);
        });
        o = tp.constant(std::move(out));
      } else {
        o = attend_rows(tp, b, h, ph, i0, sh);
      }
      z = ad::add(o, z);
    }
    const V sh2 = shift_rows(tp, z, ph.prev_mid);
    const V f = ad::linear(ad::gelu(ad::linear(ad::l2_rms_norm(sh2, P(b.ff_gamma)), P(b.ff_w1))), P(b.ff_w2));
    return ad::add(f, z).value();
  }

  /// Attention of a phase's new rows (positions i0, i0 + 1, ...) against the cache and each other:
  /// row r sees positions up to i0 + r (a window: the last w + 1 of them). The keys and values of
  /// the rows join the cache (a window keeps its last w + 1).
  V attend_rows(ad::Tape<T>& tp, const typename Model::Block& b, int64_t h, Phase& ph, int64_t i0, V z) {
    const HierConfig& c = m_->cfg;
    const auto& a = b.attn;
    auto P = [&](const M& w) { return tp.param(w, nullptr); };
    const int64_t heads = c.heads_of(h), dh = c.dim_head_of(h), inner = heads * dh, m = z.rows();
    const V xn = a.local ? ad::layer_norm(z, P(a.norm_w), P(a.norm_b)) : ad::l2_rms_norm(z, P(a.norm_w));
    const M qkv = ad::linear(xn, P(a.qkv)).value();
    M q(m, inner), k(m, inner);
    for (int64_t r = 0; r < m; ++r) {
      q.row(r) = rotate(a, h, qkv.row(r).leftCols(inner), i0 + r, false);
      k.row(r) = rotate(a, h, qkv.row(r).middleCols(inner, inner), i0 + r, true);
    }
    // the keys this chunk's queries may see: the cache's rows (positions i0 - n0 ... i0 - 1), then the new ones
    const std::optional<int64_t> w = c.window(h);
    const int64_t keep = a.local ? *w + 1 : -1, n0 = ph.n, nk = n0 + m;
    M K(nk, inner), Vs(nk, inner);
    if (n0 > 0) {  // (an empty cache has no columns yet)
      K.topRows(n0) = ph.keys.middleRows(ph.lo, n0);
      Vs.topRows(n0) = ph.values.middleRows(ph.lo, n0);
    }
    K.bottomRows(m) = k;
    Vs.bottomRows(m) = qkv.rightCols(inner);
    const T scale = T(1) / std::sqrt(T(dh));
    M o(m, inner);
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sc;
    for (int64_t r0 = 0; r0 < m; r0 += kQueryBlock) {
      const int64_t rb = std::min<int64_t>(kQueryBlock, m - r0);
      // key columns [lo, hi) cover what rows r0 .. r0 + rb - 1 see; row r sees [first(r), n0 + r]
      const int64_t hi = n0 + r0 + rb;
      auto first = [&](int64_t r) { return keep > 0 ? std::max<int64_t>(0, n0 + r - (keep - 1)) : int64_t(0); };
      const int64_t lo = first(r0);
      for (int64_t hd = 0; hd < heads; ++hd) {
        blocks::matmul(sc, q.middleRows(r0, rb).middleCols(hd * dh, dh),
                       K.middleRows(lo, hi - lo).middleCols(hd * dh, dh).transpose());
        // the masked softmax, row by row: row r sees columns [a0, a1) (scale > 0: max of the
        // scaled = scaled max); the columns it does not see are zeros
        for (int64_t r = 0; r < rb; ++r) {
          const int64_t a0 = first(r0 + r) - lo, a1 = n0 + r0 + r - lo + 1;
          auto row = sc.row(r);
          auto seg = row.segment(a0, a1 - a0);
          seg = ((seg.array() - seg.maxCoeff()) * scale).exp();
          seg /= seg.sum();
          row.head(a0).setZero();
          row.tail(row.size() - a1).setZero();
        }
        blocks::matmul(o.middleRows(r0, rb).middleCols(hd * dh, dh), sc,
                       Vs.middleRows(lo, hi - lo).middleCols(hd * dh, dh));
      }
    }
    for (int64_t r = 0; r < m; ++r) append_kv(ph, k.row(r), Vs.row(n0 + r), keep);
    return ad::linear(tp.constant(std::move(o)), P(a.out));
  }

  /// Rotary embedding of one row (1, heads dh) of queries or keys at phase position i, with the
  /// xPos factor of full attention centred at 0 (queries scale^(i / 512), keys its inverse).
  M rotate(const typename Model::Attn& a, int64_t h, const M& x, int64_t i, bool key) const {
    const HierConfig& c = m_->cfg;
    const int64_t heads = c.heads_of(h), dh = c.dim_head_of(h), half = dh / 2;
    using R = std::conditional_t<std::is_same_v<T, float>, float, double>;
    M y(1, heads * dh);
    for (int64_t j = 0; j < half; ++j) {
      const R ang = R(i) * R(a.inv_freq(0, j));
      T cj = T(std::cos(double(ang))), sj = T(std::sin(double(ang)));
      if (!a.local) {
        const R f = R(std::pow(double(a.xpos_scale(0, j)), double(R(i) / R(512))));
        const T fac = key ? T(R(1) / f) : T(f);
        cj *= fac, sj *= fac;
      }
      for (int64_t hd = 0; hd < heads; ++hd) {
        const T x1 = x(0, hd * dh + j), x2 = x(0, hd * dh + half + j);
        y(0, hd * dh + j) = x1 * cj - x2 * sj;
        y(0, hd * dh + half + j) = x2 * cj + x1 * sj;
      }
    }
    return y;
  }

  /// Append one (rotated key, value) row to a phase's cache. The buffers grow by doubling
  /// (amortised O(1) per token, not a copy of the cache per token); with `keep` > 0 (a window)
  /// only the last `keep` rows stay, and the kept rows move to the front when the buffer's end is
  /// reached (the buffer holds at least 2 keep rows, so that happens every keep tokens or less often).
  static void append_kv(Phase& ph, const M& k, const M& v, int64_t keep) {
    const Eigen::Index inner = k.cols();
    if (ph.lo + ph.n == ph.keys.rows()) {
      if (ph.lo > 0) {
        ph.keys.topRows(ph.n) = ph.keys.middleRows(ph.lo, ph.n).eval();
        ph.values.topRows(ph.n) = ph.values.middleRows(ph.lo, ph.n).eval();
        ph.lo = 0;
      }
      if (ph.n == ph.keys.rows()) {
        const Eigen::Index cap = std::max<Eigen::Index>({8, 2 * ph.keys.rows(), keep > 0 ? 2 * keep : 0});
        ph.keys.conservativeResize(cap, inner);
        ph.values.conservativeResize(cap, inner);
      }
    }
    ph.keys.row(ph.lo + ph.n) = k;
    ph.values.row(ph.lo + ph.n) = v;
    ++ph.n;
    if (keep > 0 && ph.n > keep) ++ph.lo, --ph.n;
  }

  const Model* m_;
  int64_t t_ = 0;
  std::deque<M> hist_;
  std::vector<std::vector<std::vector<Phase>>> phases_;  // [l][h][phase]
  std::vector<std::vector<M>> latest_;                    // [l][h] latest row after the blocks (before the merge)
  std::vector<M> final_;                                  // [h] latest final-normed row
};

template <class T, class Learners>
typename Decoder<T, Learners>::M Decoder<T, Learners>::prefill(std::span<const int64_t> ids, int64_t chunk) {
  const HierConfig& c = m_->cfg;
  if (t_ != 0)
    throw Error("hier::Decoder::prefill: the sequence is at position " + std::to_string(t_) +
                "; prefill starts a sequence (call reset() first, or step() to continue)");
  if (ids.empty()) throw ShapeError("hier::Decoder::prefill: empty prompt");
  if (chunk < 0) throw ShapeError("hier::Decoder::prefill: chunk " + std::to_string(chunk) + " (expected > 0, or 0 for one forward)");
  if (chunk > 0) {
    if (int64_t(ids.size()) > c.seq_len)
      throw ShapeError("hier::Decoder::prefill: a prompt of " + std::to_string(ids.size()) + " tokens is longer than seq_len = " +
                       std::to_string(c.seq_len));
    check_ids(ids);  // every id checked before the state changes
    M last;
    for (size_t i = 0; i < ids.size(); i += size_t(chunk)) last = advance(ids.subspan(i, std::min(ids.size() - i, size_t(chunk))));
    return last;
  }
  typename Model::Extras x;
  x.phases = true;
  const M logits = m_->forward(std::vector<int64_t>(ids.begin(), ids.end()), &x);  // checks length and ids
  const int64_t n = int64_t(ids.size());
  for (size_t i = 0; i < hist_.size(); ++i) {  // the last c_max + 1 embeddings, zeros before position 0
    const int64_t pos = n - int64_t(hist_.size()) + int64_t(i);
    hist_[i] = pos < 0 ? M(M::Zero(1, c.token_dim())) : M(m_->emb.row(ids[size_t(pos)]));
  }
  for (const auto& pr : x.phase_rows) {
    const int64_t l = pr.layer, h = pr.hierarchy, j = pr.phase, a = c.axial(h);
    const int64_t rows = (n + c.stride(h) - 1) / c.stride(h), cnt = rows > j ? (rows - j + a - 1) / a : 0;
    if (cnt == 0) continue;  // no row of this phase yet: its state stays fresh
    Phase& ph = phases_[size_t(l)][size_t(h)][size_t(j)];
    const auto& b = m_->layers[size_t(l)][size_t(h)];
    ph.prev_in = pr.in.row(cnt - 1);
    ph.prev_mid = pr.mid.row(cnt - 1);
    if (!b.has_attn) continue;
    if (b.ttt()) {
      const M X = pr.mixer_in.topRows(cnt);
      M out;
      b.with_ttt([&](const auto& layer) {
        auto& slot = std::get<TTTSlot<std::decay_t<decltype(layer)>>>(ph.ttt);
        layer.forward(X, slot.state, 0, slot.ws, out);
      });
      continue;
    }
    const int64_t inner = c.heads_of(h) * c.dim_head_of(h);
    const int64_t keep = c.local_attn(h) ? *c.window(h) + 1 : -1, first = keep > 0 ? std::max<int64_t>(0, cnt - keep) : 0;
    const M kv = pr.mixer_in.middleRows(first, cnt - first) * b.attn.qkv.middleRows(inner, 2 * inner).transpose();
    for (int64_t i = first; i < cnt; ++i)
      append_kv(ph, rotate(b.attn, h, kv.row(i - first).leftCols(inner), i, true), kv.row(i - first).rightCols(inner), keep);
  }
  for (int64_t l = 0; l < c.depth; ++l)
    for (int64_t h = 0; h < c.num_hierarchies(); ++h) latest_[size_t(l)][size_t(h)] = x.block_out[size_t(l)][size_t(h)].bottomRows(1);
  for (int64_t h = 0; h < c.num_hierarchies(); ++h) final_[size_t(h)] = x.hidden_embeds[size_t(h)].bottomRows(1);
  t_ = n;
  return logits.bottomRows(1);
}

template <class T, class Learners>
typename Decoder<T, Learners>::M Decoder<T, Learners>::advance(std::span<const int64_t> ids) {
  const HierConfig& c = m_->cfg;
  const int64_t R = int64_t(ids.size()), t0 = t_, H = c.num_hierarchies(), D = c.token_dim();
  if (R == 0) throw ShapeError("hier::Decoder::advance: no tokens");
  if (t0 + R > c.seq_len)
    throw ShapeError("hier::Decoder: position " + std::to_string(std::max(t0, c.seq_len)) + " is past seq_len = " +
                     std::to_string(c.seq_len));
  check_ids(ids);
  // the embeddings of positions t0 - nh ... t0 + R - 1 (the history holds the nh before t0, zeros before 0)
  const int64_t nh = int64_t(hist_.size());
  M E(nh + R, D);
  for (int64_t i = 0; i < nh; ++i) E.row(i) = hist_[size_t(i)];
  for (int64_t r = 0; r < R; ++r) E.row(nh + r) = m_->emb.row(ids[size_t(r)]);
  auto emb_at = [&](int64_t pos) { return E.row(pos - (t0 - nh)); };
  for (int64_t i = 0; i < nh; ++i) hist_[size_t(i)] = E.row(R + i);

  // each hierarchy's new rows: positions t0 <= t < t0 + R with t % s == 0, compressed and normed
  std::vector<int64_t> first(static_cast<size_t>(H)), count(static_cast<size_t>(H));  // first new position, number of new rows
  std::vector<M> rows(static_cast<size_t>(H));
  for (int64_t h = 0; h < H; ++h) {
    const int64_t ch = c.compression(h), s = c.stride(h);
    first[size_t(h)] = (t0 + s - 1) / s * s;
    count[size_t(h)] = first[size_t(h)] < t0 + R ? (t0 + R - 1 - first[size_t(h)]) / s + 1 : 0;
    const int64_t n = count[size_t(h)];
    if (n == 0) continue;
    const auto& cp = m_->compress[size_t(h)];
    ad::Tape<T> tp{ad::no_grad};
    auto P = [&](const M& w) { return tp.param(w, nullptr); };
    V x;
    if (ch == 1) {
      M X(n, D);
      for (int64_t r = 0; r < n; ++r) X.row(r) = emb_at(first[size_t(h)] + r * s);
      x = tp.constant(std::move(X));
      if (cp.has_proj) x = ad::linear(x, P(cp.proj));
    } else {
      // the conv's row at t reads the embeddings [t - c + 1, t], unfolded in W's column order
      // (in, k): xc(r, i c + j) = emb(t - c + 1 + j)(i)
      M xc(n, D * ch);
      for (int64_t r = 0; r < n; ++r) {
        const int64_t t = first[size_t(h)] + r * s;
        for (int64_t j = 0; j < ch; ++j) {
          const auto e = emb_at(t - ch + 1 + j);
          for (int64_t i = 0; i < D; ++i) xc(r, i * ch + j) = e(i);
        }
      }
      const V cv = ad::linear(tp.constant(std::move(xc)), P(cp.conv_w), P(cp.conv_b));
      x = ad::linear(ad::silu(cv), P(cp.pw_w), P(cp.pw_b));
    }
    rows[size_t(h)] = ad::layer_norm(x, P(m_->post_w[size_t(h)]), P(m_->post_b[size_t(h)])).value();
  }

  const int64_t p = c.predict_index();
  for (int64_t l = 0; l < c.depth; ++l) {
    const std::vector<M> before = latest_[size_t(l)];  // each hierarchy's latest row before t0
    for (int64_t h = 0; h < H; ++h) {
      const int64_t n = count[size_t(h)];
      if (n == 0) continue;
      // row r is row k0 + r of the hierarchy: phase (k0 + r) % a, phase position (k0 + r) / a
      const int64_t a = c.axial(h), k0 = first[size_t(h)] / c.stride(h);
      M out(n, c.dim_of(h));
      for (int64_t j = 0; j < a; ++j) {
        const int64_t r0 = ((j - k0) % a + a) % a;  // the first new row of phase j
        if (r0 >= n) continue;
        const int64_t m = (n - 1 - r0) / a + 1;
        M Z(m, c.dim_of(h));
        for (int64_t q = 0; q < m; ++q) Z.row(q) = rows[size_t(h)].row(r0 + q * a);
        const M Y = block_rows(l, h, phases_[size_t(l)][size_t(h)][size_t(j)], (k0 + r0) / a, Z);
        for (int64_t q = 0; q < m; ++q) out.row(r0 + q * a) = Y.row(q);
      }
      rows[size_t(h)] = std::move(out);
      latest_[size_t(l)][size_t(h)] = rows[size_t(h)].bottomRows(1);
    }
    if (!c.need_merge()) continue;
    // the merge at each new position t that has a row to add to (every hierarchy with a row at t
    // under merge_all, else the predicting one, stride 1): the pooled latest rows of every hierarchy
    // at t (before this layer's merge), through the merge's MLP
    std::vector<int64_t> at;
    for (int64_t t = t0; t < t0 + R; ++t) {
      bool any = false;
      for (int64_t h = 0; h < H; ++h)
        if ((c.hierarchy_merge_all || h == p) && t % c.stride(h) == 0) any = true;
      if (any) at.push_back(t);
    }
    M cat(int64_t(at.size()), c.sum_dims());
    for (size_t q = 0; q < at.size(); ++q) {
      int64_t c0 = 0;
      for (int64_t h = 0; h < H; ++h) {
        const int64_t s = c.stride(h), latest = at[q] / s * s;  // the position of h's latest row at t
        auto dst = cat.row(int64_t(q)).middleCols(c0, c.dim_of(h));
        if (latest >= t0) dst = rows[size_t(h)].row((latest - first[size_t(h)]) / s);
        else dst = before[size_t(h)].row(0);
        c0 += c.dim_of(h);
      }
    }
    const auto& mg = m_->merges[size_t(l)];
    ad::Tape<T> tp{ad::no_grad};
    auto P = [&](const M& w) { return tp.param(w, nullptr); };
    V pooled = ad::l2_rms_norm(tp.constant(std::move(cat)), P(mg.gamma));
    const M add = ad::linear(ad::silu(ad::linear(pooled, P(mg.w1), P(mg.b1))), P(mg.w2), P(mg.b2)).value();
    for (size_t q = 0; q < at.size(); ++q) {
      if (c.hierarchy_merge_all) {
        int64_t c0 = 0;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t s = c.stride(h);
          if (at[q] % s == 0) rows[size_t(h)].row((at[q] - first[size_t(h)]) / s) += add.row(int64_t(q)).middleCols(c0, c.dim_of(h));
          c0 += c.dim_of(h);
        }
      } else {
        rows[size_t(p)].row(at[q] - first[size_t(p)]) += add.row(int64_t(q));
      }
    }
  }
  ad::Tape<T> tp{ad::no_grad};
  auto P = [&](const M& w) { return tp.param(w, nullptr); };
  for (int64_t h = 0; h < H; ++h)
    if (count[size_t(h)] > 0)
      final_[size_t(h)] =
          ad::layer_norm(tp.constant(rows[size_t(h)].bottomRows(1)), P(m_->norm_w[size_t(h)]), P(m_->norm_b[size_t(h)])).value();
  M pe;
  if (c.predict_use_all_hierarchy) {
    pe.resize(1, c.sum_dims());
    int64_t c0 = 0;
    for (int64_t h = 0; h < H; ++h) {
      pe.middleCols(c0, c.dim_of(h)) = final_[size_t(h)];
      c0 += c.dim_of(h);
    }
  } else {
    pe = final_[size_t(p)];
  }
  t_ = t0 + R;
  return pe * m_->to_logits.transpose();
}

/// `n_new` tokens after `prompt` with a Decoder (the prompt in one prefill, then one step per
/// new token): the same tokens as `generate` (generate.hpp) up to rounding, without a full forward
/// per token. prompt + n_new must fit in seq_len (ShapeError otherwise).
template <class T, class Learners, class Sampler>
std::vector<int64_t> generate_cached(const HierarchicalTransformerT<T, Learners>& m, const std::vector<int64_t>& prompt,
                                     int64_t n_new, const Sampler& sampler, std::mt19937_64& rng) {
  if (prompt.empty()) throw ShapeError("hier::generate_cached: the prompt must hold at least one token");
  if (n_new < 0 || int64_t(prompt.size()) + n_new > m.cfg.seq_len)
    throw ShapeError("hier::generate_cached: prompt (" + std::to_string(prompt.size()) + ") + new tokens (" +
                     std::to_string(n_new) + ") must be at most seq_len = " + std::to_string(m.cfg.seq_len));
  Decoder<T, Learners> dec(m);
  ad::Matrix<T> logits = dec.prefill(prompt);
  std::vector<int64_t> out;
  std::vector<float> row(size_t(m.cfg.num_tokens));
  for (int64_t i = 0; i < n_new; ++i) {
    for (Eigen::Index j = 0; j < logits.cols(); ++j) row[size_t(j)] = float(logits(0, j));
    const int64_t tok = sampler(std::span<const float>(row), rng);
    out.push_back(tok);
    if (i + 1 < n_new) logits = dec.step(tok);
  }
  return out;
}

}  // namespace ttt::hier

#if defined(TTT_PRECOMPILED)
namespace ttt::hier {
extern template class Decoder<float>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template class Decoder<double>;
#endif
}  // namespace ttt::hier
#endif
