#pragma once
/// \file models/cuda/model.cuh
/// The members of ttt::cuda::Model and ttt::cuda::State (models/cuda/model.hpp). Include this in
/// exactly one .cu file of a program (it defines them, like an implementation file); the rest of
/// the program includes model.hpp. The forward of one chunk, per block, in the CPU model's order
/// (models/causal_lm.hpp, layers/ttt_layer.hpp):
///
///   [pre_conv: h += conv(RMSNorm(h))]; xn = RMSNorm(h); XQ, XK, XV = xn Wq^T, xn Wk^T, xn Wv^T
///   (share_qk: XQ, XK = conv_q, conv_k of xn Wq^T); RoPE(XQ, XK) by position in the
///   mini-batch; LRt = base_lr sigmoid(xn lr_w^T + lr_b) / f; Zq = scan(...); O = XQ + LN_h(Zq);
///   Y = post_norm(O) [* gelu(xn Wg^T)]; h += Y Wo^T; h += down(act(gate xn) * up xn)
///
/// then the final RMSNorm and the LM head. Activations are [B * n, C] row-major (sequence-major);
/// the scan reads [B * H, n, f].
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../../kernels/cuda/ops.cuh"
#include "../../kernels/cuda/scan.cuh"
#include "model.hpp"

namespace ttt::cuda {

namespace detail {

/// A device array of floats or ints that grows on demand (contents not kept when it grows).
template <class T>
struct DeviceArray {
  T* p = nullptr;
  size_t n = 0;
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : p(std::exchange(o.p, nullptr)), n(std::exchange(o.n, 0)) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    std::swap(p, o.p), std::swap(n, o.n);
    return *this;
  }
  ~DeviceArray() { cudaFree(p); }
  T* reserve(size_t m, const char* what) {
    if (m > n) {
      cudaFree(p);
      p = nullptr, n = 0;
      check(cudaMalloc(&p, std::max<size_t>(m, 1) * sizeof(T)), std::string("cudaMalloc (") + what + ")");
      n = m;
    }
    return p;
  }
  void upload(const std::vector<T>& h, const char* what) {
    reserve(h.size(), what);
    check(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice),
          std::string("cudaMemcpy (") + what + ")");
  }
};

struct DeviceLayer {
  DeviceArray<float> seq_norm, ffn_norm, q, k, v, o, g, lr_w, lr_b, eta, ln_w, ln_b, post_w, post_b, theta0, gate, up,
      down, conv_q, conv_k, conv_q_b, conv_k_b, conv_norm, conv_w, conv_b;
};

}  // namespace detail

struct Model::Impl {
  ModelWeights shape;  // sizes and options (the weight arrays left empty)
  Learner learner = Learner::linear;
  int P = 0;
  ops::Act act = ops::Act::silu;
  cublasHandle_t blas = nullptr;
  detail::DeviceArray<float> embed, lm_head, norm, rope_cos, rope_sin;
  std::vector<detail::DeviceLayer> layers;
  ~Impl() {
    if (blas) cublasDestroy(blas);
  }
};

struct State::Impl {
  int B = 0;
  std::vector<int64_t> pos;
  std::vector<detail::DeviceArray<float>> theta, gacc;         // per layer [B * H * P]
  std::vector<detail::DeviceArray<float>> qk_hist, conv_hist;  // per layer [B, K-1, C] (share_qk, pre_conv)
  // work buffers, grown on demand
  detail::DeviceArray<int> ids, dpos;
  detail::DeviceArray<float> h, xn, XQ, XK, XV, lg, LRt, Qh, Kh, Vh, Zq, O, Y, G, A, U, logits, xq;
};

State::State() = default;
State::State(State&&) noexcept = default;
State& State::operator=(State&&) noexcept = default;
State::~State() = default;
int State::batch() const { return impl ? impl->B : 0; }
std::vector<int64_t> State::positions() const { return impl ? impl->pos : std::vector<int64_t>{}; }

Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;
int Model::vocab_size() const { return impl->shape.V; }
int Model::hidden_size() const { return impl->shape.C; }
int Model::num_layers() const { return int(impl->layers.size()); }

