#pragma once
/// \file inner/mlp.hpp
/// TTT-MLP: f(x) = gelu_tanh(x W1 + b1) W2 + b2 per head, hidden width 4f
/// (W1: [f, 4f], b1: [1, 4f], W2: [4f, f], b2: [1, f]). Its inference dual form and, below it,
/// its training forward / reverse (`train::LearnerGrad`).
#include <algorithm>

#include "../blocks/activations.hpp"
#include "../blocks/causal.hpp"
#include "../blocks/linear.hpp"
#include "../blocks/ln_l2.hpp"
#include "learner.hpp"
#include "learner_grad.hpp"

namespace ttt::inner {

struct MLP {
  static constexpr std::string_view name = "mlp";
  static constexpr int64_t expansion = 4;
  static constexpr bool fuses_gd_step = true;  // dual_form honours Segment::gscale, writes gacc last

  static std::vector<ParamSpec> param_specs(int64_t f) {
    const int64_t h = expansion * f;
    return {{"W1", {f, h}, ParamSpec::Init::normal},
            {"b1", {1, h}, ParamSpec::Init::zeros},
            {"W2", {h, f}, ParamSpec::Init::normal},
            {"b2", {1, f}, ParamSpec::Init::zeros}};
  }

  /// The four tensors of a flat per-head state (P = used as const or mutable S).
  template <class P>
  struct View {
    using S = std::remove_const_t<P>;
    using MapM = Eigen::Map<std::conditional_t<std::is_const_v<P>, const MatT<S>, MatT<S>>>;
    using MapR = Eigen::Map<std::conditional_t<std::is_const_v<P>, const RowT<S>, RowT<S>>>;
    MapM W1;
    MapR b1;
    MapM W2;
    MapR b2;
    View(P* th, int64_t f)
        : W1(th, f, expansion * f),
          b1(th + expansion * f * f, expansion * f),
          W2(th + expansion * f * f + expansion * f, expansion * f, f),
          b2(th + 2 * expansion * f * f + expansion * f, f) {}
  };

  template <class S>
  static void apply(const S* theta, int64_t f, CRefT<S> X, RefT<S> Z) {
    const View<const S> p(theta, f);
    MatT<S> H = X * p.W1;  // (n, 4f)
    H.rowwise() += p.b1;
    blocks::gelu_into(H.data(), H.data(), size_t(H.size()));
    blocks::matmul(Z, H, p.W2);
    Z.rowwise() += p.b2;
  }

  template <class S>
  static void accumulate_grad(const S* theta, int64_t f, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
    const View<const S> p(theta, f);
    View<S> g(grad, f);
    MatT<S> Z1 = X * p.W1;
    Z1.rowwise() += p.b1;
    MatT<S> X2 = Z1;
    blocks::gelu_into(X2.data(), X2.data(), size_t(X2.size()));
    MatT<S> d1 = dZ * p.W2.transpose();  // (n, 4f)
    MatT<S> gg(Z1.rows(), Z1.cols());
    blocks::gelu_bwd_ref_into(Z1.data(), gg.data(), size_t(Z1.size()));
    d1.array() *= gg.array();
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      g.W2.noalias() += (w[r] * X2.row(r)).transpose() * dZ.row(r);
      g.b2 += w[r] * dZ.row(r);
      g.W1.noalias() += (w[r] * X.row(r)).transpose() * d1.row(r);
      g.b1 += w[r] * d1.row(r);
    }
  }

  template <class S>
  struct Workspace {
    MatT<S> XKQ, Z1, X2, Z2, G1, G2, gprime, A, X2q, WG, WG2;
    MatT<S> Arow;  // decode_token's (1, b): its own, so that it and dual_form never resize each other's
  };

