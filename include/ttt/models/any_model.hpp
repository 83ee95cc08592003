#pragma once
/// \file models/any_model.hpp
/// `AnyModel`: a TTT model whose inner learner is chosen at run time from `ttt_layer_type`, for
/// programs (the `ttt` command-line tool) that load whatever checkpoint they are given. It is a
/// thin `std::variant` over the built-in learners; code that knows its learner at compile time
/// uses `TTTModel<L>` directly.
///
/// \code
///   ttt::AnyModel m = ttt::AnyModel::load("checkpoints/125m");
///   ttt::AnyModel::Session s = m.session();
///   ttt::Mat logits;
///   s.feed(prompt, ttt::Logits::last, &logits);   // prefill
///   s.feed(next_token, ttt::Logits::last, &logits);  // one decode step
/// \endcode
///
/// AnyModel also has the `new_state()` / `forward(State&, ...)` pair of TTTModel, so the generic
/// functions (`ttt::generate`) take it as they take a TTTModel<L>.
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/model_config.hpp"
#include "../core/params.hpp"
#include "../core/tensor.hpp"
#include "../inner/registry.hpp"
#include "checkpoint.hpp"
#include "ttt_model.hpp"

namespace ttt {

namespace detail {
template <class Tuple>
struct models_of;
template <class... L>
struct models_of<std::tuple<L...>> {
  using Variant = std::variant<TTTModel<L>...>;
  using State = std::variant<typename TTTModel<L>::State...>;
};
}  // namespace detail

/// Learners: a std::tuple of the learners it may hold (the registry's built-in ones for `AnyModel`).
template <class Learners>
class AnyModelT {
 public:
  /// A TTTModel of each learner.
  using Variant = typename detail::models_of<Learners>::Variant;
  /// Per-sequence state; holds the state type of the model's learner.
  using State = typename detail::models_of<Learners>::State;

  /// The `ttt_layer_type` values AnyModel understands (inner/registry.hpp), as messages list them.
  static std::string learner_names() { return inner::builtin_names<Learners>(); }

  explicit AnyModelT(Variant m) : m_(std::move(m)) {}
  template <class L>
  explicit AnyModelT(TTTModel<L> m) : m_(std::move(m)) {}

  /// Read `dir/config.json`, pick the learner from its `ttt_layer_type`, load `dir/model.safetensors`.
  static AnyModelT load(const std::filesystem::path& dir) {
    const ModelConfig cfg = load_checkpoint_config(dir);
    const std::filesystem::path src = std::filesystem::is_directory(dir) ? dir : dir.parent_path();
    const std::string where = (src / "config.json").string();
    return inner::with_learner<Learners>(cfg.ttt_layer_type, where, [&]<class L>() {
      TTTModel<L> m = construct<L>(cfg, where);
      load_weights(m, io::load_checkpoint_weights(src));  // model.safetensors or its shards
      return AnyModelT(std::move(m));
    });
  }

  /// TTTModel<L>(cfg), its ConfigErrors naming `where` (the checkpoint's config.json) rather than "config".
  template <class L>
  static TTTModel<L> construct(const ModelConfig& cfg, const std::string& where) {
    try {
      return TTTModel<L>(cfg);
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      if (msg.rfind("config: ", 0) == 0) throw ConfigError(where + msg.substr(6));
      throw;
    }
  }

  /// A randomly initialised model (the reference's initialisation, seeded).
  static AnyModelT create(const ModelConfig& cfg, uint64_t seed = 0) {
    return inner::with_learner<Learners>(cfg.ttt_layer_type, "config", [&]<class L>() {
      TTTModel<L> m(cfg);
      m.init_weights(seed);
      return AnyModelT(std::move(m));
    });
  }

