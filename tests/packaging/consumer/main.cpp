#include <cstdio>
#include <ttt/ttt.hpp>

int main() {
  ttt::ModelConfig cfg;
  cfg.vocab_size = 32;
  cfg.hidden_size = 16;
  cfg.intermediate_size = 32;
  cfg.num_hidden_layers = 1;
  cfg.num_attention_heads = 2;
  cfg.mini_batch_size = 4;
  ttt::TTTModel<ttt::inner::MLP> model(cfg);
  model.init_weights(1);
  const std::vector<int64_t> ids{1, 2, 3, 4, 5};
  const ttt::Mat logits = model.forward(ids);
  std::printf("consumer ok: logits %ld x %ld\n", long(logits.rows()), long(logits.cols()));
  return logits.allFinite() ? 0 : 1;
}
