#pragma once
/// \file train/optim.hpp
/// The optimiser side of the training recipe of ttt-lm-jax: AdamW with decoupled weight decay
/// (skipped for norms, biases and the token index: `ParamRef::no_decay`), a cosine learning-rate
/// schedule with linear warm-up down to a floor, global gradient-norm clipping, gradient
/// accumulation over micro-batches, and the warm-up of the TTT inner learning rate `ttt_base_lr`.
///
/// \code
///   ttt::train::AdamW opt({.weight_decay = 0.1});
///   opt.init(model);
///   ttt::train::CosineSchedule sched{.peak = 3e-3, .floor = 1e-5, .warmup = 100, .total = 1000};
///   double loss = ttt::train::loss_and_grad(model, batch, grad);
///   ttt::train::clip_grad_norm(grad, 1.0);
///   opt.step(model, grad, sched(opt.steps()));
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../io/safetensors.hpp"
#include "../core/params.hpp"

namespace ttt::train {

/// Linear warm-up from peak / warmup to `peak` over `warmup` steps, then a half cosine from
/// `peak` down to `floor` at step `total`. `lr(s)` is the rate of update s (0-based).
struct CosineSchedule {
  double peak = 3e-3;
  double floor = 1e-5;
  int64_t warmup = 0;
  int64_t total = 1;

  double operator()(int64_t s) const { return lr(s); }
  double lr(int64_t s) const {
    const double lo = std::min(floor, peak);
    if (s < warmup) return peak * double(s + 1) / double(warmup);
    const int64_t span = std::max<int64_t>(1, total - warmup);
    const double p = std::clamp(double(s - warmup) / double(span), 0.0, 1.0);
    return lo + 0.5 * (peak - lo) * (1.0 + std::cos(std::numbers::pi * p));
  }
};

/// The TTT inner learning rate of update s (0-based) with the JAX recipe's warm-up: it ramps
/// linearly from 0 to `base_lr` over `warmup` updates ((s + 1) / warmup of it), then stays.
inline double ttt_base_lr_at(double base_lr, int64_t s, int64_t warmup) {
  if (warmup <= 0 || s + 1 >= warmup) return base_lr;
  return base_lr * double(s + 1) / double(warmup);
}

/// Set the inner learning rate of every TTT layer and of the config (the gradient reads the
/// config's `ttt_base_lr`, the forward each layer's `base_lr`). Mixers without one (attention:
/// the transformer baseline) are left alone.
template <class Model>
void set_ttt_base_lr(Model& model, double v) {
  model.cfg.ttt_base_lr = v;
  for (auto& b : model.blocks)
    if constexpr (requires { b.mixer.base_lr; }) b.mixer.base_lr = v;
}

namespace detail {
template <class Model>
std::vector<ParamRef> params_of(Model& m) {
  std::vector<ParamRef> out;
  m.visit_params([&](ParamRef p) { out.push_back(std::move(p)); });
  return out;
}
}  // namespace detail

/// sqrt of the sum of squares of every gradient entry (in double).
template <class Model>
double grad_norm(Model& grad) {
  double s = 0;
  grad.visit_params([&](const ParamRef& p) {
    p.for_range(0, p.numel(), [&](int64_t, float x) { s += double(x) * double(x); });
  });
  return std::sqrt(s);
}

/// Multiply every gradient entry by `s`.
template <class Model>
void scale_grad(Model& grad, double s) {
  grad.visit_params([&](const ParamRef& p) {
    p.for_range(0, p.numel(), [&](int64_t, float& x) { x = float(double(x) * s); });
  });
}

/// Global-norm clipping as torch.nn.utils.clip_grad_norm_: when the norm exceeds `max_norm`
/// (> 0), scale every entry by max_norm / (norm + 1e-6). Returns the norm before clipping (may be
/// NaN or Inf; then nothing is scaled). max_norm <= 0: no clipping.
template <class Model>
double clip_grad_norm(Model& grad, double max_norm) {
  const double n = grad_norm(grad);
  if (max_norm > 0 && std::isfinite(n) && n > max_norm) scale_grad(grad, max_norm / (n + 1e-6));
  return n;
}

/// acc += g, entry by entry (gradient accumulation: sum the micro-batches, then scale_grad).
template <class Model>
void add_grad(Model& acc, Model& g) {
  const std::vector<ParamRef> a = detail::params_of(acc), b = detail::params_of(g);
  if (a.size() != b.size()) throw ShapeError("add_grad: models of different configurations");
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].numel() != b[k].numel()) throw ShapeError("add_grad: tensor '" + a[k].name + "' differs in size");
    a[k].for_pair(b[k], 0, a[k].numel(), [](int64_t, float& x, float y) { x += y; });
  }
}

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  ///< decoupled; only parameters with no_decay == false
};

