// Every kernel of kernels/simd.hpp against its scalar twin of kernels/scalar.hpp (the
// specification): sizes 0, 1, below / at / just past one and several SIMD widths (4 SSE, 8 AVX,
// 16 AVX-512), unaligned starts, guard cells that must stay untouched, inputs over [-8, 8] plus
// ±20, ±1e-3, ±0, and a dense sweep over [-20, 20].
//
// Tolerance: |simd - scalar| <= kTol * (1 + |scalar|). xsimd's tanh/exp are not the libm ones, so
// the two agree only to a few float ulps. Measured over 2e7 points in [-20, 20] (SSE2, AVX,
// AVX2+FMA and AVX-512 builds), max |simd - scalar| / (1 + |scalar|) was 1.2e-7 (gelu_tanh),
// 5.7e-7 (gelu_tanh_grad), 1.8e-7 (silu_mul); kTol = 2e-6 (~17 ulp at 1) leaves 3.5x headroom.
// A pure relative bound does not work: gelu_tanh' crosses zero near x = -0.75 and gelu_tanh
// underflows towards 0 for x << 0 (1 + tanh cancels), where the relative error reaches 1e-3..1e-2
// while the absolute error stays < 1e-7.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <ttt/kernels/simd.hpp>

namespace {

using namespace ttt;
using std::size_t;

constexpr float kTol = 2e-6f;
// gelu_tanh_grad_dx (a second derivative) has 1 - t^2 with t = tanh(u) near -1 for x around -3.7:
// the tanh's few-ulp difference is amplified there (max 1.8e-6 at x = -3.70 over the 2e7 points,
// SSE2 and AVX-512 builds; gelu_tanh_dx: 4.7e-7); its own bound leaves 2.8x headroom.
constexpr float kTolGradDx = 5e-6f;
constexpr size_t kSizes[] = {0, 1, 7, 15, 17, 64, 65, 1000};
constexpr size_t kPad = 4;  // guard cells either side of the data
constexpr float kSentinel = 12345.0f;

// ---- the fallback chain -------------------------------------------------------------------------
static_assert(std::is_base_of_v<backend::scalar, backend::simd>, "simd must fall back to scalar");
static_assert(std::is_same_v<backend::cpu_default, backend::simd>);
// Each kernel has its own simd overload (these pointers bind only to an exact match): without one,
// a call with backend::simd would resolve to the scalar loop and the comparisons below would be
// vacuous. No loop kernel is scalar-only today, so there is no fallback call to check.
using map_fn = void (*)(backend::simd, const float*, float*, size_t);
using inplace_fn = void (*)(backend::simd, float*, const float*, size_t);
[[maybe_unused]] constexpr map_fn simd_gelu_tanh = &kernels::gelu_tanh;
[[maybe_unused]] constexpr map_fn simd_gelu_tanh_grad = &kernels::gelu_tanh_grad;
[[maybe_unused]] constexpr map_fn simd_gelu_tanh_dx = &kernels::gelu_tanh_dx;
[[maybe_unused]] constexpr map_fn simd_gelu_tanh_grad_dx = &kernels::gelu_tanh_grad_dx;
[[maybe_unused]] constexpr inplace_fn simd_silu_mul = &kernels::silu_mul;
using gate_fn = void (*)(backend::simd, const float*, const float*, float*, float*, size_t);
[[maybe_unused]] constexpr gate_fn simd_silu_gate = &kernels::silu_gate;
using gate_bwd_fn = void (*)(backend::simd, const float*, const float*, const float*, float*, float*, size_t);
[[maybe_unused]] constexpr gate_bwd_fn simd_silu_mul_bwd = &kernels::silu_mul_bwd;
using pair_fn = void (*)(backend::simd, const float*, float*, float*, size_t);
[[maybe_unused]] constexpr pair_fn simd_gelu_tanh_pair = &kernels::gelu_tanh_pair;
[[maybe_unused]] constexpr pair_fn simd_gelu_tanh_grad_pair = &kernels::gelu_tanh_grad_pair;
using rows_wt_fn = void (*)(backend::simd, const float*, std::ptrdiff_t, size_t, size_t, const float*, size_t, float*,
                            std::ptrdiff_t, bool);
[[maybe_unused]] constexpr rows_wt_fn simd_rows_wt = &kernels::rows_wt;
using rows_w_fn = void (*)(backend::simd, const float*, std::ptrdiff_t, size_t, size_t, const float*, std::ptrdiff_t,
                           size_t, float*, std::ptrdiff_t, bool, std::ptrdiff_t);
[[maybe_unused]] constexpr rows_w_fn simd_rows_w = &kernels::rows_w;

// ---- inputs -------------------------------------------------------------------------------------
constexpr float kSpecials[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 20.0f, -20.0f, 8.0f, -8.0f, 1.0f, -1.0f};
constexpr size_t kNumSpecials = sizeof(kSpecials) / sizeof(kSpecials[0]);

/// A low-discrepancy spread over [lo, hi] (golden-ratio steps): deterministic, no RNG.
float spread(size_t i, double step, double lo, double hi) {
  const double f = double(i) * step - std::floor(double(i) * step);
  return float(lo + (hi - lo) * f);
}
/// Kernel inputs: every fifth value a special one (so they land in SIMD bodies and in tails),
/// the rest spread over [-8, 8].
std::vector<float> inputs(size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i)
    x[i] = i % 5 == 2 ? kSpecials[(i / 5) % kNumSpecials] : spread(i, 0.6180339887498949, -8.0, 8.0);
  return x;
}
/// silu_mul's second factor, over [-4, 4].
std::vector<float> factors(size_t n) {
  std::vector<float> u(n);
  for (size_t i = 0; i < n; ++i) u[i] = spread(i + 7, 0.7548776662466927, -4.0, 4.0);
  return u;
}

