#pragma once
/// \file blocks/activations.hpp
/// The element-wise functions of the models, each with its derivative beside it, generic over the
/// scalar: GELU (tanh form, torch's gelu(approximate="tanh")), the reference's `gelu_bwd` (the
/// derivative TTT-MLP's inner gradient uses, with Megatron's constants) and its own derivative
/// (the outer gradient differentiates through it), SiLU, sigmoid, and the SwiGLU activation chosen
/// by its Hugging Face name. Scalar forms for loops, Eigen expression forms for whole matrices
/// (vectorised tanh / exp, no temporary), and `act_mul`, SwiGLU's fused act(g) * u on floats
/// through the SIMD kernels.
#include <cmath>
#include <concepts>
#include <cstddef>
#include <string>
#include <type_traits>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>  // Array::erf, vectorised for float

#include "../kernels/simd.hpp"

namespace ttt::blocks {

inline constexpr double kSqrt2OverPi = 0.79788456080286535588;

// ---- scalar forms -------------------------------------------------------------------------------

/// A number: a floating-point type or a scalar type of its own (ad::Real), not an Eigen object.
template <class S>
concept Number = !requires { typename S::Scalar; } && requires(S a) { a * a; };

/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
template <Number S>
S gelu(S x) {
  using std::exp, std::tanh;  // or the scalar's own, by argument-dependent lookup (ad::Real)
  return S(0.5) * x * (S(1) + tanh(S(kSqrt2OverPi) * (x + S(0.044715) * x * x * x)));
}
template <Number S>
S gelu_grad(S x) {
  using std::exp, std::tanh;  // or the scalar's own, by argument-dependent lookup (ad::Real)
  const S t = tanh(S(kSqrt2OverPi) * (x + S(0.044715) * x * x * x));
  return S(0.5) * (S(1) + t) + S(0.5) * x * (S(1) - t * t) * S(kSqrt2OverPi) * (S(1) + S(3.0 * 0.044715) * x * x);
}
/// The reference's `gelu_bwd` and its derivative.
template <Number S>
S gelu_bwd_ref(S x) {
  using std::exp, std::tanh;  // or the scalar's own, by argument-dependent lookup (ad::Real)
  const S t = tanh(S(0.79788456) * x * (S(1) + S(0.044715) * x * x));
  return S(0.5) * x * ((S(1) - t * t) * (S(0.79788456) + S(0.1070322243) * x * x)) + S(0.5) * (S(1) + t);
}
template <Number S>
S gelu_bwd_ref_grad(S x) {
  using std::exp, std::tanh;  // or the scalar's own, by argument-dependent lookup (ad::Real)
  const S c1 = S(0.79788456), c2 = S(0.1070322243);
  const S t = tanh(c1 * x * (S(1) + S(0.044715) * x * x));
  const S dt = (S(1) - t * t) * (c1 + S(3) * c1 * S(0.044715) * x * x);
  const S p = c1 + c2 * x * x;
  return S(0.5) * (S(1) - t * t) * p - x * t * dt * p + x * (S(1) - t * t) * c2 * x + S(0.5) * dt;
}
template <Number S>
S sigmoid(S x) {
  using std::exp, std::tanh;  // or the scalar's own, by argument-dependent lookup (ad::Real)
  return S(1) / (S(1) + exp(-x));
}

// ---- matrix forms (Eigen expressions) ----------------------------------------------------------

template <class X>
auto gelu(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  return (S(0.5) * a * (S(1) + (S(kSqrt2OverPi) * (a + S(0.044715) * a.cube())).tanh())).matrix();
}
/// GELU, exact erf form (torch.nn.GELU()): 0.5 x (1 + erf(x / sqrt 2)). Eigen's erf is vectorised
/// for float (a rational approximation, within ~1e-6 of std::erf here); the plain twin is the
/// scalar act(Act::gelu, x) below (tests/hier/test_ad.cpp checks one against the other).
template <class X>
auto gelu_erf(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  return (S(0.5) * a * (S(1) + (a * S(0.70710678118654752440)).erf())).matrix();
}
/// d gelu_erf / dx = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi).
template <class X>
auto gelu_erf_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  return (S(0.5) * (S(1) + (a * S(0.70710678118654752440)).erf()) + a * S(0.39894228040143267794) * (S(-0.5) * a.square()).exp())
      .matrix();
}
template <class X>
auto gelu_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  const auto t = (S(kSqrt2OverPi) * (a + S(0.044715) * a.cube())).tanh();
  return (S(0.5) * (S(1) + t) + S(0.5) * a * (S(1) - t.square()) * S(kSqrt2OverPi) * (S(1) + S(3.0 * 0.044715) * a.square()))
      .matrix();
}
template <class X>
auto gelu_bwd_ref(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto a = x.array();
  const auto t = (S(0.79788456) * a * (S(1) + S(0.044715) * a.square())).tanh();
  return (S(0.5) * a * ((S(1) - t.square()) * (S(0.79788456) + S(0.1070322243) * a.square())) + S(0.5) * (S(1) + t))
      .matrix();
}
template <class X>
auto gelu_bwd_ref_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const S c1 = S(0.79788456), c2 = S(0.1070322243);
  const auto a = x.array();
  const auto t = (c1 * a * (S(1) + S(0.044715) * a.square())).tanh();
  const auto dt = (S(1) - t.square()) * (c1 + S(3) * c1 * S(0.044715) * a.square());
  const auto p = c1 + c2 * a.square();
  return (S(0.5) * (S(1) - t.square()) * p - a * t * dt * p + a * (S(1) - t.square()) * c2 * a + S(0.5) * dt).matrix();
}
/// silu(x) = x sigmoid(x) and its derivative s (1 + x (1 - s)).
template <class X>
auto silu(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  return (x.array() / (S(1) + (-x.array()).exp())).matrix();
}
template <class X>
auto silu_grad(const Eigen::MatrixBase<X>& x) {
  using S = typename X::Scalar;
  const auto s = (S(1) + (-x.array()).exp()).inverse();
  return (s * (S(1) + x.array() * (S(1) - s))).matrix();
}

