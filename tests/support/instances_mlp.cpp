// Precompiled instances for the project's own programs (tests, examples, benchmarks): the TTT
// layer, its training reverse pass, the language model and its gradient with inner::MLP, in float
// and double. Programs compiled with TTT_PRECOMPILED see these as `extern template` and link them
// from here instead of compiling them again (docs/architecture.md, "Build time").
#include <ttt/inner/mlp.hpp>
#include <ttt/layers/ttt_layer.hpp>
#include <ttt/layers/ttt_layer_grad.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/gradcheck.hpp>
#include <ttt/train/model_grad.hpp>

namespace ttt {
template class TTTLayer<inner::MLP, float>;
template class TTTLayer<inner::MLP, double>;
template struct MixerGrad<TTTLayer<inner::MLP, float>>;
template struct MixerGrad<TTTLayer<inner::MLP, double>>;
template class CausalLM<TTTLayer<inner::MLP, float>>;
template class CausalLM<TTTLayer<inner::MLP, double>>;
}  // namespace ttt

namespace ttt::train {
template class ModelGrad<TTTModel<inner::MLP, float>>;
template class ModelGrad<TTTModel<inner::MLP, double>>;
template GradCheckResult check_learner_forward<inner::MLP>(int64_t, int64_t, uint64_t);
template GradCheckResult check_learner_backward<inner::MLP>(int64_t, int64_t, uint64_t, double);
}  // namespace ttt::train
