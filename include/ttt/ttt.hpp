#pragma once
/// \file ttt.hpp
/// Umbrella header: everything of the ttt library.
#include "config.hpp"
#include "error.hpp"
#include "tensor.hpp"
#include "model_config.hpp"
#include "params.hpp"
#include "nn.hpp"
#include "inner/learner.hpp"
#include "inner/linear.hpp"
#include "inner/mlp.hpp"
#include "layer.hpp"
#include "model.hpp"
#include "io/file.hpp"
#include "io/safetensors.hpp"
#include "checkpoint.hpp"