/// `values` placed `kPad + shift` floats into a buffer with kPad sentinels after them: shift 0 and 1
/// give differently aligned starts.
struct Guarded {
  std::vector<float> buf;
  size_t off, n;
  Guarded(const std::vector<float>& values, size_t shift)
      : buf(kPad + shift + values.size() + kPad, kSentinel), off(kPad + shift), n(values.size()) {
    std::copy(values.begin(), values.end(), buf.begin() + std::ptrdiff_t(off));
  }
  float* data() { return buf.data() + off; }
  bool guards_intact() const {
    for (size_t i = 0; i < buf.size(); ++i)
      if ((i < off || i >= off + n) && buf[i] != kSentinel) return false;
    return true;
  }
};

/// Every got[i] within kTol * (1 + |want[i]|) of want[i] (NaN fails).
void check_close(const char* what, const std::vector<float>& x, const float* want, const float* got, float tol = kTol) {
  const size_t n = x.size();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < n; ++i) {
    const float err = std::fabs(got[i] - want[i]);
    if (!(err <= tol * (1.0f + std::fabs(want[i]))) && bad++ == 0) first = i;
  }
  if (bad == 0) return;
  INFO(std::string(what) << ", n = " << n << ": " << bad << " value(s) off; first at i = " << first
                        << ", x = " << x[first] << ", scalar " << want[first] << ", simd " << got[first]
                        << ", |diff| " << std::fabs(got[first] - want[first]) << " > "
                        << tol * (1.0f + std::fabs(want[first])));
  CHECK(bad == 0);
}

/// simd vs scalar for a kernel of the form k(tag, const float* x, float* y, n).
template <class Kernel>
void check_map(const char* what, Kernel kernel, const std::vector<float>& x, float tol = kTol) {
  std::vector<float> want(x.size());
  kernel(backend::scalar{}, x.data(), want.data(), x.size());
  for (size_t shift : {size_t(0), size_t(1)}) {
    Guarded in(x, shift), out(std::vector<float>(x.size(), 0.0f), shift);
    kernel(backend::simd{}, in.data(), out.data(), x.size());
    check_close(what, x, want.data(), out.data(), tol);
    CHECK(out.guards_intact());
    CHECK(std::equal(x.begin(), x.end(), in.data()));  // input left alone
  }
}

const auto gelu_tanh = [](auto tag, const float* x, float* y, size_t n) { kernels::gelu_tanh(tag, x, y, n); };
const auto gelu_tanh_grad = [](auto tag, const float* x, float* y, size_t n) {
  kernels::gelu_tanh_grad(tag, x, y, n);
};
const auto gelu_tanh_dx = [](auto tag, const float* x, float* y, size_t n) { kernels::gelu_tanh_dx(tag, x, y, n); };
const auto gelu_tanh_grad_dx = [](auto tag, const float* x, float* y, size_t n) {
  kernels::gelu_tanh_grad_dx(tag, x, y, n);
};

