#pragma once
// A literal, double-precision port of ttt-lm-pytorch's forward pass (no cache), written
// independently of the library: mini-batches of the full-length dual form, the remainder as a
// shorter mini-batch with token_idx[0:r], RoPE through permute_qk / rotate_half / undo_permute_qk.
// It is the specification the library's fast paths are tested against on options the reference
// vectors do not cover (pre_conv, share_qk, use_gate, other sizes).
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <ttt/ttt.hpp>

namespace ref {

using M = ttt::MatD;  // row-major double
using Params = std::map<std::string, std::vector<double>>;

template <class Model>
Params params_of(Model& m) {
  Params p;
  m.visit_params([&](const ttt::ParamRef& r) {
    std::vector<float> f(size_t(r.numel()));
    r.copy_out(f.data());
    p[r.name] = std::vector<double>(f.begin(), f.end());
  });
  return p;
}

inline M mat(const std::vector<double>& v, int64_t r, int64_t c, int64_t off = 0) {
  M m(r, c);
  for (int64_t i = 0; i < r * c; ++i) m.data()[i] = v[size_t(off + i)];
  return m;
}

inline M rms(const M& x, const std::vector<double>& w, double eps) {
  M y = x;
  for (int64_t t = 0; t < x.rows(); ++t) {
    double ms = x.row(t).squaredNorm() / double(x.cols());
    for (int64_t c = 0; c < x.cols(); ++c) y(t, c) = w[size_t(c)] * (x(t, c) / std::sqrt(ms + eps));
  }
  return y;
}

inline M ln(const M& x, const double* g, const double* b, double eps = 1e-6) {
  M y = x;
  for (int64_t t = 0; t < x.rows(); ++t) {
    double mu = x.row(t).mean();
    double var = (x.row(t).array() - mu).square().mean();
    for (int64_t c = 0; c < x.cols(); ++c) y(t, c) = g[c] * (x(t, c) - mu) / std::sqrt(var + eps) + b[c];
  }
  return y;
}

// ln_fused_l2_bwd, as written in the reference
inline M ln_l2_bwd(const M& x, const M& tgt, const double* g, const double* b, double eps = 1e-6) {
  const double D = double(x.cols());
  M z = x;
  for (int64_t t = 0; t < x.rows(); ++t) {
    double mu = x.row(t).mean();
    double var = (x.row(t).array() - mu).square().mean();
    double sd = std::sqrt(var + eps);
    std::vector<double> xh(static_cast<size_t>(x.cols())), gx(static_cast<size_t>(x.cols()));
    double s1 = 0, s2 = 0;
    for (int64_t c = 0; c < x.cols(); ++c) {
      xh[size_t(c)] = (x(t, c) - mu) / sd;
      double y = g[c] * xh[size_t(c)] + b[c];
      gx[size_t(c)] = (y - tgt(t, c)) * g[c];
      s1 += gx[size_t(c)];
      s2 += gx[size_t(c)] * xh[size_t(c)];
    }
    for (int64_t c = 0; c < x.cols(); ++c) z(t, c) = (D * gx[size_t(c)] - s1 - xh[size_t(c)] * s2) / D / sd;
  }
  return z;
}

inline double gelu(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }
inline double gelu_bwd(double x) {
  double t = std::tanh(0.79788456 * x * (1 + 0.044715 * x * x));
  return 0.5 * x * ((1 - t * t) * (0.79788456 + 0.1070322243 * x * x)) + 0.5 * (1 + t);
}
inline M gelu(const M& x) { return x.unaryExpr([](double v) { return gelu(v); }); }

// depthwise causal conv, weight [C, 1, K] flattened
inline M conv(const M& x, const std::vector<double>& w, const std::vector<double>& b, int64_t K) {
  M y(x.rows(), x.cols());
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t c = 0; c < x.cols(); ++c) {
      double s = b[size_t(c)];
      for (int64_t k = 0; k < K; ++k) {
        int64_t src = t - (K - 1) + k;
        if (src >= 0) s += w[size_t(c * K + k)] * x(src, c);
      }
      y(t, c) = s;
    }
  return y;
}