  /// Dual form: the linear recipe twice (see inner/linear.hpp), the second time on the hidden
  /// activations X2 = gelu(Z1) (keys) and X2q = gelu(Z1q) (queries). The keys' and the queries'
  /// first-layer products are one product of the stacked rows [XK; XQ] (W1 read once for both);
  /// the products with W1 and W2 go through blocks::rows_times (float: W read in place).
  template <class S>
  static void dual_form(const S* theta0, S* gacc, const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t n = s.XQ.rows(), f = s.XQ.cols(), h = expansion * f;
    const View<const S> p(theta0, f);
    View<S> g(gacc, f);
    for (MatT<S>* m : {&ws.X2, &ws.G1, &ws.gprime, &ws.X2q, &ws.WG}) ensure_size(*m, n, h);
    for (MatT<S>* m : {&ws.Z2, &ws.G2, &ws.WG2}) ensure_size(*m, n, f);
    ensure_size(ws.A, n, n);
    ensure_size(ws.Z1, 2 * n, h);
    stack_rows(s.XK, s.XQ, ws.XKQ);
    blocks::rows_times<S>(cv(ws.XKQ), cv(p.W1), mv(ws.Z1));  // rows 0..n-1: XK W1 (keys), n..2n-1: XQ W1 (queries)
    ws.Z1.rowwise() += p.b1;
    RefT<S> Z1k = mv(ws.Z1.topRows(n)), Z1q = mv(ws.Z1.bottomRows(n));
    // keys: forward and the inner-loss gradients at theta0
    blocks::gelu_into(Z1k.data(), ws.X2.data(), size_t(n * h));
    blocks::rows_times<S>(cv(ws.X2), cv(p.W2), mv(ws.Z2));
    ws.Z2.rowwise() += p.b2;
    blocks::ln_l2_grad_diff<S>(cv(ws.Z2), s.XV, s.XK, s.ln_w, s.ln_b, mv(ws.G2));
    blocks::gelu_bwd_ref_into(Z1k.data(), ws.gprime.data(), size_t(n * h));
    blocks::matmul(mv(ws.G1), cv(ws.G2), cv(p.W2).transpose());
    ws.G1.array() *= ws.gprime.array();
    // layer 1 on the queries
    blocks::causal_scores<S>(s.XQ, s.XK, s.token_eta, s.lr, S(1), mv(ws.A));
    blocks::causal_apply<S>(cv(ws.A), cv(ws.G1), Z1q);
    if (!s.fresh) {
      blocks::rows_times<S>(s.XQ, cv(g.W1), mv(ws.WG));
      ws.WG.rowwise() += g.b1;
      for (int64_t t = 0; t < n; ++t) Z1q.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    blocks::gelu_into(Z1q.data(), ws.X2q.data(), size_t(n * h));
    // layer 2
    blocks::causal_scores<S>(cv(ws.X2q), cv(ws.X2), s.token_eta, s.lr, S(1), mv(ws.A));
    blocks::rows_times<S>(cv(ws.X2q), cv(p.W2), Zq);
    Zq.rowwise() += p.b2;
    blocks::causal_apply<S>(cv(ws.A), cv(ws.G2), Zq);
    if (!s.fresh) {
      blocks::rows_times<S>(cv(ws.X2q), cv(g.W2), mv(ws.WG2));
      ws.WG2.rowwise() += g.b2;
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG2.row(t);
    }
    // accumulate the gscale- and lr-weighted gradients (float: the keys read transposed in place)
    for (int64_t t = 0; t < n; ++t) {
      ws.G1.row(t) *= s.gscale * s.lr[t];
      ws.G2.row(t) *= s.gscale * s.lr[t];
    }
    blocks::xt_times<S>(s.XK, cv(ws.G1), mv(g.W1), /*accumulate=*/true);
    g.b1 += ws.G1.colwise().sum();
    blocks::xt_times<S>(cv(ws.X2), cv(ws.G2), mv(g.W2), /*accumulate=*/true);
    g.b2 += ws.G2.colwise().sum();
  }

  /// Decode under plain GD, one token at a time (TTTLayer::row_decode): the mini-batch's
  /// gradients are kept as rows, one per token, instead of being summed into gacc (the layer
  /// moves them into gacc with add_rows when a longer chunk comes or its row buffer is full).
  /// A token's row is [xk (f), lr G1 (4f), X2 (4f), lr G2 (f)]: layer 1's gradient is xk^T lr G1,
  /// layer 2's X2^T lr G2. Per token that reads theta0 and the rows instead of reading and
  /// writing gacc (f x 4f twice), and the mini-batch's step is one rank-b update (add_rows).
  static int64_t token_row_size(int64_t f) { return 2 * f + 2 * expansion * f; }

  /// The rows of n tokens as the four (n, .) views of `rows`.
  template <class P>
  struct Rows {
    using S = std::remove_const_t<P>;
    using Map = Eigen::Map<std::conditional_t<std::is_const_v<P>, const MatT<S>, MatT<S>>, 0, Eigen::OuterStride<>>;
    Map K, G1, X2, G2;
    Rows(P* rows, int64_t n, int64_t f)
        : K(rows, n, f, Eigen::OuterStride<>(token_row_size(f))),
          G1(rows + f, n, expansion * f, Eigen::OuterStride<>(token_row_size(f))),
          X2(rows + (1 + expansion) * f, n, expansion * f, Eigen::OuterStride<>(token_row_size(f))),
          G2(rows + (1 + 2 * expansion) * f, n, f, Eigen::OuterStride<>(token_row_size(f))) {}
  };

  /// One token at position t of its mini-batch (s: one row; s.fresh when t == 0), `rows` with room
  /// for b tokens (t < b): writes its row t (rows 0 .. t-1: the mini-batch's earlier tokens) and
  /// Zq (1, f), what dual_form gives with gacc = the earlier rows' gradients (add_rows).
  template <class S>
  static void decode_token(const S* theta0, S* rows, int64_t t, int64_t b, Dims /*d: f is s's width*/,
                           const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t f = s.XQ.cols(), h = expansion * f;
    const View<const S> p(theta0, f);
    Rows<S> r(rows, t + 1, f);
    for (MatT<S>* m : {&ws.X2q, &ws.gprime}) ensure_size(*m, 1, h);
    for (MatT<S>* m : {&ws.Z2, &ws.G2}) ensure_size(*m, 1, f);
    ensure_size(ws.Arow, 1, b);  // its first t + 1 entries: the query against rows 0 .. t (no allocation per t)
    RefT<S> a = mv(ws.Arow.leftCols(t + 1));
    // row 0: the key's, row 1: the query's; two matrix-vector products reading W1 in place (as
    // one 2-row product Eigen's GEMM would copy W1 into its packed layout first, for every token)
    ensure_size(ws.Z1, 2, h);
    blocks::matmul(ws.Z1.row(0), s.XK, cv(p.W1));
    blocks::matmul(ws.Z1.row(1), s.XQ, cv(p.W1));
    ws.Z1.rowwise() += p.b1;
    // the key's forward and inner-loss gradients at theta0, into row t
    r.K.row(t) = s.XK;
    blocks::gelu_into(ws.Z1.data(), &r.X2(t, 0), size_t(h));
    blocks::matmul(mv(ws.Z2), cv(r.X2.row(t)), cv(p.W2));
    ws.Z2 += p.b2;
    blocks::ln_l2_grad_diff<S>(cv(ws.Z2), s.XV, s.XK, s.ln_w, s.ln_b, mv(ws.G2));
    blocks::gelu_bwd_ref_into(ws.Z1.data(), ws.gprime.data(), size_t(h));
    blocks::matmul(mv(r.G1.row(t)), cv(ws.G2), cv(p.W2).transpose());
    r.G1.row(t).array() *= s.lr[0] * ws.gprime.array();
    r.G2.row(t) = s.lr[0] * ws.G2;
    // the query through theta_t = theta0 - eta_t (gradients of rows 0 .. t), layer by layer
    const S eta = s.token_eta[0];
    RefT<S> Z1q = mv(ws.Z1.bottomRows(1));
    blocks::matmul(a, s.XQ, cv(r.K).transpose());
    a.array() = -eta * (a.array() + S(1));  // eta in the vector: a scaled operand makes Eigen copy it
    blocks::matmul(Z1q, cv(a), cv(r.G1), true);
    blocks::gelu_into(Z1q.data(), ws.X2q.data(), size_t(h));
    blocks::matmul(a, cv(ws.X2q), cv(r.X2).transpose());
    a.array() = -eta * (a.array() + S(1));
    blocks::matmul(Zq, cv(ws.X2q), cv(p.W2));
    Zq += p.b2;
    blocks::matmul(Zq, cv(a), cv(r.G2), true);
  }

  /// target += scale * (the gradients of n tokens' rows), laid out as theta: gacc += them
  /// (scale 1), or the mini-batch's step theta -= eta_b * them.
  template <class S>
  static void add_rows(const S* rows, int64_t n, S scale, S* target, int64_t f) {
    const Rows<const S> r(rows, n, f);
    View<S> g(target, f);
    blocks::matmul(mv(g.W1), cv(r.K).transpose(), cv(r.G1), true, scale);
    g.b1 += scale * r.G1.colwise().sum();
    blocks::matmul(mv(g.W2), cv(r.X2).transpose(), cv(r.G2), true, scale);
    g.b2 += scale * r.G2.colwise().sum();
  }

  /// Per token and head, seven f x 4f products of the dual form at 8f^2 FLOPs each: Z1 and Z2 on the
  /// keys, G1 = G2 W2^T, Z1q and Zq on the queries, the gradient accumulations gW1 and gW2; plus the
  /// attention-like products (XQ XK^T and its use with G1: 2bf + 8bf on average over a full
  /// mini-batch, the second layer's the same), GELUs and LayerNorms (~60f).
  static double flops_per_token(int64_t f, int64_t b) {
    const double F = double(f), B = double(b);
    return 56.0 * F * F + 2.0 * (2.0 * B * F + 8.0 * B * F) + 60.0 * F;
  }
};

}  // namespace ttt::inner

