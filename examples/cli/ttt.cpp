// ttt: the command-line tool of the ttt library.
//
//   ttt info     --model DIR                                   what a checkpoint holds
//   ttt eval     --model DIR --input IN.safetensors --out OUT.safetensors [--threads N] [--grads]
//   ttt generate --model DIR (--prompt-ids 1,2,3 | --prompt TEXT) [--max-new-tokens N] [sampling]
//     (hierarchical checkpoints: the original's top-k + Gumbel sampler, --filter-thres, and cached decode)
//   ttt init     --out DIR [--layer linear|mlp] [--hidden ...]  a random checkpoint
//   ttt train    --data PATH --out DIR [--layer ...] [--steps N] [--resume] ...  train on bytes
//                [--arch hier [--hierarchies 1,2,8 --window-sizes 16,16,none --mixer ...] [--config FILE.json]]
//   ttt eval-loss --model DIR --data PATH --seq-len N [--out FILE.csv]  loss per token position
//
// Exit status: 0 on success (and for --help), 2 for a wrong flag or a bad value, 1 for any other
// error (unreadable or malformed file, ids outside the vocabulary, ...). Errors are one line on
// stderr: "ttt SUBCOMMAND: what went wrong".
#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

#include <CLI/CLI.hpp>

#include <ttt/models/any_model.hpp>
#include <ttt/models/generate.hpp>
#include <ttt/models/hier/decode.hpp>
#include <ttt/models/hier/generate.hpp>
#include <ttt/models/hier/model.hpp>
#include <ttt/io/tokenizer.hpp>
#include <ttt/train/backward.hpp>
#include <ttt/train/data.hpp>
#include <ttt/train/trainer.hpp>
#include <ttt/ttt.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fs = std::filesystem;

namespace {

/// A bad value given on the command line: exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Messages are printed on one line.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

/// Threads of the OpenMP (head) loops of the calling thread; no-op without OpenMP.
void set_inner_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

// ---- info -----------------------------------------------------------------------------------

struct InfoArgs {
  std::string model;
};

/// A simple-hierarchical-transformer checkpoint (config.json "model_type"): every subcommand
/// that takes --model picks the model from it.
bool is_hier_checkpoint(const std::string& dir) {
  const fs::path p = fs::path(dir) / "config.json";
  if (!fs::exists(p)) return false;
  try {
    const nlohmann::json j = nlohmann::json::parse(ttt::io::read_file(p));
    return j.is_object() && j.value("model_type", std::string()) == ttt::hier::kModelType;
  } catch (const nlohmann::json::exception&) {
    return false;  // the regular loader reports the malformed file
  }
}

int run_info_hier(const InfoArgs& a) {
  auto m = ttt::hier::HierarchicalTransformer::load(a.model);
  std::cout << "model = " << a.model << "\n";
  const nlohmann::json j = m.cfg.to_json();
  for (auto it = j.begin(); it != j.end(); ++it)
    std::cout << it.key() << " = " << (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()) << "\n";
  std::cout << "parameters = " << m.num_params() << "\n";
  return 0;
}

int run_info(const InfoArgs& a) {
  if (is_hier_checkpoint(a.model)) return run_info_hier(a);
  ttt::AnyModel m = ttt::AnyModel::load(a.model);
  const ttt::ModelConfig& c = m.cfg();
  std::cout << "model = " << a.model << "\n";
  const nlohmann::json j = c.to_json();
  for (auto it = j.begin(); it != j.end(); ++it)
    std::cout << it.key() << " = " << (it.value().is_string() ? it.value().get<std::string>() : it.value().dump())
              << "\n";
  const int64_t n = m.num_params();
  std::cout << "learner = " << m.learner() << "\n";
  std::cout << "head_dim = " << c.head_dim() << "\n";
  std::cout << "parameters = " << n << "\n";
  std::cout << "state_bytes_per_sequence = " << m.state_bytes() << "\n";
  return 0;
}

// ---- eval -----------------------------------------------------------------------------------

struct EvalArgs {
  std::string model, input, out;
  int threads = 0;
  bool grads = false;
};

/// `ttt eval` on a simple-hierarchical-transformer checkpoint (config.json "model_type"):
/// logits, the per-hierarchy token_embeds.{h} / hidden_embeds.{h}, loss and its three parts
/// (the original's model(ids, return_loss=True) over the batch), and with --grads every grad.{name}.
int run_eval_hier(const EvalArgs& a) {
  set_inner_threads(a.threads > 0 ? a.threads : 0);
  auto m = ttt::hier::HierarchicalTransformer::load(a.model);
  const int64_t V = m.cfg.num_tokens, H = m.cfg.num_hierarchies();
  const auto in = ttt::io::SafeTensors::load(a.input);
  const ttt::io::TensorInfo& ti = in.info("input_ids");
  if (ti.shape.size() != 2 || ti.shape[0] == 0 || ti.shape[1] == 0)
    throw ttt::ShapeError(in.source() + ": tensor 'input_ids' has shape " + ttt::shape_str(ti.shape) +
                          ", expected [B, L] with B, L >= 1");
  const int64_t B = ti.shape[0], L = ti.shape[1];
  const std::vector<int64_t> ids = in.read_int("input_ids");
  if (a.grads && L < 2)
    throw ttt::ShapeError(in.source() + ": tensor 'input_ids' has sequences of length 1: --grads needs at least 2 tokens");
  std::vector<std::vector<int64_t>> batch;
  for (int64_t b = 0; b < B; ++b) batch.emplace_back(ids.begin() + b * L, ids.begin() + (b + 1) * L);
  std::vector<float> logits;
  std::vector<std::vector<float>> tok(static_cast<size_t>(H)), hid(static_cast<size_t>(H));
  std::vector<int64_t> rows(static_cast<size_t>(H));
  for (const auto& seq : batch) {
    ttt::hier::HierarchicalTransformer::Extras x;
    const ttt::Mat lg = m.forward(seq, &x);
    logits.insert(logits.end(), lg.data(), lg.data() + lg.size());
    for (size_t h = 0; h < size_t(H); ++h) {
      rows[h] = x.token_embeds[h].rows();
      tok[h].insert(tok[h].end(), x.token_embeds[h].data(), x.token_embeds[h].data() + x.token_embeds[h].size());
      hid[h].insert(hid[h].end(), x.hidden_embeds[h].data(), x.hidden_embeds[h].data() + x.hidden_embeds[h].size());
    }
  }
  ttt::io::SafeTensorsWriter w;
  w.set_metadata("producer", "ttt eval");
  w.add_int64("input_ids", {B, L}, ids);
  w.add("logits", {B, L, V}, logits);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t d = m.cfg.dim_of(h), r = rows[size_t(h)];
    w.add("token_embeds." + std::to_string(h), {B, r, d}, tok[size_t(h)]);
    w.add("hidden_embeds." + std::to_string(h), {B, r, d}, hid[size_t(h)]);
  }
  if (L >= 2) {
    std::optional<ttt::hier::HierarchicalTransformer> g;
    if (a.grads) g.emplace(m.cfg);
    const ttt::hier::Losses l = m.loss(batch, g ? &*g : nullptr);
    for (auto [k, v] : {std::pair{"loss", l.total}, {"loss_ce", l.ce}, {"loss_recon", l.recon}, {"loss_ar", l.ar}}) {
      const float f = float(v);
      w.add(k, {}, std::span<const float>(&f, 1));
    }
    if (g)
      g->visit_params([&](const ttt::ParamRef& p) {  // copy_out: TTT mixers' per-head tensors are strided
        std::vector<float> buf(size_t(p.numel()));
        p.copy_out(buf.data());
        w.add("grad." + p.name, p.shape, std::span<const float>(buf));
      });
  }
  w.save(a.out);
  return 0;
}

