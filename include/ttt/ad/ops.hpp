#pragma once
/// \file ad/ops.hpp
/// All the differentiable ops of the tape (ad/tape.hpp), each with its VJP, by concept:
///   ad/linalg.hpp     linear, add_row, add, mul, scale, sum; rows, cols, concat_*, gather_rows
///   ad/nn.hpp         gelu, silu, layer_norm, l2_rms_norm, causal_conv1d, rotary
///   ad/attention.hpp  attention (blocks/attention.hpp's tiled kernels), attention_naive
///   ad/loss.hpp       cross_entropy_sum, count_targets, cosine_sum
/// Activations are (n, C) matrices, one row per position; weights have PyTorch's [out, in] layout;
/// vectors (biases, norm weights) are (1, C) rows.
///
/// \code
///   ttt::ad::Tape<double> t;
///   auto x = t.leaf(X);                                   // (n, in)
///   auto W = t.param(Wm, &dW);                            // (out, in); dW receives the gradient
///   auto loss = ttt::ad::sum(ttt::ad::gelu(ttt::ad::linear(x, W)));
///   t.backward(loss);
/// \endcode
#include "attention.hpp"
#include "linalg.hpp"
#include "loss.hpp"
#include "nn.hpp"
#include "tape.hpp"
