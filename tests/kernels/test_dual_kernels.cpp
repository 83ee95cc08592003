// The dual forms' kernels: TTT-Linear's fused dual form (kernels/linear_dual.hpp), and the LN-L2
// gradient rows and the causal scores and their product (kernels/scalar.hpp, simd.hpp):
// - the plain twin in double == inner::Linear::dual_form<double> (the Eigen form) to 1e-12;
// - the xsimd specialisation == the plain twin in float, over segment lengths 1 .. 17 (the row
//   tiles' remainders, the dot products' groups of four), widths that are and are not whole SIMD
//   batches, row strides wider than f, a carried gradient (not fresh), gscale, and gacc the
//   state itself (the layer's fused GD step); the columns of Zq past f are never written;
// - ln_l2_grad_rows, causal_scores and causal_apply: the twins == the Eigen forms (double), simd ==
//   the twins (float), at widths with and without remainders; the masked half of A never written.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <ttt/blocks/ln_l2.hpp>
#include <ttt/inner/linear.hpp>
#include <ttt/kernels/linear_dual.hpp>
#include <vector>

#include "randn.hpp"

using namespace ttt;

namespace {

using linear_dual_fn = void (*)(backend::simd, const kernels::DualSegment<float>&, const float*, float*, float*,
                                std::ptrdiff_t, float*);
[[maybe_unused]] constexpr linear_dual_fn simd_linear_dual = &kernels::linear_dual;
using ln_l2_rows_fn = void (*)(backend::simd, size_t, size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                               const float*, std::ptrdiff_t, const float*, const float*, float*, std::ptrdiff_t, double);
[[maybe_unused]] constexpr ln_l2_rows_fn simd_ln_l2_rows = &kernels::ln_l2_grad_rows;
using scores_fn = void (*)(backend::simd, size_t, size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                           const float*, const float*, float, float*, std::ptrdiff_t);
[[maybe_unused]] constexpr scores_fn simd_causal_scores = &kernels::causal_scores;
using apply_fn = void (*)(backend::simd, size_t, size_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t,
                          float*, std::ptrdiff_t);
[[maybe_unused]] constexpr apply_fn simd_causal_apply = &kernels::causal_apply;

using test::randn;

double max_rel(const double* a, const double* b, size_t n) {
  double num = 0, den = 1;
  for (size_t i = 0; i < n; ++i) num = std::max(num, std::abs(a[i] - b[i])), den = std::max(den, std::abs(b[i]));
  return num / den;
}

// One segment of n rows of width f, each of XQ, XK, XV with its own row stride (f + pad).
struct Case {
  size_t n, f, pad;
  bool fresh;
  double gscale;
  std::vector<double> XQ, XK, XV, eta, lr, ln_w, ln_b, theta, gacc;
  Case(size_t n_, size_t f_, size_t pad_, bool fresh_, double gscale_, uint64_t seed)
      : n(n_), f(f_), pad(pad_), fresh(fresh_), gscale(gscale_) {
    std::mt19937_64 rng(seed);
    const size_t ld = f + pad;
    XQ = randn<double>(n * ld, rng), XK = randn<double>(n * ld, rng), XV = randn<double>(n * ld, rng);
    ln_w = randn<double>(f, rng, 0.5), ln_b = randn<double>(f, rng, 0.5);
    theta = randn<double>(f * f + f, rng, 0.3);
    gacc = fresh ? std::vector<double>(f * f + f, 0.0) : randn<double>(f * f + f, rng, 0.1);
    for (size_t t = 0; t < n; ++t) eta.push_back(1.0 / double(t + 1) + 0.01 * double(t % 3));
    for (size_t t = 0; t < n; ++t) lr.push_back(0.02 + 0.01 * double(t % 5));
  }
  template <class T>
  static std::vector<T> as(const std::vector<double>& v) {
    return std::vector<T>(v.begin(), v.end());
  }
};

// The case in scalar T through `run(segment, theta, gacc, Zq, ldz)`; returns Zq (n x f), then
// gacc. Zq's row stride is f + 3; the three columns past f must keep their sentinel.
template <class T, class Run>
std::vector<double> run_case(const Case& c, Run run) {
  const auto XQ = Case::as<T>(c.XQ), XK = Case::as<T>(c.XK), XV = Case::as<T>(c.XV), eta = Case::as<T>(c.eta),
             lr = Case::as<T>(c.lr), ln_w = Case::as<T>(c.ln_w), ln_b = Case::as<T>(c.ln_b);
  auto theta = Case::as<T>(c.theta), gacc = Case::as<T>(c.gacc);
  const std::ptrdiff_t ld = std::ptrdiff_t(c.f + c.pad), ldz = std::ptrdiff_t(c.f + 3);
  const kernels::DualSegment<T> s{c.n,       c.f,         XQ.data(),   XK.data(),   XV.data(),  ld, ld, ld,
                                  eta.data(), lr.data(), ln_w.data(), ln_b.data(), c.fresh, T(c.gscale)};
  std::vector<T> Zq(c.n * size_t(ldz), T(777));
  run(s, theta.data(), gacc.data(), Zq.data(), ldz);
  std::vector<double> out;
  for (size_t t = 0; t < c.n; ++t) {
    for (size_t j = 0; j < c.f; ++j) out.push_back(double(Zq[t * size_t(ldz) + j]));
    for (size_t j = c.f; j < size_t(ldz); ++j) CHECK(Zq[t * size_t(ldz) + j] == T(777));
  }
  for (T v : gacc) out.push_back(double(v));
  return out;
}

template <class T, class Backend>
std::vector<double> kernel_case(const Case& c, Backend be) {
  return run_case<T>(c, [&](const kernels::DualSegment<T>& s, T* theta, T* gacc, T* Zq, std::ptrdiff_t ldz) {
    std::vector<T> ws(kernels::linear_dual_workspace(c.n, c.f), T(-7));  // garbage: each value is written first
    kernels::linear_dual(be, s, theta, gacc, Zq, ldz, ws.data());
  });
}

}  // namespace