int run_eval(const EvalArgs& a) {
  if (is_hier_checkpoint(a.model)) return run_eval_hier(a);
  ttt::AnyModel m = ttt::AnyModel::load(a.model);
  const ttt::ModelConfig& cfg = m.cfg();
  const int64_t V = cfg.vocab_size, C = cfg.hidden_size, NL = cfg.num_hidden_layers;

  const auto in = ttt::io::SafeTensors::load(a.input);
  const std::string src = in.source();
  const ttt::io::TensorInfo& ti = in.info("input_ids");
  if (ti.shape.size() != 2)
    throw ttt::ShapeError(src + ": tensor 'input_ids' has shape " + ttt::shape_str(ti.shape) +
                          ", expected [B, L] (batch, length)");
  const int64_t B = ti.shape[0], L = ti.shape[1];
  if (B == 0 || L == 0)
    throw ttt::ShapeError(src + ": tensor 'input_ids' is empty (shape " + ttt::shape_str(ti.shape) +
                          "): need at least one sequence of at least one token");
  const std::vector<int64_t> ids = in.read_int("input_ids");
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) {
      const int64_t id = ids[size_t(b * L + t)];
      if (id < 0 || id >= V)
        throw ttt::ShapeError(src + ": tensor 'input_ids': token id " + std::to_string(id) + " at [" +
                              std::to_string(b) + ", " + std::to_string(t) + "] is outside the vocabulary [0, " +
                              std::to_string(V) + ")");
    }

  std::optional<int64_t> P;
  if (in.contains("prompt_len")) {
    const ttt::io::TensorInfo& pi = in.info("prompt_len");
    if (pi.numel() != 1)
      throw ttt::ShapeError(src + ": tensor 'prompt_len' has shape " + ttt::shape_str(pi.shape) +
                            ", expected [1] (one prompt length for the whole batch)");
    P = in.read_int("prompt_len")[0];
    if (*P < 1 || *P >= L)
      throw ttt::ShapeError(src + ": tensor 'prompt_len' is " + std::to_string(*P) + ", expected 1 <= P < L = " +
                            std::to_string(L));
  }
  const int64_t D = P ? L - *P : 0;  // decode_logits rows per sequence
  if (a.grads && L < 2)
    throw ttt::ShapeError(src + ": tensor 'input_ids' has sequences of length 1: --grads needs at least 2 tokens "
                          "(a next-token loss)");

  // Output buffers; each sequence writes its own slices.
  std::vector<float> logits(size_t(B * L * V));
  std::vector<std::vector<float>> hidden(size_t(NL), std::vector<float>(size_t(B * L * C)));
  std::vector<float> dec(size_t(B * D * V));
  std::vector<double> seq_loss(size_t(B), 0.0);

  auto run_sequence = [&](int64_t b) {
    const std::span<const int64_t> seq(ids.data() + b * L, size_t(L));
    ttt::AnyModel::Session s = m.session();
    ttt::Mat lg;
    std::vector<ttt::Mat> hs;
    s.feed(seq, ttt::Logits::all, &lg, &hs);
    std::copy(lg.data(), lg.data() + L * V, logits.begin() + b * L * V);
    for (int64_t i = 0; i < NL; ++i)
      std::copy(hs[size_t(i)].data(), hs[size_t(i)].data() + L * C, hidden[size_t(i)].begin() + b * L * C);
    // Next-token cross entropy, in double: position t predicts token t + 1.
    double sum = 0.0;
    for (int64_t t = 0; t + 1 < L; ++t) {
      const float* row = lg.data() + t * V;
      double mx = -INFINITY;
      for (int64_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
      double se = 0.0;
      for (int64_t v = 0; v < V; ++v) se += std::exp(double(row[v]) - mx);
      sum += mx + std::log(se) - double(row[seq[size_t(t + 1)]]);
    }
    seq_loss[size_t(b)] = sum;
    if (P) {
      // decode_logits: prefill P tokens (entry 0), then feed tokens P .. L-2 one at a time.
      ttt::AnyModel::Session d = m.session();
      d.feed(seq.first(size_t(*P)), ttt::Logits::last, &lg);
      std::copy(lg.data(), lg.data() + V, dec.begin() + (b * D) * V);
      for (int64_t t = *P; t + 1 < L; ++t) {
        d.feed(seq.subspan(size_t(t), 1), ttt::Logits::last, &lg);
        std::copy(lg.data(), lg.data() + V, dec.begin() + (b * D + t - *P + 1) * V);
      }
    }
  };

  const int total_threads = a.threads > 0 ? a.threads : hardware_threads();
  const int workers = int(std::min<int64_t>(B, total_threads));
  if (workers <= 1) {
    set_inner_threads(a.threads > 0 ? a.threads : 0);
    for (int64_t b = 0; b < B; ++b) run_sequence(b);
  } else {
    // Sequences are independent: one session each, spread over the workers; the remaining
    // threads go to each worker's (head) loops.
    std::atomic<int64_t> next{0};
    std::vector<std::exception_ptr> errors(static_cast<size_t>(workers));
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w)
      pool.emplace_back([&, w] {
        try {
          set_inner_threads(std::max(1, total_threads / workers));
          for (int64_t b; (b = next.fetch_add(1)) < B;) run_sequence(b);
        } catch (...) {
          errors[size_t(w)] = std::current_exception();
        }
      });
    for (auto& t : pool) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  ttt::io::SafeTensorsWriter w;
  w.set_metadata("producer", "ttt eval");
  w.add_int64("input_ids", {B, L}, ids);
  w.add("logits", {B, L, V}, logits);
  for (int64_t i = 0; i < NL; ++i) w.add("hidden." + std::to_string(i), {B, L, C}, hidden[size_t(i)]);
  if (P) {
    const int64_t p = *P;
    w.add_int64("prompt_len", {1}, std::span<const int64_t>(&p, 1));
    w.add("decode_logits", {B, D, V}, dec);
  }
  if (L >= 2) {
    double sum = 0.0;
    for (double v : seq_loss) sum += v;
    const float loss = float(sum / double(B * (L - 1)));
    w.add("loss", {}, std::span<const float>(&loss, 1));
  } else {
    std::cerr << "ttt eval: note: sequences of length 1 have no next-token loss; 'loss' not written\n";
  }
  if (a.grads) {
    // grad.{name}: d loss / d parameter over the whole batch (the mean over all B * (L - 1)
    // next-token positions; tied embeddings: the embedding's gradient includes the head's).
    std::vector<std::vector<int64_t>> batch;
    for (int64_t b = 0; b < B; ++b) batch.emplace_back(ids.begin() + b * L, ids.begin() + (b + 1) * L);
    std::visit(
        [&](const auto& model) {
          std::decay_t<decltype(model)> g(model.cfg);
          ttt::train::loss_and_grad(model, batch, g);
          std::vector<float> buf;
          g.visit_params([&](const ttt::ParamRef& p) {
            buf.resize(size_t(p.numel()));
            p.copy_out(buf.data());
            w.add("grad." + p.name, p.shape, buf);
          });
        },
        m.variant());
  }
  w.save(a.out);
  return 0;
}

