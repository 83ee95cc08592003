// Plug user-defined inner learners into the library's TTT model: build a small model around each,
// prefill a prompt, decode a few tokens with the state cache and check that the decode agrees with
// a full forward; then train it for a few steps (exact gradients, derived from the learner's map)
// and check that the loss falls.
#include <cstdio>
#include <exception>
#include <vector>

#include <ttt/ttt.hpp>

#include "bias_free_linear.hpp"
#include "relu_mlp.hpp"

template <class Learner>
int run() {
  const auto cfg = ttt::ModelConfig::sized(std::string(Learner::name), /*vocab=*/64, /*hidden=*/32, /*layers=*/2,
                                           /*heads=*/4, /*intermediate=*/64, /*mini_batch=*/8);
  ttt::TTTModel<Learner> model(cfg);
  model.init_weights(/*seed=*/42);

  // a sequence that repeats itself: the second half is predictable from the first
  std::vector<int64_t> ids;
  for (int i = 0; i < 32; ++i) ids.push_back((i % 16) * 37 % cfg.vocab_size);
  const ttt::Mat full = model.forward(ids);  // (32, V)

  auto state = model.new_state();
  ttt::Mat logits;
  model.forward(state, std::span<const int64_t>(ids.data(), 11), &logits, ttt::Logits::last);  // prefill
  double worst = 0;
  for (size_t t = 11; t < ids.size(); ++t) {  // decode, one token at a time
    model.forward(state, std::span<const int64_t>(ids.data() + t, 1), &logits, ttt::Logits::last);
    worst = std::max(worst, double((logits.row(0) - full.row(long(t))).cwiseAbs().maxCoeff()));
  }

  // train: AdamW on the exact gradient of the next-token loss
  ttt::TTTModel<Learner> grad(cfg);
  ttt::train::AdamW opt({.weight_decay = 0.0});
  opt.init(model);
  double first = 0, last = 0;
  for (int step = 0; step < 30; ++step) {
    last = ttt::train::loss_and_grad(model, {ids}, grad);
    if (step == 0) first = last;
    opt.step(model, grad, 3e-3);
  }
  std::printf("%-18s params %lld  state %lld bytes/sequence  decode vs full max |diff| %.2e  loss %.3f -> %.3f\n",
              std::string(Learner::name).c_str(), (long long)model.num_params(), (long long)model.state_bytes(), worst,
              first, last);
  return worst < 1e-4 && last < 0.7 * first ? 0 : 1;
}

int main() {
  try {
    return run<BiasFreeLinear>() | run<ReluMLP>() | run<ttt::inner::Linear>();
  } catch (const std::exception& e) {  // a bad configuration or TTT_SIMD: the library's message
    std::fprintf(stderr, "custom_learner: %s\n", e.what());
    return 1;
  }
}
