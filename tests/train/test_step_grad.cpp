// The reverses training's fast paths are built from, each against its derived twin (double):
//   - every built-in optimizer's hand-written step_vjp == the reverse sweep of its recorded step
//     (inner/step_grad.hpp), on weights with a tall and a wide matrix and a vector;
//   - the optimizers that declare affine queries: step == keep theta0 + shift - eta gacc, and the
//     reverses of keep and shift == their recorded sweeps;
//   - the fast forward and reverse of a mini-batch (the learner's gd dual form and the step's
//     reverse, inner/update_grad.hpp) == the derived ones (inner/derived.hpp), every output and
//     cotangent, for every learner with a hand-written LearnerGrad x optimizer in the order
//     `before`, and x every optimizer with affine queries in the order `after`.
// Through the whole model these paths are checked against central differences in
// test_optimizers.cpp. This file includes only the inner headers: it compiles in seconds.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <ttt/inner/token_step_grad.hpp>
#include <ttt/inner/update_grad.hpp>
#include <ttt/inner/derived.hpp>
#include <ttt/inner/linear.hpp>
#include <ttt/inner/linear_attention.hpp>
#include <ttt/inner/mlp.hpp>
#include <ttt/inner/swiglu.hpp>
#include <ttt/inner/optimizers.hpp>
#include <ttt/train/gradcheck.hpp>

using namespace ttt;

namespace test_step_grad {

double max_rel(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 1e-12;
  for (size_t i = 0; i < a.size(); ++i) num = std::max(num, std::abs(a[i] - b[i])), den = std::max(den, std::abs(b[i]));
  return num / den;
}
double max_rel(const MatD& a, const MatD& b) {
  return (a - b).cwiseAbs().maxCoeff() / std::max(b.cwiseAbs().maxCoeff(), 1e-12);
}

std::vector<double> random_vec(size_t n, std::mt19937_64& rng, double scale, double shift = 0) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = shift + nd(rng);
  return v;
}

/// A state0 for optimizer O: random, with Adam's second moments positive and its count 2.
template <class O>
std::vector<double> random_state(const std::vector<inner::ParamSpec>& specs, std::mt19937_64& rng) {
  const int64_t P = inner::param_count(specs), Q = inner::state_size<O>(specs);
  auto s = random_vec(size_t(Q), rng, 0.3);
  if constexpr (std::is_same_v<O, inner::Adam>) {
    for (int64_t i = P; i < 2 * P; ++i) s[size_t(i)] = 0.01 + s[size_t(i)] * s[size_t(i)];
    s[size_t(2 * P)] = 2;
  }
  return s;
}

inner::UpdateRule rule_for(std::string_view name) {
  inner::UpdateRule r;
  r.optimizer = std::string(name);
  r.beta = 0.7;
  r.ns_steps = 3;
  return r;
}

template <class O>
void step_vjp_matches_tape(const std::vector<inner::ParamSpec>& specs, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int64_t P = inner::param_count(specs), Q = inner::state_size<O>(specs);
  const auto rule = rule_for(O::name);
  const auto th0 = random_vec(size_t(P), rng, 0.5), st0 = random_state<O>(specs, rng),
             gacc = random_vec(size_t(P), rng, 0.4), dth = random_vec(size_t(P), rng, 1.0),
             dst = random_vec(size_t(Q), rng, 1.0);
  const double eta = 0.37, alpha = 0.21;
  struct Out {
    std::vector<double> dth0, dst0, dg;
    double de = 0.1, da = -0.2;  // step_vjp adds
  };
  auto run = [&](bool taped) {
    Out o;
    o.dth0.assign(size_t(P), 0.5), o.dst0.assign(size_t(Q), -0.25), o.dg.assign(size_t(P), 0.125);
    std::vector<double> th(static_cast<size_t>(P)), st(static_cast<size_t>(Q));
    const inner::Step<double> s{specs, rule, th0.data(), st0.data(), gacc.data(), eta, alpha, th.data(), st.data()};
    const inner::StepGrad<double> d{o.dth0.data(), o.dst0.data(), o.dg.data(), &o.de, &o.da};
    if (taped) inner::taped_step_vjp<O, double>(s, dth.data(), dst.data(), d);
    else O::step_vjp(s, dth.data(), dst.data(), d);
    return o;
  };
  const Out want = run(true), got = run(false);
  INFO(O::name);
  CHECK(max_rel(got.dth0, want.dth0) < 1e-11);
  CHECK(max_rel(got.dst0, want.dst0) < 1e-11);
  CHECK(max_rel(got.dg, want.dg) < 1e-10);
  CHECK(got.de == doctest::Approx(want.de).epsilon(1e-11));
  CHECK(got.da == doctest::Approx(want.da).epsilon(1e-11));
}

