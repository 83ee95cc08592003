// Properties of the TTT layer and model on configurations the reference vectors do not cover:
// the literal double-precision port of the reference (reference_impl.hpp) on every option;
// dual form == primal form; chunked prefill + decode == one full forward, for every split point;
// the parameter walk through a FunctionRef (core/function_ref.hpp).
#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "reference_impl.hpp"
#include "test_helpers.hpp"

using namespace ttt;

namespace test_properties {

struct Options {
  bool pre_conv, share_qk, use_gate, tie;
};

std::vector<ModelConfig> option_sweep(const std::string& type) {
  std::vector<ModelConfig> out;
  for (int bits = 0; bits < 16; ++bits) {
    ModelConfig c = th::small_config(type);
    c.pre_conv = bits & 1;
    c.share_qk = bits & 2;
    c.use_gate = bits & 4;
    c.tie_word_embeddings = !(bits & 8);
    out.push_back(c);
  }
  // other sizes and numeric options
  ModelConfig c = th::small_config(type);
  c.mini_batch_size = 1;  // online gradient descent
  out.push_back(c);
  c = th::small_config(type);
  c.mini_batch_size = 5;
  c.ttt_base_lr = 0.3;
  c.rope_theta = 500.0;
  c.rms_norm_eps = 1e-5;
  c.conv_kernel = 2;
  c.pre_conv = c.share_qk = c.use_gate = true;
  out.push_back(c);
  c = th::small_config(type);
  c.hidden_size = 42;  // head_dim 14: SIMD remainders
  c.num_attention_heads = 3;
  c.mini_batch_size = 16;
  c.conv_kernel = 5;
  c.share_qk = true;
  out.push_back(c);
  c = th::small_config(type);
  c.hidden_size = 12;  // head_dim 6, one head
  c.num_attention_heads = 2;
  c.num_hidden_layers = 1;
  out.push_back(c);
  return out;
}

std::string describe(const ModelConfig& c) {
  return c.ttt_layer_type + " C=" + std::to_string(c.hidden_size) + " H=" + std::to_string(c.num_attention_heads) +
         " b=" + std::to_string(c.mini_batch_size) + " pre_conv=" + std::to_string(c.pre_conv) +
         " share_qk=" + std::to_string(c.share_qk) + " use_gate=" + std::to_string(c.use_gate) +
         " tie=" + std::to_string(c.tie_word_embeddings) + " K=" + std::to_string(c.conv_kernel);
}

template <class Lrn>
TTTModel<Lrn> make_model(const ModelConfig& c, uint64_t seed, double scale = 0.1) {
  TTTModel<Lrn> m(c);
  th::randomize(m, seed, scale);
  return m;
}

TEST_CASE_TEMPLATE("library == literal double-precision port of the reference, every option", Lrn, inner::Linear,
                   inner::MLP) {
  const std::string type(Lrn::name);
  uint64_t seed = 1;
  for (const ModelConfig& c : option_sweep(type)) {
    INFO(describe(c));
    auto m = make_model<Lrn>(c, seed++);
    const ref::Ref r{c, ref::params_of(m)};
    for (int64_t L : {int64_t(1), int64_t(7), 2 * c.mini_batch_size + 3}) {
      INFO("L = " << L);
      const auto ids = th::random_ids(L, c.vocab_size, seed * 7 + uint64_t(L));
      std::vector<Mat> hid;
      const Mat got = m.forward(ids, &hid);
      std::vector<ref::M> hid_ref;
      const Mat want = r.forward(ids, &hid_ref).cast<float>();
      CHECK(th::rel_err(got, want) < 1e-4);
      REQUIRE(hid.size() == hid_ref.size());
      for (size_t i = 0; i < hid.size(); ++i) CHECK(th::rel_err(hid[i], Mat(hid_ref[i].cast<float>())) < 1e-4);
    }
  }
}

TEST_CASE_TEMPLATE("larger weights still match the double-precision port", Lrn, inner::Linear, inner::MLP) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  auto m = make_model<Lrn>(c, 99, 0.5);
  const ref::Ref r{c, ref::params_of(m)};
  const auto ids = th::random_ids(3 * c.mini_batch_size + 1, c.vocab_size, 5);
  CHECK(th::rel_err(m.forward(ids), Mat(r.forward(ids).cast<float>())) < 1e-4);
}

