// A learner written once: gradients derived from its map (ttt/inner/inner_grad.hpp,
// ttt/inner/derived.hpp, on the ad::Real tape of ttt/ad/real.hpp).
//   - the tape's first and second derivatives against finite differences;
//   - derived == hand-written, for every built-in learner: the inner gradient (accumulate_grad)
//     and the training forward and reverse (LearnerGrad), every output and every cotangent;
//   - a learner that exists only in this file (apply only, nonlinear) against central finite
//     differences in double, and through loss_and_grad on a whole model.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include <ttt/ad/real.hpp>
#include <ttt/inner/derived.hpp>
#include <ttt/train/gradcheck.hpp>
#include <ttt/models/ttt_model.hpp>
#include <ttt/train/model_grad.hpp>
#include <ttt/train/optim.hpp>

#include "test_helpers.hpp"
#include "test_learners.hpp"

using namespace ttt;

namespace test_derived {

using ttt_test::TanhResidual;
static_assert(inner::InnerLearner<TanhResidual>);
static_assert(!inner::has_accumulate_grad<TanhResidual>);
static_assert(train::HasLearnerGrad<TanhResidual>);

double max_rel(const MatD& a, const MatD& b) { return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-12); }
double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < a.size(); ++i) num = std::max(num, std::abs(a[i] - b[i])), den = std::max(den, std::abs(b[i]));
  return num / den;
}

// TTT-MLP's hand-written inner gradient uses the reference's gelu_bwd, whose constants (0.79788456,
// 0.1070322243) are sqrt(2/pi) and 3 * 0.044715 * sqrt(2/pi) rounded to ~1e-10 relative; the derived
// one differentiates the forward's exact GELU. Their difference, ~1e-9 relative, is the
// reference's, and the tolerance of the MLP rows (1e-8) is set just above it.
template <class L>
constexpr double tol(double exact) {
  return std::is_same_v<L, inner::MLP> ? 1e-8 : exact;
}

template <class L>
void derived_inner_grad_matches(int64_t f, int64_t n) {
  std::mt19937_64 rng(7);
  const int64_t P = inner::param_count(L::param_specs(f));
  const auto th = train::detail::random_theta(P, rng);
  const train::detail::RandomSegment rs(f, n, rng);
  std::vector<double> want(size_t(P), 0.1), got(size_t(P), 0.1);
  L::accumulate_grad(th.data(), f, CRefT<double>(rs.XK), CRefT<double>(rs.XV), rs.lr.data(), want.data());
  inner::derived_accumulate_grad<L, double>(th.data(), f, CRefT<double>(rs.XK), CRefT<double>(rs.XV), rs.lr.data(),
                                            got.data());
  INFO(L::name << " f=" << f << " n=" << n);
  CHECK(max_rel(got, want) < tol<L>(1e-12));
}

