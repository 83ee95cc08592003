#pragma once
/// \file study.hpp
/// The pieces of the long-context study that do not depend on a model: the tasks (generated
/// in-process from a seed, or byte-level text), the log-spaced position buckets of the
/// loss-by-position figure, the results folder whose parts are written atomically and skipped on
/// `--resume`, and the machine description recorded with the results. tests/study tests them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <ttt/blocks/cross_entropy.hpp>
#include <ttt/core/tensor.hpp>
#include <ttt/inner/optimizers.hpp>
#include <ttt/inner/registry.hpp>
#include <ttt/io/file.hpp>
#include <ttt/train/data.hpp>
#include <nlohmann/json.hpp>

#ifdef TTT_STUDY_LEARNERS_HEADER
#include TTT_STUDY_LEARNERS_HEADER
#endif

namespace study {

/// The inner learners a ttt-<learner> model can name: the built-in ones, plus a user's own when
/// the program is built with ttt_add_study (examples/CMakeLists.txt), which compiles the study
/// with TTT_STUDY_LEARNERS_HEADER (the header that defines them) and TTT_STUDY_EXTRA_LEARNERS
/// (their type names, comma-separated).
#ifdef TTT_STUDY_EXTRA_LEARNERS
using Learners = decltype(std::tuple_cat(ttt::inner::Builtin{}, std::tuple<TTT_STUDY_EXTRA_LEARNERS>{}));
#else
using Learners = ttt::inner::Builtin;
#endif

namespace fs = std::filesystem;
using Seq = std::vector<int64_t>;

/// "a, b, c": the valid names in an error message.
inline std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

/// "0 / 1 / 2": integers (seeds, contexts) joined by `sep`.
template <class I>
std::string join_ints(const std::vector<I>& v, const std::string& sep = ", ") {
  std::vector<std::string> s;
  for (const I& x : v) s.push_back(std::to_string(x));
  return join(s, sep);
}

// ---- the model zoo's names (zoo.hpp builds the models) ------------------------------------

/// Sizes shared by every model of a study; each model gets its own SwiGLU width
/// (`intermediate`) so that parameter counts match.
struct Spec {
  int64_t hidden = 64, layers = 2, heads = 4, mini_batch = 16, window = 16, vocab = 256;
  /// linear-attn's mini-batch is the whole sequence: the longest one it will read (training or timing).
  int64_t max_len = 1024;
};

/// The zoo's names, in the order the study runs and plots them: the default run's models, then
/// the hierarchical transformer's (simple-hierarchical-transformer, ttt/hier), chosen with --models.
inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> v = {"ttt-linear", "ttt-mlp", "ttt-linear-mamba", "ttt-mlp-mamba",
                                             "transformer", "swa", "linear-attn",
                                             "hier-local", "hier-1-2", "hier-1-2-8", "hier-ttt",
                                             "ttt-swiglu", "ttt-linear-momentum", "ttt-linear-decay",
                                             "ttt-mlp-muon", "ttt-swiglu-muon", "ttt-mlp-muon-before",
                                             "ttt-swiglu-muon-before"};
  return v;
}

/// A TTT model's name, ttt-<learner>[-<inner optimizer>][-before][-mamba] (e.g. ttt-swiglu-muon,
/// ttt-swiglu-muon-before, ttt-linear-momentum-mamba): any learner of `Learners` (the registry's,
/// inner/registry.hpp, and a user's own) under any built-in inner optimizer (inner/optimizers.hpp), gd when none is
/// named; -before: query order `before` (LaCT's apply-then-update, ttt_query_order).
struct TTTName {
  std::string learner, optimizer = "gd";
  bool mamba = false;
  bool before = false;
};
inline std::optional<TTTName> parse_ttt_name(const std::string& name) {
  std::string_view rest = name;
  const bool mamba = rest.ends_with("-mamba");
  if (mamba) rest.remove_suffix(6);
  const auto t = ttt::inner::parse_ttt_name<Learners>(rest);
  if (!t) return std::nullopt;
  return TTTName{std::string(t->learner), std::string(t->optimizer), mamba, t->order == ttt::inner::QueryOrder::before};
}

