// The study's model-independent pieces (examples/study/study.hpp): task generators, position
// buckets, name errors, atomic result files and resume markers, the learning-rate sweep.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "study.hpp"

namespace fs = std::filesystem;
using namespace study;

namespace {
std::string error_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("ttt_study_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}
}  // namespace

TEST_CASE("task generators are deterministic from the seed, and seeds and splits differ") {
  for (const std::string name : {"mqar", "copy"}) {
    auto task = make_task(name);
    CHECK(task->name() == name);
    const auto a = batch(*task, 6, 257, Split::train, 7), b = batch(*task, 6, 257, Split::train, 7);
    CHECK(a == b);
    CHECK(a != batch(*task, 6, 257, Split::train, 8));
    CHECK(a != batch(*task, 6, 257, Split::test, 7));
    CHECK(a != batch(*task, 6, 257, Split::validation, 7));
    CHECK(batch(*task, 6, 257, Split::validation, 7) != batch(*task, 6, 257, Split::test, 7));
    // sequence i does not depend on how many were drawn before it (resume draws the same data)
    const auto tail = batch(*task, 3, 257, Split::train, 7, 3);
    CHECK(std::vector<Seq>(a.begin() + 3, a.end()) == tail);
    for (const auto& s : a) {
      CHECK(s.size() == 257);
      for (int64_t t : s) CHECK((t >= 0 && t < 256));
    }
  }
}

TEST_CASE("mqar (Zoology): P distinct keys written first, each asked once later, answered by its value; targets") {
  for (int64_t n : {16, 17, 64, 257, 1000, 4097}) {
    const auto grid = MQAR::pair_grid(n);
    REQUIRE(!grid.empty());
    CHECK(grid.front() == 4);
    CHECK(grid.back() <= std::min<int64_t>(n / 4, 120));
    CHECK(grid.back() * 2 > std::min<int64_t>(n / 4, 120));  // the grid reaches the most that fit
    for (int64_t P : grid) {
      std::vector<std::vector<int64_t>> answers;
      const auto seqs = mqar_batch(3, n, P, Split::test, uint64_t(n), answers);
      for (size_t i = 0; i < seqs.size(); ++i) {
        const Seq& s = seqs[i];
        REQUIRE(int64_t(s.size()) == n);
        std::map<int64_t, int64_t> written;
        for (int64_t j = 0; j < P; ++j) {
          const int64_t k = s[size_t(2 * j)], v = s[size_t(2 * j + 1)];
          CHECK((k >= kKeyLo && k < kKeyHi));
          CHECK((v >= kKeyHi && v < kValHi));
          CHECK(written.count(k) == 0);  // keys are distinct
          written[k] = v;
        }
        REQUIRE(int64_t(answers[i].size()) == P);
        std::set<int64_t> asked;
        for (int64_t t : answers[i]) {
          CHECK(t >= 2 * P);                              // asked after every pair is written
          CHECK(t + 1 < n);
          REQUIRE(written.count(s[size_t(t)]) == 1);      // the query is a written key
          CHECK(s[size_t(t + 1)] == written[s[size_t(t)]]);  // answered by its value
          asked.insert(s[size_t(t)]);
        }
        CHECK(int64_t(asked.size()) == P);  // each pair asked once
        // everything else after the writes is the separator
        std::set<int64_t> at(answers[i].begin(), answers[i].end());
        for (int64_t t = 2 * P; t < n; ++t)
          if (!at.count(t) && !at.count(t - 1)) CHECK(s[size_t(t)] == kSep);
      }
    }
    CHECK(error_of([&] { MQAR::sample_pairs(n, grid.back() * 4, *std::make_unique<std::mt19937_64>(1)); }).find("do not fit") !=
          std::string::npos);
  }
  // training batches: P from the grid, targets the value at the answers and -1 elsewhere
  auto task = make_task("mqar");
  CHECK(task->masked());
  CHECK_FALSE(make_task("copy")->masked());
  std::vector<std::vector<int64_t>> targets;
  const auto seqs = batch(*task, 8, 129, Split::train, 3, 0, &targets);
  REQUIRE(targets.size() == 8);
  std::set<int64_t> pair_counts;
  for (size_t i = 0; i < seqs.size(); ++i) {
    REQUIRE(targets[i].size() == 128);
    int64_t counted = 0;
    for (size_t t = 0; t < 128; ++t)
      if (targets[i][t] >= 0) {
        CHECK(targets[i][t] == seqs[i][t + 1]);
        CHECK((seqs[i][t] >= kKeyLo && seqs[i][t] < kKeyHi));
        CHECK((targets[i][t] >= kKeyHi && targets[i][t] < kValHi));
        ++counted;
      }
    pair_counts.insert(counted);
    const auto g = MQAR::pair_grid(129);
    CHECK(std::count(g.begin(), g.end(), counted) == 1);
  }
  CHECK(pair_counts.size() > 1);  // a mixture of pair counts
  std::vector<std::vector<int64_t>> none;
  batch(*make_task("copy"), 2, 20, Split::train, 3, 0, &none);
  CHECK(none.empty());
  CHECK(error_of([&] { task->check_length(15); }).find("too short") != std::string::npos);
}

TEST_CASE("copy: after the separator every token repeats the one m + 1 back") {
  auto task = make_task("copy");
  for (int64_t n : {3, 4, 17, 256, 1025}) {
    for (const auto& s : batch(*task, 3, n, Split::test, 5)) {
      const int64_t m = Copy::payload(n);
      REQUIRE(int64_t(s.size()) == n);
      CHECK(s[size_t(m)] == kSep);
      for (int64_t t = 0; t < m; ++t) CHECK(s[size_t(t)] != kSep);
      for (int64_t t = m + 1; t < n; ++t) CHECK(s[size_t(t)] == s[size_t(t - m - 1)]);
    }
  }
}

TEST_CASE("text: windows come from the file: the last 5% test, the 5% before validation; short text is refused") {
  const fs::path d = temp_dir("text");
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i) + " of the corpus\n";
  std::ofstream(d / "a.txt") << text;
  auto task = make_task("text:" + (d / "a.txt").string());
  const size_t cut = text.size() - text.size() / 20, vcut = text.size() - 2 * (text.size() / 20);
  for (const auto& s : batch(*task, 5, 100, Split::train, 1)) {
    std::string w;
    for (int64_t t : s) w += char(t);
    const size_t at = text.find(w);
    REQUIRE(at != std::string::npos);
    CHECK(at + w.size() <= vcut);
  }
  for (const auto& s : batch(*task, 5, 100, Split::validation, 1)) {
    std::string w;
    for (int64_t t : s) w += char(t);
    const size_t at = text.find(w, vcut);
    CHECK(at != std::string::npos);
    CHECK(at + w.size() <= cut);
  }
  for (const auto& s : batch(*task, 5, 100, Split::test, 1)) {
    std::string w;
    for (int64_t t : s) w += char(t);
    CHECK(text.find(w, cut) != std::string::npos);
  }
  CHECK(batch(*task, 3, 64, Split::train, 9) == batch(*task, 3, 64, Split::train, 9));
  const std::string e = error_of([&] { task->check_length(100000); });
  CHECK(e.find("held-out") != std::string::npos);
  CHECK(e.find("--context") != std::string::npos);
  fs::remove_all(d);
}

