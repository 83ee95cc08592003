// The training loop: resume continues bit for bit, a NaN stops with the last checkpoint kept, a
// failed checkpoint write keeps the previous one, the output folder is what ttt generate loads;
// data parallel over ranks (ThreadGroup, the twin of MPI) equals threads in one process.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <ttt/models/any_model.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/thread_group.hpp>
#include <ttt/train/trainer.hpp>

using namespace ttt;
using namespace ttt::train;
namespace test_trainer {

namespace fs = std::filesystem;

using Model = TTTModel<inner::Linear>;

fs::path scratch(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("ttt_test_trainer_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p;
}

std::vector<int64_t> text_tokens() {
  std::string s;
  for (int i = 0; i < 60; ++i) s += "the cat sat on the mat " + std::to_string(i * 7 % 13) + ". ";
  return ByteTokenizer().encode(s);
}

ModelConfig small_cfg(const std::string& layer = "linear") {
  ModelConfig c = ModelConfig::sized(layer, ByteTokenizer::vocab_size, 16, 2, 2, 32, 4);
  c.ttt_base_lr = 0.5;
  return c;
}

TrainOptions small_opts(const fs::path& out) {
  TrainOptions o;
  o.steps = 6;
  o.batch = 2;
  o.lr = 3e-3;
  o.warmup = 2;
  o.save_every = 2;
  o.val_every = 3;
  o.val_windows = 2;
  o.out = out;
  o.progress = false;
  return o;
}

std::vector<float> weights(Model& m) {
  std::vector<float> out;
  m.visit_params([&](const ParamRef& p) {
    for (int64_t i = 0; i < p.numel(); ++i) out.push_back(p.at(i));
  });
  return out;
}

std::string slurp(const fs::path& p) { return io::read_file(p); }

TEST_CASE("train: N steps + resume for N more == 2N steps, bit for bit (losses, weights, log)") {
  const auto tokens = text_tokens();
  const fs::path a = scratch("full"), b = scratch("resumed");
  Model ma(small_cfg());
  ma.init_weights(1);
  TextData da(tokens, 16, 0.1, 5);
  TrainOptions oa = small_opts(a);
  oa.accum = 2;
  const TrainResult ra = train::train(ma, da, oa);
  REQUIRE(ra.losses.size() == 6);
  CHECK(ra.val.size() == 2);
  for (double l : ra.losses) CHECK(std::isfinite(l));

  Model mb(small_cfg());
  mb.init_weights(1);
  TextData db(tokens, 16, 0.1, 5);
  TrainOptions ob = small_opts(b);
  ob.accum = 2;
  ob.stop_after = 3;  // interrupted after step 3: the checkpoint of step 3 is the last one
  ob.save_every = 3;
  const TrainResult r1 = train::train(mb, db, ob);
  CHECK(r1.losses.size() == 3);
  CHECK(nlohmann::json::parse(slurp(b / "trainer.json"))["step"] == 3);
  // a fresh process: new model object (weights come from the checkpoint), new data object
  Model mc(small_cfg());
  TextData dc(tokens, 16, 0.1, 999);  // the seed is overridden by the saved generator state
  ob.stop_after = 0;
  ob.save_every = 2;
  ob.resume = true;
  const TrainResult r2 = train::train(mc, dc, ob);
  CHECK(r2.start_step == 3);
  std::vector<double> joined = r1.losses;
  joined.insert(joined.end(), r2.losses.begin(), r2.losses.end());
  CHECK(joined == ra.losses);
  CHECK(weights(mc) == weights(ma));
  CHECK(slurp(a / "model.safetensors") == slurp(b / "model.safetensors"));
  // the log has each step once, with the same losses
  auto losses_of = [](const fs::path& log) {
    std::ifstream f(log);
    std::string line;
    std::vector<std::string> out;
    std::getline(f, line);
    CHECK(line == "step,lr,train_loss,val_loss,tokens_per_s,elapsed_s");
    while (std::getline(f, line)) out.push_back(line.substr(0, line.find(',', line.find(',', line.find(',') + 1) + 1)));
    return out;
  };
  const auto la = losses_of(a / "log.csv"), lb = losses_of(b / "log.csv");
  CHECK(la.size() == 6);
  CHECK(la == lb);
  // the output folder is a checkpoint the CLI loads
  const AnyModel any = AnyModel::load(b);
  CHECK(any.learner() == "linear");
  fs::remove_all(a), fs::remove_all(b);
}

TEST_CASE("train: resume refuses another config, a missing folder, a non-training folder, a fresh run over an old one") {
  const auto tokens = text_tokens();
  const fs::path a = scratch("refuse");
  Model m(small_cfg());
  m.init_weights(1);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = small_opts(a);
  o.steps = 2;
  train::train(m, d, o);
  ModelConfig other = small_cfg();
  other.num_hidden_layers = 3;
  Model m3(other);
  o.resume = true;
  CHECK_THROWS_WITH_AS(train::train(m3, d, o), doctest::Contains("config differs"), Error);
  TrainOptions missing = o;
  missing.out = a / "nope";
  CHECK_THROWS_WITH_AS(train::train(m, d, missing), doctest::Contains("no such folder"), Error);
  fs::create_directories(a / "plain");
  missing.out = a / "plain";
  CHECK_THROWS_WITH_AS(train::train(m, d, missing), doctest::Contains("trainer.json"), Error);
  o.resume = false;
  CHECK_THROWS_WITH_AS(train::train(m, d, o), doctest::Contains("holds a training run already"), Error);
  // other data
  std::vector<int64_t> t2 = tokens;
  t2[3] = 'Q';
  TextData d2(t2, 16, 0.1, 5);
  o.resume = true;
  CHECK_THROWS_WITH_AS(train::train(m, d2, o), doctest::Contains("data differs"), Error);
  fs::remove_all(a);
  // a model running with bf16 weights (inference only) is refused before anything is written
  const fs::path c = scratch("bf16");
  Model mb(small_cfg());
  mb.init_weights(1);
  mb.set_weight_dtype(WeightDtype::bf16);
  o = small_opts(c);
  CHECK_THROWS_WITH_AS(train::train(mb, d, o), doctest::Contains("runs with bf16 weights (inference only"),
                       ConfigError);
  CHECK(!fs::exists(c));
}

TEST_CASE("train: a NaN loss stops with a clear message and the previous checkpoint stays loadable") {
  const auto tokens = text_tokens();
  const fs::path a = scratch("nan");
  Model m(small_cfg());
  m.init_weights(1);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = small_opts(a);
  o.after_step = [&](int64_t step) {
    if (step == 3) m.blocks[0].mlp.up(0, 0) = NAN;  // poisons the loss of step 4
  };
  std::string msg;
  try {
    train::train(m, d, o);
  } catch (const DivergedError& e) {
    msg = e.what();
  }
  CHECK(msg.find("step 4") != std::string::npos);
  CHECK(msg.find("nan") != std::string::npos);
  CHECK(msg.find("step 2") != std::string::npos);  // the last good checkpoint
  CHECK(nlohmann::json::parse(slurp(a / "trainer.json"))["step"] == 2);
  Model back = load_checkpoint<Model>(a);
  for (float v : weights(back)) REQUIRE(std::isfinite(v));
  // and it resumes
  Model r(small_cfg());
  TextData d2(tokens, 16, 0.1, 5);
  o.after_step = nullptr;
  o.resume = true;
  CHECK(train::train(r, d2, o).losses.size() == 4);
  fs::remove_all(a);
}

TEST_CASE("train: a checkpoint that cannot be written leaves the previous one intact") {
  const auto tokens = text_tokens();
  const fs::path a = scratch("failwrite");
  Model m(small_cfg());
  m.init_weights(1);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = small_opts(a);
  o.after_step = [&](int64_t step) {
    if (step == 3) {  // the pending optimizer file of step 4 cannot be put in place
      fs::create_directories(a / "optimizer.safetensors.pending" / "x");
    }
  };
  const fs::path files[] = {"config.json", "model.safetensors", "optimizer.safetensors", "trainer.json"};
  std::string msg;
  try {
    train::train(m, d, o);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("checkpoint at step 4 not written") != std::string::npos);
  CHECK(msg.find("step 2, is intact") != std::string::npos);
  CHECK(nlohmann::json::parse(slurp(a / "trainer.json"))["step"] == 2);
  CHECK(!fs::exists(a / "model.safetensors.pending"));  // no leftovers
  // step 2's files: resume from them gives the uninterrupted run's weights
  fs::remove_all(a / "optimizer.safetensors.pending");
  Model r(small_cfg());
  TextData d2(tokens, 16, 0.1, 5);
  TrainOptions ro = small_opts(a);
  ro.resume = true;
  train::train(r, d2, ro);
  const fs::path ref = scratch("failwrite_ref");
  Model f(small_cfg());
  f.init_weights(1);
  TextData d3(tokens, 16, 0.1, 5);
  train::train(f, d3, small_opts(ref));
  CHECK(weights(r) == weights(f));
  (void)files;
  fs::remove_all(a), fs::remove_all(ref);
}

TEST_CASE("train: MLP learner, warm-up of ttt_base_lr leaves the configured value in the checkpoint") {
  const auto tokens = text_tokens();
  const fs::path a = scratch("mlp");
  TTTModel<inner::MLP> m(small_cfg("mlp"));
  m.init_weights(2);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = small_opts(a);
  o.steps = 3;
  o.ttt_warmup = 10;
  const TrainResult r = train::train(m, d, o);
  CHECK(r.losses.size() == 3);
  CHECK(m.cfg.ttt_base_lr == 0.5);
  CHECK(m.blocks[1].mixer.base_lr == 0.5);
  CHECK(load_checkpoint_config(a).ttt_base_lr == 0.5);
  fs::remove_all(a);
}

TEST_CASE("train: two threads over the batch give the one-thread losses (to rounding), reproducibly") {
  const auto tokens = text_tokens();
  auto run = [&](int threads) {
    Model m(small_cfg());
    m.init_weights(1);
    TextData d(tokens, 16, 0.1, 5);
    TrainOptions o = small_opts("");
    o.batch = 3;  // shares of 2 and 1 sequences: weighted by positions
    o.threads = threads;
    return std::pair{train::train(m, d, o).losses, weights(m)};
  };
  const auto [l1, w1] = run(1);
  const auto [l2, w2] = run(2);
  const auto [l2b, w2b] = run(2);
  CHECK(l2 == l2b);
  CHECK(w2 == w2b);
  REQUIRE(l1.size() == l2.size());
  for (size_t i = 0; i < l1.size(); ++i) CHECK(l2[i] == doctest::Approx(l1[i]).epsilon(1e-5));  // float gradients, summed in another order
  double num = 0, den = 0;
  for (size_t i = 0; i < w1.size(); ++i) num += (w1[i] - w2[i]) * double(w1[i] - w2[i]), den += double(w1[i]) * w1[i];
  CHECK(std::sqrt(num / den) < 1e-4);
}

TEST_CASE("train: threads beyond the batch work inside the one sequence (heads, products, SwiGLU, AdamW), reproducibly") {
  const auto tokens = text_tokens();
  auto run = [&](int threads) {
    // embedding 259 x 64 and windows of 512 rows x intermediate 128: large enough that AdamW and
    // the SwiGLU's elementwise work are cut into ranges on two threads
    ModelConfig c = ModelConfig::sized("mlp", ByteTokenizer::vocab_size, 64, 2, 4, 128, 16);
    c.ttt_base_lr = 0.5;
    Model m(c);
    m.init_weights(3);
    TextData d(tokens, 512, 0.4, 5);
    TrainOptions o = small_opts("");
    o.steps = 3, o.batch = 1, o.val_every = 0, o.save_every = 0;
    o.threads = threads;
    return std::pair{train::train(m, d, o).losses, weights(m)};
  };
  const auto [l1, w1] = run(1);
  const auto [l2, w2] = run(2);
  CHECK(max_threads() == 1);  // the trainer's OpenMP setting is undone (test_main set 1)
  const auto [l2b, w2b] = run(2);
  CHECK(l2 == l2b);
  CHECK(w2 == w2b);
  REQUIRE(l1.size() == l2.size());
  for (size_t i = 0; i < l1.size(); ++i) CHECK(l2[i] == doctest::Approx(l1[i]).epsilon(1e-5));  // products blocked for 2 threads
  double num = 0, den = 0;
  for (size_t i = 0; i < w1.size(); ++i) num += (w1[i] - w2[i]) * double(w1[i] - w2[i]), den += double(w1[i]) * w1[i];
  CHECK(std::sqrt(num / den) < 1e-4);
}

TEST_CASE("train: scan checkpointing changes memory, not the run (same losses and weights, bit for bit)") {
  const auto tokens = text_tokens();
  auto run = [&](int64_t group) {
    Model m(small_cfg());
    m.init_weights(2);
    TextData d(tokens, 24, 0.1, 5);  // 6 mini-batches of 4 per window
    TrainOptions o = small_opts("");
    o.scan_checkpoint_group = group;
    return std::pair{train::train(m, d, o).losses, weights(m)};
  };
  const auto [l0, w0] = run(0);
  for (int64_t g : {2, 4}) {
    const auto [lg, wg] = run(g);
    CHECK(lg == l0);
    CHECK(wg == w0);
  }
}

/// Runs f(rank, comm) on `n` threads, the ranks of one ThreadGroup; each rank's error ("" if none).
template <class F>
std::vector<std::string> run_ranks(int n, F f) {
  ThreadGroup group(n);
  std::vector<std::string> err(static_cast<size_t>(n));
  std::vector<std::thread> ts;
  for (int r = 0; r < n; ++r)
    ts.emplace_back([&, r] {
      try {
        f(r, group.rank(r));
      } catch (const std::exception& e) {
        err[size_t(r)] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  return err;
}

TrainOptions dp_opts(const fs::path& out) {
  TrainOptions o = small_opts(out);
  o.batch = 3;  // shares of 2 and 1 sequences: weighted by positions
  o.val_windows = 3;
  return o;
}

TEST_CASE("train, data parallel: two ranks of one thread == one process of two threads, bit for bit; rank 0 alone writes") {
  const auto tokens = text_tokens();
  const fs::path one = scratch("dp_one"), two = scratch("dp_two");
  Model m(small_cfg());
  m.init_weights(1);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = dp_opts(one);
  o.threads = 2;
  const TrainResult r1 = train::train(m, d, o);

  std::vector<Model> ms(2, Model(small_cfg()));
  std::vector<TrainResult> rs(2);
  const auto err = run_ranks(2, [&](int r, Communicator& comm) {
    ms[size_t(r)].init_weights(1);
    TextData dr(tokens, 16, 0.1, 5);
    TrainOptions orr = dp_opts(two);
    orr.comm = &comm;
    rs[size_t(r)] = train::train(ms[size_t(r)], dr, orr);
  });
  REQUIRE(err == std::vector<std::string>{"", ""});
  for (int r = 0; r < 2; ++r) {
    CHECK(rs[size_t(r)].ranks == 2);
    CHECK(rs[size_t(r)].losses == r1.losses);
    CHECK(weights(ms[size_t(r)]) == weights(m));
    REQUIRE(rs[size_t(r)].val.size() == r1.val.size());
    for (size_t i = 0; i < r1.val.size(); ++i)  // windows split over the ranks: summed in another order
      CHECK(rs[size_t(r)].val[i].second == doctest::Approx(r1.val[i].second).epsilon(1e-12));
  }
  CHECK(slurp(two / "model.safetensors") == slurp(one / "model.safetensors"));
  CHECK(nlohmann::json::parse(slurp(two / "trainer.json"))["processes"] == 2);
  CHECK(nlohmann::json::parse(slurp(one / "trainer.json"))["processes"] == 1);
  fs::remove_all(one), fs::remove_all(two);
}

TEST_CASE("train, data parallel: resume after two ranks in one process of two threads continues bit for bit") {
  const auto tokens = text_tokens();
  const fs::path whole = scratch("dp_whole"), part = scratch("dp_part");
  Model m(small_cfg());
  m.init_weights(3);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = dp_opts(whole);
  o.threads = 2;
  train::train(m, d, o);

  const auto err = run_ranks(2, [&](int, Communicator& comm) {
    Model mr(small_cfg());
    mr.init_weights(3);
    TextData dr(tokens, 16, 0.1, 5);
    TrainOptions orr = dp_opts(part);
    orr.stop_after = 4;
    orr.comm = &comm;
    train::train(mr, dr, orr);
  });
  REQUIRE(err == std::vector<std::string>{"", ""});
  Model mc(small_cfg());
  TextData dc(tokens, 16, 0.1, 5);
  TrainOptions oc = dp_opts(part);
  oc.threads = 2;
  oc.resume = true;
  const TrainResult rc = train::train(mc, dc, oc);
  CHECK(rc.start_step == 4);
  CHECK(weights(mc) == weights(m));
  fs::remove_all(whole), fs::remove_all(part);
}

TEST_CASE("train, data parallel: ranks that differ stop at the start; an error on one rank stops the others") {
  const auto tokens = text_tokens();
  auto attempt = [&](const fs::path& out, auto&& change) {
    return run_ranks(2, [&](int r, Communicator& comm) {
      Model mr(small_cfg());
      mr.init_weights(1);
      TextData dr(tokens, 16, 0.1, 5);
      TrainOptions orr = dp_opts(out);
      orr.comm = &comm;
      change(r, mr, orr);
      train::train(mr, dr, orr);
    });
  };
  auto both_contain = [](const std::vector<std::string>& err, const std::string& what) {
    REQUIRE(err.size() == 2);
    for (const std::string& e : err) CHECK_MESSAGE(e.find(what) != std::string::npos, e);
  };
  both_contain(attempt("", [](int r, Model&, TrainOptions& o) { if (r == 1) o.lr = 1e-3; }),
               "rank 1 of 2 has other training options than rank 0");
  both_contain(attempt("", [](int r, Model& m, TrainOptions&) { if (r == 1) m.init_weights(2); }),
               "other initial weights");
  both_contain(attempt("", [](int, Model&, TrainOptions& o) { o.batch = 1; }),
               "batch 1 is smaller than the number of processes (2)");
  // rank 0 cannot write its checkpoint: it stops, and rank 1 stops too instead of waiting for it
  const fs::path out = scratch("dp_fail");
  fs::create_directories(out / "model.safetensors");
  const auto err = attempt(out, [](int, Model&, TrainOptions&) {});
  CHECK(err[0].find("checkpoint at step 2 not written") != std::string::npos);
  CHECK(err[1].find("rank 0 stopped: checkpoint at step 2 not written") != std::string::npos);
  fs::remove_all(out);
}

TEST_CASE("train, data parallel: the transformer baseline, two ranks == one process of two threads, bit for bit") {
  const auto tokens = text_tokens();
  const AttnConfig cfg(ModelConfig::sized("attn", ByteTokenizer::vocab_size, 16, 2, 2, 32), /*window=*/8);
  auto weights_of = [](TransformerModel& m) {
    std::vector<float> out;
    m.visit_params([&](const ParamRef& p) {
      for (int64_t i = 0; i < p.numel(); ++i) out.push_back(p.at(i));
    });
    return out;
  };
  TransformerModel m(cfg);
  m.init_weights(1);
  TextData d(tokens, 16, 0.1, 5);
  TrainOptions o = dp_opts("");
  o.threads = 2;
  const TrainResult r1 = train::train(m, d, o);
  CHECK(r1.losses.back() < r1.losses.front());

  std::vector<TransformerModel> ms(2, TransformerModel(cfg));
  std::vector<TrainResult> rs(2);
  const auto err = run_ranks(2, [&](int r, Communicator& comm) {
    ms[size_t(r)].init_weights(1);
    TextData dr(tokens, 16, 0.1, 5);
    TrainOptions orr = dp_opts("");
    orr.comm = &comm;
    rs[size_t(r)] = train::train(ms[size_t(r)], dr, orr);
  });
  REQUIRE(err == std::vector<std::string>{"", ""});
  for (int r = 0; r < 2; ++r) {
    CHECK(rs[size_t(r)].losses == r1.losses);
    CHECK(weights_of(ms[size_t(r)]) == weights_of(m));
  }
}

}  // namespace test_trainer