TEST_CASE("linear_dual: the plain twin == inner::Linear::dual_form (Eigen, double)") {
  for (size_t f : {8, 16, 24})
    for (size_t n : {1, 2, 5, 16})
      for (bool fresh : {true, false})
        for (double gscale : {1.0, -0.37}) {
          INFO("f " << f << " n " << n << (fresh ? " fresh" : " carried") << " gscale " << gscale);
          const Case c(n, f, 5, fresh, gscale, 11 + n + f);
          const auto twin = kernel_case<double>(c, backend::scalar{});
          const auto eigen =
              run_case<double>(c, [&](const kernels::DualSegment<double>& s, double* theta, double* gacc, double* Zq,
                                      std::ptrdiff_t ldz) {
                using Map = Eigen::Map<const MatT<double>, 0, Eigen::OuterStride<>>;
                const Eigen::OuterStride<> st(s.ldq);
                inner::Segment<double> seg{Map(s.XQ, n, f, st), Map(s.XK, n, f, st), Map(s.XV, n, f, st), s.token_eta,
                                           s.lr,                s.ln_w,              s.ln_b,              s.fresh};
                seg.gscale = s.gscale;
                Eigen::Map<MatT<double>, 0, Eigen::OuterStride<>> Z(Zq, n, f, Eigen::OuterStride<>(ldz));
                inner::Linear::Workspace<double> ws;
                inner::Linear::dual_form<double>(theta, gacc, seg, Z, ws);
              });
          REQUIRE(twin.size() == eigen.size());
          CHECK(max_rel(twin.data(), eigen.data(), twin.size()) < 1e-12);
        }
}