TEST_CASE_TEMPLATE("dual form == primal form, every option", Lrn, inner::Linear, inner::MLP) {
  uint64_t seed = 100;
  for (const ModelConfig& c : option_sweep(std::string(Lrn::name))) {
    INFO(describe(c));
    auto dual = make_model<Lrn>(c, seed);
    auto primal = make_model<inner::PrimalOnly<Lrn>>(c, seed);
    ++seed;
    const auto ids = th::random_ids(2 * c.mini_batch_size + 5, c.vocab_size, seed);
    CHECK(th::rel_err(dual.forward(ids), primal.forward(ids)) < 1e-5);
  }
}

TEST_CASE_TEMPLATE("the plain GD step fused into the dual form == the step after it, every option", Lrn,
                   inner::Linear, inner::MLP) {
  uint64_t seed = 150;
  for (const ModelConfig& c : option_sweep(std::string(Lrn::name))) {
    INFO(describe(c));
    auto fused = make_model<Lrn>(c, seed);
    auto plain = make_model<Lrn>(c, seed);
    ++seed;
    for (auto& b : plain.blocks) b.mixer.fuse_gd_step = false;
    const auto ids = th::random_ids(3 * c.mini_batch_size + 5, c.vocab_size, seed);
    std::vector<Mat> hf, hp;
    CHECK(th::rel_err(fused.forward(ids, &hf), plain.forward(ids, &hp)) < 1e-6);
    REQUIRE(hf.size() == hp.size());
    for (size_t i = 0; i < hf.size(); ++i) CHECK(th::rel_err(hf[i], hp[i]) < 1e-6);
  }
}

/// Logits of `ids` fed in chunks of the given lengths (cycled), from a new state.
template <class Model>
MatT<typename Model::Scalar> chunked_logits(const Model& m, const std::vector<int64_t>& ids,
                                            const std::vector<int64_t>& lens) {
  const int64_t L = int64_t(ids.size());
  auto st = m.new_state();
  MatT<typename Model::Scalar> got(L, m.cfg.vocab_size), lg;
  for (int64_t t = 0, i = 0; t < L; ++i) {
    const int64_t n = std::min(L - t, lens[size_t(i) % lens.size()]);
    m.forward(st, std::span<const int64_t>(ids.data() + t, size_t(n)), &lg, Logits::all);
    got.middleRows(t, n) = lg;
    t += n;
  }
  return got;
}

TEST_CASE("row decode (gradients kept as rows) == the dual form of one token, every option") {
  // single tokens from every position, and longer chunks after them (the rows go into gacc). The
  // small configs keep 6 rows (P = 552, a row 80 values): a mini-batch of 8 also moves its rows
  // into gacc at its 7th token, one of 5 does not.
  REQUIRE(make_model<inner::MLP>(th::small_config("mlp"), 1).blocks[0].mixer.row_capacity() == 6);
  ModelConfig momentum = th::small_config("mlp");  // other inner optimizers keep no rows, and no State for them
  momentum.ttt_inner_optimizer = "momentum";
  const auto mm = make_model<inner::MLP>(momentum, 1);
  CHECK(mm.blocks[0].mixer.row_capacity() == 0);
  CHECK(mm.blocks[0].mixer.new_state().rows.empty());
  const std::vector<std::vector<int64_t>> schedules{{1}, {3, 1, 1, 1, 1, 1}, {1, 1, 4}, {5, 1, 1, 2, 1}, {9, 1}};
  uint64_t seed = 170;
  for (const ModelConfig& c : option_sweep("mlp")) {
    INFO(describe(c));
    auto rows = make_model<inner::MLP>(c, seed);
    auto plain = make_model<inner::MLP>(c, seed);
    ++seed;
    for (auto& b : plain.blocks) b.mixer.row_decode = false;
    const auto ids = th::random_ids(3 * c.mini_batch_size + 5, c.vocab_size, seed);
    for (const auto& lens : schedules) CHECK(th::rel_err(chunked_logits(rows, ids, lens), chunked_logits(plain, ids, lens)) < 1e-6);
  }
  SUBCASE("double: equal to the last bits") {
    ModelConfig c = th::small_config("mlp");
    c.pre_conv = c.share_qk = c.use_gate = true;
    TTTModel<inner::MLP, double> rows(c);
    th::randomize(rows, 11);
    auto plain = rows;
    for (auto& b : plain.blocks) b.mixer.row_decode = false;
    const auto ids = th::random_ids(3 * c.mini_batch_size + 5, c.vocab_size, 12);
    for (const auto& lens : schedules) {
      const MatD a = chunked_logits(rows, ids, lens), b = chunked_logits(plain, ids, lens);
      CHECK(th::rel_err(a.data(), b.data(), size_t(a.size())) < 1e-12);
    }
  }
}

