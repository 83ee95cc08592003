#include <ttt/ttt.hpp>
int tu_b_params();
int main() {
  const auto cfg = ttt::ModelConfig::sized("linear", 16, 8, 1, 2, 8);
  ttt::TTTModel<ttt::inner::Linear> m(cfg);
  return int(m.num_params()) == tu_b_params() ? 0 : 1;
}
