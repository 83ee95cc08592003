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

// Built with TTT_PRECOMPILED_DOUBLE=OFF (TTT_PRECOMPILED_FLOAT_ONLY), float alone: a program that
// runs models in float (the study, scripts/demo.sh) builds the library in about half the time.
#define TTT_INSTANTIATE_LEARNER_FLOAT(L)                                                              \
  namespace ttt {                                                                                     \
  template class TTTLayer<L, float>;                                                                  \
  template struct MixerGrad<TTTLayer<L, float>>;                                                      \
  template class CausalLM<TTTLayer<L, float>>;                                                        \
  namespace train {                                                                                   \
  template class ModelGrad<TTTModel<L, float>>;                                                       \
  }                                                                                                   \
  }
#define TTT_INSTANTIATE_LEARNER_DOUBLE(L)                                                             \
  namespace ttt {                                                                                     \
  template class TTTLayer<L, double>;                                                                 \
  template struct MixerGrad<TTTLayer<L, double>>;                                                     \
  template class CausalLM<TTTLayer<L, double>>;                                                       \
  namespace train {                                                                                   \
  template class ModelGrad<TTTModel<L, double>>;                                                      \
  template GradCheckResult check_learner_forward<L>(int64_t, int64_t, uint64_t);                      \
  template GradCheckResult check_learner_backward<L>(int64_t, int64_t, uint64_t, double);             \
  }                                                                                                   \
  }
#if defined(TTT_PRECOMPILED_FLOAT_ONLY)
#define TTT_INSTANTIATE_LEARNER(L) TTT_INSTANTIATE_LEARNER_FLOAT(L)
#else
#define TTT_INSTANTIATE_LEARNER(L) TTT_INSTANTIATE_LEARNER_FLOAT(L) TTT_INSTANTIATE_LEARNER_DOUBLE(L)
#endif