// RoPE through the reference's permute_qk -> rotate_half -> undo_permute_qk, one head (L, f).
inline M rope(const M& x, int64_t mb, double theta) {
  const int64_t L = x.rows(), f = x.cols(), h = f / 2;
  M y(L, f);
  for (int64_t t = 0; t < L; ++t) {
    std::vector<double> p(static_cast<size_t>(f)), r(static_cast<size_t>(f));
    for (int64_t j = 0; j < f; ++j) p[size_t(j)] = j < h ? x(t, 2 * j) : x(t, 2 * (j - h) + 1);  // permute
    const double pos = double(t % mb);
    for (int64_t j = 0; j < f; ++j) {
      const int64_t i = j % h;
      const double a = pos / std::pow(theta, double(2 * i) / double(f));
      const double rot = j < h ? -p[size_t(j + h)] : p[size_t(j - h)];
      r[size_t(j)] = p[size_t(j)] * std::cos(a) + rot * std::sin(a);
    }
    for (int64_t j = 0; j < f; ++j) y(t, j < h ? 2 * j : 2 * (j - h) + 1) = r[size_t(j)];  // undo
  }
  return y;
}

struct Ref {
  ttt::ModelConfig cfg;
  Params P;

  const std::vector<double>& at(const std::string& n) const { return P.at(n); }

  // One head's TTT over the whole sequence: full mini-batches of size b, then the remainder.
  M ttt_head(const M& XQ, const M& XK, const M& XV, const std::vector<double>& lr, const std::string& pre,
             int64_t h) const {
    const int64_t L = XQ.rows(), f = XQ.cols(), b = cfg.mini_batch_size;
    const bool mlp = cfg.ttt_layer_type == "mlp";
    const int64_t hid = mlp ? 4 * f : f;
    M W1 = mat(at(pre + "W1"), f, hid, h * f * hid);
    M b1 = mat(at(pre + "b1"), 1, hid, h * hid);
    M W2, b2;
    if (mlp) {
      W2 = mat(at(pre + "W2"), hid, f, h * f * hid);
      b2 = mat(at(pre + "b2"), 1, f, h * f);
    }
    const double* g = at(pre + "ttt_norm_weight").data() + h * f;
    const double* be = at(pre + "ttt_norm_bias").data() + h * f;
    const auto& tidx = at(pre + "learnable_token_idx");
    M out(L, f);
    int64_t start = 0;
    while (start < L) {
      const int64_t K = std::min(b, L - start);  // full mini-batch or the remainder
      M xq = XQ.middleRows(start, K), xk = XK.middleRows(start, K), xv = XV.middleRows(start, K);
      M eta(K, K);
      for (int64_t t = 0; t < K; ++t)
        for (int64_t s = 0; s < K; ++s) eta(t, s) = std::max(1.0 / double(t + 1) + tidx[size_t(t)], 0.0) * lr[size_t(start + s)];
      M tril_eta = eta.triangularView<Eigen::Lower>();
      M tgt = xv - xk;
      M Z1 = xk * W1 + M::Ones(K, 1) * b1;
      if (!mlp) {
        M G = ln_l2_bwd(Z1, tgt, g, be);
        M A = (xq * xk.transpose()).triangularView<Eigen::Lower>();
        M b1bar = M::Ones(K, 1) * b1 - tril_eta * G;
        M Zb = xq * W1 - eta.cwiseProduct(A) * G + b1bar;
        out.middleRows(start, K) = xq + ln(Zb, g, be);
        M last = eta.row(K - 1).transpose();  // (K, 1)
        W1 -= (xk.array().colwise() * last.col(0).array()).matrix().transpose() * G;
        b1 -= (G.array().colwise() * last.col(0).array()).matrix().colwise().sum();
      } else {
        M X2 = gelu(Z1);
        M Z2 = X2 * W2 + M::Ones(K, 1) * b2;
        M G2 = ln_l2_bwd(Z2, tgt, g, be);
        M G1 = (G2 * W2.transpose()).cwiseProduct(Z1.unaryExpr([](double v) { return gelu_bwd(v); }));
        M A1 = (xq * xk.transpose()).triangularView<Eigen::Lower>();
        M b1bar = M::Ones(K, 1) * b1 - tril_eta * G1;
        M Z1b = xq * W1 - eta.cwiseProduct(A1) * G1 + b1bar;
        M X2b = gelu(Z1b);
        M A2 = (X2b * X2.transpose()).triangularView<Eigen::Lower>();
        M b2bar = M::Ones(K, 1) * b2 - tril_eta * G2;
        M Z2b = X2b * W2 - eta.cwiseProduct(A2) * G2 + b2bar;
        out.middleRows(start, K) = xq + ln(Z2b, g, be);
        M last = eta.row(K - 1).transpose();
        W1 -= (xk.array().colwise() * last.col(0).array()).matrix().transpose() * G1;
        b1 -= (G1.array().colwise() * last.col(0).array()).matrix().colwise().sum();
        W2 -= (X2.array().colwise() * last.col(0).array()).matrix().transpose() * G2;
        b2 -= (G2.array().colwise() * last.col(0).array()).matrix().colwise().sum();
      }
      start += K;
    }
    return out;
  }

