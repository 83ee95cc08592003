// Parity with lucidrains' simple-hierarchical-transformer 0.2.0 on the reference cases of
// ../shared/reference/simple-hierarchical-transformer: logits, hidden and token embeddings (1e-4),
// the loss and its three parts (1e-5, at least 1e-5 absolute), every grad.* tensor (1e-3), all as
// ||a - e|| / ||e||.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <ttt/models/hier/model.hpp>
#include <ttt/core/tensor.hpp>

using namespace ttt;
namespace test_parity {

namespace fs = std::filesystem;

double rel_err(const float* a, const float* e, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    num += (double(a[i]) - double(e[i])) * (double(a[i]) - double(e[i]));
    den += double(e[i]) * double(e[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

void check_case(const std::string& name) {
  const fs::path dir = fs::path(TTT_REFERENCE_DIR) / "simple-hierarchical-transformer" / name;
  INFO("case " << name);
  auto model = hier::HierarchicalTransformer::load(dir);
  const auto ex = io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  REQUIRE(shape.size() == 2);
  const int64_t B = shape[0], L = shape[1], V = model.cfg.num_tokens, H = model.cfg.num_hierarchies();
  const auto ids = ex.read_int("input_ids");
  std::vector<std::vector<int64_t>> batch;
  for (int64_t b = 0; b < B; ++b) batch.emplace_back(ids.begin() + b * L, ids.begin() + (b + 1) * L);

  // forward: logits and the per-hierarchy embeddings
  std::vector<float> logits;
  std::vector<std::vector<float>> tok(static_cast<size_t>(H)), hid(static_cast<size_t>(H));
  for (int64_t b = 0; b < B; ++b) {
    hier::HierarchicalTransformer::Extras x;
    const ttt::Mat lg = model.forward(batch[size_t(b)], &x);
    REQUIRE(lg.rows() == L);
    REQUIRE(lg.cols() == V);
    logits.insert(logits.end(), lg.data(), lg.data() + lg.size());
    for (int64_t h = 0; h < H; ++h) {
      tok[size_t(h)].insert(tok[size_t(h)].end(), x.token_embeds[size_t(h)].data(),
                            x.token_embeds[size_t(h)].data() + x.token_embeds[size_t(h)].size());
      hid[size_t(h)].insert(hid[size_t(h)].end(), x.hidden_embeds[size_t(h)].data(),
                            x.hidden_embeds[size_t(h)].data() + x.hidden_embeds[size_t(h)].size());
    }
  }
  const auto le = ex.read_float("logits", {B, L, V});
  const double lerr = rel_err(logits.data(), le.data(), le.size());
  MESSAGE(name << ": logits rel err " << lerr);
  CHECK(lerr <= 1e-4);
  for (int64_t h = 0; h < H; ++h) {
    const std::string hs = std::to_string(h);
    if (ex.contains("token_embeds." + hs)) {
      const auto e = ex.read_float("token_embeds." + hs);
      REQUIRE(e.size() == tok[size_t(h)].size());
      CHECK(rel_err(tok[size_t(h)].data(), e.data(), e.size()) <= 1e-4);
    }
    if (ex.contains("hidden_embeds." + hs)) {
      const auto e = ex.read_float("hidden_embeds." + hs);
      REQUIRE(e.size() == hid[size_t(h)].size());
      CHECK(rel_err(hid[size_t(h)].data(), e.data(), e.size()) <= 1e-4);
    }
  }

  // loss, its parts and the gradients
  hier::HierarchicalTransformer grad(model.cfg);
  const hier::Losses l = model.loss(batch, &grad);
  auto close = [&](const char* key, double a) {
    const double e = ex.read_float(key)[0];
    INFO(key << ": " << a << " vs " << e);
    CHECK(std::abs(a - e) <= 1e-5 * std::max(1.0, std::abs(e)));
  };
  close("loss", l.total);
  close("loss_ce", l.ce);
  close("loss_recon", l.recon);
  close("loss_ar", l.ar);
  double worst = 0;
  int n = 0;
  grad.visit_params([&](const ParamRef& p) {
    INFO("grad." << p.name);
    REQUIRE(ex.contains("grad." + p.name));
    const auto e = ex.read_float("grad." + p.name, p.shape);
    const double err = rel_err(p.data, e.data(), e.size());
    CHECK(err <= 1e-3);
    worst = std::max(worst, err);
    ++n;
  });
  int expected_grads = 0;
  for (const auto& k : ex.names()) expected_grads += k.rfind("grad.", 0) == 0;
  CHECK(n == expected_grads);
  MESSAGE(name << ": " << n << " gradients, worst rel err " << worst);
}

TEST_CASE("hier parity: flat_full") { check_case("flat_full"); }
TEST_CASE("hier parity: h12_local") { check_case("h12_local"); }
TEST_CASE("hier parity: h128_mixed") { check_case("h128_mixed"); }

}  // namespace test_parity
