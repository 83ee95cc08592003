#pragma once
/// \file layers/ttt_layer.hpp
/// The TTT sequence layer, generic over its inner learner L and the scalar S: projections, RoPE,
/// the learning-rate gate, the mini-batch inner loop (dual form where the learner has one, primal
/// otherwise), post LayerNorm, gate and output projection. `forward` processes any chunk of a
/// sequence from any position and carries its state (inner weights at the start of the current
/// mini-batch, the accumulated gradient, the conv history of share_qk) from chunk to chunk, so
/// that every chunking of a sequence computes what one full forward computes. The training
/// forward and its reverse pass are layers/ttt_layer_grad.hpp; both use the pieces below
/// (`project`, `lr_gate`, `eta_table`, `head_output`, `output`), so the layer is written once.
#include <algorithm>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../blocks/activations.hpp"
#include "../blocks/causal_conv.hpp"
#include "../blocks/layer_norm.hpp"
#include "../blocks/linear.hpp"
#include "../blocks/rope.hpp"
#include "../core/model_config.hpp"
#include "../core/parallel.hpp"
#include "../core/weight_dtype.hpp"
#include "../core/params.hpp"
#include "../inner/learner.hpp"
#include "../inner/optimized.hpp"
#include "../inner/optimizers.hpp"
#include "../inner/primal.hpp"

namespace ttt {

/// L: the inner learner (inner/learner.hpp); S: the scalar; Opts: the inner optimizers a config
/// may name (inner/optimizer.hpp; `ttt_inner_optimizer` picks one at construction).
template <class L, class S = float, class Opts = inner::BuiltinOptimizers>
class TTTLayer {
  static_assert(inner::check_learner<L>());

 public:
  using Learner = L;
  using Scalar = S;
  using Config = ModelConfig;
  using M = MatT<S>;
  using R = RowT<S>;
  using HeadWorkspace = typename inner::head_workspace<L, S>::type;
  template <class T>
  using Rebind = TTTLayer<L, T, Opts>;
  using Optimizers = Opts;
  /// Checkpoint names: "model.layers.{i}.seq_modeling_block.<name>"; the model adds a pre-conv.
  static constexpr const char* kPrefix = "seq_modeling_block.";
  static constexpr bool kPreConv = true;

  // ---- shape ----
  int64_t C = 0, H = 0, f = 0, mb = 0, P = 0, K = 0;
  int64_t Q = 0;            // values of inner-optimizer state per head
  double base_lr = 1.0;
  bool share_qk = false, use_gate = false;
  bool decay_gate = false;  // the optimizer reads a learned forgetting gate
  /// Plain GD with a learner that has `fuses_gd_step`: a whole mini-batch's step is taken inside
  /// its dual form (no separate pass over gacc). false: the plain twin, step after the dual form.
  bool fuse_gd_step = true;
  /// Plain GD with a learner that has row decode (inner::HasRowDecode): a token decoded alone keeps
  /// its gradient as a row of State::rows, and gacc is not read or written until a longer chunk
  /// comes or the rows outgrow row_capacity(). false: the plain twin, the dual form of one token.
  bool row_decode = true;
  inner::Dims dims;          // f and the learner's hidden width (ttt_hidden_size)
  std::vector<inner::ParamSpec> specs;
  inner::UpdateRule rule;   // the inner optimizer and query order
  int opt = 0;              // rule.optimizer's index in Opts
  inner::OptimizerFn<S> ofn;  // ... its step, in S

