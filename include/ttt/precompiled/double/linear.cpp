// ttt::precompiled, inner::Linear in double, with the learner checks: what the tests' finite
// differences run (float: ../linear.cpp; compiled in units of their own: see ttt_precompiled_double
// in the top CMakeLists.txt).
#include <ttt/inner/linear.hpp>

#include "../instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_DOUBLE(ttt::inner::Linear)
