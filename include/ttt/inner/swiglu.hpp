#pragma once
/// \file inner/swiglu.hpp
/// SwiGLU fast weights (LaCT, "Test-Time Training Done Right"): f(x) = (silu(x W1) * (x W3)) W2
/// per head, no biases (W1, W3: [f, h], W2: [h, f]); the hidden width h is config.json's
/// ttt_hidden_size (default 4f, as TTT-MLP's). Initialised N(0, 1/sqrt(fan-in)), a unit-scale map,
/// rather than TTT's N(0, 0.02): the map multiplies two such numbers, and at 0.02 its inner
/// gradients are too small for the inner steps to matter (on the copy task of
/// tests/train/test_optimizers.cpp a model so initialised stayed at 2.36 nats after 200 steps,
/// against 0.77 at std ~0.18). Trained, like every learner, on TTT's inner loss (LayerNorm of f(k)
/// against the residual target v - k). Its map is written once, generically;
/// `accumulate_grad` is a hand-written fast path for the inner gradient (tested against the
/// derived one); `dual_form` is the inference fast path under TTT's update (tested against the
/// primal form, inner/primal.hpp); below it, `train::LearnerGrad<SwiGLU>` is the hand-written
/// training forward / reverse (tested against the derived one, inner/derived.hpp).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../blocks/activations.hpp"
#include "../blocks/causal.hpp"
#include "../blocks/linear.hpp"
#include "../blocks/ln_l2.hpp"
#include "learner.hpp"
#include "learner_grad.hpp"

namespace ttt::inner {

struct SwiGLU {
  static constexpr std::string_view name = "swiglu";
  static constexpr bool fuses_gd_step = true;  // dual_form honours Segment::gscale, writes gacc last

  static int64_t hidden(Dims d) { return d.hidden > 0 ? d.hidden : 4 * d.f; }

  static std::vector<ParamSpec> param_specs(Dims d) {
    const int64_t f = d.f, h = hidden(d);
    return {{"W1", {f, h}, ParamSpec::Init::normal_fan_in},
            {"W3", {f, h}, ParamSpec::Init::normal_fan_in},
            {"W2", {h, f}, ParamSpec::Init::normal_fan_in}};
  }

  template <class S>
  static void apply(const S* theta, Dims d, CRefT<S> X, RefT<S> Z) {
    const int64_t f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta, f, h), W3(theta + f * h, f, h), W2(theta + 2 * f * h, h, f);
    MatT<S> A = X * W1;
    const MatT<S> B = X * W3;
    blocks::silu_gate_into<S>(A.data(), B.data(), nullptr, A.data(), size_t(A.size()));  // silu(A) B, in place
    blocks::matmul(Z, A, W2);
  }