void check_silu_mul(const std::vector<float>& g, const std::vector<float>& u) {
  std::vector<float> want = g;
  kernels::silu_mul(backend::scalar{}, want.data(), u.data(), g.size());
  for (size_t shift : {size_t(0), size_t(1)}) {
    Guarded gg(g, shift), uu(u, 1 - shift);
    kernels::silu_mul(backend::simd{}, gg.data(), uu.data(), g.size());
    check_close("silu_mul", g, want.data(), gg.data());
    CHECK(gg.guards_intact());
    CHECK(std::equal(u.begin(), u.end(), uu.data()));
  }
}

}  // namespace

TEST_CASE("gelu_tanh: simd matches scalar") {
  for (size_t n : kSizes) check_map("gelu_tanh", gelu_tanh, inputs(n));
}

TEST_CASE("gelu_tanh: in place (x == y), as the library calls it") {
  for (size_t n : kSizes) {
    const std::vector<float> x = inputs(n);
    std::vector<float> want(n), apart(n);
    kernels::gelu_tanh(backend::scalar{}, x.data(), want.data(), n);
    kernels::gelu_tanh(backend::simd{}, x.data(), apart.data(), n);
    for (size_t shift : {size_t(0), size_t(1)}) {
      Guarded io(x, shift);
      kernels::gelu_tanh(backend::simd{}, io.data(), io.data(), n);
      check_close("gelu_tanh in place", x, want.data(), io.data());
      CHECK(std::equal(apart.begin(), apart.end(), io.data()));  // bit-identical to out of place
      CHECK(io.guards_intact());
      std::vector<float> s = x;  // the scalar loop in place too
      kernels::gelu_tanh(backend::scalar{}, s.data(), s.data(), n);
      CHECK(s == want);
    }
  }
}

TEST_CASE("gelu_tanh_grad: simd matches scalar") {
  for (size_t n : kSizes) check_map("gelu_tanh_grad", gelu_tanh_grad, inputs(n));
}

TEST_CASE("gelu_tanh_dx, gelu_tanh_grad_dx (the backwards): simd matches scalar") {
  for (size_t n : kSizes) {
    check_map("gelu_tanh_dx", gelu_tanh_dx, inputs(n));
    check_map("gelu_tanh_grad_dx", gelu_tanh_grad_dx, inputs(n), kTolGradDx);
  }
}

/// A pair kernel k(tag, x, y, dy, n) against its two single kernels (f: y, df: dy): under simd
/// bit for bit (TTT-MLP's reverse takes from it values the forward computed with the singles),
/// and the scalar loops the same.
template <class Pair, class F, class DF>
void check_pair(const char* what, Pair pair, F f, DF df, const std::vector<float>& x) {
  const size_t n = x.size();
  for (auto tag : {0, 1}) {
    std::vector<float> y1(n), dy1(n);
    if (tag == 0) f(backend::scalar{}, x.data(), y1.data(), n), df(backend::scalar{}, x.data(), dy1.data(), n);
    else f(backend::simd{}, x.data(), y1.data(), n), df(backend::simd{}, x.data(), dy1.data(), n);
    for (size_t shift : {size_t(0), size_t(1)}) {
      Guarded in(x, shift), y(std::vector<float>(n, 0.0f), shift), dy(std::vector<float>(n, 0.0f), 1 - shift);
      if (tag == 0) pair(backend::scalar{}, in.data(), y.data(), dy.data(), n);
      else pair(backend::simd{}, in.data(), y.data(), dy.data(), n);
      INFO(what << (tag == 0 ? " scalar" : " simd") << ", n = " << n << ", shift " << shift);
      CHECK(std::equal(y1.begin(), y1.end(), y.data()));
      CHECK(std::equal(dy1.begin(), dy1.end(), dy.data()));
      CHECK(y.guards_intact());
      CHECK(dy.guards_intact());
      CHECK(std::equal(x.begin(), x.end(), in.data()));
    }
  }
}

