// Scan checkpointing (inner states kept every G mini-batches, the rest recomputed in the reverse
// pass; G = 1: every state, each mini-batch's inner forward recomputed) and block recomputation
// give the same gradients as keeping everything, and keep less;
// and LayerGrad (one TTT layer's forward/backward, for other networks) against finite
// differences in double, against the layer's own forward, and float against double.
#include <doctest/doctest.h>

#include <random>
#include <ttt/train/model_grad.hpp>

#include "test_helpers.hpp"

using namespace ttt;

namespace test_scan_checkpoint {

template <class L>
std::vector<float> flat(TTTModel<L>& m) {
  std::vector<float> v;
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) v.push_back(p.at(i));
  });
  return v;
}

template <class L>
void check_groups(const std::string& type) {
  ModelConfig cfg = ModelConfig::sized(type, 31, 16, 2, 2, 24, 4);
  cfg.pre_conv = true;
  cfg.use_gate = true;
  TTTModel<L> model(cfg);
  th::randomize(model, 9, 0.3);
  // 7 mini-batches + 2 and 3 mini-batches: groups that do and don't divide the count
  const std::vector<std::vector<int64_t>> batch = {th::random_ids(30, cfg.vocab_size, 1),
                                                   th::random_ids(12, cfg.vocab_size, 2)};
  TTTModel<L> g0(cfg), g(cfg);
  train::ModelGrad<TTTModel<L>> keep_all({.scan_checkpoint_group = 0});
  const double l0 = keep_all(model, batch, g0);
  const auto v0 = flat(g0);
  const int64_t tape0 = keep_all.tape_bytes();
  for (int64_t G : {1, 2, 3, 8}) {  // 8 >= every sequence's mini-batch count: one checkpoint
    INFO("G = " << G);
    train::ModelGrad<TTTModel<L>> run({.scan_checkpoint_group = G});
    CHECK(run(model, batch, g) == l0);
    CHECK(flat(g) == v0);  // the recomputed forward is the same arithmetic: bit for bit
    // MLP: G = 0 also keeps each mini-batch's inner forward (train::Scratch), which G >= 1 recomputes
    if (G > 2 || type == "mlp") CHECK(run.tape_bytes() < tape0);
  }
  {  // the config key is the default
    ModelConfig c3 = cfg;
    c3.scan_checkpoint_group_size = 3;
    TTTModel<L> m3(c3), g3(c3);
    m3.visit_params([&, src = flat(model), i = size_t(0)](const ParamRef& p) mutable {
      for (int64_t k = 0; k < p.numel(); ++k) p.at(k) = src[i++];
    });
    train::ModelGrad<TTTModel<L>> run;
    CHECK(run(m3, batch, g3) == l0);
    CHECK(flat(g3) == v0);
  }
  {  // one block's activations at a time
    train::ModelGrad<TTTModel<L>> run({.scan_checkpoint_group = 2, .recompute_blocks = true});
    CHECK(run(model, batch, g) == l0);
    CHECK(flat(g) == v0);
    CHECK(run.tape_bytes() < tape0);
  }
}

/// <R, Y(X)> for LayerGrad<L, double>.
template <class L>
double layer_objective(const TTTLayer<L>& layer, const MatD& X, const MatD& R) {
  train::LayerGrad<L, double> op(layer);
  MatD Y;
  op.forward(X, Y);
  return (Y.array() * R.array()).sum();
}