/// The models of a --full run without --models: the paper's four TTT models and the three baselines.
inline const std::vector<std::string>& full_model_names() {
  static const std::vector<std::string> v(model_names().begin(), model_names().begin() + 7);
  return v;
}

/// The models of a default run without --models (four of the seven, to fit its 15 minutes with the
/// build on a 2-core machine; TTT-MLP, TTT-MLP on the Mamba backbone and linear attention in
/// --full or by name).
inline const std::vector<std::string>& default_model_names() {
  static const std::vector<std::string> v = {"ttt-linear", "ttt-linear-mamba", "transformer", "swa"};
  return v;
}

/// The hierarchical models (--models hier is short for them).
inline std::vector<std::string> hier_model_names() {
  std::vector<std::string> v;
  for (const auto& n : model_names())
    if (n.rfind("hier-", 0) == 0) v.push_back(n);
  return v;
}

/// One line per model: what it is.
inline std::string describe(const std::string& name, const Spec& s) {
  if (name == "ttt-linear") return "TTT-Linear, Transformer backbone";
  if (name == "ttt-mlp") return "TTT-MLP, Transformer backbone";
  if (name == "ttt-linear-mamba") return "TTT-Linear, Mamba backbone (pre-conv, shared QK, gate)";
  if (name == "ttt-mlp-mamba") return "TTT-MLP, Mamba backbone (pre-conv, shared QK, gate)";
  if (const auto t = parse_ttt_name(name))
    return "TTT, learner " + t->learner + ", inner optimizer " + t->optimizer +
           (t->before ? ", queries before the update" : "") + (t->mamba ? ", Mamba backbone" : ", Transformer backbone");
  if (name == "transformer") return "causal softmax attention + RoPE, KV cache";
  if (name == "swa") return "sliding-window attention, window " + std::to_string(s.window);
  if (name == "linear-attn") return "linear attention = TTT-Linear with plain L2 inner loss, W0 = 0, one mini-batch";
  const std::string w = std::to_string(s.window);
  if (name == "hier-local") return "hierarchical transformer code, one level: local attention, window " + w;
  if (name == "hier-1-2") return "hierarchies (1, 2), local windows " + w;
  if (name == "hier-1-2-8") return "hierarchies (1, 2, 8), local windows " + w;
  if (name == "hier-ttt") return "hierarchies (1, 2, 8), windows " + w + " at 1x, 2x; TTT-Linear at 8x";
  return name;
}

/// Throws ttt::Error listing the valid names when `name` is not one.
inline void check_model_name(const std::string& name) {
  for (const auto& n : model_names())
    if (n == name) return;
  if (parse_ttt_name(name)) return;
  throw ttt::Error("unknown model '" + name + "'; valid models: " + join(model_names()) +
                   ", or ttt-<learner>[-<optimizer>][-before][-mamba] with a learner of " + ttt::inner::builtin_names<Learners>() +
                   " and an optimizer of " + ttt::inner::optimizer_names<ttt::inner::BuiltinOptimizers>());
}

// ---- tasks -------------------------------------------------------------------------------------

/// Which split a sequence comes from: training windows; validation ones, on which the learning-rate
/// sweep chooses; test ones, on which the tables and plots are measured (never seen by a choice).
enum class Split { train, validation, test };

/// A source of sequences of byte ids (vocabulary 256). `sample(n, rng)` returns n tokens: a model
/// reads the first n - 1 and each predicts the next.
class Task {
 public:
  virtual ~Task() = default;
  virtual std::string name() const = 0;
  /// Throws ttt::Error before any work starts when sequences of n tokens cannot be made.
  virtual void check_length(int64_t n) const = 0;
  /// n tokens; a task scored at some positions only (masked()) puts them in `answers` (position t:
  /// the logits of t predict token t + 1), else leaves it alone.
  virtual Seq sample(int64_t n, Split split, std::mt19937_64& rng, std::vector<int64_t>* answers) const = 0;
  /// Whether training counts only the answers' next-token loss (Zoology's recall), not every position's.
  virtual bool masked() const { return false; }
};

/// Reserved ids of the synthetic tasks: 1 separates the copy task's halves and fills the gaps
/// between the recall task's queries; keys and values come from disjoint ranges so that a key can
/// never be mistaken for a value.
inline constexpr int64_t kSep = 1;
inline constexpr int64_t kKeyLo = 16, kKeyHi = 136, kValHi = 256;  // keys [16, 136), values [136, 256)

