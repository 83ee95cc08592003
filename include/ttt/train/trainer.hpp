#pragma once
/// \file train/trainer.hpp
/// The training loop: draw a batch, exact loss and gradient (train/model_grad.hpp), accumulate over
/// micro-batches, clip, AdamW step on a warm-up + cosine schedule; validation now and then; a
/// progress line on stderr; a CSV log; checkpoints that `--resume` continues bit for bit.
///
/// An output folder holds
///   config.json, model.safetensors   the model, loadable by ttt generate / eval / AnyModel::load
///   optimizer.safetensors            AdamW moments (exp_avg.NAME, exp_avg_sq.NAME, F32), step (I64);
///                                    metadata: the data RNG state and a hash of model.safetensors
///   trainer.json                     step, seed, elapsed seconds, data fingerprint, the options
///   log.csv                          step,lr,train_loss,val_loss,tokens_per_s,elapsed_s
/// A checkpoint is written all or nothing: every file goes first to NAME.pending (atomically), and
/// only when all are on disk are they renamed over the previous ones, trainer.json last. A failed
/// write leaves the previous checkpoint as it was.
///
/// Data parallel (TrainOptions::comm, train/communicator.hpp): N ranks, each with the same model,
/// data and options, draw the same global micro-batch; rank r computes the gradient of its
/// contiguous share of the sequences (the split `threads` makes in one process), weighted by its
/// share of the next-token positions; the shares' gradients and losses are summed over the ranks
/// once per step (allreduce), and every rank takes the same clipped AdamW step. Rank 0 alone
/// writes the checkpoints, the log and the progress line. With N ranks of one thread each a run
/// equals the one-process run with `threads` N bit for bit when the sum of N values is taken in
/// one order (N = 2 always; ThreadGroup always), and to rounding otherwise; with `accum` > 1 the
/// micro-batches are summed on each rank first (once per step), so equal to rounding.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include <nlohmann/json.hpp>

#include "../blocks/cross_entropy.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/params.hpp"
#include "../core/weight_dtype.hpp"
#include "../io/config_json.hpp"
#include "../io/file.hpp"
#include "../io/safetensors.hpp"
#include "../models/checkpoint.hpp"
#include "communicator.hpp"
#include "data.hpp"
#include "model_grad.hpp"
#include "optim.hpp"

namespace ttt::train {

/// The loss became NaN or Inf; training stopped, the last checkpoint was kept.
struct DivergedError : Error {
  using Error::Error;
};

struct TrainOptions {
  int64_t steps = 100;        ///< total optimiser steps of the run (the schedule's length)
  int64_t batch = 8;          ///< sequences per micro-batch
  int64_t accum = 1;          ///< micro-batches per step (gradients summed, then divided)
  double lr = 3e-3;           ///< peak learning rate
  double min_lr = 1e-5;       ///< floor of the cosine
  int64_t warmup = -1;        ///< warm-up steps; -1: 10% of steps
  int64_t ttt_warmup = -1;    ///< warm-up of ttt_base_lr from 0; -1: same as warmup; 0: none
  AdamWOptions adamw;
  double clip = 1.0;          ///< global gradient-norm clip (<= 0: none)
  int64_t val_every = 0;      ///< validation every N steps (and at the end); 0: only at the end
  int64_t val_windows = 16;   ///< validation windows (fixed, from the start of the held-out split)
  int64_t save_every = 0;     ///< checkpoint every N steps (and at the end); needs `out`
  uint64_t seed = 0;
  std::filesystem::path out;  ///< output folder; empty: no checkpoints and no log
  bool resume = false;        ///< continue from the checkpoint in `out`
  int64_t stop_after = 0;     ///< stop after this step as if interrupted (0: run all steps)
  bool progress = true;       ///< progress line on stderr
  /// Threads of a step: over the sequences of a micro-batch first (each computes the gradient of
  /// its share; the shares are combined in a fixed order), the rest inside each share (its heads
  /// and large products: a batch of one long sequence uses every thread), and for the validation
  /// loss. A run is reproducible for a given thread count; a resumed run must use the same count
  /// to continue bit for bit (Eigen's blocking of a product depends on its thread count).
  int threads = 1;
  /// Inner states the backward keeps (GradOptions::scan_checkpoint_group): 0: every mini-batch's
  /// and its inner forward's intermediates (MLP, SwiGLU); 1: every mini-batch's state, the inner
  /// forward recomputed; G > 1: every G-th, the others recomputed (less memory at long context,
  /// same gradients);
  /// -1: the model config's `scan_checkpoint_group_size`.
  int64_t scan_checkpoint_group = -1;
  nlohmann::json args = nlohmann::json::object();  ///< recorded in trainer.json
  /// Called after every step with (step, model); tests use it to inject faults.
  std::function<void(int64_t)> after_step;
  /// The ranks that train this model together, data parallel (see the file comment); every rank
  /// calls train() with the same model, data and options. nullptr: this process alone. Not owned.
  Communicator* comm = nullptr;

