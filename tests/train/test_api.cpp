// loss_and_grad as an API: the gradient model is overwritten (not accumulated into), a batch is
// the position-weighted mean of its sequences, sequences shorter than a mini-batch or of length 1
// are fine, and misuse is refused.
#include <doctest/doctest.h>

#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

#include "test_helpers.hpp"

using namespace ttt;

namespace test_api {

template <class L>
std::vector<double> flat(TTTModel<L>& m) {
  std::vector<double> v;
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) v.push_back(double(p.at(i)));
  });
  return v;
}

template <class L>
void check_api(const std::string& type) {
  ModelConfig cfg = ModelConfig::sized(type, 29, 16, 2, 2, 24, 4);
  cfg.pre_conv = true;
  TTTModel<L> model(cfg);
  th::randomize(model, 5, 0.3);
  const auto a = th::random_ids(10, cfg.vocab_size, 1), b = th::random_ids(3, cfg.vocab_size, 2),
             c = std::vector<int64_t>{4};  // no next-token position: contributes nothing
  TTTModel<L> g_ab(cfg), g_a(cfg), g_b(cfg);
  const double l_ab = train::loss_and_grad(model, {a, b, c}, g_ab);
  const double l_a = train::loss_and_grad(model, {a}, g_a);
  const double l_b = train::loss_and_grad(model, {b}, g_b);
  CHECK(std::abs(l_ab - (9 * l_a + 2 * l_b) / 11) < 1e-12 * std::abs(l_ab) + 1e-12);
  // the loss is the float model's loss
  {
    const Mat lg = model.forward(std::span<const int64_t>(a));
    double s = 0;
    for (int64_t t = 0; t + 1 < 10; ++t) {
      const auto row = lg.row(t).cast<double>();
      const double mx = row.maxCoeff();
      s += mx + std::log((row.array() - mx).exp().sum()) - row(a[size_t(t + 1)]);
    }
    CHECK(std::abs(l_a - s / 9) < 1e-5 * std::abs(l_a));
  }
  const auto vab = flat(g_ab), va = flat(g_a), vb = flat(g_b);
  std::vector<double> mix(va.size());
  for (size_t i = 0; i < va.size(); ++i) mix[i] = (9 * va[i] + 2 * vb[i]) / 11;
  CHECK(th::rel_err(vab.data(), mix.data(), mix.size()) < 1e-6);
  // overwritten, not accumulated; deterministic
  const double again = train::loss_and_grad(model, {a, b, c}, g_ab);
  CHECK(again == l_ab);
  CHECK(flat(g_ab) == vab);
  // misuse
  ModelConfig other = cfg;
  other.hidden_size = 32;
  TTTModel<L> wrong(other);
  CHECK_THROWS_AS(train::loss_and_grad(model, {a}, wrong), ShapeError);
  CHECK_THROWS_AS(train::loss_and_grad(model, {c}, g_a), ShapeError);
  CHECK_THROWS_AS(train::loss_and_grad(model, {}, g_a), ShapeError);
  CHECK_THROWS_AS(train::loss_and_grad(model, {{1, 2, 29}}, g_a), ShapeError);
}

