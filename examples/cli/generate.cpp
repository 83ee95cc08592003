// ttt generate: tokens after a prompt (ids, or text with the byte tokenizer or, with --tokenizer,
// a Hugging Face tokenizer.json such as Llama-2's). TTT checkpoints stream tokens through the
// library's sampler; hierarchical checkpoints use the original's sampler (top 1 - filter_thres of
// the logits, Gumbel noise) unless a library sampling flag is given.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ttt/core/parallel.hpp>
#include <ttt/io/bpe_tokenizer.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/models/any_model.hpp>
#include <ttt/models/generate.hpp>
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/generate.hpp>
#include <ttt/models/hier/model.hpp>

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"

namespace ttt_cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt_ids;
  std::optional<std::string> prompt;
  std::string tokenizer;  // tokenizer.json; empty: the byte tokenizer
  int64_t max_new_tokens = 32;
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  bool greedy = false;
  std::optional<int64_t> eos;
  bool ignore_eos = false;
  int threads = 0;
  double filter_thres = 0.9;  // hierarchical checkpoints: the original's sampler
};

/// The prompt as token ids: the encoding of --prompt (by `bpe`, BOS first, or else by the byte
/// tokenizer) or the --prompt-ids, each checked against the model's vocabulary of V tokens; `bpe`
/// must have exactly V tokens.
std::vector<int64_t> prompt_tokens(const GenerateArgs& a, std::vector<int64_t> prompt, const ttt::BpeTokenizer* bpe,
                                   int64_t V) {
  if (bpe != nullptr) {
    try {
      bpe->check_vocab(V);
    } catch (const ttt::Error& e) {
      throw ttt::Error(a.model + ": " + e.what());
    }
    if (a.prompt) prompt = bpe->encode(*a.prompt);
  } else if (a.prompt) {
    try {
      ttt::ByteTokenizer::check_vocab(V);
    } catch (const ttt::Error& e) {
      throw ttt::Error(std::string(e.what()) + "; use --prompt-ids or --tokenizer");
    }
    prompt = ttt::ByteTokenizer().encode(*a.prompt);
  }
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= V)
      throw ttt::ShapeError("--prompt-ids: token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                            " is outside the vocabulary [0, " + std::to_string(V) + ") of " + a.model);
  return prompt;
}

/// Prints generated tokens on stdout: their text (specials shown) or their ids, separated by
/// spaces. With a BPE tokenizer a token's text depends on its neighbours (the space of "▁", a
/// character's bytes over several tokens), so the printer decodes the prompt's last character
/// and the tokens so far and prints what the text gained, holding back while the last token is
/// a byte token.
struct TokenPrinter {
  TokenPrinter(bool text, const ttt::BpeTokenizer* bpe, const std::vector<int64_t>& prompt) : text(text), bpe(bpe) {
    if (bpe == nullptr || prompt.empty()) return;
    size_t from = prompt.size() - 1;  // the last token, with the bytes of its character before it
    while (from > 0 && bpe->is_byte_token(prompt[from]) && bpe->is_byte_token(prompt[from - 1])) --from;
    ids.assign(prompt.begin() + static_cast<std::ptrdiff_t>(from), prompt.end());
    printed = bpe->decode(ids, /*show_specials=*/true).size();
  }
  bool text;
  const ttt::BpeTokenizer* bpe;
  std::vector<int64_t> ids;  // BPE: the prompt's last character + the generated tokens
  size_t printed = 0;        // BPE: bytes of their decoded text shown so far (the prompt's included)
  bool first = true;
  ttt::ByteTokenizer tok;
  void operator()(int64_t id) {
    if (bpe != nullptr) {
      ids.push_back(id);
      if (!bpe->is_byte_token(id)) flush();
    } else if (text) {
      std::cout << tok.token_text(id, /*show_specials=*/true);
    } else {
      std::cout << (first ? "" : " ") << id;
    }
    first = false;
  }
  /// BPE: the text not printed yet (at the end: also an unfinished character, as U+FFFD).
  void flush() {
    if (bpe == nullptr) return;
    const std::string all = bpe->decode(ids, /*show_specials=*/true);
    if (all.size() > printed) std::cout << std::string_view(all).substr(printed);
    printed = std::max(printed, all.size());
  }
};

