// TTT layers in the attention slot of a hierarchy (HierConfig::mixer): config checks and errors,
// gradients of the total loss against central finite differences in double (the double model runs
// the TTT layers through LayerGrad<L, double>), causality and prefixes, float vs double, AdamW,
// and a save / load round trip that keeps the mixers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <ttt/models/hier/model.hpp>
#include <ttt/models/hier/receptive_field.hpp>
#include <ttt/train/optim.hpp>

#include "randomize.hpp"

using namespace ttt;
namespace test_mixer {

template <class T>
using HT = hier::HierarchicalTransformerT<T>;

struct Case {
  const char* name;
  const char* json;
};

const Case kMixCases[] = {
    {"full attention at 1x, TTT-Linear at 2x (2 phases, 3 mini-batches per phase)",
     R"({"num_tokens": 11, "dim": 8, "depth": 2, "seq_len": 32, "dim_head": 4, "heads": 2, "ff_mult": 2,
         "hierarchies": [1, 2], "window_sizes": [null, 3], "mixer": ["attention", "ttt-linear"], "ttt_mini_batch_size": 3})"},
    {"local attention at 1x, TTT-MLP at 8x stride 4",
     R"({"num_tokens": 11, "dim": [8, 12], "depth": 2, "seq_len": 32, "dim_head": 4, "heads": [2, 3], "ff_mult": 2,
         "hierarchies": [1, 8], "window_sizes": [3, null], "hierarchical_stride": [1, 4], "mixer": ["attention", "ttt-mlp"],
         "ttt_mini_batch_size": 2})"},
    {"TTT-MLP at 1x, attention at 2x, gated TTT-Linear at 8x stride 2, merge_all",
     R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2, "ff_mult": 2,
         "hierarchies": [1, 2, 8], "window_sizes": [null, 2, null], "hierarchical_stride": [1, 1, 2],
         "hierarchy_merge_all": true, "mixer": ["ttt-mlp", "attention", "ttt-linear"], "ttt_mini_batch_size": 4,
         "ttt_base_lr": 0.5, "ttt_use_gate": true})"},
    {"TTT-MLP with learned forgetting at 1x, TTT-Linear with Muon, queries before the update, at 2x (by mixer name)",
     R"({"num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2, "ff_mult": 2,
         "hierarchies": [1, 2], "window_sizes": [null, null], "mixer": ["ttt-mlp-decay", "ttt-linear-muon-before"],
         "ttt_mini_batch_size": 3})"},
};

hier::HierConfig config(const Case& c) { return hier::HierConfig::from_json(nlohmann::json::parse(c.json), c.name); }

using hier_test::randomize;

std::vector<std::vector<int64_t>> batch_of(const hier::HierConfig& cfg, int64_t B, int64_t L, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> tok(1, cfg.num_tokens - 1);
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(B));
  for (auto& s : out)
    for (int64_t t = 0; t < L; ++t) s.push_back(tok(rng));
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
  std::vector<BasicParamRef<Src>> t;
  src.visit_ttt([&](const auto& p) { t.push_back(p); });
  i = 0;
  dst.visit_ttt([&](const auto& p) {
    for (int64_t k = 0; k < p.numel(); ++k) p.at(k) = t[i].at(k);
    ++i;
  });
}

