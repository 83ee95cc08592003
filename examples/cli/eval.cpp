// ttt eval: run a model on input_ids [B, L] of a safetensors file and write what it computes:
// input_ids, logits and the loss for both kinds of checkpoint; the hidden states and decode_logits
// (TTT) or the per-hierarchy token / hidden embeddings and the loss's parts (hierarchical); with
// --grads the gradient of the loss for every parameter.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <ttt/blocks/cross_entropy.hpp>
#include <ttt/core/parallel.hpp>
#include <ttt/io/safetensors.hpp>
#include <ttt/models/any_model.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/train/model_grad.hpp>

#if defined(TTT_WITH_CUDA)
#include <ttt/models/cuda/export.hpp>
#include <ttt/models/cuda/model.hpp>
#endif

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"
#include "load.hpp"

namespace ttt_cli {
namespace {

struct EvalArgs {
  std::string model, input, out, dtype = "fp32", device = "cpu";
  bool bf16_activations = false;  // --bf16-activations
  int threads = 0;
  bool grads = false;
};

/// input_ids [B, L] of the input file (row-major) and the file's name for messages.
struct Batch {
  std::string src;
  int64_t B = 0, L = 0;
  std::vector<int64_t> ids;

  std::span<const int64_t> seq(int64_t b) const { return {ids.data() + b * L, size_t(L)}; }
  std::vector<std::vector<int64_t>> seqs() const {
    std::vector<std::vector<int64_t>> v;
    for (int64_t b = 0; b < B; ++b) v.emplace_back(ids.begin() + b * L, ids.begin() + (b + 1) * L);
    return v;
  }
};

/// input_ids of `in`, checked to be [B, L] with B, L >= 1 (one message for both checks on
/// hierarchical checkpoints, two on TTT ones).
Batch read_batch(const ttt::io::SafeTensors& in, bool hier) {
  Batch x;
  x.src = in.source();
  const ttt::io::TensorInfo& ti = in.info("input_ids");
  const std::string shape = ttt::shape_str(ti.shape);
  if (hier && (ti.shape.size() != 2 || ti.shape[0] == 0 || ti.shape[1] == 0))
    throw ttt::ShapeError(x.src + ": tensor 'input_ids' has shape " + shape + ", expected [B, L] with B, L >= 1");
  if (ti.shape.size() != 2)
    throw ttt::ShapeError(x.src + ": tensor 'input_ids' has shape " + shape + ", expected [B, L] (batch, length)");
  x.B = ti.shape[0], x.L = ti.shape[1];
  if (x.B == 0 || x.L == 0)
    throw ttt::ShapeError(x.src + ": tensor 'input_ids' is empty (shape " + shape +
                          "): need at least one sequence of at least one token");
  x.ids = in.read_int("input_ids");
  return x;
}

/// --grads needs a next-token loss, so sequences of at least 2 tokens.
void check_grads(const EvalArgs& a, const Batch& x, const std::string& why) {
  if (a.grads && x.L < 2)
    throw ttt::ShapeError(x.src + ": tensor 'input_ids' has sequences of length 1: --grads needs at least 2 tokens" + why);
}

void add_scalar(ttt::io::SafeTensorsWriter& w, const std::string& name, double v) {
  const float f = float(v);
  w.add(name, {}, std::span<const float>(&f, 1));
}

/// input_ids [B, L] and logits [B, L, V]: what every checkpoint writes.
void add_ids_logits(ttt::io::SafeTensorsWriter& w, const Batch& x, int64_t V, const std::vector<float>& logits) {
  w.add_int64("input_ids", {x.B, x.L}, x.ids);
  w.add("logits", {x.B, x.L, V}, logits);
}

/// grad.{name} for every parameter of the gradient model `g` (copy_out: the hierarchical TTT
/// mixers' per-head tensors are strided).
template <class M>
void add_grads(ttt::io::SafeTensorsWriter& w, M& g) {
  std::vector<float> buf;
  g.visit_params([&](const ttt::ParamRef& p) {
    buf.resize(size_t(p.numel()));
    p.copy_out(buf.data());
    w.add("grad." + p.name, p.shape, std::span<const float>(buf));
  });
}

/// A simple-hierarchical-transformer checkpoint: the per-hierarchy token_embeds.{h} /
/// hidden_embeds.{h}, loss and its three parts (the original's model(ids, return_loss=True) over
/// the batch).
void eval_hier(const EvalArgs& a, ttt::io::SafeTensorsWriter& w) {
  ttt::set_inner_threads(a.threads);
  auto m = load_hier_model(a.model);
  const int64_t V = m.cfg.num_tokens, H = m.cfg.num_hierarchies();
  const auto in = ttt::io::SafeTensors::load(a.input);
  const Batch x = read_batch(in, /*hier=*/true);
  check_grads(a, x, "");
  const std::vector<std::vector<int64_t>> batch = x.seqs();
  std::vector<float> logits;
  std::vector<std::vector<float>> tok(static_cast<size_t>(H)), hid(static_cast<size_t>(H));
  std::vector<int64_t> rows(static_cast<size_t>(H));
  for (const auto& seq : batch) {
    HierModel::Extras e;
    const ttt::Mat lg = m.forward(seq, &e);
    logits.insert(logits.end(), lg.data(), lg.data() + lg.size());
    for (size_t h = 0; h < size_t(H); ++h) {
      rows[h] = e.token_embeds[h].rows();
      tok[h].insert(tok[h].end(), e.token_embeds[h].data(), e.token_embeds[h].data() + e.token_embeds[h].size());
      hid[h].insert(hid[h].end(), e.hidden_embeds[h].data(), e.hidden_embeds[h].data() + e.hidden_embeds[h].size());
    }
  }
  add_ids_logits(w, x, V, logits);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t d = m.cfg.dim_of(h), r = rows[size_t(h)];
    w.add("token_embeds." + std::to_string(h), {x.B, r, d}, tok[size_t(h)]);
    w.add("hidden_embeds." + std::to_string(h), {x.B, r, d}, hid[size_t(h)]);
  }
  if (x.L < 2) return;
  std::optional<HierModel> g;
  if (a.grads) g.emplace(m.cfg);
  const ttt::hier::Losses l = m.loss(batch, g ? &*g : nullptr);
  for (auto [k, v] : {std::pair{"loss", l.total}, {"loss_ce", l.ce}, {"loss_recon", l.recon}, {"loss_ar", l.ar}})
    add_scalar(w, k, v);
  if (g) add_grads(w, *g);
}

/// A TTT checkpoint's input: input_ids checked against the vocabulary, prompt_len (optional).
struct TTTInput {
  Batch x;
  std::optional<int64_t> P;
};
TTTInput read_ttt_input(const EvalArgs& a, int64_t V) {
  const auto in = ttt::io::SafeTensors::load(a.input);
  TTTInput r{read_batch(in, /*hier=*/false), std::nullopt};
  const Batch& x = r.x;
  const std::string& src = x.src;
  const int64_t B = x.B, L = x.L;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) {
      const int64_t id = x.ids[size_t(b * L + t)];
      if (id < 0 || id >= V)
        throw ttt::ShapeError(src + ": tensor 'input_ids': token id " + std::to_string(id) + " at [" +
                              std::to_string(b) + ", " + std::to_string(t) + "] is outside the vocabulary [0, " +
                              std::to_string(V) + ")");
    }
  std::optional<int64_t> P;
  if (in.contains("prompt_len")) {
    const ttt::io::TensorInfo& pi = in.info("prompt_len");
    if (pi.numel() != 1)
      throw ttt::ShapeError(src + ": tensor 'prompt_len' has shape " + ttt::shape_str(pi.shape) +
                            ", expected [1] (one prompt length for the whole batch)");
    P = in.read_int("prompt_len")[0];
    if (*P < 1 || *P >= L)
      throw ttt::ShapeError(src + ": tensor 'prompt_len' is " + std::to_string(*P) + ", expected 1 <= P < L = " +
                            std::to_string(L));
  }
  r.P = P;
  return r;
}