TEST_CASE("unknown task and model names list the valid ones") {
  std::string e = error_of([] { make_task("recall"); });
  CHECK(e.find("unknown task 'recall'") != std::string::npos);
  CHECK(e.find("mqar, copy, text:PATH") != std::string::npos);
  CHECK(error_of([] { make_task("text:"); }).find("valid tasks") != std::string::npos);
  CHECK(error_of([] { make_task("text:/no/such/file"); }).find("/no/such/file") != std::string::npos);
  e = error_of([] { check_model_name("mamba"); });
  CHECK(e.find("unknown model 'mamba'") != std::string::npos);
  for (const auto& n : model_names()) {
    CHECK(e.find(n) != std::string::npos);
    CHECK(error_of([&] { check_model_name(n); }).empty());
  }
  // ttt-<learner>[-<optimizer>][-before][-mamba]
  const auto t = parse_ttt_name("ttt-swiglu-muon-before-mamba");
  REQUIRE(t.has_value());
  CHECK((t->learner == "swiglu" && t->optimizer == "muon" && t->before && t->mamba));
  const auto g = parse_ttt_name("ttt-linear-before");
  REQUIRE(g.has_value());
  CHECK((g->learner == "linear" && g->optimizer == "gd" && g->before && !g->mamba));
  CHECK(!parse_ttt_name("ttt-linear-befor").has_value());
  CHECK(!parse_ttt_name("ttt-linear-mamba-before").has_value());
}

