#pragma once
/// \file layer.hpp
/// The TTT sequence layer, generic over its inner learner: projections, RoPE, the learning-rate
/// gate, the mini-batch inner loop (dual form where the learner has one, primal otherwise), post
/// LayerNorm, gate and output projection. It processes any chunk of a sequence from any position
/// and carries its state (inner weights at the start of the current mini-batch, the accumulated
/// gradient, the conv history of share_qk) from chunk to chunk, so that every chunking of a
/// sequence computes what one full forward computes.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "../core/config.hpp"
#include "../inner/learner.hpp"
#include "../models/model_config.hpp"
#include "../blocks/nn.hpp"
#include "../core/params.hpp"

namespace ttt {

template <class L>
class TTTLayer {
  static_assert(inner::check_learner<L>());

 public:
  using Learner = L;
  using HeadWorkspace = typename inner::head_workspace<L>::type;

  // ---- shape ----
  int64_t C = 0, H = 0, f = 0, mb = 0, P = 0, K = 0;
  double base_lr = 1.0;
  bool share_qk = false, use_gate = false;
  std::vector<inner::ParamSpec> specs;

  // ---- weights (PyTorch layouts: Linear [out, in]) ----
  Mat q, k, v, o, g;              // [C, C]; k absent with share_qk; g only with use_gate
  Mat conv_q, conv_k;             // [C, K] share_qk only
  RowVec conv_q_b, conv_k_b;      // [C]
  Mat lr_w;                       // [H, C] learnable_ttt_lr_weight [H, 1, C]
  RowVec lr_b;                    // [H]    learnable_ttt_lr_bias [H, 1]
  RowVec token_idx;               // [mb]   learnable_token_idx
  Mat ln_w, ln_b;                 // [H, f] ttt_norm_weight / ttt_norm_bias
  RowVec post_w, post_b;          // [C]    post_norm
  std::vector<float> theta0;      // [H, P] the learner's initial weights, per head in spec order
  nn::RopeTable rope;

  /// What the layer carries from one chunk of a sequence to the next.
  struct State {
    std::vector<float> theta;  // [H, P] inner weights at the start of the current mini-batch
    std::vector<float> gacc;   // [H, P] sum of lr[s] * grad_s over the mini-batch so far
    Mat qk_hist;               // [K-1, C] share_qk: the last K-1 outputs of q_proj
  };

  /// Buffers reused across calls (no allocation per token in steady-state decode).
  struct Workspace {
    Mat XQ, XK, XV, xq, ext, LR, LRt, Zq, O, Y, G;
    std::vector<int64_t> pos;
    std::vector<HeadWorkspace> heads;
  };

  TTTLayer() = default;
  explicit TTTLayer(const ModelConfig& cfg)
      : C(cfg.hidden_size),
        H(cfg.num_attention_heads),
        f(cfg.head_dim()),
        mb(cfg.mini_batch_size),
        K(cfg.conv_kernel),
        base_lr(cfg.ttt_base_lr),
        share_qk(cfg.share_qk),
        use_gate(cfg.use_gate),
        specs(L::param_specs(cfg.head_dim())) {
    P = inner::param_count(specs);
    q = Mat::Zero(C, C);
    if (!share_qk) k = Mat::Zero(C, C);
    v = Mat::Zero(C, C);
    o = Mat::Zero(C, C);
    if (use_gate) g = Mat::Zero(C, C);
    if (share_qk) {
      conv_q = Mat::Zero(C, K);
      conv_k = Mat::Zero(C, K);
      conv_q_b = RowVec::Zero(C);
      conv_k_b = RowVec::Zero(C);
    }
    lr_w = Mat::Zero(H, C);
    lr_b = RowVec::Zero(H);
    token_idx = RowVec::Zero(mb);
    ln_w = Mat::Ones(H, f);
    ln_b = Mat::Zero(H, f);
    post_w = RowVec::Ones(C);
    post_b = RowVec::Zero(C);
    theta0.assign(size_t(H * P), 0.0f);
    rope = nn::RopeTable(mb, f, cfg.rope_theta);
  }

