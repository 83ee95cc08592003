// AdamW, the schedule, clipping and accumulation, against values worked out by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <ttt/inner/linear.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/model_grad.hpp>
#include <ttt/train/optim.hpp>

using namespace ttt;
using namespace ttt::train;

namespace test_optim {

using Model = TTTModel<inner::Linear>;

ModelConfig tiny() { return ModelConfig::sized("linear", 11, 8, 1, 2, 8, 4); }

/// Every entry of every parameter set to `v`.
void fill(Model& m, float v) {
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) p.at(i) = v;
  });
}

std::vector<float> flat(Model& m) {
  std::vector<float> out;
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) out.push_back(p.at(i));
  });
  return out;
}

TEST_CASE("AdamW: two steps by hand, weight decay only where no_decay is false") {
  Model m(tiny()), g(tiny());
  fill(m, 0.5f);
  AdamW opt(AdamWOptions{.beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  opt.init(m);
  // step 1, g = 0.2: m1 = 0.02, v1 = 0.002, bias corrections 0.1 and 0.05:
  // update = 0.1 * (0.02 / 0.1) / (sqrt(0.002 / 0.05) + 1e-8) = 0.1 * 0.2 / (0.2 + 1e-8)
  fill(g, 0.2f);
  opt.step(m, g, 0.1);
  const double u1 = 0.1 * 0.2 / (0.2 + 1e-8);
  const float decayed1 = float(0.5 * (1 - 0.1 * 0.1) - u1), plain1 = float(0.5 - u1);
  CHECK(opt.steps() == 1);
  int n_decay = 0, n_plain = 0;
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) CHECK(p.at(i) == doctest::Approx(p.no_decay ? plain1 : decayed1).epsilon(1e-6));
    (p.no_decay ? n_plain : n_decay)++;
  });
  CHECK(n_decay > 0);
  CHECK(n_plain > 0);
  // step 2, g = -0.1: m2 = 0.9 * 0.02 - 0.01 = 0.008, v2 = 0.95 * 0.002 + 0.05 * 0.01 = 0.0024,
  // corrections 1 - 0.81 = 0.19 and 1 - 0.9025 = 0.0975
  fill(g, -0.1f);
  opt.step(m, g, 0.05);
  const double u2 = 0.05 * (0.008 / 0.19) / (std::sqrt(0.0024 / 0.0975) + 1e-8);
  m.visit_params([&](const ParamRef& p) {
    const double before = p.no_decay ? plain1 : decayed1;
    const double want = (p.no_decay ? before : before * (1 - 0.05 * 0.1)) - u2;
    CHECK(p.at(0) == doctest::Approx(want).epsilon(1e-6));
  });
}

TEST_CASE("AdamW: the update on two OpenMP threads (each tensor cut into ranges) == on one, bit for bit") {
  const ModelConfig c = ModelConfig::sized("linear", 300, 64, 1, 2, 64, 4);  // embedding 300 x 64: cut
  Model m1(c), m2(c), g(c);
  m1.init_weights(1), g.init_weights(2);
  copy_params(m1, m2);
  AdamW a1, a2;
  a1.init(m1), a2.init(m2);
  for (int s = 0; s < 2; ++s) {
    {
      const InnerThreads one(1);
      a1.step(m1, g, 1e-2);
    }
    const InnerThreads two(2);
    a2.step(m2, g, 1e-2);
  }
  CHECK(flat(m1) == flat(m2));
  Model m0(c);
  m0.init_weights(1);
  CHECK(flat(m1) != flat(m0));  // the steps changed the weights
}

TEST_CASE("AdamW: state round-trips through safetensors; a wrong model is refused") {
  Model m(tiny()), g(tiny());
  fill(m, 0.3f);
  AdamW a;
  a.init(m);
  fill(g, 0.7f);
  a.step(m, g, 0.01);
  fill(g, -0.2f);
  a.step(m, g, 0.01);
  io::SafeTensorsWriter w;
  a.save(m, w);
  const auto st = io::SafeTensors::parse(w.serialize(), "opt");
  CHECK(st.contains("exp_avg.model.embed_tokens.weight"));
  CHECK(st.contains("exp_avg_sq.model.norm.weight"));
  AdamW b;
  b.load(m, st);
  CHECK(b.steps() == 2);
  Model m2 = m;
  a.step(m, g, 0.01);
  b.step(m2, g, 0.01);
  CHECK(flat(m) == flat(m2));
  ModelConfig other = tiny();
  other.hidden_size = 16;
  Model o(other);
  CHECK_THROWS_AS(b.load(o, st), ShapeError);
}

