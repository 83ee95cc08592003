// The study's model zoo (examples/study/zoo.hpp) for the hierarchical models: names build,
// parameter counts match across mixers, state bytes are the decoder's, a training step lowers the
// loss, and timing returns numbers.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "zoo.hpp"

using namespace study;

namespace {

Spec small_spec() {
  Spec s;
  s.hidden = 16, s.layers = 1, s.heads = 2, s.mini_batch = 4, s.window = 4;
  s.max_len = 64;
  return s;
}

}  // namespace

TEST_CASE("hier-* models: matched per-token parameter counts with the TTT and attention models") {
  const Spec s = small_spec();
  const std::vector<std::string> names = {"ttt-linear", "transformer", "hier-local", "hier-1-2", "hier-1-2-8", "hier-ttt"};
  const auto w = matched_widths(names, s);
  std::vector<int64_t> n;
  for (size_t i = 0; i < names.size(); ++i) {
    auto m = make_model(names[i], s, w[i]);
    n.push_back(m->per_token_params());
    // what is left out: the TTT and attention models' tied embedding is their head (counted); the
    // hierarchical ones leave out their looked-up table and training-only heads
    if (names[i].rfind("hier-", 0) == 0) CHECK(m->per_token_params() < m->num_params() - s.vocab * s.hidden + 1);
    else CHECK(m->per_token_params() == m->num_params());
  }
  const int64_t target = *std::max_element(n.begin(), n.end());
  for (size_t i = 0; i < names.size(); ++i) {
    INFO(names[i] << ": width " << w[i] << ", " << n[i] << " parameters vs " << target);
    // one unit of width is at most 3 hidden x layers x hierarchies parameters: rounding leaves half of it
    CHECK(std::abs(double(n[i] - target)) <= 1.5 * double(s.hidden * s.layers * 3));
  }
}

TEST_CASE("matched widths with a reference set: a model's size does not depend on the others run beside it") {
  const Spec s = small_spec();
  const std::vector<std::string> reference = {"ttt-linear", "ttt-mlp", "transformer", "swa"};
  const auto all = matched_widths(reference, s);
  const auto two = matched_widths({"ttt-linear", "swa"}, s, reference);
  CHECK(two[0] == all[0]);
  CHECK(two[1] == all[3]);
  // without the reference the target is the largest of the two, and TTT-MLP (its inner MLP's
  // weights run per token) is larger than both: the widths shrink
  const auto alone = matched_widths({"ttt-linear", "swa"}, s);
  CHECK(alone[0] < two[0]);
  CHECK(alone[1] < two[1]);
}

TEST_CASE("hier-* models: state bytes as the decoder holds them; local windows and TTT keep them flat") {
  const Spec s = small_spec();
  for (const std::string name : {"hier-local", "hier-1-2", "hier-1-2-8", "hier-ttt"}) {
    INFO(name);
    const auto cfg = hier_config(name, s, 32);
    ttt::hier::HierarchicalTransformer m(cfg);
    m.init_weights(1);
    ttt::hier::Decoder<float> dec(m);
    for (int64_t t = 1; t <= 60; ++t) {
      dec.step(t % 200);
      CHECK(dec.state_bytes() == ttt::hier::Decoder<float>::state_bytes_at(m, t));
    }
    auto z = make_model(name, s, 32);
    CHECK(z->state_bytes(1 << 20) == z->state_bytes(1 << 10));  // windows of 4 at every level: bounded
  }
}

TEST_CASE("hier-* models: training steps lower the loss on a copy task; timing returns numbers") {
  const Spec s = small_spec();
  for (const std::string name : {"hier-1-2", "hier-ttt"}) {
    INFO(name);
    auto m = make_model(name, s, 32);
    m->init(3);
    const auto task = make_task("copy");
    std::mt19937_64 rng(5);
    std::vector<double> losses;
    for (int step = 0; step < 100; ++step) {
      std::vector<Seq> batch;
      for (int b = 0; b < 4; ++b) batch.push_back(task->sample(17, Split::train, rng, nullptr));
      losses.push_back(m->train_step(batch, {}, 1e-2, std::min(1.0, (step + 1) / 4.0), step % 2 ? 2 : 1));
    }
    const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[97] + losses[98] + losses[99]) / 3;
    MESSAGE(name << ": training loss " << first << " -> " << last);
    CHECK(std::isfinite(last));
    CHECK(last < first - 0.3);  // from ~6.4-7.4 (CE + recon + AR at random weights)
    const ttt::Mat lg = m->logits(task->sample(17, Split::test, rng, nullptr));
    CHECK(lg.rows() == 16);
    CHECK(lg.cols() == s.vocab);
    const Seq prompt = task->sample(40, Split::test, rng, nullptr);
    const Timing t = m->time(prompt, 3);
    CHECK(t.prefill_s > 0);
    CHECK(t.decode_s > 0);
    // the decoder's prefill runs in chunks of 1,024 tokens (hier::Decoder::kPrefillChunk): its
    // work buffers grow up to one chunk and no further
    CHECK(m->prefill_bytes(1 << 9) < m->prefill_bytes(1 << 10));
    CHECK(m->prefill_bytes(1 << 15) == m->prefill_bytes(1 << 10));
  }
}

TEST_CASE("masked targets (recall's answers): a TTT model's step counts only them; split over threads as one") {
  const Spec s = small_spec();
  const auto task = make_task("mqar");
  std::vector<std::vector<int64_t>> targets;
  const auto b = batch(*task, 4, 33, Split::train, 9, 0, &targets);
  REQUIRE(targets.size() == 4);
  for (const std::string name : {"ttt-linear", "transformer"}) {
    INFO(name);
    // one thread and two threads: the same step (shares weighted by their counted positions)
    auto one = make_model(name, s, 24), two = make_model(name, s, 24);
    one->init(4), two->init(4);
    const double l1 = one->train_step(b, targets, 1e-2, 1.0, 1), l2 = two->train_step(b, targets, 1e-2, 1.0, 2);
    CHECK(l1 == doctest::Approx(l2).epsilon(1e-5));
    CHECK(one->weights() != std::string());
    // the masked loss is the loss at the answers: about log(120) for random weights, not the
    // whole sequence's mean
    auto fresh = make_model(name, s, 24);
    fresh->init(4);
    double at_answers = 0, n = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      const ttt::Mat lg = fresh->logits(b[i]);
      for (size_t t = 0; t < targets[i].size(); ++t) {
        if (targets[i][t] < 0) continue;
        double row = 0;
        const int64_t y = targets[i][t];
        ttt::blocks::cross_entropy(lg.row(Eigen::Index(t)), std::span<const int64_t>(&y, 1), &row);
        at_answers += row, n += 1;
      }
    }
    CHECK(n >= 16);
    CHECK(l1 == doctest::Approx(at_answers / n).epsilon(1e-4));
  }
}