  // ---- weights (PyTorch layouts: Linear [out, in]) ----
  M q, k, v, o, g;          // [C, C]; k absent with share_qk; g only with use_gate
  M conv_q, conv_k;         // [C, K] share_qk only
  R conv_q_b, conv_k_b;     // [C]
  M lr_w;                   // [H, C] learnable_ttt_lr_weight [H, 1, C]
  R lr_b;                   // [H]    learnable_ttt_lr_bias [H, 1]
  M decay_w;                // [H, C] learnable_ttt_decay_weight [H, 1, C] (decay_gate only)
  R decay_b;                // [H]    learnable_ttt_decay_bias [H, 1]
  R token_idx;              // [mb]   learnable_token_idx
  M ln_w, ln_b;             // [H, f] ttt_norm_weight / ttt_norm_bias
  R post_w, post_b;         // [C]    post_norm
  aligned_vector<S> theta0; // [H, P] the learner's initial weights, per head in spec order
  blocks::RopeTable rope;   // positions 0 .. mb-1 (RoPE restarts every mini-batch)

  /// bf16 copies of the projections (set_weight_dtype(bf16); null: fp32). Shared by copies of the
  /// layer; stale if q, k, v, o or g change afterwards (the trainer refuses bf16 models).
  struct Bf16Weights {
    kernels::Bf16Matrix q, k, v, o, g;
  };
  std::shared_ptr<const Bf16Weights> w16;

  /// What the layer carries from one chunk of a sequence to the next.
  struct State {
    aligned_vector<S> theta;  // [H, P] inner weights at the start of the current mini-batch
    aligned_vector<S> gacc;   // [H, P] sum of lr[s] * grad_s over the mini-batch so far
    aligned_vector<S> ostate; // [H, Q] the inner optimizer's state at the start of the mini-batch
    M qk_hist;                // [K-1, C] share_qk: the last K-1 outputs of q_proj
    /// row_decode: [H, row_capacity(), the learner's token_row_size] the gradient rows of the
    /// current mini-batch's first nrows[h] tokens, not yet in gacc (which then holds none of them)
    aligned_vector<S> rows;
    std::vector<int64_t> nrows;  // [H]
  };

  /// The projections of a chunk (kept by the training forward for its reverse pass).
  struct Proj {
    M xq, ext;              // share_qk: q_proj output and [history; xq]
    M XQ, XK, XV;           // (n, C) after the convs and RoPE
    std::vector<int64_t> pos;  // row r's position inside its mini-batch
  };

  /// Buffers reused across calls (no allocation per token in steady-state decode).
  struct Workspace {
    Proj p;
    M sig, LRt, Zq, O, Y, G, alpha;
    aligned_vector<S> eta;
    std::vector<HeadWorkspace> heads;
    std::vector<inner::OptimizedWorkspace<S>> oheads;
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
        dims(cfg.head_dim(), cfg.ttt_hidden_size),
        specs(L::param_specs(dims)) {
    P = inner::param_count(specs);
    rule = inner::update_rule(cfg);
    opt = inner::checked_optimizer<Opts>(rule, "config");
    inner::check_hidden_size<L>(dims, "config");
    ofn = inner::optimizer_fn<Opts, S>(opt, specs);
    Q = ofn.Q;
    decay_gate = ofn.gate;
    if (decay_gate) {
      decay_w = M::Zero(H, C);
      decay_b = R::Zero(H);
    }
    q = M::Zero(C, C);
    if (!share_qk) k = M::Zero(C, C);
    v = M::Zero(C, C);
    o = M::Zero(C, C);
    if (use_gate) g = M::Zero(C, C);
    if (share_qk) {
      conv_q = M::Zero(C, K);
      conv_k = M::Zero(C, K);
      conv_q_b = R::Zero(C);
      conv_k_b = R::Zero(C);
    }
    lr_w = M::Zero(H, C);
    lr_b = R::Zero(H);
    token_idx = R::Zero(mb);
    ln_w = M::Ones(H, f);
    ln_b = M::Zero(H, f);
    post_w = R::Ones(C);
    post_b = R::Zero(C);
    theta0.assign(size_t(H * P), S(0));
    rope = blocks::RopeTable(mb, f, cfg.rope_theta);
  }