TEST_CASE("gelu_tanh_pair, gelu_tanh_grad_pair: the two single kernels' values from one tanh, bit for bit") {
  const auto pair = [](auto tag, const float* x, float* y, float* dy, size_t n) {
    kernels::gelu_tanh_pair(tag, x, y, dy, n);
  };
  const auto grad_pair = [](auto tag, const float* x, float* y, float* dy, size_t n) {
    kernels::gelu_tanh_grad_pair(tag, x, y, dy, n);
  };
  std::vector<float> sweep(20001);
  for (size_t i = 0; i < sweep.size(); ++i) sweep[i] = float(-20.0 + 40.0 * double(i) / double(sweep.size() - 1));
  for (size_t n : kSizes) {
    check_pair("gelu_tanh_pair", pair, gelu_tanh, gelu_tanh_dx, inputs(n));
    check_pair("gelu_tanh_grad_pair", grad_pair, gelu_tanh_grad, gelu_tanh_grad_dx, inputs(n));
  }
  check_pair("gelu_tanh_pair", pair, gelu_tanh, gelu_tanh_dx, sweep);
  check_pair("gelu_tanh_grad_pair", grad_pair, gelu_tanh_grad, gelu_tanh_grad_dx, sweep);
  // in place: y over x
  std::vector<float> x = inputs(65), y = x, dy(x.size()), y1(x.size()), dy1(x.size());
  kernels::gelu_tanh_pair(backend::simd{}, x.data(), y1.data(), dy1.data(), x.size());
  kernels::gelu_tanh_pair(backend::simd{}, y.data(), y.data(), dy.data(), y.size());
  CHECK(y == y1);
  CHECK(dy == dy1);
}

TEST_CASE("the scalar backwards are the derivatives of their forwards (central differences in double)") {
  // the forwards in double with the kernels' constants
  const auto gelu = [](double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); };
  const auto gelu_bwd = [](double x) {
    const double t = std::tanh(0.79788456 * x * (1.0 + 0.044715 * x * x));
    return 0.5 * x * ((1.0 - t * t) * (0.79788456 + 0.1070322243 * x * x)) + 0.5 * (1.0 + t);
  };
  const double eps = 1e-5;
  for (float x : inputs(400)) {
    const double xd = double(x);
    const double fd1 = (gelu(xd + eps) - gelu(xd - eps)) / (2 * eps), fd2 = (gelu_bwd(xd + eps) - gelu_bwd(xd - eps)) / (2 * eps);
    CAPTURE(x);
    CHECK(std::fabs(kernels::gelu_tanh_dx_scalar(x) - fd1) <= 1e-5 * (1 + std::fabs(fd1)));
    CHECK(std::fabs(kernels::gelu_tanh_grad_dx_scalar(x) - fd2) <= 1e-5 * (1 + std::fabs(fd2)));
    CHECK(std::fabs(kernels::gelu_tanh_grad_scalar(x) - (gelu_bwd(xd))) <= 1e-6 * (1 + std::fabs(gelu_bwd(xd))));
  }
}

TEST_CASE("silu_mul: simd matches scalar") {
  for (size_t n : kSizes) check_silu_mul(inputs(n), factors(n));
}

TEST_CASE("silu_gate: simd matches scalar (sigmoid kept or not, h over b)") {
  for (size_t n : kSizes) {
    const std::vector<float> a = inputs(n), b = factors(n);
    std::vector<float> sg(n), h(n);
    kernels::silu_gate(backend::scalar{}, a.data(), b.data(), sg.data(), h.data(), n);
    for (size_t shift : {size_t(0), size_t(1)}) {
      Guarded aa(a, shift), bb(b, 1 - shift);
      Guarded gs(std::vector<float>(n, 0.0f), shift), gh(std::vector<float>(n, 0.0f), 1 - shift);
      kernels::silu_gate(backend::simd{}, aa.data(), bb.data(), gs.data(), gh.data(), n);
      check_close("silu_gate sigmoid", a, sg.data(), gs.data());
      check_close("silu_gate h", a, h.data(), gh.data());
      CHECK(gs.guards_intact());
      CHECK(gh.guards_intact());
      CHECK(std::equal(a.begin(), a.end(), aa.data()));
      CHECK(std::equal(b.begin(), b.end(), bb.data()));
      Guarded h2(std::vector<float>(n, 0.0f), shift);
      kernels::silu_gate(backend::simd{}, aa.data(), bb.data(), nullptr, h2.data(), n);  // no sigmoid out
      CHECK(std::equal(gh.data(), gh.data() + n, h2.data()));
      CHECK(h2.guards_intact());
      kernels::silu_gate(backend::simd{}, aa.data(), bb.data(), nullptr, bb.data(), n);  // in place over b
      CHECK(std::equal(gh.data(), gh.data() + n, bb.data()));
    }
    for (size_t i = 0; i < n; ++i) {  // the twin is its definition
      CAPTURE(a[i]);
      CHECK(sg[i] == kernels::sigmoid_scalar(a[i]));
      CHECK(h[i] == a[i] * kernels::sigmoid_scalar(a[i]) * b[i]);
    }
  }
}