/// Targets given: the next ids reproduce the plain form exactly; masked targets (-1) count
/// nothing, the loss is the mean over the counted ones (against the forward's logits) and the
/// gradient matches central differences of that loss in double; misuse is refused.
template <class Model>
void check_targets(const typename Model::Config& cfg) {
  using Batch = std::vector<std::vector<int64_t>>;
  Model model(cfg);
  th::randomize(model, 11, 0.3);
  const int64_t V = cfg.vocab_size;
  const Batch batch = {th::random_ids(12, V, 3), th::random_ids(7, V, 4)};
  Batch next, masked;
  for (const auto& s : batch) {
    next.emplace_back(s.begin() + 1, s.end());
    masked.push_back(next.back());
    for (size_t t = 0; t < masked.back().size(); ++t)
      if (t % 3 != 2) masked.back()[t] = -1;  // every third position counts
  }
  masked[1][0] = (batch[1][3] + 5) % V;       // a target other than the next id
  Model g_plain(cfg), g_next(cfg), g_mask(cfg);
  const double l_plain = train::loss_and_grad(model, batch, g_plain);
  CHECK(train::loss_and_grad(model, batch, next, g_next) == l_plain);
  std::vector<double> vp, vn;
  g_plain.visit_params([&](const auto& p) { for (int64_t i = 0; i < p.numel(); ++i) vp.push_back(double(p.at(i))); });
  g_next.visit_params([&](const auto& p) { for (int64_t i = 0; i < p.numel(); ++i) vn.push_back(double(p.at(i))); });
  CHECK(vp == vn);
  // the masked loss against the forward's logits
  const double l_mask = train::loss_and_grad(model, batch, masked, g_mask);
  double s = 0, n = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Mat lg = model.forward(std::span<const int64_t>(batch[i]));
    for (size_t t = 0; t < masked[i].size(); ++t) {
      if (masked[i][t] < 0) continue;
      const auto row = lg.row(Eigen::Index(t)).template cast<double>();
      const double mx = row.maxCoeff();
      s += mx + std::log((row.array() - mx).exp().sum()) - row(masked[i][t]), n += 1;
    }
  }
  CHECK(std::abs(l_mask - s / n) < 1e-5 * std::abs(l_mask));
  // central differences of the masked loss, in double
  auto dm = train::cast_model<double>(model);
  using D = decltype(dm);
  D dg(cfg), scratch(cfg);
  train::loss_and_grad(dm, batch, masked, dg);
  std::vector<BasicParamRef<double>> ps, gs;
  dm.visit_params([&](const BasicParamRef<double>& p) { ps.push_back(p); });
  dg.visit_params([&](const BasicParamRef<double>& p) { gs.push_back(p); });
  int checked = 0;
  for (size_t k = 0; k < ps.size(); ++k) {
    int64_t best = 0;
    for (int64_t i = 0; i < gs[k].numel(); ++i)
      if (std::abs(gs[k].at(i)) > std::abs(gs[k].at(best))) best = i;
    double& x = ps[k].at(best);
    const double x0 = x, h = 1e-6;
    x = x0 + h;
    const double lp = train::loss_and_grad(dm, batch, masked, scratch);
    x = x0 - h;
    const double lm = train::loss_and_grad(dm, batch, masked, scratch);
    x = x0;
    const double fd = (lp - lm) / (2 * h);
    INFO(ps[k].name << " analytic " << gs[k].at(best) << " fd " << fd);
    CHECK(std::abs(gs[k].at(best) - fd) <= 1e-5 * std::max(std::abs(fd), 1e-3));
    ++checked;
  }
  CHECK(checked > 5);
  // misuse: rows, lengths, ids outside the vocabulary, nothing counted
  CHECK_THROWS_AS(train::loss_and_grad(model, batch, Batch{next[0]}, g_mask), ShapeError);
  Batch short_row = next;
  short_row[1].pop_back();
  CHECK_THROWS_AS(train::loss_and_grad(model, batch, short_row, g_mask), ShapeError);
  Batch big = next;
  big[0][2] = V;
  CHECK_THROWS_AS(train::loss_and_grad(model, batch, big, g_mask), ShapeError);
  Batch none = next;
  for (auto& r : none) std::fill(r.begin(), r.end(), -1);
  CHECK_THROWS_AS(train::loss_and_grad(model, batch, none, g_mask), ShapeError);
}

TEST_CASE("loss_and_grad with targets: next ids, masks (-1), finite differences, misuse") {
  ModelConfig cfg = ModelConfig::sized("linear", 23, 16, 2, 2, 24, 4);
  cfg.pre_conv = cfg.use_gate = true;
  SUBCASE("TTT-Linear") { check_targets<TTTModel<inner::Linear>>(cfg); }
  SUBCASE("TTT-MLP") {
    cfg.ttt_layer_type = "mlp";
    check_targets<TTTModel<inner::MLP>>(cfg);
  }
  SUBCASE("attention") {
    ModelConfig c = ModelConfig::sized("linear", 23, 16, 2, 2, 24, 4);
    check_targets<TransformerModel>(AttnConfig(c, -1));
  }
}

TEST_CASE("loss_and_grad: batches, overwriting, misuse (Linear)") { check_api<inner::Linear>("linear"); }
TEST_CASE("loss_and_grad: batches, overwriting, misuse (MLP)") { check_api<inner::MLP>("mlp"); }

}  // namespace test_api