  /// The same layer in scalar S (weights cast): a float layer's double twin and back.
  template <class T>
    requires(!std::is_same_v<T, S>)
  explicit TTTLayer(const TTTLayer<L, T, Opts>& o)
      : C(o.C), H(o.H), f(o.f), mb(o.mb), P(o.P), K(o.K), Q(o.Q), base_lr(o.base_lr), share_qk(o.share_qk),
        use_gate(o.use_gate), decay_gate(o.decay_gate), dims(o.dims), specs(o.specs), rule(o.rule), opt(o.opt), rope(o.rope) {
    decay_w = o.decay_w.template cast<S>(), decay_b = o.decay_b.template cast<S>();
    q = o.q.template cast<S>(), k = o.k.template cast<S>(), v = o.v.template cast<S>(), this->o = o.o.template cast<S>();
    g = o.g.template cast<S>(), conv_q = o.conv_q.template cast<S>(), conv_k = o.conv_k.template cast<S>();
    conv_q_b = o.conv_q_b.template cast<S>(), conv_k_b = o.conv_k_b.template cast<S>();
    lr_w = o.lr_w.template cast<S>(), lr_b = o.lr_b.template cast<S>(), token_idx = o.token_idx.template cast<S>();
    ln_w = o.ln_w.template cast<S>(), ln_b = o.ln_b.template cast<S>();
    post_w = o.post_w.template cast<S>(), post_b = o.post_b.template cast<S>();
    theta0.assign(o.theta0.begin(), o.theta0.end());
  }

  /// Every parameter under its Hugging Face name (`prefix` = "model.layers.{i}.seq_modeling_block."):
  /// fn(const BasicParamRef<S>&) for each (the walk is `visit_param_refs`, compiled once per layer type).
  template <class F>
  void visit_params(const std::string& prefix, F&& fn) {
    visit_param_refs(prefix, ParamVisitor<S>(fn));
  }
  void visit_param_refs(const std::string& prefix, ParamVisitor<S> fn);

  /// Whether `other` has this layer's shape (a gradient layer for it).
  bool same_shape(const TTTLayer& other) const {
    return other.C == C && other.H == H && other.P == P && other.mb == mb && other.share_qk == share_qk &&
           other.use_gate == use_gate && other.K == K && other.Q == Q && other.decay_gate == decay_gate;
  }

  State new_state() const {
    State s;
    s.theta = theta0;
    s.gacc.assign(theta0.size(), S(0));
    s.ostate.assign(size_t(H * Q), S(0));
    if (share_qk) s.qk_hist = M::Zero(K - 1, C);
    if constexpr (inner::HasRowDecode<L, S>) {
      s.rows.assign(size_t(H * row_capacity() * L::token_row_size(dims)), S(0));
      s.nrows.assign(size_t(H), 0);
    }
    return s;
  }

  /// bf16: round q, k, v, o, g to bf16 values and keep bf16 copies that every product of the
  /// layer reads (fp32 activations and accumulation); fp32: drop the copies (the weights keep
  /// their rounded values). The gates, convolutions, norms and the inner learner stay in S.
  /// ConfigError for bf16 on a double layer.
  void set_weight_dtype(WeightDtype d) {
    if (d == WeightDtype::fp32) {
      w16.reset();
      return;
    }
    if constexpr (!std::is_same_v<S, float>) {
      throw ConfigError("dtype bf16: bf16 weights need a float model (this one is double)");
    } else {
      auto b = std::make_shared<Bf16Weights>();
      b->q = blocks::round_to_bf16(q), b->k = blocks::round_to_bf16(k), b->v = blocks::round_to_bf16(v);
      b->o = blocks::round_to_bf16(o), b->g = blocks::round_to_bf16(g);
      w16 = std::move(b);
    }
  }
  WeightDtype weight_dtype() const { return w16 ? WeightDtype::bf16 : WeightDtype::fp32; }