Model::Model(const ModelWeights& w) : impl(std::make_unique<Impl>()) {
  Impl& m = *impl;
  int devices = 0;
  const cudaError_t e = cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0)
    throw Error(std::string("cuda::Model: no CUDA device (") +
                (e != cudaSuccess ? cudaGetErrorString(e) : "none found") + ")");
  const int C = w.C, H = w.H, f = w.f, I = w.I, V = w.V, mb = w.mini_batch;
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("cuda::Model: " + what);
  };
  need(C > 0 && H > 0 && f > 0 && H * f == C, "hidden size " + std::to_string(C) + " is not heads (" +
                                                  std::to_string(H) + ") x head dim (" + std::to_string(f) + ")");
  need(f % 2 == 0, "head dim " + std::to_string(f) + " is odd (RoPE rotates pairs)");
  need(mb > 0 && I > 0 && V > 0, "mini_batch, intermediate size and vocabulary must be positive");
  need(!(w.share_qk || w.pre_conv) || w.conv_kernel >= 1, "conv_kernel must be >= 1");
  need(w.learner == "linear" || w.learner == "mlp", "learner '" + w.learner + "' has no GPU scan (linear, mlp)");
  m.learner = w.learner == "linear" ? Learner::linear : Learner::mlp;
  m.P = state_size(m.learner, f);
  m.act = ops::act_from_name(w.hidden_act);
  auto sized = [&](const std::vector<float>& x, size_t n, const std::string& what) {
    need(x.size() == n, what + " has " + std::to_string(x.size()) + " values, expected " + std::to_string(n));
  };
  sized(w.embed, size_t(V) * C, "embed");
  if (!w.lm_head.empty()) sized(w.lm_head, size_t(V) * C, "lm_head");
  sized(w.norm, size_t(C), "norm");
  need(!w.layers.empty(), "no layers");
  m.shape = w;
  m.shape.embed.clear(), m.shape.lm_head.clear(), m.shape.norm.clear(), m.shape.layers.clear();
  m.embed.upload(w.embed, "embed");
  if (!w.lm_head.empty()) m.lm_head.upload(w.lm_head, "lm_head");
  m.norm.upload(w.norm, "norm");
  // RoPE tables for positions 0 .. mini_batch - 1, in float as blocks::RopeTable computes them
  std::vector<float> cs(static_cast<size_t>(mb) * (f / 2)), sn(cs.size());
  for (int i = 0; i < f / 2; ++i) {
    const float inv_freq = 1.0f / std::pow(float(w.rope_theta), float(2 * i) / float(f));
    for (int p = 0; p < mb; ++p) {
      const float a = float(p) * inv_freq;
      cs[size_t(p) * (f / 2) + i] = std::cos(a), sn[size_t(p) * (f / 2) + i] = std::sin(a);
    }
  }
  m.rope_cos.upload(cs, "rope"), m.rope_sin.upload(sn, "rope");
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& L = w.layers[i];
    const std::string at = "layer " + std::to_string(i) + ": ";
    sized(L.seq_norm, size_t(C), at + "seq_norm"), sized(L.ffn_norm, size_t(C), at + "ffn_norm");
    for (auto* p : {&L.q, &L.v, &L.o}) sized(*p, size_t(C) * C, at + "a projection");
    const size_t CK = size_t(C) * w.conv_kernel;
    if (w.share_qk) {
      sized(L.conv_q, CK, at + "conv_q.weight"), sized(L.conv_k, CK, at + "conv_k.weight");
      sized(L.conv_q_b, size_t(C), at + "conv_q.bias"), sized(L.conv_k_b, size_t(C), at + "conv_k.bias");
    } else {
      sized(L.k, size_t(C) * C, at + "k_proj");
    }
    if (w.pre_conv)
      sized(L.conv_norm, size_t(C), at + "conv.norm"), sized(L.conv_w, CK, at + "conv.conv.weight"),
          sized(L.conv_b, size_t(C), at + "conv.conv.bias");
    if (w.use_gate) sized(L.g, size_t(C) * C, at + "g_proj");
    sized(L.lr_w, size_t(H) * C, at + "lr_w"), sized(L.lr_b, size_t(H), at + "lr_b");
    sized(L.token_idx, size_t(mb), at + "token_idx");
    sized(L.ln_w, size_t(H) * f, at + "ttt_norm_weight"), sized(L.ln_b, size_t(H) * f, at + "ttt_norm_bias");
    sized(L.post_w, size_t(C), at + "post_norm.weight"), sized(L.post_b, size_t(C), at + "post_norm.bias");
    sized(L.theta0, size_t(H) * m.P, at + "theta0 (the inner weights)");
    sized(L.gate, size_t(I) * C, at + "gate_proj"), sized(L.up, size_t(I) * C, at + "up_proj");
    sized(L.down, size_t(C) * I, at + "down_proj");
    detail::DeviceLayer d;
    d.seq_norm.upload(L.seq_norm, "seq_norm"), d.ffn_norm.upload(L.ffn_norm, "ffn_norm");
    d.q.upload(L.q, "q"), d.v.upload(L.v, "v"), d.o.upload(L.o, "o");
    if (w.share_qk) {
      d.conv_q.upload(L.conv_q, "conv_q"), d.conv_k.upload(L.conv_k, "conv_k");
      d.conv_q_b.upload(L.conv_q_b, "conv_q_b"), d.conv_k_b.upload(L.conv_k_b, "conv_k_b");
    } else {
      d.k.upload(L.k, "k");
    }
    if (w.pre_conv)
      d.conv_norm.upload(L.conv_norm, "conv_norm"), d.conv_w.upload(L.conv_w, "conv_w"),
          d.conv_b.upload(L.conv_b, "conv_b");
    if (w.use_gate) d.g.upload(L.g, "g");
    d.lr_w.upload(L.lr_w, "lr_w"), d.lr_b.upload(L.lr_b, "lr_b");
    std::vector<float> eta(static_cast<size_t>(mb));  // token_eta = clamp(1/(t+1) + learnable_token_idx[t], 0)
    for (int t = 0; t < mb; ++t) eta[size_t(t)] = std::max(1.f / float(t + 1) + L.token_idx[size_t(t)], 0.f);
    d.eta.upload(eta, "eta");
    d.ln_w.upload(L.ln_w, "ln_w"), d.ln_b.upload(L.ln_b, "ln_b");
    d.post_w.upload(L.post_w, "post_w"), d.post_b.upload(L.post_b, "post_b");
    d.theta0.upload(L.theta0, "theta0");
    d.gate.upload(L.gate, "gate"), d.up.upload(L.up, "up"), d.down.upload(L.down, "down");
    m.layers.push_back(std::move(d));
  }
  ops::check_cublas(cublasCreate(&m.blas), "cublasCreate");
}

