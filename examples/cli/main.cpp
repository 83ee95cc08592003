// ttt: the command-line tool of the ttt library.
//
//   ttt info     --model DIR                                   what a checkpoint holds
//   ttt eval     --model DIR --input IN.safetensors --out OUT.safetensors [--threads N] [--grads]
//   ttt generate --model DIR (--prompt-ids 1,2,3 | --prompt TEXT) [--tokenizer tokenizer.json] [--max-new-tokens N] [sampling]
//     (hierarchical checkpoints: the original's top-k + Gumbel sampler, --filter-thres, and cached decode)
//   ttt init     --out DIR [--layer linear|mlp] [--hidden ...]  a random checkpoint
//   ttt train    --data PATH --out DIR [--layer ...] [--steps N] [--resume] ...  train on bytes
//                [--arch hier [--hierarchies 1,2,8 --window-sizes 16,16,none --mixer ...] [--config FILE.json]]
//   ttt eval-loss --model DIR --data PATH --seq-len N [--out FILE.csv]  loss per token position
//   ttt tokenize --tokenizer tokenizer.json (--text TEXT | --ids 1,2,3) [--no-bos]  text <-> ids (Llama-2 BPE)
//
// One file per subcommand (info.cpp, eval.cpp, ...): each registers its options with add_<name>
// and runs; a subcommand that reads checkpoints handles both kinds (TTT and hierarchical) itself.
//
// Exit status: 0 on success (and for --help), 2 for a wrong flag or a bad value, 1 for any other
// error (unreadable or malformed file, ids outside the vocabulary, ...). Errors are one line on
// stderr: "ttt SUBCOMMAND: what went wrong".
#include <exception>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include <ttt/core/config.hpp>
#include <ttt/core/error.hpp>
#include <ttt/kernels/simd_table.hpp>

#include "common.hpp"

using namespace ttt_cli;

int main(int argc, char** argv) {
  CLI::App app{"ttt: Test-Time Training (TTT) language models: inspect, evaluate, generate, initialise, train, tokenize.", "ttt"};
  app.require_subcommand(1, 1);
  std::string simd;  // the xsimd kernels' instruction sets this program holds and this CPU runs
  for (const std::string& name : ttt::kernels::simd_names()) simd += (simd.empty() ? "" : ", ") + name;
  app.set_version_flag("--version", "ttt " + std::to_string(TTT_VERSION_MAJOR) + "." +
                                        std::to_string(TTT_VERSION_MINOR) + "." + std::to_string(TTT_VERSION_PATCH) +
                                        " (SIMD kernels, best first: " + simd + "; TTT_SIMD=<name> picks one)");
  app.footer("Exit status: 0 ok, 1 error (bad file, bad tensor, ...), 2 bad command line.");

  const std::vector<Command> commands = {add_info(app),  add_eval(app),  add_generate(app),     add_init(app),
                                         add_train(app), add_eval_loss(app), add_tokenize(app)};

  auto prefix = [&]() -> std::string {
    for (const Command& c : commands)
      if (c.app->parsed()) return "ttt " + c.app->get_name() + ": ";
    return "ttt: ";
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string msg = one_line(e.what());
    // CLI11 checks required options before unknown ones; an unknown flag is the better reason.
    std::vector<std::string> extra = app.remaining();
    for (const Command& c : commands)
      if (c.app->parsed())
        for (const std::string& r : c.app->remaining()) extra.push_back(r);
    if (!extra.empty() && !dynamic_cast<const CLI::ExtrasError*>(&e)) {
      msg = "unknown argument";
      msg += extra.size() > 1 ? "s:" : ":";
      for (const std::string& r : extra) msg += " " + r;
    }
    if (msg.empty()) msg = e.get_name();
    std::cerr << prefix() << msg << " (see --help)\n";
    return 2;
  }

  try {
    ttt::kernels::simd_kernels();  // a bad TTT_SIMD fails here, before any work
    for (const Command& c : commands)
      if (c.app->parsed()) return c.run();
    throw UsageError("no subcommand (info, eval, generate, init, train, eval-loss, tokenize)");
  } catch (const UsageError& e) {
    std::cerr << prefix() << one_line(e.what()) << " (see --help)\n";
    return 2;
  } catch (const ttt::Error& e) {
    std::cerr << prefix() << one_line(e.what()) << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << prefix() << "out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << prefix() << one_line(e.what()) << "\n";
    return 1;
  }
}
