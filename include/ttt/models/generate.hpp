#pragma once
/// \file generate.hpp
/// Sampling from next-token logits and autoregressive generation with a TTT model.
///
/// Generation prefills the prompt in one forward (only the last position's logits are computed),
/// then feeds one token at a time. The model carries its state (inner weights, accumulated
/// gradient, position), so every decode step costs the same whatever the length so far: the
/// prefix is never processed again.
///
/// \code
///   ttt::SamplingOptions opt;
///   opt.temperature = 0.8f;
///   opt.top_p = 0.95f;
///   opt.max_new_tokens = 64;
///   opt.eos_token_id = model.cfg.eos_token_id;
///   ttt::GenerateResult r = ttt::generate(model, prompt_ids, opt, [](int64_t tok) {
///     std::cout << tok << ' ' << std::flush;  // return false to stop early
///     return true;
///   });
///   std::cerr << r.tokens_per_second() << " tokens/s\n";
/// \endcode
///
/// `generate` works with any model type that has `new_state()` and
/// `forward(State&, std::span<const int64_t>, Mat*, Logits)` (TTTModel<L>, AnyModel).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "ttt_model.hpp"
#include "../core/tensor.hpp"

namespace ttt {

struct SamplingOptions {
  float temperature = 1.0f;  ///< logits are divided by it; 0 means greedy
  int top_k = 0;             ///< keep the k most likely tokens; 0 keeps all
  float top_p = 1.0f;        ///< nucleus: keep the smallest set with probability >= top_p; 1 keeps all
  uint64_t seed = 0;         ///< seed of the generator `generate` makes
  bool greedy = false;       ///< argmax, ignoring temperature / top_k / top_p
  int64_t max_new_tokens = 32;
  std::optional<int64_t> eos_token_id;  ///< stop after generating it (it is part of the output)
};

namespace detail {
/// "0.5", "2", "nan": shortest round-trip form, unlike std::to_string's "2.000000".
inline std::string float_str(float v) {
  std::ostringstream s;
  s << std::setprecision(9) << v;
  return s.str();
}
}  // namespace detail

/// Throws ttt::Error naming the option when a value is out of range.
inline void validate(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0.0f)
    throw Error("temperature must be a finite number >= 0 (0 means greedy), got " + detail::float_str(o.temperature));
  if (o.top_k < 0) throw Error("top_k must be >= 0 (0 keeps every token), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f))  // also rejects NaN
    throw Error("top_p must be in (0, 1], got " + detail::float_str(o.top_p));
  if (o.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0, got " + std::to_string(o.max_new_tokens));
}

namespace detail {

/// Uniform double in [0, 1) from 53 random bits: the same sequence on every platform (unlike
/// std::uniform_real_distribution, whose algorithm the standard leaves open).
inline double uniform01(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

/// Index of the largest finite-or-infinite value; the first one on ties. NaN is an error.
inline int64_t argmax_checked(std::span<const float> x) {
  int64_t best = -1;
  for (size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i])) throw Error("sampling: logit " + std::to_string(i) + " is NaN");
    if (best < 0 || x[i] > x[size_t(best)]) best = int64_t(i);
  }
  return best;
}

}  // namespace detail

