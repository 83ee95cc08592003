// loss_and_grad against central finite differences (in double) of the literal reference port
// tests/core/reference_impl.hpp, on small models covering every option combination: pre_conv x
// share_qk x use_gate x tied embeddings, TTT-Linear and TTT-MLP, mini-batch 4 with remainders,
// a clamped learnable_token_idx entry, other ttt_base_lr / rope_theta / rms_norm_eps /
// conv_kernel. And: the comparison fails on deliberately broken backwards.
#include <doctest/doctest.h>

#include <cstdlib>
#include <random>
#include <ttt/train/model_grad.hpp>

#include "reference_impl.hpp"
#include "test_helpers.hpp"

using namespace ttt;

namespace test_finite_diff {

struct FdResult {
  int checked = 0, failed = 0;
  double worst_abs = 0, worst_rel = 0;  // max |a - fd|, max |a - fd| / |fd| (|fd| > 1e-3)
  std::string first_failure, worst;
};

// Analytic (float) against central differences of step kStep (TTT_FD_STEP overrides; 1e-4 also
// passes, with a larger truncation error): |a - fd| <= kRel * |fd| + kAbs. Measured: max relative
// error ~6e-5 where |fd| > 1e-3 (float RoPE tables, float rounding of the result).
constexpr double kRel = 1e-4, kAbs = 2e-7;
const double kStep = std::getenv("TTT_FD_STEP") ? std::atof(std::getenv("TTT_FD_STEP")) : 1e-5;

ModelConfig fd_config(const std::string& type, int mask) {
  ModelConfig c = ModelConfig::sized(type, /*vocab=*/23, /*hidden=*/16, /*layers=*/2, /*heads=*/2,
                                     /*intermediate=*/24, /*mini_batch=*/4);
  c.pre_conv = mask & 1;
  c.share_qk = mask & 2;
  c.use_gate = mask & 4;
  c.tie_word_embeddings = mask & 8;
  c.ttt_base_lr = (mask % 3 == 0) ? 1.0 : 3.0;
  c.rope_theta = (mask % 2 == 0) ? 10000.0 : 50.0;
  c.rms_norm_eps = (mask % 4 < 2) ? 1e-6 : 1e-3;
  c.conv_kernel = (mask % 5 == 0) ? 3 : 4;
  return c;
}

template <class L>
FdResult fd_compare(const ModelConfig& cfg, uint64_t seed, int coords_per_tensor = 12) {
  TTTModel<L> model(cfg);
  th::randomize(model, seed, 0.3);
  // clamped token-index entries: 1/(t+1) + idx < 0
  model.blocks[0].mixer.token_idx[2] = -0.6f;
  model.blocks.back().mixer.token_idx[1] = -0.7f;
  // two full mini-batches + 3, one + 3, and a sequence shorter than a mini-batch
  const std::vector<std::vector<int64_t>> batch = {th::random_ids(11, cfg.vocab_size, seed + 1),
                                                   th::random_ids(7, cfg.vocab_size, seed + 2),
                                                   th::random_ids(3, cfg.vocab_size, seed + 4)};
  TTTModel<L> grad(cfg);
  const double loss = train::loss_and_grad<double>(model, batch, grad);
  ref::Ref r{cfg, ref::params_of(model)};
  const double loss_ref = r.loss(batch);
  CHECK(std::abs(loss - loss_ref) <= 1e-6 * std::abs(loss_ref));
  {  // and the library's float forward computes the same loss (the backward's forward follows it)
    double sum = 0;
    int64_t cnt = 0;
    for (const auto& ids : batch) {
      const Mat lg = model.forward(std::span<const int64_t>(ids));
      for (int64_t t = 0; t + 1 < int64_t(ids.size()); ++t, ++cnt) {
        const auto row = lg.row(t).cast<double>();
        const double mx = row.maxCoeff();
        sum += mx + std::log((row.array() - mx).exp().sum()) - row(ids[size_t(t + 1)]);
      }
    }
    CHECK(std::abs(loss - sum / double(cnt)) <= 1e-5 * std::abs(loss));
  }
  const ref::Params an = ref::params_of(grad);
  // the clamped entries get no gradient
  CHECK(an.at("model.layers.0.seq_modeling_block.learnable_token_idx")[2] == 0.0);
  FdResult res;
  std::mt19937_64 rng(seed + 3);
  for (auto& [name, vals] : r.P) {
    const auto& a = an.at(name);
    REQUIRE(a.size() == vals.size());
    std::vector<size_t> idx;
    if (vals.size() <= size_t(coords_per_tensor)) {
      for (size_t i = 0; i < vals.size(); ++i) idx.push_back(i);
    } else {
      std::uniform_int_distribution<size_t> d(0, vals.size() - 1);
      for (int i = 0; i < coords_per_tensor; ++i) idx.push_back(d(rng));
    }
    for (size_t i : idx) {
      const double x0 = vals[i];
      vals[i] = x0 + kStep;
      const double lp = r.loss(batch);
      vals[i] = x0 - kStep;
      const double lm = r.loss(batch);
      vals[i] = x0;
      const double fd = (lp - lm) / (2 * kStep);
      const double err = std::abs(a[i] - fd);
      res.worst_abs = std::max(res.worst_abs, err);
      if (std::abs(fd) > 1e-3 && err / std::abs(fd) > res.worst_rel) {
        res.worst_rel = err / std::abs(fd);
        res.worst = name + "[" + std::to_string(i) + "]: analytic " + std::to_string(a[i]) + ", fd " + std::to_string(fd);
      }
      ++res.checked;
      if (err > kRel * std::abs(fd) + kAbs) {
        if (res.failed++ == 0)
          res.first_failure = name + "[" + std::to_string(i) + "]: analytic " + std::to_string(a[i]) + ", fd " +
                              std::to_string(fd);
      }
    }
  }
  return res;
}

template <class L>
void run_all(const std::string& type) {
  double worst_abs = 0, worst_rel = 0;
  std::string worst;
  int checked = 0;
  for (int mask = 0; mask < 16; ++mask) {
    const ModelConfig cfg = fd_config(type, mask);
    INFO(type << " pre_conv=" << cfg.pre_conv << " share_qk=" << cfg.share_qk << " use_gate=" << cfg.use_gate
              << " tied=" << cfg.tie_word_embeddings);
    const FdResult r = fd_compare<L>(cfg, 100 + uint64_t(mask));
    CHECK_MESSAGE(r.failed == 0, r.first_failure);
    worst_abs = std::max(worst_abs, r.worst_abs);
    if (r.worst_rel > worst_rel) worst_rel = r.worst_rel, worst = r.worst;
    checked += r.checked;
  }
  MESSAGE(type << ": " << checked << " coordinates over 16 configurations, max |a - fd| " << worst_abs
               << ", max relative (|fd| > 1e-3) " << worst_rel << " at " << worst);
}

TEST_CASE("finite differences: TTT-Linear, every option combination") { run_all<inner::Linear>("linear"); }
TEST_CASE("finite differences: TTT-MLP, every option combination") { run_all<inner::MLP>("mlp"); }

// ---- the comparison can fail: deliberately broken backwards ----------------------------------

// One learner whose backward is broken in the way `broken_kind` says (one model type to compile,
// not one per kind): 0 the inner-state cotangent not carried back, 1 the learning-rate path 1%
// off, 2 the keys 0.1% off, 3 first order only (the inner gradients G treated as constants: no
// second derivative of the inner loss, as a stop-gradient on the inner step would give).
int broken_kind = 0;
struct Broken : inner::PrimalOnly<inner::Linear> {};

}  // namespace test_finite_diff