TEST_CASE_TEMPLATE("prefill P tokens then decode one at a time == full forward, for every P", Lrn, inner::Linear,
                   inner::MLP) {
  uint64_t seed = 200;
  for (const ModelConfig& c : option_sweep(std::string(Lrn::name))) {
    if (c.mini_batch_size == 1 && c.hidden_size != 32) continue;
    INFO(describe(c));
    auto m = make_model<Lrn>(c, seed++);
    const int64_t L = 3 * c.mini_batch_size + 3;
    const auto ids = th::random_ids(L, c.vocab_size, seed);
    const Mat full = m.forward(ids);
    for (int64_t P = 1; P < L; ++P) {
      INFO("P = " << P);
      CHECK(th::rel_err(th::prefill_then_decode(m, ids, P), full) < 1e-5);
    }
  }
}

TEST_CASE_TEMPLATE("any chunking of a sequence == full forward", Lrn, inner::Linear, inner::MLP) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  c.mini_batch_size = 6;
  auto m = make_model<Lrn>(c, 7);
  const int64_t L = 41;
  const auto ids = th::random_ids(L, c.vocab_size, 3);
  const Mat full = m.forward(ids);
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 30; ++trial) {
    auto st = m.new_state();
    Mat got(L, c.vocab_size), lg;
    int64_t t = 0;
    std::string chunks;
    while (t < L) {
      const int64_t n = std::min<int64_t>(L - t, 1 + int64_t(rng() % 14));
      chunks += std::to_string(n) + " ";
      m.forward(st, std::span<const int64_t>(ids.data() + t, size_t(n)), &lg, Logits::all);
      got.middleRows(t, n) = lg;
      t += n;
    }
    INFO("chunks: " << chunks);
    CHECK(th::rel_err(got, full) < 1e-5);
  }
}

TEST_CASE("mini-batch size 1 is online gradient descent on the inner loss") {
  // One TTT-Linear head by hand: W_t = W_{t-1} - eta_t * lr_t * grad(W_{t-1}; x_t), output with W_t.
  ModelConfig c = th::small_config("linear");
  c.mini_batch_size = 1;
  TTTLayer<inner::Linear> layer(c);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> n01;
  TTTModel<inner::Linear> holder(c);
  th::randomize(holder, 17);
  layer = holder.blocks[0].mixer;
  const int64_t L = 9, C = c.hidden_size, f = c.head_dim();
  Mat X(L, C);
  for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = n01(rng);
  auto st = layer.new_state();
  TTTLayer<inner::Linear>::Workspace ws;
  Mat out;
  layer.forward(X, st, 0, ws, out);
  // recompute the inner outputs of head 0 by hand, from the layer's own Q/K/V (ws after forward)
  const float eta = std::max(1.0f + layer.token_idx[0], 0.0f);
  Mat W = CMapMat(layer.theta0.data(), f, f);
  RowVec b = CMapRow(layer.theta0.data() + f * f, f);
  for (int64_t t = 0; t < L; ++t) {
    const RowVec xk = ws.p.XK.block(t, 0, 1, f), xq = ws.p.XQ.block(t, 0, 1, f), xv = ws.p.XV.block(t, 0, 1, f);
    Mat z = xk * W + b, tgt = xv - xk, g(1, f);
    blocks::ln_l2_grad(z, tgt, layer.ln_w.row(0).data(), layer.ln_b.row(0).data(), g);
    const float lr = ws.LRt(0, t);
    W -= eta * lr * xk.transpose() * g;
    b -= eta * lr * g;
    const RowVec zq = xq * W + b;
    CHECK(th::rel_err(zq.data(), ws.Zq.block(t, 0, 1, f).eval().data(), size_t(f)) < 1e-5);
  }
}

