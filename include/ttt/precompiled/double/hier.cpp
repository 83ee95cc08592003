// ttt::precompiled: the hierarchical transformer's forward, loss (with gradients) and cached
// decoder, in double (float: ../hier.cpp).
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/graph.hpp>
#include <ttt/models/hier/loss.hpp>
#include <ttt/models/hier/model.hpp>

namespace ttt::hier {
template ad::Matrix<double> forward_logits<double>(const HierParams<double>&, const std::vector<int64_t>&,
                                                   ForwardExtras<double>*);
template Losses loss<double>(const HierParams<double>&, const std::vector<std::vector<int64_t>>&, HierParams<double>*);
template class Decoder<double>;
}  // namespace ttt::hier
