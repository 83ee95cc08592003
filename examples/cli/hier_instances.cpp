// The hierarchical transformer over this program's learners, compiled once (hier_model.hpp). Empty
// without learners of the user's own: the built-in model is in ttt::precompiled.
#include "hier_model.hpp"

#ifdef TTT_CLI_EXTRA_LEARNERS
namespace ttt::hier {
template ad::Matrix<float> forward_logits<float, ttt_cli::Learners>(const HierParams<float, ttt_cli::Learners>&,
                                                                    const std::vector<int64_t>&, ForwardExtras<float>*);
template Losses loss<float, ttt_cli::Learners>(const HierParams<float, ttt_cli::Learners>&,
                                               const std::vector<std::vector<int64_t>>&, HierParams<float, ttt_cli::Learners>*);
template class Decoder<float, ttt_cli::Learners>;
}  // namespace ttt::hier
#endif