  int64_t warmup_steps() const { return warmup >= 0 ? warmup : steps / 10; }
  int64_t ttt_warmup_steps() const { return ttt_warmup >= 0 ? ttt_warmup : warmup_steps(); }
};

struct TrainResult {
  int64_t start_step = 0, end_step = 0;
  std::vector<double> losses;                     ///< train loss of each step of this run
  std::vector<std::pair<int64_t, double>> val;    ///< (step, validation loss)
  double tokens_per_s = 0, train_seconds = 0;     ///< tokens of all ranks together
  int ranks = 1;                                  ///< processes (ranks) that trained together
  /// ranks > 1: bytes of one step's gradient allreduce, and the seconds spent in it over the run
  /// (the wait for the slowest rank included)
  int64_t allreduce_bytes = 0;
  double allreduce_seconds = 0;
};

/// Mean next-token cross entropy (double) of `model` over `windows`, and, when `per_position`,
/// the mean at each position t (t predicts token t + 1) over the windows long enough.
template <class Model>
double windows_loss(const Model& model, const std::vector<std::vector<int64_t>>& windows,
                    std::vector<double>* per_position = nullptr) {
  double sum = 0;
  int64_t count = 0;
  std::vector<double> ps, row_loss;
  std::vector<int64_t> pc;
  for (const auto& w : windows) {
    if (w.size() < 2) continue;
    // the window's first n tokens (the last one is only a target): (n, V) row-major
    const Mat lg = model.forward(std::span<const int64_t>(w.data(), w.size() - 1));
    const int64_t n = int64_t(w.size()) - 1;
    if (int64_t(ps.size()) < n) ps.resize(size_t(n), 0.0), pc.resize(size_t(n), 0);
    row_loss.resize(size_t(n));
    sum += blocks::cross_entropy(lg, std::span<const int64_t>(w.data() + 1, size_t(n)), row_loss.data());
    for (int64_t t = 0; t < n; ++t) ps[size_t(t)] += row_loss[size_t(t)], pc[size_t(t)] += 1;
    count += n;
  }
  if (per_position) {
    per_position->assign(ps.size(), 0.0);
    for (size_t t = 0; t < ps.size(); ++t) (*per_position)[t] = ps[t] / double(pc[t]);
  }
  return count ? sum / double(count) : NAN;
}

/// Which of `parts` contiguous shares item i of n belongs to: the one split of a batch over
/// threads, over ranks, and of the validation windows over ranks.
inline size_t share_of(size_t i, size_t n, size_t parts) { return i * parts / n; }

/// The next-token positions of a window (its length minus one; none for a window of 0 or 1).
inline double next_token_positions(const std::vector<int64_t>& w) { return double(std::max<size_t>(w.size(), 1) - 1); }

/// The windows of share k of `parts` (share_of), in order; `positions` gets their next-token positions.
inline std::vector<std::vector<int64_t>> share_windows(const std::vector<std::vector<int64_t>>& windows, size_t k,
                                                       size_t parts, double& positions) {
  std::vector<std::vector<int64_t>> out;
  positions = 0;
  for (size_t i = 0; i < windows.size(); ++i)
    if (share_of(i, windows.size(), parts) == k) out.push_back(windows[i]), positions += next_token_positions(windows[i]);
  return out;
}

/// loss_and_grad of `batch` on `threads` threads: its sequences split into min(threads, sequences)
/// contiguous shares computed at once, each share's OpenMP loops (the heads of a layer, the large
/// products) on threads / shares threads, so that one long sequence uses every thread too. The
/// shares' losses and gradients are combined weighted by their next-token positions. `scratch`
/// holds the extra gradient models (resized as needed). `Model` is a TTTModel<L> or any model
/// with a `loss_and_grad(model, batch, grad, GradOptions)` found by argument-dependent lookup
/// (hier::HierarchicalTransformer has one in hier/model.hpp).
template <class Model>
double parallel_loss_and_grad(const Model& model, const std::vector<std::vector<int64_t>>& batch,
                              Model& grad, std::vector<Model>& scratch, int threads,
                              const GradOptions& go = {}) {
  const size_t T = size_t(std::clamp<int64_t>(threads, 1, int64_t(batch.size())));
  // threads beyond the batch's sequences work inside each share: its heads and its large products
  const int inner = std::max(1, std::max(threads, 1) / int(T));
  if (T <= 1) {
    const InnerThreads scope(inner);
    return loss_and_grad(model, batch, grad, go);
  }
  std::vector<std::vector<std::vector<int64_t>>> parts(T);
  std::vector<double> pos(T, 0.0), loss(T, 0.0);
  for (size_t i = 0; i < batch.size(); ++i) {
    const size_t k = share_of(i, batch.size(), T);
    parts[k].push_back(batch[i]);
    pos[k] += next_token_positions(batch[i]);
  }
  while (scratch.size() + 1 < T) scratch.emplace_back(model.cfg);
  for (auto& g : scratch) set_ttt_base_lr(g, model.cfg.ttt_base_lr);
  auto target = [&](size_t k) -> Model& { return k == 0 ? grad : scratch[k - 1]; };
  parallel_for(
      int64_t(T), int(T), [&](int64_t k) { loss[size_t(k)] = loss_and_grad(model, parts[size_t(k)], target(size_t(k)), go); },
      inner);
  double total = 0, out = 0;
  for (double p : pos) total += p;
  for (size_t k = 0; k < T; ++k) {
    out += loss[k] * pos[k] / total;
    scale_grad(target(k), pos[k] / total);
    if (k > 0) add_grad(grad, target(k));
  }
  return out;
}

/// Rank `rank` of `ranks`: parallel_loss_and_grad of its contiguous share of `batch` (the
/// sequences i with i * ranks / size == rank), its loss and gradient weighted by the share's part
/// of the batch's next-token positions, so that the sum over the ranks is the whole batch's mean.
/// Every rank needs at least one sequence.
template <class Model>
double share_loss_and_grad(const Model& model, const std::vector<std::vector<int64_t>>& batch, Model& grad,
                           std::vector<Model>& scratch, int threads, const GradOptions& go, int rank, int ranks) {
  if (ranks <= 1) return parallel_loss_and_grad(model, batch, grad, scratch, threads, go);
  double pos = 0, total = 0;
  const auto mine = share_windows(batch, size_t(rank), size_t(ranks), pos);
  for (const auto& w : batch) total += next_token_positions(w);
  if (mine.empty())
    throw Error("rank " + std::to_string(rank) + " of " + std::to_string(ranks) + " has no sequence of a batch of " +
                std::to_string(batch.size()));
  const double loss = parallel_loss_and_grad(model, mine, grad, scratch, threads, go);
  scale_grad(grad, pos / total);
  return loss * pos / total;
}

namespace detail {

inline uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ uint64_t(static_cast<unsigned char>(c))) * 1099511628211ull;
  return h;
}

