// The instances of the attention model and of the hierarchical transformer for one scalar S:
// attention.cpp and hier.cpp expand them for float, double/attention.cpp and double/hier.cpp for
// double (the learners' instances: instantiate_learner.hpp).
#pragma once
#include <cstdint>
#include <vector>

#include <ttt/layers/attention_layer.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/graph.hpp>
#include <ttt/models/hier/loss.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

// The attention layer, its reverse pass, the attention language model and its gradient.
#define TTT_INSTANTIATE_ATTENTION(S)                                                                  \
  namespace ttt {                                                                                     \
  template class AttentionLayer<S>;                                                                   \
  template struct MixerGrad<AttentionLayer<S>>;                                                       \
  template class CausalLM<AttentionLayer<S>>;                                                         \
  namespace train {                                                                                   \
  template class ModelGrad<TransformerModelT<S>>;                                                     \
  }                                                                                                   \
  }

// The hierarchical transformer's forward, loss (with gradients) and cached decoder.
#define TTT_INSTANTIATE_HIER(S)                                                                       \
  namespace ttt::hier {                                                                               \
  template struct HierParams<S>;                                                                      \
  template ad::Matrix<S> forward_logits<S>(const HierParams<S>&, const std::vector<int64_t>&,         \
                                           ForwardExtras<S>*);                                        \
  template Losses loss<S>(const HierParams<S>&, const std::vector<std::vector<int64_t>>&, HierParams<S>*); \
  template class Decoder<S>;                                                                          \
  }
