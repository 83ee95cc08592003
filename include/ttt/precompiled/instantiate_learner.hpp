// The instances of one learner L (TTT layer, its reverse pass, the language model and its gradient,
// the learner checks) in float and double (float alone with TTT_PRECOMPILED_FLOAT_ONLY);
// <learner>.cpp expands it once per learner, in its own translation unit so that the learners
// compile in parallel.
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
// Built with TTT_PRECOMPILED_DOUBLE=OFF (TTT_PRECOMPILED_FLOAT_ONLY), float alone: a program that
// runs models in float (the study, scripts/demo.sh) builds the library in about half the time.
#if defined(TTT_PRECOMPILED_FLOAT_ONLY)
#define TTT_INSTANTIATE_LEARNER(L) TTT_INSTANTIATE_LEARNER_FLOAT(L)
#else
#define TTT_INSTANTIATE_LEARNER(L) TTT_INSTANTIATE_LEARNER_FLOAT(L) TTT_INSTANTIATE_LEARNER_DOUBLE(L)
#endif