inline bool stderr_is_tty() {
#if defined(__unix__) || defined(__APPLE__)
  return ::isatty(2) == 1;
#else
  return false;
#endif
}

inline std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = long(s + 0.5);
  char b[32];
  if (t >= 3600) std::snprintf(b, sizeof b, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else std::snprintf(b, sizeof b, "%ld:%02ld", t / 60, t % 60);
  return b;
}

/// The checkpoint pieces a model type provides: a TTTModel through checkpoint.hpp's free
/// functions, any other model (hier::HierarchicalTransformer) through members of the same names.
template <class Model>
std::string weights_bytes(Model& model) {
  if constexpr (requires { model.serialize_weights(); }) return model.serialize_weights();
  else return serialize_weights(model);
}
template <class Model>
void read_model_weights(Model& model, const io::SafeTensors& st) {
  if constexpr (requires { model.load_weights(st); }) model.load_weights(st);
  else load_weights(model, st);
}
/// A model configuration as its `config.json` (a member `to_json()` or the free `to_json(cfg)`).
template <class Cfg>
nlohmann::json config_json(const Cfg& cfg) {
  if constexpr (requires { cfg.to_json(); }) return cfg.to_json();
  else return to_json(cfg);
}
/// The model configuration saved in `dir/config.json`, as the model type writes it (so that it
/// compares equal to `config_json(model.cfg)` when the configurations are the same). A model whose
/// config may name learners of the user's own (hier: LearnerTuple) reads it knowing them.
template <class Model>
nlohmann::json saved_config_json(const std::filesystem::path& dir, const Model& model) {
  using Cfg = std::remove_cvref_t<decltype(model.cfg)>;
  if constexpr (requires { typename Model::LearnerTuple; })
    return Cfg::template load<typename Model::LearnerTuple>(dir / "config.json").to_json();
  else if constexpr (requires { Cfg::load(dir / "config.json"); }) return Cfg::load(dir / "config.json").to_json();
  else return to_json(load_checkpoint_config(dir));
}