/// What both devices write after the logits: hidden.{i}, prompt_len and decode_logits, the loss.
void add_ttt_outputs(ttt::io::SafeTensorsWriter& w, const TTTInput& in, int64_t V, int64_t C,
                     const std::vector<std::vector<float>>& hidden, const std::vector<float>& dec, double loss_sum) {
  const Batch& x = in.x;
  const int64_t B = x.B, L = x.L;
  for (size_t i = 0; i < hidden.size(); ++i) w.add("hidden." + std::to_string(i), {B, L, C}, hidden[i]);
  if (in.P) {
    const int64_t p = *in.P;
    w.add_int64("prompt_len", {1}, std::span<const int64_t>(&p, 1));
    w.add("decode_logits", {B, L - p, V}, dec);
  }
  if (L >= 2) add_scalar(w, "loss", loss_sum / double(B * (L - 1)));
  else std::cerr << "ttt eval: note: sequences of length 1 have no next-token loss; 'loss' not written\n";
}

/// A TTT checkpoint: hidden.{i} of every layer, the next-token loss, decode_logits when the input
/// has prompt_len. Sequences are independent: one session each, spread over the threads.
void eval_ttt(const EvalArgs& a, ttt::io::SafeTensorsWriter& w) {
  Model m = load_model(a.model);
  m.set_weight_dtype(ttt::parse_weight_dtype(a.dtype, "--dtype"));
  const ttt::ModelConfig& cfg = m.cfg();
  const int64_t V = cfg.vocab_size, C = cfg.hidden_size, NL = cfg.num_hidden_layers;
  const TTTInput input = read_ttt_input(a, V);
  const Batch& x = input.x;
  const std::optional<int64_t>& P = input.P;
  const int64_t B = x.B, L = x.L;
  const int64_t D = P ? L - *P : 0;  // decode_logits rows per sequence
  check_grads(a, x, " (a next-token loss)");

  // Output buffers; each sequence writes its own slices.
  std::vector<float> logits(size_t(B * L * V));
  std::vector<std::vector<float>> hidden(size_t(NL), std::vector<float>(size_t(B * L * C)));
  std::vector<float> dec(size_t(B * D * V));
  std::vector<double> seq_loss(size_t(B), 0.0);

  auto run_sequence = [&](int64_t b) {
    const std::span<const int64_t> seq = x.seq(b);
    Model::Session s = m.session();
    ttt::Mat lg;
    std::vector<ttt::Mat> hs;
    s.feed(seq, ttt::Logits::all, &lg, &hs);
    std::copy(lg.data(), lg.data() + L * V, logits.begin() + b * L * V);
    for (int64_t i = 0; i < NL; ++i)
      std::copy(hs[size_t(i)].data(), hs[size_t(i)].data() + L * C, hidden[size_t(i)].begin() + b * L * C);
    // Next-token cross entropy: position t predicts token t + 1.
    const double sum = L >= 2 ? ttt::blocks::cross_entropy(lg.topRows(L - 1), seq.subspan(1)) : 0.0;
    seq_loss[size_t(b)] = sum;
    if (P) {
      // decode_logits: prefill P tokens (entry 0), then feed tokens P .. L-2 one at a time.
      Model::Session d = m.session();
      d.feed(seq.first(size_t(*P)), ttt::Logits::last, &lg);
      std::copy(lg.data(), lg.data() + V, dec.begin() + (b * D) * V);
      for (int64_t t = *P; t + 1 < L; ++t) {
        d.feed(seq.subspan(size_t(t), 1), ttt::Logits::last, &lg);
        std::copy(lg.data(), lg.data() + V, dec.begin() + (b * D + t - *P + 1) * V);
      }
    }
  };
  // min(B, threads) workers; the remaining threads go to each worker's (head) loops.
  const int total_threads = a.threads > 0 ? a.threads : ttt::hardware_threads();
  const int workers = int(std::min<int64_t>(B, total_threads));
  if (workers <= 1) ttt::set_inner_threads(a.threads);
  ttt::parallel_for(B, workers, run_sequence, std::max(1, total_threads / workers));

  add_ids_logits(w, x, V, logits);
  double sum = 0.0;
  for (double v : seq_loss) sum += v;
  add_ttt_outputs(w, input, V, C, hidden, dec, sum);
  if (a.grads) {
    // grad.{name}: d loss / d parameter over the whole batch (the mean over all B * (L - 1)
    // next-token positions; tied embeddings: the embedding's gradient includes the head's).
    std::visit(
        [&](const auto& model) {
          std::decay_t<decltype(model)> g(model.cfg);
          ttt::train::loss_and_grad(model, x.seqs(), g);
          add_grads(w, g);
        },
        m.variant());
  }
}