TEST_CASE("linear_dual: simd == the plain twin (float; lengths, widths, strides, carried gradient, gscale)") {
  for (size_t f : {16, 32, 48, 64, 20})  // 20: not whole batches of 8 or 16 (the twin's path)
    for (size_t n = 1; n <= 17; ++n)
      for (bool fresh : {true, false}) {
        INFO("f " << f << " n " << n << (fresh ? " fresh" : " carried"));
        const Case c(n, f, n % 3 == 0 ? 0 : 7, fresh, fresh ? -0.2 : 1.0, 101 + 7 * n + f);
        const auto twin = kernel_case<float>(c, backend::scalar{});
        const auto simd = kernel_case<float>(c, backend::simd{});
        REQUIRE(twin.size() == simd.size());
        CHECK(max_rel(simd.data(), twin.data(), simd.size()) < 2e-5);
      }
}

TEST_CASE("linear_dual: gacc may be the state itself (the layer's fused GD step)") {
  for (size_t n : {3, 16}) {
    INFO("n " << n);
    const Case c(n, 64, 0, true, -0.25, 5 + n);
    // separate buffers: theta unchanged, gacc from zero; the step is theta + gacc
    const auto apart = kernel_case<float>(c, backend::simd{});
    const auto same = run_case<float>(c, [&](const kernels::DualSegment<float>& s, float* theta, float* gacc, float* Zq,
                                             std::ptrdiff_t ldz) {
      std::vector<float> ws(kernels::linear_dual_workspace(c.n, c.f));
      kernels::linear_dual(backend::simd{}, s, theta, theta, Zq, ldz, ws.data());
      std::copy(theta, theta + c.f * c.f + c.f, gacc);  // report the state where gacc is
    });
    std::vector<double> expect = apart;
    const size_t z = n * c.f;
    for (size_t i = 0; i < c.theta.size(); ++i) expect[z + i] = double(float(c.theta[i])) + apart[z + i];
    CHECK(max_rel(same.data(), expect.data(), same.size()) < 1e-6);
  }
}

TEST_CASE("ln_l2_grad_rows: the twin == blocks::ln_l2_grad (double), simd == the twin (float)") {
  std::mt19937_64 rng(3);
  for (size_t d : {1, 4, 16, 20, 64, 80})
    for (size_t n : {1, 3, 4, 5, 9}) {
      INFO("d " << d << " n " << n);
      const size_t ld = d + 3;  // every row stride past d; the columns past d are not read or written
      const auto z = randn<double>(n * ld, rng, 2.0), a = randn<double>(n * ld, rng), b = randn<double>(n * ld, rng),
                 gm = randn<double>(d, rng, 0.5), bt = randn<double>(d, rng, 0.5);
      MatT<double> Z(n, d), T(n, d), R(n, d);
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < d; ++c) Z(r, c) = z[r * ld + c], T(r, c) = a[r * ld + c] - b[r * ld + c];
      blocks::ln_l2_grad(Z, T, gm.data(), bt.data(), R);
      const auto L = std::ptrdiff_t(ld);
      std::vector<double> g(n * ld, 9.0), ref(n * ld, 9.0);
      for (size_t r = 0; r < n; ++r)
        for (size_t c = 0; c < d; ++c) ref[r * ld + c] = R(r, c);
      kernels::ln_l2_grad_rows(backend::scalar{}, n, d, z.data(), L, a.data(), L, b.data(), L, gm.data(), bt.data(),
                               g.data(), L);
      CHECK(max_rel(g.data(), ref.data(), g.size()) < 1e-12);
      const auto zf = Case::as<float>(z), af = Case::as<float>(a), bf = Case::as<float>(b), gf = Case::as<float>(gm),
                 btf = Case::as<float>(bt);
      for (const float* bp : {bf.data(), static_cast<const float*>(nullptr)}) {
        std::vector<float> g0(n * ld, 9.0f), g1(n * ld, 9.0f);
        kernels::ln_l2_grad_rows(backend::scalar{}, n, d, zf.data(), L, af.data(), L, bp, L, gf.data(), btf.data(),
                                 g0.data(), L);
        kernels::ln_l2_grad_rows(backend::simd{}, n, d, zf.data(), L, af.data(), L, bp, L, gf.data(), btf.data(),
                                 g1.data(), L);
        const std::vector<double> d0(g0.begin(), g0.end()), d1(g1.begin(), g1.end());
        CHECK(max_rel(d1.data(), d0.data(), d0.size()) < 1e-5);
      }
    }
}