  /// Bytes of State for one sequence.
  int64_t state_bytes() const {
    int64_t rows = 0;
    if constexpr (inner::HasRowDecode<L, S>) rows = H * row_capacity() * L::token_row_size(dims);
    return int64_t(2 * H * P + H * Q + (share_qk ? (K - 1) * C : 0) + rows) * int64_t(sizeof(S));
  }

  /// out = TTT(X) for the n tokens X: (n, C) (the normed block input) at positions pos0 ...
  void forward(const M& X, State& st, int64_t pos0, Workspace& ws, M& out) const;

  /// One token of each of B sequences (batched decode): row b of X (B, C) continues the sequence
  /// of `*states[b]` at position pos[b]. The projections and gates read each weight once for all
  /// rows; the inner step runs per (sequence, head). Row b of `out` is what
  /// forward(X.row(b), *states[b], pos[b], ...) computes (to the rounding of the products).
  void forward_rows(const M& X, std::span<State* const> states, std::span<const int64_t> pos, Workspace& ws,
                    M& out) const;

  // ---- the pieces the inference and the training forward share -------------------------------

  /// XQ, XK, XV of X (n, C): projections (share_qk: q_proj, then two causal convs over
  /// [history; xq], history advanced; a null history means the start of a sequence), RoPE at
  /// positions (pos0 + r) % mini_batch_size.
  void project(const M& X, M* qk_hist, int64_t pos0, Proj& p) const {
    const int64_t n = X.rows();
    ensure_size(p.XQ, n, C);
    ensure_size(p.XK, n, C);
    ensure_size(p.XV, n, C);
    if (share_qk) {
      ensure_size(p.xq, n, C);
      blocks::linear<S>(cv(X), cv(q), bf(&Bf16Weights::q), mv(p.xq));
      if (qk_hist) blocks::extend_history(p.xq, *qk_hist, p.ext);
      else blocks::zero_history(p.xq, K, p.ext);
      blocks::causal_conv(p.ext, conv_q, conv_q_b, p.XQ);
      blocks::causal_conv(p.ext, conv_k, conv_k_b, p.XK);
    } else {
      blocks::linear<S>(cv(X), cv(q), bf(&Bf16Weights::q), mv(p.XQ));
      blocks::linear<S>(cv(X), cv(k), bf(&Bf16Weights::k), mv(p.XK));
    }
    blocks::linear<S>(cv(X), cv(v), bf(&Bf16Weights::v), mv(p.XV));
    p.pos.resize(size_t(n));
    for (int64_t r = 0; r < n; ++r) p.pos[size_t(r)] = (pos0 + r) % mb;
    blocks::rope(p.XQ, f, rope, p.pos.data());
    blocks::rope(p.XK, f, rope, p.pos.data());
  }

  /// project() for rows of different sequences: row b at position pos[b], its share_qk history
  /// `states[b]->qk_hist` (advanced by one row).
  void project_rows(const M& X, std::span<State* const> states, std::span<const int64_t> pos, Proj& p) const {
    const int64_t n = X.rows();
    ensure_size(p.XQ, n, C);
    ensure_size(p.XK, n, C);
    ensure_size(p.XV, n, C);
    if (share_qk) {
      ensure_size(p.xq, n, C);
      blocks::linear<S>(cv(X), cv(q), bf(&Bf16Weights::q), mv(p.xq), false, true);
      for (int64_t b = 0; b < n; ++b) {
        blocks::extend_history(p.xq.row(b), states[size_t(b)]->qk_hist, p.ext);
        blocks::causal_conv(p.ext, conv_q, conv_q_b, p.XQ.row(b));
        blocks::causal_conv(p.ext, conv_k, conv_k_b, p.XK.row(b));
      }
    } else {
      blocks::linear<S>(cv(X), cv(q), bf(&Bf16Weights::q), mv(p.XQ), false, true);
      blocks::linear<S>(cv(X), cv(k), bf(&Bf16Weights::k), mv(p.XK), false, true);
    }
    blocks::linear<S>(cv(X), cv(v), bf(&Bf16Weights::v), mv(p.XV), false, true);
    p.pos.resize(size_t(n));
    for (int64_t b = 0; b < n; ++b) p.pos[size_t(b)] = pos[size_t(b)] % mb;
    blocks::rope(p.XQ, f, rope, p.pos.data());
    blocks::rope(p.XK, f, rope, p.pos.data());
  }

