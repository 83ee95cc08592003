// ttt eval-loss: the mean next-token loss of a model over byte-level text, and the mean at each
// token position (--out: a CSV), for both kinds of checkpoint.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <ttt/core/error.hpp>
#include <ttt/core/parallel.hpp>
#include <ttt/io/file.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/models/any_model.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/train/data.hpp>
#include <ttt/train/trainer.hpp>

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"
#include "load.hpp"

namespace ttt_cli {
namespace {

struct EvalLossArgs {
  std::string model, data, out, dtype = "fp32";
  bool bf16_activations = false;  // --bf16-activations
  int64_t seq_len = 128, max_windows = 0;
  int threads = 0;
};

/// The losses of `m` over the windows of --data: printed, and per position into --out.
template <class M>
int eval_loss(const EvalLossArgs& a, const M& m) {
  const std::vector<int64_t> tokens = ttt::train::load_byte_corpus(a.data);
  const auto windows = ttt::train::fixed_windows(tokens, a.seq_len + 1, a.max_windows);
  if (windows.empty())
    throw ttt::Error(a.data + ": " + std::to_string(tokens.size()) + " tokens is too short for --seq-len " +
                     std::to_string(a.seq_len) + " (need " + std::to_string(a.seq_len + 1) + ")");
  std::vector<double> per_pos;
  const double loss = ttt::train::windows_loss(m, windows, &per_pos);
  std::printf("loss = %.6f\nwindows = %zu\npredicted_tokens = %lld\n", loss, windows.size(),
              static_cast<long long>(windows.size()) * static_cast<long long>(a.seq_len));
  if (!a.out.empty()) {
    std::string csv = "position,loss\n";
    char row[64];
    for (size_t t = 0; t < per_pos.size(); ++t) {
      std::snprintf(row, sizeof row, "%zu,%.6f\n", t, per_pos[t]);
      csv += row;
    }
    ttt::io::write_file_atomic(a.out, csv);
  }
  return 0;
}

/// Byte-level data needs the byte vocabulary.
void check_vocab(const EvalLossArgs& a, int64_t vocab) {
  if (vocab < ttt::ByteTokenizer::vocab_size)
    throw ttt::Error(a.model + ": vocab_size " + std::to_string(vocab) +
                     " is too small for byte-level data (needs >= " + std::to_string(ttt::ByteTokenizer::vocab_size) + ")");
}

int run_eval_loss(const EvalLossArgs& a) {
  ttt::set_inner_threads(a.threads);
  setup_dtype(a.dtype, a.bf16_activations, a.model);
  if (!is_hier_checkpoint(a.model)) {
    Model m = load_model(a.model);
    m.set_weight_dtype(ttt::parse_weight_dtype(a.dtype, "--dtype"));
    check_vocab(a, m.cfg().vocab_size);
    return eval_loss(a, m);
  }
  const auto m = load_hier_model(a.model);
  check_vocab(a, m.cfg.num_tokens);
  if (a.seq_len > m.cfg.seq_len)
    throw UsageError("--seq-len " + std::to_string(a.seq_len) + " is longer than the model's seq_len " +
                     std::to_string(m.cfg.seq_len) + " (" + a.model + "/config.json)");
  return eval_loss(a, m);
}

}  // namespace

Command add_eval_loss(CLI::App& app) {
  auto a = std::make_shared<EvalLossArgs>();
  CLI::App* sub = app.add_subcommand(
      "eval-loss", "Mean next-token loss of a model over byte-level text, and the mean at each token position.");
  sub->add_option("--model", a->model, "Checkpoint folder")->required();
  sub->add_option("--data", a->data, "Text: a file, or a folder (all files, recursive, sorted)")->required();
  sub->add_option("--seq-len", a->seq_len, "Tokens per window (consecutive windows of seq-len + 1 tokens share one)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30))->required();
  sub->add_option("--out", a->out, "CSV of position,loss (written atomically)");
  sub->add_option("--max-windows", a->max_windows, "Use at most N windows (0 = all)")->check(non_negative_number());
  sub->add_option("--threads", a->threads, "Threads of the per-head loops (0 = default)")->check(CLI::Range(0, 4096));
  add_dtype_option(sub, a->dtype, a->bf16_activations);
  return {sub, [a] { return run_eval_loss(*a); }};
}

}  // namespace ttt_cli
