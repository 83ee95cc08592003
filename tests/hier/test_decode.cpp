// Cached decoding (hier/decode.hpp): feeding tokens one at a time gives, at every position, the
// logits of a full forward, on configurations with strides, local windows, window 0, merge_all,
// predict_use_all, a strided predicting set-up, and TTT slots; generate_cached == generate.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/generate.hpp>

using namespace ttt;

namespace test_decode {

const char* kDecodeCases[] = {
    R"({"num_tokens": 11, "dim": [8, 7, 8], "depth": 2, "seq_len": 40, "dim_head": [4, 6, 4], "heads": [2, 1, 2],
        "ff_mult": [2, 1.5, 4], "hierarchies": [1, 2, 4], "window_sizes": [3, null, 2], "hierarchical_stride": [1, 2, 2]})",
    R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": [1, 4],
        "window_sizes": [0, 2], "hierarchical_stride": [1, 4], "hierarchy_merge_all": true})",
    R"({"num_tokens": 11, "dim": [6, 8, 4], "depth": 1, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2,
        "hierarchies": [1, 2, 8], "window_sizes": [2, null, 1], "hierarchical_stride": [1, 1, 2], "hierarchy_merge_all": true})",
    R"({"num_tokens": 11, "dim": [8, 4], "depth": 1, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": [1, 2],
        "window_sizes": [4, 3], "hierarchical_stride": [1, 2], "predict_use_all_hierarchy": true})",
    R"({"num_tokens": 11, "dim": [8, 6], "depth": 2, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": [1, 2],
        "window_sizes": [2, null], "predict_hierarchy": 2})",
    R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": 1,
        "window_sizes": null})",
    R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": [1, 2],
        "window_sizes": [null, 3], "mixer": ["attention", "ttt-linear"], "ttt_mini_batch_size": 3})",
    R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 40, "dim_head": 4, "heads": 2, "ff_mult": 2,
        "hierarchies": [1, 2, 8], "window_sizes": [null, 2, null], "hierarchical_stride": [1, 1, 2],
        "hierarchy_merge_all": true, "mixer": ["ttt-mlp", "attention", "ttt-linear"], "ttt_mini_batch_size": 4,
        "ttt_use_gate": true})",
};

template <class T>
void randomize(hier::HierarchicalTransformerT<T>& m, uint64_t seed) {
  using HT = hier::HierarchicalTransformerT<T>;
  m.init_weights(seed);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> n(0.0, 0.3);
  m.visit([&](const std::string&, ad::Matrix<T>& x, const std::vector<int64_t>&, typename HT::Init init, int64_t) {
    if (init == HT::Init::ones || init == HT::Init::zeros)
      for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] += T(n(rng));
  });
  m.visit_ttt([&](const auto& p) {
    const bool proj = p.name.find("_proj") != std::string::npos;
    for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = proj ? p.at(i) * 15.0f : p.at(i) + float(n(rng));
  });
}