  /// grad += sum_r w[r] d<dZ[r], f(X[r])>/dtheta:  with a = x W1, b = x W3, s = sigmoid(a),
  /// g = silu(a) b:  dW2 += g^T dz;  dg = dz W2^T;  dW1 += x^T (dg b s (1 + a (1 - s)));  dW3 += x^T (dg silu(a)).
  template <class S>
  static void accumulate_grad(const S* theta, Dims d, CRefT<S> X, CRefT<S> dZ, const S* w, S* grad) {
    const int64_t f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta, f, h), W3(theta + f * h, f, h), W2(theta + 2 * f * h, h, f);
    Eigen::Map<MatT<S>> g1(grad, f, h), g3(grad + f * h, f, h), g2(grad + 2 * f * h, h, f);
    const MatT<S> A = X * W1, B = X * W3;
    MatT<S> Gt(A.rows(), h), dA(A.rows(), h), dB(A.rows(), h);
    const MatT<S> dG = dZ * W2.transpose();
    blocks::silu_gate_into<S>(A.data(), B.data(), dB.data(), Gt.data(), size_t(A.size()));  // dB: sigmoid(a)
    for (Eigen::Index i = 0; i < A.size(); ++i) {
      const S a = A.data()[i], b = B.data()[i], s = dB.data()[i];
      dA.data()[i] = dG.data()[i] * b * s * (S(1) + a * (S(1) - s));
      dB.data()[i] = dG.data()[i] * (a * s);
    }
    for (Eigen::Index r = 0; r < X.rows(); ++r) {
      g2.noalias() += (w[r] * Gt.row(r)).transpose() * dZ.row(r);
      g1.noalias() += (w[r] * X.row(r)).transpose() * dA.row(r);
      g3.noalias() += (w[r] * X.row(r)).transpose() * dB.row(r);
    }
  }

  template <class S>
  struct Workspace {
    MatT<S> XKQ, A, B, H, Z, G, dA, dB, K, Hq, WG, WG2;  // A, B: keys' rows, then queries'
    MatT<S> Arow;  // decode_token's (1, b): its own, so that it and dual_form never resize each other's
  };

  /// Dual form (as TTT-MLP's, inner/mlp.hpp, with no biases and two first-layer maps): every key's
  /// gradient at theta0, then for the queries, with M = tril(eta_t lr_s XQ[t].XK[s]),
  ///   Aq = XQ W1 - M dA,  Bq = XQ W3 - M dB,  Hq = silu(Aq) * Bq,
  ///   Zq = Hq W2 - tril(eta_t lr_s Hq[t].H[s]) G
  /// (minus eta_t times the carried gradient's share when the segment starts mid-mini-batch), then
  /// gacc += gscale (XK^T diag(lr) dA, XK^T diag(lr) dB, H^T diag(lr) G) (after the last read of
  /// theta0: see fuses_gd_step).
  template <class S>
  static void dual_form(const S* theta0, S* gacc, Dims d, const Segment<S>& s, RefT<S> Zq, Workspace<S>& ws) {
    const int64_t n = s.XQ.rows(), f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta0, f, h), W3(theta0 + f * h, f, h), W2(theta0 + 2 * f * h, h, f);
    Eigen::Map<MatT<S>> g1(gacc, f, h), g3(gacc + f * h, f, h), g2(gacc + 2 * f * h, h, f);
    for (MatT<S>* m : {&ws.H, &ws.dA, &ws.dB, &ws.Hq, &ws.WG}) ensure_size(*m, n, h);
    for (MatT<S>* m : {&ws.A, &ws.B}) ensure_size(*m, 2 * n, h);
    for (MatT<S>* m : {&ws.Z, &ws.G, &ws.WG2}) ensure_size(*m, n, f);
    ensure_size(ws.K, n, n);
    // the keys' and the queries' first-layer products, each one product of the stacked rows
    // [XK; XQ] (one pass over W1 and one over W3 for both)
    stack_rows(s.XK, s.XQ, ws.XKQ);
    blocks::rows_times<S>(cv(ws.XKQ), cv(W1), mv(ws.A));
    blocks::rows_times<S>(cv(ws.XKQ), cv(W3), mv(ws.B));
    RefT<S> Aq = mv(ws.A.bottomRows(n)), Bq = mv(ws.B.bottomRows(n));
    // keys: forward and the inner-loss gradient at theta0
    blocks::silu_gate_into(ws.A.data(), ws.B.data(), ws.dB.data(), ws.H.data(), size_t(n * h));  // dB: sigmoid(a)
    for (int64_t i = 0; i < n * h; ++i) {
      const S a = ws.A.data()[i], sg = ws.dB.data()[i];
      ws.dA.data()[i] = ws.B.data()[i] * sg * (S(1) + a * (S(1) - sg));  // b silu'(a)
      ws.dB.data()[i] = a * sg;                                          // silu(a), times dH below
    }
    blocks::rows_times<S>(cv(ws.H), cv(W2), mv(ws.Z));
    blocks::ln_l2_grad_diff<S>(cv(ws.Z), s.XV, s.XK, s.ln_w, s.ln_b, mv(ws.G));
    blocks::matmul(ws.WG, cv(ws.G), W2.transpose());  // dH
    ws.dA.array() *= ws.WG.array();
    ws.dB.array() *= ws.WG.array();
    // the queries' hidden layer
    blocks::causal_scores<S>(s.XQ, s.XK, s.token_eta, s.lr, S(0), mv(ws.K));
    blocks::causal_apply<S>(cv(ws.K), cv(ws.dA), Aq);
    blocks::causal_apply<S>(cv(ws.K), cv(ws.dB), Bq);
    if (!s.fresh) {
      blocks::rows_times<S>(s.XQ, cv(g1), mv(ws.WG));
      for (int64_t t = 0; t < n; ++t) Aq.row(t) -= s.token_eta[t] * ws.WG.row(t);
      blocks::rows_times<S>(s.XQ, cv(g3), mv(ws.WG));
      for (int64_t t = 0; t < n; ++t) Bq.row(t) -= s.token_eta[t] * ws.WG.row(t);
    }
    blocks::silu_gate_into<S>(Aq.data(), Bq.data(), nullptr, ws.Hq.data(), size_t(n * h));
    // the output layer
    blocks::causal_scores<S>(cv(ws.Hq), cv(ws.H), s.token_eta, s.lr, S(0), mv(ws.K));
    blocks::rows_times<S>(cv(ws.Hq), cv(W2), Zq);
    blocks::causal_apply<S>(cv(ws.K), cv(ws.G), Zq);
    if (!s.fresh) {
      blocks::rows_times<S>(cv(ws.Hq), cv(g2), mv(ws.WG2));
      for (int64_t t = 0; t < n; ++t) Zq.row(t) -= s.token_eta[t] * ws.WG2.row(t);
    }
    // accumulate the lr-weighted gradients
    for (int64_t t = 0; t < n; ++t) {
      const S c = s.gscale * s.lr[t];
      ws.dA.row(t) *= c;
      ws.dB.row(t) *= c;
      ws.G.row(t) *= c;
    }
    blocks::xt_times<S>(s.XK, cv(ws.dA), mv(g1), /*accumulate=*/true);
    blocks::xt_times<S>(s.XK, cv(ws.dB), mv(g3), /*accumulate=*/true);
    blocks::xt_times<S>(cv(ws.H), cv(ws.G), mv(g2), /*accumulate=*/true);
  }

  /// Decode under plain GD, one token at a time (TTTLayer::row_decode; as TTT-MLP's, inner/mlp.hpp):
  /// a token's row is [xk (f), lr dA (h), lr dB (h), H (h), lr G (f)], its gradient
  /// (xk^T lr dA, xk^T lr dB, H^T lr G). Per token that reads theta0 (3fh) and the rows instead of
  /// reading and writing gacc (3fh more).
  static int64_t token_row_size(Dims d) { return 2 * d.f + 3 * hidden(d); }

  /// The rows of n tokens as the five (n, .) views of `rows`.
  template <class P>
  struct Rows {
    using S = std::remove_const_t<P>;
    using Map = Eigen::Map<std::conditional_t<std::is_const_v<P>, const MatT<S>, MatT<S>>, 0, Eigen::OuterStride<>>;
    Map K, DA, DB, H, G;
    Rows(P* rows, int64_t n, Dims d)
        : K(rows, n, d.f, Eigen::OuterStride<>(token_row_size(d))),
          DA(rows + d.f, n, hidden(d), Eigen::OuterStride<>(token_row_size(d))),
          DB(rows + d.f + hidden(d), n, hidden(d), Eigen::OuterStride<>(token_row_size(d))),
          H(rows + d.f + 2 * hidden(d), n, hidden(d), Eigen::OuterStride<>(token_row_size(d))),
          G(rows + d.f + 3 * hidden(d), n, d.f, Eigen::OuterStride<>(token_row_size(d))) {}
  };

  /// One token at position t of its mini-batch (s: one row; s.fresh when t == 0), `rows` with room
  /// for b tokens (t < b): writes its row t (rows 0 .. t-1: the mini-batch's earlier tokens) and
  /// Zq (1, f), what dual_form gives with gacc = the earlier rows' gradients (add_rows). Its
  /// buffers have dual_form's shapes at one token, but for its own Arow.
  template <class S>
  static void decode_token(const S* theta0, S* rows, int64_t t, int64_t b, Dims d, const Segment<S>& s, RefT<S> Zq,
                           Workspace<S>& ws) {
    const int64_t f = d.f, h = hidden(d);
    const Eigen::Map<const MatT<S>> W1(theta0, f, h), W3(theta0 + f * h, f, h), W2(theta0 + 2 * f * h, h, f);
    Rows<S> r(rows, t + 1, d);
    for (MatT<S>* m : {&ws.A, &ws.B}) ensure_size(*m, 2, h);
    for (MatT<S>* m : {&ws.Hq, &ws.WG}) ensure_size(*m, 1, h);
    for (MatT<S>* m : {&ws.Z, &ws.G}) ensure_size(*m, 1, f);
    ensure_size(ws.Arow, 1, b);  // its first t + 1 entries: the query against rows 0 .. t
    RefT<S> a = mv(ws.Arow.leftCols(t + 1));
    // row 0: the key's, row 1: the query's; matrix-vector products reading W1 and W3 in place
    // (see MLP::decode_token)
    blocks::matmul(ws.A.row(0), s.XK, cv(W1));
    blocks::matmul(ws.A.row(1), s.XQ, cv(W1));
    blocks::matmul(ws.B.row(0), s.XK, cv(W3));
    blocks::matmul(ws.B.row(1), s.XQ, cv(W3));
    // the key's forward and inner-loss gradients at theta0, into row t
    r.K.row(t) = s.XK;
    blocks::silu_gate_into(&ws.A(0, 0), &ws.B(0, 0), &r.DB(t, 0), &r.H(t, 0), size_t(h));  // DB: sigmoid(a)
    for (int64_t i = 0; i < h; ++i) {
      const S x = ws.A(0, i), sg = r.DB(t, i);
      r.DA(t, i) = ws.B(0, i) * sg * (S(1) + x * (S(1) - sg));  // b silu'(a)
      r.DB(t, i) = x * sg;                                      // silu(a), times lr dH below
    }
    blocks::matmul(mv(ws.Z), cv(r.H.row(t)), cv(W2));
    blocks::ln_l2_grad_diff<S>(cv(ws.Z), s.XV, s.XK, s.ln_w, s.ln_b, mv(ws.G));
    blocks::matmul(mv(ws.WG), cv(ws.G), cv(W2).transpose());  // dH
    ws.WG *= s.lr[0];
    r.DA.row(t).array() *= ws.WG.array();
    r.DB.row(t).array() *= ws.WG.array();
    r.G.row(t) = s.lr[0] * ws.G;
    // the query through theta_t = theta0 - eta_t (gradients of rows 0 .. t), layer by layer
    const S eta = s.token_eta[0];
    RefT<S> Aq = mv(ws.A.bottomRows(1)), Bq = mv(ws.B.bottomRows(1));
    blocks::matmul(a, s.XQ, cv(r.K).transpose());
    a *= -eta;  // eta in the vector: a scaled operand makes Eigen copy it
    blocks::matmul(Aq, cv(a), cv(r.DA), true);
    blocks::matmul(Bq, cv(a), cv(r.DB), true);
    blocks::silu_gate_into<S>(Aq.data(), Bq.data(), nullptr, ws.Hq.data(), size_t(h));
    blocks::matmul(a, cv(ws.Hq), cv(r.H).transpose());
    a *= -eta;
    blocks::matmul(Zq, cv(ws.Hq), cv(W2));
    blocks::matmul(Zq, cv(a), cv(r.G), true);
  }

  /// target += scale * (the gradients of n tokens' rows), laid out as theta: gacc += them
  /// (scale 1), or the mini-batch's step theta -= eta_b * them.
  template <class S>
  static void add_rows(const S* rows, int64_t n, S scale, S* target, Dims d) {
    const Rows<const S> r(rows, n, d);
    const int64_t f = d.f, h = hidden(d);
    Eigen::Map<MatT<S>> g1(target, f, h), g3(target + f * h, f, h), g2(target + 2 * f * h, h, f);
    blocks::matmul(g1, cv(r.K).transpose(), cv(r.DA), true, scale);
    blocks::matmul(g3, cv(r.K).transpose(), cv(r.DB), true, scale);
    blocks::matmul(g2, cv(r.H).transpose(), cv(r.G), true, scale);
  }

  /// Per token and head, the dual form's ten f x h products at 2fh FLOPs each (A, B, Z, dH on the
  /// keys; Aq, Bq, Zq on the queries; the three gradient accumulations), its attention-like
  /// products computed in full over a mini-batch of b (XQ XK^T and Hq H^T with the two uses of
  /// each: 4bf + 6bh), the SiLUs and LayerNorms (~20h).
  static double flops_per_token(Dims d, int64_t b) {
    const double F = double(d.f), Hd = double(hidden(d)), B = double(b);
    return 20.0 * F * Hd + 4.0 * B * F + 6.0 * B * Hd + 20.0 * Hd;
  }
};

}  // namespace ttt::inner