TEST_CASE("position buckets: 0, then floor(log2 t) + 1; token-weighted means") {
  CHECK(bucket_of(0) == 0);
  CHECK(bucket_of(1) == 1);
  CHECK(bucket_of(2) == 2);
  CHECK(bucket_of(3) == 2);
  CHECK(bucket_of(4) == 3);
  CHECK(bucket_of(7) == 3);
  CHECK(bucket_of(255) == 8);
  CHECK(bucket_of(256) == 9);
  for (int b = 0; b < 20; ++b) {
    CHECK(bucket_of(bucket_lo(b)) == b);
    CHECK(bucket_of(bucket_hi(b)) == b);
    CHECK(bucket_of(bucket_hi(b) + 1) == b + 1);
  }
  // positions 0..9 with loss t and count 1 + t % 3: a bucket's mean is sum / count over its tokens
  std::vector<double> sum;
  std::vector<int64_t> count;
  for (int t = 0; t < 10; ++t) count.push_back(1 + t % 3), sum.push_back(double(t) * double(count.back()));
  const auto k = buckets(sum, count);
  REQUIRE(k.size() == 5);  // [0], [1], [2,3], [4,7], [8,9]
  CHECK(k[0].lo == 0);
  CHECK(k[0].hi == 0);
  CHECK(k[0].mean == doctest::Approx(0.0));
  CHECK(k[1].mean == doctest::Approx(1.0));
  CHECK(k[2].lo == 2);
  CHECK(k[2].hi == 3);
  CHECK(k[2].count == 3 + 1);
  CHECK(k[2].mean == doctest::Approx((2.0 * 3 + 3.0 * 1) / 4));
  CHECK(k[3].mean == doctest::Approx((4.0 * 2 + 5.0 * 3 + 6.0 * 1 + 7.0 * 2) / 8));
  CHECK(k[4].lo == 8);
  CHECK(k[4].hi == 9);  // clipped to the last position
  CHECK(k[4].count == 3 + 1);
}

TEST_CASE("per-position cross entropy: uniform logits give log V, a confident right answer about 0") {
  const int64_t V = 256, n = 5;
  const Seq ids = {3, 1, 4, 1, 5};
  std::vector<double> sum;
  std::vector<int64_t> count;
  ttt::Mat zero = ttt::Mat::Zero(n - 1, V);
  add_position_losses(zero, ids, sum, count);
  REQUIRE(sum.size() == size_t(n - 1));
  for (int t = 0; t < n - 1; ++t) {
    CHECK(sum[size_t(t)] == doctest::Approx(std::log(double(V))));
    CHECK(count[size_t(t)] == 1);
  }
  ttt::Mat sure = ttt::Mat::Zero(n - 1, V);
  for (int t = 0; t < n - 1; ++t) sure(t, ids[size_t(t + 1)]) = 40.0f;
  add_position_losses(sure, ids, sum, count);
  for (int t = 0; t < n - 1; ++t) {
    CHECK(sum[size_t(t)] == doctest::Approx(std::log(double(V))).epsilon(1e-6));
    CHECK(count[size_t(t)] == 2);
  }
}

