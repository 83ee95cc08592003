// ttt tokenize: text to token ids and back with a Hugging Face tokenizer.json (a BPE tokenizer of
// the Llama-2 kind, io/bpe_tokenizer.hpp; scripts/setup.sh --llama-tokenizer puts Llama-2's and
// Mistral's in data/).
//
//   ttt tokenize --tokenizer data/llama2/tokenizer.json --text "Hello world!"      1,15043,3186,29991
//   ttt tokenize --tokenizer data/llama2/tokenizer.json --ids 1,15043,3186,29991   Hello world!
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ttt/io/bpe_tokenizer.hpp>

#include "common.hpp"

namespace ttt_cli {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::optional<std::string> text, ids;
  bool no_bos = false, show_specials = false;
};

int run_tokenize(const TokenizeArgs& a) {
  // The flags first (exit 2), then the file (exit 1).
  std::vector<int64_t> ids;
  if (a.ids) {
    try {
      ids = parse_id_list(*a.ids);
    } catch (const UsageError& e) {  // parse_id_list names --prompt-ids, generate's flag
      std::string msg = e.what();
      const std::string generate_flag = "--prompt-ids";
      if (msg.rfind(generate_flag, 0) == 0) msg = "--ids" + msg.substr(generate_flag.size());
      throw UsageError(msg);
    }
  }
  const ttt::BpeTokenizer tok = ttt::BpeTokenizer::load(a.tokenizer);
  if (a.text) {
    const std::vector<int64_t> out = tok.encode(*a.text, !a.no_bos);
    for (size_t i = 0; i < out.size(); ++i) std::cout << (i ? "," : "") << out[i];
    std::cout << "\n";
  } else {
    std::cout << tok.decode(ids, a.show_specials) << "\n";
  }
  return 0;
}

}  // namespace

Command add_tokenize(CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  CLI::App* sub = app.add_subcommand(
      "tokenize", "Text to token ids (comma-separated) or ids to text, with a Hugging Face tokenizer.json (BPE: Llama-2, Mistral).");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer.json (e.g. data/llama2/tokenizer.json from scripts/setup.sh --llama-tokenizer)")
      ->required();
  CLI::Option* o_text = sub->add_option("--text", a->text, "Text to encode; prints its ids, BOS first");
  CLI::Option* o_ids = sub->add_option("--ids", a->ids, "Token ids to decode, e.g. 1,15043,3186,29991; prints the text");
  o_text->excludes(o_ids);
  sub->add_flag("--no-bos", a->no_bos, "--text: no BOS (nor other special tokens of the tokenizer's template)")->excludes(o_ids);
  sub->add_flag("--show-specials", a->show_specials, "--ids: print special tokens (<s>, </s>) instead of leaving them out")
      ->excludes(o_text);
  return {sub, [a, o_text, o_ids] {
            if (o_text->count() == 0 && o_ids->count() == 0) throw UsageError("give --text TEXT or --ids 1,2,3");
            return run_tokenize(*a);
          }};
}

}  // namespace ttt_cli