  /// The bf16 copy of one projection, or null (fp32 products).
  const kernels::Bf16Matrix* bf(kernels::Bf16Matrix Bf16Weights::*w) const { return w16 ? &((*w16).*w) : nullptr; }

  /// The learning-rate gate: sig(h, t) = sigmoid(X[t] . w_lr[h] + b_lr[h]), LRt = base_lr * sig / f.
  ///                                                                            sig, LRt: (H, n)
  void lr_gate(const M& X, M& sig, M& LRt) const {
    const int64_t n = X.rows();
    ensure_size(sig, H, n);
    ensure_size(LRt, H, n);
    blocks::matmul(mv(sig), cv(lr_w), cv(X).transpose());
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t) {
        sig(h, t) = blocks::sigmoid(sig(h, t) + lr_b[h]);
        LRt(h, t) = S(base_lr) * sig(h, t) / S(f);
      }
  }

  /// The forgetting gate of optimizers that read one: alpha(h, t) = sigmoid(X[t] . w_decay[h] +
  /// b_decay[h]).                                                                  alpha: (H, n)
  void forget_gate(const M& X, M& alpha) const {
    const int64_t n = X.rows();
    ensure_size(alpha, H, n);
    blocks::matmul(mv(alpha), cv(decay_w), cv(X).transpose());
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < n; ++t) alpha(h, t) = blocks::sigmoid(alpha(h, t) + decay_b[h]);
  }

  /// token_eta[t] = clamp(1/(t+1) + learnable_token_idx[t], 0) for t < mini_batch_size.
  void eta_table(aligned_vector<S>& eta) const {
    eta.resize(size_t(mb));
    for (int64_t t = 0; t < mb; ++t) eta[size_t(t)] = std::max(S(1) / S(t + 1) + token_idx[t], S(0));
  }

  /// Head h's columns of O = XQ + LN(Zq) (the inner loss's LayerNorm of this head), rows r0 ..
  /// r0+n-1 (n < 0: all of them).
  void head_output(int64_t h, const M& XQ, const M& Zq, M& O, int64_t r0 = 0, int64_t n = -1) const {
    if (n < 0) n = Zq.rows() - r0;
    auto Oh = O.block(r0, h * f, n, f);
    blocks::layer_norm(Zq.block(r0, h * f, n, f), ln_w.row(h).data(), ln_b.row(h).data(), 1e-6, Oh);
    Oh += XQ.block(r0, h * f, n, f);
  }

  /// out = o_proj(Y), Y = post_norm(O) [* gelu(g_proj X)]. Yn: the post-norm output; with use_gate
  /// G = gelu(g_proj X), gpre (optional) keeps g_proj X for the reverse pass, and Y may be Yn
  /// (the product in place).
  /// `batched`: rows of different sequences (forward_rows): the few-rows products (blocks/linear.hpp).
  void output(const M& X, const M& O, M& Yn, M& G, M* gpre, M& Y, M& out, bool batched = false) const {
    const int64_t n = X.rows();
    ensure_size(Yn, n, C);
    parallel_ranges(n, std::max<int64_t>(2, (int64_t(1) << 15) / C), [&](int64_t r0, int64_t r1) {  // rows over the threads
      blocks::layer_norm(O.middleRows(r0, r1 - r0), post_w.data(), post_b.data(), 1e-6, Yn.middleRows(r0, r1 - r0));
    });
    ensure_size(out, n, C);
    if (!use_gate) {
      blocks::linear<S>(cv(Yn), cv(o), bf(&Bf16Weights::o), mv(out), false, batched);
      return;
    }
    ensure_size(G, n, C);
    blocks::linear<S>(cv(X), cv(g), bf(&Bf16Weights::g), mv(G), false, batched);
    if (gpre) *gpre = G;
    if (&Y != &Yn) ensure_size(Y, n, C);
    parallel_ranges(n * C, int64_t(1) << 15, [&](int64_t b, int64_t e) {  // elements over the threads
      blocks::gelu_into(G.data() + b, G.data() + b, size_t(e - b));
      auto g = Eigen::Map<const Eigen::ArrayX<S>>(G.data() + b, e - b);
      if (&Y == &Yn) Eigen::Map<Eigen::ArrayX<S>>(Yn.data() + b, e - b) *= g;
      else Eigen::Map<Eigen::ArrayX<S>>(Y.data() + b, e - b) = Eigen::Map<const Eigen::ArrayX<S>>(Yn.data() + b, e - b) * g;
    });
    blocks::linear<S>(cv(Y), cv(o), bf(&Bf16Weights::o), mv(out), false, batched);
  }