TEST_CASE("results: atomic files, resume skips finished parts, refuses other settings, a fresh run clears markers") {
  const fs::path d = temp_dir("results");
  const nlohmann::json s = {{"task", "mqar"}, {"tokens", 100}};
  {
    Results r(d, s, false);
    CHECK_FALSE(r.done("train-a"));
    r.write("x/a.csv", "one\n");
    r.write("x/a.csv", "two\n");
    CHECK(ttt::io::read_file(d / "x/a.csv") == "two\n");
    r.finish("train-a");
    CHECK_FALSE(r.done("train-a"));  // without resume nothing counts as done
  }
  for (const auto& e : fs::recursive_directory_iterator(d))
    CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);  // no temporary left behind
  {
    Results r(d, s, true);
    CHECK(r.done("train-a"));
    CHECK_FALSE(r.done("train-b"));
    r.finish("train-ab");
    r.finish("time-a");
    CHECK(r.done_with_prefix("train-a") == 2);
    CHECK(r.done_with_prefix("train-") == 2);
    CHECK(r.done_with_prefix("time-") == 1);
    CHECK(r.done_with_prefix("eval-") == 0);
  }
  nlohmann::json other = s;
  other["tokens"] = 200;
  const std::string e = error_of([&] { Results r(d, other, true); });
  CHECK(e.find("tokens") != std::string::npos);
  CHECK(e.find("--resume") != std::string::npos);
  CHECK(e.find("task") == std::string::npos);  // only the keys that differ
  {
    Results r(d, other, false);  // a fresh run starts over
  }
  {
    Results r(d, other, true);
    CHECK_FALSE(r.done("train-a"));
  }
  fs::remove_all(d);
}

TEST_CASE("statistics over seeds: mean and sample sd of the finite values") {
  const Stat a = stat_of({1.0, 2.0, 3.0});
  CHECK(a.n == 3);
  CHECK(a.mean == doctest::Approx(2.0));
  CHECK(a.sd == doctest::Approx(1.0));
  const Stat b = stat_of({2.0, INFINITY, NAN, 4.0});  // a diverged seed does not count
  CHECK(b.n == 2);
  CHECK(b.mean == doctest::Approx(3.0));
  CHECK(b.sd == doctest::Approx(std::sqrt(2.0)));
  const Stat c = stat_of({5.0});
  CHECK(c.n == 1);
  CHECK(c.sd == 0.0);
  CHECK(stat_of({}).n == 0);
  CHECK(std::isnan(stat_of({INFINITY}).mean));
}

TEST_CASE("median: the middle value, or the mean of the middle two") {
  CHECK(median({3.0, 1.0, 2.0}) == 2.0);
  CHECK(median({4.0, 1.0, 3.0, 2.0}) == 2.5);
  CHECK(median({100.0, 1.0, 1.5}) == 1.5);  // one slow run (a pause) does not move it
  CHECK(median({7.0}) == 7.0);
  CHECK(std::isnan(median({})));
}

TEST_CASE("training loss by span: the mean over equal spans of the steps; a span never reached is NaN") {
  std::vector<std::vector<double>> log;
  for (int s = 1; s <= 16; ++s) log.push_back({double(s), double(s), 0.01, 0, 0});  // loss = step
  const auto q = loss_by_span(log, 16, 4);
  REQUIRE(q.size() == 4);
  CHECK(q[0] == doctest::Approx(2.5));   // steps 1-4
  CHECK(q[3] == doctest::Approx(14.5));  // steps 13-16
  const auto u = loss_by_span(log, 10, 3);  // uneven spans of 10 steps: 1-4, 5-7, 8-10; steps past 10 ignored
  CHECK(u[0] == doctest::Approx(2.5));
  CHECK(u[1] == doctest::Approx(6.0));
  CHECK(u[2] == doctest::Approx(9.0));
  log.resize(5);  // a run that diverged at step 6
  const auto d = loss_by_span(log, 16, 4);
  CHECK(d[1] == doctest::Approx(5.0));
  CHECK(std::isnan(d[2]));
  CHECK(std::isnan(d[3]));
}