namespace ttt::train {

// ---- SwiGLU: f(x) = (silu(x W1) * (x W3)) W2, no biases -----------------------------------------
// The dual form of inner::SwiGLU::dual_form, every intermediate kept. With E(t, j) = eta_t lr_j
// (j <= t), s = sigmoid, silu'(a) = s (1 + a (1 - s)):
//   keys:    A = XK W1, B = XK W3, H = silu(A) B, Z = H W2, G = ln_l2_grad(Z, XV - XK),
//            M = G W2^T (dH), GA = M B silu'(A) (dA), GB = M silu(A) (dB);
//            grad_s = (XK[s]^T GA[s], XK[s]^T GB[s], H[s]^T G[s])
//   queries: K1 = XQ XK^T (no bias: no +1), Aq = XQ W1 - (E o K1) GA, Bq = XQ W3 - (E o K1) GB,
//            Hq = silu(Aq) Bq, K2 = Hq H^T, Zq = Hq W2 - (E o K2) G
//   end:     W1_end = W1 - e XK^T diag(lr) GA, W3_end = W3 - e XK^T diag(lr) GB,
//            W2_end = W2 - e H^T diag(lr) G,  e = eta_{n-1}
// The reverse runs `detail::dual_linear_bwd` three times (W2 on (Hq, H, G); W1 and W3 on (XQ, XK,
// GA / GB)) with a zero bias cotangent (its bias terms then vanish: K carries no +1), then the keys'
// chain, second-order terms included.
template <>
struct LearnerGrad<inner::SwiGLU> {
  // slots [0, kSg): the products' outputs (and G, E), kept per mini-batch at scan_checkpoint_group
  // 0; from kSg on: elementwise functions of them (`elementwise`) and the backward's own
  enum Slot : size_t { kA, kB, kZ, kG, kM, kE, kK1, kK2, kAq, kBq, kSg, kH, kT, kGA, kGB, kHq, kSgq, kEK, kZq,
                       kGl, kdE, kdG, kdGA, kdGB, kdHq, kdH, kdAq, kdBq, kdM, kdA, kdB, kdZ, kdT, kZero, kJunk,
                       kBwd };
  static constexpr bool query_base = true;  // reads Segment::query_keep / query_shift
  static constexpr size_t kept_slots = kSg;  // run_forward's products (Scratch: kept forwards)
  static constexpr bool state_grad_in_place = true;  // backward's dth0 may be dth_end's buffer