/// --device cuda: a TTT-Linear or TTT-MLP checkpoint on the GPU (ttt::cuda::Model, docs/cuda.md),
/// the batch as one batch state: the same tensors as eval_ttt.
void eval_ttt_cuda(const EvalArgs& a, ttt::io::SafeTensorsWriter& w) {
#if !defined(TTT_WITH_CUDA)
  (void)w;
  throw UsageError("--device cuda: this ttt was built without CUDA (configure with -DTTT_ENABLE_CUDA=ON where nvcc is)");
#else
  Model m = load_model(a.model);
  const ttt::ModelConfig& cfg = m.cfg();
  const int64_t V = cfg.vocab_size, C = cfg.hidden_size, NL = cfg.num_hidden_layers;
  const TTTInput input = read_ttt_input(a, V);
  const Batch& x = input.x;
  const int64_t B = x.B, L = x.L;
  std::unique_ptr<ttt::cuda::Model> gpu;
  std::visit(
      [&](const auto& model) {
        using L_ = typename std::decay_t<decltype(model)>::Learner;
        if constexpr (std::is_same_v<L_, ttt::inner::Linear> || std::is_same_v<L_, ttt::inner::MLP>)
          gpu = std::make_unique<ttt::cuda::Model>(ttt::cuda::export_weights(model));
        else
          throw UsageError("--device cuda: " + a.model + " has learner '" + cfg.ttt_layer_type +
                           "'; the GPU runs linear and mlp");
      },
      m.variant());
  std::vector<float> logits(size_t(B * L * V)), hid(size_t(NL * B * L * C));
  auto st = gpu->new_state(int(B));
  gpu->forward(st, x.ids.data(), int(L), logits.data(), ttt::cuda::LogitRows::all, 0, int(B), hid.data());
  std::vector<std::vector<float>> hidden;
  for (int64_t i = 0; i < NL; ++i) hidden.emplace_back(hid.begin() + i * B * L * C, hid.begin() + (i + 1) * B * L * C);
  double sum = 0.0;
  for (int64_t b = 0; b < B && L >= 2; ++b) {
    const Eigen::Map<const ttt::Mat> lg(logits.data() + b * L * V, L, V);
    sum += ttt::blocks::cross_entropy(lg.topRows(L - 1), x.seq(b).subspan(1));
  }
  std::vector<float> dec;
  if (input.P) {  // prefill P tokens of every sequence (entry 0), then tokens P .. L-2 one step at a time
    const int64_t P = *input.P, D = L - P;
    dec.resize(size_t(B * D * V));
    std::vector<int64_t> prompt, next(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) prompt.insert(prompt.end(), x.ids.begin() + b * L, x.ids.begin() + b * L + P);
    std::vector<float> step(size_t(B * V));
    auto ds = gpu->new_state(int(B));
    gpu->forward(ds, prompt.data(), int(P), step.data(), ttt::cuda::LogitRows::last);
    for (int64_t t = P;; ++t) {
      for (int64_t b = 0; b < B; ++b)
        std::copy(step.begin() + b * V, step.begin() + (b + 1) * V, dec.begin() + (b * D + t - P) * V);
      if (t + 1 >= L) break;
      for (int64_t b = 0; b < B; ++b) next[size_t(b)] = x.ids[size_t(b * L + t)];
      gpu->forward(ds, next.data(), 1, step.data());
    }
  }
  add_ids_logits(w, x, V, logits);
  add_ttt_outputs(w, input, V, C, hidden, dec, sum);
#endif
}

