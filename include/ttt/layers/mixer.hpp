#pragma once
/// \file layers/mixer.hpp
/// The contract of a sequence mixer: the layer in a block's attention slot (a TTT layer of any
/// learner, softmax attention). models/causal_lm.hpp builds one language model over any mixer;
/// train/model_grad.hpp trains it through the mixer's `MixerGrad` specialisation.
///
/// A mixer type M provides:
/// \code
///   using Scalar; using Config;                    // the scalar; the model configuration it is built from
///   template <class T> using Rebind;               // the same mixer in scalar T (float <-> double)
///   static constexpr const char* kPrefix;          // checkpoint names: "model.layers.{i}." + kPrefix + ...
///   static constexpr bool kPreConv;                // whether the model's optional pre-conv applies
///   explicit M(const Config&);
///   struct State; struct Workspace;                // per sequence; reusable buffers
///   State new_state() const;
///   void forward(const MatT<Scalar>& X, State&, int64_t pos0, Workspace&, MatT<Scalar>& out) const;
///   template <class F> void visit_params(const std::string& prefix, F&&);  // fn(BasicParamRef<Scalar>) per tensor
///   bool same_shape(const M&) const;
///   double flops_per_token() const;               // or a context-dependent count (attention)
/// \endcode
/// and, for training, a specialisation of `MixerGrad<M>` with `Tape`, `Buffers`,
/// `forward(layer, X, out, tape, buffers, group)`, `backward(layer, grad, dout, dX, tape, buffers)`
/// (adds into dX and grad) and `tape_bytes(tape)`.
#include <concepts>
#include <cstdint>
#include <string>

#include "../core/tensor.hpp"

namespace ttt {

/// The training forward / reverse of a mixer type; specialised next to each mixer
/// (layers/ttt_layer_grad.hpp, layers/attention_layer.hpp).
template <class Mixer>
struct MixerGrad;

/// A type the language model can use as its sequence mixer.
template <class M>
concept SequenceMixer = requires(const M& m, M& mm, const MatT<typename M::Scalar>& X, typename M::State& st,
                                 typename M::Workspace& ws, MatT<typename M::Scalar>& out) {
  typename M::Config;
  { M::kPrefix } -> std::convertible_to<const char*>;
  { M::kPreConv } -> std::convertible_to<bool>;
  { m.new_state() } -> std::same_as<typename M::State>;
  m.forward(X, st, int64_t(0), ws, out);
  { m.same_shape(m) } -> std::same_as<bool>;
};

}  // namespace ttt

namespace ttt::train {

/// How gradients are computed (memory against recomputation); the result does not depend on it.
struct GradOptions {
  /// Inner states kept by a TTT layer's forward, as the reference's `scan_checkpoint_group_size`:
  /// -1: the model config's `scan_checkpoint_group_size`; 0: everything, as the reference without
  /// checkpointing: the state at the start of every mini-batch and, for learners that declare them
  /// (MLP, SwiGLU: train::Scratch), each mini-batch's inner forward intermediates, so the reverse
  /// pass does not recompute them (TTT-MLP at f = 64: about half an inner state more per
  /// mini-batch and head); 1: the state at the start of every mini-batch, its inner forward
  /// recomputed in the reverse pass; G > 1: the start of every group of G mini-batches, the
  /// group's inner forward recomputed (memory per head: (mini-batches / G + G) states instead of
  /// one per mini-batch).
  int64_t scan_checkpoint_group = -1;
  /// Keep only each block's input in the forward and recompute one block's forward at a time in
  /// the reverse pass (one more forward; activations of one block instead of all). Attention
  /// models always do.
  bool recompute_blocks = false;
};

}  // namespace ttt::train
