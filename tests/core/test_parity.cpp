// Parity with the official ttt-lm-pytorch: every case under ../shared/reference/ttt-lm-pytorch
// (logits, hidden states, decode logits, loss), at the tolerances of its README.
#include <doctest/doctest.h>

#include "test_helpers.hpp"

using namespace ttt;
namespace test_parity {

namespace fs = std::filesystem;

/// Mean next-token cross entropy (position t predicts t+1), in double.
double next_token_loss(const std::vector<Mat>& logits, const std::vector<int64_t>& ids, int64_t L) {
  double sum = 0;
  int64_t cnt = 0;
  for (size_t b = 0; b < logits.size(); ++b)
    for (int64_t t = 0; t + 1 < L; ++t) {
      const auto row = logits[b].row(t).cast<double>();
      const double mx = row.maxCoeff();
      const double lse = mx + std::log((row.array() - mx).exp().sum());
      sum += lse - row(ids[b * size_t(L) + size_t(t + 1)]);
      ++cnt;
    }
  return sum / double(cnt);
}

template <class Lrn>
void check_case(const fs::path& dir) {
  INFO("case " << dir.string());
  auto model = load_checkpoint<TTTModel<Lrn>>(dir);
  const auto ex = io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  REQUIRE(shape.size() == 2);
  const int64_t B = shape[0], L = shape[1], V = model.cfg.vocab_size, C = model.cfg.hidden_size;
  const auto ids = ex.read_int("input_ids");
  const auto logits = ex.read_float("logits", {B, L, V});
  std::vector<Mat> all_logits;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<Mat> hidden;
    const Mat out = model.forward(std::span<const int64_t>(ids.data() + b * L, size_t(L)), &hidden);
    const double e = th::rel_err(out.data(), logits.data() + b * L * V, size_t(L * V));
    INFO("batch " << b);
    CHECK(e < 1e-4);
    for (size_t i = 0; i < hidden.size(); ++i) {
      const auto hexp = ex.read_float("hidden." + std::to_string(i), {B, L, C});
      CHECK(th::rel_err(hidden[i].data(), hexp.data() + b * L * C, size_t(L * C)) < 1e-4);
    }
    all_logits.push_back(out);
  }
  const double loss = next_token_loss(all_logits, ids, L);
  const double loss_exp = ex.read_float("loss")[0];
  CHECK(std::abs(loss - loss_exp) <= 1e-5 * std::max(1.0, std::abs(loss_exp)));

  if (ex.contains("prompt_len")) {
    const int64_t P = ex.read_int("prompt_len")[0];
    const auto dec = ex.read_float("decode_logits", {B, L - P, V});
    for (int64_t b = 0; b < B; ++b) {
      const int64_t* seq = ids.data() + b * L;
      auto st = model.new_state();
      Mat lg;
      Mat got(L - P, V);
      model.forward(st, std::span<const int64_t>(seq, size_t(P)), &lg, Logits::last);
      got.row(0) = lg.row(0);
      for (int64_t t = P; t < L - 1; ++t) {
        model.forward(st, std::span<const int64_t>(seq + t, 1), &lg, Logits::last);
        got.row(t - P + 1) = lg.row(0);
      }
      INFO("decode, batch " << b);
      CHECK(th::rel_err(got.data(), dec.data() + b * (L - P) * V, size_t((L - P) * V)) < 1e-4);
    }
  }
}

TEST_CASE("parity with every ttt-lm-pytorch reference case") {
  const fs::path root = th::reference_dir() / "ttt-lm-pytorch";
  if (!fs::exists(root)) {
    MESSAGE("reference directory " << root.string() << " not found: skipped");
    return;
  }
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "expected.safetensors")) continue;
    const ModelConfig cfg = load_checkpoint_config(entry.path());
    if (cfg.ttt_layer_type == "linear") check_case<inner::Linear>(entry.path());
    else if (cfg.ttt_layer_type == "mlp") check_case<inner::MLP>(entry.path());
    else FAIL("unknown ttt_layer_type " << cfg.ttt_layer_type);
    ++cases;
  }
  CHECK(cases >= 3);
}

/// bf16 weights against the official fp32 logits of one case: the relative error of the logits
/// (all positions, and decode after the prompt). `act`: the large products' activations rounded to
/// bf16 too (kernels::set_bf16_activations; the cases' 40-48 tokens are past the dot-product rows).
template <class Lrn>
void check_case_bf16(const fs::path& dir, bool act) {
  INFO("case " << dir.string() << (act ? ", bf16 activations" : ""));
  auto model = load_checkpoint<TTTModel<Lrn>>(dir);
  model.set_weight_dtype(WeightDtype::bf16);
  kernels::set_bf16_activations(act);
  struct Reset {
    ~Reset() { kernels::set_bf16_activations(false); }
  } reset;
  const auto ex = io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  const int64_t B = shape[0], L = shape[1], V = model.cfg.vocab_size;
  const auto ids = ex.read_int("input_ids");
  const auto logits = ex.read_float("logits", {B, L, V});
  for (int64_t b = 0; b < B; ++b) {
    const Mat out = model.forward(std::span<const int64_t>(ids.data() + b * L, size_t(L)));
    const double e = th::rel_err(out.data(), logits.data() + b * L * V, size_t(L * V));
    MESSAGE(dir.filename().string() << " batch " << b << ": bf16 " << std::string(act ? "weights and activations" : "weights")
                                    << ", logits' relative error " << e);
    // the tolerance stated in the README (bf16 keeps 8 significant bits: ~4e-3 per weight)
    CHECK(e < 1e-2);
    CHECK(e > 1e-6);  // the weights really were rounded
  }
}

TEST_CASE("bf16 weights on every ttt-lm-pytorch reference case: logits within 1e-2 of the official fp32") {
  const fs::path root = th::reference_dir() / "ttt-lm-pytorch";
  if (!fs::exists(root)) {
    MESSAGE("reference directory " << root.string() << " not found: skipped");
    return;
  }
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "expected.safetensors")) continue;
    const ModelConfig cfg = load_checkpoint_config(entry.path());
    for (bool act : {false, true}) {
      if (act && !kernels::bf16_kernel_available(kernels::Bf16Kernel::avx512_bf16)) continue;  // no AVX512_BF16 here
      if (cfg.ttt_layer_type == "linear") check_case_bf16<inner::Linear>(entry.path(), act);
      else if (cfg.ttt_layer_type == "mlp") check_case_bf16<inner::MLP>(entry.path(), act);
    }
  }
}

}  // namespace test_parity
