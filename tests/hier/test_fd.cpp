// The hierarchical transformer on every configuration kind the reference cases do not cover
// (strides, merge_all, predict_use_all, predict_hierarchy, window 0, window clamping, a
// non-default ignore_index, zero loss weights, per-hierarchy dims / heads / dim_head / ff_mult,
// odd widths): gradients of the total loss against central finite differences in double,
// causality (changing token t changes no logit before t; a prefix's logits equal the full
// sequence's first rows), and the float model against the double one.
#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <cmath>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <ttt/models/hier/model.hpp>
#include <ttt/models/hier/receptive_field.hpp>
#include <ttt/train/optim.hpp>

#include "randomize.hpp"

using namespace ttt;
namespace test_fd {

template <class T>
using HT = hier::HierarchicalTransformerT<T>;

struct Case {
  const char* name;
  const char* json;
};

const Case kCases[] = {
    {"strides + per-hierarchy widths", R"({"num_tokens": 11, "dim": [8, 7, 8], "depth": 2, "seq_len": 32, "dim_head": [4, 6, 4],
       "heads": [2, 1, 2], "ff_mult": [2, 1.5, 4], "hierarchies": [1, 2, 4], "window_sizes": [3, null, 2],
       "hierarchical_stride": [1, 2, 2]})"},
    {"merge_all + window 0 + stride = compression", R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 32, "dim_head": 4,
       "heads": 2, "ff_mult": 2, "hierarchies": [1, 4], "window_sizes": [0, 2], "hierarchical_stride": [1, 4],
       "hierarchy_merge_all": true})"},
    {"merge_all + strided 8x", R"({"num_tokens": 11, "dim": [6, 8, 4], "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2,
       "ff_mult": 2, "hierarchies": [1, 2, 8], "window_sizes": [2, null, 1], "hierarchical_stride": [1, 1, 2],
       "hierarchy_merge_all": true})"},
    {"predict_use_all_hierarchy + strides", R"({"num_tokens": 11, "dim": [8, 4], "depth": 1, "seq_len": 32, "dim_head": 4,
       "heads": 2, "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [4, 3], "hierarchical_stride": [1, 2],
       "predict_use_all_hierarchy": true})"},
    {"predict_hierarchy 2", R"({"num_tokens": 11, "dim": [8, 6], "depth": 2, "seq_len": 32, "dim_head": 4, "heads": 2,
       "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [2, null], "predict_hierarchy": 2})"},
    {"window clamping (both windows too large: full attention)", R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 16,
       "dim_head": 4, "heads": 2, "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [17, 9]})"},
    {"ignore_index 3 + no attention at 2x", R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 32, "dim_head": 4,
       "heads": 2, "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [null, 0], "ignore_index": 3})"},
    {"zero loss weights", R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2, "ff_mult": 2,
       "hierarchies": [1, 2, 4], "window_sizes": [3, 2, null], "recon_loss_weight": 0, "hierarchical_ar_loss_weight": 0})"},
    {"flat, window 0", R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 32, "dim_head": 4, "heads": 2, "ff_mult": 2,
       "hierarchies": 1, "window_sizes": 0})"},
};

hier::HierConfig config(const Case& c) { return hier::HierConfig::from_json(nlohmann::json::parse(c.json), c.name); }

using hier_test::randomize;