/// Multi-query associative recall in the Zoology protocol (Arora et al., arXiv 2312.04927): a
/// sequence of n tokens starts with P key-value pairs (distinct keys); the rest holds one query per
/// pair, the P keys in random order at random slots, each followed by its value, the gaps filled
/// with the separator. A value after a query is predictable only by recalling its pair, written up
/// to n tokens back; a model is scored by its accuracy there (the argmax at the query's key is the
/// value), not only its loss. Training sequences draw P per sequence from the grid `pair_grid(n)`
/// (4, 8, 16, ... up to n / 4 and the 120 keys), a test measures each P of the grid on its own.
/// Zoology places its queries with power-law gaps; here the slots are uniform, so distances
/// between a pair and its query range over the whole sequence.
class MQAR final : public Task {
 public:
  std::string name() const override { return "mqar"; }
  void check_length(int64_t n) const override {
    if (n < 16) throw ttt::Error("task mqar: sequences of " + std::to_string(n) + " tokens are too short (need >= 16)");
  }
  /// The most pairs a sequence of n tokens holds: the writes take at most half of it, and there
  /// are 120 keys.
  static int64_t max_pairs(int64_t n) { return std::min<int64_t>(n / 4, kKeyHi - kKeyLo); }
  /// The pair counts of training and test at n tokens: 4, 8, 16, ... <= max_pairs(n).
  static std::vector<int64_t> pair_grid(int64_t n) {
    std::vector<int64_t> g;
    for (int64_t p = 4; p <= max_pairs(n); p *= 2) g.push_back(p);
    return g;
  }
  Seq sample(int64_t n, Split, std::mt19937_64& rng, std::vector<int64_t>* answers) const override {
    check_length(n);
    const auto g = pair_grid(n);
    const int64_t P = g[std::uniform_int_distribution<size_t>(0, g.size() - 1)(rng)];
    return sample_pairs(n, P, rng, answers);
  }
  bool masked() const override { return true; }
  /// A sequence with exactly P pairs; `answers` (optional) gets the positions t whose next token
  /// (t + 1) is a queried value: where the logits of position t are scored.
  static Seq sample_pairs(int64_t n, int64_t P, std::mt19937_64& rng, std::vector<int64_t>* answers = nullptr) {
    if (P < 1 || P > max_pairs(n))
      throw ttt::Error("task mqar: " + std::to_string(P) + " pairs do not fit a sequence of " + std::to_string(n) +
                       " tokens (1 ... " + std::to_string(max_pairs(n)) + ")");
    std::vector<int64_t> keys(size_t(kKeyHi - kKeyLo));
    for (size_t i = 0; i < keys.size(); ++i) keys[i] = kKeyLo + int64_t(i);
    std::shuffle(keys.begin(), keys.end(), rng);
    keys.resize(size_t(P));
    std::uniform_int_distribution<int64_t> val(kKeyHi, kValHi - 1);
    Seq s(size_t(n), kSep);
    std::vector<int64_t> vals(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) {
      vals[size_t(i)] = val(rng);
      s[size_t(2 * i)] = keys[size_t(i)], s[size_t(2 * i + 1)] = vals[size_t(i)];
    }
    // the query half: (n - 2P) / 2 slots of two tokens, P of them chosen, each pair asked once
    const int64_t slots = (n - 2 * P) / 2;
    std::vector<int64_t> slot(static_cast<size_t>(slots));
    for (int64_t i = 0; i < slots; ++i) slot[size_t(i)] = i;
    std::shuffle(slot.begin(), slot.end(), rng);
    slot.resize(size_t(P));
    std::sort(slot.begin(), slot.end());
    std::vector<int64_t> order(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) order[size_t(i)] = i;
    std::shuffle(order.begin(), order.end(), rng);
    if (answers) answers->clear();
    for (int64_t q = 0; q < P; ++q) {
      const int64_t at = 2 * P + 2 * slot[size_t(q)], j = order[size_t(q)];
      s[size_t(at)] = keys[size_t(j)], s[size_t(at + 1)] = vals[size_t(j)];
      if (answers) answers->push_back(at);
    }
    return s;
  }
};