// TTT-MLP's hand-written reverse uses the reference's gelu_bwd constants, rounded to ~1e-10
// relative; the derived one differentiates the exact GELU (as in test_derived.cpp): MLP's rows
// are checked to 1e-8, just above that difference.
template <class L>
constexpr double tol() {
  return std::is_same_v<L, inner::MLP> ? 1e-8 : 1e-10;
}

/// The three ways to train a mini-batch under an optimizer: the derived path (inner/derived.hpp),
/// the dual-form path (inner/update_grad.hpp) and, in the order `after`, token by token
/// (inner/token_step_grad.hpp; its forward is the primal one).
enum class Path { derived, update, token };
const char* path_name(Path p) { return p == Path::derived ? "derived" : p == Path::update ? "update" : "token"; }

/// Path `got` against path `want`: every output and cotangent of one mini-batch.
template <class L, class O>
void paths_agree(int64_t f, int64_t n, uint64_t seed, inner::QueryOrder order, Path got_path,
                 Path want_path = Path::derived) {
  std::mt19937_64 rng(seed);
  const auto specs = L::param_specs(f);
  const int64_t P = inner::param_count(specs), Q = inner::state_size<O>(specs);
  auto rule = rule_for(O::name);
  rule.order = order;
  const auto rev = inner::update_reverse<O, double>();
  for (Path p : {got_path, want_path}) {
    if (p == Path::update) REQUIRE(train::update_fast<L, double>(rule, rev));
    if (p == Path::token) REQUIRE(order == inner::QueryOrder::after);
  }
  auto state0 = train::detail::random_theta(P, rng);
  const auto st = random_state<O>(specs, rng);
  state0.insert(state0.end(), st.begin(), st.end());
  const train::detail::RandomSegment rs(f, n, rng);
  std::vector<double> alpha = random_vec(size_t(n), rng, 0.1, 0.3);
  auto seg = rs.view();
  if (inner::uses_gate<O>()) seg.alpha = alpha.data();
  const MatD dZq = train::detail::RandomSegment(f, n, rng).XV;
  const auto dend = random_vec(size_t(P + Q), rng, 1.0);

  struct Out {
    MatD Zq, dXQ, dXK, dXV;
    std::vector<double> end, dst, dte, dlr, dlw, dlb, dal;
  };
  auto run = [&](Path path) {
    Out o;
    o.Zq = MatD(n, f);
    o.end.assign(size_t(P + Q), 0.0);
    train::Scratch<double> ws;
    train::UpdateBuffers<double> b;
    if (path == Path::update)
      train::update_forward<L, double>(state0.data(), f, specs, rule, inner::optimizer_fn<O, double>(specs), rev, seg,
                                       o.Zq, o.end.data(), ws, b);
    else
      train::derived_forward<L, double>(state0.data(), f, specs, rule, inner::optimizer_fn<O, double>(specs), seg,
                                        o.Zq, o.end.data());
    o.dXQ = o.dXK = o.dXV = MatD::Constant(n, f, 0.5);  // backward adds
    o.dst.assign(size_t(P + Q), 0.25);
    o.dte.assign(size_t(n), 0.0), o.dlr.assign(size_t(n), 0.0), o.dal.assign(size_t(n), 0.0);
    o.dlw.assign(size_t(f), 0.0), o.dlb.assign(size_t(f), 0.0);
    train::SegmentGradD sg{o.dXQ, o.dXK, o.dXV, o.dte.data(), o.dlr.data(), o.dlw.data(), o.dlb.data(), o.dal.data()};
    if (path == Path::token) {
      train::TokenStepBuffers<double> tb;
      train::token_step_backward<L, double>(state0.data(), f, specs, rule, inner::optimizer_fn<O, double>(specs),
                                            inner::step_vjp_fn<std::tuple<O>, double>(0), seg, dZq, dend.data(),
                                            o.dst.data(), sg, ws, tb);
    } else if (path == Path::update) {
      train::update_backward<L, double>(state0.data(), f, specs, rule, Q, rev, seg, dZq, dend.data(), o.dst.data(), sg,
                                        ws, b);
    } else {
      train::derived_backward<L, double>(state0.data(), f, specs, rule, inner::optimizer_fn<O, ad::Real<double>>(specs),
                                         seg, dZq, dend.data(), o.dst.data(), sg);
    }
    return o;
  };
  const Out want = run(want_path), got = run(got_path);
  INFO(L::name << " / " << O::name << " / " << inner::order_name(order) << ": " << path_name(got_path) << " vs "
               << path_name(want_path) << " f=" << f << " n=" << n);
  CHECK(max_rel(got.Zq, want.Zq) < tol<L>());
  CHECK(max_rel(got.end, want.end) < tol<L>());
  CHECK(max_rel(got.dst, want.dst) < tol<L>());
  CHECK(max_rel(got.dXQ, want.dXQ) < tol<L>());
  CHECK(max_rel(got.dXK, want.dXK) < tol<L>());
  CHECK(max_rel(got.dXV, want.dXV) < tol<L>());
  CHECK(max_rel(got.dte, want.dte) < tol<L>());
  CHECK(max_rel(got.dlr, want.dlr) < tol<L>());
  CHECK(max_rel(got.dlw, want.dlw) < tol<L>());
  CHECK(max_rel(got.dlb, want.dlb) < tol<L>());
  CHECK(max_rel(got.dal, want.dal) < tol<L>());
}

