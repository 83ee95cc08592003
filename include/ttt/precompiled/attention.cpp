// ttt::precompiled: the attention layer, its reverse pass, the
// attention language model and its gradient, in float and double (see linear.cpp).
#include <ttt/layers/attention_layer.hpp>
#include <ttt/models/causal_lm.hpp>
#include <ttt/models/transformer.hpp>
#include <ttt/train/model_grad.hpp>

namespace ttt {
template class AttentionLayer<float>;
template struct MixerGrad<AttentionLayer<float>>;
template class CausalLM<AttentionLayer<float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)
template class AttentionLayer<double>;
template struct MixerGrad<AttentionLayer<double>>;
template class CausalLM<AttentionLayer<double>>;
#endif
}  // namespace ttt

namespace ttt::train {
template class ModelGrad<TransformerModelT<float>>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)
template class ModelGrad<TransformerModelT<double>>;
#endif
}  // namespace ttt::train