template <class L>
void check_layer_grad(const std::string& type) {
  ModelConfig cfg = ModelConfig::sized(type, 31, 16, 1, 2, 24, 4);
  cfg.share_qk = true;
  cfg.use_gate = true;
  TTTModel<L> model(cfg);
  th::randomize(model, 4, 0.3);
  model.blocks[0].mixer.token_idx[1] = -0.7f;  // clamped
  TTTLayer<L>& layer = model.blocks[0].mixer;
  const int64_t n = 11, C = cfg.hidden_size;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> nd(0.0, 1.0);
  MatD X(n, C), R(n, C);
  for (Eigen::Index i = 0; i < X.size(); ++i) X.data()[i] = nd(rng), R.data()[i] = nd(rng);
  // forward: the layer's own float forward from a fresh state
  {
    const Mat Xf = X.cast<float>();
    auto st = layer.new_state();
    typename TTTLayer<L>::Workspace ws;
    Mat want, got;
    layer.forward(Xf, st, 0, ws, want);
    train::LayerGrad<L> op(layer);
    op.forward(Xf, got);
    CHECK(th::rel_err(got, want) < 1e-5);
  }
  // backward (double) against central differences; grads ADD into the gradient layer
  TTTLayer<L> grad(cfg);
  train::zero_grad(grad);
  train::LayerGrad<L, double> op(layer, /*scan_checkpoint_group=*/2);
  MatD Y, dX;
  op.forward(X, Y);
  op.backward(R, dX, grad);
  const double h = 1e-5;
  double worst = 0;
  for (Eigen::Index i = 0; i < X.size(); i += 7) {
    const double x0 = X.data()[i];
    X.data()[i] = x0 + h;
    const double fp = layer_objective(layer, X, R);
    X.data()[i] = x0 - h;
    const double fm = layer_objective(layer, X, R);
    X.data()[i] = x0;
    worst = std::max(worst, std::abs(dX.data()[i] - (fp - fm) / (2 * h)) / std::max(std::abs((fp - fm) / (2 * h)), 1e-2));
  }
  // parameters: a few coordinates of each (in float storage, so a larger step)
  TTTLayer<L> grad_copy = grad;
  int checked = 0;
  grad_copy.visit_params("", [&](const ParamRef& gp) {
    ParamRef wp;
    layer.visit_params("", [&](const ParamRef& p) {
      if (p.name == gp.name) wp = p;
    });
    for (int64_t k = 0; k < gp.numel(); k += std::max<int64_t>(1, gp.numel() / 3)) {
      const float w0 = wp.at(k);
      const double hs = 1e-3;
      wp.at(k) = float(w0 + hs);
      const double fp = layer_objective(layer, X, R);
      wp.at(k) = float(w0 - hs);
      const double fm = layer_objective(layer, X, R);
      wp.at(k) = w0;
      const double fd = (fp - fm) / (double(float(w0 + hs)) - double(float(w0 - hs)));
      const double e = std::abs(double(gp.at(k)) - fd) / std::max(std::abs(fd), 1e-1);
      if (e > 1e-3) MESSAGE(gp.name << "[" << k << "]: analytic " << gp.at(k) << ", fd " << fd);
      worst = std::max(worst, e);
      ++checked;
    }
  });
  MESSAGE(type << ": LayerGrad max error against finite differences " << worst << " over " << checked
               << " parameter coordinates and X");
  CHECK(worst < 1e-3);
  CHECK(grad.token_idx[1] == 0.0f);
  // ADDS: a second backward doubles the gradient
  op.backward(R, dX, grad);
  CHECK(std::abs(grad.q(1, 2) - 2 * grad_copy.q(1, 2)) <= 1e-6f * std::abs(grad_copy.q(1, 2)) + 1e-12f);
  // float against double
  TTTLayer<L> gf(cfg);
  train::zero_grad(gf);
  train::LayerGrad<L> opf(layer);
  Mat Yf, dXf;
  opf.forward(X.cast<float>(), Yf);
  opf.backward(R.cast<float>(), dXf, gf);
  CHECK(th::rel_err(dXf, dX.cast<float>()) < 1e-4);
  CHECK(th::rel_err(gf.theta0.data(), grad_copy.theta0.data(), gf.theta0.size()) < 1e-4);
  // misuse
  train::LayerGrad<L> fresh(layer);
  CHECK_THROWS(fresh.backward(R.cast<float>(), dXf, gf));
  CHECK_THROWS_AS(opf.forward(Mat::Zero(3, C + 1), Yf), ShapeError);
  CHECK_THROWS_AS(opf.backward(Mat::Zero(n + 1, C), dXf, gf), ShapeError);
}

TEST_CASE("scan checkpoint groups and block recomputation: same gradients (Linear)") {
  check_groups<inner::Linear>("linear");
}
TEST_CASE("scan checkpoint groups and block recomputation: same gradients (MLP)") { check_groups<inner::MLP>("mlp"); }
TEST_CASE("LayerGrad: forward, backward against finite differences, float vs double (Linear)") {
  check_layer_grad<inner::Linear>("linear");
}
TEST_CASE("LayerGrad: forward, backward against finite differences, float vs double (MLP)") {
  check_layer_grad<inner::MLP>("mlp");
}

}  // namespace test_scan_checkpoint
