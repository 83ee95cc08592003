// ttt::precompiled, inner::LinearAttention in double, with the learner checks: the tests' finite differences
// (a file of its own, so that a build can compile it with other options: TTT_PRECOMPILED_DOUBLE_OPTIONS).
#include <ttt/inner/linear_attention.hpp>

#include "instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_DOUBLE(ttt::inner::LinearAttention)