  M ttt_layer(const M& X, int64_t layer) const {
    const std::string pre = "model.layers." + std::to_string(layer) + ".seq_modeling_block.";
    const int64_t L = X.rows(), C = cfg.hidden_size, H = cfg.num_attention_heads, f = C / H;
    auto proj = [&](const std::string& n) { return M(X * mat(at(pre + n), C, C).transpose()); };
    M XQ, XK, XV = proj("v_proj.weight");
    if (cfg.share_qk) {
      M xq = proj("q_proj.weight");
      XQ = conv(xq, at(pre + "conv_q.weight"), at(pre + "conv_q.bias"), cfg.conv_kernel);
      XK = conv(xq, at(pre + "conv_k.weight"), at(pre + "conv_k.bias"), cfg.conv_kernel);
    } else {
      XQ = proj("q_proj.weight");
      XK = proj("k_proj.weight");
    }
    M O(L, C);
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> lr(static_cast<size_t>(L));
      for (int64_t t = 0; t < L; ++t) {
        double s = at(pre + "learnable_ttt_lr_bias")[size_t(h)];
        for (int64_t c = 0; c < C; ++c) s += X(t, c) * at(pre + "learnable_ttt_lr_weight")[size_t(h * C + c)];
        lr[size_t(t)] = cfg.ttt_base_lr * (1.0 / (1.0 + std::exp(-s))) / double(f);
      }
      M q = rope(XQ.middleCols(h * f, f), cfg.mini_batch_size, cfg.rope_theta);
      M k = rope(XK.middleCols(h * f, f), cfg.mini_batch_size, cfg.rope_theta);
      O.middleCols(h * f, f) = ttt_head(q, k, XV.middleCols(h * f, f), lr, pre, h);
    }
    M Y = ln(O, at(pre + "post_norm.weight").data(), at(pre + "post_norm.bias").data());
    if (cfg.use_gate) {
      M G = gelu(M(X * mat(at(pre + "g_proj.weight"), C, C).transpose()));
      Y = Y.cwiseProduct(G);
    }
    return Y * mat(at(pre + "o_proj.weight"), C, C).transpose();
  }

  // logits (L, V); hidden[i] = output of block i
  M forward(const std::vector<int64_t>& ids, std::vector<M>* hidden = nullptr) const {
    const int64_t C = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size, L = int64_t(ids.size());
    M E = mat(at("model.embed_tokens.weight"), V, C);
    M h(L, C);
    for (int64_t t = 0; t < L; ++t) h.row(t) = E.row(ids[size_t(t)]);
    for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
      const std::string pre = "model.layers." + std::to_string(i) + ".";
      if (cfg.pre_conv)
        h += conv(rms(h, at(pre + "conv.norm.weight"), cfg.rms_norm_eps), at(pre + "conv.conv.weight"),
                  at(pre + "conv.conv.bias"), cfg.conv_kernel);
      h += ttt_layer(rms(h, at(pre + "seq_norm.weight"), cfg.rms_norm_eps), i);
      M xn = rms(h, at(pre + "ffn_norm.weight"), cfg.rms_norm_eps);
      M gt = xn * mat(at(pre + "mlp.gate_proj.weight"), I, C).transpose();
      M up = xn * mat(at(pre + "mlp.up_proj.weight"), I, C).transpose();
      M a = gt.unaryExpr([](double v) { return v / (1 + std::exp(-v)); }).cwiseProduct(up);
      h += a * mat(at(pre + "mlp.down_proj.weight"), C, I).transpose();
      if (hidden) hidden->push_back(h);
    }
    M hn = rms(h, at("model.norm.weight"), cfg.rms_norm_eps);
    M head = cfg.tie_word_embeddings ? E : mat(at("lm_head.weight"), V, C);
    return hn * head.transpose();
  }

  // Mean next-token cross entropy over a batch of sequences (position t predicts t+1; the mean is
  // over every position of every sequence, as torch's CrossEntropyLoss on shifted logits).
  double loss(const std::vector<std::vector<int64_t>>& batch) const {
    double sum = 0;
    int64_t cnt = 0;
    for (const auto& ids : batch) {
      const M lg = forward(ids);
      for (int64_t t = 0; t + 1 < int64_t(ids.size()); ++t) {
        const double mx = lg.row(t).maxCoeff();
        sum += mx + std::log((lg.row(t).array() - mx).exp().sum()) - lg(t, ids[size_t(t + 1)]);
        ++cnt;
      }
    }
    return sum / double(cnt);
  }
};

}  // namespace ref