TEST_CASE("hier mixer: configuration, errors naming the valid mixers, JSON round trip") {
  auto parse = [](const std::string& s) { return hier::HierConfig::from_json(nlohmann::json::parse(s)); };
  const std::string base = R"("num_tokens": 11, "dim": 8, "depth": 1, "seq_len": 32, "dim_head": 4, "heads": 2, "hierarchies": [1, 2])";
  CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "mixer": ["attention", "ttt-lstm"]})"),
                       doctest::Contains("valid: attention, ttt-linear, ttt-mlp"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "mixer": ["attention", "ttt-linear-lion"]})"),
                       doctest::Contains("optionally with an inner optimizer [-gd|-momentum|-decay|-muon|-adam]"), ConfigError);
  CHECK(parse("{" + base + R"(, "mixer": ["attention", "ttt-mlp-muon"]})").mixer_of(1) == "ttt-mlp-muon");
  {  // the optimizer and the query order reach the TTT layer's config
    const HT<double> m(parse("{" + base + R"(, "mixer": ["ttt-mlp-momentum", "ttt-swiglu-adam-before"]})"));
    CHECK((m.ttt_config(0).ttt_inner_optimizer == "momentum" && m.ttt_config(0).ttt_query_order == "after"));
    CHECK((m.ttt_config(1).ttt_inner_optimizer == "adam" && m.ttt_config(1).ttt_query_order == "before"));
    CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "mixer": ["attention", "ttt-mlp-before-muon"]})"),
                         doctest::Contains("[-before]"), ConfigError);
  }
  CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "mixer": ["attention", "ttt-mlp", "ttt-mlp"]})"),
                       doctest::Contains("mixer has 3 entries"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "window_sizes": [null, 0], "mixer": ["attention", "ttt-linear"]})"),
                       doctest::Contains("window_sizes 0"), ConfigError);
  CHECK_THROWS_WITH_AS(parse("{" + base + R"(, "mixer": "ttt-linear", "ttt_mini_batch_size": 0})"),
                       doctest::Contains("ttt_mini_batch_size"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(R"({"num_tokens": 11, "dim": 6, "depth": 1, "heads": 4, "mixer": "ttt-linear"})"),
                       doctest::Contains("even TTT head width"), ConfigError);
  CHECK_THROWS_AS(parse("{" + base + R"(, "mixer": 3})"), FormatError);
  // the original's configs are written without the extension's keys
  CHECK(!parse("{" + base + "}").to_json().contains("mixer"));
  const hier::HierConfig c = config(kMixCases[2]);
  const hier::HierConfig back = hier::HierConfig::from_json(c.to_json());
  CHECK(back.mixer == c.mixer);
  CHECK(back.ttt_mini_batch_size == 4);
  CHECK(back.ttt_base_lr == 0.5);
  CHECK(back.ttt_use_gate);
  CHECK(back.to_json() == c.to_json());
  // parameter names
  HT<float> m(c);
  int ttt = 0, attn_qkv = 0;
  m.visit_params([&](const ParamRef& p) {
    ttt += p.name.rfind("layers.0.0.attn.ttt.", 0) == 0;
    attn_qkv += p.name.find("attn.to_qkv") != std::string::npos;
  });
  CHECK(ttt > 0);
  CHECK(attn_qkv == 1);  // only the 2x attention
}

