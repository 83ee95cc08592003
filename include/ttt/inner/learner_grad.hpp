#pragma once
/// \file inner/learner_grad.hpp
/// The per-learner part of the training backward pass: one head's mini-batch, forward and reverse,
/// generic over the scalar (float for training, double for the finite-difference checks).
///
/// ## The interface a learner's backward provides
///
/// Training needs, for each inner learner `L`, `ttt::train::LearnerGrad<L>` with two static
/// function templates. By default it is `DerivedGrad<L>` (inner/derived.hpp), derived from the
/// learner's generic `apply`; a hand-written fast path specialises it (the built-in ones sit beside
/// their learners in inner/linear.hpp, inner/mlp.hpp, inner/swiglu.hpp, inner/linear_attention.hpp, and are tested
/// against the derived one); `loss_and_grad` refuses to compile for a learner with neither:
///
/// \code
/// template <> struct ttt::train::LearnerGrad<MyLearner> {
///   // One mini-batch of one head, starting a fresh mini-batch (no carried gradient):
///   //   Zq[t]     = f_{theta_t}(XQ[t]),  theta_t = theta0 - token_eta[t] * sum_{s<=t} lr[s] grad_s
///   //   grad_s    = d/dtheta 0.5 ||ln_w * LN(f_theta0(XK[s])) + ln_b - (XV[s] - XK[s])||^2
///   //   theta_end = theta0 - token_eta[n-1] * sum_s lr[s] grad_s  (the next mini-batch's start)
///   template <class S>   // f: the head dim, or inner::Dims (head dim and hidden width, inner/swiglu.hpp)
///   static void forward(const S* theta0, int64_t f, const Segment<S>& s, RefT<S> Zq, S* theta_end,
///                       Scratch<S>& ws);
///   // Reverse of forward: given dZq (n, f) and dtheta_end (P; zeros after the last mini-batch),
///   // ADD the cotangents of theta0 into dtheta0 (P) and those of XQ, XK, XV, token_eta, lr,
///   // ln_w, ln_b into `out` (second-order terms included: grad_s depends on everything).
///   template <class S>
///   static void backward(const S* theta0, int64_t f, const Segment<S>& s, CRefT<S> dZq,
///                        const S* dtheta_end, S* dtheta0, SegmentGrad<S>& out, Scratch<S>& ws);
///   // Optional: both read Segment::query_keep / query_shift (the queries read keep_t theta0 +
///   // shift - token_eta[t] ...; null: 1 and 0) and backward adds their cotangents
///   // (out.d_query_keep, out.d_query_shift). Then momentum and decay in the order `after`
///   // train on this dual form (inner/update_grad.hpp); without it, token by token.
///   static constexpr bool query_base = true;
///   // Optional: forward leaves its intermediates in ws's slots [0, kept_slots) and backward
///   // recomputes them only `if (!ws.forward_kept())`; at scan_checkpoint_group 0 the layer keeps
///   // them per mini-batch (Scratch), so the reverse pass skips the recomputation.
///   static constexpr size_t kept_slots = 5;
///   // Optional: backward also accepts dtheta0 == dtheta_end, one buffer that holds dtheta_end on
///   // entry and dtheta0 on return (dtheta_end's pass-through is then already in place: no add,
///   // and the caller neither zero-fills nor swaps a second buffer between mini-batches). It must
///   // read dtheta_end's values before it adds into the buffer (`dual_linear_bwd` does).
///   static constexpr bool state_grad_in_place = true;
/// };
/// \endcode
///
/// theta0 is laid out as the learner's `param_specs` (row-major, spec after spec), as in the layer.
/// `ws(i, rows, cols)` hands out reusable matrices (slot i), so that a learner allocates nothing
/// once the first mini-batch has sized them. The layer-level code (projections, RoPE, the
/// learning-rate gate, the token index clamp, the output LayerNorm, chaining mini-batches in
/// reverse with the state's cotangent, checkpointing) is generic (layers/ttt_layer_grad.hpp).
/// `blocks::ln_l2_grad` / `blocks::ln_l2_grad_bwd` give the inner loss gradient and its VJP; `detail::dual_linear_bwd` the
/// reverse of one dual-form linear map.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../blocks/linear.hpp"
#include "learner.hpp"