TEST_CASE("learning-rate sweep: the grid, then half or twice the edge while the choice sits there") {
  const std::vector<double> grid = {0.002, 0.004, 0.008, 0.016};
  // a validation score with its minimum at `best` (log2 distance), infinite above `diverge`
  auto bowl = [](double best, double diverge = 2.0) {
    return [=](double lr) { return lr > diverge ? INFINITY : std::pow(std::log2(lr) - std::log2(best), 2.0); };
  };
  SUBCASE("an interior choice adds nothing") {
    const Sweep s = sweep_rates(grid, 2, bowl(0.004));
    CHECK(s.lrs == grid);
    CHECK(s.chosen == 0.004);
    CHECK(s.added == 0);
    CHECK_FALSE(s.edge);
  }
  SUBCASE("below the grid: down by halves until the choice is interior") {
    std::vector<double> calls;
    const Sweep s = sweep_rates(grid, 3, [&](double lr) { calls.push_back(lr); return bowl(0.001)(lr); });
    CHECK(calls == std::vector<double>{0.002, 0.004, 0.008, 0.016, 0.001, 0.0005});  // each rate once, in this order
    CHECK(s.lrs == calls);
    CHECK(s.scores.size() == calls.size());
    CHECK(s.chosen == 0.001);
    CHECK(s.added == 2);
    CHECK_FALSE(s.edge);
  }
  SUBCASE("the limit reached at the edge: flagged") {
    const Sweep s = sweep_rates(grid, 2, bowl(1e-4));
    CHECK(s.lrs.back() == 0.0005);
    CHECK(s.chosen == 0.0005);
    CHECK(s.added == 2);
    CHECK(s.edge);
  }
  SUBCASE("above the grid: up by doubles; a diverged run is never chosen") {
    const Sweep s = sweep_rates(grid, 4, bowl(0.1, 0.05));
    CHECK(s.lrs == std::vector<double>{0.002, 0.004, 0.008, 0.016, 0.032, 0.064});
    CHECK(std::isinf(s.scores.back()));
    CHECK(s.chosen == 0.032);
    CHECK_FALSE(s.edge);
  }
  SUBCASE("every run diverged: the grid's first, one rate below it tried") {
    const Sweep s = sweep_rates(grid, 2, [](double) { return INFINITY; });
    CHECK(s.lrs.size() == 5);
    CHECK(s.lrs.back() == 0.001);
    CHECK(s.chosen == 0.002);
  }
  SUBCASE("no steps: the grid only, an edge choice flagged; one rate: no sweep; rates stay at most 1") {
    const Sweep a = sweep_rates(grid, 0, bowl(1e-4));
    CHECK(a.lrs == grid);
    CHECK(a.chosen == 0.002);
    CHECK(a.edge);
    const Sweep b = sweep_rates({0.01}, 2, bowl(1e-4));
    CHECK(b.lrs == std::vector<double>{0.01});
    CHECK_FALSE(b.edge);
    const Sweep c = sweep_rates({0.25, 0.5, 1.0}, 2, bowl(4.0, 8.0));
    CHECK(c.lrs.size() == 3);
    CHECK(c.chosen == 1.0);
    CHECK(c.edge);
  }
}

TEST_CASE("recall scores: the argmax at each answer against the value, and the answer's loss") {
  const Seq ids = {20, 140, 1, 20, 140, 1};
  const std::vector<int64_t> answers = {3};
  ttt::Mat lg = ttt::Mat::Zero(5, 256);
  Recalled r;
  add_answer_scores(lg, ids, answers, r);  // a tie: argmax is id 0, wrong; loss log 256
  CHECK(r.total == 1);
  CHECK(r.correct == 0);
  CHECK(r.loss == doctest::Approx(std::log(256.0)));
  lg(3, 140) = 30;
  add_answer_scores(lg, ids, answers, r);
  CHECK(r.total == 2);
  CHECK(r.correct == 1);
  CHECK(r.loss == doctest::Approx(std::log(256.0)).epsilon(1e-6));
}

TEST_CASE("text from a folder: documents separated by byte 0, every id a byte") {
  const fs::path d = temp_dir("folder");
  std::string one(30000, 'a'), two(30000, 'b');
  std::ofstream(d / "1.txt") << one;
  std::ofstream(d / "2.txt") << two;
  auto task = make_task("text:" + d.string());
  bool saw_sep = false;
  for (const auto& s : batch(*task, 16, 2000, Split::train, 2))
    for (size_t t = 0; t < s.size(); ++t) {
      CHECK((s[t] >= 0 && s[t] < 256));
      if (s[t] == 0) {
        saw_sep = true;
        REQUIRE(t > 0);
        CHECK(s[t - 1] == 'a');
      }
    }
  CHECK(saw_sep);
  fs::remove_all(d);
}