namespace detail {
/// y[i] = op(x[i]) on buffers of n elements (y may be x): for float the SIMD kernel `simd`
/// (called on the default CPU backend), otherwise the scalar form `op` in a loop.
template <class S, class Simd, class Op>
void map_into(const S* x, S* y, std::size_t n, Simd simd, Op op) {
  if constexpr (std::is_same_v<S, float>) simd(backend::cpu_default{}, x, y, n);
  else
    for (std::size_t i = 0; i < n; ++i) y[i] = op(x[i]);
}
}  // namespace detail

/// y = gelu(x) on buffers (y may be x).
template <class S>
void gelu_into(const S* x, S* y, std::size_t n) {
  detail::map_into(x, y, n, [](auto... a) { kernels::gelu_tanh(a...); }, [](const S& v) { return gelu(v); });
}
/// y = gelu_bwd_ref(x) on buffers.
template <class S>
void gelu_bwd_ref_into(const S* x, S* y, std::size_t n) {
  detail::map_into(x, y, n, [](auto... a) { kernels::gelu_tanh_grad(a...); }, [](const S& v) { return gelu_bwd_ref(v); });
}
/// y = gelu_grad(x) (the backward of gelu) on buffers: for float one tanh per element (the Eigen
/// expression above evaluates it at each use of t).
template <class S>
void gelu_grad_into(const S* x, S* y, std::size_t n) {
  detail::map_into(x, y, n, [](auto... a) { kernels::gelu_tanh_dx(a...); }, [](const S& v) { return gelu_grad(v); });
}
/// y = gelu_bwd_ref_grad(x) (the backward of gelu_bwd_ref) on buffers.
template <class S>
void gelu_bwd_ref_grad_into(const S* x, S* y, std::size_t n) {
  detail::map_into(x, y, n, [](auto... a) { kernels::gelu_tanh_grad_dx(a...); },
                   [](const S& v) { return gelu_bwd_ref_grad(v); });
}

namespace detail {
/// y[i] = f(x[i]), dy[i] = df(x[i]) on buffers of n elements: for float the SIMD pair kernel
/// `simd` (called on the default CPU backend), otherwise the scalar forms in a loop.
template <class S, class Simd, class F, class DF>
void map_pair_into(const S* x, S* y, S* dy, std::size_t n, Simd simd, F f, DF df) {
  if constexpr (std::is_same_v<S, float>) simd(backend::cpu_default{}, x, y, dy, n);
  else
    for (std::size_t i = 0; i < n; ++i) {
      const S v = x[i];
      y[i] = f(v), dy[i] = df(v);
    }
}
}  // namespace detail