namespace ttt::train {

// ---- TTT-MLP: f(x) = gelu(x W1 + b1) W2 + b2 ---------------------------------------------------
template <>
struct LearnerGrad<inner::MLP> {
  // slots [0, kX2): the products' outputs, kept per mini-batch at scan_checkpoint_group 0;
  // from kX2 on: elementwise functions of them (`elementwise`) and the backward's own
  enum Slot : size_t { kZ1, kZ2, kG2, kM, kE, kK1, kK2, kZ1q, kX2, kT, kGp, kG1, kA, kX2q, kZq,
                       kdE, kdG2, kdG1, kdX2q, kdX2, kdZ1q, kdM, kdZ1, kdZ2, kdT, kGd, kBwd };
  static constexpr bool query_base = true;  // reads Segment::query_keep / query_shift
  static constexpr size_t kept_slots = kX2;  // run_forward's products (Scratch: kept forwards)
  static constexpr bool state_grad_in_place = true;  // backward's dth0 may be dth_end's buffer

  /// The queries' affine base of layer 1 and layer 2 (Segment::query_shift), and their
  /// cotangents when `o` is given.
  template <class S>
  static detail::QueryShift<S> shift1(const S* th, int64_t f, const Segment<S>& s, SegmentGrad<S>* o = nullptr) {
    const int64_t h = inner::MLP::expansion * f;
    S* d = o ? o->d_query_shift : nullptr;
    return {th + f * h, s.query_shift, detail::offset(s.query_shift, f * h), d, detail::offset(d, f * h)};
  }
  template <class S>
  static detail::QueryShift<S> shift2(const S* th, int64_t f, const Segment<S>& s, SegmentGrad<S>* o = nullptr) {
    const int64_t h = inner::MLP::expansion * f, k = f * h + h;
    S* d = o ? o->d_query_shift : nullptr;
    return {th + k + h * f, detail::offset(s.query_shift, k), detail::offset(s.query_shift, k + h * f),
            detail::offset(d, k), detail::offset(d, k + h * f)};
  }