/// Write `files` (name -> bytes) into `dir` all or nothing (see the file comment).
inline void write_checkpoint_files(const std::filesystem::path& dir,
                                   const std::vector<std::pair<std::string, std::string>>& files) {
  namespace fs = std::filesystem;
  std::vector<fs::path> pending;
  auto cleanup = [&] {
    std::error_code ec;
    for (const auto& p : pending) fs::remove(p, ec);
  };
  try {
    for (const auto& [name, bytes] : files) {
      const fs::path p = dir / (name + ".pending");
      io::write_file_atomic(p, bytes);
      pending.push_back(p);
    }
    for (const auto& [name, bytes] : files) {
      std::error_code ec;
      if (fs::is_directory(dir / name, ec)) throw Error((dir / name).string() + ": is a directory");
    }
  } catch (const Error&) {
    cleanup();
    throw;
  }
  for (size_t i = 0; i < files.size(); ++i) {
    std::error_code ec;
    fs::rename(pending[i], dir / files[i].first, ec);
    if (ec) {
      cleanup();
      throw Error((dir / files[i].first).string() + ": cannot rename the new file into place: " + ec.message());
    }
  }
}

/// Every parameter entry, in visit_params order.
template <class Model>
std::vector<float> flat_params(Model& m) {
  std::vector<float> flat;
  m.visit_params([&](const ParamRef& p) {
    const size_t o = flat.size();
    flat.resize(o + size_t(p.numel()));
    p.copy_out(flat.data() + o);
  });
  return flat;
}

/// Sum the gradient entries over the ranks (one float allreduce of every entry, visit_params
/// order); returns the bytes reduced.
template <class Model>
int64_t allreduce_grad(Model& g, Communicator& comm) {
  std::vector<float> flat = flat_params(g);
  comm.allreduce_sum(std::span<float>(flat));
  size_t o = 0;
  g.visit_params([&](const ParamRef& p) {
    p.copy_in(flat.data() + o);
    o += size_t(p.numel());
  });
  return int64_t(flat.size() * sizeof(float));
}

/// FNV-1a of every parameter's bytes (visit_params order): whether ranks hold the same weights.
template <class Model>
uint64_t weights_fnv1a(Model& model) {
  const std::vector<float> flat = flat_params(model);
  return fnv1a(std::string_view(reinterpret_cast<const char*>(flat.data()), flat.size() * sizeof(float)));
}