/// Copying: m random tokens, a separator, then the same m tokens again (repeated until the
/// sequence has n tokens). Everything after the separator is predictable from m + 1 tokens back.
class Copy final : public Task {
 public:
  std::string name() const override { return "copy"; }
  void check_length(int64_t n) const override {
    if (n < 3) throw ttt::Error("task copy: sequences of " + std::to_string(n) + " tokens are too short (need >= 3)");
  }
  static int64_t payload(int64_t n) { return std::max<int64_t>(1, (n - 1) / 2); }
  Seq sample(int64_t n, Split, std::mt19937_64& rng, std::vector<int64_t>*) const override {
    check_length(n);
    const int64_t m = payload(n);
    std::uniform_int_distribution<int64_t> tok(kKeyLo, kValHi - 1);
    Seq s;
    s.reserve(size_t(n));
    for (int64_t i = 0; i < m; ++i) s.push_back(tok(rng));
    s.push_back(kSep);
    while (int64_t(s.size()) < n) s.push_back(s[s.size() - size_t(m + 1)]);
    return s;
  }
};

/// Byte-level text: a file, or every file under a folder (ttt::train::load_byte_corpus); the last
/// 5% of the bytes are the test split, the 5% before them the validation split, the rest training;
/// windows start at random offsets of their split. Documents of a folder are separated by byte 0
/// (the byte tokenizer's EOS id, 257, is outside the study's vocabulary of 256).
class Text final : public Task {
 public:
  explicit Text(const fs::path& path) : path_(path) {
    auto tokens = ttt::train::load_byte_corpus(path);
    for (auto& t : tokens)
      if (t > 255) t = 0;
    const size_t n5 = tokens.size() / 20;
    test_.assign(tokens.end() - int64_t(n5), tokens.end());
    val_.assign(tokens.end() - int64_t(2 * n5), tokens.end() - int64_t(n5));
    tokens.resize(tokens.size() - 2 * n5);
    train_ = std::move(tokens);
  }
  std::string name() const override { return "text:" + path_.string(); }
  void check_length(int64_t n) const override {
    if (n < 2) throw ttt::Error("task text: sequences need at least 2 tokens");
    if (int64_t(test_.size()) < n)
      throw ttt::Error(name() + ": the held-out 5% (" + std::to_string(test_.size()) + " bytes) is shorter than one window of " +
                       std::to_string(n) + " tokens; use more text or a shorter --context");
  }
  Seq sample(int64_t n, Split split, std::mt19937_64& rng, std::vector<int64_t>*) const override {
    check_length(n);
    const Seq& t = split == Split::train ? train_ : split == Split::validation ? val_ : test_;
    const int64_t start = std::uniform_int_distribution<int64_t>(0, int64_t(t.size()) - n)(rng);
    return Seq(t.begin() + start, t.begin() + start + n);
  }
  int64_t train_bytes() const { return int64_t(train_.size()); }

 private:
  fs::path path_;
  Seq train_, val_, test_;
};

inline const std::vector<std::string>& task_names() {
  static const std::vector<std::string> v = {"mqar", "copy", "text:PATH"};
  return v;
}

/// The task of a name: "mqar", "copy" or "text:PATH". ttt::Error listing the valid names else.
inline std::unique_ptr<Task> make_task(const std::string& name) {
  if (name == "mqar") return std::make_unique<MQAR>();
  if (name == "copy") return std::make_unique<Copy>();
  if (name.rfind("text:", 0) == 0 && name.size() > 5) return std::make_unique<Text>(name.substr(5));
  throw ttt::Error("unknown task '" + name + "'; valid tasks: " + join(task_names()));
}

/// The generator of sequence i of (seed, split): a batch does not depend on how many sequences
/// were drawn before it (resume draws the same data).
inline std::mt19937_64 sequence_rng(uint64_t seed, int64_t i, Split split, uint32_t salt = 0) {
  std::seed_seq ss{uint32_t(seed), uint32_t(seed >> 32), uint32_t(i), uint32_t(uint64_t(i) >> 32),
                   uint32_t(split == Split::train ? 0x7a11 : split == Split::validation ? 0x5a1d : 0x4e1d), salt};
  return std::mt19937_64(ss);
}