/// AdamW as torch.optim.AdamW: p *= 1 - lr * wd (decay params only); m = b1 m + (1 - b1) g;
/// v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
/// The moments are kept as float, one vector per parameter in visit_params order; the update is
/// computed in double per entry.
class AdamW {
 public:
  AdamWOptions opt;

  AdamW() = default;
  explicit AdamW(AdamWOptions o) : opt(o) {}

  /// Zero moments for the parameters of `model`, step 0.
  template <class Model>
  void init(Model& model) {
    names_.clear(), m_.clear(), v_.clear(), step_ = 0;
    model.visit_params([&](const ParamRef& p) {
      names_.push_back(p.name);
      m_.emplace_back(size_t(p.numel()), 0.0f);
      v_.emplace_back(size_t(p.numel()), 0.0f);
    });
  }

  int64_t steps() const { return step_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<float>& m(size_t i) const { return m_[i]; }
  const std::vector<float>& v(size_t i) const { return v_[i]; }

  /// One update of `model` with gradient `grad` at learning rate `lr`.
  template <class Model>
  void step(Model& model, Model& grad, double lr) {
    const std::vector<ParamRef> P = detail::params_of(model), G = detail::params_of(grad);
    if (P.size() != names_.size() || G.size() != P.size())
      throw ShapeError("AdamW::step: the model does not match the optimiser state (call init)");
    ++step_;
    const double b1 = opt.beta1, b2 = opt.beta2;
    const double bc1 = 1.0 - std::pow(b1, double(step_)), bc2 = 1.0 - std::pow(b2, double(step_));
    const double step_size = lr / bc1, sq_bc2 = std::sqrt(bc2);
    for (size_t k = 0; k < P.size(); ++k) {
      const ParamRef &p = P[k], &g = G[k];
      if (p.name != names_[k] || p.numel() != int64_t(m_[k].size()) || g.numel() != p.numel())
        throw ShapeError("AdamW::step: tensor '" + p.name + "' does not match the optimiser state");
      const double decay = p.no_decay ? 1.0 : 1.0 - lr * opt.weight_decay;
      float* mk = m_[k].data();
      float* vk = v_[k].data();
      parallel_ranges(p.numel(), int64_t(1) << 14, [&](int64_t b, int64_t e) {
        p.for_pair(g, b, e, [&](int64_t i, float& pi, float gf) {
          const double gi = double(gf);
          const double mi = b1 * double(mk[i]) + (1.0 - b1) * gi;
          const double vi = b2 * double(vk[i]) + (1.0 - b2) * gi * gi;
          mk[i] = float(mi), vk[i] = float(vi);
          const double w = double(pi) * decay;
          pi = float(w - step_size * double(mk[i]) / (std::sqrt(double(vk[i])) / sq_bc2 + opt.eps));
        });
      });
    }
  }

  /// The state as safetensors tensors: `exp_avg.NAME`, `exp_avg_sq.NAME` (F32, the parameter's
  /// shape) and `step` (I64 [1]).
  template <class Model>
  void save(Model& model, io::SafeTensorsWriter& w) const {
    size_t k = 0;
    model.visit_params([&](const ParamRef& p) {
      if (k >= names_.size() || p.name != names_[k]) throw ShapeError("AdamW::save: the model does not match the state");
      w.add("exp_avg." + p.name, p.shape, m_[k]);
      w.add("exp_avg_sq." + p.name, p.shape, v_[k]);
      ++k;
    });
    w.add_int64("step", {1}, std::span<const int64_t>(&step_, 1));
  }

  /// Read the state written by save; FormatError naming the file when a tensor is missing or
  /// mis-shaped.
  template <class Model>
  void load(Model& model, const io::SafeTensors& st) {
    init(model);
    size_t k = 0;
    model.visit_params([&](const ParamRef& p) {
      for (auto [prefix, dst] : {std::pair{"exp_avg.", &m_[k]}, std::pair{"exp_avg_sq.", &v_[k]}}) {
        const std::string n = prefix + p.name;
        if (!st.contains(n)) throw FormatError(st.source() + ": missing optimiser tensor '" + n + "'");
        *dst = st.read_float(n, p.shape);
      }
      ++k;
    });
    if (!st.contains("step")) throw FormatError(st.source() + ": missing tensor 'step'");
    step_ = st.read_int("step", {1})[0];
    if (step_ < 0) throw FormatError(st.source() + ": negative step");
  }

 private:
  std::vector<std::string> names_;
  std::vector<std::vector<float>> m_, v_;
  int64_t step_ = 0;
};

}  // namespace ttt::train
