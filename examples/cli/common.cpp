#include "common.hpp"
#include "learners.hpp"

#include <charconv>
#include <cmath>
#include <exception>
#include <filesystem>
#include <optional>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include <ttt/core/weight_dtype.hpp>
#include <ttt/kernels/bf16.hpp>
#include <ttt/inner/optimizers.hpp>
#include <ttt/inner/registry.hpp>
#include <ttt/io/file.hpp>
#include <ttt/models/hier/config.hpp>

namespace ttt_cli {

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::vector<int64_t> parse_id_list(const std::string& s) {
  std::vector<int64_t> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, ',')) {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b == std::string::npos) throw UsageError("--prompt-ids: empty item in '" + s + "' (expected e.g. 1,2,3)");
    const std::string tok = item.substr(b, e - b + 1);
    int64_t v = 0;
    const auto r = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    if (r.ec != std::errc() || r.ptr != tok.data() + tok.size())
      throw UsageError("--prompt-ids: '" + tok + "' is not an integer token id (expected e.g. 1,2,3)");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError("--prompt-ids: no token ids given (expected e.g. 1,2,3)");
  if (s.find_last_not_of(" \t") != std::string::npos && s[s.find_last_not_of(" \t")] == ',')
    throw UsageError("--prompt-ids: empty item after the last comma in '" + s + "'");
  return out;
}

bool is_hier_checkpoint(const std::string& dir) {
  const std::filesystem::path p = std::filesystem::path(dir) / "config.json";
  if (!std::filesystem::exists(p)) return false;
  try {
    const nlohmann::json j = nlohmann::json::parse(ttt::io::read_file(p));
    return j.is_object() && j.value("model_type", std::string()) == ttt::hier::kModelType;
  } catch (const nlohmann::json::exception&) {
    return false;  // the regular loader reports the malformed file
  }
}

std::vector<std::string> learner_names() { return ttt::inner::builtin_name_list<Learners>(); }

void add_update_flags(CLI::App* app, UpdateFlags& u) {
  std::vector<std::string> opts;
  std::apply([&](auto... o) { (opts.emplace_back(decltype(o)::name), ...); }, ttt::inner::BuiltinOptimizers{});
  app->add_option("--inner-optimizer", u.optimizer, "Inner optimizer (ttt_inner_optimizer)")
      ->check(CLI::IsMember(opts))->capture_default_str();
  app->add_option("--inner-beta", u.beta, "Momentum's beta, Adam's beta1, in [0, 1) (ttt_inner_beta; --inner-optimizer momentum or adam)")
      ->check(CLI::Range(0.0, 0.999999999))->capture_default_str();
  app->add_option("--ns-steps", u.ns_steps, "Muon's Newton-Schulz iterations (ttt_ns_steps; --inner-optimizer muon)")
      ->check(CLI::Range(int64_t(1), int64_t(100)))->capture_default_str();
  app->add_option("--query-order", u.order,
                  "after: query t reads the weights updated through token t (TTT); before: the weights from before "
                  "its mini-batch's update (LaCT) (ttt_query_order)")
      ->check(CLI::IsMember({"after", "before"}))->capture_default_str();
  app->add_option("--swiglu-hidden", u.hidden, "Hidden width of the swiglu learner (ttt_hidden_size; 0 = 4 x head dim)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20))->capture_default_str();
}

void add_dtype_option(CLI::App* app, std::string& dtype, bool& bf16_activations) {
  app->add_option("--dtype", dtype,
                  "Precision of the weight matrices: fp32, or bf16 (half the bytes per decoded token; "
                  "fp32 activations and accumulation; TTT checkpoints only)")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            try {
              ttt::parse_weight_dtype(s, "--dtype");
            } catch (const ttt::ConfigError& e) {
              return std::string(e.what()).substr(std::string("--dtype: ").size());  // CLI11 names the option
            }
            return {};
          },
          "fp32|bf16"))
      ->capture_default_str();
  app->add_flag("--bf16-activations", bf16_activations,
                "With --dtype bf16: the prompt's products (more than 24 rows) round their activations to bf16 "
                "too and run on AVX512_BF16's vdpbf16ps (faster where it has twice the multiply-adds of an fp32 "
                "FMA, as on the AMD Zen 5 measured; a second rounding error the size of the weights')");
}

void setup_dtype(const std::string& dtype, bool bf16_activations, const std::string& model) {
  const bool bf16 = ttt::parse_weight_dtype(dtype, "--dtype") == ttt::WeightDtype::bf16;
  if (bf16 && is_hier_checkpoint(model))
    throw UsageError("--dtype bf16: " + model +
                     " is a hierarchical-transformer checkpoint, which has no bf16 path (TTT checkpoints have one)");
  if (bf16_activations && !bf16) throw UsageError("--bf16-activations needs --dtype bf16 (got --dtype " + dtype + ")");
  if (bf16_activations && !ttt::kernels::bf16_kernel_available(ttt::kernels::Bf16Kernel::avx512_bf16))
    throw UsageError("--bf16-activations: this CPU has no AVX512_BF16 (vdpbf16ps); leave the option out to keep "
                     "the activations in fp32");
  ttt::kernels::set_bf16_activations(bf16_activations);
}

namespace {
/// The number `s` spells, whole; nullopt when it spells none (trailing text included).
std::optional<double> number_in(const std::string& s) {
  try {
    size_t used = 0;
    const double d = std::stod(s, &used);
    if (used == s.size()) return d;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// A validator of numbers that pass `ok`, whose message says "must be <what>, got <s>". Text that
/// is no number passes here: the option's conversion (or finite_number, checked with it) names it.
CLI::Validator bound(bool (*ok)(double), const char* what, const char* name) {
  return CLI::Validator(
      [ok, what](std::string& s) -> std::string {
        const auto d = number_in(s);
        return !d || ok(*d) ? std::string() : "must be " + std::string(what) + ", got " + s;
      },
      name);
}
}  // namespace

const CLI::Validator& finite_number() {
  static const CLI::Validator v(
      [](std::string& s) -> std::string {
        const auto d = number_in(s);
        if (!d) return "'" + s + "' is not a number";
        return std::isfinite(*d) ? std::string() : "'" + s + "' is not a finite number";
      },
      "NUMBER");
  return v;
}

const CLI::Validator& positive_number() {
  static const CLI::Validator v = bound([](double d) { return d > 0; }, "> 0", "POSITIVE");
  return v;
}

const CLI::Validator& non_negative_number() {
  static const CLI::Validator v = bound([](double d) { return d >= 0; }, ">= 0", "NONNEGATIVE");
  return v;
}

}  // namespace ttt_cli