int run_eval(const EvalArgs& a) {
  setup_dtype(a.dtype, a.bf16_activations, a.model);
  if (a.grads && a.dtype == "bf16")
    throw UsageError("--grads needs the fp32 weights (--dtype bf16 is inference only)");
  const bool cuda = a.device == "cuda";
  if (cuda && (a.grads || a.dtype != "fp32" || is_hier_checkpoint(a.model)))
    throw UsageError(std::string("--device cuda: ") +
                     (a.grads ? "--grads needs --device cpu (the GPU model is inference only)"
                      : a.dtype != "fp32" ? "--dtype bf16 needs --device cpu (the GPU model is fp32)"
                                          : a.model + " is a hierarchical checkpoint; the GPU runs TTT checkpoints"));
  ttt::io::SafeTensorsWriter w;
  w.set_metadata("producer", "ttt eval");
  if (is_hier_checkpoint(a.model)) eval_hier(a, w);
  else if (cuda) eval_ttt_cuda(a, w);
  else eval_ttt(a, w);
  w.save(a.out);
  return 0;
}

}  // namespace

Command add_eval(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* sub = app.add_subcommand(
      "eval", "Run a model on input_ids [B, L] of a safetensors file; write logits, hidden states, loss "
              "(and decode_logits when the input has prompt_len).");
  sub->add_option("--model", a->model, "Checkpoint folder")->required();
  sub->add_option("--input", a->input, "Input .safetensors with input_ids [B, L] (I64/I32), optional prompt_len [1]")
      ->required();
  sub->add_option("--out", a->out, "Output .safetensors (written atomically)")->required();
  sub->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(CLI::Range(0, 4096));
  sub->add_flag("--grads", a->grads,
                "Also write grad.{name}: the gradient of the loss (mean over the batch) for every parameter");
  add_dtype_option(sub, a->dtype, a->bf16_activations);
  sub->add_option("--device", a->device,
                  "cpu, or cuda: a TTT-Linear / TTT-MLP checkpoint on the GPU (built with TTT_ENABLE_CUDA; fp32, "
                  "docs/cuda.md)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  return {sub, [a] { return run_eval(*a); }};
}

}  // namespace ttt_cli
