// ttt init: a randomly initialised TTT checkpoint (config.json + model.safetensors), of the sizes
// given by flags or of an official standard configuration (--preset 125m|350m|760m|1b).
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <ttt/core/error.hpp>
#include <ttt/core/presets.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/models/any_model.hpp>

#include "common.hpp"
#include "learners.hpp"

namespace ttt_cli {
namespace {

struct InitArgs {
  std::string out;
  std::string layer = "linear", preset;
  int64_t hidden = 64, layers = 2, heads = 4, vocab = ttt::ByteTokenizer::vocab_size, intermediate = 0;
  int64_t mini_batch = 16, max_position = 2048, conv_kernel = 4;
  uint64_t seed = 0;
  double base_lr = 1.0, rope_theta = 10000.0;
  bool pre_conv = false, share_qk = false, use_gate = false, untie = false, force = false;
  UpdateFlags update;
};

int run_init(const InitArgs& a, bool vocab_given) {
  ttt::ModelConfig c;
  if (!a.preset.empty()) {  // TTTConfig(**TTT_STANDARD_CONFIGS[name]): vocab 32000, BOS 1, EOS 2
    c = ttt::standard_config(a.preset, a.layer);
    if (vocab_given) c.vocab_size = a.vocab;
  } else {
    c.ttt_layer_type = a.layer;
    c.hidden_size = a.hidden;
    c.num_hidden_layers = a.layers;
    c.num_attention_heads = a.heads;
    c.vocab_size = a.vocab;
    c.intermediate_size = a.intermediate > 0 ? a.intermediate : default_intermediate(a.hidden);
  }
  c.mini_batch_size = a.mini_batch;
  c.max_position_embeddings = a.max_position;
  c.conv_kernel = a.conv_kernel;
  c.ttt_base_lr = a.base_lr;
  c.rope_theta = a.rope_theta;
  c.pre_conv = a.pre_conv;
  c.share_qk = a.share_qk;
  c.use_gate = a.use_gate;
  c.tie_word_embeddings = !a.untie;
  apply_update_flags(a.update, c);
  if (a.preset.empty() && c.vocab_size >= ttt::ByteTokenizer::vocab_size) {  // room for the byte tokenizer's specials
    c.bos_token_id = ttt::ByteTokenizer::bos;
    c.eos_token_id = ttt::ByteTokenizer::eos;
    c.pad_token_id = ttt::ByteTokenizer::pad;
  }
  try {
    c.validate("model config");
  } catch (const ttt::ConfigError& e) {
    throw UsageError(e.what());
  }
  check_update(c);
  const std::filesystem::path out(a.out);
  if (!a.force && std::filesystem::exists(out / "config.json"))
    throw UsageError("--out: " + (out / "config.json").string() + " exists; pass --force to overwrite");
  Model m = Model::create(c, a.seed);
  m.save(out);
  std::cout << "wrote " << out.string() << " (" << m.learner() << ", " << m.num_params() << " parameters)\n";
  return 0;
}

}  // namespace

Command add_init(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* sub = app.add_subcommand("init", "Write a randomly initialised checkpoint (config.json + model.safetensors).");
  sub->add_option("--out", a->out, "Checkpoint folder to write (created)")->required();
  sub->add_option("--layer", a->layer, "Inner learner")->check(CLI::IsMember(learner_names()))->capture_default_str();
  CLI::Option* preset =
      sub->add_option("--preset", a->preset,
                      "An official standard configuration (TTT_STANDARD_CONFIGS): sizes, vocab_size 32000 (the Llama-2 "
                      "tokenizer's), BOS 1, EOS 2; other flags apply on top")
          ->check(CLI::IsMember({"125m", "350m", "760m", "1b"}));
  sub->add_option("--hidden", a->hidden, "hidden_size")->capture_default_str()->excludes(preset);
  sub->add_option("--layers", a->layers, "num_hidden_layers")->capture_default_str()->excludes(preset);
  sub->add_option("--heads", a->heads, "num_attention_heads")->capture_default_str()->excludes(preset);
  CLI::Option* vocab =
      sub->add_option("--vocab", a->vocab, "vocab_size (>= 259 fits the byte tokenizer; --preset: 32000)")
          ->check(positive_number())->capture_default_str();
  sub->add_option("--intermediate", a->intermediate, "intermediate_size (0 = about 8/3 of hidden)")
      ->check(non_negative_number())->capture_default_str()->excludes(preset);
  sub->add_option("--mini-batch", a->mini_batch, "mini_batch_size")->capture_default_str();
  sub->add_option("--max-position", a->max_position, "max_position_embeddings")->check(positive_number())->capture_default_str();
  sub->add_option("--conv-kernel", a->conv_kernel, "conv_kernel")->capture_default_str();
  sub->add_option("--base-lr", a->base_lr, "ttt_base_lr")->check(finite_number())->capture_default_str();
  sub->add_option("--rope-theta", a->rope_theta, "rope_theta")->check(finite_number())->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the random initialisation")->capture_default_str();
  sub->add_flag("--pre-conv", a->pre_conv, "pre_conv = true (Mamba backbone)");
  sub->add_flag("--share-qk", a->share_qk, "share_qk = true");
  sub->add_flag("--use-gate", a->use_gate, "use_gate = true");
  sub->add_flag("--untie", a->untie, "tie_word_embeddings = false (separate lm_head)");
  sub->add_flag("--force", a->force, "Overwrite an existing checkpoint");
  add_update_flags(sub, a->update);
  return {sub, [a, vocab] { return run_init(*a, vocab->count() > 0); }};
}

}  // namespace ttt_cli
