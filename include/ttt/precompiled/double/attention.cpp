// ttt::precompiled: the attention layer, its reverse pass, the attention language model and its
// gradient, in double (float: ../attention.cpp).
#include <ttt/layers/attention_layer.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

namespace ttt {
template class AttentionLayer<double>;
template struct MixerGrad<AttentionLayer<double>>;
template class CausalLM<AttentionLayer<double>>;
}  // namespace ttt

namespace ttt::train {
template class ModelGrad<TransformerModelT<double>>;
}  // namespace ttt::train