/// Pick the next token from one row of logits.
///
/// greedy (or temperature 0): the argmax (first index on ties). Otherwise: p = softmax(logits / T)
/// computed in double with the maximum subtracted; top_k keeps the k most likely tokens, then top_p
/// keeps, from the renormalised rest, the smallest most-likely-first set whose probability is
/// >= top_p (at least one token); one token is drawn from what is left, renormalised. Ties in
/// probability are ordered by token id, so a seed gives the same token everywhere.
/// Throws ttt::Error for empty logits, a NaN logit or invalid options.
inline int64_t sample_next(std::span<const float> logits, const SamplingOptions& opt, std::mt19937_64& rng) {
  validate(opt);
  if (logits.empty()) throw Error("sampling: empty logits");
  const int64_t best = detail::argmax_checked(logits);
  if (opt.greedy || opt.temperature == 0.0f) return best;

  const size_t V = logits.size();
  const double mx = double(logits[size_t(best)]);
  if (mx == -std::numeric_limits<double>::infinity()) throw Error("sampling: every logit is -inf");
  std::vector<double> p(V);
  if (mx == std::numeric_limits<double>::infinity()) {
    // Infinitely likely tokens share the mass equally.
    for (size_t i = 0; i < V; ++i) p[i] = double(logits[i]) == mx ? 1.0 : 0.0;
  } else {
    const double invT = 1.0 / double(opt.temperature);
    for (size_t i = 0; i < V; ++i) p[i] = std::exp((double(logits[i]) - mx) * invT);  // in (0, 1], max 1
  }

  // Candidates, most likely first (ties by id), cut by top_k and top_p.
  std::vector<int32_t> idx;
  size_t keep = V;
  const bool need_order = opt.top_k > 0 || opt.top_p < 1.0f;
  if (need_order) {
    idx.resize(V);
    std::iota(idx.begin(), idx.end(), 0);
    auto more_likely = [&](int32_t a, int32_t b) { return p[size_t(a)] != p[size_t(b)] ? p[size_t(a)] > p[size_t(b)] : a < b; };
    if (opt.top_k > 0 && size_t(opt.top_k) < V) {
      keep = size_t(opt.top_k);
      std::partial_sort(idx.begin(), idx.begin() + std::ptrdiff_t(keep), idx.end(), more_likely);
    } else {
      std::sort(idx.begin(), idx.end(), more_likely);
    }
    if (opt.top_p < 1.0f) {
      double total = 0.0;
      for (size_t j = 0; j < keep; ++j) total += p[size_t(idx[j])];
      const double target = double(opt.top_p) * total;
      double cum = 0.0;
      size_t n = 0;
      while (n < keep) {
        cum += p[size_t(idx[n])];
        ++n;
        if (cum >= target) break;
      }
      keep = std::max<size_t>(n, 1);
    }
  }

  double total = 0.0;
  if (need_order)
    for (size_t j = 0; j < keep; ++j) total += p[size_t(idx[j])];
  else
    for (double v : p) total += v;
  double u = detail::uniform01(rng) * total;
  if (need_order) {
    for (size_t j = 0; j < keep; ++j) {
      u -= p[size_t(idx[j])];
      if (u < 0.0) return idx[j];
    }
    return idx[keep - 1];  // rounding left u >= 0 at the end
  }
  int64_t last_nonzero = best;
  for (size_t i = 0; i < V; ++i) {
    if (p[i] <= 0.0) continue;
    last_nonzero = int64_t(i);
    u -= p[i];
    if (u < 0.0) return int64_t(i);
  }
  return last_nonzero;
}

/// What `generate` produced, and how long it took.
struct GenerateResult {
  std::vector<int64_t> tokens;  ///< the new tokens (the prompt is not repeated); EOS included if hit
  bool stopped_at_eos = false;
  bool stopped_by_callback = false;
  int64_t prompt_tokens = 0;
  double prefill_ms = 0.0;  ///< the prompt's forward and the first token's sampling
  double decode_ms = 0.0;   ///< every later token: a one-token forward and a sampling each

  /// Tokens produced by the decode phase (all but the first, which the prefill gives).
  int64_t decode_tokens() const { return tokens.empty() ? 0 : int64_t(tokens.size()) - 1; }
  double decode_ms_per_token() const { return decode_tokens() > 0 ? decode_ms / double(decode_tokens()) : 0.0; }
  /// Decode throughput (prefill excluded).
  double tokens_per_second() const { return decode_ms > 0.0 ? 1000.0 * double(decode_tokens()) / decode_ms : 0.0; }
};

/// The callable `generate` takes by default: no callback.
struct NoTokenCallback {
  bool operator()(int64_t) const { return true; }
};