  // The elementwise steps of the forward, shared by run_forward and elementwise (so the values a
  // kept forward's backward recomputes are the forward's, bit for bit); floats through the SIMD
  // kernels (one tanh per element).
  /// The keys' hidden activations X2 = gelu(Z1) and the inner gradient's gp = gelu_bwd(Z1).
  template <class S>
  static void keys_hidden(Scratch<S>& ws, Eigen::Index n, int64_t h) {
    const S* Z1 = ws(kZ1, n, h).data();
    blocks::gelu_into(Z1, ws(kX2, n, h).data(), size_t(n * h));
    blocks::gelu_bwd_ref_into(Z1, ws(kGp, n, h).data(), size_t(n * h));
  }
  /// The queries' hidden activations X2q = gelu(Z1q).
  template <class S>
  static void queries_hidden(Scratch<S>& ws, Eigen::Index n, int64_t h) {
    blocks::gelu_into(ws(kZ1q, n, h).data(), ws(kX2q, n, h).data(), size_t(n * h));
  }

  /// The intermediates that are elementwise functions of the kept ones (Z1, M, Z1q): X2, gp,
  /// T = XV - XK, G1 = M o gp, X2q; the backward of a kept forward recomputes them (cheap next to
  /// the products, and 4 (n x 4f) buffers less kept), and with them, from the same tanh, the
  /// derivatives the reverse needs (`derivatives`): X2, gp and X2q are keys_hidden's and
  /// queries_hidden's values bit for bit (the pair kernels compute the same expressions).
  template <class S>
  static void elementwise(const Segment<S>& s, Scratch<S>& ws, int64_t f, Eigen::Index n) {
    const int64_t h = inner::MLP::expansion * f;
    const size_t m = size_t(n * h);
    const S* Z1 = ws(kZ1, n, h).data();
    blocks::gelu_and_grad_into(Z1, ws(kX2, n, h).data(), ws(kGd, n, h).data(), m);
    blocks::gelu_bwd_ref_and_grad_into(Z1, ws(kGp, n, h).data(), ws(kdZ1, n, h).data(), m);
    ws(kT, n, f) = s.XV - s.XK;
    ws(kG1, n, h) = ws(kM, n, h).cwiseProduct(ws(kGp, n, h));
    blocks::gelu_and_grad_into(ws(kZ1q, n, h).data(), ws(kX2q, n, h).data(), ws(kdZ1q, n, h).data(), m);
  }
  /// The derivatives of the GELUs the reverse needs, after a recomputed forward: gelu'(Z1) (Gd),
  /// gelu_bwd'(Z1) (into dZ1) and gelu'(Z1q) (into dZ1q).
  template <class S>
  static void derivatives(Scratch<S>& ws, Eigen::Index n, int64_t h) {
    const size_t m = size_t(n * h);
    const S* Z1 = ws(kZ1, n, h).data();
    blocks::gelu_grad_into(Z1, ws(kGd, n, h).data(), m);
    blocks::gelu_bwd_ref_grad_into(Z1, ws(kdZ1, n, h).data(), m);
    blocks::gelu_grad_into(ws(kZ1q, n, h).data(), ws(kdZ1q, n, h).data(), m);
  }

