// sample_next and generate: greedy, top-k, top-p, seeding, the sampled distribution, validation,
// and that generation (prefill + one token at a time) follows the full forward.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <ttt/models/any_model.hpp>
#include <ttt/models/generate.hpp>

namespace {

using ttt::SamplingOptions;

int64_t draw(const std::vector<float>& logits, const SamplingOptions& o, std::mt19937_64& rng) {
  return ttt::sample_next(logits, o, rng);
}

std::vector<double> softmax(const std::vector<float>& l, double T) {
  double mx = -INFINITY;
  for (float v : l) mx = std::max(mx, double(v));
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((double(l[i]) - mx) / T);
  for (double& v : p) v /= s;
  return p;
}

/// Frequencies of n draws.
std::vector<double> frequencies(const std::vector<float>& l, const SamplingOptions& o, int n, uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  std::vector<double> f(l.size(), 0.0);
  for (int i = 0; i < n; ++i) f[size_t(draw(l, o, rng))] += 1.0;
  for (double& v : f) v /= n;  // exact 1.0 when one token takes every draw
  return f;
}

std::string error_of(const std::vector<float>& l, const SamplingOptions& o) {
  std::mt19937_64 rng(0);
  try {
    draw(l, o, rng);
  } catch (const ttt::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("greedy and temperature 0 take the argmax, the first one on ties") {
  const std::vector<float> l = {0.1f, 3.0f, -1.0f, 2.9f, 3.0f};
  std::mt19937_64 rng(1);
  SamplingOptions o;
  o.greedy = true;
  o.temperature = 5.0f;  // ignored
  o.top_k = 3;
  for (int i = 0; i < 20; ++i) CHECK(draw(l, o, rng) == 1);
  SamplingOptions t0;
  t0.temperature = 0.0f;
  for (int i = 0; i < 20; ++i) CHECK(draw(l, t0, rng) == 1);
}

TEST_CASE("top_k = 1 and a tiny top_p give the argmax") {
  const std::vector<float> l = {0.5f, -2.0f, 1.25f, 1.2f, 0.0f};
  SamplingOptions k1;
  k1.top_k = 1;
  SamplingOptions p0;
  p0.top_p = 1e-6f;
  SamplingOptions hot;  // even at a high temperature
  hot.top_p = 1e-6f;
  hot.temperature = 100.0f;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 200; ++i) {
    CHECK(draw(l, k1, rng) == 2);
    CHECK(draw(l, p0, rng) == 2);
    CHECK(draw(l, hot, rng) == 2);
  }
}

TEST_CASE("the same seed gives the same samples") {
  const std::vector<float> l = {0.3f, 0.1f, -0.2f, 0.0f, 0.25f, 0.05f};
  SamplingOptions a_k, a_p;
  a_k.temperature = 0.7f;
  a_k.top_k = 3;
  a_p.temperature = 1.3f;
  a_p.top_p = 0.8f;
  for (const SamplingOptions& o : {SamplingOptions{}, a_k, a_p}) {
    std::mt19937_64 a(42), b(42), c(43);
    std::vector<int64_t> sa, sb, sc;
    for (int i = 0; i < 200; ++i) {
      sa.push_back(draw(l, o, a));
      sb.push_back(draw(l, o, b));
      sc.push_back(draw(l, o, c));
    }
    CHECK(sa == sb);
    CHECK(sa != sc);  // 200 draws over 3+ tokens: equal by chance is practically impossible
  }
}

TEST_CASE("the sampled distribution follows softmax(logits / T)") {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f};
  const int n = 40000;
  for (float T : {1.0f, 0.5f, 2.0f}) {
    SamplingOptions o;
    o.temperature = T;
    const auto p = softmax(l, T);
    const auto f = frequencies(l, o, n);
    for (size_t i = 0; i < 3; ++i) CHECK(std::fabs(f[i] - p[i]) < 0.015);
  }
}

TEST_CASE("top_k and top_p cut the distribution and renormalise") {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f};  // p = 0.090, 0.245, 0.665
  const int n = 40000;
  SamplingOptions k2;
  k2.top_k = 2;
  auto f = frequencies(l, k2, n);
  CHECK(f[0] == 0.0);
  const double p1 = std::exp(1.0) / (std::exp(1.0) + std::exp(2.0));
  CHECK(std::fabs(f[1] - p1) < 0.015);

