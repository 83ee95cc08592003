#pragma once
/// \file ttt.hpp
/// Umbrella header: everything of the ttt library, layer by layer (docs/architecture.md).

// core: errors, tensors, parameters, the model configuration, threads
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/model_config.hpp"
#include "core/parallel.hpp"
#include "core/params.hpp"
#include "core/tensor.hpp"
// kernels: element-wise SIMD kernels and their scalar twins
#include "kernels/backend.hpp"
#include "kernels/scalar.hpp"
#include "kernels/simd.hpp"
// blocks: each with its forward and its vector-Jacobian product
#include "blocks/activations.hpp"
#include "blocks/attention.hpp"
#include "blocks/causal_conv.hpp"
#include "blocks/cross_entropy.hpp"
#include "blocks/kv_cache.hpp"
#include "blocks/layer_norm.hpp"
#include "blocks/ln_l2.hpp"
#include "blocks/rms_norm.hpp"
#include "blocks/rope.hpp"
#include "blocks/swiglu.hpp"
// inner: the learners (the TTT hidden state) and the name -> learner registry
#include "ad/real.hpp"
#include "inner/derived.hpp"
#include "inner/inner_grad.hpp"
#include "inner/learner.hpp"
#include "inner/learner_grad.hpp"
#include "inner/linear.hpp"
#include "inner/linear_attention.hpp"
#include "inner/mlp.hpp"
#include "inner/primal.hpp"
#include "inner/registry.hpp"
// layers: the sequence mixers
#include "layers/attention_layer.hpp"
#include "layers/mixer.hpp"
#include "layers/ttt_layer.hpp"
#include "layers/ttt_layer_grad.hpp"
// io: files, safetensors, JSON, the byte tokenizer
#include "io/config_json.hpp"
#include "io/file.hpp"
#include "io/safetensors.hpp"
#include "io/tokenizer.hpp"
// models: the language-model stack, TTT and attention models, checkpoints, generation
#include "models/any_model.hpp"
#include "models/causal_lm.hpp"
#include "models/checkpoint.hpp"
#include "models/generate.hpp"
#include "models/transformer.hpp"
#include "models/ttt_model.hpp"
// train: exact gradients, optimiser, data, the training loop
#include "train/data.hpp"
#include "train/gradcheck.hpp"
#include "train/model_grad.hpp"
#include "train/optim.hpp"
#include "train/trainer.hpp"
// ad + models/hier: the reverse-mode tape and the hierarchical transformer on it
#include "ad/ops.hpp"
#include "ad/tape.hpp"
#include "models/hier/config.hpp"
#include "models/hier/decode.hpp"
#include "models/hier/generate.hpp"
#include "models/hier/model.hpp"
#include "models/hier/receptive_field.hpp"
