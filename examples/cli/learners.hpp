#pragma once
// The inner learners this `ttt` program knows: the library's built-in ones, plus a user's own when
// the program is built with ttt_add_cli (examples/CMakeLists.txt), which compiles these sources
// with TTT_CLI_LEARNERS_HEADER (the header that defines the learners) and TTT_CLI_EXTRA_LEARNERS
// (their type names, comma-separated). Every subcommand takes its learners from here: --layer's
// check and help, init, train, and the checkpoints that eval, generate, info and eval-loss load.
#include <tuple>

#include <ttt/inner/registry.hpp>
#include <ttt/models/any_model.hpp>

#ifdef TTT_CLI_LEARNERS_HEADER
#include TTT_CLI_LEARNERS_HEADER
#endif

namespace ttt_cli {

#ifdef TTT_CLI_EXTRA_LEARNERS
using Learners = decltype(std::tuple_cat(ttt::inner::Builtin{}, std::tuple<TTT_CLI_EXTRA_LEARNERS>{}));
#else
using Learners = ttt::inner::Builtin;
#endif

/// A TTT checkpoint of any of this program's learners.
using Model = ttt::AnyModelT<Learners>;

}  // namespace ttt_cli