template <class L>
void derived_learner_grad_matches(inner::Dims d, int64_t n) {
  std::mt19937_64 rng(11);
  const int64_t f = d.f;
  const int64_t P = inner::param_count(L::param_specs(d));
  const auto th = train::detail::random_theta(P, rng);
  const train::detail::RandomSegment rs(f, n, rng);
  const MatD dZq = train::detail::RandomSegment(f, n, rng).XV;
  const auto dthe = train::detail::random_theta(P, rng, 1.0);
  INFO(L::name << " f=" << f << " hidden=" << d.hidden << " n=" << n);

  struct Out {
    MatD Zq, dXQ, dXK, dXV;
    std::vector<double> the, dth, dte, dlr, dlw, dlb;
  };
  // kept: the forward's intermediates kept in a store of their own (train::Scratch), as a
  // group-0 tape does, and the backward reads them instead of recomputing
  // in_place: dth0 in dth_end's buffer (LearnerGrad's state_grad_in_place)
  auto run = [&](auto grad_tag, bool kept = false, bool in_place = false) {
    using G = typename decltype(grad_tag)::type;
    Out o;
    o.Zq = MatD(n, f);
    o.the.assign(size_t(P), 0.0);
    train::Scratch<double> ws, store;
    if (kept) ws.keep(&store, train::kept_slots<G>(), false);
    G::template forward<double>(th.data(), d, rs.view(), o.Zq, o.the.data(), ws);
    if (kept) {
      ws.release();
      // another mini-batch's forward in between, as in a scan: the store must be untouched
      MatD z(n, f);
      std::vector<double> e(static_cast<size_t>(P));
      G::template forward<double>(dthe.data(), d, rs.view(), z, e.data(), ws);
      ws.keep(&store, train::kept_slots<G>(), true);
    }
    o.dXQ = o.dXK = o.dXV = MatD::Zero(n, f);
    if (in_place) o.dth = dthe;
    else o.dth.assign(size_t(P), 0.0);
    o.dte.assign(size_t(n), 0.0);
    o.dlr.assign(size_t(n), 0.0);
    o.dlw.assign(size_t(f), 0.0);
    o.dlb.assign(size_t(f), 0.0);
    train::SegmentGradD sg{o.dXQ, o.dXK, o.dXV, o.dte.data(), o.dlr.data(), o.dlw.data(), o.dlb.data()};
    G::template backward<double>(th.data(), d, rs.view(), dZq, in_place ? o.dth.data() : dthe.data(), o.dth.data(),
                                 sg, ws);
    return o;
  };
  const Out want = run(std::type_identity<train::LearnerGrad<L>>{});
  const Out got = run(std::type_identity<train::DerivedGrad<L>>{});
  if constexpr (train::kept_slots<train::LearnerGrad<L>>() > 0) {  // bit for bit: the same arithmetic
    const Out k = run(std::type_identity<train::LearnerGrad<L>>{}, true);
    CHECK(k.Zq == want.Zq);
    CHECK(k.the == want.the);
    CHECK(k.dth == want.dth);
    CHECK((k.dXQ == want.dXQ && k.dXK == want.dXK && k.dXV == want.dXV));
    CHECK((k.dte == want.dte && k.dlr == want.dlr && k.dlw == want.dlw && k.dlb == want.dlb));
  }
  if constexpr (train::state_grad_in_place<train::LearnerGrad<L>>()) {
    // the other cotangents bit for bit (the same arithmetic); theta0's up to the order of its adds
    const Out i = run(std::type_identity<train::LearnerGrad<L>>{}, false, true);
    CHECK(max_rel(i.dth, want.dth) < 1e-14);
    CHECK((i.dXQ == want.dXQ && i.dXK == want.dXK && i.dXV == want.dXV));
    CHECK((i.dte == want.dte && i.dlr == want.dlr && i.dlw == want.dlw && i.dlb == want.dlb));
  }
  CHECK(max_rel(got.Zq, want.Zq) < tol<L>(1e-12));
  CHECK(max_rel(got.the, want.the) < tol<L>(1e-12));
  CHECK(max_rel(got.dth, want.dth) < tol<L>(1e-10));
  CHECK(max_rel(got.dXQ, want.dXQ) < tol<L>(1e-10));
  CHECK(max_rel(got.dXK, want.dXK) < tol<L>(1e-10));
  CHECK(max_rel(got.dXV, want.dXV) < tol<L>(1e-10));
  CHECK(max_rel(got.dte, want.dte) < tol<L>(1e-10));
  CHECK(max_rel(got.dlr, want.dlr) < tol<L>(1e-10));
  CHECK(max_rel(got.dlw, want.dlw) < tol<L>(1e-10));
  CHECK(max_rel(got.dlb, want.dlb) < tol<L>(1e-10));
}

