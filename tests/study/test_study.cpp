// The study's model-independent pieces (examples/study/study.hpp): task generators, position
// buckets, name errors, atomic result files and resume markers.
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
  for (const std::string name : {"recall", "copy"}) {
    auto task = make_task(name);
    CHECK(task->name() == name);
    const auto a = batch(*task, 6, 257, Split::train, 7), b = batch(*task, 6, 257, Split::train, 7);
    CHECK(a == b);
    CHECK(a != batch(*task, 6, 257, Split::train, 8));
    CHECK(a != batch(*task, 6, 257, Split::held_out, 7));
    // sequence i does not depend on how many were drawn before it (resume draws the same data)
    const auto tail = batch(*task, 3, 257, Split::train, 7, 3);
    CHECK(std::vector<Seq>(a.begin() + 3, a.end()) == tail);
    for (const auto& s : a) {
      CHECK(s.size() == 257);
      for (int64_t t : s) CHECK((t >= 0 && t < 256));
    }
  }
}

TEST_CASE("recall: distinct keys written early, every query's value is the one written for its key") {
  auto task = make_task("recall");
  for (int64_t n : {9, 10, 64, 257, 1000, 4097}) {
    for (const auto& s : batch(*task, 4, n, Split::train, uint64_t(n))) {
      REQUIRE(int64_t(s.size()) == n);
      const int64_t P = Recall::pairs(n);
      std::map<int64_t, int64_t> written;
      for (int64_t i = 0; i < P; ++i) {
        const int64_t k = s[size_t(2 * i)], v = s[size_t(2 * i + 1)];
        CHECK((k >= kKeyLo && k < kKeyHi));
        CHECK((v >= kKeyHi && v < kValHi));
        CHECK(written.count(k) == 0);  // keys are distinct
        written[k] = v;
      }
      int64_t queries = 0;
      for (int64_t t = 2 * P; t + 1 < n; ++t) {
        if (s[size_t(t)] < kKeyLo || s[size_t(t)] >= kKeyHi) continue;  // separator or value
        REQUIRE(written.count(s[size_t(t)]) == 1);                      // only written keys are asked
        CHECK(s[size_t(t + 1)] == written[s[size_t(t)]]);               // the answer is in the data
        ++queries, ++t;
      }
      CHECK(queries >= (n - std::max(2 * P, n / 2)) / 2 - 1);
      CHECK(2 * P <= (n + 1) / 2);  // written in the first half
    }
  }
  CHECK(error_of([&] { task->check_length(8); }).find("too short") != std::string::npos);
}

TEST_CASE("copy: after the separator every token repeats the one m + 1 back") {
  auto task = make_task("copy");
  for (int64_t n : {3, 4, 17, 256, 1025}) {
    for (const auto& s : batch(*task, 3, n, Split::held_out, 5)) {
      const int64_t m = Copy::payload(n);
      REQUIRE(int64_t(s.size()) == n);
      CHECK(s[size_t(m)] == kSep);
      for (int64_t t = 0; t < m; ++t) CHECK(s[size_t(t)] != kSep);
      for (int64_t t = m + 1; t < n; ++t) CHECK(s[size_t(t)] == s[size_t(t - m - 1)]);
    }
  }
}

TEST_CASE("text: windows come from the file, the last 5% held out; short text is refused with a message") {
  const fs::path d = temp_dir("text");
  std::string text;
  for (int i = 0; i < 2000; ++i) text += "line " + std::to_string(i) + " of the corpus\n";
  std::ofstream(d / "a.txt") << text;
  auto task = make_task("text:" + (d / "a.txt").string());
  const size_t cut = text.size() - text.size() / 20;
  for (const auto& s : batch(*task, 5, 100, Split::train, 1)) {
    std::string w;
    for (int64_t t : s) w += char(t);
    const size_t at = text.find(w);
    REQUIRE(at != std::string::npos);
    CHECK(at + w.size() <= cut);
  }
  for (const auto& s : batch(*task, 5, 100, Split::held_out, 1)) {
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
  std::string e = error_of([] { make_task("recal"); });
  CHECK(e.find("unknown task 'recal'") != std::string::npos);
  CHECK(e.find("recall, copy, text:PATH") != std::string::npos);
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
  const nlohmann::json s = {{"task", "recall"}, {"tokens", 100}};
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
