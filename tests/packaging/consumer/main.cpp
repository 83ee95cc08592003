#include <cstdio>
#include <ttt/ttt.hpp>

int main() {
  const auto cfg = ttt::ModelConfig::sized("mlp", /*vocab=*/32, /*hidden=*/16, /*layers=*/1, /*heads=*/2,
                                           /*intermediate=*/32, /*mini_batch=*/4);
  ttt::TTTModel<ttt::inner::MLP> model(cfg);
  model.init_weights(1);
  const std::vector<int64_t> ids{1, 2, 3, 4, 5};
  const ttt::Mat logits = model.forward(ids);
  std::printf("consumer ok: logits %ld x %ld\n", long(logits.rows()), long(logits.cols()));
  return logits.allFinite() ? 0 : 1;
}