TEST_CASE("causal_scores, causal_apply: the twins == Eigen's masked products (double), simd == the twins (float)") {
  std::mt19937_64 rng(9);
  for (size_t k : {4, 16, 20, 64, 256})
    for (size_t n : {1, 2, 3, 5, 16, 17}) {
      INFO("k " << k << " n " << n);
      const size_t ld = k + 5, m = k, lda = n + 2;
      const auto Q = randn<double>(n * ld, rng), K = randn<double>(n * ld, rng), G = randn<double>(n * ld, rng),
                 Y0 = randn<double>(n * ld, rng), eta = randn<double>(n, rng), lr = randn<double>(n, rng);
      for (double bias : {0.0, 1.0}) {
        // Eigen: the full product, masked
        MatT<double> Qm(n, k), Km(n, k), Gm(n, m), Ym(n, m);
        for (size_t r = 0; r < n; ++r)
          for (size_t c = 0; c < k; ++c)
            Qm(r, c) = Q[r * ld + c], Km(r, c) = K[r * ld + c], Gm(r, c) = G[r * ld + c], Ym(r, c) = Y0[r * ld + c];
        MatT<double> Am = Qm * Km.transpose();
        for (size_t t = 0; t < n; ++t)
          for (size_t j = 0; j < n; ++j) Am(t, j) = j <= t ? eta[t] * lr[j] * (Am(t, j) + bias) : 0.0;
        Ym -= Am * Gm;
        // the twins, A's upper triangle and the padding holding garbage
        std::vector<double> A(n * lda, 1e30), Y = Y0;
        const auto L = std::ptrdiff_t(ld), LA = std::ptrdiff_t(lda);
        kernels::causal_scores(backend::scalar{}, n, k, Q.data(), L, K.data(), L, eta.data(), lr.data(), bias, A.data(),
                               LA);
        kernels::causal_apply(backend::scalar{}, n, m, A.data(), LA, G.data(), L, Y.data(), L);
        double err = 0, scale = 1;
        for (size_t t = 0; t < n; ++t)
          for (size_t c = 0; c < m; ++c)
            err = std::max(err, std::abs(Y[t * ld + c] - Ym(t, c))), scale = std::max(scale, std::abs(Ym(t, c)));
        for (size_t t = 0; t < n; ++t)
          for (size_t j = 0; j <= t; ++j) err = std::max(err, std::abs(A[t * lda + j] - Am(t, j)));
        CHECK(err / scale < 1e-12);
        for (size_t i = 0; i < Y.size(); ++i)
          if (i % ld >= m) CHECK(Y[i] == Y0[i]);  // the columns past m untouched
        // float: simd against the twin
        const auto Qf = Case::as<float>(Q), Kf = Case::as<float>(K), Gf = Case::as<float>(G), Yf0 = Case::as<float>(Y0),
                   ef = Case::as<float>(eta), lf = Case::as<float>(lr);
        std::vector<float> A0(n * lda, 1e30f), A1 = A0, Yt = Yf0, Ys = Yf0;
        kernels::causal_scores(backend::scalar{}, n, k, Qf.data(), L, Kf.data(), L, ef.data(), lf.data(), float(bias),
                               A0.data(), LA);
        kernels::causal_scores(backend::simd{}, n, k, Qf.data(), L, Kf.data(), L, ef.data(), lf.data(), float(bias),
                               A1.data(), LA);
        kernels::causal_apply(backend::scalar{}, n, m, A0.data(), LA, Gf.data(), L, Yt.data(), L);
        kernels::causal_apply(backend::simd{}, n, m, A1.data(), LA, Gf.data(), L, Ys.data(), L);
        const std::vector<double> dt(Yt.begin(), Yt.end()), ds(Ys.begin(), Ys.end());
        CHECK(max_rel(ds.data(), dt.data(), dt.size()) < 1e-5);
        for (size_t t = 0; t < n; ++t)
          for (size_t j = t + 1; j < lda; ++j) CHECK(A1[t * lda + j] == 1e30f);  // the masked half not written
      }
    }
}