  /// Every parameter under its Hugging Face name (`prefix` = "model.layers.{i}.seq_modeling_block.").
  template <class F>
  void visit_params(const std::string& prefix, F&& fn) {
    using I = ParamRef::Init;
    fn(make_param(prefix + "learnable_token_idx", {mb}, token_idx.data(), I::zeros, 0, true));
    fn(make_param(prefix + "learnable_ttt_lr_weight", {H, 1, C}, lr_w.data(), I::normal));
    fn(make_param(prefix + "learnable_ttt_lr_bias", {H, 1}, lr_b.data(), I::zeros, 0, true));
    fn(make_param(prefix + "ttt_norm_weight", {H, f}, ln_w.data(), I::ones, 0, true));
    fn(make_param(prefix + "ttt_norm_bias", {H, f}, ln_b.data(), I::zeros, 0, true));
    int64_t off = 0;
    for (const auto& s : specs) {
      ParamRef p;
      p.name = prefix + s.name;
      p.shape = {H};
      p.shape.insert(p.shape.end(), s.shape.begin(), s.shape.end());
      p.data = theta0.data() + off;
      p.blocks = H;
      p.block_size = s.numel();
      p.stride = P;
      p.init = s.init == inner::ParamSpec::Init::zeros ? I::zeros : I::normal;
      p.no_decay = s.init == inner::ParamSpec::Init::zeros;  // biases
      fn(p);
      off += s.numel();
    }
    fn(make_param(prefix + "q_proj.weight", {C, C}, q.data()));
    if (!share_qk) fn(make_param(prefix + "k_proj.weight", {C, C}, k.data()));
    fn(make_param(prefix + "v_proj.weight", {C, C}, v.data()));
    fn(make_param(prefix + "o_proj.weight", {C, C}, o.data()));
    if (share_qk) {
      // conv weights are stored [C, 1, K] in the checkpoint, [C, K] here: same memory.
      fn(make_param(prefix + "conv_q.weight", {C, 1, K}, conv_q.data(), I::uniform_fan_in, double(K)));
      fn(make_param(prefix + "conv_q.bias", {C}, conv_q_b.data(), I::uniform_fan_in, double(K), true));
      fn(make_param(prefix + "conv_k.weight", {C, 1, K}, conv_k.data(), I::uniform_fan_in, double(K)));
      fn(make_param(prefix + "conv_k.bias", {C}, conv_k_b.data(), I::uniform_fan_in, double(K), true));
    }
    if (use_gate) fn(make_param(prefix + "g_proj.weight", {C, C}, g.data()));
    fn(make_param(prefix + "post_norm.weight", {C}, post_w.data(), I::ones, 0, true));
    fn(make_param(prefix + "post_norm.bias", {C}, post_b.data(), I::zeros, 0, true));
  }

  State new_state() const {
    State s;
    s.theta = theta0;
    s.gacc.assign(theta0.size(), 0.0f);
    if (share_qk) s.qk_hist = Mat::Zero(K - 1, C);
    return s;
  }

  /// Bytes of State for one sequence.
  int64_t state_bytes() const { return int64_t(2 * H * P + (share_qk ? (K - 1) * C : 0)) * 4; }

  /// out = TTT(X) for the n tokens X: (n, C) (the normed block input) at positions pos0 ...
  void forward(const Mat& X, State& st, int64_t pos0, Workspace& ws, Mat& out) const {
    const int64_t n = X.rows();
    // projections                                                                     (n, C)
    ensure_size(ws.XQ, n, C);
    ensure_size(ws.XK, n, C);
    ensure_size(ws.XV, n, C);
    if (share_qk) {
      ensure_size(ws.xq, n, C);
      ws.xq.noalias() = X * q.transpose();
      nn::extend_history(ws.xq, st.qk_hist, ws.ext);
      nn::causal_conv_ext(ws.ext, conv_q, conv_q_b, ws.XQ);
      nn::causal_conv_ext(ws.ext, conv_k, conv_k_b, ws.XK);
    } else {
      ws.XQ.noalias() = X * q.transpose();
      ws.XK.noalias() = X * k.transpose();
    }
    ws.XV.noalias() = X * v.transpose();
    // RoPE at positions modulo the mini-batch size
    ws.pos.resize(size_t(n));
    for (int64_t r = 0; r < n; ++r) ws.pos[size_t(r)] = (pos0 + r) % mb;
    nn::apply_rope(ws.XQ, f, rope, ws.pos.data());
    nn::apply_rope(ws.XK, f, rope, ws.pos.data());
    // learning-rate gate lr[h, t] = base_lr * sigmoid(X[t] . w_lr[h] + b_lr[h]) / f         (H, n)
    ensure_size(ws.LRt, H, n);
    ws.LRt.noalias() = lr_w * X.transpose();
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t)
        ws.LRt(h, t) = float(base_lr) * kernels::sigmoid_scalar(ws.LRt(h, t) + lr_b[h]) / float(f);
    // token_eta[t] = clamp(1/(t+1) + learnable_token_idx[t], 0)
    float eta_tab_small[256];
    std::vector<float> eta_tab_big;
    float* eta_tab = eta_tab_small;
    if (mb > 256) {
      eta_tab_big.resize(size_t(mb));
      eta_tab = eta_tab_big.data();
    }
    for (int64_t t = 0; t < mb; ++t) eta_tab[t] = std::max(1.0f / float(t + 1) + token_idx[t], 0.0f);

