// loss_and_grad as an API: the gradient model is overwritten (not accumulated into), a batch is
// the position-weighted mean of its sequences, sequences shorter than a mini-batch or of length 1
// are fine, and misuse is refused.
#include <doctest/doctest.h>

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

TEST_CASE("loss_and_grad: batches, overwriting, misuse (Linear)") { check_api<inner::Linear>("linear"); }
TEST_CASE("loss_and_grad: batches, overwriting, misuse (MLP)") { check_api<inner::MLP>("mlp"); }

}  // namespace test_api