/// B sequences of different lengths advanced together by forward_rows (after prefills of their
/// own lengths) against each sequence run on its own: the largest relative error over all steps.
template <class Model>
double batched_decode_err(const Model& m, const std::vector<int64_t>& prompt_lens, int64_t steps, uint64_t seed) {
  using MT = MatT<typename Model::Scalar>;
  const size_t B = prompt_lens.size();
  std::vector<std::vector<int64_t>> seqs;
  for (size_t b = 0; b < B; ++b) seqs.push_back(th::random_ids(prompt_lens[b] + steps, m.cfg.vocab_size, seed + b));
  std::vector<typename Model::State> batch, alone;
  MT lg, one;
  for (size_t b = 0; b < B; ++b) {
    batch.push_back(m.new_state());
    alone.push_back(m.new_state());
    m.forward(batch[b], std::span<const int64_t>(seqs[b]).first(size_t(prompt_lens[b])), &lg, Logits::last);
    m.forward(alone[b], std::span<const int64_t>(seqs[b]).first(size_t(prompt_lens[b])), &lg, Logits::last);
  }
  double worst = 0;
  std::vector<typename Model::State*> ptrs;
  for (auto& s : batch) ptrs.push_back(&s);
  for (int64_t t = 0; t < steps; ++t) {
    std::vector<int64_t> ids;
    for (size_t b = 0; b < B; ++b) ids.push_back(seqs[b][size_t(prompt_lens[b] + t)]);
    m.forward_rows(std::span<typename Model::State* const>(ptrs), ids, &lg);
    REQUIRE(lg.rows() == int64_t(B));
    for (size_t b = 0; b < B; ++b) {
      m.forward(alone[b], std::span<const int64_t>(&ids[b], 1), &one, Logits::last);
      worst = std::max(worst, th::rel_err(lg.row(Eigen::Index(b)).data(), one.data(), size_t(one.cols())));
      CHECK(batch[b].pos == alone[b].pos);
    }
  }
  return worst;
}

TEST_CASE_TEMPLATE("batched decode (forward_rows) == each sequence on its own, every option", Lrn, inner::Linear,
                   inner::MLP) {
  uint64_t seed = 500;
  for (const ModelConfig& c : option_sweep(std::string(Lrn::name))) {
    INFO(describe(c));
    const auto m = make_model<Lrn>(c, seed++);
    const int64_t b = c.mini_batch_size;
    // prompts ending at, before and after mini-batch boundaries; steps cross the next boundary
    CHECK(batched_decode_err(m, {1, b - 1 > 0 ? b - 1 : 2, b, 2 * b + 3, 5}, b + 2, seed) < 1e-5);
  }
  SUBCASE("double: equal to the last bits") {
    ModelConfig c = th::small_config(std::string(Lrn::name));
    c.pre_conv = c.share_qk = c.use_gate = true;
    TTTModel<Lrn, double> md(c);
    th::randomize(md, 9);
    CHECK(batched_decode_err(md, {3, 8, 11}, 10, 4) < 1e-12);
  }
  SUBCASE("one sequence is forward of one token") {
    const auto m = make_model<Lrn>(th::small_config(std::string(Lrn::name)), 3);
    CHECK(batched_decode_err(m, {7}, 9, 1) < 1e-5);
  }
}