  SamplingOptions p05;  // 0.665 >= 0.5: the top token alone
  p05.top_p = 0.5f;
  f = frequencies(l, p05, 2000);
  CHECK(f[2] == 1.0);

  SamplingOptions p07;  // 0.665 < 0.7 <= 0.91: the top two
  p07.top_p = 0.7f;
  f = frequencies(l, p07, n);
  CHECK(f[0] == 0.0);
  CHECK(std::fabs(f[1] - p1) < 0.015);

  SamplingOptions both;  // top_k = 2 first (p = 0.269, 0.731 renormalised), then top_p 0.72 keeps one
  both.top_k = 2;
  both.top_p = 0.72f;
  f = frequencies(l, both, 2000);
  CHECK(f[2] == 1.0);
  both.top_p = 0.74f;  // now both
  f = frequencies(l, both, n);
  CHECK(f[0] == 0.0);
  CHECK(std::fabs(f[1] - p1) < 0.015);

  SamplingOptions big_k;  // k >= V keeps everything
  big_k.top_k = 10;
  f = frequencies(l, big_k, n);
  CHECK(std::fabs(f[0] - softmax(l, 1.0)[0]) < 0.015);
}

TEST_CASE("sampling is stable for large and infinite logits") {
  const std::vector<float> big = {1000.0f, 1001.0f, 999.0f};
  const auto f = frequencies(big, SamplingOptions{}, 20000);
  const auto p = softmax(big, 1.0);
  for (size_t i = 0; i < 3; ++i) CHECK(std::fabs(f[i] - p[i]) < 0.02);

  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> masked = {-inf, 0.5f, -inf, -inf};
  std::mt19937_64 rng(5);
  SamplingOptions o;
  o.top_p = 0.9f;
  for (int i = 0; i < 50; ++i) CHECK(draw(masked, o, rng) == 1);
  const std::vector<float> pos_inf = {0.0f, inf, 1e30f};
  for (int i = 0; i < 50; ++i) CHECK(draw(pos_inf, SamplingOptions{}, rng) == 1);
}

TEST_CASE("invalid options and logits are errors that name the problem") {
  const std::vector<float> l = {0.0f, 1.0f};
  auto with = [](auto f) {
    SamplingOptions o;
    f(o);
    return o;
  };
  CHECK(error_of(l, with([](SamplingOptions& o) { o.top_p = 0.0f; })).find("top_p") != std::string::npos);
  CHECK(error_of(l, with([](SamplingOptions& o) { o.top_p = 2.0f; })).find("top_p must be in (0, 1], got 2") !=
        std::string::npos);
  CHECK(error_of(l, with([](SamplingOptions& o) { o.top_p = NAN; })).find("top_p") != std::string::npos);
  CHECK(error_of(l, with([](SamplingOptions& o) { o.temperature = -1.0f; })).find("temperature") != std::string::npos);
  CHECK(error_of(l, with([](SamplingOptions& o) { o.temperature = INFINITY; })).find("temperature") !=
        std::string::npos);
  CHECK(error_of(l, with([](SamplingOptions& o) { o.top_k = -1; })).find("top_k") != std::string::npos);
  CHECK(error_of({}, SamplingOptions{}).find("empty") != std::string::npos);
  CHECK(error_of({0.0f, NAN}, SamplingOptions{}).find("NaN") != std::string::npos);
  SamplingOptions neg;
  neg.max_new_tokens = -1;
  CHECK_THROWS_AS(ttt::validate(neg), ttt::Error);
}

namespace {

ttt::ModelConfig tiny_config(const std::string& layer) {
  // mini-batch 4: decode crosses several mini-batch boundaries
  ttt::ModelConfig c = ttt::ModelConfig::sized(layer, 50, 32, 2, 2, 64, 4);
  c.initializer_range = 0.2;  // larger weights: well separated logits
  return c;
}

}  // namespace