/// y = gelu(x) and dy = gelu_grad(x) in one pass: for float one tanh per element for both (the
/// values gelu_into and gelu_grad_into give, bit for bit).
template <class S>
void gelu_and_grad_into(const S* x, S* y, S* dy, std::size_t n) {
  detail::map_pair_into(x, y, dy, n, [](auto... a) { kernels::gelu_tanh_pair(a...); },
                        [](const S& v) { return gelu(v); }, [](const S& v) { return gelu_grad(v); });
}
/// y = gelu_bwd_ref(x) and dy = gelu_bwd_ref_grad(x) in one pass (as gelu_and_grad_into).
template <class S>
void gelu_bwd_ref_and_grad_into(const S* x, S* y, S* dy, std::size_t n) {
  detail::map_pair_into(x, y, dy, n, [](auto... a) { kernels::gelu_tanh_grad_pair(a...); },
                        [](const S& v) { return gelu_bwd_ref(v); }, [](const S& v) { return gelu_bwd_ref_grad(v); });
}

/// sg = sigmoid(a) (skipped when sg is null), h = silu(a) b = a sg b, on buffers of n elements:
/// SwiGLU fast weights' hidden units (float: kernels::silu_gate).
template <class S>
void silu_gate_into(const S* a, const S* b, S* sg, S* h, std::size_t n) {
  if constexpr (std::is_same_v<S, float>) {
    kernels::silu_gate(backend::cpu_default{}, a, b, sg, h, n);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const S x = a[i], s = sigmoid(x), y = x * s * b[i];
      if (sg) sg[i] = s;
      h[i] = y;
    }
  }
}

// ---- the SwiGLU activation ----------------------------------------------------------------------

/// The activation of the SwiGLU MLP, by its Hugging Face name.
enum class Act { silu, gelu, gelu_tanh, relu };
inline Act act_from_name(const std::string& s) {
  if (s == "gelu") return Act::gelu;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh") return Act::gelu_tanh;
  if (s == "relu") return Act::relu;
  return Act::silu;
}

template <std::floating_point S>
S act(Act a, S x) {
  switch (a) {
    case Act::silu: return x * sigmoid(x);
    case Act::gelu_tanh: return gelu(x);
    case Act::gelu: return S(0.5) * x * (S(1) + std::erf(x * S(0.70710678118654752440)));
    case Act::relu: return x > 0 ? x : S(0);
  }
  return S(0);
}
template <std::floating_point S>
S act_grad(Act a, S x) {
  switch (a) {
    case Act::silu: {
      const S s = sigmoid(x);
      return s * (S(1) + x * (S(1) - s));
    }
    case Act::gelu_tanh: return gelu_grad(x);
    case Act::gelu:
      return S(0.5) * (S(1) + std::erf(x * S(0.70710678118654752440))) +
             x * S(0.39894228040143267794) * std::exp(S(-0.5) * x * x);
    case Act::relu: return x > 0 ? S(1) : S(0);
  }
  return S(0);
}

/// g = act(g) * u element-wise over n values (SwiGLU's product); float runs the SIMD kernels.
template <class S>
void act_mul(Act a, S* g, const S* u, std::size_t n) {
  if constexpr (std::is_same_v<S, float>) {
    switch (a) {
      case Act::silu: kernels::silu_mul(backend::cpu_default{}, g, u, n); return;
      case Act::gelu_tanh:
        kernels::gelu_tanh(backend::cpu_default{}, g, g, n);
        for (std::size_t i = 0; i < n; ++i) g[i] *= u[i];
        return;
      case Act::gelu: {
        Eigen::Map<Eigen::VectorXf> gv(g, Eigen::Index(n));
        gv = gelu_erf(gv).cwiseProduct(Eigen::Map<const Eigen::VectorXf>(u, Eigen::Index(n)));
        return;
      }
      default: break;
    }
  }
  for (std::size_t i = 0; i < n; ++i) g[i] = act(a, g[i]) * u[i];
}

/// The reverse of act_mul, a = act(g) u, over n values: dg = da u act'(g), du = da act(g)
/// (outputs apart from the inputs); silu runs kernels::silu_mul_bwd (one exp per element; float
/// through the SIMD tables, other scalars through its plain twin).
template <class S>
void act_mul_bwd(Act a, const S* g, const S* u, const S* da, S* dg, S* du, std::size_t n) {
  if (a == Act::silu) {
    if constexpr (std::is_same_v<S, float>) return kernels::silu_mul_bwd(backend::cpu_default{}, g, u, da, dg, du, n);
    else return kernels::silu_mul_bwd(backend::scalar{}, g, u, da, dg, du, n);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const S x = g[i];
    dg[i] = da[i] * u[i] * act_grad(a, x);
    du[i] = da[i] * act(a, x);
  }
}

}  // namespace ttt::blocks
