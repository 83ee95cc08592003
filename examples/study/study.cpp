// study: the long-context scaling study of TTT layers against attention (the project's main job).
//
//   study [--task mqar|copy|text:PATH] [--models a,b,...] [--lrs ...] [--seeds ...] [--full] [--resume] ...
//
// For every model of the zoo, at matched per-token parameters and matched training tokens:
//   a) train at context L (byte vocabulary, AdamW, cosine schedule) at each learning rate of the
//      grid from the first seed, choose the rate by the validation split, train the other seeds
//      at it; a progress bar per run;
//   b) measure every run on the test split: loss by token position in log-spaced buckets, or for
//      recall (mqar) the accuracy at the answers per number of key-value pairs;
//   c) prefill and decode time per token at contexts 512 ... 32k (one child process per
//      measurement, so that its peak RSS belongs to that model and context alone);
//   d) state bytes (TTT) vs KV-cache bytes (attention) and the measured peak RSS;
//   e) CSVs, gnuplot scripts, PNGs and summary.md (mean ± sd over seeds, error bands) in one
//      results folder.
// Every run writes its files atomically when it finishes; after Ctrl-C, `--resume` (same
// options) skips the finished ones. See docs/study.md.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <pmmintrin.h>
#include <xmmintrin.h>

#include <ttt/core/parallel.hpp>

#include "study.hpp"
#include "zoo.hpp"

namespace {

using namespace study;
using clk = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
struct Interrupted {};
void on_sigint(int) { g_stop = true; }
void check_stop() {
  if (g_stop) throw Interrupted{};
}

double since(clk::time_point t0) { return std::chrono::duration<double>(clk::now() - t0).count(); }

std::string hms(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%d:%02d:%02d", int(t / 3600), int(t / 60 % 60), int(t % 60));
  else
    std::snprintf(b, sizeof b, "%d:%02d", int(t / 60), int(t % 60));
  return b;
}

std::string fmt(double v, int prec = 4) {
  std::ostringstream o;
  o << std::setprecision(prec) << v;
  return o.str();
}

std::string bytes_str(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) b /= 1024, ++i;
  return fmt(b, 3) + " " + u[i];
}

/// One status line on stderr, redrawn in place on a terminal, else printed every few seconds.
class Bar {
 public:
  void show(const std::string& s, bool force = false) {
    if (tty_) {
      std::fprintf(stderr, "\r%-110.110s", s.c_str());
      std::fflush(stderr);
    } else if (force || since(last_) > 5) {
      std::fprintf(stderr, "%s\n", s.c_str());
      last_ = clk::now();
    }
  }
  void done() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  bool tty_ = ::isatty(2) == 1;
  clk::time_point last_ = clk::now();
};

struct Options {
  std::string task = "mqar";
  std::vector<std::string> models = default_model_names();
  std::vector<int64_t> contexts;                                                 // training contexts (default: the task's)
  std::vector<int64_t> time_contexts = {512, 1024, 2048, 4096, 8192, 16384, 32768};
  std::vector<uint64_t> seeds = {0, 1, 2};
  std::vector<double> lrs = {2e-3, 4e-3, 8e-3, 1.6e-2};  // the sweep's grid (one value: no sweep)
  int edge_steps = 0;       // rates added beyond the grid's edge (sweep_rates; --full 2)
  int64_t tokens = 0;       // training tokens per run (0: the task's default)
  int64_t batch = 0, eval_seqs = 32, val_seqs = 16, decode = 32;
  bool timing = true;
  int threads = 2;
  int time_threads = 1;     // OpenMP threads of the timing runs
  Spec spec;
  std::string out = "results/study/default";
  std::string match = "per-token";  // feedforward widths: matched per-token parameters, or none (all at 8C/3)
  bool full = false, resume = false, plots = true;
  // child mode: time one model at one context
  std::string measure;
  int64_t measure_context = 0, measure_width = 0;
  int64_t time_max_len = 0;  // Spec::max_len of the timing runs
};

// ---- c/d: one timing in a child process -------------------------------------------------------------

int64_t rss_bytes() {
  const std::string v = first_line_with("/proc/self/status", "VmRSS");
  return v.empty() ? 0 : std::stoll(v) * 1024;
}

/// Child mode: build the model (random weights), prefill `context` tokens, decode; print
/// "prefill_s decode_s rss_before_prefill".
int child_measure(const Options& o) {
  ttt::set_inner_threads(o.time_threads);
  auto m = make_model(o.measure, o.spec, o.measure_width);
  m->init(o.seeds[0]);
  std::mt19937_64 rng(o.seeds[0]);
  Seq prompt(size_t(o.measure_context));
  for (auto& t : prompt) t = int64_t(rng() % 256);
  const int64_t base = rss_bytes();
  const Timing t = m->time(prompt, o.decode);
  // the peak of this program's own memory (VmHWM, after the exec): wait4's ru_maxrss would count
  // the parent's pages at the fork (the text task's corpus, ~110 MiB)
  const std::string hwm = first_line_with("/proc/self/status", "VmHWM");
  std::printf("%.9g %.9g %lld %lld\n", t.prefill_s, t.decode_s, (long long)base, hwm.empty() ? -1LL : std::stoll(hwm) * 1024);
  return 0;
}

struct Measured {
  Timing t;
  int64_t base_rss = 0, peak_rss = 0;
};

