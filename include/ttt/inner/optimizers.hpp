#pragma once
/// \file inner/optimizers.hpp
/// The built-in inner optimizers, in the order error messages list them. A program with an
/// optimizer of its own passes a longer tuple as TTTLayer's third template parameter.
#include <tuple>

#include "optimizers/adam.hpp"
#include "optimizers/decay.hpp"
#include "optimizers/gd.hpp"
#include "optimizers/momentum.hpp"
#include "optimizers/muon.hpp"

namespace ttt::inner {

using BuiltinOptimizers = std::tuple<GD, Momentum, Decay, Muon, Adam>;

}  // namespace ttt::inner