TEST_CASE("greedy generation follows the full forward (prefill + one token at a time)") {
  for (const char* layer : {"linear", "mlp"}) {
    CAPTURE(layer);
    const ttt::AnyModel m = ttt::AnyModel::create(tiny_config(layer), 11);
    const std::vector<int64_t> prompt = {3, 14, 15, 9, 26, 5};
    SamplingOptions o;
    o.greedy = true;
    o.max_new_tokens = 13;
    std::vector<int64_t> seen;
    const ttt::GenerateResult r = ttt::generate(m, prompt, o, [&](int64_t t) { seen.push_back(t); });
    REQUIRE(r.tokens.size() == 13);
    CHECK(seen == r.tokens);
    CHECK(r.prompt_tokens == 6);
    CHECK(r.decode_tokens() == 12);
    CHECK(r.prefill_ms >= 0.0);
    CHECK(r.decode_ms >= 0.0);
    CHECK_FALSE(r.stopped_at_eos);

    std::vector<int64_t> all = prompt;
    all.insert(all.end(), r.tokens.begin(), r.tokens.end() - 1);
    const ttt::Mat logits = m.forward(all);
    for (size_t j = 0; j < r.tokens.size(); ++j) {
      const auto row = logits.row(Eigen::Index(prompt.size() - 1 + j));
      Eigen::Index best = 0;
      row.maxCoeff(&best);
      // The generated token is the argmax, or ties with it up to rounding of the chunked forward.
      CHECK(row(Eigen::Index(r.tokens[j])) >= row(best) - 1e-4f * std::max(1.0f, std::fabs(row(best))));
    }

    // A seeded sampling run is reproducible, through any model type.
    SamplingOptions s;
    s.seed = 99;
    s.top_k = 20;
    s.top_p = 0.9f;
    s.max_new_tokens = 10;
    CHECK(ttt::generate(m, prompt, s).tokens == ttt::generate(m, prompt, s).tokens);
    const ttt::AnyModel holder = ttt::AnyModel::create(tiny_config("linear"), 11);
    const auto& typed = std::get<ttt::TTTModel<ttt::inner::Linear>>(holder.variant());
    SamplingOptions g;
    g.greedy = true;
    g.max_new_tokens = 5;
    CHECK(ttt::generate(typed, prompt, g).tokens.size() == 5);
  }
}

TEST_CASE("generation stops at EOS, at the budget, or when the callback says so") {
  const ttt::AnyModel m = ttt::AnyModel::create(tiny_config("linear"), 4);
  const std::vector<int64_t> prompt = {1, 2, 3};
  SamplingOptions o;
  o.greedy = true;
  o.max_new_tokens = 8;
  const auto free_run = ttt::generate(m, prompt, o);
  REQUIRE(free_run.tokens.size() == 8);

  SamplingOptions e = o;
  e.eos_token_id = free_run.tokens[2];
  const auto stopped = ttt::generate(m, prompt, e);
  CHECK(stopped.stopped_at_eos);
  CHECK(stopped.tokens.back() == free_run.tokens[2]);
  CHECK(stopped.tokens.size() <= 3);

  SamplingOptions none = o;
  none.max_new_tokens = 0;
  CHECK(ttt::generate(m, prompt, none).tokens.empty());

  int calls = 0;
  const auto cut = ttt::generate(m, prompt, o, [&](int64_t) { return ++calls < 3; });
  CHECK(cut.tokens.size() == 3);
  CHECK(cut.stopped_by_callback);

  CHECK_THROWS_AS(ttt::generate(m, std::vector<int64_t>{}, o), ttt::Error);
  CHECK_THROWS_AS(ttt::generate(m, std::vector<int64_t>{1, 50}, o), ttt::Error);  // outside the vocabulary
  SamplingOptions bad = o;
  bad.top_p = 1.5f;
  CHECK_THROWS_AS(ttt::generate(m, prompt, bad), ttt::Error);
}