// ---- generate -------------------------------------------------------------------------------

struct GenerateArgs {
  std::string model;
  std::string prompt_ids;
  std::optional<std::string> prompt;
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

/// "1,2, 3" -> {1, 2, 3}; UsageError for anything else.
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

/// The prompt as token ids: the byte encoding of --prompt (when `text`) or the --prompt-ids, each
/// checked against the model's vocabulary of V tokens.
std::vector<int64_t> prompt_tokens(const GenerateArgs& a, std::vector<int64_t> prompt, bool text, int64_t V) {
  if (text) {
    try {
      ttt::ByteTokenizer::check_vocab(V);
    } catch (const ttt::Error& e) {
      throw ttt::Error(std::string(e.what()) + "; use --prompt-ids");
    }
    prompt = ttt::ByteTokenizer().encode(*a.prompt);
  }
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= V)
      throw ttt::ShapeError("--prompt-ids: token id " + std::to_string(prompt[i]) + " at position " + std::to_string(i) +
                            " is outside the vocabulary [0, " + std::to_string(V) + ") of " + a.model);
  return prompt;
}

/// `ttt generate` on a simple-hierarchical-transformer checkpoint: the original's sampler (top
/// 1 - filter_thres of the logits, Gumbel noise, temperature) unless --greedy / --top-k / --top-p ask
/// for the library's; cached decode (hier::Decoder) while prompt + new tokens fit in seq_len, else
/// the original's full forward over the last seq_len tokens per token.
int run_generate_hier(const GenerateArgs& a, const ttt::SamplingOptions& opt, std::vector<int64_t> prompt, bool text) {
  if (!(a.filter_thres >= 0.0 && a.filter_thres < 1.0))
    throw UsageError("--filter-thres must be in [0, 1), got " + std::to_string(a.filter_thres));
  const auto m = ttt::hier::HierarchicalTransformer::load(a.model);
  const int64_t V = m.cfg.num_tokens;
  ttt::ByteTokenizer tok;
  prompt = prompt_tokens(a, std::move(prompt), text, V);
  const bool library = a.greedy || a.top_k > 0 || a.top_p < 1.0f;
  const ttt::hier::Sampler sampler =
      library ? ttt::hier::library_sampler(opt) : ttt::hier::original_sampler(a.filter_thres, a.temperature);
  std::mt19937_64 rng(a.seed);
  const auto t0 = std::chrono::steady_clock::now();
  const bool cached = int64_t(prompt.size()) + a.max_new_tokens <= m.cfg.seq_len;
  const std::vector<int64_t> out = cached ? ttt::hier::generate_cached(m, prompt, a.max_new_tokens, sampler, rng)
                                          : ttt::hier::generate(m, prompt, a.max_new_tokens, sampler, rng);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  bool first = true;
  for (int64_t id : out) {
    if (text) std::cout << tok.token_text(id, /*show_specials=*/true);
    else std::cout << (first ? "" : " ") << id;
    first = false;
    if (!a.ignore_eos && a.eos && id == *a.eos) break;
  }
  std::cout << "\n";
  std::cout.flush();
  std::cerr << "hierarchical: " << out.size() << " tokens in " << ms << " ms (" << (cached ? "cached decode" : "full forward per token")
            << ", " << (library ? "library sampler" : "top-k + Gumbel sampler") << ")\n";
  return 0;
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
  const bool text = a.prompt.has_value();
  std::vector<int64_t> prompt;
  if (text) {
    if (a.prompt->empty()) throw UsageError("--prompt: the prompt is empty");
  } else {
    prompt = parse_id_list(a.prompt_ids);
  }
  set_inner_threads(a.threads);
  if (is_hier_checkpoint(a.model)) return run_generate_hier(a, opt, prompt, text);

  ttt::AnyModel m = ttt::AnyModel::load(a.model);
  const int64_t V = m.cfg().vocab_size;
  ttt::ByteTokenizer tok;
  prompt = prompt_tokens(a, std::move(prompt), text, V);
  if (!a.ignore_eos) {
    if (a.eos) opt.eos_token_id = *a.eos;
    else if (m.cfg().eos_token_id >= 0) opt.eos_token_id = m.cfg().eos_token_id;
  }

  bool first = true;
  const ttt::GenerateResult r = ttt::generate(m, prompt, opt, [&](int64_t id) {
    if (text) {
      std::cout << tok.token_text(id, /*show_specials=*/true);
    } else {
      std::cout << (first ? "" : " ") << id;
    }
    first = false;
    std::cout.flush();
  });
  std::cout << "\n";
  std::cout.flush();

  char line[256];
  std::snprintf(line, sizeof line,
                "prefill: %lld tokens, %.2f ms | decode: %lld tokens, %.3f ms/token, %.1f tokens/s%s\n",
                static_cast<long long>(r.prompt_tokens), r.prefill_ms, static_cast<long long>(r.decode_tokens()),
                r.decode_ms_per_token(), r.tokens_per_second(), r.stopped_at_eos ? " | stopped at EOS" : "");
  std::cerr << line;
  return 0;
}