TEST_CASE("silu_mul_bwd: simd matches scalar, and the scalar is silu_mul's derivative") {
  for (size_t n : kSizes) {
    const std::vector<float> g = inputs(n), u = factors(n), da = factors(n + 3);
    std::vector<float> dg(n), du(n);
    kernels::silu_mul_bwd(backend::scalar{}, g.data(), u.data(), da.data(), dg.data(), du.data(), n);
    for (size_t shift : {size_t(0), size_t(1)}) {
      Guarded gg(g, shift), uu(u, 1 - shift), dd(da, shift);
      Guarded og(std::vector<float>(n, 0.0f), 1 - shift), ou(std::vector<float>(n, 0.0f), shift);
      kernels::silu_mul_bwd(backend::simd{}, gg.data(), uu.data(), dd.data(), og.data(), ou.data(), n);
      check_close("silu_mul_bwd dg", g, dg.data(), og.data());
      check_close("silu_mul_bwd du", g, du.data(), ou.data());
      CHECK(og.guards_intact());
      CHECK(ou.guards_intact());
      CHECK(std::equal(g.begin(), g.end(), gg.data()));
      CHECK(std::equal(u.begin(), u.end(), uu.data()));
      CHECK(std::equal(da.begin(), da.end(), dd.data()));
    }
    for (size_t i = 0; i < n; ++i) {  // central differences in double of da silu(g) u
      const double x = g[i], h = 1e-5, sd = 1.0 / (1.0 + std::exp(-x));
      auto f = [&](double v) { return double(da[i]) * v / (1.0 + std::exp(-v)) * double(u[i]); };
      const double want_g = (f(x + h) - f(x - h)) / (2 * h), want_u = double(da[i]) * x * sd;
      CAPTURE(x);
      CHECK(std::fabs(dg[i] - want_g) <= 1e-5 * (1 + std::fabs(want_g)));
      CHECK(std::fabs(du[i] - want_u) <= 1e-5 * (1 + std::fabs(want_u)));
    }
  }
}

TEST_CASE("exp_affine_sum (attention's probabilities): simd matches scalar, -inf gives 0, the sum of the values") {
  for (size_t n : kSizes) {
    std::vector<float> x = inputs(n);
    for (size_t i = 3; i < n; i += 11) x[i] = -std::numeric_limits<float>::infinity();  // masked scores
    for (const float a : {1.0f, 0.125f}) {
      std::vector<float> want = x;
      const float sw = kernels::exp_affine_sum(backend::scalar{}, want.data(), n, a, 2.5f);
      for (size_t shift : {size_t(0), size_t(1)}) {
        Guarded got(x, shift);
        const float sg = kernels::exp_affine_sum(backend::simd{}, got.data(), n, a, 2.5f);
        check_close("exp_affine_sum", x, want.data(), got.data());
        CHECK(got.guards_intact());
        double sum = 0;
        for (size_t i = 0; i < n; ++i) sum += got.data()[i];
        CHECK(std::fabs(sg - sum) <= 1e-5 * (1 + sum));
        CHECK(std::fabs(sg - sw) <= 1e-5 * (1 + std::fabs(sw)));
      }
      for (size_t i = 0; i < n; ++i) {
        CAPTURE(x[i]);
        CHECK(want[i] == std::exp(a * x[i] - 2.5f));  // the twin is its definition; exp(-inf) = 0
      }
    }
  }
}

TEST_CASE("dense sweep over [-20, 20]") {
  const size_t n = 200001;  // odd: a tail at every SIMD width
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = float(-20.0 + 40.0 * double(i) / double(n - 1));
  check_map("gelu_tanh", gelu_tanh, x);
  check_map("gelu_tanh_grad", gelu_tanh_grad, x);
  check_map("gelu_tanh_dx", gelu_tanh_dx, x);
  check_map("gelu_tanh_grad_dx", gelu_tanh_grad_dx, x, kTolGradDx);
  check_silu_mul(x, std::vector<float>(n, 1.0f));
}