/// `count` sequences of n tokens; sequence i is drawn from sequence_rng(seed, first + i, split).
/// `targets` (optional; filled for a masked() task only, else cleared): per sequence the n - 1
/// training targets, the next token at its answers and -1 (not counted) elsewhere.
inline std::vector<Seq> batch(const Task& task, int64_t count, int64_t n, Split split, uint64_t seed, int64_t first = 0,
                              std::vector<std::vector<int64_t>>* targets = nullptr) {
  std::vector<Seq> out;
  if (targets) targets->clear();
  std::vector<int64_t> answers;
  for (int64_t i = 0; i < count; ++i) {
    auto rng = sequence_rng(seed, first + i, split);
    answers.clear();
    out.push_back(task.sample(n, split, rng, &answers));
    if (targets && task.masked()) {
      std::vector<int64_t> t(size_t(n - 1), -1);
      for (int64_t a : answers)
        if (a + 1 < n) t[size_t(a)] = out.back()[size_t(a + 1)];
      targets->push_back(std::move(t));
    }
  }
  return out;
}

/// `count` recall sequences of n tokens with exactly P pairs each; answers[i]: the scored
/// positions of sequence i (MQAR::sample_pairs).
inline std::vector<Seq> mqar_batch(int64_t count, int64_t n, int64_t P, Split split, uint64_t seed,
                                   std::vector<std::vector<int64_t>>& answers) {
  std::vector<Seq> out;
  answers.assign(size_t(count), {});
  for (int64_t i = 0; i < count; ++i) {
    auto rng = sequence_rng(seed, i, split, uint32_t(P));
    out.push_back(MQAR::sample_pairs(n, P, rng, &answers[size_t(i)]));
  }
  return out;
}

// ---- loss by position ----------------------------------------------------------------------------

/// Log-spaced buckets of positions: position t (0-based; it predicts token t + 1) falls in bucket
/// 0 when t = 0, else in bucket 1 + floor(log2 t), which holds positions [2^(b-1), 2^b - 1]; so a
/// context of 2^k tokens ends exactly at the end of bucket k.
inline int bucket_of(int64_t t) {
  int b = 0;
  while ((int64_t(1) << b) <= t) ++b;
  return b;
}
inline int64_t bucket_lo(int b) { return b == 0 ? 0 : int64_t(1) << (b - 1); }
inline int64_t bucket_hi(int b) { return (int64_t(1) << b) - 1; }

struct Bucket {
  int64_t lo = 0, hi = 0;  ///< positions [lo, hi] (hi clipped to the last position seen)
  double mean = 0;         ///< mean loss of the tokens in the bucket
  int64_t count = 0;       ///< tokens in the bucket (over all sequences)
};

/// Mean loss per bucket from per-position sums and counts (sum[t], count[t] over sequences).
inline std::vector<Bucket> buckets(const std::vector<double>& sum, const std::vector<int64_t>& count) {
  std::vector<Bucket> out;
  for (size_t t = 0; t < sum.size(); ++t) {
    const int b = bucket_of(int64_t(t));
    if (int(out.size()) <= b) out.resize(size_t(b) + 1);
    Bucket& k = out[size_t(b)];
    k.lo = bucket_lo(b), k.hi = int64_t(t);
    k.mean += sum[t], k.count += count[t];
  }
  for (auto& k : out) k.mean = k.count ? k.mean / double(k.count) : NAN;
  return out;
}

/// Next-token cross entropy of every position of `logits` (n, V) against ids[t + 1], added to
/// sum[t] and counted in count[t] (t < n - 1 where n = ids.size()).
inline void add_position_losses(const ttt::Mat& logits, const Seq& ids, std::vector<double>& sum,
                                std::vector<int64_t>& count) {
  const int64_t n = int64_t(ids.size()) - 1;
  if (int64_t(sum.size()) < n) sum.resize(size_t(n), 0.0), count.resize(size_t(n), 0);
  std::vector<double> row_loss(static_cast<size_t>(n));
  ttt::blocks::cross_entropy(logits.topRows(n), std::span<const int64_t>(ids.data() + 1, size_t(n)), row_loss.data());
  for (int64_t t = 0; t < n; ++t) {
    sum[size_t(t)] += row_loss[size_t(t)];
    count[size_t(t)] += 1;
  }
}