TEST_CASE("ad::Real: first and second derivatives against finite differences") {
  using R = ad::Real<double>;
  ad::RealTape<double> tape;
  ad::RealTape<double>::Scope scope(tape);
  auto fn = [](auto x, auto y) {
    using std::exp, std::sqrt, std::tanh, std::log;
    return sqrt(x * y + 2.0) * tanh(x) + exp(0.3 * y) / x - log(y) + x / (1.0 + y * y) - 1.0 / (1.0 + exp(y - x));
  };
  const double x0 = 0.7, y0 = 1.3, h = 1e-4;
  const R x = tape.leaf(x0), y = tape.leaf(y0);
  const R z = fn(x, y);
  CHECK(std::abs(z.v - fn(x0, y0)) < 1e-15);
  const auto g = tape.gradient({z}, {R(1.0)}, {x, y}, ad::Adjoint::recorded);
  const double fx = (fn(x0 + h, y0) - fn(x0 - h, y0)) / (2 * h), fy = (fn(x0, y0 + h) - fn(x0, y0 - h)) / (2 * h);
  CHECK(std::abs(g[0].v - fx) < 1e-7);
  CHECK(std::abs(g[1].v - fy) < 1e-7);
  // second derivatives: the recorded gradient differentiated again
  const auto hx = tape.gradient({g[0]}, {R(1.0)}, {x, y});
  const double fxx = (fn(x0 + h, y0) - 2 * fn(x0, y0) + fn(x0 - h, y0)) / (h * h);
  const double fxy = (fn(x0 + h, y0 + h) - fn(x0 + h, y0 - h) - fn(x0 - h, y0 + h) + fn(x0 - h, y0 - h)) / (4 * h * h);
  CHECK(std::abs(hx[0].v - fxx) < 1e-5);
  CHECK(std::abs(hx[1].v - fxy) < 1e-5);
  // sigmoid on its own
  const R s = ad::sigmoid(x);
  const auto gs = tape.gradient({s}, {R(1.0)}, {x});
  CHECK(std::abs(gs[0].v - s.v * (1 - s.v)) < 1e-15);
  // without an active tape an operation on a variable throws
  R a = x;
  {
    ad::RealTape<double> other;
    (void)other;
  }
  ad::RealTape<double>::current() = nullptr;
  CHECK_THROWS_AS((void)(a * a), Error);
  ad::RealTape<double>::current() = &tape;
}

TEST_CASE("derived inner gradient == hand-written accumulate_grad") {
  for (int64_t f : {1, 4, 7})
    for (int64_t n : {1, 5}) {
      derived_inner_grad_matches<inner::Linear>(f, n);
      derived_inner_grad_matches<inner::MLP>(f, n);
      derived_inner_grad_matches<inner::LinearAttention>(f, n);
    }
}

TEST_CASE("derived training forward and reverse == hand-written LearnerGrad (every output and cotangent)") {
  for (int64_t f : {1, 4, 7})
    for (int64_t n : {1, 2, 6}) {
      derived_learner_grad_matches<inner::Linear>(f, n);
      derived_learner_grad_matches<inner::MLP>(f, n);
      derived_learner_grad_matches<inner::LinearAttention>(f, n);
      derived_learner_grad_matches<inner::SwiGLU>(inner::Dims{f}, n);  // hidden 4f
      derived_learner_grad_matches<inner::SwiGLU>(inner::Dims{f, 3}, n);
    }
}

TEST_CASE("linear attention's training forward and reverse in blocks == the derived ones, over several blocks") {
  // its mini-batch is the whole sequence, run in blocks of kBlock rows carrying the (f x f) prefix
  // and suffix states: a block boundary exactly at the end, one row past it, a short last block
  constexpr int64_t B = train::LearnerGrad<inner::LinearAttention>::kBlock;
  for (int64_t n : {B, B + 1, 2 * B + 37}) derived_learner_grad_matches<inner::LinearAttention>(inner::Dims{3}, n);
}

TEST_CASE("a learner written once (apply only): forward == the layer's float path, backward == finite differences") {
  for (int64_t n : {1, 3, 6}) {
    const auto rf = train::check_learner_forward<TanhResidual>(5, n, 2);
    const auto rb = train::check_learner_backward<TanhResidual>(5, n, 2);
    INFO("n=" << n << ": forward " << rf.max_err << " at " << rf.worst << "; backward " << rb.max_err << " at "
              << rb.worst);
    CHECK(rf.max_err < 1e-5);
    CHECK(rb.max_err < 1e-6);
  }
}

TEST_CASE("a learner written once trains: loss_and_grad == central differences of the model's loss") {
  ModelConfig cfg = ModelConfig::sized(std::string(TanhResidual::name), 23, 12, 2, 2, 16, 3);
  TTTModel<TanhResidual> fmodel(cfg);
  th::randomize(fmodel, 5, 0.3);
  auto model = train::cast_model<double>(fmodel);
  const auto ids = th::random_ids(8, cfg.vocab_size, 6);
  int checked = 0;
  const double worst = ttt_test::fd_check_loss_and_grad(model, ids, 1e-5, checked);
  MESSAGE("checked " << checked << " entries, worst relative error " << worst);
}

