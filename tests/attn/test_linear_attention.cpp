// Linear attention as TTT-Linear (ttt/inner/linear_attention.hpp): the TTT layer with the
// LinearAttention learner and a whole-sequence mini-batch computes explicit causal linear attention
//   Zq_t = eta_t sum_{s<=t} lr_s (q_t . k_s) v_s,   eta_t = max(1/(t+1) + token_idx[t], 0),
//   lr_s = ttt_base_lr * sigmoid(x_s . w_lr + b_lr) / head_dim.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <ttt/inner/linear_attention.hpp>
#include <ttt/layers/ttt_layer.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/model_grad.hpp>
#include <ttt/train/gradcheck.hpp>

using namespace ttt;
using LA = inner::LinearAttention;

namespace {

Mat randn(int64_t r, int64_t c, std::mt19937_64& rng, float s = 1.0f) {
  std::normal_distribution<float> nd(0.0f, s);
  Mat m(r, c);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

/// The specification, in double: explicit causal linear attention with per-query eta and per-key lr.
MatD linear_attention(const MatD& Q, const MatD& K, const MatD& V, const std::vector<double>& eta,
                      const std::vector<double>& lr) {
  MatD O = MatD::Zero(Q.rows(), V.cols());
  for (int64_t t = 0; t < Q.rows(); ++t)
    for (int64_t s = 0; s <= t; ++s) O.row(t) += eta[size_t(t)] * lr[size_t(s)] * Q.row(t).dot(K.row(s)) * V.row(s);
  return O;
}

double rel(const MatD& a, const MatD& b) { return (a - b).cwiseAbs().maxCoeff() / std::max(1e-12, b.cwiseAbs().maxCoeff()); }

}  // namespace

TEST_CASE("linear attention learner: dual form from W0 = 0 == explicit causal linear attention, in any chunking") {
  std::mt19937_64 rng(1);
  const int64_t n = 150, f = 8;  // > two 64-row sub-blocks
  const Mat Q = randn(n, f, rng), K = randn(n, f, rng), V = randn(n, f, rng);
  std::vector<float> eta(static_cast<size_t>(n)), lr(static_cast<size_t>(n)), lnw(static_cast<size_t>(f), 1.0f), lnb(static_cast<size_t>(f), 0.0f);
  std::vector<double> etad(static_cast<size_t>(n)), lrd(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    eta[size_t(t)] = 1.0f / float(t + 1) + 0.1f * float(t % 3);
    lr[size_t(t)] = 0.05f + 0.01f * float(t % 7);
    etad[size_t(t)] = eta[size_t(t)], lrd[size_t(t)] = lr[size_t(t)];
  }
  const MatD ref = linear_attention(Q.cast<double>(), K.cast<double>(), V.cast<double>(), etad, lrd);
  for (std::vector<int64_t> chunks : {std::vector<int64_t>{n}, {1, 149}, {63, 1, 86}, {64, 64, 22}, {100, 50}}) {
    std::vector<float> theta(size_t(f * f), 0.0f), gacc(size_t(f * f), 0.0f);
    Mat Z(n, f);
    LA::Workspace<float> ws;
    int64_t p = 0;
    for (int64_t c : chunks) {
      const inner::Segment<float> seg{CMatRef(Q.middleRows(p, c)), CMatRef(K.middleRows(p, c)), CMatRef(V.middleRows(p, c)),
                               eta.data() + p, lr.data() + p, lnw.data(), lnb.data(), p == 0};
      LA::dual_form(theta.data(), gacc.data(), seg, MatRef(Z.middleRows(p, c)), ws);
      p += c;
    }
    CHECK(rel(Z.cast<double>(), ref) < 1e-5);
  }
}

TEST_CASE("linear attention learner: dual form == the generic primal form (which honours the plain L2 loss)") {
  std::mt19937_64 rng(2);
  const int64_t n = 90, f = 6;
  const Mat Q = randn(n, f, rng), K = randn(n, f, rng), V = randn(n, f, rng);
  std::vector<float> eta(static_cast<size_t>(n)), lr(static_cast<size_t>(n)), lnw(static_cast<size_t>(f), 1.3f), lnb(static_cast<size_t>(f), 0.2f);
  for (int64_t t = 0; t < n; ++t) eta[size_t(t)] = 1.0f / float(t + 1), lr[size_t(t)] = 0.1f + 0.01f * float(t % 5);
  const Mat W0 = randn(f, f, rng, 0.3f), g0 = randn(f, f, rng, 0.1f);
  for (bool fresh : {true, false}) {
    std::vector<float> th(W0.data(), W0.data() + f * f), ga(size_t(f * f), 0.0f), gb = ga;
    if (!fresh) ga.assign(g0.data(), g0.data() + f * f), gb = ga;
    const inner::Segment<float> seg{CMatRef(Q), CMatRef(K), CMatRef(V), eta.data(), lr.data(), lnw.data(), lnb.data(), fresh};
    Mat Zd(n, f), Zp(n, f);
    LA::Workspace<float> wd;
    inner::PrimalWorkspace<float> wp;
    LA::dual_form(th.data(), ga.data(), seg, MatRef(Zd), wd);
    inner::primal_segment<inner::PrimalOnly<LA>, float>(th.data(), gb.data(), f, seg, Zp, wp);
    CHECK(rel(Zd.cast<double>(), Zp.cast<double>()) < 1e-5);
    CHECK(rel(CMapMat(ga.data(), f, f).cast<double>(), CMapMat(gb.data(), f, f).cast<double>()) < 1e-5);
  }
}

TEST_CASE("linear attention: the TTT layer with mini_batch_size = length computes linear attention (Zq), chunked or not") {
  std::mt19937_64 rng(3);
  const int64_t L = 100, C = 16, H = 2, f = C / H;
  ModelConfig c = ModelConfig::sized("linear_attention", 10, C, 1, H, 32, /*mini_batch=*/L);
  c.ttt_base_lr = 0.7;
  TTTLayer<LA> layer(c);
  std::mt19937_64 wr(4);
  layer.visit_params("", [&](const ParamRef& p) { init_param(p, wr); });
  layer.q *= 10.0f, layer.k *= 10.0f, layer.v *= 10.0f, layer.lr_w *= 20.0f;
  for (int64_t t = 0; t < L; ++t) layer.token_idx[t] = 0.02f * float(t % 4);  // learned offsets enter eta
  for (float x : layer.theta0) REQUIRE(x == 0.0f);                           // W0 = 0 from init
  const Mat X = randn(L, C, rng);
  for (std::vector<int64_t> chunks : {std::vector<int64_t>{L}, {37, 1, 62}, {64, 36}}) {
    auto st = layer.new_state();
    TTTLayer<LA>::Workspace ws;
    Mat out, Zq(L, C), XQ(L, C), XK(L, C), XV(L, C);
    int64_t p = 0;
    for (int64_t n : chunks) {
      layer.forward(X.middleRows(p, n), st, p, ws, out);
      Zq.middleRows(p, n) = ws.Zq;  // the inner output, before the layer's output LayerNorm
      XQ.middleRows(p, n) = ws.p.XQ, XK.middleRows(p, n) = ws.p.XK, XV.middleRows(p, n) = ws.p.XV;  // after RoPE
      p += n;
    }
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> eta(static_cast<size_t>(L)), lr(static_cast<size_t>(L));
      for (int64_t t = 0; t < L; ++t) {
        eta[size_t(t)] = std::max(1.0 / double(t + 1) + double(layer.token_idx[t]), 0.0);
        const double a = double(X.row(t).dot(layer.lr_w.row(h))) + double(layer.lr_b[h]);
        lr[size_t(t)] = c.ttt_base_lr / (1.0 + std::exp(-a)) / double(f);
      }
      const MatD ref = linear_attention(XQ.middleCols(h * f, f).cast<double>(), XK.middleCols(h * f, f).cast<double>(),
                                        XV.middleCols(h * f, f).cast<double>(), eta, lr);
      CHECK(rel(Zq.middleCols(h * f, f).cast<double>(), ref) < 1e-5);
    }
  }
}

