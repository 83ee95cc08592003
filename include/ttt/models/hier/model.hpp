#pragma once
/// \file hier/model.hpp
/// lucidrains' simple-hierarchical-transformer (0.2.0, with local-attention 1.11.2) as its code
/// computes it, on the autodiff tape of ttt/ad: logits, the loss and its three parts, and exact
/// gradients. Templated on the scalar type (float for use, double for finite-difference checks).
///
/// HierarchicalTransformerT<T> is the class users name (HierarchicalTransformerT<T, Learners> when
/// its TTT mixers may name learners of the user's own, see HierParams); it ties together one room
/// per concept:
///   params.hpp      HierParams<T, Learners> (its base): the parameters, construction, visitors, init, zero
///   graph.hpp       the computation on the tape (`forward`, Extras: the decoder's taps)
///   loss.hpp        `loss` (CE + recon + hierarchical AR) and the trainer's hooks
///   costs.hpp       forward_flops, train_flops, forward_bytes
///   checkpoint.hpp  load, load_weights, save, serialize_weights
/// (config.hpp: HierConfig; decode.hpp: cached decoding; generate.hpp: sampling.)
///
/// \code
///   auto m = ttt::hier::HierarchicalTransformer::load("path/to/checkpoint");
///   ttt::Mat logits = m.forward({1, 5, 9, 2});                      // (n, V)
///   ttt::hier::HierarchicalTransformer g(m.cfg);                     // zero gradients
///   auto L = m.loss({{1, 5, 9, 2, 7}}, &g);                          // L.total, L.ce, L.recon, L.ar
/// \endcode
#include <algorithm>  // the standard headers model.hpp has always brought (users may rely on them)
#include <cmath>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../../io/checkpoint_weights.hpp"
#include "../../io/safetensors.hpp"
#include "checkpoint.hpp"
#include "config.hpp"
#include "costs.hpp"
#include "graph.hpp"
#include "loss.hpp"
#include "params.hpp"

namespace ttt::hier {

/// The model: its parameters (the public members of HierParams<T>: cfg, emb, layers, ... and
/// visit, visit_params, visit_buffers, visit_ttt, ttt_config, num_params, init_weights, zero) and
/// the operations on them, each forwarding to its room.
template <class T, class Learners>
class HierarchicalTransformerT : public HierParams<T, Learners> {
 public:
  using Base = HierParams<T, Learners>;
  using typename Base::M;
  using typename Base::V;
  using typename Base::Init;
  using typename Base::Attn;
  using typename Base::Block;
  using typename Base::Compress;
  using typename Base::Merge;
  using Extras = ForwardExtras<T>;
  using typename Base::LearnerTuple;

  /// A model of this configuration with zero parameters and the rotary buffers filled in (the
  /// shape of a gradient); call `init_weights` for PyTorch's default initialisation.
  explicit HierarchicalTransformerT(HierConfig c) : Base(std::move(c)) {}

  // ---- FLOP counts (costs.hpp) ----

  double forward_flops(int64_t n) const { return hier::forward_flops(base(), n); }
  double train_flops(int64_t n) const { return hier::train_flops(base(), n); }
  int64_t forward_bytes(int64_t n) const { return hier::forward_bytes(base(), n); }

  // ---- checkpoints (checkpoint.hpp) ----

  /// Build from `dir/config.json` + `dir/model.safetensors` (state_dict names; F32/F16/BF16).
  /// Missing or mis-shaped tensors and tensors that belong to no parameter are errors naming them.
  static HierarchicalTransformerT load(const std::filesystem::path& dir) {
    HierarchicalTransformerT m(checkpoint_config<Learners>(dir));
    m.load_weights(io::load_checkpoint_weights(dir));  // model.safetensors or its shards
    return m;
  }
  void load_weights(const io::SafeTensors& st) { hier::load_weights(base(), st); }
  /// Write `dir/config.json` and `dir/model.safetensors` (F32, parameters and buffers).
  void save(const std::filesystem::path& dir) { hier::save_checkpoint(base(), dir); }
  /// The bytes of `model.safetensors`: every parameter and buffer as F32, state_dict names.
  std::string serialize_weights() { return hier::serialize_weights(base()); }

  // ---- forward and loss (graph.hpp, loss.hpp) ----

  /// Logits (n, V) of one sequence (n <= seq_len); `extras`: see ForwardExtras.
  M forward(const std::vector<int64_t>& ids, Extras* extras = nullptr) const {
    return hier::forward_logits(base(), ids, extras);
  }

  /// Logits (n, V) of one sequence given as a span (ttt::train::windows_loss and other code that
  /// takes any model call this).
  M forward(std::span<const int64_t> ids) const { return forward(std::vector<int64_t>(ids.begin(), ids.end())); }

  /// The training loss of the original on a batch (see hier::loss); with `grad`, d total / d
  /// parameter is ADDED into grad's parameters.
  Losses loss(const std::vector<std::vector<int64_t>>& batch, HierarchicalTransformerT* grad = nullptr) const {
    return hier::loss(base(), batch, static_cast<Base*>(grad));
  }

 private:
  Base& base() { return *this; }
  const Base& base() const { return *this; }
};

using HierarchicalTransformer = HierarchicalTransformerT<float>;

}  // namespace ttt::hier