/// Runs this program again in child mode; its peak RSS is the VmHWM it reports (wait4's rusage if it cannot).
Measured spawn_measure(const std::string& exe, const Options& o, const std::string& model, int64_t width, int64_t context) {
  std::vector<std::string> args = {exe, "--measure", model, "--max-len", std::to_string(o.time_max_len), "--measure-context", std::to_string(context),
                                   "--measure-width", std::to_string(width), "--hidden", std::to_string(o.spec.hidden),
                                   "--layers", std::to_string(o.spec.layers), "--heads", std::to_string(o.spec.heads),
                                   "--window", std::to_string(o.spec.window), "--mini-batch",
                                   std::to_string(o.spec.mini_batch), "--decode", std::to_string(o.decode), "--time-threads", std::to_string(o.time_threads),
                                   "--seeds", std::to_string(o.seeds[0])};
  int fd[2];
  if (::pipe(fd) != 0) throw ttt::Error("pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) throw ttt::Error("fork failed");
  if (pid == 0) {
    ::dup2(fd[1], 1);
    ::close(fd[0]), ::close(fd[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    std::_Exit(127);
  }
  ::close(fd[1]);
  std::string text;
  char buf[256];
  for (ssize_t n; (n = ::read(fd[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, size_t(n));
  }
  ::close(fd[0]);
  int status = 0;
  rusage ru{};
  while (::wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  check_stop();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw ttt::Error("timing " + model + " at context " + std::to_string(context) + " failed (child status " +
                     std::to_string(status) + ")");
  Measured m;
  long long base = 0, hwm = -1;
  if (std::sscanf(text.c_str(), "%lf %lf %lld %lld", &m.t.prefill_s, &m.t.decode_s, &base, &hwm) != 4)
    throw ttt::Error("timing " + model + ": unexpected child output '" + text + "'");
  m.base_rss = base;
  m.peak_rss = hwm >= 0 ? int64_t(hwm) : int64_t(ru.ru_maxrss) * 1024;
  return m;
}

// ---- the study ------------------------------------------------------------------------------------------

struct Entry {
  std::string name;
  int64_t width = 0, params = 0, per_token = 0;  ///< per_token: what the widths match (zoo.hpp)
};

/// The learning rate as it appears in file names and tables ("0.002").
std::string lr_str(double lr) { return fmt(lr, 3); }

std::string run_id(const std::string& model, int64_t L, uint64_t seed, double lr) {
  return model + "-L" + std::to_string(L) + "-s" + std::to_string(seed) + "-lr" + lr_str(lr);
}

int64_t steps_for(const Options& o, int64_t L) { return std::max<int64_t>(1, o.tokens / (o.batch * L)); }

bool is_mqar(const Task& task) { return task.name() == "mqar"; }

/// Adds the recall scores of `count` sequences of n tokens with P pairs each (split, seed) to `r`.
void add_recall(Model& m, int64_t count, int64_t n, int64_t P, Split split, uint64_t seed, Recalled& r) {
  std::vector<std::vector<int64_t>> answers;
  const auto seqs = mqar_batch(count, n, P, split, seed, answers);
  for (size_t i = 0; i < seqs.size(); ++i) check_stop(), add_answer_scores(m.logits(seqs[i]), seqs[i], answers[i], r);
}

/// Adds the next-token losses of `count` sequences of n tokens (split, seed) to sum[t], count[t].
void add_positions(const Task& task, Model& m, int64_t count, int64_t n, Split split, uint64_t seed,
                   std::vector<double>& sum, std::vector<int64_t>& counts) {
  for (const auto& q : batch(task, count, n, split, seed)) check_stop(), add_position_losses(m.logits(q), q, sum, counts);
}

/// The validation score the learning-rate sweep minimises: the mean next-token loss of
/// `o.val_seqs` validation sequences (for recall: the mean loss at the answers, the only
/// predictable tokens).
double validation_loss(const Options& o, const Task& task, Model& m, int64_t L, uint64_t seed) {
  if (is_mqar(task)) {
    Recalled r;
    const auto grid = MQAR::pair_grid(L + 1);
    for (int64_t P : grid)
      add_recall(m, std::max<int64_t>(1, o.val_seqs / int64_t(grid.size())), L + 1, P, Split::validation, seed + 7919, r);
    return r.loss / double(std::max<int64_t>(1, r.total));
  }
  std::vector<double> s;
  std::vector<int64_t> c;
  add_positions(task, m, o.val_seqs, L + 1, Split::validation, seed + 7919, s, c);
  double sum = 0, count = 0;
  for (size_t t = 0; t < s.size(); ++t) sum += s[t], count += double(c[t]);
  return sum / std::max(1.0, count);
}

/// The test measurement of a trained model, as CSV: loss by position (log2 buckets) for the
/// language-model tasks; accuracy and loss at the answers for each pair count of recall.
std::string test_csv(const Options& o, const Task& task, Model& m, int64_t L, uint64_t seed) {
  if (is_mqar(task)) {
    std::string csv = "pairs,accuracy,answer_loss,answers\n";
    for (int64_t P : MQAR::pair_grid(L + 1)) {
      Recalled r;
      add_recall(m, o.eval_seqs, L + 1, P, Split::test, seed + 1000003, r);
      csv += std::to_string(P) + "," + fmt(double(r.correct) / double(r.total), 6) + "," + fmt(r.loss / double(r.total), 6) +
             "," + std::to_string(r.total) + "\n";
    }
    return csv;
  }
  std::vector<double> sum;
  std::vector<int64_t> count;
  add_positions(task, m, o.eval_seqs, L + 1, Split::test, seed + 1000003, sum, count);
  std::string csv = "bucket_lo,bucket_hi,loss,tokens\n";
  for (const auto& k : buckets(sum, count))
    csv += std::to_string(k.lo) + "," + std::to_string(k.hi) + "," + fmt(k.mean, 6) + "," + std::to_string(k.count) + "\n";
  return csv;
}

bool diverged(const Results& R, const std::string& id) { return fs::exists(R.path("train/" + id + ".diverged")); }

/// A finished run's validation score as run_one stored it; infinite when it diverged.
double stored_validation(const Results& R, const std::string& id) {
  return diverged(R, id) ? INFINITY : std::stod(ttt::io::read_file(R.path("val/" + id + ".txt")));
}

/// One run: train `e` at context L from `seed` with peak learning rate `lr`, then its validation
/// score (val/<id>.txt) and its test measurement (test/<id>.csv). A run whose loss stops being
/// finite ends there (train/<id>.diverged); its scores are infinite / absent. Returns the
/// validation score.
double run_one(const Options& o, const Results& R, const Task& task, const Entry& e, int64_t L, uint64_t seed, double lr,
               const std::string& label, Bar& bar) {
  const std::string id = run_id(e.name, L, seed, lr);
  if (R.done("run-" + id)) {
    bar.show(label + " trained earlier (--resume)", true);
    return stored_validation(R, id);
  }
  auto m = make_model(e.name, o.spec, e.width);
  m->init(seed * 1000 + 17);
  const int64_t steps = steps_for(o, L), warm = std::max<int64_t>(1, steps / 10);
  ttt::train::CosineSchedule sched{.peak = lr, .floor = lr * 0.01, .warmup = warm, .total = steps};
  std::string log = "step,loss,lr,tokens,seconds\n";
  const auto t0 = clk::now();
  double ema = NAN;
  for (int64_t s = 0; s < steps; ++s) {
    check_stop();
    std::vector<std::vector<int64_t>> targets;  // the answers only, for recall (Zoology's loss)
    const auto b = batch(task, o.batch, L + 1, Split::train, seed, s * o.batch, &targets);
    const double loss = m->train_step(b, targets, sched(s), std::min(1.0, double(s + 1) / double(warm)), o.threads);
    if (!std::isfinite(loss)) {
      bar.show(label + " diverged at step " + std::to_string(s + 1) + " (loss " + fmt(loss) + ")", true);
      R.write("train/" + id + ".csv", log);
      R.write("train/" + id + ".diverged", "loss " + fmt(loss) + " at step " + std::to_string(s + 1) + "\n");
      R.finish("run-" + id);
      return INFINITY;
    }
    ema = std::isnan(ema) ? loss : 0.9 * ema + 0.1 * loss;
    const double sec = since(t0), tok = double((s + 1) * o.batch * L);
    log += std::to_string(s + 1) + "," + fmt(loss, 6) + "," + fmt(sched(s), 4) + "," + fmt(tok, 10) + "," + fmt(sec, 6) + "\n";
    bar.show(label + " step " + std::to_string(s + 1) + "/" + std::to_string(steps) + "  loss " + fmt(ema, 4) + "  " +
                 fmt(tok / sec, 3) + " tok/s  ETA " + hms(sec / double(s + 1) * double(steps - s - 1)),
             s + 1 == steps);
  }
  const double val = validation_loss(o, task, *m, L, seed);
  R.write("train/" + id + ".csv", log);
  R.write("weights/" + id + ".bin", m->weights());
  R.write("val/" + id + ".txt", fmt(val, 8) + "\n");
  R.write("test/" + id + ".csv", test_csv(o, task, *m, L, seed));
  R.finish("run-" + id);
  return val;
}

/// The sweep of model `e` at context L (sweep_rates: the grid, then rates beyond its edge) from
/// the runs of seeds[0] that finished; none may be missing.
Sweep stored_sweep(const Options& o, const Results& R, const Entry& e, int64_t L) {
  return sweep_rates(o.lrs, o.edge_steps, [&](double lr) { return stored_validation(R, run_id(e.name, L, o.seeds[0], lr)); });
}

/// c) + d) for one model: every context in its own child process.
void time_model(const Options& o, const Results& R, const std::string& exe, const Entry& e, const std::string& label,
                Bar& bar) {
  if (R.done("time-" + e.name)) {
    bar.show(label + " measured earlier (--resume)", true);
    return;
  }
  auto m = make_model(e.name, o.spec, e.width);
  std::string csv = "context,prefill_s,prefill_us_per_token,prefill_tok_s,decode_us_per_token,decode_tok_s,state_bytes,base_rss_bytes,peak_rss_bytes\n";
  const auto t0 = clk::now();
  double last = 0, prev = 0;
  for (size_t i = 0; i < o.time_contexts.size(); ++i) {
    const int64_t L = o.time_contexts[i];
    // ETA: the next measurement costs the last one times the growth seen so far (2x to 4x per doubling)
    double eta = 0, t = last, g = prev > 0 ? std::clamp(last / prev, 2.0, 4.0) : 3.0;
    for (size_t j = i; j < o.time_contexts.size() && last > 0; ++j) eta += (t *= g);
    bar.show(label + " context " + std::to_string(L) + " (" + std::to_string(i + 1) + "/" +
                 std::to_string(o.time_contexts.size()) + ")  elapsed " + hms(since(t0)) + "  ETA " + (last > 0 ? hms(eta) : "?"),
             true);
    const auto t1 = clk::now();
    const Measured r = spawn_measure(exe, o, e.name, e.width, L);
    prev = last, last = since(t1);
    csv += std::to_string(L) + "," + fmt(r.t.prefill_s, 6) + "," + fmt(1e6 * r.t.prefill_s / double(L), 6) + "," +
           fmt(double(L) / r.t.prefill_s, 6) + "," + fmt(1e6 * r.t.decode_s, 6) + "," + fmt(1.0 / r.t.decode_s, 6) + "," +
           std::to_string(m->state_bytes(L)) + "," + std::to_string(r.base_rss) + "," + std::to_string(r.peak_rss) + "\n";
  }
  R.write("time/" + e.name + ".csv", csv);
  R.finish("time-" + e.name);
}

// ---- e) summary, plots ------------------------------------------------------------------------------------

/// Rows of a CSV written above (header skipped), as numbers.
std::vector<std::vector<double>> read_csv(const fs::path& p) {
  std::istringstream in(ttt::io::read_file(p));
  std::vector<std::vector<double>> rows;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<double> r;
    std::istringstream ls(line);
    for (std::string cell; std::getline(ls, cell, ',');) r.push_back(std::stod(cell));
    rows.push_back(r);
  }
  return rows;
}

std::string gp_header(const std::string& png, const std::string& title, const std::string& xl, const std::string& yl) {
  return "# re-plot: gnuplot " + png.substr(0, png.size() - 4) + ".gp (from this folder)\n"
         "set terminal pngcairo size 900,560 font ',11'\nset output '" + png + "'\nset datafile separator ','\n"
         "set key autotitle columnhead outside right\nset grid\nset title \"" + title + "\"\nset xlabel \"" + xl +
         "\"\nset ylabel \"" + yl + "\"\n";
}

/// A wide CSV (x, then one column per model) and a gnuplot script drawing every column.
void wide_plot(const Results& R, const std::string& name, const std::string& xname, const std::vector<std::string>& cols,
               const std::map<int64_t, std::vector<std::string>>& rows, const std::string& gp_settings,
               const std::string& title, const std::string& xl, const std::string& yl) {
  std::string csv = xname;
  for (const auto& c : cols) csv += "," + c;
  csv += "\n";
  for (const auto& [x, v] : rows) csv += std::to_string(x) + "," + join(v, ",") + "\n";
  R.write(name + ".csv", csv);
  R.write(name + ".gp", gp_header(name + ".png", title, xl, yl) + gp_settings + "plot for [i=2:" +
                            std::to_string(cols.size() + 1) + "] '" + name + ".csv' using 1:i with linespoints lw 2\n");
}

/// "2.31 ± 0.04" (mean ± sample sd over the seeds that finished; "2.31" for one; "diverged" for
/// none); `scale` multiplies both (100 for percentages).
std::string pm(const Stat& s, int prec = 3, double scale = 1) {
  if (s.n == 0) return "diverged";
  return fmt(scale * s.mean, prec) + (s.n > 1 ? " ± " + fmt(scale * s.sd, 2) : "");
}

/// A CSV with x, then mean, mean - sd, mean + sd per model, and a gnuplot script drawing each
/// model's mean as a line over a shaded band of one standard deviation (error bands).
void band_plot(const Results& R, const std::string& name, const std::string& xname, const std::vector<std::string>& cols,
               const std::map<int64_t, std::vector<Stat>>& rows, const std::string& gp_settings, const std::string& title,
               const std::string& xl, const std::string& yl, double scale = 1, const std::string& extra_plot = "") {
  std::string csv = xname;
  for (const auto& c : cols) csv += "," + c + "," + c + "_lo," + c + "_hi";
  csv += "\n";
  for (const auto& [x, v] : rows) {
    csv += std::to_string(x);
    for (const auto& st : v)
      csv += st.n ? "," + fmt(scale * st.mean, 6) + "," + fmt(scale * (st.mean - st.sd), 6) + "," + fmt(scale * (st.mean + st.sd), 6)
                  : ",NaN,NaN,NaN";
    csv += "\n";
  }
  R.write(name + ".csv", csv);
  const std::string M = std::to_string(cols.size() - 1);
  R.write(name + ".gp", gp_header(name + ".png", title, xl, yl) + "set datafile missing 'NaN'\n" + gp_settings +
                            "plot for [i=0:" + M + "] '" + name + ".csv' using 1:(column(3+3*i)):(column(4+3*i)) with filledcurves "
                            "fs transparent solid 0.18 noborder lt (i+1) notitle, \\\n     for [i=0:" + M + "] '" + name +
                            ".csv' using 1:(column(2+3*i)) with linespoints lw 2 lt (i+1) title columnhead(2+3*i)" + extra_plot + "\n");
}

/// Models ranked by `score` (lower first), with the pairs whose mean ± sd intervals overlap named:
/// those the seeds do not separate.
std::string ranking(const std::vector<std::string>& names, const std::vector<Stat>& score, bool higher_better, int prec,
                    double scale = 1) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < names.size(); ++i)
    if (score[i].n) idx.push_back(i);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    return higher_better ? score[a].mean > score[b].mean : score[a].mean < score[b].mean;
  });
  std::string out;
  for (size_t k = 0; k < idx.size(); ++k) out += (k ? (higher_better ? " > " : " < ") : "") + names[idx[k]] + " (" + pm(score[idx[k]], prec, scale) + ")";
  std::string tied;
  for (size_t k = 0; k + 1 < idx.size(); ++k) {
    const Stat &a = score[idx[k]], &b = score[idx[k + 1]];
    if (a.n > 1 && b.n > 1 && std::abs(a.mean - b.mean) <= a.sd + b.sd) tied += (tied.empty() ? "" : ", ") + names[idx[k]] + " ~ " + names[idx[k + 1]];
  }
  const bool one_seed = std::all_of(idx.begin(), idx.end(), [&](size_t i) { return score[i].n < 2; });
  return out + (one_seed ? "; one seed: no spread, nothing is separated" : tied.empty() ? "; every neighbour separated by more than its two sds" : "; within one sd of each other (not separated by these seeds): " + tied);
}

void summarize(const Options& o, const Results& R, const Task& task, const std::vector<Entry>& zoo, const std::string& command,
               double wall_s) {
  std::vector<std::string> names;
  for (const auto& e : zoo) names.push_back(e.name);
  std::ostringstream md;
  const auto mach = machine();
  const std::string seeds = join_ints(o.seeds);
  std::string lrs;
  for (double lr : o.lrs) lrs += (lrs.empty() ? "" : ", ") + lr_str(lr);
  md << "# Long-context study: " << o.task << "\n\n"
     << "Command: `" << command << "`  \nSeeds: " << seeds << " | learning-rate grid: " << lrs
     << (o.edge_steps > 0 && o.lrs.size() > 1
             ? " (and up to " + std::to_string(o.edge_steps) + (o.edge_steps == 1 ? " rate" : " rates") + " beyond its edge)"
             : std::string())
     << " | machine: " << mach["cpu"].get<std::string>() << ", " << mach["cores"].get<unsigned>() << " cores, "
     << mach["memory"].get<std::string>() << " | build: " << mach["compiler"].get<std::string>()
     << (mach.contains("build") ? ", " + mach["build"].get<std::string>() : "") << "  \n"
     << "Models: hidden " << o.spec.hidden << ", " << o.spec.layers << " layers, " << o.spec.heads
     << " heads, byte vocabulary; TTT mini-batch " << o.spec.mini_batch << "; SWA / hier-* window " << o.spec.window
     << "; batch " << o.batch << ", " << o.tokens << " training tokens per run. "
     << (o.match == "none" ? std::string("Not matched (--match none): every feedforward 8 hidden / 3 wide. ")
                           : std::string("Matched: the parameters that run per token (all but a looked-up embedding table and "
                                         "training-only heads), by each model's feedforward width. "))
     << "Study wall time (this invocation): " << hms(wall_s) << ".\n\n"
     << "Protocol: every model is trained at each learning rate of the grid from seed " << o.seeds[0]
     << "; the rate with the lowest loss on the validation split (" << o.val_seqs << " sequences"
     << (is_mqar(task) ? ", loss at the answers" : "") << ") is chosen"
     << (o.edge_steps > 0 && o.lrs.size() > 1
             ? " (while it is the lowest or highest rate swept, the rate half or twice it runs too, up to " +
                   std::to_string(o.edge_steps) + " beyond the grid)"
             : std::string())
     << ", and the other seeds train at it. Every number "
     << "below the sweep table is measured on the test split (" << o.eval_seqs << " sequences"
     << (is_mqar(task) ? " per pair count" : "") << "), distinct from both; ± is the sample standard deviation over the seeds "
     << "(n = " << o.seeds.size() << "), the bands in the plots one sd.\n\n";

  // the sweep
  std::map<std::pair<std::string, int64_t>, Sweep> sweeps;
  std::vector<double> columns;  // every rate any sweep ran, ascending
  for (int64_t L : o.contexts)
    for (const auto& e : zoo) {
      const Sweep& s = sweeps[{e.name, L}] = stored_sweep(o, R, e, L);
      for (double lr : s.lrs)
        if (std::find(columns.begin(), columns.end(), lr) == columns.end()) columns.push_back(lr);
    }
  std::sort(columns.begin(), columns.end());
  md << "## Learning rate (validation loss at each rate, seed " << o.seeds[0] << ")\n\n| model | context |";
  for (double lr : columns) md << " " << lr_str(lr) << " |";
  md << " chosen |\n|---|---|";
  for (size_t i = 0; i < columns.size(); ++i) md << "---|";
  md << "---|\n";
  std::map<std::pair<std::string, int64_t>, double> chosen;
  for (int64_t L : o.contexts)
    for (const auto& e : zoo) {
      const Sweep& s = sweeps[{e.name, L}];
      md << "| " << e.name << " | " << L << " |";
      for (double lr : columns) {
        const std::string id = run_id(e.name, L, o.seeds[0], lr);
        const auto at = std::find(s.lrs.begin(), s.lrs.end(), lr);  // its score: read once, by stored_sweep
        md << " " << (at == s.lrs.end() ? std::string("·") : diverged(R, id) ? std::string("diverged") : fmt(s.scores[size_t(at - s.lrs.begin())], 4)) << " |";
      }
      chosen[{e.name, L}] = s.chosen;
      md << " " << lr_str(s.chosen) << (s.edge ? " (edge)" : "") << " |\n";
    }
  bool gaps = false;
  for (const auto& [key, sw] : sweeps) gaps |= sw.lrs.size() < columns.size();
  md << "\n" << (gaps ? "· = not run (a rate beyond the grid runs only where the choice reached that edge). " : "")
     << "A choice at the edge of the rates swept means a better rate may lie beyond them (`--lrs`"
     << (o.lrs.size() > 1 ? ", `--edge-steps`" : "") << ").\n\n";

  auto seed_runs = [&](const Entry& e, int64_t L) {
    std::vector<std::string> ids;
    for (uint64_t sd : o.seeds) ids.push_back(run_id(e.name, L, sd, chosen[{e.name, L}]));
    return ids;
  };
  auto finished = [&](const std::string& id) { return !diverged(R, id); };
  // every seed's training loss in eighths of its run: a plateau that one seed left and another did not
  auto curves = [&](int64_t L) {
    constexpr int kParts = 8;
    md << "Training loss" << (is_mqar(task) ? " at the answers" : "") << " of every seed at the chosen rate, the mean over each "
       << "eighth of the run's " << steps_for(o, L) << " steps:\n\n| model | seed |";
    for (int k = 1; k <= kParts; ++k) md << " " << k << "/8 |";
    md << "\n|---|---|";
    for (int k = 0; k < kParts; ++k) md << "---|";
    md << "\n";
    for (const auto& e : zoo) {
      const auto ids = seed_runs(e, L);
      for (size_t i = 0; i < ids.size(); ++i) {
        const auto span = loss_by_span(read_csv(R.path("train/" + ids[i] + ".csv")), steps_for(o, L), kParts);
        md << "| " << e.name << " | " << o.seeds[i] << " |";
        for (double v : span) md << " " << (std::isnan(v) ? std::string("diverged") : fmt(v, 3)) << " |";
        md << "\n";
      }
    }
    md << "\n";
  };

  for (int64_t L : o.contexts) {
    if (is_mqar(task)) {
      const auto grid = MQAR::pair_grid(L + 1);
      md << "## Recall accuracy at context " << L << " (test split, mean ± sd over seeds, %)\n\n"
         << "| model | params (per token) | lr | train tok/s |";
      for (int64_t P : grid) md << " " << P << " pairs |";
      md << " loss at the answers |\n|---|---|---|---|";
      for (size_t i = 0; i <= grid.size(); ++i) md << "---|";
      md << "\n";
      std::map<int64_t, std::vector<Stat>> rows;
      std::vector<Stat> hardest;
      for (size_t mi = 0; mi < zoo.size(); ++mi) {
        const Entry& e = zoo[mi];
        std::map<int64_t, std::vector<double>> acc;
        std::vector<double> loss, tok_s;
        for (const auto& id : seed_runs(e, L)) {
          if (!finished(id)) continue;
          const auto tr = read_csv(R.path("train/" + id + ".csv"));
          tok_s.push_back(tr.back()[3] / tr.back()[4]);
          double l = 0, n = 0;
          for (const auto& r : read_csv(R.path("test/" + id + ".csv"))) acc[int64_t(r[0])].push_back(r[1]), l += r[2] * r[3], n += r[3];
          loss.push_back(l / n);
        }
        md << "| " << e.name << " | " << e.params << " (" << e.per_token << ") | " << lr_str(chosen[{e.name, L}]) << " | "
           << pm(stat_of(tok_s), 3) << " |";
        for (int64_t P : grid) {
          const Stat st = stat_of(acc[P]);
          rows[P].push_back(st);
          md << " " << pm(st, 3, 100) << " |";
        }
        hardest.push_back(stat_of(acc[grid.back()]));
        md << " " << pm(stat_of(loss), 3) << " |\n";
      }
      md << "| *one of the sequence's P values at random* | | | |";
      for (int64_t P : grid) md << " " << fmt(100.0 / double(P), 3) << " |";
      md << " |\n";
      md << "\nA model at the last row's level has learned that a value follows a query, not which one. Ranked by accuracy at "
         << grid.back() << " pairs: " << ranking(names, hardest, true, 3, 100) << ".\n\n";
      if (o.seeds.size() > 1) {  // a mean over seeds that disagree hides how: every seed's numbers
        md << "Every seed (accuracy %, seeds " << join_ints(o.seeds, " / ") << "):\n\n| model |";
        for (int64_t P : grid) md << " " << P << " pairs |";
        md << "\n|---|";
        for (size_t i = 0; i < grid.size(); ++i) md << "---|";
        md << "\n";
        for (const auto& e : zoo) {
          std::map<int64_t, std::string> cell;
          for (const auto& id : seed_runs(e, L)) {
            std::map<int64_t, double> acc;
            if (finished(id))
              for (const auto& r : read_csv(R.path("test/" + id + ".csv"))) acc[int64_t(r[0])] = r[1];
            for (int64_t P : grid)
              cell[P] += (cell[P].empty() ? "" : " / ") + (acc.count(P) ? fmt(100 * acc[P], 3) : std::string("diverged"));
          }
          md << "| " << e.name << " |";
          for (int64_t P : grid) md << " " << cell[P] << " |";
          md << "\n";
        }
        md << "\n";
      }
      curves(L);
      band_plot(R, "mqar_accuracy_L" + std::to_string(L), "pairs", names, rows, "set logscale x 2\nset yrange [0:100]\n",
                "recall accuracy (MQAR, context " + std::to_string(L) + "; test split, mean and one sd over seeds)",
                "key-value pairs in the sequence", "accuracy at the answers (%)", 100,
                ", \\\n     100.0/x with lines dt 2 lw 1 lc rgb 'gray40' title 'one of the P values at random'");
      continue;
    }
    md << "## Test loss at context " << L << " (matched parameters and tokens; mean ± sd over seeds)\n\n"
       << "| model | what | params (per token) | feedforward width | lr | train tok/s | final train loss | test loss | first bucket | "
          "last bucket |\n|---|---|---|---|---|---|---|---|---|---|\n";
    std::map<int64_t, std::vector<Stat>> rows;  // bucket_hi -> per model
    std::vector<Stat> last_bucket, test_loss;
    std::vector<std::pair<std::string, std::string>> every_seed;  // per model: "a / b / c" of test loss, last bucket
    for (size_t mi = 0; mi < zoo.size(); ++mi) {
      const Entry& e = zoo[mi];
      std::vector<double> tok_s, final_loss, held, first, lastb;
      std::map<int64_t, std::vector<double>> by_bucket;
      auto& [seeds_loss, seeds_last] = every_seed.emplace_back();
      for (const auto& id : seed_runs(e, L)) {
        const std::string sep = seeds_loss.empty() ? "" : " / ";
        if (!finished(id)) {
          seeds_loss += sep + "diverged", seeds_last += sep + "diverged";
          continue;
        }
        const auto tr = read_csv(R.path("train/" + id + ".csv"));
        const auto ev = read_csv(R.path("test/" + id + ".csv"));
        tok_s.push_back(tr.back()[3] / tr.back()[4]);
        double f = 0;
        const size_t k = std::min<size_t>(10, tr.size());
        for (size_t i = tr.size() - k; i < tr.size(); ++i) f += tr[i][1] / double(k);
        final_loss.push_back(f);
        double sm = 0, c = 0;
        for (const auto& r : ev) sm += r[2] * r[3], c += r[3], by_bucket[int64_t(r[1])].push_back(r[2]);
        held.push_back(sm / c), first.push_back(ev.front()[2]), lastb.push_back(ev.back()[2]);
        seeds_loss += sep + fmt(held.back(), 4), seeds_last += sep + fmt(lastb.back(), 3);
      }
      for (const auto& [bk, v] : by_bucket) {
        auto& row = rows[bk];
        row.resize(zoo.size());
        row[mi] = stat_of(v);
      }
      last_bucket.push_back(stat_of(lastb));
      test_loss.push_back(stat_of(held));
      md << "| " << e.name << " | " << describe(e.name, o.spec) << " | " << e.params << " (" << e.per_token << ") | " << e.width << " | "
         << lr_str(chosen[{e.name, L}]) << " | " << pm(stat_of(tok_s), 3) << " | " << pm(stat_of(final_loss), 4) << " | "
         << pm(test_loss.back(), 4) << " | " << pm(stat_of(first), 3) << " | " << pm(last_bucket.back(), 3) << " |\n";
    }
    md << "\nRanked by test loss: " << ranking(names, test_loss, false, 4) << ".  \nRanked by the last bucket (positions "
       << bucket_lo(bucket_of(L - 1)) << "-" << L - 1 << "): " << ranking(names, last_bucket, false, 3) << ".\n\n";
    if (o.seeds.size() > 1) {  // beside the means: every seed's numbers
      md << "Every seed (seeds " << join_ints(o.seeds, " / ") << "):\n\n| model | test loss | last bucket |\n|---|---|---|\n";
      for (size_t mi = 0; mi < zoo.size(); ++mi)
        md << "| " << zoo[mi].name << " | " << every_seed[mi].first << " | " << every_seed[mi].second << " |\n";
      md << "\n";
    }
    curves(L);
    const std::string nm = "loss_by_position_L" + std::to_string(L);
    band_plot(R, nm, "position", names, rows, "set logscale x 2\n",
              "test loss by token position (" + o.task + ", context " + std::to_string(L) + "; mean and one sd over seeds)",
              "token position (end of log2 bucket)", "mean next-token loss (nats)");
  }
  if (!o.timing) {
    md << "## Files\n\nCSVs, gnuplot scripts (`gnuplot NAME.gp` in this folder re-plots) and PNGs; per-run logs in "
          "train/, val/, test/ (timing: not run, --no-timing).\n";
    R.write("summary.md", md.str());
    return;
  }

  // c/d: time and memory
  std::map<int64_t, std::vector<std::string>> pre, dec, st, rss;
  std::map<std::string, std::vector<std::vector<double>>> tm;
  for (size_t mi = 0; mi < zoo.size(); ++mi) {
    tm[zoo[mi].name] = read_csv(R.path("time/" + zoo[mi].name + ".csv"));
    for (const auto& r : tm[zoo[mi].name]) {
      for (auto* mp : {&pre, &dec, &st, &rss}) (*mp)[int64_t(r[0])].resize(zoo.size(), "NaN");
      pre[int64_t(r[0])][mi] = fmt(r[2], 6), dec[int64_t(r[0])][mi] = fmt(r[4], 6);
      st[int64_t(r[0])][mi] = fmt(r[6], 10), rss[int64_t(r[0])][mi] = fmt(r[8] / 1048576.0, 6);
    }
  }
  // crossover: the smallest measured context from which on a TTT model is faster than full attention
  std::string cross_gp;
  md << "\n## Time per token vs context (prefill from an empty state; decode after the prefill)\n\n";
  for (const char* what : {"prefill", "decode"}) {
    const int col = std::string(what) == "prefill" ? 3 : 5;  // tokens/s
    md << "**" << what << " tokens/s**\n\n| model |";
    for (int64_t L : o.time_contexts) md << " " << L << " |";
    md << "\n|---|";
    for (size_t i = 0; i < o.time_contexts.size(); ++i) md << "---|";
    md << "\n";
    for (const auto& e : zoo) {
      md << "| " << e.name << " |";
      for (const auto& r : tm[e.name]) md << " " << fmt(r[size_t(col)], 3) << " |";
      md << "\n";
    }
    md << "\n";
    if (!tm.count("transformer")) continue;
    const auto& att = tm["transformer"];
    for (const auto& e : zoo) {
      if (e.name.rfind("ttt-", 0) != 0) continue;
      const auto& tt = tm[e.name];
      int64_t from = -1;
      for (size_t i = tt.size(); i-- > 0;) {
        if (tt[i][size_t(col)] > att[i][size_t(col)]) from = int64_t(tt[i][0]);
        else break;
      }
      md << "- " << what << ": " << e.name << " vs transformer: "
         << (from < 0 ? "attention is faster at every measured context (up to " + std::to_string(o.time_contexts.back()) + ")"
             : from == o.time_contexts.front() ? "TTT is faster at every measured context (from " + std::to_string(from) + ")"
                                               : "TTT is faster from context " + std::to_string(from) + " on")
         << "\n";
      if (e.name == "ttt-linear" && from > o.time_contexts.front())
        cross_gp += std::string(what) + ":" + std::to_string(from) + ";";
    }
    md << "\n";
  }
  auto marker = [&](const std::string& what) {
    const auto p = cross_gp.find(what + ":");
    if (p == std::string::npos) return std::string();
    const std::string x = cross_gp.substr(p + what.size() + 1, cross_gp.find(';', p) - p - what.size() - 1);
    return "set arrow from " + x + ", graph 0 to " + x + ", graph 1 nohead dt 2 lw 2 lc rgb 'gray40'\n"
           "set label 'ttt-linear faster from " + x + "' at " + x + ", graph 0.95 offset 1,0\n";
  };
  const std::string logxy = "set logscale x 2\nset logscale y 10\n";
  wide_plot(R, "prefill", "context", names, pre, logxy + marker("prefill"), "prefill time per token", "context (tokens)",
            "microseconds per token");
  wide_plot(R, "decode", "context", names, dec, logxy + marker("decode"), "decode time per token after a prefill of the context",
            "context (tokens)", "microseconds per token");
  wide_plot(R, "state_bytes", "context", names, st, logxy, "per-sequence state: TTT state vs KV cache", "context (tokens)",
            "bytes");
  wide_plot(R, "peak_rss", "context", names, rss, "set logscale x 2\n",
            "measured peak RSS of one process: prefill + decode at the context", "context (tokens)", "MiB");
  md << "## Memory vs context\n\n| model | state bytes at " << o.time_contexts.front() << " | state bytes at "
     << o.time_contexts.back() << " | peak RSS at " << o.time_contexts.front() << " | peak RSS at "
     << o.time_contexts.back() << " |\n|---|---|---|---|---|\n";
  for (const auto& e : zoo) {
    const auto& t = tm[e.name];
    md << "| " << e.name << " | " << bytes_str(t.front()[6]) << " | " << bytes_str(t.back()[6]) << " | "
       << bytes_str(t.front()[8]) << " | " << bytes_str(t.back()[8]) << " |\n";
  }
  md << "\nEach (model, context) is measured in its own child process (this program re-run in `--measure` "
        "mode, " << o.time_threads << " OpenMP thread(s): random weights; prefill = the fastest of up to 15 runs from an empty state; decode = the median "
        "of " << o.decode << " one-token steps after it). Peak RSS is that process's VmHWM (after the exec): the "
        "program, the weights, the repeated prefills' work buffers and the cache.\n\n"
     << "## Files\n\nCSVs, gnuplot scripts (`gnuplot NAME.gp` in this folder re-plots) and PNGs: "
     << (is_mqar(task) ? "mqar_accuracy_L*" : "loss_by_position_L*") << ".{csv,gp,png}, prefill.*, decode.*, state_bytes.*, "
        "peak_rss.*; per-run logs in train/, val/, test/, time/.\n";
  R.write("summary.md", md.str());
}

int run_plots(const Results& R) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::fprintf(stderr, "gnuplot not found: CSVs and .gp scripts written, no PNGs (apt-get install gnuplot-nox)\n");
    return 0;
  }
  int bad = 0;
  for (const auto& f : fs::directory_iterator(R.dir()))
    if (f.path().extension() == ".gp") {
      const std::string cmd = "cd '" + R.dir().string() + "' && gnuplot '" + f.path().filename().string() + "' 2>/dev/null";
      if (std::system(cmd.c_str()) != 0) ++bad, std::fprintf(stderr, "gnuplot failed on %s\n", f.path().c_str());
    }
  return bad;
}

