// The GPU model (models/cuda/model.hpp) against the CPU model (models/causal_lm.hpp) on the same
// weights: TTT-Linear and TTT-MLP, with and without the gate, tied and untied heads, the Mamba
// backbone (pre_conv + share_qk: convolutions with carried histories); the logits of
// a whole prompt, of a prompt in chunks cut mid-mini-batch followed by decode steps, and of
// batched decode for sequences whose prompts have different lengths (each at its own position),
// against forward / forward_rows on the CPU. fp32: 1e-4 relative to the largest logit.
// The official code's reference vectors (logits, decode logits) where the reference folder is
// (argument 1, $TTT_REFERENCE_DIR or the build's ../shared/reference).
// Bad input: ids outside the vocabulary, options the GPU does not run. Exit 0 pass, 1 fail, 77 no
// CUDA device (the build machines compile it; scripts/gpu_check.sh runs it where a GPU is).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <random>
#include <string>
#include <ttt/inner/linear.hpp>
#include <ttt/inner/mlp.hpp>
#include <ttt/io/safetensors_reader.hpp>
#include <ttt/models/checkpoint.hpp>
#include <ttt/models/cuda/export.hpp>
#include <ttt/models/cuda/model.hpp>
#include <ttt/models/ttt_model.hpp>
#include <vector>

namespace {

int failures = 0;

double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < n; ++i)
    num = std::max(num, std::abs(double(a[i]) - b[i])), den = std::max(den, std::abs(double(b[i])));
  return num / den;
}

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

ttt::ModelConfig tiny(const std::string& learner, bool gate, bool tied, const std::string& act, bool mamba = false) {
  ttt::ModelConfig c;
  c.pre_conv = c.share_qk = mamba;  // the "Mamba backbone": a pre-conv per block, q and k from two convs
  c.hidden_size = 64, c.num_attention_heads = 4, c.num_hidden_layers = 2, c.intermediate_size = 160;
  c.vocab_size = 97, c.mini_batch_size = 16, c.ttt_layer_type = learner, c.use_gate = gate;
  c.tie_word_embeddings = tied, c.hidden_act = act;
  return c;
}

