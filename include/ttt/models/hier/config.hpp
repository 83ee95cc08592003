#pragma once
/// \file hier/config.hpp
/// The constructor arguments of lucidrains' `HierarchicalTransformer`
/// (simple-hierarchical-transformer 0.2.0) as a C++ struct, read from and written to the
/// `config.json` of a checkpoint exactly as it stores them: per-hierarchy options are a number or
/// a list (one entry per hierarchy), `window_sizes` entries may be null (full attention).
///
/// \code
///   auto cfg = ttt::hier::HierConfig::from_json(nlohmann::json::parse(R"({"num_tokens": 256, "dim": 64,
///       "depth": 2, "hierarchies": [1, 2], "window_sizes": [16, null]})"));
///   cfg.window(1);  // std::nullopt: full attention at 2x
/// \endcode
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../core/error.hpp"
#include "../../inner/optimizers.hpp"
#include "../../inner/registry.hpp"
#include "../../io/file.hpp"

namespace ttt::hier {

inline constexpr const char* kModelType = "simple-hierarchical-transformer";

/// The TTT mixers a config may name: "ttt-" and a learner's name (the built-in ones of
/// inner/registry.hpp by default; a program with learners of its own passes its tuple as
/// `Learners`), optionally "-" and an inner optimizer's (inner/optimizers.hpp; gd when none),
/// optionally "-before" (query order before, inner::parse_ttt_name): "ttt-linear",
/// "ttt-mlp-momentum", "ttt-swiglu-muon-before". For messages: "ttt-linear, ttt-mlp, ...
/// [-gd|-momentum|...][-before]".
template <class Learners = inner::Builtin>
std::string ttt_mixer_names() {
  std::string s, o;
  std::apply([&](auto... l) { ((s += (s.empty() ? "ttt-" : ", ttt-") + std::string(decltype(l)::name)), ...); },
             Learners{});
  std::apply([&](auto... x) { ((o += (o.empty() ? "-" : "|-") + std::string(decltype(x)::name)), ...); },
             inner::BuiltinOptimizers{});
  return s + ", each optionally with an inner optimizer [" + o + "] and then [-before]";
}

/// A TTT mixer's learner and inner optimizer (views into the mixer's name).
using TTTMixer = inner::TTTName;

/// The learner and optimizer of a TTT mixer ("ttt-mlp-momentum" -> {"mlp", "momentum"}), or
/// nullopt when `mixer` is not "ttt-", a learner of `Learners` and optionally "-" a built-in
/// optimizer.
template <class Learners = inner::Builtin>
std::optional<TTTMixer> ttt_mixer(std::string_view mixer) {
  return inner::parse_ttt_name<Learners>(mixer);
}

/// The learner of a TTT mixer ("ttt-linear" -> "linear"), or nullopt (see `ttt_mixer`).
template <class Learners = inner::Builtin>
std::optional<std::string_view> mixer_learner(std::string_view mixer) {
  if (const auto m = ttt_mixer<Learners>(mixer)) return m->learner;
  return std::nullopt;
}

/// Every constructor option of the original, with its defaults. Per-hierarchy options hold one
/// value (applies to every hierarchy) or one per hierarchy; `*_list` records which, so a save
/// writes what was read.
struct HierConfig {
  int64_t num_tokens = 256;
  std::vector<int64_t> dim = {512};
  int64_t depth = 2;
  int64_t seq_len = 2048;
  std::vector<int64_t> dim_head = {64};
  std::vector<int64_t> heads = {8};
  std::vector<double> ff_mult = {4};
  std::vector<int64_t> hierarchies = {1};
  /// nullopt = full attention, 0 = no attention (feedforward only), w > 0 = local window of w + 1.
  std::vector<std::optional<int64_t>> window_sizes = {std::nullopt};
  std::vector<int64_t> hierarchical_stride = {1};
  bool hierarchy_merge_all = false;
  std::optional<int64_t> predict_hierarchy;
  bool predict_use_all_hierarchy = false;
  double recon_loss_weight = 0.1;
  double hierarchical_ar_loss_weight = 0.25;
  int64_t ignore_index = 0;
  bool use_flash_attn = false;  ///< accepted and ignored, as in the original (never wired through)
  /// Extension (not in the original): what fills the attention slot of each hierarchy's blocks,
  /// "attention" (the original), "ttt-linear" or "ttt-mlp" (a TTT layer, ttt/layer.hpp, run on each
  /// of the a = c / s phases from its initial fast weights). One value or one per hierarchy.
  std::vector<std::string> mixer = {"attention"};
  int64_t ttt_mini_batch_size = 16;  ///< TTT mixers: inner mini-batch size
  double ttt_base_lr = 1.0;          ///< TTT mixers: base inner learning rate
  bool ttt_use_gate = false;         ///< TTT mixers: GELU output gate
  bool mixer_list = false;
  bool dim_list = false, dim_head_list = false, heads_list = false, ff_mult_list = false, hierarchies_list = false,
       window_sizes_list = false, stride_list = false;

