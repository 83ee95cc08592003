#pragma once
// The example learners, for a `ttt` program that knows them (ttt-custom, CMakeLists.txt here):
//   ttt-custom init --layer bias_free_linear --out DIR
//   ttt-custom train --layer relu_mlp --data TEXT --out DIR
#include "bias_free_linear.hpp"
#include "relu_mlp.hpp"
