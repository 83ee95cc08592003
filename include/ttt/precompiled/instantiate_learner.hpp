// The instances of one learner L (TTT layer, its reverse pass, the language model and its gradient)
// in float, and in double with the learner checks: <learner>.cpp expands the float macro and
// double/<learner>.cpp the double one (the double units are compiled apart: the top CMakeLists.txt,
// ttt_precompiled_double).
#pragma once
#include <ttt/layers/ttt_layer.hpp>
#include <ttt/layers/ttt_layer_grad.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/gradcheck.hpp>
#include <ttt/train/model_grad.hpp>

// One scalar's instances of L (layer, its reverse pass, the language model and its gradient).
#define TTT_INSTANTIATE_LEARNER_IN(L, S)                                                              \
  namespace ttt {                                                                                     \
  template class TTTLayer<L, S>;                                                                      \
  template struct MixerGrad<TTTLayer<L, S>>;                                                          \
  template class CausalLM<TTTLayer<L, S>>;                                                            \
  namespace train {                                                                                   \
  template class ModelGrad<TTTModel<L, S>>;                                                           \
  }                                                                                                   \
  }
#define TTT_INSTANTIATE_LEARNER_FLOAT(L) TTT_INSTANTIATE_LEARNER_IN(L, float)
#define TTT_INSTANTIATE_LEARNER_DOUBLE(L)                                                             \
  TTT_INSTANTIATE_LEARNER_IN(L, double)                                                               \
  namespace ttt::train {                                                                              \
  template GradCheckResult check_learner_forward<L>(int64_t, int64_t, uint64_t);                      \
  template GradCheckResult check_learner_backward<L>(int64_t, int64_t, uint64_t, double);             \
  }