  // The elementwise steps of the forward, shared by run_forward and elementwise (so the values a
  // kept forward's backward recomputes are the forward's, bit for bit).
  /// Sg = sigmoid(A), H = silu(A) o B.
  template <class S, class Mat>
  static void keys_hidden(const Mat& A, const Mat& B, Mat& Sg, Mat& H) {
    blocks::silu_gate_into<S>(A.data(), B.data(), Sg.data(), H.data(), size_t(A.size()));
  }
  /// GA = M o B o silu'(A), GB = M o silu(A).
  template <class S, class Mat>
  static void hidden_grads(const Mat& A, const Mat& B, const Mat& Sg, const Mat& M, Mat& GA, Mat& GB) {
    for (Eigen::Index i = 0; i < A.size(); ++i) {
      const S a = A.data()[i], sg = Sg.data()[i], m = M.data()[i];
      GA.data()[i] = m * B.data()[i] * sg * (S(1) + a * (S(1) - sg));
      GB.data()[i] = m * a * sg;
    }
  }
  /// Sgq = sigmoid(Aq) (for the reverse; not written when null), Hq = silu(Aq) o Bq.
  template <class S, class Mat>
  static void queries_hidden(const Mat& Aq, const Mat& Bq, S* Sgq, Mat& Hq) {
    blocks::silu_gate_into<S>(Aq.data(), Bq.data(), Sgq, Hq.data(), size_t(Aq.size()));
  }

