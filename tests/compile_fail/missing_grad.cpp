// Must NOT compile: the learner has no inner gradient (no accumulate_grad, and an apply that takes
// float only, so none can be derived). The test passes when the compiler's error says so in a
// sentence (see CMakeLists.txt).
#include <ttt/ttt.hpp>

struct NoGradLearner {
  static constexpr std::string_view name = "no_grad";
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }
  static void apply(const float* theta, int64_t f, ttt::CMatRef X, ttt::MatRef Z) {
    Z.noalias() = X * ttt::CMapMat(theta, f, f);
  }
#ifdef TTT_COMPILE_FAIL_CONTROL
  static void accumulate_grad(const float*, int64_t, ttt::CMatRef, ttt::CMatRef, const float*, float*) {}
#endif
};

int main() {
  const auto cfg = ttt::ModelConfig::sized("no_grad", 10, 16, 1, 2, 8);
  ttt::TTTModel<NoGradLearner> model(cfg);
  return int(model.num_params() == 0);
}