/// The recall scores of one sequence: at each answer position t (the query's key; ids[t + 1] is
/// its value), whether the argmax of logits row t is the value, and that row's cross entropy.
struct Recalled {
  int64_t correct = 0, total = 0;
  double loss = 0;  ///< summed over the answers
};
inline void add_answer_scores(const ttt::Mat& logits, const Seq& ids, const std::vector<int64_t>& answers, Recalled& r) {
  for (int64_t t : answers) {
    Eigen::Index arg = 0;
    logits.row(t).maxCoeff(&arg);
    r.correct += int64_t(arg) == ids[size_t(t + 1)];
    r.total += 1;
    double row_loss = 0;
    const int64_t y = ids[size_t(t + 1)];
    ttt::blocks::cross_entropy(logits.row(t), std::span<const int64_t>(&y, 1), &row_loss);
    r.loss += row_loss;
  }
}

// ---- statistics over seeds ---------------------------------------------------------------------

/// Mean and sample standard deviation (n - 1; 0 for one value) of the finite values; n counts them.
struct Stat {
  double mean = NAN, sd = NAN;
  int64_t n = 0;
};
inline Stat stat_of(const std::vector<double>& v) {
  Stat s;
  double sum = 0;
  for (double x : v)
    if (std::isfinite(x)) sum += x, ++s.n;
  if (s.n == 0) return s;
  s.mean = sum / double(s.n);
  double ss = 0;
  for (double x : v)
    if (std::isfinite(x)) ss += (x - s.mean) * (x - s.mean);
  s.sd = s.n > 1 ? std::sqrt(ss / double(s.n - 1)) : 0.0;
  return s;
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(h), v.end());
  if (v.size() % 2) return v[h];
  return 0.5 * (v[h] + *std::max_element(v.begin(), v.begin() + std::ptrdiff_t(h)));
}

/// A training log's loss (column 1 of rows that start with the step, counted from 1) averaged over
/// each of `parts` equal spans of the `steps` a run takes: where a mean over seeds hides that one
/// seed left a plateau and another did not. A span with no logged step (a run that diverged
/// before it) is NaN.
inline std::vector<double> loss_by_span(const std::vector<std::vector<double>>& log, int64_t steps, int parts) {
  std::vector<double> sum(size_t(parts), 0.0), n(size_t(parts), 0.0);
  for (const auto& r : log) {
    const int64_t s = int64_t(r[0]) - 1;  // steps 1 .. steps
    if (s < 0 || s >= steps) continue;
    const size_t k = size_t(s * parts / steps);
    sum[k] += r[1], n[k] += 1;
  }
  for (size_t k = 0; k < sum.size(); ++k) sum[k] = n[k] > 0 ? sum[k] / n[k] : NAN;
  return sum;
}

// ---- the learning-rate sweep -------------------------------------------------------------------

/// The learning-rate sweep of one model and context. The grid's rates run first, in its order;
/// the choice is the rate with the lowest validation score (the earliest on a tie, and so the
/// grid's first when every run diverged). Then, while the choice is the lowest (highest) rate
/// swept so far and fewer than `edge_steps` rates have been added, the rate half that lowest
/// (twice that highest) runs too and the choice is made again: a choice at the grid's edge says
/// that a better rate may lie beyond it, and this looks there. A grid of one rate is no sweep.
struct Sweep {
  std::vector<double> lrs, scores;  ///< in the order they ran: the grid's, then the added ones
  double chosen = 0;
  int added = 0;                    ///< rates beyond the grid
  bool edge = false;                ///< the choice is still the lowest or highest swept (3+ rates)
};