template <class L>
void update_every_optimizer(int64_t f, int64_t n) {
  constexpr auto before = inner::QueryOrder::before, after = inner::QueryOrder::after;
  paths_agree<L, inner::GD>(f, n, 1, before, Path::update);
  paths_agree<L, inner::Momentum>(f, n, 2, before, Path::update);
  paths_agree<L, inner::Decay>(f, n, 3, before, Path::update);
  paths_agree<L, inner::Muon>(f, n, 4, before, Path::update);
  paths_agree<L, inner::Adam>(f, n, 5, before, Path::update);
  paths_agree<L, inner::GD>(f, n, 6, after, Path::update);
  paths_agree<L, inner::Momentum>(f, n, 7, after, Path::update);
  paths_agree<L, inner::Decay>(f, n, 8, after, Path::update);
  // token by token: every optimizer (the path of muon and adam)
  paths_agree<L, inner::GD>(f, n, 9, after, Path::token);
  paths_agree<L, inner::Momentum>(f, n, 10, after, Path::token);
  paths_agree<L, inner::Decay>(f, n, 11, after, Path::token);
  paths_agree<L, inner::Muon>(f, n, 12, after, Path::token);
  paths_agree<L, inner::Adam>(f, n, 13, after, Path::token);
}

/// An optimizer that declares affine queries: its step is keep theta0 + shift - eta gacc at two
/// tokens, and the reverses of keep and shift equal the sweeps of their recordings.
template <class O>
void affine_queries_match_step(const std::vector<inner::ParamSpec>& specs, uint64_t seed) {
  static_assert(inner::affine_queries<O>());
  std::mt19937_64 rng(seed);
  const int64_t P = inner::param_count(specs), Q = inner::state_size<O>(specs);
  const auto rule = rule_for(O::name);
  const auto th0 = random_vec(size_t(P), rng, 0.5), st0 = random_state<O>(specs, rng),
             gacc = random_vec(size_t(P), rng, 0.4), dshift = random_vec(size_t(P), rng, 1.0);
  INFO(O::name);
  for (auto [eta, alpha] : {std::pair<double, double>{0.37, 0.21}, {0.8, 0.05}}) {
    std::vector<double> th(static_cast<size_t>(P)), st(static_cast<size_t>(Q)), shift(size_t(P), 0.0);
    const inner::Step<double> s{specs, rule, th0.data(), st0.data(), gacc.data(), eta, alpha, th.data(), st.data()};
    O::step(s);
    double keep = 1;
    if constexpr (inner::has_query_keep<O, double>) keep = O::query_keep(s);
    if constexpr (inner::has_query_shift<O, double>) O::query_shift(s, shift.data());
    for (int64_t i = 0; i < P; ++i)
      CHECK(th[size_t(i)] == doctest::Approx(keep * th0[size_t(i)] + shift[size_t(i)] - eta * gacc[size_t(i)]).epsilon(1e-14));
    // the reverses against a recorded sweep: leaves state0, eta, alpha
    using R = ad::Real<double>;
    ad::RealTape<double> tape;
    ad::RealTape<double>::Scope scope(tape);
    std::vector<R> leaves;
    for (int64_t i = 0; i < Q; ++i) leaves.push_back(tape.leaf(st0[size_t(i)]));
    leaves.push_back(tape.leaf(eta));
    leaves.push_back(tape.leaf(alpha));
    std::vector<R> th0r(th0.begin(), th0.end()), gr(gacc.begin(), gacc.end()), shr(size_t(P), R(0));
    std::vector<R> thr(static_cast<size_t>(P)), str(static_cast<size_t>(Q));
    const inner::Step<R> sr{specs, rule, th0r.data(), leaves.data(), gr.data(), leaves[size_t(Q)],
                            leaves[size_t(Q) + 1], thr.data(), str.data()};
    std::vector<R> outs, seeds;
    const double dkeep = 0.75;
    if constexpr (inner::has_query_keep<O, R>) outs.push_back(O::query_keep(sr)), seeds.push_back(R(dkeep));
    if constexpr (inner::has_query_shift<O, R>) {
      O::query_shift(sr, shr.data());
      for (int64_t i = 0; i < P; ++i) outs.push_back(shr[size_t(i)]), seeds.push_back(R(dshift[size_t(i)]));
    }
    if (outs.empty()) continue;
    const auto want = tape.gradient(outs, seeds, leaves);
    std::vector<double> dth0(size_t(P), 0.0), dst0(size_t(Q), 0.0), dg(size_t(P), 0.0);
    double de = 0, da = 0;
    const inner::StepGrad<double> d{dth0.data(), dst0.data(), dg.data(), &de, &da};
    if constexpr (inner::has_query_keep<O, double>) O::query_keep_vjp(s, dkeep, d);
    if constexpr (inner::has_query_shift<O, double>) O::query_shift_vjp(s, dshift.data(), d);
    for (int64_t i = 0; i < Q; ++i) CHECK(dst0[size_t(i)] == doctest::Approx(want[size_t(i)].v).epsilon(1e-13));
    CHECK(de == doctest::Approx(want[size_t(Q)].v).epsilon(1e-13));
    CHECK(da == doctest::Approx(want[size_t(Q) + 1].v).epsilon(1e-13));
  }
}

