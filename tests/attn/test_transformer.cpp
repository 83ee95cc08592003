// The attention baselines (ttt/transformer.hpp): chunked prefill and decode == one full forward,
// the window, causality, the gradient against central finite differences, and learning.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include <ttt/train/optim.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

using namespace ttt;

namespace {

AttnConfig tiny(int64_t window, int64_t vocab = 29, int64_t hidden = 24, int64_t layers = 2, int64_t heads = 3) {
  ModelConfig c = ModelConfig::sized("attn", vocab, hidden, layers, heads, 40);
  return AttnConfig(c, window);
}

std::vector<int64_t> tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int64_t(rng() % uint64_t(vocab));
  return ids;
}

double rel_err(const Mat& a, const Mat& b) {
  return double((a - b).cwiseAbs().maxCoeff()) / std::max(1e-6, double(b.cwiseAbs().maxCoeff()));
}

TransformerModel make(int64_t window, uint64_t seed = 7) {
  TransformerModel m(tiny(window));
  m.init_weights(seed);
  // larger weights than the 0.02 init, so attention is far from uniform and errors would show
  m.visit_params([&](const ParamRef& p) {
    if (p.init == ParamRef::Init::normal)
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) *= 12.0f;
  });
  return m;
}

}  // namespace

TEST_CASE("transformer: prefill of P tokens + the rest == full forward, for every P (full and windowed)") {
  const int64_t n = 75;  // > one 64-row tile
  for (int64_t window : {-1, 0, 5, 70}) {
    CAPTURE(window);
    const TransformerModel m = make(window);
    const auto ids = tokens(n, m.cfg.vocab_size, 3);
    const Mat full = m.forward(ids);
    double worst = 0;
    for (int64_t P = 1; P < n; ++P) {
      auto st = m.new_state();
      Mat a, b;
      m.forward(st, std::span(ids).first(size_t(P)), &a, Logits::all);
      m.forward(st, std::span(ids).subspan(size_t(P)), &b, Logits::all);
      worst = std::max({worst, rel_err(a, full.topRows(P)), rel_err(b, full.bottomRows(n - P))});
      CHECK(st.pos == n);
    }
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("transformer: token-by-token decode with the KV cache == full forward; state bytes") {
  const int64_t n = 70;
  for (int64_t window : {-1, 3, 64}) {
    CAPTURE(window);
    const TransformerModel m = make(window);
    const auto ids = tokens(n, m.cfg.vocab_size, 4);
    const Mat full = m.forward(ids);
    auto st = m.new_state();
    double worst = 0;
    Mat last;
    for (int64_t t = 0; t < n; ++t) {
      m.forward(st, std::span(ids).subspan(size_t(t), 1), &last, Logits::last);
      worst = std::max(worst, rel_err(last, full.row(t)));
    }
    CHECK(worst < 1e-4);
    CHECK(m.state_bytes(st) == m.state_bytes(n));
    const int64_t kept = window < 0 ? n : std::min(n, window);
    CHECK(m.state_bytes(n) == 2 * m.cfg.num_hidden_layers * kept * m.cfg.hidden_size * 4);
    // random chunkings too
    std::mt19937_64 rng(9);
    auto st2 = m.new_state();
    Mat all(n, m.cfg.vocab_size), part;
    for (int64_t p = 0; p < n;) {
      const int64_t k = std::min<int64_t>(n - p, 1 + int64_t(rng() % 20));
      m.forward(st2, std::span(ids).subspan(size_t(p), size_t(k)), &part, Logits::all);
      all.middleRows(p, k) = part;
      p += k;
    }
    CHECK(rel_err(all, full) < 1e-4);
  }
}

TEST_CASE("transformer: a window >= the length is full attention; a short window is not") {
  const int64_t n = 40;
  const TransformerModel full = make(-1);
  const auto ids = tokens(n, full.cfg.vocab_size, 5);
  const Mat ref = full.forward(ids);
  for (int64_t window : {n - 1, n, int64_t(1000)}) {
    TransformerModel w = make(window);
    CHECK(rel_err(w.forward(ids), ref) < 1e-5);
  }
  const TransformerModel w4 = make(4);
  const Mat short_w = w4.forward(ids);
  CHECK(rel_err(short_w.topRows(5), ref.topRows(5)) < 1e-5);  // the first window+1 tokens see everything anyway
  CHECK(rel_err(short_w.bottomRows(n - 5), ref.bottomRows(n - 5)) > 1e-2);
}

TEST_CASE("transformer: causal (changing token t changes no logits before t; a window forgets)") {
  const int64_t n = 30;
  for (int64_t window : {-1, 3}) {
    CAPTURE(window);
    const TransformerModel m = make(window);
    auto ids = tokens(n, m.cfg.vocab_size, 6);
    const Mat a = m.forward(ids);
    const int64_t t = 12;
    ids[size_t(t)] = (ids[size_t(t)] + 1) % m.cfg.vocab_size;
    const Mat b = m.forward(ids);
    CHECK(double((a.topRows(t) - b.topRows(t)).cwiseAbs().maxCoeff()) == 0.0);
    CHECK(rel_err(b.row(t), a.row(t)) > 1e-3);
    if (window >= 0) {
      // with L layers a token reaches L * window positions ahead, no further
      const int64_t reach = t + m.cfg.num_hidden_layers * window;
      CHECK(double((a.bottomRows(n - reach - 1) - b.bottomRows(n - reach - 1)).cwiseAbs().maxCoeff()) == 0.0);
    }
  }
}

TEST_CASE("transformer: gradient == central finite differences (double), float gradient == double gradient") {
  for (int64_t window : {-1, 2}) {
    CAPTURE(window);
    TransformerModel m(tiny(window, 13, 12, 2, 2));
    m.init_weights(11);
    m.visit_params([&](const ParamRef& p) {  // non-trivial norms and larger weights
      std::mt19937_64 r(std::hash<std::string>{}(p.name));
      std::uniform_real_distribution<float> u(0.5f, 1.5f);
      for (int64_t i = 0; i < p.numel(); ++i) p.at(i) *= p.init == ParamRef::Init::ones ? u(r) : 15.0f;
    });
    m.cfg.tie_word_embeddings = true;
    const std::vector<std::vector<int64_t>> batch = {tokens(9, 13, 1), tokens(5, 13, 2)};
    TransformerModel gd(m.cfg), gf(m.cfg), scratch(m.cfg);
    const double loss_d = train::loss_and_grad<double>(m, batch, gd);
    const double loss_f = train::loss_and_grad(m, batch, gf);
    // the double training loss equals the inference forward's cross entropy
    double ce = 0;
    int64_t cnt = 0;
    for (const auto& s : batch) {
      const Mat lg = m.forward(s);
      for (size_t t = 0; t + 1 < s.size(); ++t, ++cnt) {
        const double mx = lg.row(Eigen::Index(t)).maxCoeff();
        ce += mx + std::log((lg.row(Eigen::Index(t)).array() - float(mx)).exp().sum()) - lg(Eigen::Index(t), s[t + 1]);
      }
    }
    CHECK(std::abs(ce / double(cnt) - loss_d) < 1e-5 * std::max(1.0, loss_d));
    CHECK(std::abs(loss_f - loss_d) < 1e-5 * std::max(1.0, loss_d));
    std::vector<ParamRef> P, Gd, Gf;
    m.visit_params([&](ParamRef p) { P.push_back(p); });
    gd.visit_params([&](ParamRef p) { Gd.push_back(p); });
    gf.visit_params([&](ParamRef p) { Gf.push_back(p); });
    std::mt19937_64 rng(3);
    double worst = 0, worst_f = 0;
    for (size_t k = 0; k < P.size(); ++k) {
      double gmax = 0;
      for (int64_t i = 0; i < Gd[k].numel(); ++i) gmax = std::max(gmax, std::abs(double(Gd[k].at(i))));
      double err = 0, err_f = 0;
      for (int s = 0; s < 6; ++s) {
        const int64_t i = int64_t(rng() % uint64_t(P[k].numel()));
        const float w0 = P[k].at(i);
        const float wp = w0 + 1e-3f, wm = w0 - 1e-3f;  // the float weights actually used
        P[k].at(i) = wp;
        const double lp = train::loss_and_grad<double>(m, batch, scratch);
        P[k].at(i) = wm;
        const double lm = train::loss_and_grad<double>(m, batch, scratch);
        P[k].at(i) = w0;
        const double fd = (lp - lm) / (double(wp) - double(wm));
        err = std::max(err, std::abs(fd - double(Gd[k].at(i))));
      }
      for (int64_t i = 0; i < Gd[k].numel(); ++i) err_f = std::max(err_f, std::abs(double(Gf[k].at(i) - Gd[k].at(i))));
      const double denom = std::max(gmax, 1e-3);
      worst = std::max(worst, err / denom);
      worst_f = std::max(worst_f, err_f / denom);
      CAPTURE(P[k].name);
      CHECK(err / denom < 2e-3);
      CHECK(err_f / denom < 2e-3);
    }
    MESSAGE("window " << window << ": worst FD relative error " << worst << ", float vs double " << worst_f);
  }
}

TEST_CASE("transformer: loss falls on a tiny copy task in a few hundred AdamW steps (2 s)") {
  // a random string of 8 symbols, a separator, the same string: the second half needs attention
  const int64_t A = 12, len = 8;
  auto sample = [&](std::mt19937_64& rng) {
    std::vector<int64_t> s;
    for (int64_t i = 0; i < len; ++i) s.push_back(int64_t(rng() % uint64_t(A)));
    s.push_back(A);
    for (int64_t i = 0; i < len; ++i) s.push_back(s[size_t(i)]);
    return s;
  };
  TransformerModel m(AttnConfig(ModelConfig::sized("attn", A + 1, 32, 2, 2, 64)));
  m.init_weights(1);
  TransformerModel g(m.cfg);
  train::AdamW opt({.weight_decay = 0.0});
  opt.init(m);
  std::mt19937_64 rng(2), vrng(99);
  std::vector<std::vector<int64_t>> val;
  for (int i = 0; i < 32; ++i) val.push_back(sample(vrng));
  // loss on the copied half only
  auto copied = [&]() {
    double s = 0;
    for (const auto& v : val) {
      const Mat lg = m.forward(v);
      for (int64_t t = len; t < 2 * len; ++t) {
        const double mx = lg.row(t).maxCoeff();
        s += mx + std::log((lg.row(t).array() - float(mx)).exp().sum()) - lg(t, v[size_t(t + 1)]);
      }
    }
    return s / double(val.size() * len);
  };
  const double before = copied();
  for (int step = 0; step < 300; ++step) {
    std::vector<std::vector<int64_t>> batch;
    for (int i = 0; i < 16; ++i) batch.push_back(sample(rng));
    train::loss_and_grad(m, batch, g);
    train::clip_grad_norm(g, 1.0);
    opt.step(m, g, 1e-2);
  }
  const double after = copied();
  MESSAGE("copy task, copied-half loss " << before << " -> " << after << " (log(A) = " << std::log(double(A)) << ")");
  CHECK(before > 0.8 * std::log(double(A)));
  CHECK(after < 0.5 * std::log(double(A)));
}

TEST_CASE("transformer: bad input gets a clear error") {
  CHECK_THROWS_WITH_AS(TransformerModel(tiny(-2)), doctest::Contains("attention window must be >= 0"), ConfigError);
  const TransformerModel m = make(-1);
  const std::vector<int64_t> bad = {1, 2, 99};
  CHECK_THROWS_WITH_AS(m.forward(bad), doctest::Contains("token id 99 at position 2"), ShapeError);
  TransformerModel other(tiny(-1, 29, 24, 3, 3));
  auto st = other.new_state();  // 3 layer caches for a 2-layer model
  Mat lg;
  CHECK_THROWS_WITH_AS(m.forward(st, std::span<const int64_t>(bad.data(), 2), &lg), doctest::Contains("layer caches"),
                       ShapeError);
  TransformerModel g(tiny(5));
  CHECK_THROWS_WITH_AS(train::loss_and_grad(m, {{1, 2, 3}}, g), doctest::Contains("configuration differs"), ShapeError);
  TransformerModel g2(m.cfg);
  CHECK_THROWS_WITH_AS(train::loss_and_grad(m, {{1}}, g2), doctest::Contains("no next-token position"), ShapeError);
  TransformerModel m2 = make(-1);  // no bf16 path: refused, nothing changed
  const Mat before = m2.forward(std::vector<int64_t>{1, 2, 3});
  CHECK_THROWS_WITH_AS(m2.set_weight_dtype(WeightDtype::bf16), doctest::Contains("has no bf16 path"), ConfigError);
  CHECK(m2.weight_dtype() == WeightDtype::fp32);
  CHECK(m2.forward(std::vector<int64_t>{1, 2, 3}) == before);
}

TEST_CASE("transformer: batched decode (forward_rows, one row at a time through the KV caches) == each sequence alone") {
  const TransformerModel m = make(5);
  const std::vector<int64_t> lens = {1, 4, 9};
  std::vector<TransformerModel::State> batch, alone;
  std::vector<std::vector<int64_t>> seqs;
  Mat lg, one;
  for (size_t b = 0; b < lens.size(); ++b) {
    seqs.push_back(tokens(lens[b] + 6, m.cfg.vocab_size, 30 + b));
    batch.push_back(m.new_state());
    alone.push_back(m.new_state());
    m.forward(batch[b], std::span(seqs[b]).first(size_t(lens[b])), &lg, Logits::last);
    m.forward(alone[b], std::span(seqs[b]).first(size_t(lens[b])), &lg, Logits::last);
  }
  std::vector<TransformerModel::State*> ptrs;
  for (auto& s : batch) ptrs.push_back(&s);
  double worst = 0;
  for (int64_t t = 0; t < 6; ++t) {
    std::vector<int64_t> ids;
    for (size_t b = 0; b < lens.size(); ++b) ids.push_back(seqs[b][size_t(lens[b] + t)]);
    m.forward_rows(ptrs, ids, &lg);
    for (size_t b = 0; b < lens.size(); ++b) {
      m.forward(alone[b], std::span(&ids[b], 1), &one, Logits::last);
      worst = std::max(worst, rel_err(Mat(lg.row(Eigen::Index(b))), one));
    }
  }
  CHECK(worst < 1e-5);
}
