// bf16 weights with fp32 activations (kernels/bf16.hpp, kernels/bf16_avx512.hpp):
//  - to_bf16 against known values (ties to even, denormals, overflow, inf, NaN) and against an
//    independent definition (the nearer of the two neighbouring bf16 values, computed in double)
//    over every upper half with the critical lower halves plus a pseudo-random sweep;
//  - Bf16Matrix's layout (row- and column-major sources agree, zero padding, 64-byte rows);
//  - every kernel of bf16_matmul_nt this CPU can run against the plain twin (backend::scalar) at
//    sizes with remainders (n = 1, 2, 3, 5, 8, 9, 17, 24, 25, 64, 67; k odd; m not a multiple of 16 or 48):
//    bit-exact on integer inputs (every summation order then gives the same sum), within the fp32
//    summation bound 2 gamma_k sum_p |x_p w_p| on uniform inputs, with `accumulate`, on views with
//    outer strides (guard cells untouched), 1 thread == 2 threads bit for bit;
//  - what bf16 weights cost against fp32 weights: Gaussian X and W, k = 768: relative Frobenius
//    error of X W^T 1.65e-3 measured (checked < 2.5e-3); largest error / rms of the outputs 7.1e-3.
// Includes only the kernel header and doctest (main() is test_kernels.cpp's).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <ttt/kernels/bf16.hpp>