  // ---- per-hierarchy views (valid after validate()) ----
  int64_t num_hierarchies() const { return int64_t(hierarchies.size()); }
  template <class V>
  static auto at(const std::vector<V>& v, int64_t h) {
    return v.size() == 1 ? v[0] : v[size_t(h)];
  }
  int64_t dim_of(int64_t h) const { return at(dim, h); }
  int64_t dim_head_of(int64_t h) const { return at(dim_head, h); }
  int64_t heads_of(int64_t h) const { return at(heads, h); }
  int64_t ff_inner(int64_t h) const { return int64_t(double(dim_of(h)) * at(ff_mult, h)); }  // int(dim * mult)
  int64_t compression(int64_t h) const { return hierarchies[size_t(h)]; }
  int64_t stride(int64_t h) const { return at(hierarchical_stride, h); }
  /// a = c / s: the number of interleaved phases a hierarchy's blocks run on.
  int64_t axial(int64_t h) const { return compression(h) / stride(h); }
  /// The window as the layers use it: one larger than seq_len // c becomes full attention.
  std::optional<int64_t> window(int64_t h) const {
    const std::optional<int64_t> w = at(window_sizes, h);
    if (w && *w > seq_len / compression(h)) return std::nullopt;
    return w;
  }
  bool has_attn(int64_t h) const { return window(h) != std::optional<int64_t>(0); }
  const std::string& mixer_of(int64_t h) const { return mixer.size() == 1 ? mixer[0] : mixer[size_t(h)]; }
  /// The slot of hierarchy h holds a TTT layer (has_attn(h) is then true).
  bool ttt_mixer(int64_t h) const { return mixer_of(h) != "attention"; }
  bool any_ttt() const {
    for (int64_t h = 0; h < num_hierarchies(); ++h)
      if (ttt_mixer(h)) return true;
    return false;
  }
  bool local_attn(int64_t h) const { return window(h).has_value() && *window(h) > 0; }
  int64_t token_dim() const { return *std::max_element(dim.begin(), dim.end()); }  // max(dims)
  int64_t sum_dims() const {
    int64_t s = 0;
    for (int64_t h = 0; h < num_hierarchies(); ++h) s += dim_of(h);
    return s;
  }
  int64_t predict_index() const {
    const int64_t p = predict_hierarchy ? *predict_hierarchy : *std::min_element(hierarchies.begin(), hierarchies.end());
    return int64_t(std::find(hierarchies.begin(), hierarchies.end(), p) - hierarchies.begin());
  }
  bool should_recon() const { return recon_loss_weight > 0; }
  bool need_merge() const { return num_hierarchies() > 1; }
  int64_t merge_out() const { return hierarchy_merge_all ? sum_dims() : dim_of(predict_index()); }
  int64_t logit_in() const { return predict_use_all_hierarchy ? sum_dims() : dim_of(predict_index()); }