namespace ttt::train {

/// One head's mini-batch (inner/learner.hpp); training's segments start a mini-batch (fresh).
template <class S>
using Segment = inner::Segment<S>;

/// Cotangents of a segment's inputs; backward ADDS into them (the caller zeroes them).
template <class S>
struct SegmentGrad {
  RefT<S> dXQ, dXK, dXV;  ///< (n, f)
  S* d_token_eta;         ///< (n)
  S* d_lr;                ///< (n)
  S* d_ln_w;              ///< (f)
  S* d_ln_b;              ///< (f)
  S* d_alpha = nullptr;   ///< (n) the forgetting gate's, for optimizers that read one
  S* d_query_keep = nullptr;   ///< (n) set when the segment's query_keep is
  S* d_query_shift = nullptr;  ///< (P) set when the segment's query_shift is
};

using SegmentD = Segment<double>;
using SegmentGradD = SegmentGrad<double>;

/// Reusable matrices for a learner's forward/backward: slot i as an (r, c) row-major matrix. A
/// slot's buffer grows when a larger shape is asked for (the first mini-batch) and is reused
/// afterwards; a view stays valid until its slot is asked for with a larger shape.
///
/// Kept forwards: a LearnerGrad that declares `static constexpr size_t kept_slots = K` keeps its
/// forward's intermediates in slots [0, K) and its backward starts with
/// `if (!ws.forward_kept()) <recompute them>`. With scan_checkpoint_group 0 the layer points those
/// slots at a store of the mini-batch's own (`keep`): the forward fills it, and the backward of
/// the same mini-batch finds it filled and skips the recomputation (memory for speed).
template <class S>
class Scratch {
 public:
  Eigen::Map<MatT<S>> operator()(size_t i, Eigen::Index r, Eigen::Index c) {
    if (i < kept_n_) return (*kept_)(i, r, c);
    if (bufs_.size() <= i) bufs_.resize(i + 1);
    auto& b = bufs_[i];
    if (b.size() < size_t(r * c)) b.resize(size_t(r * c));
    return Eigen::Map<MatT<S>>(b.data(), r, c);
  }
  /// As operator(), zero-filled.
  Eigen::Map<MatT<S>> zero(size_t i, Eigen::Index r, Eigen::Index c) {
    auto m = (*this)(i, r, c);
    m.setZero();
    return m;
  }

  /// Slots [0, n) are `store`'s until `release`; `filled`: it holds this mini-batch's forward.
  void keep(Scratch* store, size_t n, bool filled) { kept_ = store, kept_n_ = n, filled_ = filled; }
  void release() { kept_ = nullptr, kept_n_ = 0, filled_ = false; }
  /// Whether the forward's intermediates (the learner's kept slots) are already in place.
  bool forward_kept() const { return filled_; }
  /// Bytes held by the slots.
  int64_t bytes() const {
    int64_t n = 0;
    for (const auto& b : bufs_) n += int64_t(b.capacity());
    return n * int64_t(sizeof(S));
  }

 private:
  std::vector<aligned_vector<S>> bufs_;
  Scratch* kept_ = nullptr;
  size_t kept_n_ = 0;
  bool filled_ = false;
};

/// The learner's LearnerGrad keeps its forward's intermediates in slots [0, kept_slots) (see Scratch).
template <class G>
constexpr size_t kept_slots() {
  if constexpr (requires { G::kept_slots; }) return size_t(G::kept_slots);
  else return 0;
}

/// The learner's LearnerGrad accepts one buffer as dtheta_end and dtheta0 (see the file comment).
template <class G>
constexpr bool state_grad_in_place() {
  if constexpr (requires { G::state_grad_in_place; }) return bool(G::state_grad_in_place);
  else return false;
}

template <class L>
struct DerivedGrad;  // inner/derived.hpp

/// A learner's training forward and reverse: derived from its `apply` (inner/derived.hpp) unless
/// the learner specialises it with a hand-written fast path (see the file comment).
template <class L>
struct LearnerGrad : DerivedGrad<L> {};

/// Whether the learner's LearnerGrad reads the queries' affine base (its `query_base`, see the file
/// comment).
template <class L>
constexpr bool reads_query_base() {
  if constexpr (requires { LearnerGrad<L>::query_base; }) return bool(LearnerGrad<L>::query_base);
  else return false;
}

/// A learner whose backward is known to training, in scalar S.
template <class L, class S>
concept HasLearnerGradFor = requires(const S* th, S* dth, int64_t f, const Segment<S>& s, RefT<S> Z, CRefT<S> dZ,
                                     SegmentGrad<S>& out, Scratch<S>& ws) {
  LearnerGrad<L>::forward(th, f, s, Z, dth, ws);
  LearnerGrad<L>::backward(th, f, s, dZ, th, dth, out, ws);
};
/// ... in float (training) and double (finite-difference checks).
template <class L>
concept HasLearnerGrad = HasLearnerGradFor<L, float> && HasLearnerGradFor<L, double>;

namespace detail {

/// E(t, j) = token_eta[t] * lr[j] for j <= t, 0 above the diagonal.
template <class S, class M>
void eta_matrix(const Segment<S>& s, M&& E) {
  const Eigen::Index n = E.rows();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j < n; ++j) E(t, j) = j <= t ? s.token_eta[t] * s.lr[j] : S(0);
}
/// K = Xq Xk^T + 1 (the dual form's kernel, bias included).
template <class S, class M>
void kernel(CRefT<S> Xq, CRefT<S> Xk, M&& K) {
  blocks::matmul(K, Xq, Xk.transpose());
  K.array() += S(1);
}
/// Cotangents of E (n, n) to token_eta and lr.
template <class S>
void eta_matrix_bwd(const Segment<S>& s, CRefT<S> dE, SegmentGrad<S>& o) {
  const Eigen::Index n = dE.rows();
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j <= t; ++j) {
      o.d_token_eta[t] += dE(t, j) * s.lr[j];
      o.d_lr[j] += dE(t, j) * s.token_eta[t];
    }
}

