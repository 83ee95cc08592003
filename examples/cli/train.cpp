// ttt train: train a model on byte-level text, checkpoints into --out. --arch ttt (a TTT language
// model, the learner picked by --layer) or --arch hier (simple-hierarchical-transformer, its
// constructor arguments as flags or a --config file); the training loop is the same for both.
// Under `mpirun -np N` the N processes train one model together, data parallel (processes.cpp).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <ttt/core/error.hpp>
#include <ttt/core/parallel.hpp>
#include <ttt/inner/registry.hpp>
#include <ttt/io/file.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/communicator.hpp>
#include <ttt/train/data.hpp>
#include <ttt/train/trainer.hpp>

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"

namespace ttt_cli {
namespace {

struct TrainArgs {
  std::string data, out;
  std::string layer = "linear";
  int64_t hidden = 64, layers = 2, heads = 4, intermediate = 0, mini_batch = 16, conv_kernel = 4;
  int64_t seq_len = 128, batch = 8, steps = 1000, accum = 1, warmup = -1, ttt_warmup = -1;
  int64_t val_every = 0, val_windows = 16, save_every = 0, stop_after = 0;
  double lr = 3e-3, min_lr = 1e-5, weight_decay = 0.1, clip = 1.0, val_fraction = 0.05, base_lr = 1.0;
  double beta1 = 0.9, beta2 = 0.95;
  uint64_t seed = 0;
  bool resume = false, pre_conv = false, share_qk = false, use_gate = false, quiet = false;
  int threads = 0;
  int64_t scan_group = 0;
  UpdateFlags update;
  // --arch hier: simple-hierarchical-transformer (its constructor arguments as flags or --config)
  std::string arch = "ttt", config;
  std::vector<int64_t> hierarchies = {1}, strides = {1};
  std::vector<std::string> window_sizes = {"none"}, mixer = {"attention"};
  int64_t dim_head = 0, predict_hierarchy = 0, ignore_index = 0;
  double ff_mult = 4, recon_weight = 0.1, ar_weight = 0.25;
  bool merge_all = false, predict_use_all = false;
  std::set<std::string> given;  ///< the flags given on the command line ("--hidden", ...)
  bool has(const std::string& flag) const { return given.count(flag) > 0; }
};

/// The flags that only one --arch reads.
const std::vector<std::string> kTTTOnlyFlags = {"--layer", "--intermediate", "--pre-conv", "--conv-kernel", "--share-qk",
                                                "--scan-checkpoint-group"};
const std::vector<std::string> kHierOnlyFlags = {"--config", "--hierarchies", "--window-sizes", "--strides", "--mixer",
                                                 "--dim-head", "--ff-mult", "--merge-all", "--predict-hierarchy",
                                                 "--predict-use-all", "--recon-weight", "--ar-weight", "--ignore-index"};

/// The hierarchical model the train flags describe: the --config file's constructor arguments (if
/// any), then every flag given on top (--hidden is dim, --layers depth, --mini-batch / --base-lr /
/// --use-gate the TTT mixers' options), then defaults for what neither sets: the original's,
/// except num_tokens (the byte vocabulary), dim / depth / heads (--hidden / --layers / --heads),
/// dim_head (the resulting dim / heads) and seq_len (--seq-len).
ttt::hier::HierConfig hier_train_config(const TrainArgs& a) {
  nlohmann::json j = nlohmann::json::object();
  const std::string src = a.config.empty() ? std::string("--arch hier flags") : a.config;
  if (!a.config.empty()) {
    try {
      j = nlohmann::json::parse(ttt::io::read_file(a.config));
    } catch (const nlohmann::json::exception& e) {
      throw ttt::FormatError(a.config + ": not valid JSON: " + one_line(e.what()));
    }
    if (!j.is_object()) throw ttt::FormatError(a.config + ": expected a JSON object of HierarchicalTransformer arguments");
  }
  // flag, key, value, default applies when neither the file nor the flag sets the key
  auto set = [&](const char* flag, const char* key, const nlohmann::json& v, bool dflt) {
    if (a.has(flag) || (dflt && !j.contains(key))) j[key] = v;
  };
  auto one_or_list = [](const auto& v) { return v.size() == 1 ? nlohmann::json(v[0]) : nlohmann::json(v); };
  nlohmann::json ws = nlohmann::json::array();
  for (const std::string& w : a.window_sizes) {
    if (w == "none" || w == "null" || w == "full") {
      ws.push_back(nullptr);
      continue;
    }
    int64_t v = -1;
    const auto [ptr, ec] = std::from_chars(w.data(), w.data() + w.size(), v);
    if (ec != std::errc() || ptr != w.data() + w.size() || v < 0)
      throw UsageError("--window-sizes: '" + w + "' is not a window (a number >= 0, or none for full attention)");
    ws.push_back(v);
  }
  if (!j.contains("num_tokens")) j["num_tokens"] = ttt::ByteTokenizer::vocab_size;
  set("--hidden", "dim", a.hidden, true);
  set("--layers", "depth", a.layers, true);
  set("--heads", "heads", a.heads, true);
  set("--dim-head", "dim_head", a.dim_head, false);
  // default dim_head: the final dim / heads (rounded down to even), whether they came from the
  // file or the flags; with per-hierarchy lists in the file, the original's default (64)
  if (!j.contains("dim_head") && j["dim"].is_number_integer() && j["heads"].is_number_integer() &&
      j["heads"].get<int64_t>() > 0)
    j["dim_head"] = std::max<int64_t>(2, j["dim"].get<int64_t>() / j["heads"].get<int64_t>() / 2 * 2);
  set("--ff-mult", "ff_mult", a.ff_mult, false);
  set("--hierarchies", "hierarchies", one_or_list(a.hierarchies), false);
  set("--window-sizes", "window_sizes", ws.size() == 1 ? ws[0] : ws, false);
  set("--strides", "hierarchical_stride", one_or_list(a.strides), false);
  set("--mixer", "mixer", one_or_list(a.mixer), false);
  set("--merge-all", "hierarchy_merge_all", a.merge_all, false);
  set("--predict-hierarchy", "predict_hierarchy", a.predict_hierarchy, false);
  set("--predict-use-all", "predict_use_all_hierarchy", a.predict_use_all, false);
  set("--recon-weight", "recon_loss_weight", a.recon_weight, false);
  set("--ar-weight", "hierarchical_ar_loss_weight", a.ar_weight, false);
  set("--ignore-index", "ignore_index", a.ignore_index, false);
  set("--mini-batch", "ttt_mini_batch_size", a.mini_batch, false);
  set("--base-lr", "ttt_base_lr", a.base_lr, false);
  set("--use-gate", "ttt_use_gate", a.use_gate, false);
  if (!j.contains("seq_len")) j["seq_len"] = a.seq_len;
  ttt::hier::HierConfig c;
  try {
    c = ttt::hier::HierConfig::from_json<Learners>(j, src);
  } catch (const ttt::Error& e) {
    if (a.config.empty()) throw UsageError(e.what());
    throw;
  }
  if (c.num_tokens < ttt::ByteTokenizer::vocab_size)
    throw ttt::ConfigError(src + ": num_tokens " + std::to_string(c.num_tokens) + " is too small for byte-level data (needs >= " +
                           std::to_string(ttt::ByteTokenizer::vocab_size) + ")");
  if (c.seq_len < a.seq_len)
    throw ttt::ConfigError(src + ": seq_len " + std::to_string(c.seq_len) + " is shorter than --seq-len " +
                           std::to_string(a.seq_len) + " (the model refuses longer inputs)");
  return c;
}

/// The TTT model the train flags describe (byte-level vocabulary).
ttt::ModelConfig ttt_train_config(const TrainArgs& a) {
  ttt::ModelConfig c;
  c.ttt_layer_type = a.layer;
  c.hidden_size = a.hidden;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.vocab_size = ttt::ByteTokenizer::vocab_size;
  c.intermediate_size = a.intermediate > 0 ? a.intermediate : default_intermediate(a.hidden);
  c.mini_batch_size = a.mini_batch;
  c.max_position_embeddings = std::max<int64_t>(2048, a.seq_len);
  c.conv_kernel = a.conv_kernel;
  c.ttt_base_lr = a.base_lr;
  c.pre_conv = a.pre_conv;
  c.share_qk = a.share_qk;
  c.use_gate = a.use_gate;
  c.bos_token_id = ttt::ByteTokenizer::bos;
  c.eos_token_id = ttt::ByteTokenizer::eos;
  c.pad_token_id = ttt::ByteTokenizer::pad;
  apply_update_flags(a.update, c);
  try {
    c.validate("model config");
  } catch (const ttt::ConfigError& e) {
    throw UsageError(e.what());
  }
  check_update(c);
  return c;
}

int train_in(const TrainArgs& a, bool hier, const std::optional<ttt::hier::HierConfig>& hcfg,
             const std::optional<ttt::ModelConfig>& tcfg, ttt::train::Communicator* comm);

int run_train(const TrainArgs& a) {
  const bool hier = a.arch == "hier";
  for (const std::string& f : hier ? kTTTOnlyFlags : kHierOnlyFlags)
    if (a.has(f)) throw UsageError(f + " does not apply to --arch " + a.arch);
  if (hier)
    for (const std::string& f : kUpdateFlags)
      if (a.has(f))
        throw UsageError(f + " does not apply to --arch hier (a TTT mixer names its inner optimizer: --mixer ttt-linear-momentum)");
  std::optional<ttt::hier::HierConfig> hcfg;
  std::optional<ttt::ModelConfig> tcfg;
  if (hier) hcfg = hier_train_config(a);
  else tcfg = ttt_train_config(a);
  if (a.warmup > a.steps) throw UsageError("--warmup " + std::to_string(a.warmup) + " is longer than --steps " + std::to_string(a.steps));
  if (a.min_lr > a.lr) throw UsageError("--min-lr must not exceed --lr");
  // --threads: the trainer spreads the sequences of a batch over them, and the threads left over
  // (more threads than sequences) work inside each sequence (TrainOptions::threads).
  // Under mpirun: every process reads the same data and draws the same batches, computes its share
  // and takes the same step; an error on any of them stops them all (Communicator::abort).
  const std::shared_ptr<ttt::train::Communicator> comm = join_processes();
  if (!comm) return train_in(a, hier, hcfg, tcfg, nullptr);
  try {
    return train_in(a, hier, hcfg, tcfg, comm.get());
  } catch (const UsageError& e) {
    comm->abort(one_line(e.what()) + " (see --help)");
  } catch (const std::exception& e) {
    comm->abort(one_line(e.what()));
  }
  return 1;  // not reached: abort ends the processes
}

int train_in(const TrainArgs& a, bool hier, const std::optional<ttt::hier::HierConfig>& hcfg,
             const std::optional<ttt::ModelConfig>& tcfg, ttt::train::Communicator* comm) {
  const int ranks = comm ? comm->size() : 1;
  ttt::train::TextData data(ttt::train::load_byte_corpus(a.data), a.seq_len, a.val_fraction, a.seed, a.data);
  ttt::train::TrainOptions o;
  o.steps = a.steps, o.batch = a.batch, o.accum = a.accum;
  o.lr = a.lr, o.min_lr = a.min_lr, o.warmup = a.warmup, o.ttt_warmup = a.ttt_warmup;
  o.adamw.weight_decay = a.weight_decay, o.adamw.beta1 = a.beta1, o.adamw.beta2 = a.beta2;
  o.clip = a.clip;
  o.val_every = a.val_every, o.val_windows = a.val_windows, o.save_every = a.save_every;
  o.seed = a.seed, o.out = a.out, o.resume = a.resume, o.stop_after = a.stop_after;
  o.progress = !a.quiet;
  o.threads = a.threads > 0 ? a.threads : 1;
  o.scan_checkpoint_group = a.scan_group;
  o.comm = comm;
  o.args = {{"data", a.data},         {"layer", a.layer},         {"seq_len", a.seq_len},   {"batch", a.batch},
            {"steps", a.steps},       {"accum", a.accum},         {"lr", a.lr},             {"min_lr", a.min_lr},
            {"warmup", o.warmup_steps()}, {"ttt_warmup", o.ttt_warmup_steps()}, {"weight_decay", a.weight_decay},
            {"clip", a.clip},         {"val_fraction", a.val_fraction}, {"seed", a.seed},
            {"threads", o.threads},   {"arch", a.arch}};
  if (hier) o.args.erase("layer");
  ttt::train::TrainResult r;
  auto fit = [&](auto& m) {
    if (!a.resume) m.init_weights(a.seed);
    r = ttt::train::train(m, data, o);
  };
  if (hier) {
    HierModel m(*hcfg);
    fit(m);
  } else {
    ttt::inner::with_learner<Learners>(a.layer, "--layer", [&]<class L>() {
      ttt::TTTModel<L> m(*tcfg);
      fit(m);
    });
  }
  if (comm && comm->rank() != 0) return 0;  // rank 0 reports
  std::cout << "trained steps " << r.start_step << ".." << r.end_step << " of " << a.steps;
  if (!r.losses.empty()) std::cout << ", last train loss " << r.losses.back();
  if (!r.val.empty()) std::cout << ", val loss " << r.val.back().second;
  char tps[64];
  std::snprintf(tps, sizeof tps, "%.0f", r.tokens_per_s);
  std::cout << ", " << tps << " tokens/s";
  if (ranks > 1 && r.end_step > r.start_step) {
    char ar[160];
    std::snprintf(ar, sizeof ar, " (%s; allreduce of %.2f MB, %.2f ms per step)", comm->describe().c_str(),
                  double(r.allreduce_bytes) / 1e6, 1e3 * r.allreduce_seconds / double(r.end_step - r.start_step));
    std::cout << ar;
  }
  std::cout << "; wrote " << a.out << "\n";
  return 0;
}

}  // namespace

Command add_train(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  TrainArgs& t = *a;
  const CLI::Validator& finite = finite_number();
  const auto range = [](int64_t lo, int64_t hi) { return CLI::Range(lo, hi); };
  CLI::App* s = app.add_subcommand(
      "train", "Train a model on byte-level text (a file or a folder of files); checkpoints into --out. Under "
      "`mpirun -np N` the N processes train it together, data parallel (--batch is the global batch).");
  s->add_option("--data", t.data, "Training text: a file, or a folder (all files, recursive, sorted)")->required();
  s->add_option("--out", t.out, "Output folder: config.json, model.safetensors, optimizer.safetensors, "
                                "trainer.json, log.csv")->required();
  s->add_flag("--resume", t.resume, "Continue the run in --out (same model flags and data)");
  s->add_option("--layer", t.layer, "Inner learner")->check(CLI::IsMember(learner_names()))->capture_default_str();
  s->add_option("--hidden", t.hidden, "hidden_size")->check(positive_number())->capture_default_str();
  s->add_option("--layers", t.layers, "num_hidden_layers")->check(positive_number())->capture_default_str();
  s->add_option("--heads", t.heads, "num_attention_heads")->check(positive_number())->capture_default_str();
  s->add_option("--intermediate", t.intermediate, "intermediate_size (0 = about 8/3 of hidden)")
      ->check(non_negative_number())->capture_default_str();
  s->add_option("--mini-batch", t.mini_batch, "mini_batch_size of the TTT layers")->check(positive_number())->capture_default_str();
  s->add_option("--base-lr", t.base_lr, "ttt_base_lr (warmed up from 0 over --ttt-warmup steps)")->check(finite)->capture_default_str();
  s->add_flag("--pre-conv", t.pre_conv, "pre_conv = true (Mamba backbone)");
  s->add_option("--conv-kernel", t.conv_kernel, "conv_kernel")->check(positive_number())->capture_default_str();
  s->add_flag("--share-qk", t.share_qk, "share_qk = true");
  s->add_flag("--use-gate", t.use_gate, "use_gate = true");
  s->add_option("--seq-len", t.seq_len, "Tokens per training sequence")->check(range(1, int64_t(1) << 30))->capture_default_str();
  s->add_option("--batch", t.batch, "Sequences per micro-batch")->check(range(1, int64_t(1) << 30))->capture_default_str();
  s->add_option("--accum", t.accum, "Micro-batches per step (gradient accumulation)")->check(range(1, int64_t(1) << 20))->capture_default_str();
  s->add_option("--steps", t.steps, "Optimiser steps (length of the schedule)")->check(range(1, int64_t(1) << 40))->capture_default_str();
  s->add_option("--lr", t.lr, "Peak learning rate")->check(finite & positive_number())->capture_default_str();
  s->add_option("--min-lr", t.min_lr, "Floor of the cosine schedule")->check(finite & non_negative_number())->capture_default_str();
  s->add_option("--warmup", t.warmup, "Linear warm-up steps (-1 = 10% of --steps)")->check(range(-1, int64_t(1) << 40))->capture_default_str();
  s->add_option("--ttt-warmup", t.ttt_warmup, "Warm-up steps of ttt_base_lr from 0 (-1 = --warmup)")->check(range(-1, int64_t(1) << 40))->capture_default_str();
  s->add_option("--weight-decay", t.weight_decay, "AdamW decoupled weight decay (not on norms, biases, token index)")
      ->check(finite & non_negative_number())->capture_default_str();
  s->add_option("--beta1", t.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  s->add_option("--beta2", t.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  s->add_option("--clip", t.clip, "Global gradient-norm clip (0 = off)")->check(finite & non_negative_number())->capture_default_str();
  s->add_option("--val-fraction", t.val_fraction, "Fraction of the tokens (the last ones) held out for validation")
      ->check(CLI::Range(0.0, 0.99))->capture_default_str();
  s->add_option("--val-every", t.val_every, "Validation loss every N steps (0 = only at the end)")->check(non_negative_number())->capture_default_str();
  s->add_option("--val-windows", t.val_windows, "Validation windows")->check(positive_number())->capture_default_str();
  s->add_option("--save-every", t.save_every, "Checkpoint every N steps (0 = only at the end)")->check(non_negative_number())->capture_default_str();
  s->add_option("--stop-after", t.stop_after, "Stop after step N as if interrupted (--resume continues)")->check(non_negative_number());
  s->add_option("--seed", t.seed, "Seed of the initialisation and of the data order")->capture_default_str();
  s->add_option("--scan-checkpoint-group", t.scan_group,
                "Backward keeps the inner state of every N-th mini-batch and recomputes the others "
                "(less memory at long context, same gradients; 0 = keep all, the inner forward's intermediates "
                "too; 1 = every state, the inner forward recomputed)")
      ->check(range(0, int64_t(1) << 30))->capture_default_str();
  s->add_option("--threads", t.threads,
                "Threads per process: over the sequences of a batch, and inside each sequence (heads, products) when there "
                "are more threads than sequences (0 = 1; a resumed run continues bit for bit with the same count of "
                "processes and threads)")->check(CLI::Range(0, 4096));
  s->add_flag("--quiet", t.quiet, "No progress line on stderr");
  add_update_flags(s, t.update);
  s->add_option("--arch", t.arch,
                "Architecture: ttt (TTT language model) or hier (simple-hierarchical-transformer, TTT layers "
                "allowed in any hierarchy's attention slot via --mixer)")
      ->check(CLI::IsMember({"ttt", "hier"}))->capture_default_str();
  s->add_option("--config", t.config,
                "--arch hier: a JSON file of HierarchicalTransformer constructor arguments (flags given override its keys)");
  s->add_option("--hierarchies", t.hierarchies, "--arch hier: compression factors, e.g. 1,2,8")->delimiter(',');
  s->add_option("--window-sizes", t.window_sizes,
                "--arch hier: per hierarchy (or one for all) none = full attention, 0 = feedforward only, w = local window")
      ->delimiter(',');
  s->add_option("--strides", t.strides, "--arch hier: hierarchical_stride, e.g. 1,1,2")->delimiter(',');
  s->add_option("--mixer", t.mixer, "--arch hier: attention or ttt-<learner>[-<inner optimizer>][-before] (" + ttt::inner::builtin_names<Learners>() + "; " + ttt::inner::optimizer_names<ttt::inner::BuiltinOptimizers>() + "), one or one per hierarchy")->delimiter(',');
  s->add_option("--dim-head", t.dim_head, "--arch hier: dim_head (default hidden / heads)")->check(positive_number());
  s->add_option("--ff-mult", t.ff_mult, "--arch hier: ff_mult")->check(finite & positive_number())->capture_default_str();
  s->add_flag("--merge-all", t.merge_all, "--arch hier: hierarchy_merge_all = true");
  s->add_option("--predict-hierarchy", t.predict_hierarchy, "--arch hier: predict_hierarchy")->check(positive_number());
  s->add_flag("--predict-use-all", t.predict_use_all, "--arch hier: predict_use_all_hierarchy = true");
  s->add_option("--recon-weight", t.recon_weight, "--arch hier: recon_loss_weight")
      ->check(finite & non_negative_number())->capture_default_str();
  s->add_option("--ar-weight", t.ar_weight, "--arch hier: hierarchical_ar_loss_weight")
      ->check(finite & non_negative_number())->capture_default_str();
  s->add_option("--ignore-index", t.ignore_index, "--arch hier: ignore_index of the cross entropy")->capture_default_str();
  return {s, [a, s] {
            for (const CLI::Option* op : s->get_options())
              if (op->count() > 0) a->given.insert(op->get_name());
            return run_train(*a);
          }};
}

}  // namespace ttt_cli