// The README's learner, verbatim.
struct TanhLinear {  // f(x) = tanh(x W)
  static constexpr std::string_view name = "tanh_linear";
  static std::vector<ttt::inner::ParamSpec> param_specs(int64_t f) { return {{"W1", {f, f}}}; }
  template <class S>
  static void apply(const S* theta, int64_t f, ttt::CRefT<S> X, ttt::RefT<S> Z) {
    using std::tanh;
    Z.noalias() = X * Eigen::Map<const ttt::MatT<S>>(theta, f, f);
    for (Eigen::Index i = 0; i < Z.size(); ++i) Z.data()[i] = tanh(Z.data()[i]);
  }
};

TEST_CASE("the README's learner trains: the loss of a repeating sequence falls") {
  auto cfg = ttt::ModelConfig::sized("tanh_linear", /*vocab=*/64, /*hidden=*/32, /*layers=*/2, /*heads=*/4,
                                     /*intermediate=*/64);
  ttt::TTTModel<TanhLinear> model(cfg), grad(cfg);
  model.init_weights(42);
  std::vector<int64_t> ids;
  for (int i = 0; i < 32; ++i) ids.push_back((i % 16) * 37 % 64);
  ttt::train::AdamW opt({.weight_decay = 0.0});
  opt.init(model);
  double first = 0, loss = 0;
  for (int step = 0; step < 30; ++step) {
    loss = ttt::train::loss_and_grad(model, {ids}, grad);
    if (step == 0) first = loss;
    opt.step(model, grad, 3e-3);
  }
  MESSAGE("loss " << first << " -> " << loss);
  CHECK(std::isfinite(loss));
  CHECK(loss < 0.7 * first);
}

TEST_CASE("an apply-only learner: prefill + decode at any split and any chunking == one full forward") {
  for (int64_t b : {1, 3, 16}) {
    auto cfg = ModelConfig::sized(std::string(TanhResidual::name), 41, 16, 2, 2, 24, b);
    TTTModel<TanhResidual> model(cfg);
    th::randomize(model, 9, 0.3);
    const auto ids = th::random_ids(37, cfg.vocab_size, 10);
    const Mat full = model.forward(std::span<const int64_t>(ids));
    for (int64_t P : {1, 5, 16, 36}) {
      INFO("mini-batch " << b << ", prefill " << P);
      CHECK(th::rel_err(th::prefill_then_decode(model, ids, P), full) < 1e-5);
    }
    // random chunkings: several prefill calls of random lengths
    std::mt19937_64 rng{static_cast<uint64_t>(b)};
    for (int trial = 0; trial < 3; ++trial) {
      auto st = model.new_state();
      Mat got(int64_t(ids.size()), cfg.vocab_size), lg;
      for (size_t t = 0; t < ids.size();) {
        const size_t len = std::min<size_t>(ids.size() - t, 1 + rng() % 9);
        model.forward(st, std::span<const int64_t>(ids.data() + t, len), &lg, Logits::all);
        got.middleRows(int64_t(t), int64_t(len)) = lg;
        t += len;
      }
      INFO("mini-batch " << b << ", random chunking " << trial);
      CHECK(th::rel_err(got, full) < 1e-5);
    }
  }
}

TEST_CASE("mini-batches of 2048: hand-written == derived training path; prefill + decode == full forward") {
  // one head, f = 4, a whole 2048-token mini-batch: the dual forms' (n, n) matrices at full size
  derived_learner_grad_matches<inner::Linear>(4, 2048);
  derived_learner_grad_matches<inner::MLP>(4, 2048);
  // a tiny model with mini_batch_size 2048 over 2100 tokens: two mini-batches, the second partial
  auto cfg = ModelConfig::sized("linear", 29, 8, 1, 2, 12, 2048);
  TTTModel<inner::Linear> model(cfg);
  th::randomize(model, 4, 0.3);
  const auto ids = th::random_ids(2100, cfg.vocab_size, 5);
  const Mat full = model.forward(std::span<const int64_t>(ids));
  CHECK(th::rel_err(th::prefill_then_decode(model, ids, 1500), full) < 1e-4);
  TTTModel<inner::Linear> grad(cfg);
  const double loss = train::loss_and_grad(model, {ids}, grad);
  CHECK(std::isfinite(loss));
  CHECK(train::grad_norm(grad) > 0);
}

}  // namespace test_derived