template <class T>
void check_decode(const char* json, double tol) {
  const auto cfg = hier::HierConfig::from_json(nlohmann::json::parse(json));
  hier::HierarchicalTransformerT<T> m(cfg);
  randomize(m, 4);
  std::mt19937_64 rng(9);
  std::uniform_int_distribution<int64_t> tok(0, cfg.num_tokens - 1);
  std::vector<int64_t> ids(37);
  for (auto& t : ids) t = tok(rng);
  const ad::Matrix<T> full = m.forward(ids);
  hier::Decoder<T> dec(m);
  double worst = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const ad::Matrix<T> l = dec.step(ids[t]);
    const double err = double((l.row(0) - full.row(Eigen::Index(t))).norm() / full.row(Eigen::Index(t)).norm());
    INFO("position " << t);
    CHECK(err <= tol);
    CHECK(dec.state_bytes() == hier::Decoder<T>::state_bytes_at(m, int64_t(t) + 1));
    worst = std::max(worst, err);
  }
  MESSAGE(json << "\n  worst relative error over 37 positions: " << worst);
  // prefill of P tokens, then steps: the same logits and the same state as stepping. chunk 0 is
  // one forward over the prompt (the plain twin); chunks of 1, 2, 3, 5 and the default go through
  // advance(), with chunk boundaries inside phases, strides and windows
  double worst_prefill = 0;
  for (int64_t chunk : {int64_t(0), int64_t(1), int64_t(2), int64_t(3), int64_t(5), hier::Decoder<T>::kPrefillChunk})
    for (size_t P : {size_t(1), size_t(2), size_t(5), size_t(13), size_t(36)}) {
      hier::Decoder<T> pd(m);
      ad::Matrix<T> l = pd.prefill(std::span<const int64_t>(ids.data(), P), chunk);
      for (size_t t = P - 1; t < ids.size(); ++t) {
        if (t >= P) l = pd.step(ids[t]);
        const double err = double((l.row(0) - full.row(Eigen::Index(t))).norm() / full.row(Eigen::Index(t)).norm());
        INFO("prefill " << P << " in chunks of " << chunk << ", position " << t);
        CHECK(err <= tol);
        CHECK(pd.state_bytes() == hier::Decoder<T>::state_bytes_at(m, int64_t(t) + 1));
        worst_prefill = std::max(worst_prefill, err);
      }
      CHECK_THROWS_WITH_AS(pd.prefill(std::span<const int64_t>(ids.data(), 2)), doctest::Contains("reset()"), Error);
    }
  MESSAGE("  after a prefill of 1, 2, 5, 13 or 36 tokens (one forward, or chunks of 1, 2, 3, 5, "
          << hier::Decoder<T>::kPrefillChunk << "): worst relative error " << worst_prefill);
  // advance() in pieces of 4, 1, 7, 2, ...: every piece's last logits, the same state
  {
    hier::Decoder<T> ad_(m);
    size_t t = 0;
    for (size_t piece : {size_t(4), size_t(1), size_t(7), size_t(2), size_t(9), size_t(3), size_t(11)}) {
      const size_t n = std::min(piece, ids.size() - t);
      const ad::Matrix<T> l = ad_.advance(std::span<const int64_t>(ids.data() + t, n));
      t += n;
      const double err = double((l.row(0) - full.row(Eigen::Index(t - 1))).norm() / full.row(Eigen::Index(t - 1)).norm());
      INFO("advance to position " << t - 1);
      CHECK(err <= tol);
      CHECK(ad_.state_bytes() == hier::Decoder<T>::state_bytes_at(m, int64_t(t)));
    }
    CHECK(t == ids.size());
  }
  // a fresh sequence after reset
  dec.reset();
  const ad::Matrix<T> l0 = dec.step(ids[0]);
  CHECK(double((l0.row(0) - full.row(0)).norm()) <= tol * double(full.row(0).norm()));
}

TEST_CASE("hier decode: token-by-token logits equal the full forward at every position (double)") {
  for (const char* c : kDecodeCases) check_decode<double>(c, 1e-6);  // TTT slots run in float
}

TEST_CASE("hier decode: token-by-token logits equal the full forward at every position (float)") {
  for (const char* c : kDecodeCases) check_decode<float>(c, 2e-5);
}

TEST_CASE("hier decode: generate_cached gives generate's tokens; errors") {
  const auto cfg = hier::HierConfig::from_json(nlohmann::json::parse(kDecodeCases[6]));
  hier::HierarchicalTransformer m(cfg);
  m.init_weights(5);
  std::mt19937_64 r1(3), r2(3);
  const std::vector<int64_t> prompt = {1, 2, 3, 4, 5};
  const auto a = hier::generate(m, prompt, 30, hier::original_sampler(), r1);
  const auto b = hier::generate_cached(m, prompt, 30, hier::original_sampler(), r2);
  CHECK(a == b);
  std::mt19937_64 r3(0);
  CHECK_THROWS_WITH_AS(hier::generate_cached(m, prompt, 40, hier::original_sampler(), r3), doctest::Contains("seq_len"),
                       ShapeError);
  hier::Decoder<float> dec(m);
  CHECK_THROWS_WITH_AS(dec.step(11), doctest::Contains("vocabulary"), ShapeError);
  // errors leave the state as it was: a bad id anywhere in a prompt or a piece, too long, a bad chunk
  const std::vector<int64_t> bad = {1, 2, 11, 3};
  CHECK_THROWS_WITH_AS(dec.prefill(bad), doctest::Contains("token id 11"), ShapeError);
  CHECK_THROWS_WITH_AS(dec.prefill(bad, 0), doctest::Contains("11"), ShapeError);
  CHECK_THROWS_WITH_AS(dec.prefill(prompt, -1), doctest::Contains("chunk -1"), ShapeError);
  CHECK_THROWS_WITH_AS(dec.prefill(std::vector<int64_t>(41, 1)), doctest::Contains("seq_len = 40"), ShapeError);
  CHECK_THROWS_WITH_AS(dec.advance(bad), doctest::Contains("token id 11"), ShapeError);
  CHECK_THROWS_WITH_AS(dec.advance({}), doctest::Contains("no tokens"), ShapeError);
  CHECK(dec.position() == 0);
  dec.prefill(prompt);
  CHECK_THROWS_WITH_AS(dec.advance(std::vector<int64_t>(36, 1)), doctest::Contains("past seq_len"), ShapeError);
  CHECK(dec.position() == 5);
}

}  // namespace test_decode
