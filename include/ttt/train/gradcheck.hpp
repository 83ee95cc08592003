#pragma once
/// \file train/gradcheck.hpp
/// Checks for a learner's `LearnerGrad<L>` (inner/learner_grad.hpp), for whoever writes one:
///   - `check_learner_forward<L>`: its double forward of a mini-batch computes what the layer's
///     float path computes (the learner's dual form if it has one, else the generic primal form);
///   - `check_learner_backward<L>`: its backward is the exact VJP of its forward, against central
///     finite differences in double, for every input (theta0, XQ, XK, XV, token_eta, lr, ln_w,
///     ln_b) with random cotangents of Zq and of the end state; for a learner that declares
///     `state_grad_in_place`, also that its backward with dtheta0 in dtheta_end's buffer gives the
///     same cotangents (up to rounding).
/// Both return the worst error found and where (the caller picks the tolerance: ~1e-5 for the
/// forward, float against double; ~1e-6 for the backward).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../inner/learner.hpp"
#include "../inner/learner_grad.hpp"
#include "../inner/primal.hpp"

namespace ttt::train {

struct GradCheckResult {
  double max_err = 0;  ///< forward: ||float - double|| / ||double||; backward: max |a - fd| / max(|fd|, 1e-2)
  std::string worst;   ///< which input (backward) or "Zq" / "theta_end" (forward)
};

namespace detail {

/// A random mini-batch of n rows, head dim f, for learner checks.
struct RandomSegment {
  MatD XQ, XK, XV, te, lr, lw, lb;
  RandomSegment(int64_t f, int64_t n, std::mt19937_64& rng) {
    std::normal_distribution<double> nd(0.0, 1.0);
    auto rnd = [&](int64_t r, int64_t c, double s, double shift) {
      MatD m(r, c);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = shift + s * nd(rng);
      return m;
    };
    XQ = rnd(n, f, 0.7, 0), XK = rnd(n, f, 0.7, 0), XV = rnd(n, f, 0.7, 0);
    te = rnd(1, n, 0.1, 0.5), lr = rnd(1, n, 0.05, 0.3), lw = rnd(1, f, 0.2, 1.0), lb = rnd(1, f, 0.3, 0.0);
  }
  SegmentD view() const { return SegmentD{XQ, XK, XV, te.data(), lr.data(), lw.data(), lb.data(), true}; }
};

inline std::vector<double> random_theta(int64_t P, std::mt19937_64& rng, double scale = 0.3) {
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> th(static_cast<size_t>(P));
  for (auto& x : th) x = nd(rng);
  return th;
}

}  // namespace detail

/// LearnerGrad<L>::forward against the float layer path on a random mini-batch (n rows, head dim f).
template <class L>
GradCheckResult check_learner_forward(int64_t f, int64_t n, uint64_t seed = 0) {
  std::mt19937_64 rng(seed);
  const int64_t P = inner::param_count(L::param_specs(f));
  const detail::RandomSegment rs(f, n, rng);
  const std::vector<double> th = detail::random_theta(P, rng);
  MatD Zq(n, f);
  std::vector<double> the(static_cast<size_t>(P));
  Scratch<double> scratch;
  LearnerGrad<L>::template forward<double>(th.data(), f, rs.view(), Zq, the.data(), scratch);
  const Mat fq = rs.XQ.cast<float>(), fk = rs.XK.cast<float>(), fv = rs.XV.cast<float>();
  const RowVec fte = rs.te.row(0).cast<float>(), flr = rs.lr.row(0).cast<float>(), flw = rs.lw.row(0).cast<float>(),
               flb = rs.lb.row(0).cast<float>();
  std::vector<float> theta(th.begin(), th.end()), gacc(static_cast<size_t>(P), 0.0f);
  const inner::Segment<float> seg{CMatRef(fq), CMatRef(fk), CMatRef(fv), fte.data(), flr.data(), flw.data(), flb.data(), true};
  Mat Zf(n, f);
  typename inner::head_workspace<L, float>::type ws;
  if constexpr (inner::HasDualForm<L, float>) inner::dual_form<L, float>(theta.data(), gacc.data(), f, seg, MatRef(Zf), ws);
  else inner::primal_segment<L, float>(theta.data(), gacc.data(), f, seg, MatRef(Zf), ws);
  GradCheckResult r;
  r.max_err = (Zf.cast<double>() - Zq).norm() / std::max(Zq.norm(), 1e-30);
  r.worst = "Zq";
  double num = 0, den = 0;
  for (int64_t i = 0; i < P; ++i) {  // end state = theta0 - token_eta[n-1] * gacc
    const double want = double(theta[size_t(i)]) - double(fte[n - 1]) * double(gacc[size_t(i)]);
    num += (the[size_t(i)] - want) * (the[size_t(i)] - want);
    den += want * want;
  }
  const double e_end = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (e_end > r.max_err) r.max_err = e_end, r.worst = "theta_end";
  return r;
}

/// LearnerGrad<L>::backward against central differences (step h) of LearnerGrad<L>::forward.
template <class L>
GradCheckResult check_learner_backward(int64_t f, int64_t n, uint64_t seed = 0, double h = 1e-5) {
  std::mt19937_64 rng(seed);
  const int64_t P = inner::param_count(L::param_specs(f));
  detail::RandomSegment rs(f, n, rng);
  std::vector<double> th = detail::random_theta(P, rng);
  const MatD dZq = detail::RandomSegment(f, n, rng).XV;
  const std::vector<double> dthe = detail::random_theta(P, rng, 1.0);
  Scratch<double> scratch;
  auto objective = [&] {
    MatD Zq(n, f);
    std::vector<double> the(static_cast<size_t>(P));
    LearnerGrad<L>::template forward<double>(th.data(), f, rs.view(), Zq, the.data(), scratch);
    double s = (Zq.array() * dZq.array()).sum();
    for (int64_t i = 0; i < P; ++i) s += the[size_t(i)] * dthe[size_t(i)];
    return s;
  };
  struct Cotangents {
    MatD dXQ, dXK, dXV;
    std::vector<double> dth, dte, dlr, dlw, dlb;
  };
  // in_place: dtheta0 in dtheta_end's buffer (LearnerGrad's state_grad_in_place)
  auto backward = [&](bool in_place) {
    Cotangents c{MatD::Zero(n, f), MatD::Zero(n, f), MatD::Zero(n, f), in_place ? dthe : std::vector<double>(size_t(P)),
                 std::vector<double>(size_t(n)), std::vector<double>(size_t(n)), std::vector<double>(size_t(f)),
                 std::vector<double>(size_t(f))};
    SegmentGradD o{c.dXQ, c.dXK, c.dXV, c.dte.data(), c.dlr.data(), c.dlw.data(), c.dlb.data()};
    LearnerGrad<L>::template backward<double>(th.data(), f, rs.view(), dZq, in_place ? c.dth.data() : dthe.data(),
                                              c.dth.data(), o, scratch);
    return c;
  };
  const Cotangents c = backward(false);
  const MatD &dXQ = c.dXQ, &dXK = c.dXK, &dXV = c.dXV;
  const std::vector<double>&dth = c.dth, &dte = c.dte, &dlr = c.dlr, &dlw = c.dlw, &dlb = c.dlb;
  GradCheckResult r;
  if constexpr (state_grad_in_place<LearnerGrad<L>>()) {  // one buffer: the same cotangents up to rounding
    const Cotangents a = backward(true);
    auto same = [&](const std::string& name, const double* x, const double* want, size_t cnt) {
      for (size_t i = 0; i < cnt; ++i) {
        const double e = std::abs(x[i] - want[i]) / std::max(std::abs(want[i]), 1e-2);
        if (e > r.max_err) r.max_err = e, r.worst = name + "[" + std::to_string(i) + "] (in place)";
      }
    };
    same("theta0", a.dth.data(), dth.data(), dth.size());
    same("XQ", a.dXQ.data(), dXQ.data(), size_t(dXQ.size()));
    same("XK", a.dXK.data(), dXK.data(), size_t(dXK.size()));
    same("XV", a.dXV.data(), dXV.data(), size_t(dXV.size()));
    same("token_eta", a.dte.data(), dte.data(), size_t(n));
    same("lr", a.dlr.data(), dlr.data(), size_t(n));
    same("ln_w", a.dlw.data(), dlw.data(), size_t(f));
    same("ln_b", a.dlb.data(), dlb.data(), size_t(f));
  }
  auto check = [&](const std::string& name, double* x, size_t cnt, const double* analytic) {
    for (size_t i = 0; i < cnt; ++i) {
      const double x0 = x[i];
      x[i] = x0 + h;
      const double fp = objective();
      x[i] = x0 - h;
      const double fm = objective();
      x[i] = x0;
      const double fd = (fp - fm) / (2 * h);
      const double e = std::abs(analytic[i] - fd) / std::max(std::abs(fd), 1e-2);
      if (e > r.max_err) r.max_err = e, r.worst = name + "[" + std::to_string(i) + "]";
    }
  };
  check("theta0", th.data(), th.size(), dth.data());
  check("XQ", rs.XQ.data(), size_t(rs.XQ.size()), dXQ.data());
  check("XK", rs.XK.data(), size_t(rs.XK.size()), dXK.data());
  check("XV", rs.XV.data(), size_t(rs.XV.size()), dXV.data());
  check("token_eta", rs.te.data(), size_t(n), dte.data());
  check("lr", rs.lr.data(), size_t(n), dlr.data());
  check("ln_w", rs.lw.data(), size_t(f), dlw.data());
  check("ln_b", rs.lb.data(), size_t(f), dlb.data());
  return r;
}

}  // namespace ttt::train