/// Generate up to `opt.max_new_tokens` tokens after `prompt` (which must not be empty), stopping
/// after `opt.eos_token_id`. `on_token(id)` is called for each new token as soon as it is chosen;
/// when it returns a bool, false stops the generation. Throws ttt::Error for invalid options and
/// (from the model) for prompt ids outside the vocabulary.
template <class Model, class OnToken = NoTokenCallback>
GenerateResult generate(const Model& model, std::span<const int64_t> prompt, const SamplingOptions& opt,
                        OnToken&& on_token = {}) {
  validate(opt);
  if (prompt.empty()) throw Error("generate: the prompt is empty (need at least one token)");
  using clock = std::chrono::steady_clock;
  auto ms_since = [](clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  };
  auto emit = [&](int64_t tok) -> bool {
    if constexpr (std::is_same_v<std::invoke_result_t<OnToken&, int64_t>, void>) {
      on_token(tok);
      return true;
    } else {
      return static_cast<bool>(on_token(tok));
    }
  };

  GenerateResult r;
  r.prompt_tokens = int64_t(prompt.size());
  if (opt.max_new_tokens == 0) return r;
  r.tokens.reserve(size_t(std::min<int64_t>(opt.max_new_tokens, 1 << 20)));
  std::mt19937_64 rng(opt.seed);
  auto state = model.new_state();
  Mat logits;

  // Prefill: the whole prompt at once, logits of its last position only.
  auto t0 = clock::now();
  model.forward(state, prompt, &logits, Logits::last);
  int64_t tok = sample_next(std::span<const float>(logits.data(), size_t(logits.cols())), opt, rng);
  r.prefill_ms = ms_since(t0);

  auto t1 = clock::now();
  for (;;) {
    r.tokens.push_back(tok);
    // Time spent in the callback (printing, ...) is not the model's: keep it out of the timings.
    const auto tc = clock::now();
    const bool go_on = emit(tok);
    t1 += clock::now() - tc;
    if (opt.eos_token_id && tok == *opt.eos_token_id) { r.stopped_at_eos = true; break; }
    if (!go_on) { r.stopped_by_callback = true; break; }
    if (int64_t(r.tokens.size()) >= opt.max_new_tokens) break;
    model.forward(state, std::span<const int64_t>(&tok, 1), &logits, Logits::last);
    tok = sample_next(std::span<const float>(logits.data(), size_t(logits.cols())), opt, rng);
  }
  r.decode_ms = std::max(0.0, ms_since(t1));
  return r;
}

/// What `generate_batch` produced: one GenerateResult per prompt (its tokens and why it stopped;
/// prefill_ms: its prompt's forward and first sampling; decode_ms: from the start of the batched
/// decode until it stopped) and the rate of the batch as a whole.
struct BatchGenerateResult {
  std::vector<GenerateResult> seqs;
  double prefill_ms = 0.0;   ///< every prompt's prefill
  double decode_ms = 0.0;    ///< the batched decode, until the last sequence stopped
  int64_t decode_steps = 0;  ///< batched forward steps (forward_rows calls)

  /// Tokens produced by the batched decode (every sequence's tokens but its first).
  int64_t decode_tokens() const {
    int64_t n = 0;
    for (const auto& s : seqs) n += s.decode_tokens();
    return n;
  }
  /// Decode throughput of the batch: new tokens of all sequences per second (prefill excluded).
  double tokens_per_second() const { return decode_ms > 0.0 ? 1000.0 * double(decode_tokens()) / decode_ms : 0.0; }
  double ms_per_step() const { return decode_steps > 0 ? decode_ms / double(decode_steps) : 0.0; }
};

