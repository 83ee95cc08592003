// ttt::precompiled, inner::LinearAttention in float (double: double/linear_attention.cpp): programs that link
// ttt::precompiled (TTT_PRECOMPILED) see these instances as `extern template` and take them from
// here instead of compiling them again (docs/architecture.md, "Build time").
#include <ttt/inner/linear_attention.hpp>

#include "instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER_FLOAT(ttt::inner::LinearAttention)