State Model::new_state(int batch) const {
  if (batch < 1) throw Error("cuda::Model::new_state: batch must be >= 1 (got " + std::to_string(batch) + ")");
  const Impl& m = *impl;
  State s;
  s.impl = std::make_unique<State::Impl>();
  State::Impl& st = *s.impl;
  st.B = batch;
  st.pos.assign(size_t(batch), 0);
  const size_t per = size_t(m.shape.H) * m.P;
  for (const auto& L : m.layers) {
    detail::DeviceArray<float> th, ga;
    th.reserve(per * batch, "state"), ga.reserve(per * batch, "state");
    for (int b = 0; b < batch; ++b)
      check(cudaMemcpy(th.p + b * per, L.theta0.p, per * sizeof(float), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (state)");
    check(cudaMemset(ga.p, 0, per * batch * sizeof(float)), "cudaMemset (state)");
    st.theta.push_back(std::move(th)), st.gacc.push_back(std::move(ga));
    const size_t hist = size_t(batch) * (m.shape.conv_kernel - 1) * m.shape.C;
    for (auto* hs : {&st.qk_hist, &st.conv_hist}) {
      detail::DeviceArray<float> z;
      if (hs == &st.qk_hist ? m.shape.share_qk : m.shape.pre_conv) {
        z.reserve(hist, "conv history");
        check(cudaMemset(z.p, 0, hist * sizeof(float)), "cudaMemset (conv history)");
      }
      hs->push_back(std::move(z));
    }
  }
  return s;
}

void Model::forward(State& s, const int64_t* ids, int n, float* logits, LogitRows which, int first, int count,
                    float* hidden) const {
  const Impl& m = *impl;
  if (!s.impl) throw Error("cuda::Model::forward: the state is empty (use new_state)");
  State::Impl& st = *s.impl;
  if (count < 0) count = st.B - first;
  if (first < 0 || count < 1 || first + count > st.B || n < 1)
    throw Error("cuda::Model::forward: sequences " + std::to_string(first) + " .. " +
                std::to_string(first + count - 1) + " of a batch of " + std::to_string(st.B) + ", " +
                std::to_string(n) + " tokens each (need n >= 1)");
  if (st.theta.size() != m.layers.size())
    throw Error("cuda::Model::forward: the state has " + std::to_string(st.theta.size()) + " layers, the model " +
                std::to_string(m.layers.size()));
  const int C = m.shape.C, H = m.shape.H, f = m.shape.f, I = m.shape.I, V = m.shape.V, mb = m.shape.mini_batch;
  const int B = count, rows = B * n;
  const size_t RC = size_t(rows) * C;
  std::vector<int> hid(static_cast<size_t>(rows)), hpos(static_cast<size_t>(B));
  for (int r = 0; r < rows; ++r) {
    if (ids[r] < 0 || ids[r] >= V)
      throw Error("input_ids: token id " + std::to_string(ids[r]) + " (sequence " + std::to_string(first + r / n) +
                  ", row " + std::to_string(r % n) + ") is outside the vocabulary [0, " + std::to_string(V) + ")");
    hid[size_t(r)] = int(ids[r]);
  }
  for (int b = 0; b < B; ++b) hpos[size_t(b)] = int(st.pos[size_t(first + b)]);
  st.ids.upload(hid, "ids"), st.dpos.upload(hpos, "positions");
  float *h = st.h.reserve(RC, "h"), *xn = st.xn.reserve(RC, "xn"), *XQ = st.XQ.reserve(RC, "XQ"),
        *XK = st.XK.reserve(RC, "XK"), *XV = st.XV.reserve(RC, "XV"), *O = st.O.reserve(RC, "O"),
        *Y = st.Y.reserve(RC, "Y"), *Qh = st.Qh.reserve(RC, "Qh"), *Kh = st.Kh.reserve(RC, "Kh"),
        *Vh = st.Vh.reserve(RC, "Vh"), *Zq = st.Zq.reserve(RC, "Zq");
  float *lg = st.lg.reserve(size_t(rows) * H, "lr"), *LRt = st.LRt.reserve(size_t(rows) * H, "lr");
  float *A = st.A.reserve(size_t(rows) * I, "mlp"), *U = st.U.reserve(size_t(rows) * I, "mlp");
  float* G = m.shape.use_gate ? st.G.reserve(RC, "gate") : nullptr;
  const int T = ops::kRowThreads;
  const float eps = float(m.shape.rms_norm_eps);
  const int K = m.shape.conv_kernel;
  const size_t hist_off = size_t(first) * (K - 1) * C;  // the first sequence's conv history
  ops::embed_rows<<<rows, T>>>(st.ids.p, m.embed.p, C, h);
  for (size_t li = 0; li < m.layers.size(); ++li) {
    const detail::DeviceLayer& L = m.layers[li];
    if (m.shape.pre_conv) {  // h += conv(RMSNorm(h)), then the history advances
      float* hist = st.conv_hist[li].p + hist_off;
      ops::rms_norm_rows<<<rows, T>>>(h, L.conv_norm.p, C, eps, xn);
      ops::causal_conv_rows<<<rows, T>>>(xn, hist, L.conv_w.p, L.conv_b.p, n, C, K, true, h);
      ops::advance_history<<<B, T>>>(xn, hist, n, C, K);
    }
    ops::rms_norm_rows<<<rows, T>>>(h, L.seq_norm.p, C, eps, xn);
    if (m.shape.share_qk) {  // XQ, XK = conv_q, conv_k over [history; q_proj(xn)]
      float* hist = st.qk_hist[li].p + hist_off;
      float* xq = st.xq.reserve(RC, "xq");
      ops::linear(m.blas, xn, rows, C, L.q.p, C, xq);
      ops::causal_conv_rows<<<rows, T>>>(xq, hist, L.conv_q.p, L.conv_q_b.p, n, C, K, false, XQ);
      ops::causal_conv_rows<<<rows, T>>>(xq, hist, L.conv_k.p, L.conv_k_b.p, n, C, K, false, XK);
      ops::advance_history<<<B, T>>>(xq, hist, n, C, K);
    } else {
      ops::linear(m.blas, xn, rows, C, L.q.p, C, XQ);
      ops::linear(m.blas, xn, rows, C, L.k.p, C, XK);
    }
    ops::linear(m.blas, xn, rows, C, L.v.p, C, XV);
    ops::linear(m.blas, xn, rows, C, L.lr_w.p, H, lg);
    ops::lr_gate<<<rows, 32>>>(lg, L.lr_b.p, n, H, float(m.shape.ttt_base_lr), f, LRt);
    ops::rope_rows<<<rows, T>>>(XQ, n, H, f, mb, st.dpos.p, m.rope_cos.p, m.rope_sin.p);
    ops::rope_rows<<<rows, T>>>(XK, n, H, f, mb, st.dpos.p, m.rope_cos.p, m.rope_sin.p);
    ops::to_heads<<<rows, T>>>(XQ, n, H, f, Qh);
    ops::to_heads<<<rows, T>>>(XK, n, H, f, Kh);
    ops::to_heads<<<rows, T>>>(XV, n, H, f, Vh);
    ScanArgs<float> a;
    a.BH = B * H, a.heads = H, a.L = n, a.f = f, a.mini_batch = mb, a.pos = st.dpos.p;
    a.XQ = Qh, a.XK = Kh, a.XV = Vh, a.token_eta = L.eta.p, a.lr = LRt, a.ln_w = L.ln_w.p, a.ln_b = L.ln_b.p;
    a.theta = st.theta[li].p + size_t(first) * H * m.P, a.gacc = st.gacc[li].p + size_t(first) * H * m.P, a.Zq = Zq;
    if (n == 1)
      decode(m.learner, a);
    else
      scan(m.learner, a);
    ops::head_output<<<B * H * n, T>>>(Qh, Zq, L.ln_w.p, L.ln_b.p, n, H, f, O);
    ops::layer_norm_rows<<<rows, T>>>(O, L.post_w.p, L.post_b.p, C, 1e-6f, Y);
    if (m.shape.use_gate) {
      ops::linear(m.blas, xn, rows, C, L.g.p, C, G);
      ops::gate_mul<<<ops::grid_for(RC), 256>>>(Y, G, RC);
    }
    ops::linear(m.blas, Y, rows, C, L.o.p, C, h, 1.f);  // h += o_proj(Y)
    ops::rms_norm_rows<<<rows, T>>>(h, L.ffn_norm.p, C, eps, xn);
    ops::linear(m.blas, xn, rows, C, L.gate.p, I, A);
    ops::linear(m.blas, xn, rows, C, L.up.p, I, U);
    ops::act_mul<<<ops::grid_for(size_t(rows) * I), 256>>>(m.act, A, U, size_t(rows) * I);
    ops::linear(m.blas, A, rows, I, L.down.p, C, h, 1.f);  // h += down(act(gate) * up)
    if (hidden)
      check(cudaMemcpy(hidden + li * RC, h, RC * sizeof(float), cudaMemcpyDeviceToHost),
            "cuda::Model::forward (hidden)");
  }
  check(cudaGetLastError(), "cuda::Model::forward");
  for (int b = 0; b < B; ++b) st.pos[size_t(first + b)] += n;
  if (which == LogitRows::none || !logits) {
    check(cudaDeviceSynchronize(), "cuda::Model::forward");
    return;
  }
  // final RMSNorm and LM head over every row, or each sequence's last row
  const float* head = m.lm_head.p ? m.lm_head.p : m.embed.p;
  const int out_rows = which == LogitRows::all ? rows : B;
  const float* src = h;
  if (which == LogitRows::last) {
    for (int b = 0; b < B; ++b)
      check(cudaMemcpy(Y + size_t(b) * C, h + (size_t(b) * n + n - 1) * C, C * sizeof(float), cudaMemcpyDeviceToDevice),
            "cudaMemcpy (last rows)");
    src = Y;
  }
  ops::rms_norm_rows<<<out_rows, T>>>(src, m.norm.p, C, eps, xn);
  float* lo = st.logits.reserve(size_t(out_rows) * V, "logits");
  ops::linear(m.blas, xn, out_rows, C, head, V, lo);
  check(cudaMemcpy(logits, lo, size_t(out_rows) * V * sizeof(float), cudaMemcpyDeviceToHost),
        "cuda::Model::forward (logits)");
}

}  // namespace ttt::cuda