template <class L>
void compare(const std::string& learner, bool gate, bool tied, const std::string& act, uint64_t seed,
             bool mamba = false) {
  ttt::TTTModel<L> cpu(tiny(learner, gate, tied, act, mamba));
  cpu.init_weights(seed);
  // non-trivial norms, gates and eta offsets (the initialisation leaves them at 1 / 0)
  std::mt19937_64 rng(seed + 100);
  std::normal_distribution<float> N(0.f, 0.1f);
  for (auto& b : cpu.blocks) {
    for (int i = 0; i < b.mixer.ln_w.size(); ++i) b.mixer.ln_w.data()[i] += N(rng), b.mixer.ln_b.data()[i] += N(rng);
    for (int i = 0; i < b.mixer.lr_b.size(); ++i) b.mixer.lr_b[i] += 3 * N(rng);
    for (int i = 0; i < b.mixer.token_idx.size(); ++i) b.mixer.token_idx[i] += N(rng);
    for (int i = 0; i < b.mixer.post_b.size(); ++i) b.mixer.post_b[i] += N(rng);
  }
  const ttt::cuda::Model gpu(ttt::cuda::export_weights(cpu));
  const int V = 97, n = 45;
  std::vector<int64_t> ids(n);
  std::uniform_int_distribution<int64_t> tok(0, V - 1);
  for (auto& t : ids) t = tok(rng);
  const std::string name =
      learner + (gate ? " gate" : "") + (tied ? " tied" : " untied") + " " + act + (mamba ? " pre_conv share_qk" : "");

  // 1. the whole prompt
  const ttt::Mat ref = cpu.forward(ids);
  std::vector<float> got(size_t(n) * V);
  auto st = gpu.new_state(1);
  gpu.forward(st, ids.data(), n, got.data());
  double e = rel_err(got.data(), ref.data(), got.size());
  check(e < 1e-4, name + ": prompt of 45 tokens, every position's logits, relative error " + std::to_string(e));

  // 2. chunks 0..20, 20..37, then decode 37..44 one token at a time (last-row logits)
  auto st2 = gpu.new_state(1);
  double worst = 0;
  std::vector<float> last(V);
  gpu.forward(st2, ids.data(), 20, nullptr, ttt::cuda::LogitRows::none);
  gpu.forward(st2, ids.data() + 20, 17, last.data(), ttt::cuda::LogitRows::last);
  worst = std::max(worst, rel_err(last.data(), ref.data() + size_t(36) * V, size_t(V)));
  for (int t = 37; t < n; ++t) {
    gpu.forward(st2, ids.data() + t, 1, last.data());
    worst = std::max(worst, rel_err(last.data(), ref.data() + size_t(t) * V, size_t(V)));
  }
  check(worst < 1e-4 && st2.positions()[0] == n,
        name + ": chunks of 20 and 17 then 8 decode steps, relative error " + std::to_string(worst));

  // 3. three sequences with prompts of 5, 16 and 23 tokens (prefilled one by one into one batch
  //    state), then 6 batched decode steps, each sequence at its own position
  const int lens[3] = {5, 16, 23};
  auto bst = gpu.new_state(3);
  std::vector<typename ttt::TTTModel<L>::State> cst;
  std::vector<std::vector<int64_t>> seqs(3);
  for (int b = 0; b < 3; ++b) {
    for (int t = 0; t < lens[b]; ++t) seqs[size_t(b)].push_back(tok(rng));
    gpu.forward(bst, seqs[size_t(b)].data(), lens[b], nullptr, ttt::cuda::LogitRows::none, b, 1);
    cst.push_back(cpu.new_state());
    ttt::Mat unused;
    cpu.forward(cst.back(), seqs[size_t(b)], &unused, ttt::Logits::none);
  }
  worst = 0;
  std::vector<float> step(size_t(3) * V);
  for (int s = 0; s < 6; ++s) {
    std::vector<int64_t> next = {tok(rng), tok(rng), tok(rng)};
    gpu.forward(bst, next.data(), 1, step.data());
    std::vector<typename ttt::TTTModel<L>::State*> ptrs = {&cst[0], &cst[1], &cst[2]};
    ttt::Mat cl;
    cpu.forward_rows(ptrs, next, &cl);
    worst = std::max(worst, rel_err(step.data(), cl.data(), step.size()));
  }
  check(worst < 1e-4, name + ": batched decode of 3 sequences at positions 5, 16, 23 (+6 steps), relative error " +
                          std::to_string(worst));
}