  /// The forward of one mini-batch, every intermediate kept in its slot; Zq written unless
  /// `output` is false (the backward recomputes the intermediates and needs no Zq: that skips a
  /// query_base product and (E o K2) G, about a sixth of the recomputation).
  template <class S, class Z>
  static void run_forward(const S* th, int64_t f, const Segment<S>& s, Scratch<S>& ws, Z&& Zq, bool output = true) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W1(th, f, h);
    Eigen::Map<const RowT<S>> b1(th + f * h, h);
    Eigen::Map<const MatT<S>> W2(th + f * h + h, h, f);
    Eigen::Map<const RowT<S>> b2(th + 2 * f * h + h, f);
    auto Z1 = ws(kZ1, n, h), X2 = ws(kX2, n, h), Z2 = ws(kZ2, n, f), T = ws(kT, n, f), G2 = ws(kG2, n, f);
    auto gp = ws(kGp, n, h), M = ws(kM, n, h), G1 = ws(kG1, n, h), E = ws(kE, n, n), K1 = ws(kK1, n, n);
    auto K2 = ws(kK2, n, n), A = ws(kA, n, n), Z1q = ws(kZ1q, n, h), X2q = ws(kX2q, n, h);
    blocks::rows_times<S>(s.XK, W1, Z1);  // (n, 4f)
    Z1.rowwise() += b1;
    keys_hidden(ws, n, h);  // X2, gp
    blocks::rows_times<S>(X2, W2, Z2);  // (n, f)
    Z2.rowwise() += b2;
    T = s.XV - s.XK;
    blocks::ln_l2_grad(Z2, T, s.ln_w, s.ln_b, G2);
    blocks::matmul(M, G2, W2.transpose());
    G1 = M.cwiseProduct(gp);
    detail::eta_matrix(s, E);
    detail::kernel<S>(s.XQ, s.XK, K1);
    A = E.cwiseProduct(K1);
    detail::query_base<S>(s, s.XQ, W1, shift1(th, f, s), Z1q);
    blocks::causal_apply<S>(A, G1, Z1q);
    queries_hidden(ws, n, h);  // X2q
    detail::kernel<S>(X2q, X2, K2);
    if (!output) return;
    A = E.cwiseProduct(K2);
    detail::query_base<S>(s, X2q, W2, shift2(th, f, s), Zq);
    blocks::causal_apply<S>(A, G2, Zq);
  }

