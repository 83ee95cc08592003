// ttt::precompiled: the attention layer, its reverse pass, the attention language model and its
// gradient, in float (see linear.cpp; double: double/attention.cpp).
#include <ttt/layers/attention_layer.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

namespace ttt {
template class AttentionLayer<float>;
template struct MixerGrad<AttentionLayer<float>>;
template class CausalLM<AttentionLayer<float>>;
}  // namespace ttt

namespace ttt::train {
template class ModelGrad<TransformerModelT<float>>;
}  // namespace ttt::train
