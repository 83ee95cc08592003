#pragma once
// The hierarchical transformer of this `ttt` program: its TTT mixers (--mixer ttt-<learner>...)
// may name any learner the program knows (learners.hpp), a user's own included. With only the
// built-in learners it is hier::HierarchicalTransformer, compiled once in ttt::precompiled; with
// a user's learners (ttt_add_cli HEADER ... LEARNERS ...) its forward, loss and decoder are
// compiled once, in hier_instances.cpp, and every subcommand's file links to them.
#include <cstdint>
#include <vector>

#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/loss.hpp>
#include <ttt/models/hier/model.hpp>

#include "learners.hpp"

namespace ttt_cli {
using HierModel = ttt::hier::HierarchicalTransformerT<float, Learners>;
}  // namespace ttt_cli

#ifdef TTT_CLI_EXTRA_LEARNERS
namespace ttt::hier {
extern template ad::Matrix<float> forward_logits<float, ttt_cli::Learners>(const HierParams<float, ttt_cli::Learners>&,
                                                                           const std::vector<int64_t>&, ForwardExtras<float>*);
extern template Losses loss<float, ttt_cli::Learners>(const HierParams<float, ttt_cli::Learners>&,
                                                      const std::vector<std::vector<int64_t>>&,
                                                      HierParams<float, ttt_cli::Learners>*);
extern template class Decoder<float, ttt_cli::Learners>;
}  // namespace ttt::hier
#endif