TEST_CASE("Cosine schedule: linear warm-up, cosine to the floor") {
  const CosineSchedule s{.peak = 1e-3, .floor = 1e-5, .warmup = 10, .total = 110};
  CHECK(s(0) == doctest::Approx(1e-4));
  CHECK(s(4) == doctest::Approx(5e-4));
  CHECK(s(9) == doctest::Approx(1e-3));
  CHECK(s(10) == doctest::Approx(1e-3));
  CHECK(s(60) == doctest::Approx(1e-5 + 0.5 * (1e-3 - 1e-5)));  // half way: cos(pi/2) = 0
  CHECK(s(35) == doctest::Approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + std::cos(M_PI * 0.25))));
  CHECK(s(110) == doctest::Approx(1e-5));
  CHECK(s(500) == doctest::Approx(1e-5));
  for (int64_t i = 10; i < 110; ++i) CHECK(s(i + 1) <= s(i));
  const CosineSchedule nw{.peak = 2.0, .floor = 0.0, .warmup = 0, .total = 4};
  CHECK(nw(0) == doctest::Approx(2.0));
  CHECK(nw(2) == doctest::Approx(1.0));
  // ttt_base_lr warm-up: from 0 (exclusive) to the configured value
  CHECK(ttt_base_lr_at(1.0, 0, 4) == doctest::Approx(0.25));
  CHECK(ttt_base_lr_at(1.0, 2, 4) == doctest::Approx(0.75));
  CHECK(ttt_base_lr_at(1.0, 3, 4) == 1.0);
  CHECK(ttt_base_lr_at(0.5, 100, 4) == 0.5);
  CHECK(ttt_base_lr_at(0.5, 0, 0) == 0.5);
  Model m(tiny());
  set_ttt_base_lr(m, 0.125);
  CHECK(m.cfg.ttt_base_lr == 0.125);
  CHECK(m.blocks[0].mixer.base_lr == 0.125);
}

TEST_CASE("Gradient clipping: global norm, torch's scale, no-op below the threshold") {
  Model g(tiny());
  fill(g, 0.0f);
  int64_t n = 0;
  g.visit_params([&](const ParamRef& p) { n += p.numel(); });
  fill(g, 0.5f);  // norm = 0.5 sqrt(n)
  const double norm = 0.5 * std::sqrt(double(n));
  CHECK(grad_norm(g) == doctest::Approx(norm));
  CHECK(clip_grad_norm(g, 2 * norm) == doctest::Approx(norm));  // below: untouched
  CHECK(flat(g)[0] == 0.5f);
  CHECK(clip_grad_norm(g, 1.0) == doctest::Approx(norm));
  CHECK(grad_norm(g) == doctest::Approx(1.0 * norm / (norm + 1e-6)));
  CHECK(flat(g)[3] == doctest::Approx(0.5 / (norm + 1e-6)));
  fill(g, 3.0f);
  CHECK(clip_grad_norm(g, 0.0) == doctest::Approx(3.0 * std::sqrt(double(n))));  // 0: off
  CHECK(flat(g)[1] == 3.0f);
  g.embed(0, 0) = NAN;
  CHECK(std::isnan(clip_grad_norm(g, 1.0)));
}

TEST_CASE("Accumulation: the sum of two half batches, halved, is the whole batch's gradient") {
  ModelConfig c = tiny();
  Model m(c), ga(c), gb(c), gall(c);
  m.init_weights(3);
  std::vector<std::vector<int64_t>> a{{1, 2, 3, 4, 5, 6}, {3, 3, 2, 1, 0, 9}}, b{{7, 8, 9, 10, 1, 2}, {5, 4, 3, 2, 1, 0}};
  const double la = loss_and_grad(m, a, ga), lb = loss_and_grad(m, b, gb);
  auto ab = a;
  ab.insert(ab.end(), b.begin(), b.end());
  const double lall = loss_and_grad(m, ab, gall);
  CHECK((la + lb) / 2 == doctest::Approx(lall).epsilon(1e-12));
  add_grad(ga, gb);
  scale_grad(ga, 0.5);
  const auto x = flat(ga), y = flat(gall);
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * double(x[i] - y[i]), den += double(y[i]) * y[i];
  CHECK(std::sqrt(num / den) < 1e-6);
}

}  // namespace test_optim
