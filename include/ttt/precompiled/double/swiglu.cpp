// ttt::precompiled, inner::SwiGLU in double, with the learner checks: what the tests' finite
// differences run (float: ../swiglu.cpp; compiled in units of their own: see ttt_precompiled_double
// in the top CMakeLists.txt).
#include <ttt/inner/swiglu.hpp>

#include "../instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_DOUBLE(ttt::inner::SwiGLU)