std::vector<std::vector<int64_t>> batch_of(const hier::HierConfig& cfg, int64_t B, int64_t L, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(0, cfg.num_tokens - 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  for (auto& s : out) {
    for (int64_t t = 0; t < L; ++t) s.push_back(tok(rng));
    s[2] = cfg.ignore_index;  // some ignored labels and some 0s (ignored by recon)
    s[5] = 0;
  }
  return out;
}

template <class Dst, class Src>
void copy_params(HT<Dst>& dst, HT<Src>& src) {
  std::vector<ad::Matrix<Src>*> s;
  src.visit([&](const std::string&, ad::Matrix<Src>& x, const std::vector<int64_t>&, typename HT<Src>::Init, int64_t) { s.push_back(&x); });
  size_t i = 0;
  dst.visit([&](const std::string&, ad::Matrix<Dst>& x, const std::vector<int64_t>&, typename HT<Dst>::Init, int64_t) {
    x = s[i++]->template cast<Dst>();
  });
}

TEST_CASE("hier: gradients of the total loss match finite differences on every configuration kind") {
  for (const Case& c : kCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 42);
    const auto batch = batch_of(cfg, 2, 14, 9);
    HT<double> g(cfg);
    const hier::Losses l = m.loss(batch, &g);
    CHECK(std::abs(l.total - (l.ce + cfg.recon_loss_weight * l.recon + cfg.hierarchical_ar_loss_weight * l.ar)) < 1e-12);
    CHECK(std::isfinite(l.total));
    CHECK(std::isfinite(l.ar));
    if (cfg.num_hierarchies() > 1 && cfg.should_recon()) CHECK(l.recon > 0);
    if (!cfg.should_recon()) CHECK(l.recon == 0);

    // a few entries of every parameter tensor
    std::vector<std::pair<std::string, std::pair<ad::Matrix<double>*, ad::Matrix<double>*>>> params;
    std::vector<ad::Matrix<double>*> gs;
    g.visit([&](const std::string&, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) { gs.push_back(&x); });
    size_t i = 0;
    m.visit([&](const std::string& name, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) {
      params.push_back({name, {&x, gs[i++]}});
    });
    std::mt19937_64 rng(3);
    double worst = 0;
    int checked = 0;
    for (auto& [name, pg] : params) {
      auto& [x, gx] = pg;
      std::uniform_int_distribution<Eigen::Index> pick(0, x->size() - 1);
      for (int r = 0; r < 3; ++r) {
        const Eigen::Index k = pick(rng);
        const double h = 1e-5, x0 = x->data()[k];
        x->data()[k] = x0 + h;
        const double lp = m.loss(batch).total;
        x->data()[k] = x0 - h;
        const double lm = m.loss(batch).total;
        x->data()[k] = x0;
        const double fd = (lp - lm) / (2 * h), an = gx->data()[k];
        const double err = std::abs(fd - an) / std::max(1e-3, std::abs(fd));
        INFO(name << "[" << k << "]: analytic " << an << ", finite difference " << fd);
        CHECK(std::abs(fd - an) <= 1e-7 + 1e-5 * std::abs(fd));
        worst = std::max(worst, err);
        ++checked;
      }
    }
    MESSAGE(std::string(c.name) << ": " << checked << " entries, worst relative error " << worst);
    if (cfg.hierarchical_ar_loss_weight == 0)  // ar is reported but does not train: zero gradients
      for (size_t h = 0; h < size_t(cfg.num_hierarchies()); ++h)
        if (g.hpred_w[h].size()) CHECK(g.hpred_w[h].norm() == 0);
  }
}

TEST_CASE("hier: causality and prefixes on every configuration kind") {
  for (const Case& c : kCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 5);
    const auto ids = batch_of(cfg, 1, 13, 17)[0];
    const ad::Matrix<double> full = m.forward(ids);
    for (int64_t t = 0; t < 13; ++t) {
      auto alt = ids;
      alt[size_t(t)] = (alt[size_t(t)] + 1) % cfg.num_tokens;
      const ad::Matrix<double> o = m.forward(alt);
      INFO("changed token " << t);
      if (t > 0) CHECK((o.topRows(t) - full.topRows(t)).cwiseAbs().maxCoeff() == 0.0);
      CHECK((o.row(t) - full.row(t)).norm() > 0);  // the token's own position sees it
    }
    for (int64_t k = 1; k < 13; ++k) {
      const std::vector<int64_t> pre(ids.begin(), ids.begin() + k);
      const ad::Matrix<double> o = m.forward(pre);
      INFO("prefix " << k);
      CHECK((o - full.topRows(k)).norm() <= 1e-10 * full.topRows(k).norm());
    }
  }
}

TEST_CASE("hier: the float model equals the double one on every configuration kind") {
  for (const Case& c : kCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> md(cfg);
    randomize(md, 8);
    HT<float> mf(cfg);
    copy_params(mf, md);
    const auto batch = batch_of(cfg, 2, 14, 1);
    const ad::Matrix<double> ld = md.forward(batch[0]);
    const ad::Matrix<float> lf = mf.forward(batch[0]);
    CHECK((lf.cast<double>() - ld).norm() <= 1e-5 * ld.norm());
    HT<double> gd(cfg);
    HT<float> gf(cfg);
    const auto a = md.loss(batch, &gd), b = mf.loss(batch, &gf);
    CHECK(std::abs(a.total - b.total) <= 1e-5 * std::abs(a.total));
    HT<double> gfd(cfg);
    copy_params(gfd, gf);
    // every gradient tensor within 1e-3 relative (the reference tolerance)
    std::vector<ad::Matrix<double>*> ref;
    gd.visit([&](const std::string&, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) { ref.push_back(&x); });
    size_t i = 0;
    gfd.visit([&](const std::string& name, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) {
      const ad::Matrix<double>& e = *ref[i++];
      INFO("grad." << name);
      CHECK((x - e).norm() <= 1e-3 * std::max(e.norm(), 1e-6));
    });
  }
}

