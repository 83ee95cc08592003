// ttt::precompiled, inner::LinearAttention in double, with the learner checks: what the tests' finite
// differences run (float: ../linear_attention.cpp; compiled in units of their own: see ttt_precompiled_double
// in the top CMakeLists.txt).
#include <ttt/inner/linear_attention.hpp>

#include "../instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_DOUBLE(ttt::inner::LinearAttention)