TEST_CASE("rows_wt (a few rows times W^T): simd matches the scalar loop, strides and accumulate") {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t n : {1, 2, 3, 7, 8, 9, 16, 17, 32, 64})
    for (size_t k : {1, 3, 4, 13, 16, 64, 77})
      for (size_t m : {1, 5, 33})
        for (bool acc : {false, true}) {
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(m);
          CAPTURE(acc);
          const std::ptrdiff_t ldx = std::ptrdiff_t(k + 3), ldy = std::ptrdiff_t(m + 2);  // row strides past the data
          std::vector<float> X(n * size_t(ldx)), W(m * k), Y0(n * size_t(ldy)), Y1;
          for (auto* v : {&X, &W, &Y0})
            for (float& x : *v) x = u(rng);
          Y1 = Y0;
          kernels::rows_wt(backend::scalar{}, X.data(), ldx, n, k, W.data(), m, Y0.data(), ldy, acc);
          kernels::rows_wt(backend::simd{}, X.data(), ldx, n, k, W.data(), m, Y1.data(), ldy, acc);
          float worst = 0.0f;
          for (size_t i = 0; i < Y0.size(); ++i) worst = std::max(worst, std::fabs(Y0[i] - Y1[i]) / (1.0f + std::fabs(Y0[i])));
          CHECK(worst <= 1e-5f);  // sums of up to 77 products in another order
          for (size_t b = 0; b < n; ++b)  // the cells between rows are untouched (they were equal before)
            for (size_t j = m; j < size_t(ldy); ++j) CHECK(Y1[b * size_t(ldy) + j] == Y0[b * size_t(ldy) + j]);
        }
}

TEST_CASE("rows_w (a few rows times W, read in place): simd matches the scalar loop, strides, remainders, "
          "accumulate and X read transposed") {
  // rows 1..33 cover every row tile (6, 4, 2, 1 with AVX-512; 2, 1 elsewhere), columns the blocks
  // of 4 batches, single batches and the scalar columns past the last batch; X row-major (incx 1)
  // or transposed (X[b, i] at X[i * ldx' + b]: a fast weight's gradient X^T W), Y overwritten or
  // added to
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool transposed : {false, true})
    for (bool accumulate : {false, true})
      for (size_t n : {1, 2, 3, 4, 5, 6, 7, 11, 16, 32, 33})
        for (size_t k : {1, 5, 16, 64, 256})
          for (size_t m : {1, 7, 16, 37, 64, 80, 256}) {
            CAPTURE(transposed);
            CAPTURE(accumulate);
            CAPTURE(n);
            CAPTURE(k);
            CAPTURE(m);
            // X: (n, k) with row stride k + 3, or its transpose stored (k, n) with row stride n + 3
            const std::ptrdiff_t stride = std::ptrdiff_t(transposed ? n + 3 : k + 3);
            const std::ptrdiff_t ldx = transposed ? 1 : stride, incx = transposed ? stride : 1;
            const std::ptrdiff_t ldw = std::ptrdiff_t(m + 5), ldy = std::ptrdiff_t(m + 2);
            std::vector<float> X((transposed ? k : n) * size_t(stride)), W(k * size_t(ldw)), Y0(n * size_t(ldy)), Y1;
            for (auto* v : {&X, &W, &Y0})
              for (float& x : *v) x = u(rng);
            Y1 = Y0;
            const std::vector<float> before = Y0;
            kernels::rows_w(backend::scalar{}, X.data(), ldx, n, k, W.data(), ldw, m, Y0.data(), ldy, accumulate, incx);
            kernels::rows_w(backend::simd{}, X.data(), ldx, n, k, W.data(), ldw, m, Y1.data(), ldy, accumulate, incx);
            float worst = 0.0f;
            for (size_t i = 0; i < Y0.size(); ++i)
              worst = std::max(worst, std::fabs(Y0[i] - Y1[i]) / (1.0f + std::fabs(Y0[i])));
            CHECK(worst <= 1e-4f);  // sums of up to 256 products in [-1, 1], with and without FMA
            // the twin itself against a double sum of the definition, for one cell per row
            for (size_t b = 0; b < n; ++b) {
              const size_t j = (b * 7) % m;
              double ref = accumulate ? double(before[b * size_t(ldy) + j]) : 0.0;
              for (size_t i = 0; i < k; ++i)
                ref += double(X[size_t(std::ptrdiff_t(b) * ldx + std::ptrdiff_t(i) * incx)]) *
                       double(W[i * size_t(ldw) + j]);
              CHECK(std::fabs(double(Y0[b * size_t(ldy) + j]) - ref) <= 1e-4 * (1.0 + std::fabs(ref)));
            }
            for (size_t b = 0; b < n; ++b)  // the cells between rows are untouched (they were equal before)
              for (size_t j = m; j < size_t(ldy); ++j) CHECK(Y1[b * size_t(ldy) + j] == Y0[b * size_t(ldy) + j]);
          }
}