  /// The original's constructor checks, plus the combinations it crashes on, as ConfigError
  /// naming the option and the allowed values. A TTT mixer names a learner of `Learners` (the
  /// built-in ones by default).
  template <class Learners = inner::Builtin>
  void validate(const std::string& source = "config") const {
    auto fail = [&](const std::string& what) { throw ConfigError(source + ": " + what); };
    auto pow2 = [](int64_t v) { return v > 0 && (v & (v - 1)) == 0; };
    auto list = [](const auto& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
      return s + "]";
    };
    if (num_tokens <= 0) fail("num_tokens must be > 0, got " + std::to_string(num_tokens));
    if (depth < 0) fail("depth must be >= 0, got " + std::to_string(depth));
    if (seq_len <= 0) fail("seq_len must be > 0, got " + std::to_string(seq_len));
    if (hierarchies.empty()) fail("hierarchies must not be empty");
    if (std::set<int64_t>(hierarchies.begin(), hierarchies.end()).size() != hierarchies.size())
      fail("hierarchies " + list(hierarchies) + ": compression factors must be all unique integers");
    for (int64_t c : hierarchies)
      if (!pow2(c)) fail("hierarchies " + list(hierarchies) + ": only powers of two (1, 2, 4, 8, ...) are allowed, got " + std::to_string(c));
    const size_t H = hierarchies.size();
    auto len = [&](const char* name, size_t n) {
      if (n != 1 && n != H)
        fail(std::string(name) + " has " + std::to_string(n) + " entries; expected one value or one per hierarchy (" +
             std::to_string(H) + ")");
    };
    len("dim", dim.size());
    len("window_sizes", window_sizes.size());
    len("dim_head", dim_head.size());
    len("heads", heads.size());
    len("ff_mult", ff_mult.size());
    len("hierarchical_stride", hierarchical_stride.size());
    for (int64_t d : dim)
      if (d <= 0) fail("dim must be > 0, got " + std::to_string(d));
    for (int64_t d : dim_head)
      if (d <= 0 || d % 2) fail("dim_head must be a positive even number (rotary halves), got " + std::to_string(d));
    for (int64_t d : heads)
      if (d <= 0) fail("heads must be > 0, got " + std::to_string(d));
    for (double m : ff_mult)
      if (!(m > 0)) fail("ff_mult must be > 0, got " + std::to_string(m));
    for (int64_t h = 0; h < int64_t(H); ++h)
      if (ff_inner(h) <= 0) fail("ff_mult " + std::to_string(at(ff_mult, h)) + " gives an empty feedforward at hierarchy " + std::to_string(compression(h)) + "x");
    for (const auto& w : window_sizes)
      if (w && *w < 0) fail("window_sizes entries must be null (full attention), 0 (no attention) or > 0, got " + std::to_string(*w));
    for (int64_t s : hierarchical_stride)
      if (!pow2(s)) fail("hierarchical_stride " + list(hierarchical_stride) + ": all strides must be powers of two (1, 2, 4, ...), got " + std::to_string(s));
    for (int64_t h = 0; h < int64_t(H); ++h)
      if (stride(h) > compression(h))
        fail("hierarchical_stride " + std::to_string(stride(h)) + " of hierarchy " + std::to_string(compression(h)) +
             "x: a stride must be at most its compression factor (allowed: 1 .. " + std::to_string(compression(h)) + ", powers of two)");
    len("mixer", mixer.size());
    for (int64_t h = 0; h < int64_t(H); ++h) {
      const std::string& mx = mixer_of(h);
      if (mx != "attention" && !mixer_learner<Learners>(mx))
        fail("mixer '" + mx + "' at hierarchy " + std::to_string(compression(h)) +
             "x is not a known mixer (valid: attention, " + ttt_mixer_names<Learners>() + ")");
      if (mx == "attention") continue;
      if (window(h) == std::optional<int64_t>(0))
        fail("mixer '" + mx + "' at hierarchy " + std::to_string(compression(h)) +
             "x has window_sizes 0 (no mixer); use null or a window (ignored by TTT) there");
      if (dim_of(h) % heads_of(h) != 0 || (dim_of(h) / heads_of(h)) % 2 != 0)
        fail("mixer '" + mx + "' at hierarchy " + std::to_string(compression(h)) + "x: dim " + std::to_string(dim_of(h)) +
             " must be heads (" + std::to_string(heads_of(h)) + ") times an even TTT head width");
    }
    if (any_ttt() && ttt_mini_batch_size <= 0)
      fail("ttt_mini_batch_size must be > 0, got " + std::to_string(ttt_mini_batch_size));
    if (any_ttt() && !(ttt_base_lr > 0)) fail("ttt_base_lr must be > 0, got " + std::to_string(ttt_base_lr));
    if (predict_hierarchy && std::find(hierarchies.begin(), hierarchies.end(), *predict_hierarchy) == hierarchies.end())
      fail("predict_hierarchy " + std::to_string(*predict_hierarchy) + " is not among the hierarchies " + list(hierarchies));
    const int64_t p = predict_index();
    if (!hierarchy_merge_all && stride(p) != 1)
      fail("the predicting hierarchy (" + std::to_string(compression(p)) + "x) must have hierarchical_stride 1, got " +
           std::to_string(stride(p)));
    if (hierarchy_merge_all && stride(p) != 1)
      fail("hierarchy_merge_all with a strided predicting hierarchy (" + std::to_string(compression(p)) +
           "x, stride " + std::to_string(stride(p)) + ") is not supported: its logits would be shorter than the labels "
           "(the original crashes); use hierarchical_stride 1 for the predicting hierarchy");
  }

