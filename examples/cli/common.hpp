#pragma once
// What the subcommands of `ttt` share: the error kinds and messages, small parsers, checkpoint
// kind detection, and the one entry point per subcommand (add_<name>) that main.cpp calls.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace ttt::train {
class Communicator;
}

namespace ttt_cli {

/// A bad value given on the command line: exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Messages are printed on one line.
std::string one_line(std::string s);

/// "1,2, 3" -> {1, 2, 3}; UsageError (naming --prompt-ids) for anything else.
std::vector<int64_t> parse_id_list(const std::string& s);

/// A simple-hierarchical-transformer checkpoint (config.json "model_type"): every subcommand
/// that takes --model picks the model from it.
bool is_hier_checkpoint(const std::string& dir);

/// The names of this program's inner learners (learners.hpp: "linear", "mlp" and any a user
/// added), for --layer's check and help.
std::vector<std::string> learner_names();

/// The inner update's flags (--inner-optimizer, --inner-beta, --ns-steps, --query-order,
/// --swiglu-hidden), shared by init and train; each is written into the config only when given, so
/// that ModelConfig::validate names a flag that contradicts the optimizer.
struct UpdateFlags {
  std::string optimizer = "gd", order = "after";
  double beta = 0.9;
  int64_t ns_steps = 5, hidden = 0;
};
void add_update_flags(CLI::App* app, UpdateFlags& u);
/// Copies the flags into the config's ttt_inner_optimizer, ttt_inner_beta, ttt_ns_steps,
/// ttt_query_order and ttt_hidden_size.
template <class Config>
void apply_update_flags(const UpdateFlags& u, Config& c) {
  c.ttt_inner_optimizer = u.optimizer;
  c.ttt_inner_beta = u.beta;
  c.ttt_ns_steps = u.ns_steps;
  c.ttt_query_order = u.order;
  c.ttt_hidden_size = u.hidden;
}
/// The flags of add_update_flags (for train's --arch checks).
inline const std::vector<std::string> kUpdateFlags = {"--inner-optimizer", "--inner-beta", "--ns-steps",
                                                      "--query-order", "--swiglu-hidden"};

/// The processes `mpirun -np N` started this one among, joined over MPI (processes.cpp); nullptr
/// when it runs alone. Built without MPI and started as one of N > 1: UsageError.
std::shared_ptr<ttt::train::Communicator> join_processes();

/// --dtype fp32|bf16 (the weights' precision, core/weight_dtype.hpp) and --bf16-activations (the
/// large bf16 products round their activations too: kernels::set_bf16_activations) on a subcommand
/// that runs a model. `setup_dtype` checks them against the checkpoint and this CPU (UsageError:
/// bf16 with a hierarchical checkpoint, which has no bf16 path; --bf16-activations without --dtype
/// bf16 or without AVX512_BF16) and then sets the activations' rounding.
void add_dtype_option(CLI::App* app, std::string& dtype, bool& bf16_activations);
void setup_dtype(const std::string& dtype, bool bf16_activations, const std::string& model);

/// CLI11 validators: a finite number; a number > 0; a number >= 0 (CLI11's PositiveNumber and
/// NonNegativeNumber name the largest double in their message; these say "must be > 0, got -1").
const CLI::Validator& finite_number();
const CLI::Validator& positive_number();
const CLI::Validator& non_negative_number();

/// Default intermediate_size: about 8/3 of the hidden size (SwiGLU), a multiple of 16.
inline int64_t default_intermediate(int64_t hidden) { return std::max<int64_t>(16, (hidden * 8 / 3 + 15) / 16 * 16); }

/// A subcommand: its CLI11 app, and what runs it once the command line is parsed (returns the
/// exit status; throws UsageError, ttt::Error, ... which main() reports).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

// One per subcommand, in the order `ttt --help` lists them; each registers its options on `app`.
Command add_info(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_generate(CLI::App& app);
Command add_init(CLI::App& app);
Command add_train(CLI::App& app);
Command add_eval_loss(CLI::App& app);
Command add_tokenize(CLI::App& app);

}  // namespace ttt_cli
