#include <ttt/ttt.hpp>
int tu_b_params();
int main() {
  ttt::ModelConfig cfg;
  cfg.vocab_size = 16;
  cfg.hidden_size = 8;
  cfg.intermediate_size = 8;
  cfg.num_hidden_layers = 1;
  cfg.num_attention_heads = 2;
  ttt::TTTModel<ttt::inner::Linear> m(cfg);
  return int(m.num_params()) == tu_b_params() ? 0 : 1;
}