TEST_CASE("generate_batch: each sequence gets what generate gives its prompt with seed + b") {
  for (const char* layer : {"linear", "mlp"}) {
    CAPTURE(layer);
    const ttt::AnyModel m = ttt::AnyModel::create(tiny_config(layer), 11);
    const std::vector<std::vector<int64_t>> prompts = {{3, 14, 15, 9, 26, 5}, {7}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, {3, 14}};
    for (const bool greedy : {true, false}) {
      CAPTURE(greedy);
      SamplingOptions o;
      o.greedy = greedy;
      o.seed = 40;
      o.top_k = 30;
      o.max_new_tokens = 11;
      std::vector<std::vector<int64_t>> seen(prompts.size());
      const ttt::BatchGenerateResult r =
          ttt::generate_batch(m, std::span<const std::vector<int64_t>>(prompts), o, [&](size_t b, int64_t t) { seen[b].push_back(t); });
      REQUIRE(r.seqs.size() == prompts.size());
      CHECK(r.decode_steps == 10);
      CHECK(r.decode_tokens() == int64_t(prompts.size()) * 10);
      for (size_t b = 0; b < prompts.size(); ++b) {
        CAPTURE(b);
        SamplingOptions ob = o;
        ob.seed = o.seed + b;
        CHECK(r.seqs[b].tokens == ttt::generate(m, prompts[b], ob).tokens);
        CHECK(seen[b] == r.seqs[b].tokens);
        CHECK(r.seqs[b].prompt_tokens == int64_t(prompts[b].size()));
      }
    }
  }
}

TEST_CASE("generate_batch: EOS and the callback stop one sequence; the others go on") {
  const ttt::AnyModel m = ttt::AnyModel::create(tiny_config("linear"), 4);
  const std::vector<std::vector<int64_t>> prompts = {{1, 2, 3}, {4, 5}, {6}};
  SamplingOptions o;
  o.greedy = true;
  o.max_new_tokens = 8;
  const auto free_run = ttt::generate_batch(m, std::span<const std::vector<int64_t>>(prompts), o, [](size_t, int64_t) {});
  for (const auto& s : free_run.seqs) REQUIRE(s.tokens.size() == 8);

  // sequence 0 stops when its third token is the EOS id (earlier tokens may be too)
  SamplingOptions e = o;
  e.eos_token_id = free_run.seqs[0].tokens[2];
  const auto r = ttt::generate_batch(m, std::span<const std::vector<int64_t>>(prompts), e, [](size_t, int64_t) {});
  for (size_t b = 0; b < prompts.size(); ++b) {
    const auto& want = free_run.seqs[b].tokens;
    const auto eos = std::find(want.begin(), want.end(), *e.eos_token_id);
    const size_t n = eos == want.end() ? want.size() : size_t(eos - want.begin()) + 1;
    CHECK(r.seqs[b].tokens == std::vector<int64_t>(want.begin(), want.begin() + std::ptrdiff_t(n)));
    CHECK(r.seqs[b].stopped_at_eos == (eos != want.end()));
  }
  CHECK(r.seqs[0].stopped_at_eos);

  const auto c = ttt::generate_batch(m, std::span<const std::vector<int64_t>>(prompts), o,
                                     [](size_t b, int64_t) { return b != 1; });  // sequence 1 stops at once
  CHECK(c.seqs[1].tokens.size() == 1);
  CHECK(c.seqs[1].stopped_by_callback);
  CHECK(c.seqs[0].tokens == free_run.seqs[0].tokens);
  CHECK(c.seqs[2].tokens == free_run.seqs[2].tokens);

  const std::vector<std::vector<int64_t>> with_empty = {{1}, {}};
  CHECK_THROWS_WITH_AS(ttt::generate_batch(m, std::span<const std::vector<int64_t>>(with_empty), o, [](size_t, int64_t) {}),
                       "generate_batch: prompt 1 is empty (need at least one token)", ttt::Error);
  CHECK_THROWS_AS(ttt::generate_batch(m, std::span<const std::vector<int64_t>>(), o, [](size_t, int64_t) {}), ttt::Error);
}