TEST_CASE("batched decode: bad input is a clear error") {
  const auto m = make_model<inner::Linear>(th::small_config("linear"), 3);
  auto a = m.new_state(), b = m.new_state();
  Mat lg;
  std::vector<TTTModel<inner::Linear>::State*> two{&a, &b}, same{&a, &a};
  const std::vector<int64_t> ids2{1, 2}, ids1{1}, bad{1, 999};
  CHECK_THROWS_WITH_AS(m.forward_rows(two, ids1, &lg), doctest::Contains("1 tokens for 2 sequences"), ShapeError);
  CHECK_THROWS_WITH_AS(m.forward_rows(same, ids2, &lg), doctest::Contains("are the same state"), ShapeError);
  CHECK_THROWS_WITH_AS(m.forward_rows(two, bad, &lg), doctest::Contains("token id 999 of sequence 1"), ShapeError);
  std::vector<TTTModel<inner::Linear>::State*> none;
  CHECK_THROWS_AS(m.forward_rows(none, std::vector<int64_t>{}, &lg), ShapeError);
  CHECK(a.pos == 0);
  CHECK(b.pos == 0);
}

TEST_CASE_TEMPLATE("a long input runs in chunks of max_chunk: the same logits and hidden states", Lrn, inner::Linear,
                   inner::MLP) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  auto m = make_model<Lrn>(c, 21);
  const auto ids = th::random_ids(45, c.vocab_size, 8);
  m.max_chunk = 0;  // one chunk
  std::vector<Mat> h1, h2;
  const Mat full = m.forward(ids, &h1);
  auto st = m.new_state();
  Mat last1;
  m.forward(st, ids, &last1, Logits::last);
  for (int64_t chunk : {1, 5, 8, 13, 44}) {
    INFO("max_chunk = " << chunk);
    m.max_chunk = chunk;
    CHECK(th::rel_err(m.forward(ids, &h2), full) < 1e-5);
    REQUIRE(h2.size() == h1.size());
    for (size_t i = 0; i < h1.size(); ++i) CHECK(th::rel_err(h2[i], h1[i]) < 1e-5);
    auto s2 = m.new_state();
    Mat last2;
    m.forward(s2, ids, &last2, Logits::last);
    CHECK(th::rel_err(last2, last1) < 1e-5);
    CHECK(s2.pos == 45);
    m.forward(s2, ids, nullptr, Logits::none);  // no logits asked: none computed, the state advances
    CHECK(s2.pos == 90);
  }
}

// ---- bf16 weights (core/weight_dtype.hpp) -----------------------------------------------------

/// The model with its bf16-rounded weights in fp32, without the bf16 copies: the plain twin of a
/// bf16 model (the same values, Eigen's fp32 products).
template <class Model>
Model fp32_twin(const Model& bf16) {
  Model twin = bf16;
  twin.set_weight_dtype(WeightDtype::fp32);
  return twin;
}

bool bf16_exact(const Mat& w) {
  for (Eigen::Index i = 0; i < w.size(); ++i)
    if (kernels::from_bf16(kernels::to_bf16(w.data()[i])) != w.data()[i]) return false;
  return true;
}

TEST_CASE_TEMPLATE("bf16 weights == their fp32 twin (the same rounded values), every option", Lrn, inner::Linear,
                   inner::MLP) {
  uint64_t seed = 700;
  for (const ModelConfig& c : option_sweep(std::string(Lrn::name))) {
    INFO(describe(c));
    const auto orig = make_model<Lrn>(c, seed++);
    auto m = orig;
    m.set_weight_dtype(WeightDtype::bf16);
    REQUIRE(m.weight_dtype() == WeightDtype::bf16);
    CHECK(m.head16 != nullptr);
    CHECK(bf16_exact(m.blocks[0].mixer.q));
    CHECK(bf16_exact(m.blocks[0].mlp.down));
    CHECK(bf16_exact(m.head()));
    const auto twin = fp32_twin(m);
    CHECK(twin.weight_dtype() == WeightDtype::fp32);
    // 40 tokens: prefill products of more rows than the dot-product tiles take (the GEMM path),
    // then decode (one row) across a mini-batch boundary
    const auto ids = th::random_ids(40 + c.mini_batch_size + 3, c.vocab_size, seed);
    const Mat got = th::prefill_then_decode(m, ids, 40);
    const Mat plain = th::prefill_then_decode(twin, ids, 40);
    CHECK(th::rel_err(got, plain) < 1e-5);
    // and the rounding itself moved the logits (by about bf16's precision)
    const double moved = th::rel_err(got, orig.forward(ids));
    CHECK(moved > 1e-5);
    CHECK(moved < 2e-2);
    // batched decode with bf16 weights == each sequence alone with them
    CHECK(batched_decode_err(m, {1, 5, c.mini_batch_size + 2}, c.mini_batch_size + 2, seed) < 1e-5);
  }
}