  /// FLOPs of forward() per token (projections + inner loop), for benchmarks.
  double flops_per_token() const {
    const double c = double(C);
    double proj = 2.0 * c * c * (share_qk ? 3.0 : 4.0) + (use_gate ? 2.0 * c * c : 0.0) + 2.0 * c * double(H);
    return proj + double(H) * inner::flops_per_token<L>(dims, mb);
  }

  /// Row decode: the most tokens of a mini-batch a head keeps as rows, as many as fit in its P
  /// weights (more would read more per token than gacc does; TTT-MLP, f = 64: 51, so a mini-batch
  /// of 16 decodes as rows throughout, one of 2,048 from its 52nd token on through gacc), at most
  /// a mini-batch; 0 (no rows, no State for them) under an inner optimizer other than plain GD.
  int64_t row_capacity() const {
    if constexpr (inner::HasRowDecode<L, S>) {
      if (!rule.is_plain_gd()) return 0;
      return std::min(mb, std::max<int64_t>(1, P / L::token_row_size(dims)));
    } else {
      return 0;
    }
  }

 private:
  /// Whether the heads of n tokens run on the threads in parallel: when n times a head's inner
  /// weights (P values, what a token's inner step reads) is worth a thread: TTT-Linear (f = 64)
  /// from 4 tokens on, TTT-MLP from one (decode).
  bool heads_in_parallel(int64_t n) const { return n * P >= 16384; }

  /// The learning-rate (and forgetting) gates of X's rows, the eta table, and the per-head buffers
  /// of n = X.rows() rows: what forward and forward_rows do between the projections and the heads.
  void gates_and_buffers(const M& X, Workspace& ws) const {
    const int64_t n = X.rows();
    lr_gate(X, ws.sig, ws.LRt);
    eta_table(ws.eta);
    if (decay_gate) forget_gate(X, ws.alpha);
    ensure_size(ws.Zq, n, C);
    ensure_size(ws.O, n, C);
    if (ws.heads.size() != size_t(H)) ws.heads.resize(size_t(H));
    if (!rule.is_plain_gd() && ws.oheads.size() != size_t(H)) ws.oheads.resize(size_t(H));
  }