/// W_end = W - e Xk^T diag(lr) G, b_end = b - e lr^T G, e = token_eta[n-1]; We/be hold W/b on
/// entry (be null: a map without bias). Gl: an (n, out) scratch.
template <class S, class M>
void end_state(const Segment<S>& s, CRefT<S> Xk, CRefT<S> G, S* We, S* be, M&& Gl) {
  const Eigen::Index n = Xk.rows(), in = Xk.cols(), out = G.cols();
  const S e = s.token_eta[n - 1];
  for (Eigen::Index j = 0; j < n; ++j) Gl.row(j) = G.row(j) * (-e * s.lr[j]);  // -e diag(lr) G
  blocks::xt_times<S>(Xk, cv(Gl), mv(Eigen::Map<MatT<S>>(We, in, out)), /*accumulate=*/true);
  if (be) Eigen::Map<RowT<S>>(be, out) += Gl.colwise().sum();
}

/// p + k, or null for a null p (the offset of a parameter inside an optional query shift).
template <class P>
P* offset(P* p, int64_t k) {
  return p ? p + k : nullptr;
}

/// One dual-form linear map's share of the queries' affine base (Segment::query_keep /
/// query_shift): its bias b (null: none), the shift of W and b (null: none) and their cotangents.
template <class S>
struct QueryShift {
  const S* b = nullptr;
  const S* DW = nullptr;
  const S* Db = nullptr;
  S* dDW = nullptr;
  S* dDb = nullptr;
};

/// The queries' base of one dual-form linear map, Out = keep o (Xq W + b) + Xq DW + Db: with
/// neither keep nor shift, Xq W + b (what the queries read before the gradient terms).
template <class S, class M>
void query_base(const Segment<S>& s, CRefT<S> Xq, CRefT<S> W, const QueryShift<S>& a, M&& Out) {
  const Eigen::Index n = Xq.rows(), in = W.rows(), out = W.cols();
  blocks::rows_times<S>(Xq, W, Out);
  if (a.b) Out.rowwise() += Eigen::Map<const RowT<S>>(a.b, out);
  if (s.query_keep)
    for (Eigen::Index t = 0; t < n; ++t) Out.row(t) *= s.query_keep[t];
  if (a.DW) blocks::matmul(Out, Xq, Eigen::Map<const MatT<S>>(a.DW, in, out), true);
  if (a.Db) Out.rowwise() += Eigen::Map<const RowT<S>>(a.Db, out);
}

/// Reverse of `query_base`: given dOut, ADD to dW, db (null: no bias), dXq, o.d_query_keep and
/// the shift's cotangents. Uses scratch slots slot, slot+1 (with keep only).
template <class S>
void query_base_bwd(const Segment<S>& s, CRefT<S> Xq, CRefT<S> W, const QueryShift<S>& a, CRefT<S> dOut, S* dW_,
                    S* db_, RefT<S> dXq, SegmentGrad<S>& o, Scratch<S>& ws, size_t slot) {
  const Eigen::Index n = Xq.rows(), in = W.rows(), out = W.cols();
  Eigen::Map<MatT<S>> dW(dW_, in, out);
  if (s.query_keep) {
    auto dZc = ws(slot, n, out), base = ws(slot + 1, n, out);
    blocks::rows_times<S>(Xq, W, base);
    if (a.b) base.rowwise() += Eigen::Map<const RowT<S>>(a.b, out);
    for (Eigen::Index t = 0; t < n; ++t) {
      o.d_query_keep[t] += dOut.row(t).dot(base.row(t));
      dZc.row(t) = s.query_keep[t] * dOut.row(t);
    }
    blocks::xt_times<S>(Xq, cv(dZc), dW, /*accumulate=*/true);
    if (db_) Eigen::Map<RowT<S>>(db_, out) += dZc.colwise().sum();
    blocks::matmul(dXq, dZc, W.transpose(), true);
  } else {
    blocks::xt_times<S>(Xq, dOut, dW, /*accumulate=*/true);
    if (db_) Eigen::Map<RowT<S>>(db_, out) += dOut.colwise().sum();
    blocks::matmul(dXq, dOut, W.transpose(), true);
  }
  if (a.DW) {
    blocks::matmul(Eigen::Map<MatT<S>>(a.dDW, in, out), Xq.transpose(), dOut, true);
    blocks::matmul(dXq, dOut, Eigen::Map<const MatT<S>>(a.DW, in, out).transpose(), true);
  }
  if (a.Db) Eigen::Map<RowT<S>>(a.dDb, out) += dOut.colwise().sum();
}