TEST_CASE("bf16 weights: chunked prefill + decode == one forward; back to fp32; bad requests") {
  ModelConfig c = th::small_config("mlp");
  c.share_qk = c.use_gate = c.pre_conv = true;
  auto m = make_model<inner::MLP>(c, 41);
  m.set_weight_dtype(WeightDtype::bf16);
  const auto ids = th::random_ids(61, c.vocab_size, 5);
  const Mat full = m.forward(ids);
  for (int64_t P : {1, 7, 30, 60}) CHECK(th::rel_err(th::prefill_then_decode(m, ids, P), full) < 1e-5);
  m.max_chunk = 13;  // long inputs in chunks
  CHECK(th::rel_err(m.forward(ids), full) < 1e-5);

  m.set_weight_dtype(WeightDtype::fp32);
  CHECK(m.weight_dtype() == WeightDtype::fp32);
  CHECK(m.head16 == nullptr);
  CHECK(m.blocks[0].mixer.w16 == nullptr);
  CHECK(m.blocks[0].mlp.w16 == nullptr);
  CHECK(bf16_exact(m.blocks[1].mixer.g));  // the values stay rounded

  TTTModel<inner::Linear, double> md(th::small_config("linear"));
  CHECK_THROWS_WITH_AS(md.set_weight_dtype(WeightDtype::bf16), doctest::Contains("need a float model"), ConfigError);
  CHECK(md.weight_dtype() == WeightDtype::fp32);
  CHECK_THROWS_WITH_AS(parse_weight_dtype("fp16", "--dtype"),
                       doctest::Contains("--dtype: unknown weight dtype 'fp16' (valid: fp32, bf16)"), ConfigError);
  CHECK(parse_weight_dtype("bf16") == WeightDtype::bf16);
}

TEST_CASE("FunctionRef calls the callable it refers to; a model's walk through it is the walk of any visitor") {
  int sum = 0;
  auto add = [&](int x) { sum += x; };
  FunctionRef<void(int)> r(add);
  r(2);
  r(3);
  const FunctionRef<void(int)> copy = r;  // a copy refers to the same callable
  copy(1);
  CHECK(sum == 6);
  const auto twice = [](int x) { return 2 * x; };  // a const callable, a result
  CHECK(FunctionRef<int(int)>(twice)(4) == 8);
  struct Counter {
    int n = 0;
    void operator()(const std::string&) { ++n; }
  } counter;
  FunctionRef<void(const std::string&)> c(counter);
  c("a");
  c(std::string("b"));
  CHECK(counter.n == 2);

  // the model's walk (visit_param_refs, one compiled walk) through a lambda, a named ParamVisitor
  // and a visitor taking its ParamRef by value: the same tensors in the same order, every weight
  ModelConfig cfg = th::small_config("mlp");
  cfg.pre_conv = true;
  TTTModel<inner::MLP> model(cfg);
  std::vector<std::string> a, b, v;
  int64_t numel = 0;
  model.visit_params([&](const ParamRef& p) { a.push_back(p.name), numel += p.numel(); });
  auto named = [&](const ParamRef& p) { b.push_back(p.name); };
  model.visit_params(ParamVisitor<float>(named));
  model.visit_params([&](ParamRef p) { v.push_back(std::move(p.name)); });
  CHECK(a == b);
  CHECK(a == v);
  CHECK(numel == model.num_params());
  CHECK(a.front() == "model.embed_tokens.weight");
  CHECK(std::find(a.begin(), a.end(), "model.layers.0.seq_modeling_block.W1") != a.end());
}

}  // namespace test_properties
