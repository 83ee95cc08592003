// Checkpoints: save -> load round trip, F16/BF16 weights, and the errors for missing, extra,
// mis-shaped tensors and bad token ids.
#include <doctest/doctest.h>

#include "test_helpers.hpp"

using namespace ttt;
namespace test_checkpoint {

namespace fs = std::filesystem;

fs::path tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("ttt_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ttt::Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST_CASE_TEMPLATE("save -> load round trip gives the same logits", Lrn, inner::Linear, inner::MLP) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  c.tie_word_embeddings = false;
  TTTModel<Lrn> m(c);
  th::randomize(m, 3);
  const fs::path dir = tmpdir("roundtrip");
  save_checkpoint(m, dir);
  CHECK(fs::exists(dir / "config.json"));
  auto m2 = load_checkpoint<TTTModel<Lrn>>(dir);
  CHECK(to_json(m2.cfg) == to_json(m.cfg));
  const auto ids = th::random_ids(20, c.vocab_size, 1);
  CHECK(th::rel_err(m.forward(ids), m2.forward(ids)) == 0.0);
  fs::remove_all(dir);
}

TEST_CASE("the reference checkpoint re-saved by us loads back bit-identical") {
  const fs::path src = th::reference_dir() / "ttt-lm-pytorch" / "linear_tiny";
  if (!fs::exists(src)) return;
  auto m = load_checkpoint<TTTModel<inner::Linear>>(src);
  const fs::path dir = tmpdir("resave");
  save_checkpoint(m, dir);
  const auto a = io::SafeTensors::load(src / "model.safetensors");
  const auto b = io::SafeTensors::load(dir / "model.safetensors");
  CHECK(a.names() == b.names());
  for (const auto& n : a.names()) CHECK(a.read_float(n) == b.read_float(n));
  fs::remove_all(dir);
}

TEST_CASE("F16 and BF16 checkpoints load as float") {
  ModelConfig c = th::small_config("linear");
  TTTModel<inner::Linear> m(c);
  th::randomize(m, 4);
  for (int kind = 0; kind < 2; ++kind) {
    io::SafeTensorsWriter w;
    TTTModel<inner::Linear> rounded(c);
    std::vector<ParamRef> dst;
    rounded.visit_params([&](const ParamRef& p) { dst.push_back(p); });
    size_t i = 0;
    m.visit_params([&](const ParamRef& p) {
      std::vector<float> v(size_t(p.numel()));
      p.copy_out(v.data());
      for (float& x : v) x = kind == 0 ? io::half_to_float(io::float_to_half(x)) : io::bf16_to_float(io::float_to_bf16(x));
      if (kind == 0) w.add_f16(p.name, p.shape, v);
      else w.add_bf16(p.name, p.shape, v);
      dst[i++].copy_in(v.data());
    });
    const fs::path dir = tmpdir("half");
    w.save(dir / "model.safetensors");
    save_config(c, dir / "config.json");
    auto loaded = load_checkpoint<TTTModel<inner::Linear>>(dir);
    const auto ids = th::random_ids(10, c.vocab_size, 2);
    CHECK(th::rel_err(loaded.forward(ids), rounded.forward(ids)) == 0.0);
    fs::remove_all(dir);
  }
}

TEST_CASE("checkpoint errors name the file and the tensor") {
  ModelConfig c = th::small_config("linear");
  TTTModel<inner::Linear> m(c);
  th::randomize(m, 5);
  const fs::path dir = tmpdir("errors");
  save_config(c, dir / "config.json");
  auto write_with = [&](const std::function<void(io::SafeTensorsWriter&, const ParamRef&)>& each) {
    io::SafeTensorsWriter w;
    m.visit_params([&](const ParamRef& p) { each(w, p); });
    return w;
  };
  auto plain = [](io::SafeTensorsWriter& w, const ParamRef& p) {
    std::vector<float> v(size_t(p.numel()));
    p.copy_out(v.data());
    w.add(p.name, p.shape, v);
  };
  SUBCASE("missing tensor") {
    write_with([&](io::SafeTensorsWriter& w, const ParamRef& p) {
      if (p.name != "model.layers.1.seq_modeling_block.W1") plain(w, p);
    }).save(dir / "model.safetensors");
    const auto msg = message_of([&] { load_checkpoint<TTTModel<inner::Linear>>(dir); });
    CHECK(msg.find("model.layers.1.seq_modeling_block.W1") != std::string::npos);
    CHECK(msg.find("missing") != std::string::npos);
    CHECK(msg.find("model.safetensors") != std::string::npos);
  }
  SUBCASE("mis-shaped tensor") {
    write_with([&](io::SafeTensorsWriter& w, const ParamRef& p) {
      if (p.name == "model.norm.weight") {
        std::vector<float> v(size_t(p.numel() - 1), 1.0f);
        w.add(p.name, {p.numel() - 1}, v);
      } else plain(w, p);
    }).save(dir / "model.safetensors");
    const auto msg = message_of([&] { load_checkpoint<TTTModel<inner::Linear>>(dir); });
    CHECK(msg.find("model.norm.weight") != std::string::npos);
    CHECK(msg.find("[32]") != std::string::npos);
    CHECK(msg.find("[31]") != std::string::npos);
  }
  SUBCASE("extra tensor") {
    auto w = write_with(plain);
    std::vector<float> v(3, 0.0f);
    w.add("model.layers.0.seq_modeling_block.W2", {3}, v);
    w.save(dir / "model.safetensors");
    const auto msg = message_of([&] { load_checkpoint<TTTModel<inner::Linear>>(dir); });
    CHECK(msg.find("unexpected tensor 'model.layers.0.seq_modeling_block.W2'") != std::string::npos);
  }
  SUBCASE("a linear checkpoint loaded as mlp") {
    write_with(plain).save(dir / "model.safetensors");
    const auto msg = message_of([&] { load_checkpoint<TTTModel<inner::MLP>>(dir); });
    CHECK(msg.find("W1") != std::string::npos);
  }
  SUBCASE("no checkpoint folder") {
    const auto msg = message_of([&] { load_checkpoint<TTTModel<inner::Linear>>(dir / "nope"); });
    CHECK(msg.find("nope") != std::string::npos);
  }
  fs::remove_all(dir);
}

TEST_CASE("token ids outside the vocabulary and empty input are errors") {
  ModelConfig c = th::small_config("linear");
  TTTModel<inner::Linear> m(c);
  const std::vector<int64_t> bad{1, 2, 53};
  const auto msg = message_of([&] { m.forward(bad); });
  CHECK(msg.find("53") != std::string::npos);
  CHECK(msg.find("position 2") != std::string::npos);
  CHECK(message_of([&] { m.forward(std::vector<int64_t>{-1}); }).find("-1") != std::string::npos);
  CHECK(message_of([&] { m.forward(std::vector<int64_t>{}); }).find("empty") != std::string::npos);
}

TEST_CASE("configurations that cannot work are refused before any model is built") {
  auto msg_of_cfg = [](const std::function<void(ModelConfig&)>& edit) {
    ModelConfig c = th::small_config("linear");
    edit(c);
    return message_of([&] { TTTModel<inner::Linear> m(c); });
  };
  CHECK(msg_of_cfg([](ModelConfig& c) { c.mini_batch_size = 0; }).find("mini_batch_size") != std::string::npos);
  CHECK(msg_of_cfg([](ModelConfig& c) { c.num_attention_heads = 5; }).find("divisible") != std::string::npos);
  CHECK(msg_of_cfg([](ModelConfig& c) { c.hidden_size = 36; c.num_attention_heads = 4; }).find("even") != std::string::npos);
  CHECK(msg_of_cfg([](ModelConfig& c) { c.conv_kernel = 0; }).find("conv_kernel") != std::string::npos);
}

TEST_CASE("state bytes: inner weights + accumulated gradients (+ conv histories)") {
  ModelConfig c = th::small_config("linear");
  TTTModel<inner::Linear> m(c);
  const int64_t f = c.head_dim(), H = c.num_attention_heads;
  CHECK(m.state_bytes() == c.num_hidden_layers * 2 * H * (f * f + f) * 4);
  c.pre_conv = c.share_qk = true;
  TTTModel<inner::Linear> m2(c);
  CHECK(m2.state_bytes() == c.num_hidden_layers * (2 * H * (f * f + f) + 2 * (c.conv_kernel - 1) * c.hidden_size) * 4);
}

TEST_CASE("ParamRef::for_range, for_pair and fill walk the entries at(i) walks, for strided per-head tensors and any range") {
  // 3 blocks of 5 values, 7 apart (a learner's parameter inside the flat per-head states)
  std::vector<float> buf(21);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
  ParamRef p;
  p.data = buf.data(), p.blocks = 3, p.block_size = 5, p.stride = 7;
  for (int64_t b = 0; b <= p.numel(); ++b)
    for (int64_t e = b; e <= p.numel(); ++e) {
      std::vector<int64_t> seen;
      p.for_range(b, e, [&](int64_t i, float& x) {
        CHECK(&x == &p.at(i));
        seen.push_back(i);
      });
      REQUIRE(int64_t(seen.size()) == e - b);
      for (int64_t k = 0; k < e - b; ++k) CHECK(seen[size_t(k)] == b + k);
    }
  ParamRef q = p;
  CHECK(p.same_layout(q));
  std::vector<float> dense(15);  // the same tensor stored contiguously: another layout
  ParamRef d = p;
  d.data = dense.data(), d.stride = 5;
  CHECK(!p.same_layout(d));
  for (const ParamRef* o : {&q, &d})  // for_pair pairs entry i with o's entry i, either layout
    for (int64_t b = 0; b <= p.numel(); ++b)
      for (int64_t e = b; e <= p.numel(); ++e) {
        int64_t next = b;
        p.for_pair(*o, b, e, [&](int64_t i, float& x, float& y) {
          CHECK(i == next++);
          CHECK(&x == &p.at(i));
          CHECK(&y == &o->at(i));
        });
        CHECK(next == e);
      }
  p.fill(-1.0f);  // the entries, not the gaps between the blocks
  for (size_t i = 0; i < buf.size(); ++i) CHECK(buf[i] == (i % 7 < 5 ? -1.0f : float(i)));
}

TEST_CASE("inner states and the learners' work buffers are allocated at Eigen's alignment") {
  // Eigen's vectorised sums over a view start at its first aligned entry: buffers at a fixed
  // alignment make them split the same way in every run (a run reproduces bit for bit).
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % EIGEN_MAX_ALIGN_BYTES == 0; };
  train::Scratch<float> ws;
  for (size_t i = 0; i < 6; ++i)
    for (Eigen::Index r : {1, 3, 17}) CHECK(aligned(ws(i, r, 5).data()));
  ModelConfig c = th::small_config("linear");
  TTTModel<inner::Linear> m(c);
  auto st = m.new_state();
  for (const auto& l : st.layers) {
    CHECK(aligned(l.theta.data()));
    CHECK(aligned(l.gacc.data()));
  }
}

}  // namespace test_checkpoint
