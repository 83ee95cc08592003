// Must NOT compile: the learner has no name.
#include <ttt/ttt.hpp>

struct Nameless {
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }
  static void apply(const float*, int64_t, ttt::CMatRef, ttt::MatRef) {}
  static void accumulate_grad(const float*, int64_t, ttt::CMatRef, ttt::CMatRef, const float*, float*) {}
};

int main() {
  ttt::TTTLayer<Nameless> layer;
  return int(layer.C);
}