/// Generate after each of B prompts at once (batched decode). Every prompt is prefilled on its
/// own (prompts may differ in length); then each step runs one token of every unfinished sequence
/// through `model.forward_rows`, which reads each weight once for all of them. Sequence b samples
/// with its own generator seeded `opt.seed + b`, so it gets what `generate` gives its prompt with
/// that seed, to the rounding of the batched products. `on_token(b, id)` is called for each new
/// token of sequence b; when it returns a bool, false stops sequence b (the others go on). Stops
/// at `opt.eos_token_id` and `opt.max_new_tokens` per sequence. Throws ttt::Error for invalid
/// options, no prompts or an empty prompt (naming it), and (from the model) ids outside the
/// vocabulary.
template <class Model, class OnToken>
BatchGenerateResult generate_batch(const Model& model, std::span<const std::vector<int64_t>> prompts,
                                   const SamplingOptions& opt, OnToken&& on_token) {
  validate(opt);
  if (prompts.empty()) throw Error("generate_batch: no prompts");
  for (size_t b = 0; b < prompts.size(); ++b)
    if (prompts[b].empty()) throw Error("generate_batch: prompt " + std::to_string(b) + " is empty (need at least one token)");
  using clock = std::chrono::steady_clock;
  auto ms_since = [](clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
  };
  auto emit = [&](size_t b, int64_t tok) -> bool {
    if constexpr (std::is_same_v<std::invoke_result_t<OnToken&, size_t, int64_t>, void>) {
      on_token(b, tok);
      return true;
    } else {
      return static_cast<bool>(on_token(b, tok));
    }
  };
  using State = decltype(model.new_state());
  const size_t B = prompts.size();
  BatchGenerateResult r;
  r.seqs.resize(B);
  if (opt.max_new_tokens == 0) {
    for (size_t b = 0; b < B; ++b) r.seqs[b].prompt_tokens = int64_t(prompts[b].size());
    return r;
  }
  std::vector<State> states;
  states.reserve(B);
  std::vector<std::mt19937_64> rngs;
  std::vector<int64_t> tok(B);
  Mat logits;
  auto row = [&](Eigen::Index j) { return std::span<const float>(logits.row(j).data(), size_t(logits.cols())); };
  for (size_t b = 0; b < B; ++b) {
    const auto t0 = clock::now();
    states.push_back(model.new_state());
    rngs.emplace_back(opt.seed + b);
    model.forward(states[b], std::span<const int64_t>(prompts[b]), &logits, Logits::last);
    tok[b] = sample_next(row(0), opt, rngs[b]);
    r.seqs[b].prompt_tokens = int64_t(prompts[b].size());
    r.seqs[b].prefill_ms = ms_since(t0);
    r.prefill_ms += r.seqs[b].prefill_ms;
  }

  std::vector<size_t> active(B), next;
  std::iota(active.begin(), active.end(), size_t(0));
  std::vector<State*> ptrs;
  std::vector<int64_t> ids;
  auto t1 = clock::now();
  while (!active.empty()) {
    next.clear();
    for (size_t b : active) {
      GenerateResult& s = r.seqs[b];
      s.tokens.push_back(tok[b]);
      const auto tc = clock::now();  // the callback's time is not the model's
      const bool go_on = emit(b, tok[b]);
      t1 += clock::now() - tc;
      if (opt.eos_token_id && tok[b] == *opt.eos_token_id) s.stopped_at_eos = true;
      else if (!go_on) s.stopped_by_callback = true;
      if (s.stopped_at_eos || s.stopped_by_callback || int64_t(s.tokens.size()) >= opt.max_new_tokens)
        s.decode_ms = std::max(0.0, ms_since(t1));
      else
        next.push_back(b);
    }
    active.swap(next);
    if (active.empty()) break;
    ptrs.clear();
    ids.clear();
    for (size_t b : active) ptrs.push_back(&states[b]), ids.push_back(tok[b]);
    model.forward_rows(std::span<State* const>(ptrs), std::span<const int64_t>(ids), &logits);
    ++r.decode_steps;
    for (size_t j = 0; j < active.size(); ++j) tok[active[j]] = sample_next(row(Eigen::Index(j)), opt, rngs[active[j]]);
  }
  r.decode_ms = std::max(0.0, ms_since(t1));
  return r;
}

}  // namespace ttt