  // ---- JSON (templates over the JSON type, nlohmann::json by default: a program that includes
  // this header but reads no JSON compiles none of the parser) ----
  template <class Learners = inner::Builtin, class Json>
  static HierConfig from_json(const Json& j, const std::string& source = "config") {
    auto fail = [&](const std::string& what) { throw FormatError(source + ": " + what); };
    if (!j.is_object()) fail("expected a JSON object at the top level");
    static const std::set<std::string> known = {
        "num_tokens", "dim", "depth", "seq_len", "dim_head", "heads", "ff_mult", "hierarchies", "window_sizes",
        "hierarchical_stride", "hierarchy_merge_all", "predict_hierarchy", "predict_use_all_hierarchy",
        "recon_loss_weight", "hierarchical_ar_loss_weight", "ignore_index", "use_flash_attn", "model_type",
        "mixer", "ttt_mini_batch_size", "ttt_base_lr", "ttt_use_gate"};
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!known.count(it.key())) fail("unknown key '" + it.key() + "' (not a HierarchicalTransformer option)");
    if (j.contains("model_type") && j["model_type"] != kModelType)
      fail("model_type is " + j["model_type"].dump() + ", expected \"" + std::string(kModelType) + "\"");
    HierConfig c;
    auto integer = [&](const Json& v, const std::string& k) -> int64_t {
      if (!v.is_number_integer()) fail("key '" + k + "' must be an integer, got " + v.dump());
      return v.template get<int64_t>();
    };
    auto number = [&](const Json& v, const std::string& k) -> double {
      if (!v.is_number()) fail("key '" + k + "' must be a number, got " + v.dump());
      return v.template get<double>();
    };
    auto boolean = [&](const char* k, bool& dst) {
      if (!j.contains(k)) return;
      if (!j[k].is_boolean()) fail(std::string("key '") + k + "' must be true or false, got " + j[k].dump());
      dst = j[k].template get<bool>();
    };
    auto ints = [&](const char* k, std::vector<int64_t>& dst, bool& is_list) {
      if (!j.contains(k)) return;
      const auto& v = j[k];
      dst.clear();
      is_list = v.is_array();
      if (is_list) {
        if (v.empty()) fail(std::string("key '") + k + "' must not be an empty list");
        for (const auto& e : v) dst.push_back(integer(e, k));
      } else {
        dst.push_back(integer(v, k));
      }
    };
    if (!j.contains("num_tokens")) fail("missing key 'num_tokens'");
    if (!j.contains("dim")) fail("missing key 'dim'");
    if (!j.contains("depth")) fail("missing key 'depth'");
    c.num_tokens = integer(j["num_tokens"], "num_tokens");
    c.depth = integer(j["depth"], "depth");
    if (j.contains("seq_len")) c.seq_len = integer(j["seq_len"], "seq_len");
    ints("dim", c.dim, c.dim_list);
    ints("dim_head", c.dim_head, c.dim_head_list);
    ints("heads", c.heads, c.heads_list);
    ints("hierarchies", c.hierarchies, c.hierarchies_list);
    ints("hierarchical_stride", c.hierarchical_stride, c.stride_list);
    if (j.contains("ff_mult")) {
      const auto& v = j["ff_mult"];
      c.ff_mult.clear();
      c.ff_mult_list = v.is_array();
      if (c.ff_mult_list) {
        if (v.empty()) fail("key 'ff_mult' must not be an empty list");
        for (const auto& e : v) c.ff_mult.push_back(number(e, "ff_mult"));
      } else {
        c.ff_mult.push_back(number(v, "ff_mult"));
      }
    }
    if (j.contains("window_sizes")) {
      const auto& v = j["window_sizes"];
      auto one = [&](const Json& e) -> std::optional<int64_t> {
        if (e.is_null()) return std::nullopt;
        return integer(e, "window_sizes");
      };
      c.window_sizes.clear();
      c.window_sizes_list = v.is_array();
      if (c.window_sizes_list) {
        if (v.empty()) fail("key 'window_sizes' must not be an empty list");
        for (const auto& e : v) c.window_sizes.push_back(one(e));
      } else {
        c.window_sizes.push_back(one(v));
      }
    }
    boolean("hierarchy_merge_all", c.hierarchy_merge_all);
    boolean("predict_use_all_hierarchy", c.predict_use_all_hierarchy);
    boolean("use_flash_attn", c.use_flash_attn);
    if (j.contains("predict_hierarchy") && !j["predict_hierarchy"].is_null())
      c.predict_hierarchy = integer(j["predict_hierarchy"], "predict_hierarchy");
    if (j.contains("recon_loss_weight")) c.recon_loss_weight = number(j["recon_loss_weight"], "recon_loss_weight");
    if (j.contains("hierarchical_ar_loss_weight"))
      c.hierarchical_ar_loss_weight = number(j["hierarchical_ar_loss_weight"], "hierarchical_ar_loss_weight");
    if (j.contains("ignore_index")) c.ignore_index = integer(j["ignore_index"], "ignore_index");
    if (j.contains("mixer")) {
      const auto& v = j["mixer"];
      auto one = [&](const Json& e) {
        if (!e.is_string())
          fail("key 'mixer' entries must be strings (attention, " + ttt_mixer_names<Learners>() + "), got " + e.dump());
        return e.template get<std::string>();
      };
      c.mixer.clear();
      c.mixer_list = v.is_array();
      if (c.mixer_list) {
        if (v.empty()) fail("key 'mixer' must not be an empty list");
        for (const auto& e : v) c.mixer.push_back(one(e));
      } else {
        c.mixer.push_back(one(v));
      }
    }
    if (j.contains("ttt_mini_batch_size")) c.ttt_mini_batch_size = integer(j["ttt_mini_batch_size"], "ttt_mini_batch_size");
    if (j.contains("ttt_base_lr")) c.ttt_base_lr = number(j["ttt_base_lr"], "ttt_base_lr");
    boolean("ttt_use_gate", c.ttt_use_gate);
    c.template validate<Learners>(source);
    return c;
  }