// ---- init -----------------------------------------------------------------------------------

struct InitArgs {
  std::string out;
  std::string layer = "linear";
  int64_t hidden = 64, layers = 2, heads = 4, vocab = ttt::ByteTokenizer::vocab_size, intermediate = 0;
  int64_t mini_batch = 16, max_position = 2048, conv_kernel = 4;
  uint64_t seed = 0;
  double base_lr = 1.0, rope_theta = 10000.0;
  bool pre_conv = false, share_qk = false, use_gate = false, untie = false, force = false;
};

int run_init(const InitArgs& a) {
  ttt::ModelConfig c;
  c.ttt_layer_type = a.layer;
  c.hidden_size = a.hidden;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.vocab_size = a.vocab;
  // Default intermediate size: about 8/3 of the hidden size (SwiGLU), a multiple of 16.
  c.intermediate_size = a.intermediate > 0 ? a.intermediate : std::max<int64_t>(16, (a.hidden * 8 / 3 + 15) / 16 * 16);
  c.mini_batch_size = a.mini_batch;
  c.max_position_embeddings = a.max_position;
  c.conv_kernel = a.conv_kernel;
  c.ttt_base_lr = a.base_lr;
  c.rope_theta = a.rope_theta;
  c.pre_conv = a.pre_conv;
  c.share_qk = a.share_qk;
  c.use_gate = a.use_gate;
  c.tie_word_embeddings = !a.untie;
  if (c.vocab_size >= ttt::ByteTokenizer::vocab_size) {  // room for the byte tokenizer's specials
    c.bos_token_id = ttt::ByteTokenizer::bos;
    c.eos_token_id = ttt::ByteTokenizer::eos;
    c.pad_token_id = ttt::ByteTokenizer::pad;
  }
  try {
    c.validate("model config");
  } catch (const ttt::ConfigError& e) {
    throw UsageError(e.what());
  }
  const fs::path out(a.out);
  if (!a.force && fs::exists(out / "config.json"))
    throw UsageError("--out: " + (out / "config.json").string() + " exists; pass --force to overwrite");
  ttt::AnyModel m = ttt::AnyModel::create(c, a.seed);
  m.save(out);
  std::cout << "wrote " << out.string() << " (" << m.learner() << ", " << m.num_params() << " parameters)\n";
  return 0;
}

// ---- train ----------------------------------------------------------------------------------

struct TrainArgs {
  std::string data, out;
  std::string layer = "linear";
  int64_t hidden = 64, layers = 2, heads = 4, intermediate = 0, mini_batch = 16, conv_kernel = 4;
  int64_t seq_len = 128, batch = 8, steps = 1000, accum = 1, warmup = -1, ttt_warmup = -1;
  int64_t val_every = 0, val_windows = 16, save_every = 0, stop_after = 0;
  double lr = 3e-3, min_lr = 1e-5, weight_decay = 0.1, clip = 1.0, val_fraction = 0.05, base_lr = 1.0;
  double beta1 = 0.9, beta2 = 0.95;
  uint64_t seed = 0;
  bool resume = false, pre_conv = false, share_qk = false, use_gate = false, quiet = false;
  int threads = 0;
  int64_t scan_group = 0;
  // --arch hier: simple-hierarchical-transformer (its constructor arguments as flags or --config)
  std::string arch = "ttt", config;
  std::vector<int64_t> hierarchies = {1}, strides = {1};
  std::vector<std::string> window_sizes = {"none"}, mixer = {"attention"};
  int64_t dim_head = 0, predict_hierarchy = 0, ignore_index = 0;
  double ff_mult = 4, recon_weight = 0.1, ar_weight = 0.25;
  bool merge_all = false, predict_use_all = false;
  std::set<std::string> given;  ///< the flags given on the command line ("--hidden", ...)
  bool has(const std::string& flag) const { return given.count(flag) > 0; }
};

/// The flags that only one --arch reads.
const std::vector<std::string> kTTTOnlyFlags = {"--layer", "--intermediate", "--pre-conv", "--conv-kernel", "--share-qk",
                                                "--scan-checkpoint-group"};
const std::vector<std::string> kHierOnlyFlags = {"--config", "--hierarchies", "--window-sizes", "--strides", "--mixer",
                                                 "--dim-head", "--ff-mult", "--merge-all", "--predict-hierarchy",
                                                 "--predict-use-all", "--recon-weight", "--ar-weight", "--ignore-index"};

