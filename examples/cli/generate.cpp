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
#include <span>
#include <utility>
#include <vector>

#include <ttt/core/parallel.hpp>
#include <ttt/core/weight_dtype.hpp>
#include <ttt/io/bpe_tokenizer.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/models/any_model.hpp>
#include <ttt/kernels/bf16.hpp>
#include <ttt/models/generate.hpp>
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/generate.hpp>
#include <ttt/models/hier/model.hpp>

#include "common.hpp"
#include "hier_model.hpp"
#include "learners.hpp"
#include "load.hpp"

namespace ttt_cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::vector<std::string> prompt_ids;  // one prompt per --prompt-ids
  std::vector<std::string> prompt;      // one prompt per --prompt
  int64_t num_samples = 1;              // sequences per prompt (seeds seed, seed + 1, ...)
  std::string tokenizer;  // tokenizer.json; empty: the byte tokenizer
  std::string dtype = "fp32";
  bool bf16_activations = false;  // --bf16-activations
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
std::vector<int64_t> prompt_tokens(const GenerateArgs& a, const std::optional<std::string>& text,
                                   std::vector<int64_t> prompt, const ttt::BpeTokenizer* bpe, int64_t V) {
  if (bpe != nullptr) {
    try {
      bpe->check_vocab(V);
    } catch (const ttt::Error& e) {
      throw ttt::Error(a.model + ": " + e.what());
    }
    if (text) prompt = bpe->encode(*text);
  } else if (text) {
    try {
      ttt::ByteTokenizer::check_vocab(V);
    } catch (const ttt::Error& e) {
      throw ttt::Error(std::string(e.what()) + "; use --prompt-ids or --tokenizer");
    }
    prompt = ttt::ByteTokenizer().encode(*text);
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

/// One prompt as given: its text (--prompt) or its ids (--prompt-ids).
struct PromptArg {
  std::optional<std::string> text;
  std::vector<int64_t> ids;
};

/// Hierarchical checkpoints: the original's sampler unless --greedy / --top-k / --top-p ask for
/// the library's; cached decode (hier::Decoder) while prompt + new tokens fit in seq_len, else the
/// original's full forward over the last seq_len tokens per token. Several prompts / samples run
/// one after the other, each line labelled "[i] ".
void generate_hier(const GenerateArgs& a, const ttt::SamplingOptions& opt, const std::vector<PromptArg>& prompts,
                   bool text) {
  if (!(a.filter_thres >= 0.0 && a.filter_thres < 1.0))
    throw UsageError("--filter-thres must be in [0, 1), got " + std::to_string(a.filter_thres));
  const auto bpe = load_tokenizer(a);
  const auto m = load_hier_model(a.model);
  std::vector<std::vector<int64_t>> ids;
  for (const PromptArg& p : prompts) ids.push_back(prompt_tokens(a, p.text, p.ids, bpe.get(), m.cfg.num_tokens));
  std::optional<int64_t> eos = a.eos;
  if (!eos && bpe && bpe->eos() >= 0) eos = bpe->eos();
  const bool library = a.greedy || a.top_k > 0 || a.top_p < 1.0f;
  const ttt::hier::Sampler sampler =
      library ? ttt::hier::library_sampler(opt) : ttt::hier::original_sampler(a.filter_thres, a.temperature);
  const int64_t total = int64_t(ids.size()) * a.num_samples;
  for (int64_t i = 0; i < total; ++i) {
    const std::vector<int64_t>& prompt = ids[size_t(i / a.num_samples)];
    std::mt19937_64 rng(a.seed + uint64_t(i));
    const auto t0 = std::chrono::steady_clock::now();
    const bool cached = int64_t(prompt.size()) + a.max_new_tokens <= m.cfg.seq_len;
    const std::vector<int64_t> out = cached ? ttt::hier::generate_cached(m, prompt, a.max_new_tokens, sampler, rng)
                                            : ttt::hier::generate(m, prompt, a.max_new_tokens, sampler, rng);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (total > 1) std::cout << "[" << i << "] ";
    TokenPrinter print(text, bpe.get(), prompt);
    for (int64_t id : out) {
      print(id);
      if (!a.ignore_eos && eos && id == *eos) break;
    }
    print.flush();
    std::cout << "\n";
    std::cout.flush();
    std::cerr << (total > 1 ? "[" + std::to_string(i) + "] " : std::string()) << "hierarchical: " << out.size()
              << " tokens in " << ms << " ms (" << (cached ? "cached decode" : "full forward per token") << ", "
              << (library ? "library sampler" : "top-k + Gumbel sampler") << ")\n";
  }
}

/// TTT checkpoints: the library's sampler; timings on stderr. One sequence streams its tokens as
/// they come; several (prompts x --num-samples) decode together (ttt::generate_batch: one batched
/// step per token reads each weight once for all of them) and print one labelled line each.
void generate_ttt(const GenerateArgs& a, ttt::SamplingOptions opt, const std::vector<PromptArg>& prompts, bool text) {
  const auto bpe = load_tokenizer(a);
  Model m = load_model(a.model);
  if (ttt::parse_weight_dtype(a.dtype, "--dtype") == ttt::WeightDtype::bf16) {
    m.set_weight_dtype(ttt::WeightDtype::bf16);
    std::cerr << "weights: bf16 (" << ttt::kernels::bf16_kernel_name(ttt::kernels::bf16_kernel_chosen())
              << " kernel)\n";
  }
  std::vector<std::vector<int64_t>> seqs;  // prompt p's samples are p * num_samples ...
  for (const PromptArg& p : prompts) {
    std::vector<int64_t> ids = prompt_tokens(a, p.text, p.ids, bpe.get(), m.cfg().vocab_size);
    for (int64_t k = 0; k < a.num_samples; ++k) seqs.push_back(ids);
  }
  if (!a.ignore_eos) {
    if (a.eos) opt.eos_token_id = *a.eos;
    else if (bpe && bpe->eos() >= 0) opt.eos_token_id = bpe->eos();  // the tokenizer's ids, not the config's
    else if (m.cfg().eos_token_id >= 0) opt.eos_token_id = m.cfg().eos_token_id;
  }
  char line[320];
  if (seqs.size() == 1) {
    TokenPrinter print(text, bpe.get(), seqs[0]);
    const ttt::GenerateResult r = ttt::generate(m, seqs[0], opt, [&](int64_t id) {
      print(id);
      std::cout.flush();
    });
    print.flush();
    std::cout << "\n";
    std::cout.flush();
    std::snprintf(line, sizeof line,
                  "prefill: %lld tokens, %.2f ms | decode: %lld tokens, %.3f ms/token, %.1f tokens/s%s\n",
                  static_cast<long long>(r.prompt_tokens), r.prefill_ms, static_cast<long long>(r.decode_tokens()),
                  r.decode_ms_per_token(), r.tokens_per_second(), r.stopped_at_eos ? " | stopped at EOS" : "");
    std::cerr << line;
    return;
  }
  const ttt::BatchGenerateResult r =
      ttt::generate_batch(m, std::span<const std::vector<int64_t>>(seqs), opt, [](size_t, int64_t) {});
  int64_t prompt_tokens_total = 0, at_eos = 0;
  for (size_t b = 0; b < seqs.size(); ++b) {
    std::cout << "[" << b << "] ";
    TokenPrinter print(text, bpe.get(), seqs[b]);
    for (int64_t id : r.seqs[b].tokens) print(id);
    print.flush();
    std::cout << "\n";
    prompt_tokens_total += r.seqs[b].prompt_tokens;
    at_eos += r.seqs[b].stopped_at_eos ? 1 : 0;
  }
  std::cout.flush();
  std::snprintf(line, sizeof line,
                "prefill: %zu prompts, %lld tokens, %.2f ms | batched decode: %zu sequences, %lld steps, %.3f ms/step, "
                "%lld tokens, %.1f tokens/s%s\n",
                seqs.size(), static_cast<long long>(prompt_tokens_total), r.prefill_ms, seqs.size(),
                static_cast<long long>(r.decode_steps), r.ms_per_step(), static_cast<long long>(r.decode_tokens()),
                r.tokens_per_second(), at_eos > 0 ? (" | " + std::to_string(at_eos) + " stopped at EOS").c_str() : "");
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
  const bool text = !a.prompt.empty() || !a.tokenizer.empty();
  std::vector<PromptArg> prompts;
  for (size_t i = 0; i < a.prompt.size(); ++i) {
    if (a.prompt[i].empty())
      throw UsageError(a.prompt.size() > 1 ? "--prompt: prompt " + std::to_string(i + 1) + " is empty"
                                           : std::string("--prompt: the prompt is empty"));
    prompts.push_back({a.prompt[i], {}});
  }
  for (const std::string& ids : a.prompt_ids) prompts.push_back({std::nullopt, parse_id_list(ids)});
  ttt::set_inner_threads(a.threads);
  setup_dtype(a.dtype, a.bf16_activations, a.model);
  if (is_hier_checkpoint(a.model)) generate_hier(a, opt, prompts, text);
  else generate_ttt(a, opt, prompts, text);
  return 0;
}

}  // namespace

Command add_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* sub = app.add_subcommand(
      "generate", "Generate tokens after a prompt (ids, or text with the byte tokenizer or a tokenizer.json).");
  sub->add_option("--model", a->model, "Checkpoint folder")->required();
  CLI::Option* o_ids = sub->add_option("--prompt-ids", a->prompt_ids,
                                       "Prompt token ids, e.g. 1,2,3 (give it again for more prompts: they decode together)")
                           ->expected(1)
                           ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  CLI::Option* o_text = sub->add_option("--prompt", a->prompt,
                                        "Prompt text (byte-level tokenizer, needs vocab_size >= 256; or the --tokenizer); "
                                        "give it again for more prompts: they decode together")
                            ->expected(1)
                            ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  o_ids->excludes(o_text);
  sub->add_option("--num-samples", a->num_samples,
                  "Sequences per prompt, sampled with seeds --seed, --seed + 1, ...; several sequences decode together "
                  "(one batched step per token) and print one line each, labelled [i]")
      ->check(CLI::Range(int64_t(1), int64_t(4096)))
      ->capture_default_str();
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
  add_dtype_option(sub, a->dtype, a->bf16_activations);
  return {sub, [a, o_ids, o_text] {
            if (o_ids->count() == 0 && o_text->count() == 0) throw UsageError("give the prompt with --prompt-ids or --prompt");
            return run_generate(*a);
          }};
}

}  // namespace ttt_cli