  template <class Json = nlohmann::json>
  Json to_json() const {
    Json j;
    auto put = [&](const char* k, const auto& v, bool is_list) {
      if (is_list)
        j[k] = v;
      else
        j[k] = v[0];
    };
    j["num_tokens"] = num_tokens;
    put("dim", dim, dim_list);
    j["depth"] = depth;
    j["seq_len"] = seq_len;
    put("dim_head", dim_head, dim_head_list);
    put("heads", heads, heads_list);
    Json ff = Json::array();
    for (double m : ff_mult) ff.push_back(m == std::floor(m) ? Json(int64_t(m)) : Json(m));
    j["ff_mult"] = ff_mult_list ? ff : ff[0];
    put("hierarchies", hierarchies, hierarchies_list);
    Json ws = Json::array();
    for (const auto& w : window_sizes) ws.push_back(w ? Json(*w) : Json(nullptr));
    j["window_sizes"] = window_sizes_list ? ws : ws[0];
    put("hierarchical_stride", hierarchical_stride, stride_list);
    j["hierarchy_merge_all"] = hierarchy_merge_all;
    j["predict_hierarchy"] = predict_hierarchy ? Json(*predict_hierarchy) : Json(nullptr);
    j["predict_use_all_hierarchy"] = predict_use_all_hierarchy;
    j["recon_loss_weight"] = recon_loss_weight;
    j["hierarchical_ar_loss_weight"] = hierarchical_ar_loss_weight;
    j["ignore_index"] = ignore_index;
    j["use_flash_attn"] = use_flash_attn;
    if (any_ttt()) {  // the extension's keys only where used: the original's configs stay as they were
      put("mixer", mixer, mixer_list);
      j["ttt_mini_batch_size"] = ttt_mini_batch_size;
      j["ttt_base_lr"] = ttt_base_lr;
      j["ttt_use_gate"] = ttt_use_gate;
    }
    j["model_type"] = kModelType;
    return j;
  }

  template <class Learners = inner::Builtin, class Json = nlohmann::json>
  static HierConfig load(const std::filesystem::path& p) {
    const std::string text = io::read_file(p);
    Json j;
    try {
      j = Json::parse(text);
    } catch (const typename Json::exception& e) {
      throw FormatError(p.string() + ": not valid JSON: " + e.what());
    }
    return from_json<Learners>(j, p.string());
  }
};

}  // namespace ttt::hier
