// ttt::precompiled, inner::Linear in float (double: double/linear.cpp): programs that link
// ttt::precompiled (TTT_PRECOMPILED) see these instances as `extern template` and take them from
// here instead of compiling them again (docs/architecture.md, "Build time").
#include <ttt/inner/linear.hpp>

#include "instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_FLOAT(ttt::inner::Linear)