  /// The intermediates that are elementwise functions of the kept ones (A, B, M, Aq, Bq): Sg, H,
  /// T = XV - XK, GA, GB, Sgq, Hq; the backward of a kept forward recomputes them (cheap next to the
  /// products, and 5 (n x hidden) buffers less kept per mini-batch).
  template <class S>
  static void elementwise(inner::Dims d, const Segment<S>& s, Scratch<S>& ws, Eigen::Index n) {
    const int64_t f = d.f, h = inner::SwiGLU::hidden(d);
    auto A = ws(kA, n, h), B = ws(kB, n, h), M = ws(kM, n, h), Aq = ws(kAq, n, h), Bq = ws(kBq, n, h);
    auto Sg = ws(kSg, n, h), H = ws(kH, n, h), T = ws(kT, n, f), GA = ws(kGA, n, h), GB = ws(kGB, n, h);
    auto Sgq = ws(kSgq, n, h), Hq = ws(kHq, n, h);
    keys_hidden<S>(A, B, Sg, H);
    T = s.XV - s.XK;
    hidden_grads<S>(A, B, Sg, M, GA, GB);
    queries_hidden<S>(Aq, Bq, Sgq.data(), Hq);
  }

  /// The queries' affine base of the map at offset k of theta (Segment::query_shift; no biases),
  /// and its cotangent when `o` is given.
  template <class S>
  static detail::QueryShift<S> shift(inner::Dims, const Segment<S>& s, int64_t k, SegmentGrad<S>* o = nullptr) {
    return {nullptr, detail::offset(s.query_shift, k), nullptr, o ? detail::offset(o->d_query_shift, k) : nullptr,
            nullptr};
  }