/// A learner with a hand-written LearnerGrad that does not read the queries' base (as a user's
/// might be): TTT-Linear's reverse with `query_base` hidden.
struct NoQueryBase : inner::Linear {
  static constexpr std::string_view name = "no_query_base";
};

}  // namespace test_step_grad

template <>
struct ttt::train::LearnerGrad<test_step_grad::NoQueryBase> : ttt::train::LearnerGrad<ttt::inner::Linear> {
  static constexpr bool query_base = false;
};

namespace test_step_grad {

TEST_CASE("a LearnerGrad that does not read the queries' base trains momentum and decay after token by token") {
  inner::UpdateRule rule = rule_for("momentum");
  const auto rev = inner::update_reverse<inner::Momentum, double>();
  CHECK(train::update_fast<inner::Linear, double>(rule, rev));
  CHECK_FALSE(train::update_fast<NoQueryBase, double>(rule, rev));
  rule.order = inner::QueryOrder::before;
  CHECK(train::update_fast<NoQueryBase, double>(rule, rev));
  paths_agree<NoQueryBase, inner::Momentum>(4, 5, 31, inner::QueryOrder::after, Path::token);
  paths_agree<NoQueryBase, inner::Decay>(4, 5, 32, inner::QueryOrder::after, Path::token);
}

TEST_CASE("every built-in optimizer's step_vjp == the reverse sweep of its recorded step (double)") {
  // a wide and a tall matrix (Newton-Schulz runs on the transpose of a tall one) and a vector
  const std::vector<inner::ParamSpec> specs = {{"W1", {3, 5}}, {"W2", {5, 3}}, {"b", {1, 3}}};
  step_vjp_matches_tape<inner::GD>(specs, 1);
  step_vjp_matches_tape<inner::Momentum>(specs, 2);
  step_vjp_matches_tape<inner::Decay>(specs, 3);
  step_vjp_matches_tape<inner::Muon>(specs, 4);
  step_vjp_matches_tape<inner::Adam>(specs, 5);
}

TEST_CASE("affine queries: gd, momentum and decay declare what their step computes, with exact reverses") {
  const std::vector<inner::ParamSpec> specs = {{"W1", {3, 5}}, {"b", {1, 3}}};
  affine_queries_match_step<inner::GD>(specs, 1);
  affine_queries_match_step<inner::Momentum>(specs, 2);
  affine_queries_match_step<inner::Decay>(specs, 3);
  static_assert(!inner::affine_queries<inner::Muon>() && !inner::affine_queries<inner::Adam>());
}

TEST_CASE("the fast mini-batch == the derived one, every hand-written learner x optimizer x order (double)") {
  for (auto [f, n] : {std::pair<int64_t, int64_t>{3, 1}, {4, 5}}) {
    update_every_optimizer<inner::Linear>(f, n);
    update_every_optimizer<inner::MLP>(f, n);
    update_every_optimizer<inner::LinearAttention>(f, n);
    update_every_optimizer<inner::SwiGLU>(f, n);
  }
}

TEST_CASE("a mini-batch of 2048 under momentum and decay (order after): the dual-form path == the token-by-token path (double)") {
  // two independent fast paths over the dual forms' (n, n) matrices at full size, f = 4
  constexpr auto after = inner::QueryOrder::after;
  paths_agree<inner::Linear, inner::Momentum>(4, 2048, 21, after, Path::update, Path::token);
  paths_agree<inner::MLP, inner::Decay>(4, 2048, 22, after, Path::update, Path::token);
  paths_agree<inner::SwiGLU, inner::Momentum>(4, 2048, 23, after, Path::update, Path::token);
  paths_agree<inner::LinearAttention, inner::Decay>(4, 2048, 24, after, Path::update, Path::token);
}

}  // namespace test_step_grad