/// The hierarchical model the train flags describe: the --config file's constructor arguments (if
/// any), then every flag given on top (--hidden is dim, --layers depth, --mini-batch / --base-lr /
/// --use-gate the TTT mixers' options), then defaults for what neither sets: the original's,
/// except num_tokens (the byte vocabulary), dim / depth / heads (--hidden / --layers / --heads),
/// dim_head (the resulting dim / heads) and seq_len (--seq-len).
ttt::hier::HierConfig hier_train_config(const TrainArgs& a) {
  nlohmann::json j = nlohmann::json::object();
  const std::string src = a.config.empty() ? std::string("--arch hier flags") : a.config;
  if (!a.config.empty()) {
    try {
      j = nlohmann::json::parse(ttt::io::read_file(a.config));
    } catch (const nlohmann::json::exception& e) {
      throw ttt::FormatError(a.config + ": not valid JSON: " + one_line(e.what()));
    }
    if (!j.is_object()) throw ttt::FormatError(a.config + ": expected a JSON object of HierarchicalTransformer arguments");
  }
  // flag, key, value, default applies when neither the file nor the flag sets the key
  auto set = [&](const char* flag, const char* key, const nlohmann::json& v, bool dflt) {
    if (a.has(flag) || (dflt && !j.contains(key))) j[key] = v;
  };
  auto one_or_list = [](const auto& v) { return v.size() == 1 ? nlohmann::json(v[0]) : nlohmann::json(v); };
  nlohmann::json ws = nlohmann::json::array();
  for (const std::string& w : a.window_sizes) {
    if (w == "none" || w == "null" || w == "full") {
      ws.push_back(nullptr);
      continue;
    }
    int64_t v = -1;
    const auto [ptr, ec] = std::from_chars(w.data(), w.data() + w.size(), v);
    if (ec != std::errc() || ptr != w.data() + w.size() || v < 0)
      throw UsageError("--window-sizes: '" + w + "' is not a window (a number >= 0, or none for full attention)");
    ws.push_back(v);
  }
  if (!j.contains("num_tokens")) j["num_tokens"] = ttt::ByteTokenizer::vocab_size;
  set("--hidden", "dim", a.hidden, true);
  set("--layers", "depth", a.layers, true);
  set("--heads", "heads", a.heads, true);
  set("--dim-head", "dim_head", a.dim_head, false);
  // default dim_head: the final dim / heads (rounded down to even), whether they came from the
  // file or the flags; with per-hierarchy lists in the file, the original's default (64)
  if (!j.contains("dim_head") && j["dim"].is_number_integer() && j["heads"].is_number_integer() &&
      j["heads"].get<int64_t>() > 0)
    j["dim_head"] = std::max<int64_t>(2, j["dim"].get<int64_t>() / j["heads"].get<int64_t>() / 2 * 2);
  set("--ff-mult", "ff_mult", a.ff_mult, false);
  set("--hierarchies", "hierarchies", one_or_list(a.hierarchies), false);
  set("--window-sizes", "window_sizes", ws.size() == 1 ? ws[0] : ws, false);
  set("--strides", "hierarchical_stride", one_or_list(a.strides), false);
  set("--mixer", "mixer", one_or_list(a.mixer), false);
  set("--merge-all", "hierarchy_merge_all", a.merge_all, false);
  set("--predict-hierarchy", "predict_hierarchy", a.predict_hierarchy, false);
  set("--predict-use-all", "predict_use_all_hierarchy", a.predict_use_all, false);
  set("--recon-weight", "recon_loss_weight", a.recon_weight, false);
  set("--ar-weight", "hierarchical_ar_loss_weight", a.ar_weight, false);
  set("--ignore-index", "ignore_index", a.ignore_index, false);
  set("--mini-batch", "ttt_mini_batch_size", a.mini_batch, false);
  set("--base-lr", "ttt_base_lr", a.base_lr, false);
  set("--use-gate", "ttt_use_gate", a.use_gate, false);
  if (!j.contains("seq_len")) j["seq_len"] = a.seq_len;
  ttt::hier::HierConfig c;
  try {
    c = ttt::hier::HierConfig::from_json(j, src);
  } catch (const ttt::Error& e) {
    if (a.config.empty()) throw UsageError(e.what());
    throw;
  }
  if (c.num_tokens < ttt::ByteTokenizer::vocab_size)
    throw ttt::ConfigError(src + ": num_tokens " + std::to_string(c.num_tokens) + " is too small for byte-level data (needs >= " +
                           std::to_string(ttt::ByteTokenizer::vocab_size) + ")");
  if (c.seq_len < a.seq_len)
    throw ttt::ConfigError(src + ": seq_len " + std::to_string(c.seq_len) + " is shorter than --seq-len " +
                           std::to_string(a.seq_len) + " (the model refuses longer inputs)");
  return c;
}

/// The model the train flags describe (byte-level vocabulary).
ttt::ModelConfig train_config(const TrainArgs& a) {
  ttt::ModelConfig c;
  c.ttt_layer_type = a.layer;
  c.hidden_size = a.hidden;
  c.num_hidden_layers = a.layers;
  c.num_attention_heads = a.heads;
  c.vocab_size = ttt::ByteTokenizer::vocab_size;
  c.intermediate_size = a.intermediate > 0 ? a.intermediate : std::max<int64_t>(16, (a.hidden * 8 / 3 + 15) / 16 * 16);
  c.mini_batch_size = a.mini_batch;
  c.max_position_embeddings = std::max<int64_t>(2048, a.seq_len);
  c.conv_kernel = a.conv_kernel;
  c.ttt_base_lr = a.base_lr;
  c.pre_conv = a.pre_conv;
  c.share_qk = a.share_qk;
  c.use_gate = a.use_gate;
  c.bos_token_id = ttt::ByteTokenizer::bos;
  c.eos_token_id = ttt::ByteTokenizer::eos;
  c.pad_token_id = ttt::ByteTokenizer::pad;
  try {
    c.validate("model config");
  } catch (const ttt::ConfigError& e) {
    throw UsageError(e.what());
  }
  return c;
}

int run_train(const TrainArgs& a) {
  const bool hier = a.arch == "hier";
  for (const std::string& f : hier ? kTTTOnlyFlags : kHierOnlyFlags)
    if (a.has(f)) throw UsageError(f + " does not apply to --arch " + a.arch);
  std::optional<ttt::hier::HierConfig> hcfg;
  std::optional<ttt::ModelConfig> tcfg;
  if (hier) hcfg = hier_train_config(a);
  else tcfg = train_config(a);
  if (a.warmup > a.steps) throw UsageError("--warmup " + std::to_string(a.warmup) + " is longer than --steps " + std::to_string(a.steps));
  if (a.min_lr > a.lr) throw UsageError("--min-lr must not exceed --lr");
  // --threads spreads the sequences of a batch; the per-head loops of small models cost more to
  // share than to run, so they get one thread.
  set_inner_threads(1);
  ttt::train::TextData data(ttt::train::load_byte_corpus(a.data), a.seq_len, a.val_fraction, a.seed, a.data);
  ttt::train::TrainOptions o;
  o.steps = a.steps, o.batch = a.batch, o.accum = a.accum;
  o.lr = a.lr, o.min_lr = a.min_lr, o.warmup = a.warmup, o.ttt_warmup = a.ttt_warmup;
  o.adamw.weight_decay = a.weight_decay, o.adamw.beta1 = a.beta1, o.adamw.beta2 = a.beta2;
  o.clip = a.clip;
  o.val_every = a.val_every, o.val_windows = a.val_windows, o.save_every = a.save_every;
  o.seed = a.seed, o.out = a.out, o.resume = a.resume, o.stop_after = a.stop_after;
  o.progress = !a.quiet;
  o.threads = a.threads > 0 ? a.threads : 1;
  o.scan_checkpoint_group = a.scan_group;
  o.args = {{"data", a.data},         {"layer", a.layer},         {"seq_len", a.seq_len},   {"batch", a.batch},
            {"steps", a.steps},       {"accum", a.accum},         {"lr", a.lr},             {"min_lr", a.min_lr},
            {"warmup", o.warmup_steps()}, {"ttt_warmup", o.ttt_warmup_steps()}, {"weight_decay", a.weight_decay},
            {"clip", a.clip},         {"val_fraction", a.val_fraction}, {"seed", a.seed},
            {"threads", o.threads},   {"arch", a.arch}};
  if (hier) o.args.erase("layer");
  ttt::train::TrainResult r;
  auto run = [&]<class L>() {
    ttt::TTTModel<L> m(*tcfg);
    if (!a.resume) m.init_weights(a.seed);
    r = ttt::train::train(m, data, o);
  };
  if (hier) {
    ttt::hier::HierarchicalTransformer m(*hcfg);
    if (!a.resume) m.init_weights(a.seed);
    r = ttt::train::train(m, data, o);
  } else if (a.layer == "mlp") {
    run.template operator()<ttt::inner::MLP>();
  } else {
    run.template operator()<ttt::inner::Linear>();
  }
  std::cout << "trained steps " << r.start_step << ".." << r.end_step << " of " << a.steps;
  if (!r.losses.empty()) std::cout << ", last train loss " << r.losses.back();
  if (!r.val.empty()) std::cout << ", val loss " << r.val.back().second;
  char tps[64];
  std::snprintf(tps, sizeof tps, "%.0f", r.tokens_per_s);
  std::cout << ", " << tps << " tokens/s; wrote " << a.out << "\n";
  return 0;
}