  /// The forward of one mini-batch, every intermediate kept in its slot; Zq written unless
  /// `output` is false (the backward's recomputation, which needs K2 but not Zq).
  template <class S, class Z>
  static void run_forward(const S* th, inner::Dims d, const Segment<S>& s, Scratch<S>& ws, Z&& Zq, bool output = true) {
    const int64_t f = d.f, h = inner::SwiGLU::hidden(d);
    const Eigen::Index n = s.XQ.rows();
    Eigen::Map<const MatT<S>> W1(th, f, h), W3(th + f * h, f, h), W2(th + 2 * f * h, h, f);
    auto A = ws(kA, n, h), B = ws(kB, n, h), Sg = ws(kSg, n, h), H = ws(kH, n, h), Zk = ws(kZ, n, f);
    auto T = ws(kT, n, f), G = ws(kG, n, f), M = ws(kM, n, h), GA = ws(kGA, n, h), GB = ws(kGB, n, h);
    auto E = ws(kE, n, n), K1 = ws(kK1, n, n), K2 = ws(kK2, n, n), EK = ws(kEK, n, n);
    auto Aq = ws(kAq, n, h), Bq = ws(kBq, n, h), Sgq = ws(kSgq, n, h), Hq = ws(kHq, n, h);
    // keys: A = XK W1, B = XK W3, Sg = sigmoid(A), H = silu(A) B, Z = H W2, G = ln_l2_grad(Z, XV - XK)
    // (float: the products with W read in place, blocks::rows_times)
    blocks::rows_times<S>(s.XK, W1, A);
    blocks::rows_times<S>(s.XK, W3, B);
    keys_hidden<S>(A, B, Sg, H);
    blocks::rows_times<S>(H, W2, Zk);
    T = s.XV - s.XK;
    blocks::ln_l2_grad(Zk, T, s.ln_w, s.ln_b, G);
    // M = G W2^T, GA = M B silu'(A), GB = M silu(A)
    blocks::matmul(M, G, W2.transpose());
    hidden_grads<S>(A, B, Sg, M, GA, GB);
    // the queries' hidden layer: Aq = XQ W1 - (E o K1) GA, Bq = XQ W3 - (E o K1) GB, Hq = silu(Aq) Bq
    detail::eta_matrix(s, E);
    blocks::matmul(K1, s.XQ, s.XK.transpose());
    EK = E.cwiseProduct(K1);
    detail::query_base<S>(s, s.XQ, W1, shift(d, s, 0), Aq);
    blocks::causal_apply<S>(EK, GA, Aq);
    detail::query_base<S>(s, s.XQ, W3, shift(d, s, f * h), Bq);
    blocks::causal_apply<S>(EK, GB, Bq);
    queries_hidden<S>(Aq, Bq, output ? nullptr : Sgq.data(), Hq);  // Sgq: the reverse's, not the forward's
    // the output layer: Zq = Hq W2 - (E o K2) G, K2 = Hq H^T
    blocks::matmul(K2, Hq, H.transpose());
    if (!output) return;
    EK = E.cwiseProduct(K2);
    detail::query_base<S>(s, Hq, W2, shift(d, s, 2 * f * h), Zq);
    blocks::causal_apply<S>(EK, G, Zq);
  }