// ||a - e|| / ||e|| (the reference README's measure)
double norm_err(const float* a, const float* e, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) num += (double(a[i]) - e[i]) * (double(a[i]) - e[i]), den += double(e[i]) * e[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

// One case of the official code's reference vectors (../shared/reference/ttt-lm-pytorch/*): the
// GPU model loaded from its checkpoint, the batch's logits in one forward; decode cases: prefill
// then one token at a time. 1e-4 (the README's tolerance for logits).
template <class L>
void reference_case(const std::filesystem::path& dir) {
  const auto cpu = ttt::load_checkpoint<ttt::TTTModel<L>>(dir);
  const ttt::cuda::Model gpu(ttt::cuda::export_weights(cpu));
  const auto ex = ttt::io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  const int B = int(shape[0]), T = int(shape[1]), V = int(cpu.cfg.vocab_size);
  const auto ids = ex.read_int("input_ids");
  const auto logits = ex.read_float("logits", {B, T, V});
  std::vector<float> got(size_t(B) * T * V);
  auto st = gpu.new_state(B);
  gpu.forward(st, ids.data(), T, got.data());
  const double e = norm_err(got.data(), logits.data(), got.size());
  check(e < 1e-4, "reference " + dir.filename().string() + ": logits of " + std::to_string(B) + " x " +
                      std::to_string(T) + " tokens, ||error|| / ||expected|| " + std::to_string(e));
  if (!ex.contains("prompt_len")) return;
  const int P = int(ex.read_int("prompt_len")[0]);
  const auto dec = ex.read_float("decode_logits", {B, T - P, V});
  std::vector<float> out(size_t(B) * (T - P) * V), step(size_t(B) * V);
  auto ds = gpu.new_state(B);
  std::vector<int64_t> prompt, next(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) prompt.insert(prompt.end(), ids.begin() + size_t(b) * T, ids.begin() + size_t(b) * T + P);
  gpu.forward(ds, prompt.data(), P, step.data(), ttt::cuda::LogitRows::last);
  for (int t = P;; ++t) {
    for (int b = 0; b < B; ++b)
      std::copy(step.begin() + size_t(b) * V, step.begin() + size_t(b + 1) * V,
                out.begin() + (size_t(b) * (T - P) + (t - P)) * V);
    if (t >= T - 1) break;
    for (int b = 0; b < B; ++b) next[size_t(b)] = ids[size_t(b) * T + t];
    gpu.forward(ds, next.data(), 1, step.data());
  }
  const double d = norm_err(out.data(), dec.data(), out.size());
  check(d < 1e-4, "reference " + dir.filename().string() + ": prefill " + std::to_string(P) + " then " +
                      std::to_string(T - P - 1) + " decode steps, ||error|| / ||expected|| " + std::to_string(d));
}

template <class F>
void refused(F f, const std::string& needle, const std::string& what) {
  try {
    f();
  } catch (const std::exception& e) {
    const bool ok = std::string(e.what()).find(needle) != std::string::npos;
    check(ok, what + ": refused (" + e.what() + ")");
    return;
  }
  check(false, what + ": not refused");
}

}  // namespace

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  try {
    compare<ttt::inner::Linear>("linear", false, true, "silu", 1);
    compare<ttt::inner::Linear>("linear", true, false, "gelu", 2);
    compare<ttt::inner::MLP>("mlp", false, true, "silu", 3);
    compare<ttt::inner::MLP>("mlp", true, true, "gelu_pytorch_tanh", 4);
    compare<ttt::inner::Linear>("linear", true, true, "silu", 6, true);
    compare<ttt::inner::MLP>("mlp", false, false, "relu", 7, true);
    // the official code's reference vectors (argument 1, $TTT_REFERENCE_DIR, or the build's path)
    const char* env = std::getenv("TTT_REFERENCE_DIR");
    const std::filesystem::path ref = std::filesystem::path(argc > 1 ? argv[1]
                                                            : env    ? env
                                                                     : TTT_REFERENCE_DIR) /
                                      "ttt-lm-pytorch";
    int cases = 0;
    if (std::filesystem::exists(ref)) {
      for (const auto& entry : std::filesystem::directory_iterator(ref)) {
        if (!std::filesystem::exists(entry.path() / "expected.safetensors")) continue;
        const auto cfg = ttt::load_checkpoint_config(entry.path());
        if (cfg.ttt_layer_type == "linear")
          reference_case<ttt::inner::Linear>(entry.path());
        else
          reference_case<ttt::inner::MLP>(entry.path());
        ++cases;
      }
    }
    std::printf("%s reference vectors: %d case(s) in %s\n", cases ? "ok  " : "SKIP", cases, ref.string().c_str());
    // bad input
    ttt::TTTModel<ttt::inner::Linear> cpu(tiny("linear", false, true, "silu"));
    cpu.init_weights(5);
    const ttt::cuda::Model gpu(ttt::cuda::export_weights(cpu));
    auto st = gpu.new_state(2);
    std::vector<int64_t> bad = {3, 97};
    refused([&] { gpu.forward(st, bad.data(), 1, nullptr); }, "outside the vocabulary", "token id 97 of 97");
    refused([&] { gpu.forward(st, bad.data(), 1, nullptr, ttt::cuda::LogitRows::all, 1, 2); }, "batch of 2",
            "sequences 1..2 of a batch of 2");
    auto c = tiny("linear", false, true, "silu");
    c.ttt_inner_optimizer = "momentum";
    ttt::TTTModel<ttt::inner::Linear> mom(c);
    refused([&] { (void)ttt::cuda::export_weights(mom); }, "momentum", "ttt_inner_optimizer momentum");
    auto w = ttt::cuda::export_weights(cpu);
    w.layers[1].q.pop_back();
    refused([&] { ttt::cuda::Model m(w); }, "layer 1", "a projection one value short");
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d check(s) failed\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