// ---- eval-loss ------------------------------------------------------------------------------

struct EvalLossArgs {
  std::string model, data, out;
  int64_t seq_len = 128, max_windows = 0;
  int threads = 0;
};

int run_eval_loss(const EvalLossArgs& a) {
  set_inner_threads(a.threads);
  const bool hier = is_hier_checkpoint(a.model);
  std::optional<ttt::AnyModel> m;
  std::optional<ttt::hier::HierarchicalTransformer> hm;
  if (hier) hm.emplace(ttt::hier::HierarchicalTransformer::load(a.model));
  else m.emplace(ttt::AnyModel::load(a.model));
  const int64_t vocab = hier ? hm->cfg.num_tokens : m->cfg().vocab_size;
  if (vocab < ttt::ByteTokenizer::vocab_size)
    throw ttt::Error(a.model + ": vocab_size " + std::to_string(vocab) +
                     " is too small for byte-level data (needs >= " + std::to_string(ttt::ByteTokenizer::vocab_size) + ")");
  if (hier && a.seq_len > hm->cfg.seq_len)
    throw UsageError("--seq-len " + std::to_string(a.seq_len) + " is longer than the model's seq_len " +
                     std::to_string(hm->cfg.seq_len) + " (" + a.model + "/config.json)");
  const std::vector<int64_t> tokens = ttt::train::load_byte_corpus(a.data);
  const auto windows = ttt::train::fixed_windows(tokens, a.seq_len + 1, a.max_windows);
  if (windows.empty())
    throw ttt::Error(a.data + ": " + std::to_string(tokens.size()) + " tokens is too short for --seq-len " +
                     std::to_string(a.seq_len) + " (need " + std::to_string(a.seq_len + 1) + ")");
  std::vector<double> per_pos;
  const double loss = hier ? ttt::train::windows_loss(*hm, windows, &per_pos) : ttt::train::windows_loss(*m, windows, &per_pos);
  std::printf("loss = %.6f\nwindows = %zu\npredicted_tokens = %lld\n", loss, windows.size(),
              static_cast<long long>(windows.size()) * static_cast<long long>(a.seq_len));
  if (!a.out.empty()) {
    std::string csv = "position,loss\n";
    char row[64];
    for (size_t t = 0; t < per_pos.size(); ++t) {
      std::snprintf(row, sizeof row, "%zu,%.6f\n", t, per_pos[t]);
      csv += row;
    }
    ttt::io::write_file_atomic(a.out, csv);
  }
  return 0;
}