/// The options every rank must share, as text (their hash is compared across ranks at the start).
inline std::string options_text(const TrainOptions& o) {
  std::ostringstream s;
  s.precision(17);
  s << o.steps << ' ' << o.batch << ' ' << o.accum << ' ' << o.lr << ' ' << o.min_lr << ' ' << o.warmup << ' '
    << o.ttt_warmup << ' ' << o.adamw.beta1 << ' ' << o.adamw.beta2 << ' ' << o.adamw.eps << ' '
    << o.adamw.weight_decay << ' ' << o.clip << ' ' << o.val_every << ' ' << o.val_windows << ' ' << o.save_every
    << ' ' << o.seed << ' ' << o.out.string() << ' ' << o.resume << ' ' << o.stop_after << ' ' << o.threads << ' '
    << o.scan_checkpoint_group << ' ' << o.args.dump();
  return s.str();
}

/// Throws, on every rank alike, when `v` is not the same on every rank (`what`: what differs).
inline void require_same(Communicator& comm, uint64_t v, const std::string& what, const std::string& fix) {
  const std::vector<uint64_t> all = comm.allgather(v);
  for (size_t k = 1; k < all.size(); ++k)
    if (all[k] != all[0])
      throw Error("rank " + std::to_string(k) + " of " + std::to_string(all.size()) + " has " + what +
                  " than rank 0; " + fix);
}

/// Keep the rows of log.csv up to `step` (a resumed run rewrites the steps after its checkpoint).
inline void truncate_log(const std::filesystem::path& log, int64_t step) {
  std::error_code ec;
  if (!std::filesystem::exists(log, ec)) return;
  std::istringstream in(io::read_file(log));
  std::string line, out;
  bool header = true;
  while (std::getline(in, line)) {
    if (header) {
      out += line + "\n", header = false;
      continue;
    }
    int64_t s = 0;
    try {
      s = std::stoll(line);
    } catch (const std::exception&) {
      continue;
    }
    if (s <= step) out += line + "\n";
  }
  io::write_file_atomic(log, out);
}

}  // namespace detail

namespace detail {
template <class Model, class Data>
TrainResult train_on(Model& model, Data& data, const TrainOptions& opt, Communicator& comm);
}  // namespace detail

/// Train `model` on `data` (anything with sample(n), val_windows(max), rng_state(),
/// set_rng_state(s), fingerprint()). Without resume the model is trained from its current
/// weights; with resume the weights, optimiser and data order come from `opt.out`, whose
/// config.json must equal model.cfg. Throws DivergedError on a NaN/Inf loss or gradient (the
/// last checkpoint stays), ttt::Error on I/O problems. With `opt.comm` of several ranks, an
/// error on one rank stops all of them (Communicator::abort) before it is rethrown.
template <class Model, class Data>
TrainResult train(Model& model, Data& data, const TrainOptions& opt) {
  SingleProcess alone;
  if (!opt.comm || opt.comm->size() <= 1) return detail::train_on(model, data, opt, opt.comm ? *opt.comm : alone);
  try {
    return detail::train_on(model, data, opt, *opt.comm);
  } catch (const std::exception& e) {
    opt.comm->abort(e.what());
    throw;
  }
}

namespace detail {

template <class Model, class Data>
TrainResult train_on(Model& model, Data& data, const TrainOptions& opt, Communicator& comm) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  const int rank = comm.rank(), ranks = comm.size();
  const bool lead = rank == 0;  // writes the checkpoints, the log and the progress line
  if constexpr (requires { model.weight_dtype(); })
    if (model.weight_dtype() != WeightDtype::fp32)
      throw ConfigError(std::string("train: the model runs with ") + weight_dtype_name(model.weight_dtype()) +
                        " weights (inference only: set_weight_dtype(WeightDtype::fp32) or reload it)");
  if (opt.steps < 1) throw Error("steps must be >= 1");
  if (opt.batch < 1) throw Error("batch must be >= 1");
  if (opt.accum < 1) throw Error("accum must be >= 1");
  if (opt.batch < ranks)
    throw Error("batch " + std::to_string(opt.batch) + " is smaller than the number of processes (" +
                std::to_string(ranks) + "): every process needs at least one sequence of each micro-batch");
  if (opt.resume && opt.out.empty()) throw Error("resume needs an output folder");
  if (ranks > 1) {
    // the same model, options, data and starting weights everywhere, or nothing
    const std::string fix = "start every process with the same arguments";
    require_same(comm, fnv1a(config_json(model.cfg).dump()), "another model configuration", fix);
    require_same(comm, fnv1a(options_text(opt)), "other training options", fix);
    require_same(comm, data.fingerprint(), "other training data", fix);
    if (!opt.resume)
      require_same(comm, weights_fnv1a(model), "other initial weights", "initialise every rank's model with the same seed");
  }
  const bool saving = !opt.out.empty();
  const fs::path out = opt.out;
  const double base_lr = model.cfg.ttt_base_lr;
  const CosineSchedule sched{opt.lr, opt.min_lr, opt.warmup_steps(), opt.steps};
  AdamW adam(opt.adamw);
  adam.init(model);
  int64_t start = 0;
  double elapsed0 = 0;

