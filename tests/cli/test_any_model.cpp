// AnyModel: learner picked from the config, save/load round trip, sessions.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <unistd.h>

#include <ttt/models/any_model.hpp>

namespace fs = std::filesystem;

namespace {

ttt::ModelConfig small(const std::string& layer) { return ttt::ModelConfig::sized(layer, 40, 32, 2, 4, 48, 4); }

struct TempDir {
  fs::path path;
  TempDir() {
    static std::atomic<int> n{0};
    path = fs::temp_directory_path() / ("ttt_cli_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("AnyModel: create, save, load for each built-in learner") {
  for (const char* layer : {"linear", "mlp"}) {
    CAPTURE(layer);
    ttt::AnyModel m = ttt::AnyModel::create(small(layer), 3);
    CHECK(m.learner() == layer);
    CHECK(m.cfg().ttt_layer_type == layer);
    CHECK(m.num_params() > 0);
    CHECK(m.state_bytes() > 0);
    CHECK(m.variant().index() == (std::string(layer) == "linear" ? 0u : 1u));

    TempDir d;
    m.save(d.path / "ckpt");
    const ttt::AnyModel back = ttt::AnyModel::load(d.path / "ckpt");
    CHECK(back.learner() == layer);
    CHECK(back.num_params() == m.num_params());
    const std::vector<int64_t> ids = {1, 5, 7, 39, 0, 2, 2, 11, 30};
    const ttt::Mat a = m.forward(ids), b = back.forward(ids);
    CHECK(a.rows() == 9);
    CHECK(a.cols() == 40);
    CHECK((a - b).cwiseAbs().maxCoeff() == 0.0f);
    // config.json given directly works as well
    CHECK(ttt::AnyModel::load(d.path / "ckpt" / "config.json").learner() == layer);
  }
}

TEST_CASE("AnyModel: an unknown ttt_layer_type is a ConfigError listing the built-in learners") {
  ttt::ModelConfig c = small("transformer");
  try {
    (void)ttt::AnyModel::create(c, 0);
    FAIL("no error");
  } catch (const ttt::ConfigError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("transformer") != std::string::npos);
    CHECK(msg.find("linear, mlp") != std::string::npos);
  }

  TempDir d;
  ttt::AnyModel m = ttt::AnyModel::create(small("linear"), 0);
  m.save(d.path);
  ttt::ModelConfig edited = m.cfg();
  edited.ttt_layer_type = "rnn";
  ttt::save_config(edited, d.path / "config.json");
  try {
    (void)ttt::AnyModel::load(d.path);
    FAIL("no error");
  } catch (const ttt::ConfigError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("config.json") != std::string::npos);
    CHECK(msg.find("linear, mlp") != std::string::npos);
  }
  CHECK_THROWS_AS((void)ttt::AnyModel::load(d.path / "nope"), ttt::Error);
}

TEST_CASE("AnyModel::Session: chunked feeding equals the full forward") {
  for (const char* layer : {"linear", "mlp"}) {
    CAPTURE(layer);
    const ttt::AnyModel m = ttt::AnyModel::create(small(layer), 8);
    const std::vector<int64_t> ids = {4, 8, 15, 16, 23, 42 % 40, 1, 2, 3, 5, 8, 13, 21};
    const ttt::Mat full = m.forward(ids);

    ttt::AnyModel::Session s = m.session();
    CHECK(s.position() == 0);
    ttt::Mat lg;
    std::vector<ttt::Mat> hidden;
    s.feed(std::span<const int64_t>(ids).first(6), ttt::Logits::last, &lg, &hidden);
    CHECK(s.position() == 6);
    CHECK(hidden.size() == 2);
    CHECK(lg.rows() == 1);
    CHECK((lg.row(0) - full.row(5)).cwiseAbs().maxCoeff() < 1e-4f);
    for (size_t t = 6; t < ids.size(); ++t) {
      s.feed(std::span<const int64_t>(ids).subspan(t, 1), ttt::Logits::last, &lg);
      CHECK((lg.row(0) - full.row(Eigen::Index(t))).cwiseAbs().maxCoeff() < 1e-4f);
    }
    CHECK(s.position() == int64_t(ids.size()));
    s.reset();
    CHECK(s.position() == 0);
    s.feed(ids, ttt::Logits::none);
    CHECK(s.position() == int64_t(ids.size()));
  }

  // A state of one learner cannot be used with a model of the other.
  const ttt::AnyModel lin = ttt::AnyModel::create(small("linear"), 1);
  const ttt::AnyModel mlp = ttt::AnyModel::create(small("mlp"), 1);
  ttt::AnyModel::State st = mlp.new_state();
  ttt::Mat lg;
  const std::vector<int64_t> ids = {1, 2};
  CHECK_THROWS_AS(lin.forward(st, ids, &lg, ttt::Logits::last), ttt::Error);
}