namespace {

using namespace ttt;
using kernels::Bf16Kernel;
using kernels::Bf16Matrix;
using kernels::from_bf16;
using kernels::to_bf16;

uint16_t round_bits(uint32_t u) { return to_bf16(std::bit_cast<float>(u)); }

// ---- the rounding -------------------------------------------------------------------------------

static_assert(to_bf16(1.0f) == 0x3F80 && from_bf16(0x3F80) == 1.0f, "usable in constant expressions");

TEST_CASE("bf16: to_bf16 known values") {
  CHECK(round_bits(0x00000000u) == 0x0000);  // +0
  CHECK(round_bits(0x80000000u) == 0x8000);  // -0
  CHECK(to_bf16(1.0f) == 0x3F80);
  CHECK(to_bf16(-2.0f) == 0xC000);
  CHECK(to_bf16(3.140625f) == 0x4049);  // exactly representable
  // ties go to the even neighbour; just off a tie goes to the nearer one
  CHECK(round_bits(0x3F808000u) == 0x3F80);  // 1 + 2^-8: between 0x3F80 (even) and 0x3F81
  CHECK(round_bits(0x3F818000u) == 0x3F82);  // between 0x3F81 and 0x3F82 (even)
  CHECK(round_bits(0x3F808001u) == 0x3F81);
  CHECK(round_bits(0x3F807FFFu) == 0x3F80);
  CHECK(round_bits(0xBF808000u) == 0xBF80);  // the same, negative
  CHECK(round_bits(0xBF818000u) == 0xBF82);
  CHECK(round_bits(0x3FFF8000u) == 0x4000);  // the carry moves into the exponent: 1.99609375 -> 2
  // denormals are rounded, not flushed: the smallest bf16 denormal is 0x0001 = 2^-133
  CHECK(round_bits(0x00000001u) == 0x0000);  // 2^-149 -> +0
  CHECK(round_bits(0x00008000u) == 0x0000);  // 2^-134, half of 2^-133: tie -> even (0)
  CHECK(round_bits(0x00008001u) == 0x0001);
  CHECK(round_bits(0x00018000u) == 0x0002);  // tie between 0x0001 and 0x0002 -> 0x0002
  CHECK(round_bits(0x00010000u) == 0x0001);
  CHECK(round_bits(0x807F0000u) == 0x807F);  // negative denormal, exact
  CHECK(round_bits(0x007FFFFFu) == 0x0080);  // the largest denormal rounds up to FLT_MIN
  CHECK(from_bf16(0x0001) == std::ldexp(1.0f, -133));
  // the largest values and overflow
  CHECK(round_bits(0x7F7F7FFFu) == 0x7F7F);  // below the tie: the largest finite bf16 (3.3895e38)
  CHECK(round_bits(0x7F7F8000u) == 0x7F80);  // tie between 0x7F7F (odd) and +inf (even)
  CHECK(to_bf16(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(to_bf16(-std::numeric_limits<float>::max()) == 0xFF80);
  CHECK(to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  // NaN stays NaN, quiet, with its sign, also when its payload is only in the dropped half
  CHECK(round_bits(0x7FC00000u) == 0x7FC0);
  CHECK(round_bits(0x7F800001u) == 0x7FC0);  // signalling NaN, payload in the low bits
  CHECK(round_bits(0xFF800001u) == 0xFFC0);
  CHECK(round_bits(0x7FA00000u) == 0x7FE0);  // upper payload kept, quiet bit set
  CHECK(round_bits(0x7FFFFFFFu) == 0x7FFF);  // no carry out of a NaN
  CHECK(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isnan(from_bf16(to_bf16(-std::numeric_limits<float>::signaling_NaN()))));
}

/// The specification of round-to-nearest-even written differently: the nearer (in double) of the
/// bf16 value below |x| (truncation) and the next one up; on a tie the one with an even last bit.
uint16_t reference_round(uint32_t u) {
  const float x = std::bit_cast<float>(u);
  if (std::isnan(x)) return 0;  // NaN: checked separately
  const uint32_t sign = u & 0x80000000u, mag = u & 0x7FFFFFFFu;
  const uint32_t lo = mag & 0xFFFF0000u, hi = lo + 0x10000u;  // hi may be +inf (0x7F800000): fine
  const double a = std::fabs(double(x));
  const double dlo = a - double(std::bit_cast<float>(lo));
  const double dhi = double(std::bit_cast<float>(hi)) - a;  // inf when hi is +inf
  uint32_t r;
  if (hi == 0x7F800000u && lo == 0x7F7F0000u) {
    // to infinity from the half-ulp point (0x7F7F8000) on, as IEEE rounding to a wider exponent range
    r = mag >= 0x7F7F8000u ? hi : lo;
  } else if (dlo < dhi) {
    r = lo;
  } else if (dhi < dlo) {
    r = hi;
  } else {
    r = ((lo >> 16) & 1u) ? hi : lo;
  }
  if (mag >= 0x7F800000u) r = mag;  // inf stays inf
  return static_cast<uint16_t>((sign | r) >> 16);
}

TEST_CASE("bf16: to_bf16 == nearest-even reference over critical and random bit patterns") {
  int64_t bad = 0, checked = 0, nan_bad = 0;
  auto check = [&](uint32_t u) {
    const uint16_t got = round_bits(u);
    if (std::isnan(std::bit_cast<float>(u))) {
      // NaN -> quiet NaN of the same sign
      nan_bad += !(std::isnan(from_bf16(got)) && (got & 0x0040u) && ((got ^ (u >> 16)) & 0x8000u) == 0);
    } else {
      bad += got != reference_round(u);
    }
    ++checked;
  };
  for (uint32_t high = 0; high < 0x10000u; ++high)
    for (uint32_t low : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu}) check((high << 16) | low);
  std::mt19937 rng(7);
  for (int i = 0; i < 1'000'000; ++i) check(uint32_t(rng()));
  INFO(checked << " bit patterns checked");
  CHECK(bad == 0);
  CHECK(nan_bad == 0);
  // every non-NaN bf16 value survives a round trip through fp32
  int64_t trip_bad = 0;
  for (uint32_t b = 0; b < 0x10000u; ++b)
    if (!std::isnan(from_bf16(uint16_t(b)))) trip_bad += to_bf16(from_bf16(uint16_t(b))) != b;
  CHECK(trip_bad == 0);
}

TEST_CASE("bf16: bulk converters == element functions") {
  std::mt19937 rng(3);
  for (size_t n : {size_t(0), size_t(1), size_t(31), size_t(33), size_t(1000)}) {
    std::vector<float> x(n), back(n);
    for (auto& v : x) v = std::bit_cast<float>(uint32_t(rng()));
    std::vector<uint16_t> b(n);
    kernels::to_bf16(x.data(), b.data(), n);
    kernels::from_bf16(b.data(), back.data(), n);
    for (size_t i = 0; i < n; ++i) {
      CHECK(b[i] == to_bf16(x[i]));
      CHECK(std::bit_cast<uint32_t>(back[i]) == uint32_t(b[i]) << 16);
    }
  }
}

// ---- the weight -------------------------------------------------------------------------------

Mat gaussian(int64_t r, int64_t c, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, scale);
  Mat m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = float(N(rng));
  return m;
}
/// splitmix64 of (seed, i): a fast deterministic stream (std::normal_distribution over millions of
/// values took most of this file's run time).
uint64_t mix(uint64_t seed, uint64_t i) {
  uint64_t z = (seed << 32) + i + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
/// Uniform in [-scale, scale].
Mat uniform(int64_t r, int64_t c, uint64_t seed, double scale = 1.0) {
  Mat m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = float(scale * (double(mix(seed, uint64_t(i)) >> 11) * 0x1p-52 - 1.0));
  return m;
}
/// Small integers in [-lim, lim]: exact in bf16, products and sums exact in fp32.
Mat integers(int64_t r, int64_t c, uint64_t seed, int lim) {
  Mat m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = float(int64_t(mix(seed, uint64_t(i)) % uint64_t(2 * lim + 1)) - lim);
  return m;
}

TEST_CASE("bf16: Bf16Matrix layout") {
  const Mat w = gaussian(37, 45, 1);
  const Eigen::MatrixXf w_col = w;  // column-major copy
  const Bf16Matrix a(w), b(w_col), c(Eigen::Map<const Mat>(w.data(), 37, 45));
  REQUIRE(a.rows() == 37);
  REQUIRE(a.cols() == 45);
  CHECK(a.stride() == 64);
  CHECK(a.bytes() == size_t(37 * 45 * 2));
  CHECK(a.storage() == b.storage());
  CHECK(a.storage() == c.storage());
  for (int64_t i = 0; i < a.rows(); ++i) {
    CHECK(reinterpret_cast<uintptr_t>(a.row(i)) % 64 == 0);
    for (int64_t j = 0; j < a.cols(); ++j) CHECK(a.row(i)[j] == to_bf16(w(i, j)));
    for (int64_t j = a.cols(); j < a.stride(); ++j) CHECK(a.row(i)[j] == 0);  // the kernels read the padding
  }
  const Mat f = a.to_float();
  CHECK(f(3, 4) == a(3, 4));
  CHECK(f(3, 4) == from_bf16(to_bf16(w(3, 4))));
  // from bf16 bits (a checkpoint's BF16 tensor)
  std::vector<uint16_t> bits(size_t(37 * 45));
  for (int64_t i = 0; i < 37; ++i)
    for (int64_t j = 0; j < 45; ++j) bits[size_t(i * 45 + j)] = a.row(i)[j];
  CHECK(Bf16Matrix::from_bits(37, 45, bits.data()).storage() == a.storage());
  const Bf16Matrix copy = a;  // a copy keeps the alignment (the allocator's)
  CHECK(reinterpret_cast<uintptr_t>(copy.row(1)) % 64 == 0);
  CHECK(Bf16Matrix(0, 5).stride() == 32);
  CHECK(Bf16Matrix(3, 0).stride() == 0);
}

// ---- the product --------------------------------------------------------------------------------

std::vector<Bf16Kernel> runnable_kernels() {
  std::vector<Bf16Kernel> ks;
  for (Bf16Kernel k : {Bf16Kernel::automatic, Bf16Kernel::portable, Bf16Kernel::avx512, Bf16Kernel::avx512_bf16})
    if (kernels::bf16_kernel_available(k)) ks.push_back(k);
  return ks;
}

// n: the dot-product tiles take 1..24 rows in groups of 8 (remainders 1, 3, 5, 7), the GEMMs
// above (micro-tiles of 8: remainders 1 and 3).
constexpr int64_t kRows[] = {1, 2, 3, 5, 8, 9, 17, 24, 25, 64, 67};
// (m, k): odd k, m not a multiple of 16 or of the 48-row panels; (4100, 768) at n <= 3 and
// (250, 1031) at n = 9 .. 25 start threads (when there are two) on the dot-product and the GEMM
// paths; k = 1031 > 1024 runs the AVX-512 GEMM in two blocks of inputs. Products over 12M
// multiply-adds are left out (the twin is a scalar loop).
constexpr int64_t kShapes[][2] = {{1, 1}, {37, 45}, {48, 33}, {50, 64}, {97, 130}, {250, 1031}, {4100, 768}};

/// X W^T in double, by loops (no Eigen product instantiated: this file compiles in seconds);
/// with `abs`, sum_p |X(i, p)| |W(j, p)|, the scale of the fp32 summation error of out(i, j).
Eigen::MatrixXd exact_product(const Mat& X, const Mat& Wf, bool abs = false) {
  Eigen::MatrixXd out(X.rows(), Wf.rows());
  for (Eigen::Index i = 0; i < X.rows(); ++i)
    for (Eigen::Index j = 0; j < Wf.rows(); ++j) {
      double s = 0;
      for (Eigen::Index p = 0; p < X.cols(); ++p)
        s += abs ? std::abs(double(X(i, p)) * double(Wf(j, p))) : double(X(i, p)) * double(Wf(j, p));
      out(i, j) = s;
    }
  return out;
}

TEST_CASE("bf16: every kernel == the plain twin, bit-exact on integer inputs") {
  for (const auto& shape : kShapes)
    for (int64_t n : kRows) {
      const int64_t m = shape[0], k = shape[1];  // not a structured binding: INFO captures them
      if (m * k * n > 12'000'000) continue;  // the twin is a scalar loop: keep the test fast
      const Mat X = integers(n, k, uint64_t(n * 131 + k), 8), Wf = integers(m, k, uint64_t(m + 7 * k), 8);
      const Bf16Matrix W(Wf);
      Mat ref(n, m);
      kernels::bf16_matmul_nt(backend::scalar{}, X, W, ref);
      INFO("n " << n << " m " << m << " k " << k);
      CHECK(ref.cast<double>() == exact_product(X, Wf));  // the twin is the product
      for (Bf16Kernel kern : runnable_kernels()) {
        Mat out = Mat::Constant(n, m, 1e30f);
        kernels::bf16_matmul_nt(kern, X, W, out);
        INFO(kernels::bf16_kernel_name(kern));
        CHECK(out == ref);
      }
    }
}

TEST_CASE("bf16: every kernel == the plain twin within the fp32 summation bound, uniform inputs") {
  for (const auto& shape : kShapes)
    for (int64_t n : kRows) {
      const int64_t m = shape[0], k = shape[1];  // not a structured binding: INFO captures them
      if (m * k * n > 12'000'000) continue;
      const Mat X = uniform(n, k, uint64_t(n + 3 * k)), Wf = uniform(m, k, uint64_t(m + 5 * k), 0.05);
      const Bf16Matrix W(Wf);
      // the twin and the bound: of X, and (avx512_bf16 rounds the activations of a large product
      // to bf16) of X rounded; |fast - twin| <= 2 gamma_k sum_p |x_p w_p|, gamma_k = k u / (1 - k u)
      const double u = std::ldexp(1.0, -24), gamma = double(k) * u / (1.0 - double(k) * u);
      struct Twin {
        Mat ref;
        Eigen::MatrixXd bound;
      };
      auto twin = [&](const Mat& Xt) {
        Twin t{Mat(n, m), 2 * gamma * exact_product(Xt, W.to_float(), /*abs=*/true)};
        kernels::bf16_matmul_nt(backend::scalar{}, Xt, W, t.ref);
        return t;
      };
      const Twin exact = twin(X);
      for (Bf16Kernel kern : runnable_kernels()) {
        const bool rounds = kern == Bf16Kernel::avx512_bf16 && n > kernels::detail::kDotMaxRows;
        const Twin rounded = rounds ? twin(Bf16Matrix(X).to_float()) : Twin{};
        const Mat& ref = rounds ? rounded.ref : exact.ref;
        const Eigen::MatrixXd& bound = rounds ? rounded.bound : exact.bound;
        Mat out(n, m);
        kernels::bf16_matmul_nt(kern, X, W, out);
        const double worst = ((out - ref).cast<double>().cwiseAbs().array() / (bound.array() + 1e-30)).maxCoeff();
        INFO(kernels::bf16_kernel_name(kern) << " n " << n << " m " << m << " k " << k << ": error / bound " << worst);
        CHECK(worst <= 1.0);
      }
    }
}

TEST_CASE("bf16: accumulate, views with outer strides, guard cells") {
  for (Bf16Kernel kern : runnable_kernels())
    for (int64_t n : {int64_t(1), int64_t(3), int64_t(9), int64_t(64)}) {
      const int64_t m = 97, k = 45;
      const Mat big_x = integers(n + 2, k + 5, uint64_t(n), 4);  // X is a block of it
      const Mat Wf = integers(m, k, 11, 4);
      const Bf16Matrix W(Wf);
      const auto X = big_x.block(1, 2, n, k);
      const Mat start = integers(n, m, 12, 100);
      // out is the interior of a larger matrix: the frame must stay as it is
      Mat big_out = Mat::Constant(n + 2, m + 3, -7.0f), big_ref = big_out;
      big_out.block(1, 1, n, m) = start;
      big_ref.block(1, 1, n, m) = start;
      kernels::bf16_matmul_nt(backend::scalar{}, cv(X), W, mv(big_ref.block(1, 1, n, m)), /*accumulate=*/true);
      kernels::bf16_matmul_nt(kern, cv(X), W, mv(big_out.block(1, 1, n, m)), /*accumulate=*/true);
      INFO(kernels::bf16_kernel_name(kern) << " n " << n);
      CHECK(big_out == big_ref);
      CHECK((big_ref.block(1, 1, n, m) - start).cast<double>() == exact_product(X, Wf));
    }
}

TEST_CASE("bf16: the result does not depend on the number of threads") {
  // (64, 100, 768): the portable GEMM path's blocks of W (a width of Eigen's product) once
  // depended on the thread count
  for (const auto& size : {std::array<int64_t, 3>{1, 4100, 768}, std::array<int64_t, 3>{17, 700, 1031},
                           std::array<int64_t, 3>{64, 700, 1031}, std::array<int64_t, 3>{64, 100, 768}}) {
    const int64_t n = size[0], m = size[1], k = size[2];
    const Mat X = uniform(n, k, 21), Wf = uniform(m, k, 22, 0.05);
    const Bf16Matrix W(Wf);
    for (Bf16Kernel kern : runnable_kernels())
      for (int threads : {2, 3}) {
        Mat one(n, m), more(n, m);
        {
          const InnerThreads scope(1);
          kernels::bf16_matmul_nt(kern, X, W, one);
        }
        {
          const InnerThreads scope(threads);
          kernels::bf16_matmul_nt(kern, X, W, more);
        }
        INFO(std::string(kernels::bf16_kernel_name(kern)) << " n " << n << " m " << m << " k " << k << " threads "
                                                           << threads);
        CHECK(one == more);
      }
  }
}

TEST_CASE("bf16: degenerate shapes and shape errors") {
  for (Bf16Kernel kern : runnable_kernels()) {
    const Bf16Matrix W0(5, 0);  // k = 0: out = 0 (or unchanged with accumulate)
    Mat out = Mat::Constant(3, 5, 2.0f);
    kernels::bf16_matmul_nt(kern, Mat(3, 0), W0, out, true);
    CHECK(out == Mat::Constant(3, 5, 2.0f));
    kernels::bf16_matmul_nt(kern, Mat(3, 0), W0, out);
    CHECK(out == Mat::Zero(3, 5));
    Mat empty(0, 5);
    kernels::bf16_matmul_nt(kern, Mat(0, 7), Bf16Matrix(5, 7), empty);  // n = 0
    Mat none(3, 0);
    kernels::bf16_matmul_nt(kern, Mat::Ones(3, 7), Bf16Matrix(0, 7), none);  // m = 0
    Mat wrong(3, 4);
    CHECK_THROWS_AS(kernels::bf16_matmul_nt(kern, Mat::Ones(3, 7), Bf16Matrix(5, 6), out), ShapeError);
    CHECK_THROWS_AS(kernels::bf16_matmul_nt(kern, Mat::Ones(3, 7), Bf16Matrix(5, 7), wrong), ShapeError);
  }
  CHECK_THROWS_AS(Bf16Matrix(-1, 3), ShapeError);
  if (!kernels::bf16_kernel_available(Bf16Kernel::avx512)) {
    Mat out(1, 2);
    CHECK_THROWS_AS(kernels::bf16_matmul_nt(Bf16Kernel::avx512, Mat::Ones(1, 3), Bf16Matrix(2, 3), out), Error);
  }
  MESSAGE("bf16: automatic runs '" << std::string(kernels::bf16_kernel_name(kernels::bf16_kernel_chosen()))
                                    << "' on this CPU");
}

TEST_CASE("bf16: the error of bf16 weights against fp32 weights") {
  // X (64, 768) and W (256, 768) Gaussian; the exact product in double with the fp32 W as the
  // truth. bf16 keeps 8 significant bits: rounding a weight in [2^e, 2^(e+1)) errs by up to half an
  // ulp, 2^(e-8), uniformly: rms 2^(e-7) / sqrt(12), i.e. 2.3e-3 of 2^e, ~1.6e-3 of the weight
  // itself (mean significand ~1.44). The errors of the k terms are independent, so an output errs
  // by the same relative rms: measured 1.65e-3; the largest error 7.1e-3 of the outputs' rms.
  const int64_t n = 64, m = 256, k = 768;
  const Mat X = gaussian(n, k, 31), Wf = gaussian(m, k, 32, 0.02);
  const Bf16Matrix W(Wf);
  Mat out(n, m);
  kernels::bf16_matmul_nt(backend::simd{}, X, W, out);
  const Eigen::MatrixXd exact = exact_product(X, Wf);
  const Eigen::MatrixXd diff = out.cast<double>() - exact;
  const double rel = diff.norm() / exact.norm();
  const double rms = exact.norm() / std::sqrt(double(exact.size()));
  const double max_rel = diff.cwiseAbs().maxCoeff() / rms;
  MESSAGE("bf16 weights vs fp32 weights: relative Frobenius error " << rel << ", max |error| / rms(out) " << max_rel);
  CHECK(rel < 2.5e-3);
  CHECK(rel > 2e-4);  // the rounding did happen
  CHECK(max_rel < 2e-2);
}

}  // namespace

TEST_CASE("bf16 activations: the pairs round as to_bf16, and the opt-in is refused without AVX512_BF16") {
  if (!kernels::bf16_kernel_available(Bf16Kernel::avx512_bf16)) {
    CHECK_THROWS_AS(kernels::set_bf16_activations(true), Error);
    CHECK_FALSE(kernels::bf16_activations());
    MESSAGE("no AVX512_BF16 on this CPU: the vdpbf16ps kernel is not run here");
    return;
  }
  // ties (even and odd last kept bit), values past the largest bf16, +-inf, NaNs, denormals, zeros
  std::vector<float> x = {1.0f, std::bit_cast<float>(0x3F808000u), std::bit_cast<float>(0x3F818000u),
                          std::bit_cast<float>(0x3F808001u), 3.4e38f, -3.4e38f, INFINITY, -INFINITY, NAN,
                          std::bit_cast<float>(0xFF812345u), 1e-40f, -1e-41f, 0.0f, -0.0f, 0.1f, -7.3e-5f};
  for (int i = 0; x.size() < 75; ++i) x.push_back(std::ldexp(float(i % 17) - 8.3f, i % 9 - 4));  // odd length
  for (size_t k : {size_t(1), size_t(2), size_t(31), size_t(32), size_t(33), x.size()}) {
    std::vector<uint32_t> pairs((k + 1) / 2 + 1, 0xDEADBEEFu);
    kernels::detail::bf16_pairs_avx512(x.data(), int64_t(k), pairs.data());
    INFO("k " << k);
    for (size_t p = 0; p < k; ++p)
      CHECK(uint16_t(pairs[p / 2] >> (p % 2 ? 16 : 0)) == kernels::to_bf16(x[p]));
    if (k % 2) CHECK((pairs[k / 2] >> 16) == 0u);  // the pair past k is zero
    CHECK(pairs[(k + 1) / 2] == 0xDEADBEEFu);       // nothing written past the last pair
  }
  // the opt-in makes `automatic` (and so the models' products) run avx512_bf16 for large products
  const Mat X = uniform(64, 130, 3), Wf = uniform(97, 130, 4, 0.05);
  const Bf16Matrix W(Wf);
  Mat want(64, 97), got(64, 97), exact(64, 97);
  kernels::bf16_matmul_nt(Bf16Kernel::avx512_bf16, X, W, want);
  kernels::bf16_matmul_nt(Bf16Kernel::automatic, X, W, exact);
  kernels::set_bf16_activations(true);
  kernels::bf16_matmul_nt(Bf16Kernel::automatic, X, W, got);
  kernels::set_bf16_activations(false);
  CHECK(got == want);
  CHECK(got != exact);  // the activations were rounded
}