  const ModelConfig& cfg() const {
    return std::visit([](const auto& m) -> const ModelConfig& { return m.cfg; }, m_);
  }
  /// "linear" or "mlp".
  std::string_view learner() const {
    return std::visit([](const auto& m) -> std::string_view { return std::decay_t<decltype(m)>::Learner::name; }, m_);
  }
  int64_t num_params() const {
    // visit_params hands out writable references, so it is not const; counting writes nothing.
    return std::visit([](auto& m) { return m.num_params(); }, const_cast<Variant&>(m_));
  }
  int64_t state_bytes() const {
    return std::visit([](const auto& m) { return m.state_bytes(); }, m_);
  }
  /// TTTModel<L>::set_weight_dtype of the held model (bf16: half the bytes per decoded token;
  /// core/weight_dtype.hpp).
  void set_weight_dtype(WeightDtype d) {
    std::visit([&](auto& m) { m.set_weight_dtype(d); }, m_);
  }
  WeightDtype weight_dtype() const {
    return std::visit([](const auto& m) { return m.weight_dtype(); }, m_);
  }
  /// Write `dir/config.json` and `dir/model.safetensors` (atomically, creating dir).
  void save(const std::filesystem::path& dir) {
    std::visit([&](auto& m) { save_checkpoint(m, dir); }, m_);
  }

  Variant& variant() { return m_; }
  const Variant& variant() const { return m_; }

  // ---- the TTTModel interface, for generic code --------------------------------------------

  State new_state() const {
    return std::visit([](const auto& m) -> State { return m.new_state(); }, m_);
  }

  /// TTTModel<L>::forward of the held model. Error when `st` was made by a model of another learner.
  void forward(State& st, std::span<const int64_t> ids, Mat* logits, Logits which = Logits::all,
               std::vector<Mat>* hidden = nullptr) const {
    std::visit(
        [&](const auto& m, auto& s) {
          using M = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<typename M::State, std::decay_t<decltype(s)>>)
            m.forward(s, ids, logits, which, hidden);
          else
            throw Error("AnyModel::forward: the state belongs to a model of another learner type");
        },
        m_, st);
  }

  /// TTTModel<L>::forward_rows of the held model (batched decode: one token for each of B
  /// sequences). Error when a state is missing or was made by a model of another learner.
  void forward_rows(std::span<State* const> states, std::span<const int64_t> ids, Mat* logits) const {
    std::visit(
        [&](const auto& m) {
          using S = typename std::decay_t<decltype(m)>::State;
          std::vector<S*> held(states.size());
          for (size_t b = 0; b < states.size(); ++b) {
            held[b] = states[b] ? std::get_if<S>(states[b]) : nullptr;
            if (states[b] && !held[b])
              throw Error("AnyModel::forward_rows: the state of sequence " + std::to_string(b) +
                          " belongs to a model of another learner type");
          }
          m.forward_rows(std::span<S* const>(held), ids, logits);
        },
        m_);
  }

  /// Full-sequence forward from a fresh state: (n, V) logits.
  Mat forward(std::span<const int64_t> ids, std::vector<Mat>* hidden = nullptr) const {
    State st = new_state();
    Mat logits;
    forward(st, ids, &logits, Logits::all, hidden);
    return logits;
  }

  // ---- a sequence being processed ----------------------------------------------------------

  /// One sequence's state together with the model it runs on. The model must outlive the session
  /// and stay where it is (a session keeps its address). Sessions of one model are independent:
  /// several can run on different threads at once.
  class Session {
   public:
    /// Run `ids` from the current position; see TTTModel::forward for `which`, `logits`, `hidden`.
    void feed(std::span<const int64_t> ids, Logits which = Logits::last, Mat* logits = nullptr,
              std::vector<Mat>* hidden = nullptr) {
      model_->forward(state_, ids, logits, which, hidden);
    }
    /// Tokens seen so far.
    int64_t position() const {
      return std::visit([](const auto& s) { return s.pos; }, state_);
    }
    /// Back to an empty sequence.
    void reset() { state_ = model_->new_state(); }
    const AnyModelT& model() const { return *model_; }
    State& state() { return state_; }

   private:
    friend class AnyModelT;
    explicit Session(const AnyModelT& m) : model_(&m), state_(m.new_state()) {}
    const AnyModelT* model_;
    State state_;
  };

  Session session() const { return Session(*this); }

 private:
  Variant m_;
};

/// A TTT model of any built-in learner (inner/registry.hpp).
using AnyModel = AnyModelT<inner::Builtin>;

}  // namespace ttt