  template <class S>
  static void forward(const S* th, int64_t f, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    run_forward(th, f, s, ws, Zq);
    std::copy(th, th + 2 * f * h + h + f, th_end);
    // temporaries outside the kept slots (the backward reads M and T)
    detail::end_state<S>(s, s.XK, ws(kG1, n, h), th_end, th_end + f * h, ws(kdM, n, h));
    detail::end_state<S>(s, ws(kX2, n, h), ws(kG2, n, f), th_end + f * h + h, th_end + 2 * f * h + h,
                         ws(kdT, n, f));
  }

  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const int64_t h = inner::MLP::expansion * f;
    const Eigen::Index n = s.XQ.rows();
    if (ws.forward_kept()) {
      elementwise(s, ws, f, n);
    } else {
      run_forward(th, f, s, ws, ws(kZq, n, f), false);
      derivatives(ws, n, h);
    }
    Eigen::Map<const MatT<S>> W1(th, f, h);
    Eigen::Map<const MatT<S>> W2(th + f * h + h, h, f);
    S* dW1 = dth0;
    S* db1 = dth0 + f * h;
    S* dW2 = dth0 + f * h + h;
    S* db2 = dth0 + 2 * f * h + h;
    auto X2 = ws(kX2, n, h), Z2 = ws(kZ2, n, f), T = ws(kT, n, f), G2 = ws(kG2, n, f);
    auto gp = ws(kGp, n, h), M = ws(kM, n, h), G1 = ws(kG1, n, h), E = ws(kE, n, n), K1 = ws(kK1, n, n);
    auto K2 = ws(kK2, n, n), X2q = ws(kX2q, n, h);
    auto dE = ws.zero(kdE, n, n), dG2 = ws.zero(kdG2, n, f), dG1 = ws.zero(kdG1, n, h);
    auto dX2q = ws.zero(kdX2q, n, h), dX2 = ws.zero(kdX2, n, h);
    // layer 2 on the queries (and W2_end, b2_end)
    detail::dual_linear_bwd<S>(s, X2q, X2, G2, E, K2, W2, dth_end + f * h + h, dth_end + 2 * f * h + h, dZq, dW2, db2,
                               dX2q, dX2, dG2, dE, o, ws, kBwd, shift2(th, f, s, &o));
    auto dZ1q = ws(kdZ1q, n, h);  // holds gelu'(Z1q)
    dZ1q.array() *= dX2q.array();
    // layer 1 on the queries (and W1_end, b1_end)
    detail::dual_linear_bwd<S>(s, s.XQ, s.XK, G1, E, K1, W1, dth_end, dth_end + f * h, dZ1q, dW1, db1, o.dXQ, o.dXK,
                               dG1, dE, o, ws, kBwd, shift1(th, f, s, &o));
    detail::eta_matrix_bwd<S>(s, dE, o);
    // G1 = (G2 W2^T) o gelu_bwd(Z1)
    auto dM = ws(kdM, n, h);
    dM = dG1.cwiseProduct(gp);
    blocks::rows_times<S>(dM, W2, dG2, /*accumulate=*/true);
    blocks::xt_times<S>(dM, G2, mv(Eigen::Map<MatT<S>>(dW2, h, f)), /*accumulate=*/true);
    auto dZ1 = ws(kdZ1, n, h);  // holds gelu_bwd'(Z1)
    dZ1.array() *= dG1.array() * M.array();
    // G2 = ln_l2_grad(Z2, XV - XK)
    auto dZ2 = ws.zero(kdZ2, n, f), dT = ws.zero(kdT, n, f);
    blocks::ln_l2_grad_bwd(Z2, T, s.ln_w, s.ln_b, dG2, dZ2, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    // Z2 = X2 W2 + b2, X2 = gelu(Z1), Z1 = XK W1 + b1
    blocks::xt_times<S>(X2, dZ2, mv(Eigen::Map<MatT<S>>(dW2, h, f)), /*accumulate=*/true);
    Eigen::Map<RowT<S>>(db2, f) += dZ2.colwise().sum();
    blocks::matmul(dX2, dZ2, W2.transpose(), true);
    dZ1.array() += dX2.array() * ws(kGd, n, h).array();  // gelu'(Z1)
    blocks::xt_times<S>(s.XK, dZ1, mv(Eigen::Map<MatT<S>>(dW1, f, h)), /*accumulate=*/true);
    Eigen::Map<RowT<S>>(db1, h) += dZ1.colwise().sum();
    blocks::matmul(o.dXK, dZ1, W1.transpose(), true);
  }
};

}  // namespace ttt::train