TEST_CASE("hier: window clamping builds full attention, window 0 none") {
  const hier::HierConfig cfg = config(kCases[5]);
  CHECK(!cfg.window(0).has_value());
  CHECK(!cfg.window(1).has_value());
  HT<float> m(cfg);
  std::vector<std::string> names;
  m.visit_buffers([&](const std::string& n, ad::Matrix<float>&, const std::vector<int64_t>&) { names.push_back(n); });
  CHECK(std::find(names.begin(), names.end(), "layers.0.1.attn.rotary_emb.scale") != names.end());
  const hier::HierConfig c0 = config(kCases[1]);
  HT<float> m0(c0);
  int attn = 0;
  m0.visit_params([&](const ParamRef& p) { attn += p.name.rfind("layers.0.0.attn", 0) == 0; });
  CHECK(attn == 0);
  CHECK(c0.window(1) == std::optional<int64_t>(2));
}

TEST_CASE("hier: the receptive field computed from the config is exact on every configuration kind") {
  // every configuration kind above, and all-local hierarchies (a bounded past everywhere)
  std::vector<Case> cases(std::begin(kCases), std::end(kCases));
  cases.push_back({"all local, strided", R"({"num_tokens": 11, "dim": [8, 6], "depth": 2, "seq_len": 32, "dim_head": 4, "heads": 2,
       "ff_mult": 2, "hierarchies": [1, 4], "window_sizes": [2, 1], "hierarchical_stride": [1, 2]})"});
  cases.push_back({"all local, merge_all + predict_use_all", R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4,
       "heads": 2, "ff_mult": 2, "hierarchies": [1, 2], "window_sizes": [3, 1], "hierarchical_stride": [1, 2],
       "hierarchy_merge_all": true, "predict_use_all_hierarchy": true})"});
  for (const Case& c : cases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 21);
    const int64_t n = std::min<int64_t>(cfg.seq_len, 32);
    const auto ids = batch_of(cfg, 1, n, 4)[0];
    const auto lo = hier::earliest_dependency(cfg, n);
    const ad::Matrix<double> full = m.forward(ids);
    int bounded = 0;
    for (int64_t t = 0; t < n; ++t) {
      INFO("position " << t << ", earliest dependency " << lo[size_t(t)]);
      auto alt = ids;
      alt[size_t(lo[size_t(t)])] = (alt[size_t(lo[size_t(t)])] + 1) % cfg.num_tokens;
      CHECK((m.forward(alt).row(t) - full.row(t)).norm() > 0);
      if (lo[size_t(t)] > 0) {
        ++bounded;
        alt = ids;
        for (int64_t u = 0; u < lo[size_t(t)]; ++u) alt[size_t(u)] = (alt[size_t(u)] + 3) % cfg.num_tokens;
        CHECK((m.forward(alt).row(t) - full.row(t)).cwiseAbs().maxCoeff() == 0.0);
      }
    }
    MESSAGE(std::string(c.name) << ": " << bounded << " of " << n << " positions see a bounded past");
  }
}

TEST_CASE("hier: a flat local-window stack sees depth * (window + 2) tokens back") {
  for (int64_t w : {1, 3, 5})
    for (int64_t depth : {1, 2, 3}) {
      const auto cfg = hier::HierConfig::from_json(nlohmann::json{{"num_tokens", 11}, {"dim", 8}, {"depth", depth}, {"seq_len", 64},
                                                                  {"dim_head", 4}, {"heads", 2}, {"window_sizes", w}});
      const auto lo = hier::earliest_dependency(cfg, 40);
      for (int64_t t = 0; t < 40; ++t) CHECK(lo[size_t(t)] == std::max<int64_t>(0, t - depth * (w + 2)));
    }
  // and the model agrees at the boundary
  const auto cfg = hier::HierConfig::from_json(nlohmann::json{{"num_tokens", 11}, {"dim", 8}, {"depth", 2}, {"seq_len", 64},
                                                              {"dim_head", 4}, {"heads", 2}, {"window_sizes", 3}});
  HT<double> m(cfg);
  randomize(m, 2);
  const auto ids = batch_of(cfg, 1, 30, 6)[0];
  const ad::Matrix<double> full = m.forward(ids);
  auto alt = ids;
  alt[9] = (alt[9] + 1) % 11;  // t = 29 sees tokens 19.., t = 19 sees 9..
  const ad::Matrix<double> o = m.forward(alt);
  CHECK((o.row(19) - full.row(19)).norm() > 0);
  CHECK((o.bottomRows(10) - full.bottomRows(10)).cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("hier: AdamW (ttt/train/optim.hpp) trains the model through visit_params") {
  const hier::HierConfig cfg = config(kCases[0]);
  hier::HierarchicalTransformer m(cfg);
  m.init_weights(1);
  const auto batch = batch_of(cfg, 2, 14, 3);
  train::AdamW opt({.weight_decay = 0.0});
  opt.init(m);
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    hier::HierarchicalTransformer g(cfg);
    last = m.loss(batch, &g).total;
    if (step == 0) first = last;
    train::clip_grad_norm(g, 1.0);
    opt.step(m, g, 1e-2);
  }
  MESSAGE("loss " << first << " -> " << last << " after 40 AdamW steps");
  CHECK(last < 0.5 * first);
}

}  // namespace test_fd