/// --tokenizer, read before the model (its errors name the file).
std::unique_ptr<ttt::BpeTokenizer> load_tokenizer(const GenerateArgs& a) {
  if (a.tokenizer.empty()) return nullptr;
  return std::make_unique<ttt::BpeTokenizer>(ttt::BpeTokenizer::load(a.tokenizer));
}

/// Hierarchical checkpoints: the original's sampler unless --greedy / --top-k / --top-p ask for
/// the library's; cached decode (hier::Decoder) while prompt + new tokens fit in seq_len, else the
/// original's full forward over the last seq_len tokens per token.
void generate_hier(const GenerateArgs& a, const ttt::SamplingOptions& opt, std::vector<int64_t> prompt, bool text) {
  if (!(a.filter_thres >= 0.0 && a.filter_thres < 1.0))
    throw UsageError("--filter-thres must be in [0, 1), got " + std::to_string(a.filter_thres));
  const auto bpe = load_tokenizer(a);
  const auto m = HierModel::load(a.model);
  prompt = prompt_tokens(a, std::move(prompt), bpe.get(), m.cfg.num_tokens);
  std::optional<int64_t> eos = a.eos;
  if (!eos && bpe && bpe->eos() >= 0) eos = bpe->eos();
  const bool library = a.greedy || a.top_k > 0 || a.top_p < 1.0f;
  const ttt::hier::Sampler sampler =
      library ? ttt::hier::library_sampler(opt) : ttt::hier::original_sampler(a.filter_thres, a.temperature);
  std::mt19937_64 rng(a.seed);
  const auto t0 = std::chrono::steady_clock::now();
  const bool cached = int64_t(prompt.size()) + a.max_new_tokens <= m.cfg.seq_len;
  const std::vector<int64_t> out = cached ? ttt::hier::generate_cached(m, prompt, a.max_new_tokens, sampler, rng)
                                          : ttt::hier::generate(m, prompt, a.max_new_tokens, sampler, rng);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  TokenPrinter print(text, bpe.get(), prompt);
  for (int64_t id : out) {
    print(id);
    if (!a.ignore_eos && eos && id == *eos) break;
  }
  print.flush();
  std::cout << "\n";
  std::cout.flush();
  std::cerr << "hierarchical: " << out.size() << " tokens in " << ms << " ms (" << (cached ? "cached decode" : "full forward per token")
            << ", " << (library ? "library sampler" : "top-k + Gumbel sampler") << ")\n";
}

/// TTT checkpoints: the library's sampler, tokens printed as they come; timings on stderr.
void generate_ttt(const GenerateArgs& a, ttt::SamplingOptions opt, std::vector<int64_t> prompt, bool text) {
  const auto bpe = load_tokenizer(a);
  Model m = Model::load(a.model);
  prompt = prompt_tokens(a, std::move(prompt), bpe.get(), m.cfg().vocab_size);
  if (!a.ignore_eos) {
    if (a.eos) opt.eos_token_id = *a.eos;
    else if (bpe && bpe->eos() >= 0) opt.eos_token_id = bpe->eos();  // the tokenizer's ids, not the config's
    else if (m.cfg().eos_token_id >= 0) opt.eos_token_id = m.cfg().eos_token_id;
  }
  TokenPrinter print(text, bpe.get(), prompt);
  const ttt::GenerateResult r = ttt::generate(m, prompt, opt, [&](int64_t id) {
    print(id);
    std::cout.flush();
  });
  print.flush();
  std::cout << "\n";
  std::cout.flush();
  char line[256];
  std::snprintf(line, sizeof line,
                "prefill: %lld tokens, %.2f ms | decode: %lld tokens, %.3f ms/token, %.1f tokens/s%s\n",
                static_cast<long long>(r.prompt_tokens), r.prefill_ms, static_cast<long long>(r.decode_tokens()),
                r.decode_ms_per_token(), r.tokens_per_second(), r.stopped_at_eos ? " | stopped at EOS" : "");
  std::cerr << line;
}

