// Precompiled instances for the project's own programs (tests, examples, benchmarks), inner::Linear:
// programs compiled with TTT_PRECOMPILED see them as `extern template` and link them from here
// instead of compiling them again (docs/architecture.md, "Build time").
#include <ttt/inner/linear.hpp>

#include "instantiate_learner.hpp"

TTT_INSTANTIATE_LEARNER(ttt::inner::Linear)