  /// Head h of rows row0 .. row0+n-1 of the workspace's projections: n tokens of the sequence of
  /// `st` from position pos0, their outputs O = XQ + LN(Zq) segment by segment (a mini-batch's
  /// Zq still in L1 when its LayerNorm reads it).
  void run_head(int64_t h, State& st, int64_t pos0, int64_t row0, int64_t n, Workspace& ws) const {
    S* theta = st.theta.data() + h * P;
    S* gacc = st.gacc.data() + h * P;
    HeadWorkspace& hw = ws.heads[size_t(h)];
    const S* eta = ws.eta.data();
    const int64_t end = row0 + n;
    int64_t r0 = row0;
    while (r0 < end) {
      const int64_t p = (pos0 + r0 - row0) % mb;
      const int64_t len = std::min(end - r0, mb - p);
      inner::Segment<S> seg{CRefT<S>(ws.p.XQ.block(r0, h * f, len, f)),
                            CRefT<S>(ws.p.XK.block(r0, h * f, len, f)),
                            CRefT<S>(ws.p.XV.block(r0, h * f, len, f)),
                            eta + p,
                            ws.LRt.row(h).data() + r0,
                            ln_w.row(h).data(),
                            ln_b.row(h).data(),
                            p == 0,
                            decay_gate ? ws.alpha.row(h).data() + r0 : nullptr};
      RefT<S> Zq(ws.Zq.block(r0, h * f, len, f));
      if constexpr (inner::HasRowDecode<L, S>) {
        const int64_t R = L::token_row_size(dims), cap = row_capacity();
        S* rows = st.rows.data() + h * cap * R;
        int64_t& nrows = st.nrows[size_t(h)];
        if (row_decode && len == 1 && nrows == p && p < cap) {  // gacc is zero: rows hold it all (cap > 0: plain GD)
          L::decode_token(theta, rows, p, cap, dims, seg, Zq, hw);
          nrows = p + 1;
          if (nrows == mb) {  // mini-batch complete: W <- W - eta[b-1] * sum_s lr_s grad_s
            L::add_rows(rows, mb, -eta[mb - 1], theta, dims);
            nrows = 0;
          }
          head_output(h, ws.p.XQ, ws.Zq, ws.O, r0, len);
          r0 += len;
          continue;
        }
        if (nrows > 0) {  // the rows into gacc, for the paths that read it (a longer chunk, a full row buffer)
          L::add_rows(rows, nrows, S(1), gacc, dims);
          nrows = 0;
        }
      }
      if (rule.is_plain_gd()) {
        bool fused = false;  // a whole mini-batch: its step W <- W - eta[b-1] * sum_s lr_s grad_s in the dual form
        if constexpr (inner::HasDualForm<L, S>) {
          if constexpr (requires { requires L::fuses_gd_step; }) {
            if (p == 0 && len == mb && fuse_gd_step) {
              fused = true;
              seg.gscale = -eta[mb - 1];
            }
          }
          inner::dual_form<L, S>(theta, fused ? theta : gacc, dims, seg, Zq, hw);
        } else {
          inner::primal_segment<L, S>(theta, gacc, dims, seg, Zq, hw);
        }
        if (p + len == mb && !fused) {  // mini-batch complete: W <- W - eta[b-1] * sum_s lr_s grad_s
          inner::GD::step(inner::Step<S>{specs, rule, theta, nullptr, gacc, eta[mb - 1], S(0), theta, nullptr});
          std::fill(gacc, gacc + P, S(0));
        }
      } else {
        S* ost = st.ostate.data() + h * Q;
        auto& ow = ws.oheads[size_t(h)];
        inner::optimized_segment<L, S>(theta, ost, gacc, dims, specs, rule, ofn, seg, Zq, ow);
        if (p + len == mb) {  // mini-batch complete: the optimizer's step at its last token
          inner::optimizer_step<S>(ofn, specs, rule, theta, ost, gacc, eta[mb - 1], seg.alpha ? seg.alpha[len - 1] : S(0),
                                   ow.theta_t.data(), ow.state_t.data());
          std::copy(ow.theta_t.begin(), ow.theta_t.end(), theta);
          std::copy(ow.state_t.begin(), ow.state_t.end(), ost);
          std::fill(gacc, gacc + P, S(0));
        }
      }
      head_output(h, ws.p.XQ, ws.Zq, ws.O, r0, len);
      r0 += len;
    }
  }
};

