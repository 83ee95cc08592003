// ttt::precompiled: the hierarchical transformer's forward, loss (with gradients) and cached
// decoder, in float (see linear.cpp; double: double/hier.cpp).
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/graph.hpp>
#include <ttt/models/hier/loss.hpp>
#include <ttt/models/hier/model.hpp>

namespace ttt::hier {
template ad::Matrix<float> forward_logits<float>(const HierParams<float>&, const std::vector<int64_t>&,
                                                 ForwardExtras<float>*);
template Losses loss<float>(const HierParams<float>&, const std::vector<std::vector<int64_t>>&, HierParams<float>*);
template class Decoder<float>;
}  // namespace ttt::hier