  template <class S>
  static void forward(const S* th, inner::Dims d, const Segment<S>& s, RefT<S> Zq, S* th_end, Scratch<S>& ws) {
    const int64_t f = d.f, h = inner::SwiGLU::hidden(d);
    const Eigen::Index n = s.XQ.rows();
    run_forward(th, d, s, ws, Zq);
    std::copy(th, th + 3 * f * h, th_end);
    detail::end_state<S>(s, s.XK, ws(kGA, n, h), th_end, nullptr, ws(kGl, n, h));
    detail::end_state<S>(s, s.XK, ws(kGB, n, h), th_end + f * h, nullptr, ws(kGl, n, h));
    detail::end_state<S>(s, ws(kH, n, h), ws(kG, n, f), th_end + 2 * f * h, nullptr, ws(kGl, n, f));
  }

  template <class S>
  static void backward(const S* th, inner::Dims d, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const int64_t f = d.f, h = inner::SwiGLU::hidden(d);
    const Eigen::Index n = s.XQ.rows();
    if (ws.forward_kept()) elementwise(d, s, ws, n);
    else run_forward(th, d, s, ws, ws(kZq, n, f), false);
    Eigen::Map<const MatT<S>> W1(th, f, h), W3(th + f * h, f, h), W2(th + 2 * f * h, h, f);
    S* dW1_ = dth0;
    S* dW3_ = dth0 + f * h;
    S* dW2_ = dth0 + 2 * f * h;
    Eigen::Map<MatT<S>> dW1(dW1_, f, h), dW3(dW3_, f, h), dW2(dW2_, h, f);
    auto A = ws(kA, n, h), B = ws(kB, n, h), Sg = ws(kSg, n, h), H = ws(kH, n, h), Zk = ws(kZ, n, f);
    auto T = ws(kT, n, f), G = ws(kG, n, f), M = ws(kM, n, h), GA = ws(kGA, n, h), GB = ws(kGB, n, h);
    auto E = ws(kE, n, n), K1 = ws(kK1, n, n), K2 = ws(kK2, n, n);
    auto Aq = ws(kAq, n, h), Bq = ws(kBq, n, h), Sgq = ws(kSgq, n, h), Hq = ws(kHq, n, h);
    auto dE = ws.zero(kdE, n, n), dG = ws.zero(kdG, n, f), dGA = ws.zero(kdGA, n, h), dGB = ws.zero(kdGB, n, h);
    auto dHq = ws.zero(kdHq, n, h), dH = ws.zero(kdH, n, h);
    // no biases: a zero bias cotangent in, the bias cotangent out discarded
    const auto zero = ws.zero(kZero, 1, std::max(f, h));
    auto junk = ws(kJunk, 1, std::max(f, h));
    // the output layer on the queries (and W2_end)
    detail::dual_linear_bwd<S>(s, Hq, H, G, E, K2, W2, dth_end + 2 * f * h, zero.data(), dZq, dW2_, junk.data(), dHq,
                               dH, dG, dE, o, ws, kBwd, shift(d, s, 2 * f * h, &o));
    // Hq = silu(Aq) Bq:  dAq = dHq Bq silu'(Aq),  dBq = dHq silu(Aq)
    auto dAq = ws(kdAq, n, h), dBq = ws(kdBq, n, h);
    for (Eigen::Index i = 0; i < n * h; ++i) {
      const S a = Aq.data()[i], sg = Sgq.data()[i], g = dHq.data()[i];
      dAq.data()[i] = g * Bq.data()[i] * sg * (S(1) + a * (S(1) - sg));
      dBq.data()[i] = g * a * sg;
    }
    // the hidden layer on the queries, both maps (and W1_end, W3_end)
    detail::dual_linear_bwd<S>(s, s.XQ, s.XK, GA, E, K1, W1, dth_end, zero.data(), dAq, dW1_, junk.data(), o.dXQ,
                               o.dXK, dGA, dE, o, ws, kBwd, shift(d, s, 0, &o));
    detail::dual_linear_bwd<S>(s, s.XQ, s.XK, GB, E, K1, W3, dth_end + f * h, zero.data(), dBq, dW3_, junk.data(),
                               o.dXQ, o.dXK, dGB, dE, o, ws, kBwd, shift(d, s, f * h, &o));
    detail::eta_matrix_bwd<S>(s, dE, o);
    // GA = M B silu'(A), GB = M silu(A), with silu''(a) = s (1 - s) (2 + a (1 - 2 s)):
    //   dM = dGA B silu'(A) + dGB silu(A),  dB = dGA M silu'(A),
    //   dA = dGA M B silu''(A) + dGB M silu'(A)
    auto dM = ws(kdM, n, h), dA = ws(kdA, n, h), dB = ws(kdB, n, h);
    for (Eigen::Index i = 0; i < n * h; ++i) {
      const S a = A.data()[i], sg = Sg.data()[i], b = B.data()[i], m = M.data()[i];
      const S ga = dGA.data()[i], gb = dGB.data()[i];
      const S si = a * sg, sp = sg * (S(1) + a * (S(1) - sg)), spp = sg * (S(1) - sg) * (S(2) + a * (S(1) - S(2) * sg));
      dM.data()[i] = ga * b * sp + gb * si;
      dB.data()[i] = ga * m * sp;
      dA.data()[i] = ga * m * b * spp + gb * m * sp;
    }
    // M = G W2^T
    blocks::rows_times<S>(dM, W2, dG, /*accumulate=*/true);
    blocks::xt_times<S>(dM, G, mv(dW2), /*accumulate=*/true);
    // G = ln_l2_grad(Z, T), T = XV - XK
    auto dZ = ws.zero(kdZ, n, f), dT = ws.zero(kdT, n, f);
    blocks::ln_l2_grad_bwd(Zk, T, s.ln_w, s.ln_b, dG, dZ, dT, o.d_ln_w, o.d_ln_b);
    o.dXV += dT;
    o.dXK -= dT;
    // Z = H W2
    blocks::xt_times<S>(H, dZ, mv(dW2), /*accumulate=*/true);
    blocks::matmul(dH, dZ, W2.transpose(), true);
    // H = silu(A) B:  dA += dH B silu'(A),  dB += dH silu(A)
    for (Eigen::Index i = 0; i < n * h; ++i) {
      const S a = A.data()[i], sg = Sg.data()[i], g = dH.data()[i];
      dA.data()[i] += g * B.data()[i] * sg * (S(1) + a * (S(1) - sg));
      dB.data()[i] += g * a * sg;
    }
    // A = XK W1, B = XK W3
    blocks::xt_times<S>(s.XK, dA, mv(dW1), /*accumulate=*/true);
    blocks::xt_times<S>(s.XK, dB, mv(dW3), /*accumulate=*/true);
    blocks::matmul(o.dXK, dA, W1.transpose(), true);
    blocks::matmul(o.dXK, dB, W3.transpose(), true);
  }
};

}  // namespace ttt::train
