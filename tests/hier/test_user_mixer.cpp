// A learner of the user's own in the hierarchical model's TTT mixer slot: a learner that exists
// only in this file (f(x) = tanh(x W), its map written once) is named by the config
// ("ttt-tanh_linear-momentum") once the model is HierarchicalTransformerT<T, Learners> with
// Learners holding it. Config errors list it; the loss gradient matches central
// finite differences in double; cached decoding equals the full forward; a checkpoint round trip
// keeps it. (Training it in float: the ttt-custom tool's hier test, examples/custom_learner.)
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <unistd.h>

#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/model.hpp>

#include "randomize.hpp"

using namespace ttt;

namespace test_user_mixer {

struct TanhLinear {  // f(x) = tanh(x W)
  static constexpr std::string_view name = "tanh_linear";
  static std::vector<inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }
  template <class S>
  static void apply(const S* theta, int64_t f, CRefT<S> X, RefT<S> Z) {
    using std::tanh;
    Z.noalias() = X * Eigen::Map<const MatT<S>>(theta, f, f);
    for (Eigen::Index i = 0; i < Z.size(); ++i) Z.data()[i] = tanh(Z.data()[i]);
  }
};

// The learners this program's mixers may name: TTT-Linear and the user's (a program usually appends
// its learners to inner::Builtin; two keep this file's build short).
using Mine = std::tuple<inner::Linear, TanhLinear>;
template <class T>
using HT = hier::HierarchicalTransformerT<T, Mine>;

// TTT-tanh with momentum at 2x (2 phases), TTT-Linear at 1x: the user's learner beside a built-in one.
const char* kJson = R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2,
    "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [null, null],
    "mixer": ["ttt-linear", "ttt-tanh_linear-momentum"], "ttt_mini_batch_size": 3})";

hier::HierConfig config() { return hier::HierConfig::from_json<Mine>(nlohmann::json::parse(kJson)); }

using hier_test::randomize;

std::vector<int64_t> tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(1, vocab - 1);
  std::vector<int64_t> out;
  for (int64_t t = 0; t < n; ++t) out.push_back(tok(rng));
  return out;
}

TEST_CASE("hier user mixer: the config names the user's learner; errors list it") {
  const auto j = nlohmann::json::parse(kJson);
  // a program that knows only the built-in learners rejects it, naming the valid mixers
  CHECK_THROWS_WITH_AS(hier::HierConfig::from_json(j), doctest::Contains("valid: attention, ttt-linear"), ConfigError);
  const hier::HierConfig c = config();
  CHECK_THROWS_WITH_AS(hier::HierarchicalTransformer{c}, doctest::Contains("mixer 'ttt-tanh_linear-momentum'"),
                       ConfigError);
  // one that knows it lists it among the valid ones
  auto bad = j;
  bad["mixer"] = {"attention", "ttt-tanh"};
  CHECK_THROWS_WITH_AS(hier::HierConfig::from_json<Mine>(bad), doctest::Contains("valid: attention, ttt-linear, ttt-tanh_linear,"),
                       ConfigError);
  const HT<double> m(c);
  CHECK(std::holds_alternative<TTTLayer<TanhLinear, double>>(m.layers[0][1].ttt_layer));
  CHECK(m.ttt_config(1).ttt_layer_type == "tanh_linear");
  CHECK(m.ttt_config(1).ttt_inner_optimizer == "momentum");
}