template <>
struct ttt::train::LearnerGrad<test_finite_diff::Broken> : LearnerGrad<inner::Linear> {
  template <class S>
  static void backward(const S* th, int64_t f, const Segment<S>& s, CRefT<S> dZq, const S* dth_end, S* dth0,
                       SegmentGrad<S>& o, Scratch<S>& ws) {
    const int kind = test_finite_diff::broken_kind;
    if (kind == 3) {
      const Eigen::Index n = s.XQ.rows();
      Eigen::Map<const MatT<S>> W(th, f, f);
      inner_grad(th, f, s, ws);
      auto G = ws(kG, n, f), E = ws(kE, n, n), K = ws(kK, n, n);
      detail::eta_matrix(s, E);
      detail::kernel<S>(s.XQ, s.XK, K);
      auto dG = ws.zero(kdG, n, f), dE = ws.zero(kdE, n, n);
      detail::dual_linear_bwd<S>(s, s.XQ, s.XK, G, E, K, W, dth_end, dth_end + f * f, dZq, dth0, dth0 + f * f,
                                 o.dXQ, o.dXK, dG, dE, o, ws, kBwd);
      detail::eta_matrix_bwd<S>(s, dE, o);
      return;
    }
    std::vector<S> zero(size_t(f * f + f), S(0));
    LearnerGrad<inner::Linear>::backward(th, f, s, dZq, kind == 0 ? zero.data() : dth_end, dth0, o, ws);
    if (kind == 1)
      for (Eigen::Index t = 0; t < s.XQ.rows(); ++t) o.d_lr[t] *= S(1.01);
    if (kind == 2) o.dXK *= S(1.001);
  }
};

namespace test_finite_diff {

TEST_CASE("finite differences catch broken backwards") {
  const ModelConfig cfg = fd_config("linear", 0);
  CHECK(fd_compare<inner::Linear>(cfg, 7).failed == 0);
  FdResult r[4];
  for (int kind = 0; kind < 4; ++kind) {
    broken_kind = kind;
    r[kind] = fd_compare<Broken>(cfg, 7);
    CHECK_MESSAGE(r[kind].failed > 0, "broken kind " << kind);
  }
  broken_kind = 0;
  MESSAGE("broken backwards (no state carry, lr path +1%, keys +0.1%, first-order only): " << r[0].failed << ", "
          << r[1].failed << ", " << r[2].failed << ", " << r[3].failed << " of " << r[0].checked << " coordinates flagged");
}

}  // namespace test_finite_diff