// Out of the class body (not inline), so that programs can take it from the precompiled
// instances (ttt::precompiled) instead of compiling it in every translation unit.
template <class L, class S, class Opts>
void TTTLayer<L, S, Opts>::visit_param_refs(const std::string& prefix, ParamVisitor<S> fn) {
  using I = ParamInit;
  fn(make_param(prefix + "learnable_token_idx", {mb}, token_idx.data(), I::zeros, 0, true));
  fn(make_param(prefix + "learnable_ttt_lr_weight", {H, 1, C}, lr_w.data(), I::normal));
  fn(make_param(prefix + "learnable_ttt_lr_bias", {H, 1}, lr_b.data(), I::zeros, 0, true));
  if (decay_gate) {
    fn(make_param(prefix + "learnable_ttt_decay_weight", {H, 1, C}, decay_w.data(), I::normal));
    fn(make_param(prefix + "learnable_ttt_decay_bias", {H, 1}, decay_b.data(), I::constant, -4.0, true));
  }
  fn(make_param(prefix + "ttt_norm_weight", {H, f}, ln_w.data(), I::ones, 0, true));
  fn(make_param(prefix + "ttt_norm_bias", {H, f}, ln_b.data(), I::zeros, 0, true));
  int64_t off = 0;
  for (const auto& s : specs) {
    BasicParamRef<S> p;
    p.name = prefix + s.name;
    p.shape = {H};
    p.shape.insert(p.shape.end(), s.shape.begin(), s.shape.end());
    p.data = theta0.data() + off;
    p.blocks = H;
    p.block_size = s.numel();
    p.stride = P;
    p.init = s.init == inner::ParamSpec::Init::zeros ? I::zeros : I::normal;
    if (s.init == inner::ParamSpec::Init::normal_fan_in) p.init = I::normal_fan_in, p.init_scale = double(s.shape[0]);
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

template <class L, class S, class Opts>
void TTTLayer<L, S, Opts>::forward(const M& X, State& st, int64_t pos0, Workspace& ws, M& out) const {
  const int64_t n = X.rows();
  project(X, share_qk ? &st.qk_hist : nullptr, pos0, ws.p);
  gates_and_buffers(X, ws);
  parallel_heads(H, heads_in_parallel(n), [&](int64_t h) { run_head(h, st, pos0, 0, n, ws); });
  output(X, ws.O, ws.Y, ws.G, nullptr, ws.Y, out);
}

template <class L, class S, class Opts>
void TTTLayer<L, S, Opts>::forward_rows(const M& X, std::span<State* const> states, std::span<const int64_t> pos,
                                        Workspace& ws, M& out) const {
  const int64_t n = X.rows();
  if (states.size() != size_t(n) || pos.size() != size_t(n))
    throw ShapeError("TTTLayer::forward_rows: " + std::to_string(n) + " rows, " + std::to_string(states.size()) +
                     " states, " + std::to_string(pos.size()) + " positions (one of each per sequence)");
  project_rows(X, states, pos, ws.p);
  gates_and_buffers(X, ws);
  parallel_heads(H, heads_in_parallel(n), [&](int64_t h) {
    for (int64_t b = 0; b < n; ++b) run_head(h, *states[size_t(b)], pos[size_t(b)], b, 1, ws);
  });
  output(X, ws.O, ws.Y, ws.G, nullptr, ws.Y, out, /*batched=*/true);
}

}  // namespace ttt

#if defined(TTT_PRECOMPILED)
#include "../inner/linear.hpp"
#include "../inner/linear_attention.hpp"
#include "../inner/mlp.hpp"
#include "../inner/swiglu.hpp"
namespace ttt {
extern template class TTTLayer<inner::Linear, float>;
extern template class TTTLayer<inner::MLP, float>;
extern template class TTTLayer<inner::SwiGLU, float>;
extern template class TTTLayer<inner::LinearAttention, float>;
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template class TTTLayer<inner::Linear, double>;
extern template class TTTLayer<inner::MLP, double>;
extern template class TTTLayer<inner::SwiGLU, double>;
extern template class TTTLayer<inner::LinearAttention, double>;
#endif
}  // namespace ttt
#endif