#if defined(TTT_PRECOMPILED)
#include "../inner/linear.hpp"
#include "../inner/linear_attention.hpp"
#include "../inner/mlp.hpp"
#include "../inner/swiglu.hpp"
namespace ttt::train {
#if !defined(TTT_PRECOMPILED_FLOAT_ONLY)  // double and the learner checks: tests (TTT_PRECOMPILED_DOUBLE)
extern template GradCheckResult check_learner_forward<inner::Linear>(int64_t, int64_t, uint64_t);
extern template GradCheckResult check_learner_forward<inner::MLP>(int64_t, int64_t, uint64_t);
extern template GradCheckResult check_learner_forward<inner::SwiGLU>(int64_t, int64_t, uint64_t);
extern template GradCheckResult check_learner_forward<inner::LinearAttention>(int64_t, int64_t, uint64_t);
extern template GradCheckResult check_learner_backward<inner::Linear>(int64_t, int64_t, uint64_t, double);
extern template GradCheckResult check_learner_backward<inner::MLP>(int64_t, int64_t, uint64_t, double);
extern template GradCheckResult check_learner_backward<inner::SwiGLU>(int64_t, int64_t, uint64_t, double);
extern template GradCheckResult check_learner_backward<inner::LinearAttention>(int64_t, int64_t, uint64_t, double);
#endif
}  // namespace ttt::train
#endif
