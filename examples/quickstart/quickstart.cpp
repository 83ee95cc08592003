// The quick start of ttt-lm-pytorch's README, step for step in C++: a configuration, a model, the
// Llama-2 tokenizer, a prefill, generation, the text.
//   quickstart [125m|350m|760m|1b] [tokenizer.json]      (defaults: 1b, data/llama2/tokenizer.json)
// The tokenizer comes from `scripts/setup.sh --llama-tokenizer`. The weights are random (as the
// original's are at this point), so the text is noise; load trained ones with
// ttt::load_checkpoint<ttt::TTTModel<ttt::inner::Linear>>(folder) instead.
#include <iostream>
#include <vector>

#include <ttt/ttt.hpp>

int main(int argc, char** argv) try {
  // configuration = TTTConfig()  (== TTTConfig(**TTT_STANDARD_CONFIGS['1b']); 1b needs 5 GB)
  const ttt::ModelConfig configuration = ttt::standard_config(argc > 1 ? argv[1] : "1b");
  ttt::TTTModel<ttt::inner::Linear> model(configuration);  // model = TTTForCausalLM(configuration)
  model.init_weights(0);
  auto tokenizer = ttt::BpeTokenizer::load(argc > 2 ? argv[2] : "data/llama2/tokenizer.json");
  tokenizer.check_vocab(configuration.vocab_size);
  // prefill: input_ids = tokenizer("Greeting from TTT!").input_ids; logits = model(input_ids)
  const std::vector<int64_t> input_ids = tokenizer.encode("Greeting from TTT!");
  const ttt::Mat logits = model.forward(input_ids);
  std::cout << "logits: " << logits.rows() << " x " << logits.cols() << "\n";
  // decoding: out_ids = model.generate(input_ids, max_length=50); tokenizer.batch_decode(out_ids)
  const auto out = ttt::generate(model, input_ids,
                                 {.greedy = true, .max_new_tokens = 50 - int64_t(input_ids.size()),
                                  .eos_token_id = configuration.eos_token_id});
  std::vector<int64_t> out_ids = input_ids;
  out_ids.insert(out_ids.end(), out.tokens.begin(), out.tokens.end());
  std::cout << tokenizer.decode(out_ids) << "\n";
} catch (const std::exception& e) {
  std::cerr << "quickstart: " << e.what() << "\n";
  return 1;
}