TEST_CASE("hier user mixer: gradients match central finite differences in double") {
  const hier::HierConfig cfg = config();
  HT<double> m(cfg), g(cfg);
  randomize(m, 42);
  const std::vector<std::vector<int64_t>> batch = {tokens(14, cfg.num_tokens, 9)};
  CHECK(std::isfinite(m.loss(batch, &g).total));
  auto fd_at = [&](double& x, double h) {
    const double x0 = x;
    x = x0 + h;
    const double lp = m.loss(batch).total;
    x = x0 - h;
    const double lm = m.loss(batch).total;
    x = x0;
    return (lp - lm) / (2 * h);
  };
  std::mt19937_64 rng(3);
  int checked = 0;
  // every TTT tensor of both mixers, two entries each (the user's learner's W1 included)
  std::vector<BasicParamRef<double>> gt;
  g.visit_ttt([&](const auto& p) { gt.push_back(p); });
  size_t i = 0;
  m.visit_ttt([&](const auto& p) {
    const auto& gp = gt[i++];
    std::uniform_int_distribution<int64_t> pick(0, p.numel() - 1);
    for (int r = 0; r < 2; ++r) {
      const int64_t k = pick(rng);
      const double fd = fd_at(p.at(k), 1e-5), an = gp.at(k);
      INFO(p.name << "[" << k << "]: analytic " << an << ", finite difference " << fd);
      CHECK(std::abs(fd - an) <= 1e-7 + 1e-5 * std::abs(fd));
      ++checked;
    }
  });
  // the mixers' LayerNorms and the embedding (the gradient that flows back through the TTT layers)
  std::vector<ad::Matrix<double>*> gs;
  g.visit([&](const std::string&, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) {
    gs.push_back(&x);
  });
  i = 0;
  m.visit([&](const std::string& name, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) {
    ad::Matrix<double>& gx = *gs[i++];
    if (name.find("attn.norm") == std::string::npos && name != "token_emb.weight") return;
    std::uniform_int_distribution<Eigen::Index> pick(0, x.size() - 1);
    const Eigen::Index k = pick(rng);
    const double fd = fd_at(x.data()[k], 1e-5), an = gx.data()[k];
    INFO(name << "[" << k << "]: analytic " << an << ", finite difference " << fd);
    CHECK(std::abs(fd - an) <= 1e-7 + 1e-5 * std::abs(fd));
    ++checked;
  });
  CHECK(checked > 10);
}

TEST_CASE("hier user mixer: cached decoding equals the full forward") {
  const hier::HierConfig cfg = config();
  HT<double> m(cfg);
  randomize(m, 4);
  const std::vector<int64_t> ids = tokens(23, cfg.num_tokens, 5);
  const ad::Matrix<double> full = m.forward(ids);
  hier::Decoder<double, Mine> dec(m);
  for (size_t t = 0; t < ids.size(); ++t) {
    const ad::Matrix<double> l = dec.step(ids[t]);
    INFO("position " << t);
    CHECK((l.row(0) - full.row(Eigen::Index(t))).norm() <= 1e-10 * full.row(Eigen::Index(t)).norm());
  }
  hier::Decoder<double, Mine> pre(m);
  const ad::Matrix<double> last = pre.prefill(std::span<const int64_t>(ids.data(), 11));
  CHECK((last.row(0) - full.row(10)).norm() <= 1e-10 * full.row(10).norm());
}

TEST_CASE("hier user mixer: save / load keeps it") {
  const hier::HierConfig cfg = config();
  HT<double> m(cfg);
  randomize(m, 1);
  const std::vector<int64_t> ids = tokens(15, cfg.num_tokens, 3);
  const auto dir = std::filesystem::temp_directory_path() / ("ttt_hier_user_mixer_" + std::to_string(::getpid()));
  m.save(dir);
  const HT<double> r = HT<double>::load(dir);
  CHECK(r.cfg.mixer == cfg.mixer);
  CHECK(std::holds_alternative<TTTLayer<TanhLinear, double>>(r.layers[0][1].ttt_layer));
  const ad::Matrix<double> a = m.forward(ids), b = r.forward(ids);
  CHECK((a - b).norm() <= 1e-5 * a.norm());  // the checkpoint holds F32
  // the built-in-only model cannot load it, and says which mixer
  CHECK_THROWS_WITH_AS(hier::HierarchicalTransformer::load(dir), doctest::Contains("ttt-tanh_linear-momentum"), ConfigError);
  std::filesystem::remove_all(dir);
}

}  // namespace test_user_mixer
