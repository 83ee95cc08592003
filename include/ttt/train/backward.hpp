#pragma once
/// \file train/backward.hpp
/// Exact gradients: the model's (train/model_grad.hpp) and a TTT layer's (layers/ttt_layer_grad.hpp).
#include "../layers/ttt_layer_grad.hpp"
#include "model_grad.hpp"