TEST_CASE("linear attention: training backward (LearnerGrad) == float layer path, == finite differences") {
  for (int64_t n : {1, 9, 33}) {
    CAPTURE(n);
    const auto fw = train::check_learner_forward<LA>(6, n, 5);
    CAPTURE(fw.worst);
    CHECK(fw.max_err < 1e-5);
    const auto bw = train::check_learner_backward<LA>(6, n, 6);
    CAPTURE(bw.worst);
    CHECK(bw.max_err < 1e-6);
  }
}

TEST_CASE("linear attention model: decode == full forward; loss_and_grad's loss == forward's cross entropy") {
  const int64_t L = 40;
  ModelConfig c = ModelConfig::sized("linear_attention", 17, 16, 2, 2, 24, /*mini_batch=*/L);
  TTTModel<LA> m(c);
  m.init_weights(3);
  m.visit_params([&](const ParamRef& p) {
    if (p.init == ParamRef::Init::normal)
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) *= 10.0f;
  });
  std::mt19937_64 rng(8);
  std::vector<int64_t> ids(static_cast<size_t>(L));
  for (auto& t : ids) t = int64_t(rng() % 17);
  const Mat full = m.forward(ids);
  auto st = m.new_state();
  Mat last;
  double worst = 0;
  for (int64_t t = 0; t < L; ++t) {
    m.forward(st, std::span(ids).subspan(size_t(t), 1), &last, Logits::last);
    worst = std::max(worst, rel(last.cast<double>(), full.row(t).cast<double>()));
  }
  CHECK(worst < 1e-4);
  TTTModel<LA> g(c);
  const double loss = train::loss_and_grad(m, {ids}, g);
  double ce = 0;
  for (int64_t t = 0; t + 1 < L; ++t) {
    const double mx = full.row(t).maxCoeff();
    ce += mx + std::log((full.row(t).array() - float(mx)).exp().sum()) - full(t, ids[size_t(t + 1)]);
  }
  CHECK(std::abs(loss - ce / double(L - 1)) < 1e-4 * std::max(1.0, loss));
  double gn = 0;
  g.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) gn += double(p.at(i)) * double(p.at(i));
  });
  CHECK(gn > 0);
  CHECK(std::isfinite(gn));
}