/// CLI11 validator: a finite number.
const CLI::Validator finite_number = CLI::Validator(
    [](std::string& s) -> std::string {
      double d = 0;
      try {
        size_t used = 0;
        d = std::stod(s, &used);
        if (used != s.size()) return "'" + s + "' is not a number";
      } catch (const std::exception&) {
        return "'" + s + "' is not a number";
      }
      return std::isfinite(d) ? std::string() : "'" + s + "' is not a finite number";
    },
    "NUMBER");

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ttt: Test-Time Training (TTT) language models: inspect, evaluate, generate, initialise, train.", "ttt"};
  app.require_subcommand(1, 1);
  app.set_version_flag("--version", "ttt " + std::to_string(TTT_VERSION_MAJOR) + "." +
                                        std::to_string(TTT_VERSION_MINOR) + "." + std::to_string(TTT_VERSION_PATCH));
  app.footer("Exit status: 0 ok, 1 error (bad file, bad tensor, ...), 2 bad command line.");

  InfoArgs info_a;
  CLI::App* info = app.add_subcommand("info", "Print a checkpoint's config, parameter count and state size.");
  info->add_option("--model", info_a.model, "Checkpoint folder (config.json + model.safetensors)")->required();

  EvalArgs eval_a;
  CLI::App* eval = app.add_subcommand(
      "eval", "Run a model on input_ids [B, L] of a safetensors file; write logits, hidden states, loss "
              "(and decode_logits when the input has prompt_len).");
  eval->add_option("--model", eval_a.model, "Checkpoint folder")->required();
  eval->add_option("--input", eval_a.input, "Input .safetensors with input_ids [B, L] (I64/I32), optional prompt_len [1]")
      ->required();
  eval->add_option("--out", eval_a.out, "Output .safetensors (written atomically)")->required();
  eval->add_option("--threads", eval_a.threads, "Threads (0 = all cores)")->check(CLI::Range(0, 4096));
  eval->add_flag("--grads", eval_a.grads,
                 "Also write grad.{name}: the gradient of the loss (mean over the batch) for every parameter");

  GenerateArgs gen_a;
  CLI::App* gen = app.add_subcommand("generate", "Generate tokens after a prompt (ids, or text with the byte tokenizer).");
  gen->add_option("--model", gen_a.model, "Checkpoint folder")->required();
  CLI::Option* o_ids = gen->add_option("--prompt-ids", gen_a.prompt_ids, "Prompt token ids, e.g. 1,2,3");
  CLI::Option* o_text = gen->add_option("--prompt", gen_a.prompt, "Prompt text (byte-level tokenizer; needs vocab_size >= 256)");
  o_ids->excludes(o_text);
  gen->add_option("--max-new-tokens", gen_a.max_new_tokens, "Number of tokens to generate (at most)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40))
      ->capture_default_str();
  gen->add_option("--temperature", gen_a.temperature, "Softmax temperature (0 = greedy)")->check(finite_number)->capture_default_str();
  gen->add_option("--top-k", gen_a.top_k, "Sample among the k most likely tokens (0 = all)")->capture_default_str();
  gen->add_option("--top-p", gen_a.top_p, "Nucleus sampling: smallest set with probability >= p, p in (0, 1]")
      ->check(finite_number)
      ->capture_default_str();
  gen->add_option("--seed", gen_a.seed, "Random seed")->capture_default_str();
  gen->add_flag("--greedy", gen_a.greedy, "Always take the most likely token");
  CLI::Option* o_eos = gen->add_option("--eos", gen_a.eos, "Stop after this token (default: eos_token_id of the config)");
  gen->add_flag("--ignore-eos", gen_a.ignore_eos, "Do not stop at an end-of-sequence token")->excludes(o_eos);
  gen->add_option("--filter-thres", gen_a.filter_thres,
                  "Hierarchical checkpoints: keep the top (1 - t) of the logits, then Gumbel sampling at --temperature "
                  "(the original's sampler; --greedy / --top-k / --top-p use the library's instead)")
      ->capture_default_str();
  gen->add_option("--threads", gen_a.threads, "Threads of the per-head loops (0 = default)")
      ->check(CLI::Range(0, 4096));

  InitArgs init_a;
  CLI::App* init = app.add_subcommand("init", "Write a randomly initialised checkpoint (config.json + model.safetensors).");
  init->add_option("--out", init_a.out, "Checkpoint folder to write (created)")->required();
  init->add_option("--layer", init_a.layer, "Inner learner")->check(CLI::IsMember({"linear", "mlp"}))->capture_default_str();
  init->add_option("--hidden", init_a.hidden, "hidden_size")->capture_default_str();
  init->add_option("--layers", init_a.layers, "num_hidden_layers")->capture_default_str();
  init->add_option("--heads", init_a.heads, "num_attention_heads")->capture_default_str();
  init->add_option("--vocab", init_a.vocab, "vocab_size (>= 259 fits the byte tokenizer)")->capture_default_str();
  init->add_option("--intermediate", init_a.intermediate, "intermediate_size (0 = about 8/3 of hidden)")
      ->capture_default_str();
  init->add_option("--mini-batch", init_a.mini_batch, "mini_batch_size")->capture_default_str();
  init->add_option("--max-position", init_a.max_position, "max_position_embeddings")->capture_default_str();
  init->add_option("--conv-kernel", init_a.conv_kernel, "conv_kernel")->capture_default_str();
  init->add_option("--base-lr", init_a.base_lr, "ttt_base_lr")->check(finite_number)->capture_default_str();
  init->add_option("--rope-theta", init_a.rope_theta, "rope_theta")->check(finite_number)->capture_default_str();
  init->add_option("--seed", init_a.seed, "Seed of the random initialisation")->capture_default_str();
  init->add_flag("--pre-conv", init_a.pre_conv, "pre_conv = true (Mamba backbone)");
  init->add_flag("--share-qk", init_a.share_qk, "share_qk = true");
  init->add_flag("--use-gate", init_a.use_gate, "use_gate = true");
  init->add_flag("--untie", init_a.untie, "tie_word_embeddings = false (separate lm_head)");
  init->add_flag("--force", init_a.force, "Overwrite an existing checkpoint");

  TrainArgs train_a;
  CLI::App* trn = app.add_subcommand(
      "train", "Train a model on byte-level text (a file or a folder of files); checkpoints into --out.");
  trn->add_option("--data", train_a.data, "Training text: a file, or a folder (all files, recursive, sorted)")->required();
  trn->add_option("--out", train_a.out, "Output folder: config.json, model.safetensors, optimizer.safetensors, "
                                        "trainer.json, log.csv")->required();
  trn->add_flag("--resume", train_a.resume, "Continue the run in --out (same model flags and data)");
  trn->add_option("--layer", train_a.layer, "Inner learner")->check(CLI::IsMember({"linear", "mlp"}))->capture_default_str();
  trn->add_option("--hidden", train_a.hidden, "hidden_size")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--layers", train_a.layers, "num_hidden_layers")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--heads", train_a.heads, "num_attention_heads")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--intermediate", train_a.intermediate, "intermediate_size (0 = about 8/3 of hidden)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--mini-batch", train_a.mini_batch, "mini_batch_size of the TTT layers")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--base-lr", train_a.base_lr, "ttt_base_lr (warmed up from 0 over --ttt-warmup steps)")
      ->check(finite_number)->capture_default_str();
  trn->add_flag("--pre-conv", train_a.pre_conv, "pre_conv = true (Mamba backbone)");
  trn->add_option("--conv-kernel", train_a.conv_kernel, "conv_kernel")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_flag("--share-qk", train_a.share_qk, "share_qk = true");
  trn->add_flag("--use-gate", train_a.use_gate, "use_gate = true");
  trn->add_option("--seq-len", train_a.seq_len, "Tokens per training sequence")->check(CLI::Range(int64_t(1), int64_t(1) << 30))->capture_default_str();
  trn->add_option("--batch", train_a.batch, "Sequences per micro-batch")->check(CLI::Range(int64_t(1), int64_t(1) << 30))->capture_default_str();
  trn->add_option("--accum", train_a.accum, "Micro-batches per step (gradient accumulation)")->check(CLI::Range(int64_t(1), int64_t(1) << 20))->capture_default_str();
  trn->add_option("--steps", train_a.steps, "Optimiser steps (length of the schedule)")->check(CLI::Range(int64_t(1), int64_t(1) << 40))->capture_default_str();
  trn->add_option("--lr", train_a.lr, "Peak learning rate")->check(finite_number & CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--min-lr", train_a.min_lr, "Floor of the cosine schedule")->check(finite_number & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--warmup", train_a.warmup, "Linear warm-up steps (-1 = 10% of --steps)")->check(CLI::Range(int64_t(-1), int64_t(1) << 40))->capture_default_str();
  trn->add_option("--ttt-warmup", train_a.ttt_warmup, "Warm-up steps of ttt_base_lr from 0 (-1 = --warmup)")->check(CLI::Range(int64_t(-1), int64_t(1) << 40))->capture_default_str();
  trn->add_option("--weight-decay", train_a.weight_decay, "AdamW decoupled weight decay (not on norms, biases, token index)")
      ->check(finite_number & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--beta1", train_a.beta1, "AdamW beta1")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  trn->add_option("--beta2", train_a.beta2, "AdamW beta2")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  trn->add_option("--clip", train_a.clip, "Global gradient-norm clip (0 = off)")->check(finite_number & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--val-fraction", train_a.val_fraction, "Fraction of the tokens (the last ones) held out for validation")
      ->check(CLI::Range(0.0, 0.99))->capture_default_str();
  trn->add_option("--val-every", train_a.val_every, "Validation loss every N steps (0 = only at the end)")->check(CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--val-windows", train_a.val_windows, "Validation windows")->check(CLI::PositiveNumber)->capture_default_str();
  trn->add_option("--save-every", train_a.save_every, "Checkpoint every N steps (0 = only at the end)")->check(CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--stop-after", train_a.stop_after, "Stop after step N as if interrupted (--resume continues)")->check(CLI::NonNegativeNumber);
  trn->add_option("--seed", train_a.seed, "Seed of the initialisation and of the data order")->capture_default_str();
  trn->add_option("--scan-checkpoint-group", train_a.scan_group,
                  "Backward keeps the inner state of every N-th mini-batch and recomputes the others "
                  "(less memory at long context, same gradients; 0 = keep all)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 30))->capture_default_str();
  trn->add_option("--threads", train_a.threads,
                  "Threads over the sequences of a batch (0 = 1; a resumed run continues bit for bit with the same count)")->check(CLI::Range(0, 4096));
  trn->add_flag("--quiet", train_a.quiet, "No progress line on stderr");
  trn->add_option("--arch", train_a.arch,
                  "Architecture: ttt (TTT language model) or hier (simple-hierarchical-transformer, TTT layers "
                  "allowed in any hierarchy's attention slot via --mixer)")
      ->check(CLI::IsMember({"ttt", "hier"}))->capture_default_str();
  trn->add_option("--config", train_a.config,
                  "--arch hier: a JSON file of HierarchicalTransformer constructor arguments (flags given override its keys)");
  trn->add_option("--hierarchies", train_a.hierarchies, "--arch hier: compression factors, e.g. 1,2,8")->delimiter(',');
  trn->add_option("--window-sizes", train_a.window_sizes,
                  "--arch hier: per hierarchy (or one for all) none = full attention, 0 = feedforward only, w = local window")
      ->delimiter(',');
  trn->add_option("--strides", train_a.strides, "--arch hier: hierarchical_stride, e.g. 1,1,2")->delimiter(',');
  trn->add_option("--mixer", train_a.mixer, "--arch hier: attention, ttt-linear or ttt-mlp, one or one per hierarchy")
      ->delimiter(',');
  trn->add_option("--dim-head", train_a.dim_head, "--arch hier: dim_head (default hidden / heads)")->check(CLI::PositiveNumber);
  trn->add_option("--ff-mult", train_a.ff_mult, "--arch hier: ff_mult")->check(finite_number & CLI::PositiveNumber)->capture_default_str();
  trn->add_flag("--merge-all", train_a.merge_all, "--arch hier: hierarchy_merge_all = true");
  trn->add_option("--predict-hierarchy", train_a.predict_hierarchy, "--arch hier: predict_hierarchy")->check(CLI::PositiveNumber);
  trn->add_flag("--predict-use-all", train_a.predict_use_all, "--arch hier: predict_use_all_hierarchy = true");
  trn->add_option("--recon-weight", train_a.recon_weight, "--arch hier: recon_loss_weight")
      ->check(finite_number & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--ar-weight", train_a.ar_weight, "--arch hier: hierarchical_ar_loss_weight")
      ->check(finite_number & CLI::NonNegativeNumber)->capture_default_str();
  trn->add_option("--ignore-index", train_a.ignore_index, "--arch hier: ignore_index of the cross entropy")->capture_default_str();

  EvalLossArgs el_a;
  CLI::App* el = app.add_subcommand(
      "eval-loss", "Mean next-token loss of a model over byte-level text, and the mean at each token position.");
  el->add_option("--model", el_a.model, "Checkpoint folder")->required();
  el->add_option("--data", el_a.data, "Text: a file, or a folder (all files, recursive, sorted)")->required();
  el->add_option("--seq-len", el_a.seq_len, "Tokens per window (consecutive windows of seq-len + 1 tokens share one)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30))->required();
  el->add_option("--out", el_a.out, "CSV of position,loss (written atomically)");
  el->add_option("--max-windows", el_a.max_windows, "Use at most N windows (0 = all)")->check(CLI::NonNegativeNumber);
  el->add_option("--threads", el_a.threads, "Threads of the per-head loops (0 = default)")->check(CLI::Range(0, 4096));

  auto prefix = [&]() -> std::string {
    for (CLI::App* s : {info, eval, gen, init, trn, el})
      if (s->parsed()) return "ttt " + s->get_name() + ": ";
    return "ttt: ";
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::string msg = one_line(e.what());
    // CLI11 checks required options before unknown ones; an unknown flag is the better reason.
    std::vector<std::string> extra = app.remaining();
    for (CLI::App* s : {info, eval, gen, init, trn, el})
      if (s->parsed())
        for (const std::string& r : s->remaining()) extra.push_back(r);
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
    if (info->parsed()) return run_info(info_a);
    if (eval->parsed()) return run_eval(eval_a);
    if (gen->parsed()) {
      if (o_ids->count() == 0 && o_text->count() == 0) throw UsageError("give the prompt with --prompt-ids or --prompt");
      return run_generate(gen_a);
    }
    if (init->parsed()) return run_init(init_a);
    if (trn->parsed()) {
      for (const CLI::Option* op : trn->get_options())
        if (op->count() > 0) train_a.given.insert(op->get_name());
      return run_train(train_a);
    }
    if (el->parsed()) return run_eval_loss(el_a);
    throw UsageError("no subcommand (info, eval, generate, init, train, eval-loss)");
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
