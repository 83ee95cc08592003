#include <ttt/ttt.hpp>
int tu_b_params() {
  const auto cfg = ttt::ModelConfig::sized("linear", 16, 8, 1, 2, 8);
  ttt::TTTModel<ttt::inner::Linear> m(cfg);
  return int(m.num_params());
}