  if (opt.resume) {
    const fs::path tj = out / "trainer.json";
    std::error_code ec;
    if (!fs::is_directory(out, ec)) throw Error(out.string() + ": no such folder to resume from");
    if (!fs::exists(tj, ec)) throw Error(tj.string() + ": no such file (not a training output folder; nothing to resume)");
    const nlohmann::json saved = detail::saved_config_json(out, model), want = detail::config_json(model.cfg);
    if (saved != want) {
      std::string diff;
      for (auto it = want.begin(); it != want.end(); ++it)
        if (!saved.contains(it.key()) || saved[it.key()] != it.value())
          diff += (diff.empty() ? "" : ", ") + it.key() + " " + (saved.contains(it.key()) ? saved[it.key()].dump() : "?") +
                  " vs " + it.value().dump();
      throw Error((out / "config.json").string() + ": the checkpoint's model config differs from the requested one (" +
                  diff + "); resume with the same model flags or choose another output folder");
    }
    nlohmann::json t;
    try {
      t = nlohmann::json::parse(io::read_file(tj));
    } catch (const nlohmann::json::exception& e) {
      throw FormatError(tj.string() + ": not valid JSON: " + e.what());
    }
    const std::string model_bytes = io::read_file(out / "model.safetensors");
    detail::read_model_weights(model, io::SafeTensors::parse(model_bytes, (out / "model.safetensors").string()));
    const io::SafeTensors ost = io::SafeTensors::load(out / "optimizer.safetensors");
    adam.load(model, ost);
    const auto& md = ost.metadata();
    auto meta = [&](const char* k) {
      auto it = md.find(k);
      if (it == md.end()) throw FormatError(ost.source() + ": metadata '" + k + "' missing");
      return it->second;
    };
    if (meta("model_fnv1a") != std::to_string(detail::fnv1a(model_bytes)) || !t.contains("step") ||
        t["step"].get<int64_t>() != adam.steps())
      throw FormatError(out.string() + ": model.safetensors, optimizer.safetensors and trainer.json are not from the "
                        "same checkpoint");
    if (meta("data_fingerprint") != std::to_string(data.fingerprint()))
      throw Error(out.string() + ": the training data differs from the data of the run being resumed");
    data.set_rng_state(meta("rng_state"));
    start = adam.steps();
    elapsed0 = t.value("elapsed_s", 0.0);
  } else if (saving) {
    std::error_code ec;
    if (fs::exists(out / "trainer.json", ec))
      throw Error(out.string() + ": holds a training run already; resume it or choose another output folder");
  }
  if (ranks > 1) comm.allgather(0);  // every rank has read the folder before rank 0 writes to it
  const bool writing = saving && lead;
  if (writing) {
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec || !fs::is_directory(out)) throw Error(out.string() + ": cannot create output folder" + (ec ? ": " + ec.message() : ""));
  }

  const fs::path log = out / "log.csv";
  if (writing) {
    if (opt.resume) detail::truncate_log(log, start);
    std::error_code ec;
    if (!fs::exists(log, ec)) io::write_file_atomic(log, "step,lr,train_loss,val_loss,tokens_per_s,elapsed_s\n");
  }
  std::ofstream logf;
  if (writing) {
    logf.open(log, std::ios::app);
    if (!logf) throw Error(log.string() + ": cannot open for appending");
  }

  int64_t last_saved = start;
  auto checkpoint = [&](int64_t step, double elapsed) {
    std::vector<std::pair<std::string, std::string>> files;
    files.emplace_back("model.safetensors", detail::weights_bytes(model));
    io::SafeTensorsWriter ow;
    adam.save(model, ow);
    ow.set_metadata("rng_state", data.rng_state());
    ow.set_metadata("model_fnv1a", std::to_string(detail::fnv1a(files[0].second)));
    ow.set_metadata("data_fingerprint", std::to_string(data.fingerprint()));
    files.emplace_back("optimizer.safetensors", ow.serialize());
    files.emplace_back("config.json", detail::config_json(model.cfg).dump(2) + "\n");
    nlohmann::json t;
    t["step"] = step;
    t["steps"] = opt.steps;
    t["seed"] = opt.seed;
    t["elapsed_s"] = elapsed;
    t["data_fingerprint"] = std::to_string(data.fingerprint());
    t["processes"] = ranks;
    t["args"] = opt.args;
    files.emplace_back("trainer.json", t.dump(2) + "\n");
    try {
      detail::write_checkpoint_files(out, files);
    } catch (const Error& e) {
      throw Error("checkpoint at step " + std::to_string(step) + " not written (the previous one, step " +
                  std::to_string(last_saved) + ", is intact): " + e.what());
    }
    last_saved = step;
  };

  TrainResult res;
  res.ranks = ranks;
  res.start_step = start;
  const int64_t end = opt.stop_after > 0 ? std::min(opt.steps, opt.stop_after) : opt.steps;
  res.end_step = std::max(start, end);
  Model grad(model.cfg), acc(model.cfg);
  std::vector<Model> scratch;
  std::vector<int64_t> last_window;  // a window of the last batch: the health check of a checkpoint
  const bool tty = detail::stderr_is_tty();
  const bool progress = opt.progress && lead;
  const int64_t print_every = std::max<int64_t>(1, (end - start) / 20);
  const auto t0 = Clock::now();
  double train_s = 0;
  int64_t tokens = 0;
  auto elapsed = [&] { return elapsed0 + std::chrono::duration<double>(Clock::now() - t0).count(); };
  auto diverged = [&](int64_t step, const char* what, double v) {
    set_ttt_base_lr(model, base_lr);
    if (progress && tty) std::cerr << "\n";
    std::ostringstream m;
    m << "step " << step << ": " << what << " is " << v << "; training stopped. ";
    if (saving && last_saved > 0) m << "The last good checkpoint (step " << last_saved << ") in " << out.string() << " is intact";
    else if (saving) m << "No checkpoint was written";
    else m << "Nothing was saved";
    m << " (lower --lr or raise --warmup?)";
    throw DivergedError(m.str());
  };

  for (int64_t s = start; s < end; ++s) {
    const auto ts = Clock::now();
    const double lr = sched(s);
    const double blr = ttt_base_lr_at(base_lr, s, opt.ttt_warmup_steps());
    set_ttt_base_lr(model, blr), set_ttt_base_lr(grad, blr), set_ttt_base_lr(acc, blr);
    double loss = 0;
    for (int64_t a = 0; a < opt.accum; ++a) {
      const auto batch = data.sample(opt.batch);  // the global micro-batch: the same on every rank
      last_window = batch.front();
      for (const auto& w : batch) tokens += int64_t(w.size()) - 1;
      loss += share_loss_and_grad(model, batch, opt.accum == 1 ? grad : a == 0 ? acc : grad, scratch, opt.threads,
                                  GradOptions{.scan_checkpoint_group = opt.scan_checkpoint_group}, rank, ranks);
      if (opt.accum > 1 && a > 0) add_grad(acc, grad);
    }
    Model& g = opt.accum == 1 ? grad : acc;
    if (ranks > 1) {
      const auto tr = Clock::now();
      res.allreduce_bytes = allreduce_grad(g, comm);
      comm.allreduce_sum(std::span<double>(&loss, 1));
      res.allreduce_seconds += std::chrono::duration<double>(Clock::now() - tr).count();
    }
    if (opt.accum > 1) {
      loss /= double(opt.accum);
      scale_grad(g, 1.0 / double(opt.accum));
    }
    set_ttt_base_lr(model, base_lr);
    if (!std::isfinite(loss)) diverged(s + 1, "the training loss", loss);
    const double gn = clip_grad_norm(g, opt.clip);
    if (!std::isfinite(gn)) diverged(s + 1, "the gradient norm", gn);
    adam.step(model, g, lr);
    train_s += std::chrono::duration<double>(Clock::now() - ts).count();
    const int64_t step = s + 1;
    res.losses.push_back(loss);
    if (opt.after_step) opt.after_step(step);

    double val = NAN;
    if ((opt.val_every > 0 && step % opt.val_every == 0) || step == end) {
      const InnerThreads scope(std::max(opt.threads, 1));
      const auto vw = data.val_windows(opt.val_windows);
      if (!vw.empty() && ranks == 1) val = windows_loss(model, vw);
      else if (!vw.empty()) {  // each rank its contiguous share of the windows
        double sums[2] = {0, 0};  // loss summed over the share's positions, positions
        const auto mine = share_windows(vw, size_t(rank), size_t(ranks), sums[1]);
        if (sums[1] > 0) sums[0] = windows_loss(model, mine) * sums[1];
        comm.allreduce_sum(std::span<double>(sums, 2));
        val = sums[1] > 0 ? sums[0] / sums[1] : NAN;
      }
      if (!vw.empty()) res.val.emplace_back(step, val);
    }
    const double tps = train_s > 0 ? double(tokens) / train_s : 0.0;
    if (writing) {
      char row[256];
      std::snprintf(row, sizeof row, "%lld,%.9g,%.17g,", static_cast<long long>(step), lr, loss);
      logf << row;
      if (std::isfinite(val)) {
        std::snprintf(row, sizeof row, "%.17g", val);
        logf << row;
      }
      std::snprintf(row, sizeof row, ",%.1f,%.3f\n", tps, elapsed());
      logf << row;
      logf.flush();
    }
    if (saving && ((opt.save_every > 0 && step % opt.save_every == 0) || step == end)) {
      // Only weights that still compute: finite, and a finite loss on one window with the float
      // forward that ttt generate / eval use (huge but finite weights can overflow there).
      bool finite = true;
      model.visit_params([&](const ParamRef& p) {
        for (int64_t i = 0; i < p.numel() && finite; ++i) finite = std::isfinite(p.at(i));
      });
      if (!finite) diverged(step, "a weight after the update", NAN);
      const double probe = windows_loss(model, {last_window});
      if (!std::isfinite(probe)) diverged(step, "the loss after the update", probe);
      if (ranks > 1)
        require_same(comm, weights_fnv1a(model), "other weights after step " + std::to_string(step),
                     "the ranks' updates differ (an allreduce that does not give every rank the same sum?)");
      if (lead) checkpoint(step, elapsed());
      else last_saved = step;
    }
    if (progress && (tty || step % print_every == 0 || step == end || std::isfinite(val))) {
      const double eta = (step > start) ? train_s / double(step - start) * double(end - step) : NAN;
      char line[256];
      std::snprintf(line, sizeof line, "step %lld/%lld  loss %.4f%s  lr %.3g  %.0f tok/s  ETA %s",
                    static_cast<long long>(step), static_cast<long long>(opt.steps), loss,
                    std::isfinite(val) ? ("  val " + std::to_string(val).substr(0, 6)).c_str() : "", lr, tps,
                    detail::hms(eta).c_str());
      if (tty) std::cerr << "\r" << line << "\x1b[K" << (step == end ? "\n" : "") << std::flush;
      else std::cerr << line << "\n";
    }
  }
  res.train_seconds = train_s;
  res.tokens_per_s = train_s > 0 ? double(tokens) / train_s : 0.0;
  return res;
}

}  // namespace detail

}  // namespace ttt::train
