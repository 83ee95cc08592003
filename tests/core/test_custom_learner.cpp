// The user-defined learners of examples/custom_learner run in the library's layer and model with
// no change to library code: checked against a hand-written loop of the primal form, and for
// chunked == full.
#include <doctest/doctest.h>

#include "../../examples/custom_learner/bias_free_linear.hpp"
#include "../../examples/custom_learner/relu_mlp.hpp"
#include "test_helpers.hpp"

using namespace ttt;

TEST_CASE("a bias-free linear learner computes W_t = W0 - eta_t sum_{s<=t} lr_s x_s^T g_s") {
  ModelConfig c = th::small_config("bias_free_linear");
  c.mini_batch_size = 4;
  TTTModel<BiasFreeLinear> holder(c);
  th::randomize(holder, 8);
  const auto& layer = holder.blocks[0].mixer;
  const int64_t L = 11, C = c.hidden_size, f = c.head_dim(), mb = c.mini_batch_size;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n01;
  Mat X(L, C);
  for (int64_t i = 0; i < X.size(); ++i) X.data()[i] = n01(rng);
  auto st = layer.new_state();
  TTTLayer<BiasFreeLinear>::Workspace ws;
  Mat out;
  layer.forward(X, st, 0, ws, out);
  for (int64_t h = 0; h < c.num_attention_heads; ++h) {
    Mat W0 = CMapMat(layer.theta0.data() + h * f * f, f, f);
    Mat gacc = Mat::Zero(f, f);
    for (int64_t t = 0; t < L; ++t) {
      const int64_t p = t % mb;
      if (p == 0 && t > 0) gacc.setZero();
      const RowVec xk = ws.p.XK.block(t, h * f, 1, f), xq = ws.p.XQ.block(t, h * f, 1, f), xv = ws.p.XV.block(t, h * f, 1, f);
      Mat z = xk * W0, tgt = xv - xk, g(1, f);
      blocks::ln_l2_grad(z, tgt, layer.ln_w.row(h).data(), layer.ln_b.row(h).data(), g);
      gacc += ws.LRt(h, t) * xk.transpose() * g;
      const float eta = std::max(1.0f / float(p + 1) + layer.token_idx[p], 0.0f);
      const RowVec zq = xq * (W0 - eta * gacc);
      CHECK(th::rel_err(zq.data(), ws.Zq.block(t, h * f, 1, f).eval().data(), size_t(f)) < 1e-5);
      if (p == mb - 1) W0 -= eta * gacc;
    }
  }
}

TEST_CASE_TEMPLATE("user learners: prefill + decode == full forward, save + load round trip", Lrn, BiasFreeLinear,
                   ReluMLP) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  TTTModel<Lrn> m(c);
  th::randomize(m, 12);
  const int64_t L = 2 * c.mini_batch_size + 5;
  const auto ids = th::random_ids(L, c.vocab_size, 4);
  const Mat full = m.forward(ids);
  for (int64_t P : {int64_t(1), int64_t(5), c.mini_batch_size, L - 1})
    CHECK(th::rel_err(th::prefill_then_decode(m, ids, P), full) < 1e-5);
  const auto dir = std::filesystem::temp_directory_path() / ("ttt_custom_" + std::to_string(::getpid()));
  save_checkpoint(m, dir);
  auto m2 = load_checkpoint<TTTModel<Lrn>>(dir);
  CHECK(th::rel_err(m2.forward(ids), full) == 0.0);
  std::filesystem::remove_all(dir);
}