TEST_CASE("hier mixer: gradients of the total loss match finite differences (TTT in the attention slot)") {
  for (const Case& c : kMixCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 42);
    const auto batch = batch_of(cfg, 1, 14, 9);
    HT<double> g(cfg);
    const hier::Losses l = m.loss(batch, &g);
    CHECK(std::isfinite(l.total));
    std::mt19937_64 rng(3);
    double worst = 0;
    int checked = 0;
    // the hierarchy's own parameters (double; every other tensor, one entry: test_hier checks them all
    // without TTT, here the gradient flowing back through the TTT layers matters)
    std::vector<ad::Matrix<double>*> gs;
    g.visit([&](const std::string&, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) { gs.push_back(&x); });
    size_t i = 0;
    m.visit([&](const std::string& name, ad::Matrix<double>& x, const std::vector<int64_t>&, HT<double>::Init, int64_t) {
      ad::Matrix<double>& gx = *gs[i++];
      if (i % 2 && name.find("attn.norm") == std::string::npos) return;
      std::uniform_int_distribution<Eigen::Index> pick(0, x.size() - 1);
      for (int r = 0; r < 1; ++r) {
        const Eigen::Index k = pick(rng);
        const double h = 1e-5, x0 = x.data()[k];
        x.data()[k] = x0 + h;
        const double lp = m.loss(batch).total;
        x.data()[k] = x0 - h;
        const double lm = m.loss(batch).total;
        x.data()[k] = x0;
        const double fd = (lp - lm) / (2 * h), an = gx.data()[k];
        INFO(name << "[" << k << "]: analytic " << an << ", finite difference " << fd);
        CHECK(std::abs(fd - an) <= 1e-7 + 1e-5 * std::abs(fd));
        worst = std::max(worst, std::abs(fd - an) / std::max(1e-3, std::abs(fd)));
        ++checked;
      }
    });
    // the TTT layers' parameters (steps of 1e-4, the actual step taken)
    std::vector<BasicParamRef<double>> gt;
    g.visit_ttt([&](const auto& p) { gt.push_back(p); });
    i = 0;
    int ttt_checked = 0;
    double ttt_worst = 0;
    m.visit_ttt([&](const auto& p) {
      const auto& gp = gt[i++];
      std::uniform_int_distribution<int64_t> pick(0, p.numel() - 1);
      for (int r = 0; r < 1; ++r) {
        const int64_t k = pick(rng);
        const double x0 = p.at(k), xp = x0 + 1e-4, xm = x0 - 1e-4;
        p.at(k) = xp;
        const double lp = m.loss(batch).total;
        p.at(k) = xm;
        const double lm = m.loss(batch).total;
        p.at(k) = x0;
        const double fd = (lp - lm) / (double(xp) - double(xm)), an = double(gp.at(k));
        INFO(p.name << "[" << k << "]: analytic " << an << ", finite difference " << fd);
        CHECK(std::abs(fd - an) <= 2e-6 + 2e-4 * std::abs(fd));
        ttt_worst = std::max(ttt_worst, std::abs(fd - an) / std::max(1e-3, std::abs(fd)));
        ++ttt_checked;
      }
    });
    CHECK(ttt_checked > 0);
    MESSAGE(std::string(c.name) << ": " << checked << " entries (worst rel. error " << worst << "), " << ttt_checked
                                << " TTT entries (worst " << ttt_worst << ")");
  }
}

TEST_CASE("hier mixer: causality, prefixes, and the receptive field treats TTT as unbounded") {
  for (const Case& c : kMixCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 5);
    const int64_t n = 17;
    const auto ids = batch_of(cfg, 1, n, 17)[0];
    const ad::Matrix<double> full = m.forward(ids);
    const auto lo = hier::earliest_dependency(cfg, n);
    for (int64_t t = 0; t < n; ++t) {
      auto alt = ids;
      alt[size_t(t)] = (alt[size_t(t)] + 1) % cfg.num_tokens;
      const ad::Matrix<double> o = m.forward(alt);
      INFO("changed token " << t);
      if (t > 0) CHECK((o.topRows(t) - full.topRows(t)).cwiseAbs().maxCoeff() == 0.0);
      CHECK((o.row(t) - full.row(t)).norm() > 0);
      CHECK(lo[size_t(t)] == 0);  // every hybrid here has an unbounded path (full attention or TTT)
    }
    for (int64_t k = 1; k < n; k += 3) {
      const std::vector<int64_t> pre(ids.begin(), ids.begin() + k);
      INFO("prefix " << k);
      CHECK((m.forward(pre) - full.topRows(k)).norm() <= 1e-10 * full.topRows(k).norm());
    }
  }
}

TEST_CASE("hier mixer: the float model equals the double one") {
  for (const Case& c : kMixCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> md(cfg);
    randomize(md, 8);
    HT<float> mf(cfg);
    copy_params(mf, md);
    const auto batch = batch_of(cfg, 2, 15, 1);
    const ad::Matrix<double> ld = md.forward(batch[0]);
    const ad::Matrix<float> lf = mf.forward(batch[0]);
    CHECK((lf.cast<double>() - ld).norm() <= 1e-5 * ld.norm());
    HT<double> gd(cfg);
    HT<float> gf(cfg);
    const auto a = md.loss(batch, &gd), b = mf.loss(batch, &gf);
    CHECK(std::abs(a.total - b.total) <= 1e-5 * std::abs(a.total));
    std::vector<BasicParamRef<double>> rd;
    gd.visit_ttt([&](const auto& p) { rd.push_back(p); });
    size_t i = 0;
    gf.visit_ttt([&](const auto& p) {
      const auto& e = rd[i++];
      double num = 0, den = 0;
      for (int64_t k = 0; k < p.numel(); ++k) {
        num += std::pow(double(p.at(k)) - double(e.at(k)), 2);
        den += std::pow(double(e.at(k)), 2);
      }
      INFO("grad." << p.name);
      CHECK(std::sqrt(num) <= 1e-3 * std::max(std::sqrt(den), 1e-6));
    });
  }
}