/// Reverse of one "linear layer" of the dual form,
///   Zq = query_base(Xq; W, b, shift) - (E o K) G,  K = Xq Xk^T + 1,
///   W_end = W - e Xk^T diag(lr) G,  b_end = b - e lr^T G,  e = token_eta[n-1]:
/// given dZq, dW_end, db_end, ADD to dW, db, dXq, dXk, dG, dE, d_lr, d_token_eta[n-1] (and the
/// query base's cotangents, `a`). dW may be dW_end's buffer (db db_end's), which then holds its
/// pass-through already (LearnerGrad's state_grad_in_place): dW_end is read before dW is written.
/// Uses scratch slots slot .. slot+5.
template <class S>
void dual_linear_bwd(const Segment<S>& s, CRefT<S> Xq, CRefT<S> Xk, CRefT<S> G, CRefT<S> E, CRefT<S> K, CRefT<S> W,
                     const S* dWe_, const S* dbe_, CRefT<S> dZq, S* dW_, S* db_, RefT<S> dXq, RefT<S> dXk, RefT<S> dG,
                     RefT<S> dE, SegmentGrad<S>& o, Scratch<S>& ws, size_t slot, const QueryShift<S>& a = {}) {
  const Eigen::Index n = Xq.rows(), in = W.rows(), out = W.cols();
  Eigen::Map<const MatT<S>> dWe(dWe_, in, out);
  Eigen::Map<const RowT<S>> dbe(dbe_, out);
  Eigen::Map<MatT<S>> dW(dW_, in, out);
  Eigen::Map<RowT<S>> db(db_, out);
  // the end state's reads of dW_end first: dW may be its buffer
  auto Kd = ws(slot + 2, n, out);  // Xk dW_end + db_end
  blocks::rows_times<S>(Xk, dWe, Kd);
  Kd.rowwise() += dbe;
  auto GdWt = ws(slot + 3, n, in);  // G dW_end^T
  blocks::matmul(GdWt, G, dWe.transpose());
  query_base_bwd<S>(s, Xq, W, a, dZq, dW_, db_, dXq, o, ws, slot + 4);
  if (dW_ != dWe_) dW += dWe;
  if (db_ != dbe_) db += dbe;
  auto dA = ws(slot, n, n);  // dA = -tril(dZq G^T) (negated below: -(product) would allocate a temporary)
  blocks::matmul(dA, dZq, G.transpose());
  auto A = ws(slot + 1, n, n);
  for (Eigen::Index t = 0; t < n; ++t)
    for (Eigen::Index j = 0; j < n; ++j) {
      dA(t, j) = j > t ? S(0) : -dA(t, j);
      A(t, j) = E(t, j) * K(t, j);
    }
  blocks::matmul(dG, A.transpose(), dZq, true, S(-1));
  dE += dA.cwiseProduct(K);
  auto dS = ws(slot + 1, n, n);  // reuses A's buffer: A is no longer needed
  dS = dA.cwiseProduct(E);
  blocks::matmul(dXq, dS, Xk, true);
  blocks::matmul(dXk, dS.transpose(), Xq, true);
  // end state
  const S e = s.token_eta[n - 1];
  for (Eigen::Index j = 0; j < n; ++j) {
    const S lj = s.lr[j];
    dG.row(j) -= (e * lj) * Kd.row(j);
    dXk.row(j) -= (e * lj) * GdWt.row(j);
    const S kg = Kd.row(j).dot(G.row(j));
    o.d_lr[j] -= e * kg;
    o.d_token_eta[n - 1] -= lj * kg;
  }
}

}  // namespace detail

/// The primal-only wrapper of a learner computes what the learner computes.
template <class L>
struct LearnerGrad<inner::PrimalOnly<L>> : LearnerGrad<L> {};

}  // namespace ttt::train

#include "derived.hpp"  // DerivedGrad, the default LearnerGrad
