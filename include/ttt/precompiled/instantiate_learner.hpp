// The instances of one learner L (TTT layer, its reverse pass, the language model and its gradient,
// the learner checks) in float and double; <learner>.cpp expands it once per learner, in
// its own translation unit so that the learners compile in parallel.
#pragma once
#include <ttt/layers/ttt_layer.hpp>
#include <ttt/layers/ttt_layer_grad.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/gradcheck.hpp>
#include <ttt/train/model_grad.hpp>

#define TTT_INSTANTIATE_LEARNER(L)                                                                    \
  namespace ttt {                                                                                     \
  template class TTTLayer<L, float>;                                                                  \
  template class TTTLayer<L, double>;                                                                 \
  template struct MixerGrad<TTTLayer<L, float>>;                                                      \
  template struct MixerGrad<TTTLayer<L, double>>;                                                     \
  template class CausalLM<TTTLayer<L, float>>;                                                        \
  template class CausalLM<TTTLayer<L, double>>;                                                       \
  namespace train {                                                                                   \
  template class ModelGrad<TTTModel<L, float>>;                                                       \
  template class ModelGrad<TTTModel<L, double>>;                                                      \
  template GradCheckResult check_learner_forward<L>(int64_t, int64_t, uint64_t);                      \
  template GradCheckResult check_learner_backward<L>(int64_t, int64_t, uint64_t, double);             \
  }                                                                                                   \
  }