TEST_CASE("rows_wt's tiles of 1, 2 and 3 weight rows give the same sums bit for bit, and one row alone the same") {
  // An instruction set picks one tile width (kernels::isa::kRowsTileW: 3 with AVX-512, else 1);
  // every width runs here, for this build's instruction set, against width 1 and against each row
  // multiplied alone.
  using A = xsimd::default_arch;
  std::mt19937 rng(6);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t n : {2, 5, 8, 11})
    for (size_t k : {7, 16, 77})
      for (size_t m : {1, 4, 8})
        for (bool acc : {false, true}) {
          CAPTURE(n);
          CAPTURE(k);
          CAPTURE(m);
          CAPTURE(acc);
          const std::ptrdiff_t ldx = std::ptrdiff_t(k + 1), ldy = std::ptrdiff_t(m + 3);
          std::vector<float> X(n * size_t(ldx)), W(m * k), Y0(n * size_t(ldy));
          for (auto* v : {&X, &W, &Y0})
            for (float& x : *v) x = u(rng);
          std::vector<float> Y1 = Y0, Y2 = Y0, Y3 = Y0, Yalone = Y0;
          kernels::isa::rows_wt_blocks<A, 1>(X.data(), ldx, n, k, W.data(), m, Y1.data(), ldy, acc);
          kernels::isa::rows_wt_blocks<A, 2>(X.data(), ldx, n, k, W.data(), m, Y2.data(), ldy, acc);
          kernels::isa::rows_wt_blocks<A, 3>(X.data(), ldx, n, k, W.data(), m, Y3.data(), ldy, acc);
          for (size_t b = 0; b < n; ++b)  // decode's one-row path, row by row
            kernels::isa::rows_wt<A>(X.data() + b * size_t(ldx), ldx, 1, k, W.data(), m, Yalone.data() + b * size_t(ldy),
                                     ldy, acc);
          CHECK(Y2 == Y1);
          CHECK(Y3 == Y1);
          CHECK(Yalone == Y1);
          kernels::rows_wt(backend::scalar{}, X.data(), ldx, n, k, W.data(), m, Y0.data(), ldy, acc);
          float worst = 0.0f;
          for (size_t i = 0; i < Y0.size(); ++i) worst = std::max(worst, std::fabs(Y0[i] - Y3[i]) / (1.0f + std::fabs(Y0[i])));
          CHECK(worst <= 1e-5f);
        }
}

TEST_CASE("runtime dispatch: the tables this program runs, a choice by name, a clear error for a missing one") {
  const std::vector<std::string> names = kernels::simd_names();
  REQUIRE(!names.empty());
  MESSAGE("SIMD kernels: " << std::string(kernels::simd_kernels().name) << " (runnable here:" << [&] {
    std::string all;
    for (const auto& n : names) all += " " + n;
    return all;
  }() << ")");
  // the build's own instruction set is always among them; the list is best first
  CHECK(std::find(names.begin(), names.end(), std::string(xsimd::default_arch::name())) != names.end());
  const std::string active = kernels::simd_kernels().name;
  for (const std::string& n : names) {
    kernels::use_simd(n);
    CHECK(kernels::simd_kernels().name == n);
    CHECK(kernels::simd_kernels().width * sizeof(float) * 8 >= 128);
  }
  kernels::use_simd("best");
  CHECK(kernels::simd_kernels().name == names.front());
#if defined(TTT_SIMD_DISPATCH)
  // ttt::simd_dispatch's tables, where the CPU runs them (the OS saving the registers included)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  CHECK(avx2 == (std::find(names.begin(), names.end(), "fma3+avx2") != names.end() ||
                 xsimd::default_arch::version() >= xsimd::fma3<xsimd::avx2>::version()));
#endif
  try {
    kernels::use_simd("neon64");
    FAIL("use_simd accepted an instruction set this program does not hold");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("'neon64'") != std::string::npos);
    CHECK(std::string(e.what()).find(names.front()) != std::string::npos);
  }
  kernels::use_simd(active);  // TTT_SIMD's choice for the tests that follow
}
