#pragma once
/// \file nn.hpp
/// The building blocks of the outer model, each as the reference computes it: RMSNorm, LayerNorm,
/// the LayerNorm-fused L2 gradient of the inner loss, interleaved RoPE, depthwise causal conv.
#include <cmath>
#include <string>
#include <utility>

#include "../kernels/simd.hpp"
#include "../core/tensor.hpp"

namespace ttt::nn {

/// out = w * x / sqrt(mean(x^2) + eps), row by row.       X, out: (n, C); w: (C)
template <class In>
inline void rms_norm(const In& X, const RowVec& w, double eps, Mat& out) {
  ensure_size(out, X.rows(), X.cols());
  for (Eigen::Index r = 0; r < X.rows(); ++r) {
    const float ms = X.row(r).squaredNorm() / float(X.cols());
    const float inv = 1.0f / std::sqrt(ms + float(eps));
    out.row(r) = (X.row(r) * inv).cwiseProduct(w);
  }
}

/// Mean and biased variance of row r (two passes, as torch).
template <class In>
inline std::pair<float, float> row_moments(const In& X, Eigen::Index r) {
  const Eigen::Index d = X.cols();
  float mu = 0.0f;
  for (Eigen::Index c = 0; c < d; ++c) mu += X(r, c);
  mu /= float(d);
  float var = 0.0f;
  for (Eigen::Index c = 0; c < d; ++c) var += (X(r, c) - mu) * (X(r, c) - mu);
  return {mu, var / float(d)};
}

/// out = gamma * (x - mean) / sqrt(var + eps) + beta over each row (biased variance, as torch).
/// Plain loops: no temporaries, so no allocation.
template <class In, class Out>
inline void layer_norm_rows(const In& X, const float* gamma, const float* beta, float eps, Out&& out) {
  const Eigen::Index d = X.cols();
  for (Eigen::Index r = 0; r < X.rows(); ++r) {
    const auto [mu, var] = row_moments(X, r);
    const float inv = 1.0f / std::sqrt(var + eps);
    for (Eigen::Index c = 0; c < d; ++c) out(r, c) = gamma[c] * ((X(r, c) - mu) * inv) + beta[c];
  }
}

/// The reference's `ln_fused_l2_bwd`: G = d/dZ of 0.5 * ||gamma * LN(Z) + beta - target||^2, in
/// closed form, row by row (eps 1e-6):
///   G = (D * gx - sum(gx) - xhat * sum(gx * xhat)) / (D * std),  gx = (gamma xhat + beta - target) gamma
///                                                           Z, target, G: (n, f); gamma, beta: (f)
template <class ZT, class TT, class GT>
inline void ln_l2_grad(const ZT& Z, const TT& target, const float* gamma, const float* beta, GT&& G,
                       float eps = 1e-6f) {
  const Eigen::Index d = Z.cols();
  for (Eigen::Index r = 0; r < Z.rows(); ++r) {
    const auto [mu, var] = row_moments(Z, r);
    const float stdv = std::sqrt(var + eps);
    float s1 = 0.0f, s2 = 0.0f;
    for (Eigen::Index c = 0; c < d; ++c) {  // G temporarily holds gx
      const float xhat = (Z(r, c) - mu) / stdv;
      const float gx = (gamma[c] * xhat + beta[c] - target(r, c)) * gamma[c];
      G(r, c) = gx;
      s1 += gx;
      s2 += gx * xhat;
    }
    const float scale = 1.0f / (float(d) * stdv);
    for (Eigen::Index c = 0; c < d; ++c) {
      const float xhat = (Z(r, c) - mu) / stdv;
      G(r, c) = (float(d) * G(r, c) - s1 - xhat * s2) * scale;
    }
  }
}

/// cos/sin tables of RoPE for positions 0..P-1 and head dim f: (P, f/2) each.
/// inv_freq[i] = theta^(-2i/f), computed as the reference does in float32.
struct RopeTable {
  Mat cos, sin;
  RopeTable() = default;
  RopeTable(int64_t positions, int64_t f, double theta) : cos(positions, f / 2), sin(positions, f / 2) {
    for (int64_t i = 0; i < f / 2; ++i) {
      const float inv_freq = 1.0f / std::pow(float(theta), float(2 * i) / float(f));
      for (int64_t p = 0; p < positions; ++p) {
        const float a = float(p) * inv_freq;
        cos(p, i) = std::cos(a);
        sin(p, i) = std::sin(a);
      }
    }
  }
};

/// RoPE in the JAX convention (interleaved pairs (2i, 2i+1) rotate by angle pos * inv_freq[i]) on
/// every head of X: (n, H*f). `pos[r]` is the position of row r inside its mini-batch.
inline void apply_rope(Mat& X, int64_t f, const RopeTable& t, const int64_t* pos) {
  const int64_t heads = X.cols() / f, half = f / 2;
  for (Eigen::Index r = 0; r < X.rows(); ++r) {
    float* row = X.row(r).data();
    const float* c = t.cos.row(pos[r]).data();
    const float* s = t.sin.row(pos[r]).data();
    for (int64_t h = 0; h < heads; ++h) {
      float* x = row + h * f;
      for (int64_t i = 0; i < half; ++i) {
        const float a = x[2 * i], b = x[2 * i + 1];
        x[2 * i] = a * c[i] - b * s[i];
        x[2 * i + 1] = b * c[i] + a * s[i];
      }
    }
  }
}

/// Depthwise causal conv1d with bias over time on an extended input: `ext` holds the K-1 inputs
/// before the chunk (zeros at the start of a sequence) followed by the chunk's n inputs.
/// out[t, c] = bias[c] + sum_k W[c, k] * ext[t + k, c].
///   ext: (K-1+n, C); W: (C, K) as torch's [C, 1, K]; out: (n, C)
inline void causal_conv_ext(const Mat& ext, const Mat& W, const RowVec& bias, Mat& out) {
  const Eigen::Index K = W.cols(), n = ext.rows() - (K - 1), C = ext.cols();
  ensure_size(out, n, C);
  for (Eigen::Index t = 0; t < n; ++t) {
    auto o = out.row(t);
    o = bias;
    for (Eigen::Index k = 0; k < K; ++k) o.array() += ext.row(t + k).array() * W.col(k).transpose().array();
  }
}
/// ext = [history; X], then history advances past X.         history: (K-1, C); X: (n, C)
inline void extend_history(const Mat& X, Mat& history, Mat& ext) {
  const Eigen::Index km1 = history.rows(), n = X.rows();
  ensure_size(ext, km1 + n, X.cols());
  if (km1 > 0) ext.topRows(km1) = history;
  ext.bottomRows(n) = X;
  if (km1 > 0) history = ext.bottomRows(km1);
}

/// The activation of the SwiGLU MLP, by its Hugging Face name.
enum class Act { silu, gelu, gelu_tanh, relu };
inline Act act_from_name(const std::string& s) {
  if (s == "gelu") return Act::gelu;
  if (s == "gelu_new" || s == "gelu_pytorch_tanh") return Act::gelu_tanh;
  if (s == "relu") return Act::relu;
  return Act::silu;
}
/// g = act(g) * u, element-wise over n floats.
inline void act_mul(Act a, float* g, const float* u, std::size_t n) {
  switch (a) {
    case Act::silu: kernels::silu_mul(backend::cpu_default{}, g, u, n); return;
    case Act::gelu_tanh:
      kernels::gelu_tanh(backend::cpu_default{}, g, g, n);
      for (std::size_t i = 0; i < n; ++i) g[i] *= u[i];
      return;
    case Act::gelu:
      for (std::size_t i = 0; i < n; ++i) g[i] = 0.5f * g[i] * (1.0f + std::erf(g[i] * 0.7071067811865476f)) * u[i];
      return;
    case Act::relu:
      for (std::size_t i = 0; i < n; ++i) g[i] = (g[i] > 0 ? g[i] : 0.0f) * u[i];
      return;
  }
}

}  // namespace ttt::nn