    ensure_size(ws.Zq, n, C);
    ensure_size(ws.O, n, C);
    if (ws.heads.size() != size_t(H)) ws.heads.resize(size_t(H));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (H > 1 && n * f * f >= 16384)
#endif
    for (int64_t h = 0; h < H; ++h) run_head(h, st, pos0, n, eta_tab, ws);

    // post LayerNorm over C, gate, output projection
    ensure_size(ws.Y, n, C);
    nn::layer_norm_rows(ws.O, post_w.data(), post_b.data(), 1e-6f, ws.Y);
    if (use_gate) {
      ensure_size(ws.G, n, C);
      ws.G.noalias() = X * g.transpose();
      kernels::gelu_tanh(backend::cpu_default{}, ws.G.data(), ws.G.data(), size_t(ws.G.size()));
      ws.Y.array() *= ws.G.array();
    }
    ensure_size(out, n, C);
    out.noalias() = ws.Y * o.transpose();
  }

  /// FLOPs of forward() per token (projections + inner loop), for benchmarks.
  double flops_per_token() const {
    const double c = double(C);
    double proj = 2.0 * c * c * (share_qk ? 3.0 : 4.0) + (use_gate ? 2.0 * c * c : 0.0) + 2.0 * c * double(H);
    return proj + double(H) * inner::flops_per_token<L>(f, mb);
  }

 private:
  void run_head(int64_t h, State& st, int64_t pos0, int64_t n, const float* eta_tab, Workspace& ws) const {
    float* theta = st.theta.data() + h * P;
    float* gacc = st.gacc.data() + h * P;
    HeadWorkspace& hw = ws.heads[size_t(h)];
    int64_t r0 = 0;
    while (r0 < n) {
      const int64_t p = (pos0 + r0) % mb;
      const int64_t len = std::min(n - r0, mb - p);
      const inner::Segment seg{CMatRef(ws.XQ.block(r0, h * f, len, f)),
                               CMatRef(ws.XK.block(r0, h * f, len, f)),
                               CMatRef(ws.XV.block(r0, h * f, len, f)),
                               eta_tab + p,
                               ws.LRt.row(h).data() + r0,
                               ln_w.row(h).data(),
                               ln_b.row(h).data(),
                               p == 0};
      MatRef Zq(ws.Zq.block(r0, h * f, len, f));
      if constexpr (inner::HasDualForm<L>) L::dual_form(theta, gacc, seg, Zq, hw);
      else inner::primal_segment<L>(theta, gacc, f, seg, Zq, hw);
      if (p + len == mb) {  // mini-batch complete: W <- W - eta[b-1] * sum_s lr_s grad_s
        const float e = eta_tab[mb - 1];
        for (int64_t i = 0; i < P; ++i) {
          theta[i] -= e * gacc[i];
          gacc[i] = 0.0f;
        }
      }
      r0 += len;
    }
    // O = XQ + LN(Zq) for this head
    auto Zh = ws.Zq.block(0, h * f, n, f);
    auto Oh = ws.O.block(0, h * f, n, f);
    nn::layer_norm_rows(Zh, ln_w.row(h).data(), ln_b.row(h).data(), 1e-6f, Oh);
    Oh += ws.XQ.block(0, h * f, n, f);
  }
};

}  // namespace ttt