/// Everything that can be wrong with the options, found before any work starts.
void check_before_work(const Options& o, const Task& task, const std::vector<Entry>& zoo) {
  for (int64_t L : o.contexts) {
    if (L < 2 || L > (int64_t(1) << 24)) throw ttt::Error("--contexts: " + std::to_string(L) + " is outside [2, 16M]");
    task.check_length(L + 1);
  }
  for (int64_t L : o.time_contexts)
    if (L < 1 || L > (int64_t(1) << 30)) throw ttt::Error("--time-contexts: " + std::to_string(L) + " is outside [1, 1G]");
  const double avail = double(available_bytes());
  if (avail <= 0) return;
  Spec ts = o.spec;
  ts.max_len = o.time_max_len;
  for (const auto& e : zoo) {
    auto m = make_model(e.name, ts, e.width);  // throws here when a context is beyond what the model takes
    const int64_t Lt = *std::max_element(o.time_contexts.begin(), o.time_contexts.end());
    // prefill holds the KV cache (attention) or state and its work buffers (Model::prefill_bytes)
    const double need_time = double(m->state_bytes(Lt)) + double(m->prefill_bytes(Lt));
    if (need_time > 0.8 * avail)
      throw ttt::Error(e.name + " at context " + std::to_string(Lt) + " needs about " + bytes_str(need_time) +
                       " (KV cache / state + prefill buffers), but only " + bytes_str(avail) +
                       " is available; lower --time-contexts");
    const int64_t Ltr = *std::max_element(o.contexts.begin(), o.contexts.end());
    // training keeps about 40 doubles per token and hidden unit of one sequence per thread (a rough bound)
    const double need_train = double(o.batch) * double(Ltr) * double(o.spec.hidden) * 8.0 * 40.0;
    if (need_train > 0.8 * avail)
      throw ttt::Error(e.name + ": training at context " + std::to_string(Ltr) + " with batch " + std::to_string(o.batch) +
                       " needs about " + bytes_str(need_train) + ", only " + bytes_str(avail) +
                       " is available; lower --contexts or --batch");
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Allocations of the training pass (a few hundred KiB each, every step) stay on the heap instead
  // of a fresh mmap each (page faults cost 5-8x the training time in a VM); denormals flush to zero
  // (underflowing softmax terms otherwise slow the double backward down). Also in child mode.
  ::mallopt(M_MMAP_THRESHOLD, 256 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 512 << 20);
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
  Options o;
  std::string models_arg;
  CLI::App app{"study: the long-context scaling study of TTT layers against attention (see README.md)", "study"};
  app.add_option("--task", o.task, "mqar | copy | text:PATH (a text file or folder, byte-level)")->capture_default_str();
  app.add_option("--models", models_arg, "comma-separated subset of: " + join(model_names()) +
                                             " (default: " + join(default_model_names()) + "; --full: the first seven; 'hier' = the four hier-* models)");
  auto* o_ctx = app.add_option("--contexts", o.contexts, "training contexts L (default: mqar 64, text 1024, copy 64; --full: mqar 64,128,256, text 1024,4096)")->delimiter(',');
  auto* o_tctx = app.add_option("--time-contexts", o.time_contexts, "contexts of the time/memory measurements")->delimiter(',');
  auto* o_seeds = app.add_option("--seeds", o.seeds, "seeds (data and initialisation): mean and sd over them; the first one runs the learning-rate sweep")
                      ->delimiter(',')->capture_default_str();
  auto* o_tok = app.add_option("--tokens", o.tokens, "training tokens per run (default 524288; --full 1048576)");
  app.add_option("--batch", o.batch, "sequences per step (default: text 2, otherwise 8)")->check(CLI::Range(1, 4096));
  auto* o_lrs = app.add_option("--lrs", o.lrs, "the learning-rate grid swept per model and context (AdamW peak, cosine, 10% warm-up)")
                    ->delimiter(',')->capture_default_str();
  double one_lr = 0;
  auto* o_lr = app.add_option("--lr", one_lr, "one peak learning rate for every model: no sweep (same as --lrs X)")->excludes(o_lrs);
  auto* o_edge = app.add_option("--edge-steps", o.edge_steps,
                 "while the chosen rate is the lowest (highest) one swept, also run half (twice) it, up to N rates beyond "
                 "the grid per model and context (default 0; --full 2)")->check(CLI::Range(0, 16));
  app.add_option("--eval-seqs", o.eval_seqs, "test sequences (per pair count for mqar)")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--val-seqs", o.val_seqs, "validation sequences of the learning-rate choice")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_flag("!--no-timing", o.timing, "train and test only: no prefill/decode timing or memory curves");
  app.add_option("--decode", o.decode, "tokens decoded per timing")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--threads", o.threads, "training threads (sequences of a batch split over them)")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--time-threads", o.time_threads,
                 "OpenMP threads of the time measurements (1: on a shared machine, barriers between 2+ threads "
                 "make short runs noisy)")->check(CLI::Range(1, 256))->capture_default_str();
  auto* o_hid = app.add_option("--hidden", o.spec.hidden, "hidden size")->check(CLI::Range(8, 1 << 14))->capture_default_str();
  auto* o_lay = app.add_option("--layers", o.spec.layers, "layers")->check(CLI::Range(1, 256))->capture_default_str();
  app.add_option("--heads", o.spec.heads, "heads")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--window", o.spec.window, "sliding window of the swa model; local window of the hier-* models")->check(CLI::Range(1, 1 << 30))->capture_default_str();
  app.add_option("--mini-batch", o.spec.mini_batch, "TTT mini-batch size")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--out", o.out, "results folder")->capture_default_str();
  app.add_option("--match", o.match,
                 "per-token: feedforward widths that match the parameters run per token (zoo.hpp); none: every model at "
                 "width 8 hidden / 3, parameter counts as they fall")->capture_default_str();
  app.add_flag("--full", o.full, "the long version: the seven models at hidden 128, 4 layers, contexts mqar 64,128,256 / text 1024,4096, 1M tokens per run");
  app.add_flag("--resume", o.resume, "skip the parts an interrupted run with the same options finished");
  app.add_flag("!--no-plots", o.plots, "write CSVs and .gp scripts but do not run gnuplot");
  app.add_option("--measure", o.measure)->group("");  // child mode (internal)
  app.add_option("--measure-context", o.measure_context)->group("");
  app.add_option("--measure-width", o.measure_width)->group("");
  app.add_option("--max-len", o.spec.max_len)->group("");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!o.measure.empty()) return child_measure(o);
    if (!models_arg.empty()) {
      o.models.clear();
      std::istringstream s(models_arg);
      for (std::string m; std::getline(s, m, ',');) {
        if (m == "hier") {
          for (const auto& h : hier_model_names()) o.models.push_back(h);
          continue;
        }
        check_model_name(m), o.models.push_back(m);
      }
    }
    if (o_lr->count()) o.lrs = {one_lr};
    if (o.lrs.empty()) throw ttt::Error("--lrs needs at least one learning rate");
    for (double lr : o.lrs)
      if (!(lr > 0) || lr > 1) throw ttt::Error(std::string(o_lr->count() ? "--lr" : "--lrs") + ": " + fmt(lr) + " is outside (0, 1]");
    // the task's defaults (README, "Long-context study"), then --full's
    const bool text = o.task.rfind("text:", 0) == 0, mqar = o.task == "mqar";
    if (!o_ctx->count()) o.contexts = {mqar ? 64 : text ? 1024 : 64};
    if (o.batch <= 0) o.batch = text ? 2 : 8;
    if (!o_tok->count()) o.tokens = 524288;
    if (o.full) {
      if (models_arg.empty()) o.models = full_model_names();
      if (!o_hid->count()) o.spec.hidden = 128;
      if (!o_lay->count()) o.spec.layers = 4;
      if (!o_ctx->count()) o.contexts = mqar ? std::vector<int64_t>{64, 128, 256} : text ? std::vector<int64_t>{1024, 4096} : std::vector<int64_t>{512, 2048};
      if (!o_tok->count()) o.tokens = 1048576;  // about 9 hours for both tasks on 2 cores (docs/study.md)
      if (!o_edge->count()) o.edge_steps = 2;
      if (o.out == "results/study/default") o.out = "results/study/full";
    }
    (void)o_tctx, (void)o_seeds;
    if (o.tokens <= 0) throw ttt::Error("--tokens must be positive");
    o.spec.max_len = 2;  // linear-attn's mini-batch: the longest training sequence, or timing prompt + decode
    for (int64_t L : o.contexts) o.spec.max_len = std::max(o.spec.max_len, L + 1);
    for (int64_t L : o.time_contexts) o.time_max_len = std::max(o.time_max_len, L + o.decode + 8);
    if (o.seeds.empty() || o.contexts.empty() || o.time_contexts.empty())
      throw ttt::Error("--seeds, --contexts and --time-contexts need at least one value");
    auto task = make_task(o.task);

    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    std::vector<Entry> zoo;
    if (o.match != "per-token" && o.match != "none")
      throw ttt::Error("--match: '" + o.match + "' is not one of per-token, none");
    const auto widths = o.match == "none" ? std::vector<int64_t>(o.models.size(), (8 * o.spec.hidden / 3 + 7) / 8 * 8)
                                          : matched_widths(o.models, o.spec, full_model_names());
    for (size_t i = 0; i < o.models.size(); ++i) {
      auto m = make_model(o.models[i], o.spec, widths[i]);
      zoo.push_back({o.models[i], widths[i], m->num_params(), m->per_token_params()});
    }
    check_before_work(o, *task, zoo);

    nlohmann::json settings = {{"task", o.task}, {"models", o.models}, {"contexts", o.contexts},
                               {"time_contexts", o.time_contexts}, {"seeds", o.seeds}, {"tokens", o.tokens},
                               {"batch", o.batch}, {"lrs", o.lrs}, {"edge_steps", o.edge_steps}, {"eval_seqs", o.eval_seqs}, {"val_seqs", o.val_seqs},
                               {"timing", o.timing}, {"match", o.match}, {"decode", o.decode},
                               {"hidden", o.spec.hidden}, {"layers", o.spec.layers}, {"heads", o.spec.heads},
                               {"window", o.spec.window}, {"mini_batch", o.spec.mini_batch}};
    Results R(o.out, settings, o.resume);
    nlohmann::json run = {{"command", command}, {"machine", machine()}, {"threads", o.threads}, {"time_threads", o.time_threads}};
    R.write("run.json", run.dump(2) + "\n");

    std::printf("study: task %s, %zu models, training contexts %s, %lld tokens each, seeds %s -> %s\n", o.task.c_str(),
                zoo.size(), join_ints(o.contexts).c_str(), (long long)o.tokens, join_ints(o.seeds).c_str(),
                o.out.c_str());
    const std::string state_col = "state@" + std::to_string(o.time_contexts.back());
    std::printf("%-18s %-56s %10s %10s %8s %14s\n", "model", "what", "params", "per token", "width", state_col.c_str());
    for (const auto& e : zoo)
      std::printf("%-18s %-56s %10lld %10lld %8lld %14s\n", e.name.c_str(), describe(e.name, o.spec).c_str(), (long long)e.params,
                  (long long)e.per_token, (long long)e.width, bytes_str(double(make_model(e.name, o.spec, e.width)->state_bytes(o.time_contexts.back()))).c_str());
    std::fflush(stdout);

    std::signal(SIGINT, on_sigint);
    if (o.threads > 1) ttt::set_inner_threads(1);  // threads split the batch; no nested head loops
    const auto t0 = clk::now();
    Bar bar;
    try {
      const size_t per_pair = o.lrs.size() + o.seeds.size() - 1;  // the grid's runs of one (context, model)
      size_t runs = o.contexts.size() * zoo.size() * per_pair;      // + those beyond the grid, counted as they come
      size_t k = 0;                   // runs labelled
      std::vector<double> trained_s;  // seconds of each run this invocation trained (not skipped)
      // runs that --resume will skip in the (context, model) pairs not yet begun (at most the grid's count
      // each), so the time left counts only runs to train
      std::vector<size_t> done_in;  // [pair]: its runs finished earlier
      for (int64_t L : o.contexts)
        for (const auto& e : zoo)
          done_in.push_back(std::min(per_pair, R.done_with_prefix("run-" + e.name + "-L" + std::to_string(L) + "-s")));
      std::vector<size_t> skip_after(done_in.size(), 0);  // [pair]: those in the pairs after it
      for (size_t i = done_in.size() - 1; i-- > 0;) skip_after[i] = skip_after[i + 1] + done_in[i + 1];
      size_t pair = 0;
      for (int64_t L : o.contexts)
        for (const auto& e : zoo) {
          auto label = [&](uint64_t seed, double lr, const char* what) {
            return "[" + std::string(what) + " " + std::to_string(++k) + "/" + std::to_string(runs) + " " + e.name + " L=" +
                   std::to_string(L) + " seed " + std::to_string(seed) + " lr " + lr_str(lr) + "]";
          };
          // one run, then (when it trained) how long the rest of the study may take at this invocation's pace
          auto train = [&](uint64_t seed, double r, const char* what) {
            const bool earlier = R.done("run-" + run_id(e.name, L, seed, r));
            const auto t = clk::now();
            const double v = run_one(o, R, *task, e, L, seed, r, label(seed, r, what), bar);
            if (!earlier && k < runs) {
              trained_s.push_back(since(t));
              bar.done();
              const double per_run = median(trained_s);  // a run slowed by a pause or another job moves it little
              const size_t left = runs - k - std::min(runs - k, skip_after[pair]);
              std::fprintf(stderr, "study: %zu of %zu runs done, about %s of training left at this invocation's %s per run (median)\n",
                           k, runs, hms(per_run * double(left)).c_str(), hms(per_run).c_str());
            }
            return v;
          };
          size_t ran = 0;
          const double lr = sweep_rates(o.lrs, o.edge_steps, [&](double r) {
                              if (++ran > o.lrs.size()) ++runs;
                              return train(o.seeds[0], r, o.lrs.size() > 1 ? "sweep" : "train");
                            }).chosen;
          for (size_t i = 1; i < o.seeds.size(); ++i) train(o.seeds[i], lr, "seed");
          ++pair;
        }
      bar.done();
      const std::string exe = fs::read_symlink("/proc/self/exe").string();
      for (size_t i = 0; i < zoo.size() && o.timing; ++i)
        time_model(o, R, exe, zoo[i], "[time " + std::to_string(i + 1) + "/" + std::to_string(zoo.size()) + " " + zoo[i].name + "]", bar);
      bar.done();
    } catch (const Interrupted&) {
      bar.done();
      std::fprintf(stderr, "\ninterrupted: the finished parts are in %s/parts; continue with:\n  %s --resume\n", o.out.c_str(),
                   command.c_str());
      return 130;
    }
    summarize(o, R, *task, zoo, command, since(t0));
    const int bad = o.plots ? run_plots(R) : 0;
    R.finish("summary");
    std::printf("\nresults in %s/:\n", o.out.c_str());
    std::vector<std::string> files = {"summary.md"};
    for (int64_t L : o.contexts) files.push_back((mqar ? "mqar_accuracy_L" : "loss_by_position_L") + std::to_string(L) + ".png");
    if (o.timing)
      for (const char* f : {"prefill.png", "decode.png", "state_bytes.png", "peak_rss.png"}) files.push_back(f);
    for (const auto& f : files) std::printf("  %s\n", (fs::path(o.out) / f).c_str());
    std::printf("  (CSVs and gnuplot scripts beside them; %s took %s)\n", "the study", hms(since(t0)).c_str());
    return bad ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "study: %s\n", e.what());
    return 1;
  }
}