/// `score(lr)` trains a run (or reads a finished one) and returns its validation score, infinite
/// when the run diverged.
template <class Score>
Sweep sweep_rates(const std::vector<double>& grid, int edge_steps, Score&& score) {
  Sweep s;
  auto choose = [&] {
    size_t best = 0;
    for (size_t i = 1; i < s.scores.size(); ++i)
      if (s.scores[i] < s.scores[best]) best = i;
    s.chosen = s.lrs[best];
  };
  for (double lr : grid) s.lrs.push_back(lr), s.scores.push_back(score(lr));
  choose();
  auto lo = [&] { return *std::min_element(s.lrs.begin(), s.lrs.end()); };
  auto hi = [&] { return *std::max_element(s.lrs.begin(), s.lrs.end()); };
  while (grid.size() > 1 && s.added < edge_steps && (s.chosen == lo() || (s.chosen == hi() && hi() * 2 <= 1))) {
    const double lr = s.chosen == lo() ? lo() / 2 : hi() * 2;  // rates stay in (0, 1]
    s.lrs.push_back(lr), s.scores.push_back(score(lr)), ++s.added;
    choose();
  }
  s.edge = s.lrs.size() > 2 && (s.chosen == lo() || s.chosen == hi());
  return s;
}

// ---- results folder --------------------------------------------------------------------------------

/// The results folder. A part (one model's training, its evaluation, its timing, the summary)
/// writes its files atomically and then a marker `parts/<part>.done`; with `resume` a part whose
/// marker exists is skipped. `settings` (the study's options) is stored in study.json; resuming
/// with other settings is refused, naming the keys that differ.
class Results {
 public:
  Results(fs::path dir, const nlohmann::json& settings, bool resume) : dir_(std::move(dir)), resume_(resume) {
    const fs::path sj = dir_ / "study.json";
    if (resume_ && fs::exists(sj)) {
      const auto old = nlohmann::json::parse(ttt::io::read_file(sj));
      std::vector<std::string> diff;
      for (auto it = settings.begin(); it != settings.end(); ++it)
        if (!old.contains(it.key()) || old[it.key()] != it.value()) diff.push_back(it.key());
      for (auto it = old.begin(); it != old.end(); ++it)
        if (!settings.contains(it.key())) diff.push_back(it.key());
      if (!diff.empty())
        throw ttt::Error(sj.string() + ": --resume with other settings than the interrupted run (" + join(diff) +
                         "); rerun with the same options, or without --resume to start over");
    }
    fs::create_directories(dir_ / "parts");
    if (!resume_)
      for (const auto& e : fs::directory_iterator(dir_ / "parts")) fs::remove(e.path());
    write("study.json", settings.dump(2) + "\n");
  }
  const fs::path& dir() const { return dir_; }
  fs::path path(const std::string& file) const { return dir_ / file; }
  bool done(const std::string& part) const { return resume_ && fs::exists(dir_ / "parts" / (part + ".done")); }
  void finish(const std::string& part) const { write("parts/" + part + ".done", part + "\n"); }
  /// How many finished parts' names start with `prefix` (0 without resume: nothing counts as done).
  size_t done_with_prefix(const std::string& prefix) const {
    size_t n = 0;
    if (!resume_) return n;
    for (const auto& e : fs::directory_iterator(dir_ / "parts")) {
      const std::string name = e.path().filename().string();
      n += name.starts_with(prefix) && name.ends_with(".done");
    }
    return n;
  }
  /// Atomic: the file is either its old content or `text`, never half written.
  void write(const std::string& file, const std::string& text) const {
    fs::create_directories((dir_ / file).parent_path());
    ttt::io::write_file_atomic(dir_ / file, text);
  }

 private:
  fs::path dir_;
  bool resume_;
};

// ---- machine -------------------------------------------------------------------------------------------

inline std::string first_line_with(const fs::path& file, const std::string& key) {
  std::ifstream f(file);
  for (std::string line; std::getline(f, line);)
    if (line.rfind(key, 0) == 0) {
      auto c = line.find(':');
      std::string v = c == std::string::npos ? line : line.substr(c + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "";
}

/// Bytes of memory available to new allocations (MemAvailable), 0 when unknown.
inline int64_t available_bytes() {
  const std::string v = first_line_with("/proc/meminfo", "MemAvailable");
  return v.empty() ? 0 : std::stoll(v) * 1024;
}

inline nlohmann::json machine() {
  nlohmann::json m;
  m["cpu"] = first_line_with("/proc/cpuinfo", "model name");
  m["cores"] = std::thread::hardware_concurrency();
  m["memory"] = first_line_with("/proc/meminfo", "MemTotal");
  m["compiler"] = std::string("gcc ") + __VERSION__;
#ifdef STUDY_BUILD
  m["build"] = STUDY_BUILD;
#endif
  return m;
}

}  // namespace study
