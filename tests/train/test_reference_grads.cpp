// Gradients of the loss against every ttt-lm-pytorch reference case: every grad.{name} tensor at
// relative error <= 1e-3 (||a - e|| / ||e||), the loss at 1e-5 (the reference README's tolerances).
#include <doctest/doctest.h>

#include <algorithm>
#include <ttt/train/model_grad.hpp>

#include "test_helpers.hpp"

using namespace ttt;
namespace test_reference_grads {

namespace fs = std::filesystem;

template <class Lrn>
void check_case(const fs::path& dir) {
  INFO("case " << dir.string());
  auto model = load_checkpoint<TTTModel<Lrn>>(dir);
  const auto ex = io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  REQUIRE(shape.size() == 2);
  const int64_t B = shape[0], L = shape[1];
  const auto ids = ex.read_int("input_ids");
  std::vector<std::vector<int64_t>> batch;
  for (int64_t b = 0; b < B; ++b) batch.emplace_back(ids.begin() + b * L, ids.begin() + (b + 1) * L);
  TTTModel<Lrn> grad(model.cfg);
  const double loss = train::loss_and_grad(model, batch, grad);
  const double loss_exp = ex.read_float("loss")[0];
  CHECK(std::abs(loss - loss_exp) <= 1e-5 * std::max(1.0, std::abs(loss_exp)));
  double worst = 0;
  std::string worst_name;
  int n = 0;
  grad.visit_params([&](const ParamRef& p) {
    INFO("grad." << p.name);
    REQUIRE(ex.contains("grad." + p.name));
    const auto e = ex.read_float("grad." + p.name, p.shape);
    std::vector<float> a(size_t(p.numel()));
    p.copy_out(a.data());
    const double err = th::rel_err(a.data(), e.data(), a.size());
    CHECK(err <= 1e-3);
    if (err > worst) worst = err, worst_name = p.name;
    ++n;
  });
  MESSAGE(dir.filename().string() << ": " << n << " gradients, loss |diff| " << std::abs(loss - loss_exp)
                                  << ", worst relative error " << worst << " (" << worst_name << ")");
}

TEST_CASE("gradients of every ttt-lm-pytorch reference case") {
  const fs::path root = th::reference_dir() / "ttt-lm-pytorch";
  if (!fs::exists(root)) {
    MESSAGE("reference directory " << root.string() << " not found: skipped");
    return;
  }
  int cases = 0;
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(root))
    if (fs::exists(entry.path() / "expected.safetensors")) dirs.push_back(entry.path());
  std::sort(dirs.begin(), dirs.end());
  for (const auto& d : dirs) {
    const ModelConfig cfg = load_checkpoint_config(d);
    if (cfg.ttt_layer_type == "linear") check_case<inner::Linear>(d);
    else if (cfg.ttt_layer_type == "mlp") check_case<inner::MLP>(d);
    else FAIL("unknown ttt_layer_type " << cfg.ttt_layer_type);
    ++cases;
  }
  CHECK(cases >= 3);
}

}  // namespace test_reference_grads