int run_generate(const GenerateArgs& a) {
  // Everything about the flags is checked before the model is read.
  ttt::SamplingOptions opt;
  opt.temperature = a.temperature;
  opt.top_k = a.top_k;
  opt.top_p = a.top_p;
  opt.seed = a.seed;
  opt.greedy = a.greedy;
  opt.max_new_tokens = a.max_new_tokens;
  try {
    ttt::validate(opt);
  } catch (const ttt::Error& e) {
    std::string msg = e.what();
    static const std::pair<std::string, std::string> flags[] = {
        {"temperature", "--temperature"}, {"top_k", "--top-k"}, {"top_p", "--top-p"},
        {"max_new_tokens", "--max-new-tokens"}};
    for (const auto& [field, flag] : flags)
      if (msg.rfind(field, 0) == 0) msg = flag + msg.substr(field.size());
    throw UsageError(msg);
  }
  const bool text = a.prompt.has_value() || !a.tokenizer.empty();
  std::vector<int64_t> prompt;
  if (a.prompt) {
    if (a.prompt->empty()) throw UsageError("--prompt: the prompt is empty");
  } else {
    prompt = parse_id_list(a.prompt_ids);
  }
  ttt::set_inner_threads(a.threads);
  if (is_hier_checkpoint(a.model)) generate_hier(a, opt, std::move(prompt), text);
  else generate_ttt(a, opt, std::move(prompt), text);
  return 0;
}

}  // namespace

Command add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand(
      "generate", "Generate tokens after a prompt (ids, or text with the byte tokenizer or a tokenizer.json).");
  sub->add_option("--model", a->model, "Checkpoint folder")->required();
  CLI::Option* o_ids = sub->add_option("--prompt-ids", a->prompt_ids, "Prompt token ids, e.g. 1,2,3");
  CLI::Option* o_text = sub->add_option(
      "--prompt", a->prompt, "Prompt text (byte-level tokenizer, needs vocab_size >= 256; or the --tokenizer)");
  o_ids->excludes(o_text);
  sub->add_option("--tokenizer", a->tokenizer,
                  "Hugging Face tokenizer.json (BPE: Llama-2, Mistral) for --prompt and the printed text; the model's "
                  "vocab_size must be its number of tokens; its </s> is the default --eos");
  sub->add_option("--max-new-tokens", a->max_new_tokens, "Number of tokens to generate (at most)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40))
      ->capture_default_str();
  sub->add_option("--temperature", a->temperature, "Softmax temperature (0 = greedy)")->check(finite_number())->capture_default_str();
  sub->add_option("--top-k", a->top_k, "Sample among the k most likely tokens (0 = all)")->capture_default_str();
  sub->add_option("--top-p", a->top_p, "Nucleus sampling: smallest set with probability >= p, p in (0, 1]")
      ->check(finite_number())
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Random seed")->capture_default_str();
  sub->add_flag("--greedy", a->greedy, "Always take the most likely token");
  CLI::Option* o_eos = sub->add_option(
      "--eos", a->eos, "Stop after this token (default: the --tokenizer's </s>, else eos_token_id of the config)");
  sub->add_flag("--ignore-eos", a->ignore_eos, "Do not stop at an end-of-sequence token")->excludes(o_eos);
  sub->add_option("--filter-thres", a->filter_thres,
                  "Hierarchical checkpoints: keep the top (1 - t) of the logits, then Gumbel sampling at --temperature "
                  "(the original's sampler; --greedy / --top-k / --top-p use the library's instead)")
      ->capture_default_str();
  sub->add_option("--threads", a->threads, "Threads of the per-head loops (0 = default)")->check(CLI::Range(0, 4096));
  return {sub, [a, o_ids, o_text] {
            if (o_ids->count() == 0 && o_text->count() == 0) throw UsageError("give the prompt with --prompt-ids or --prompt");
            return run_generate(*a);
          }};
}

}  // namespace ttt_cli