TEST_CASE("hier mixer: forward and loss without a gradient (inference tape, TTT layers' own forward) equal the gradient tape's") {
  for (const Case& c : kMixCases) {
    INFO("case: " << std::string(c.name));
    const hier::HierConfig cfg = config(c);
    HT<double> m(cfg);
    randomize(m, 9);
    const auto ids = batch_of(cfg, 1, 17, 2)[0];
    ad::Tape<double> tape;  // a gradient tape: every intermediate kept, the TTT layers through LayerGrad
    const hier::HierParams<double>& p = m;
    hier::detail::Leaves<double, inner::Builtin> leaves(tape, p, nullptr);
    const ad::Matrix<double> ref = hier::detail::build(p, leaves, ids).logits.value();
    hier::ForwardExtras<double> ex;
    ex.phases = true;  // the decoder's taps read rows before they are freed
    const ad::Matrix<double> got = m.forward(ids, &ex);
    CHECK((got - ref).norm() <= 1e-12 * ref.norm());
    CHECK(ex.hidden_embeds.size() == size_t(cfg.num_hierarchies()));
    // the loss without a gradient (an inference tape, freed per sequence) equals the one with
    const auto batch = batch_of(cfg, 3, 16, 4);
    HT<double> g(cfg);
    const hier::Losses a = m.loss(batch), b = m.loss(batch, &g);
    CHECK(std::abs(a.total - b.total) <= 1e-12 * std::abs(b.total));
    CHECK(std::abs(a.ce - b.ce) <= 1e-12 * std::abs(b.ce));
    CHECK(std::abs(a.recon - b.recon) <= 1e-12 * std::max(1.0, std::abs(b.recon)));
    CHECK(std::abs(a.ar - b.ar) <= 1e-12 * std::max(1.0, std::abs(b.ar)));
  }
}

TEST_CASE("hier mixer: AdamW trains a hybrid; save / load keeps the mixers") {
  const hier::HierConfig cfg = config(kMixCases[0]);
  hier::HierarchicalTransformer m(cfg);
  m.init_weights(1);
  const auto batch = batch_of(cfg, 2, 15, 3);
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
  MESSAGE("hybrid loss " << first << " -> " << last << " after 40 AdamW steps");
  CHECK(last < 0.5 * first);

  const auto dir = std::filesystem::temp_directory_path() / ("ttt_hier_mixer_" + std::to_string(::getpid()));
  m.save(dir);
  const hier::HierarchicalTransformer r = hier::HierarchicalTransformer::load(dir);
  CHECK(r.cfg.mixer == cfg.mixer);
  CHECK(std::holds_alternative<TTTLayer<inner::Linear>>(r.layers[0][1].ttt_layer));
  CHECK((r.forward(batch[0]) - m.forward(batch[0])).cwiseAbs().maxCoeff() == 0.0f);
  // a checkpoint whose config names no mixer does not accept the TTT tensors
  auto j = nlohmann::json::parse(io::read_file(dir / "config.json"));
  j.erase("mixer");
  io::write_file_atomic(dir / "config.json", j.dump());
  CHECK_THROWS_WITH_AS(hier::HierarchicalTransformer::load(dir), doctest::Contains("tensor 'layers.0.1.attn."), FormatError);
  std::filesystem::remove_all(dir);
}

}  // namespace test_mixer
