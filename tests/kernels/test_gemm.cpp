// kernels::gemm (kernels/gemm.hpp) and blocks::matmul (blocks/matmul.hpp) against a plain loop in
// double: the four transpositions, strided operands (views into larger matrices), accumulation,
// shapes from a single row to more than Eigen's cache blocks, and Eigen's own thread count. Run
// once per table (tests/kernels/CMakeLists.txt): with TTT_SIMD=avx512bw or fma3+avx2 the products
// go through that table's GEMM (Eigen compiled for it, include/ttt/precompiled/isa/eigen_gemm.hpp),
// with the build's own table through the build's Eigen.
//
// Tolerance: |C - exact| <= 1e-5 * (1 + sum_k |a_ik b_kj|) per entry (float sums of up to 700
// terms in [-1, 1]: the rounding of each of them is ~6e-8 of the running sum).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <Eigen/Core>
#include <xsimd/xsimd.hpp>

#include <ttt/ad/real.hpp>
#include <ttt/blocks/matmul.hpp>
#include <ttt/kernels/gemm.hpp>

namespace {

using namespace ttt;
using Index = Eigen::Index;

Mat random_mat(Index r, Index c, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  Mat m(r, c);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = d(g);
  return m;
}

/// The largest |got - exact| / (1 + sum |a b|) over the entries, exact in double from op(A), op(B).
template <class X, class Y>
double worst_error(const Mat& got, const Eigen::MatrixBase<X>& opa, const Eigen::MatrixBase<Y>& opb, const Mat& c0,
                   bool accumulate) {
  double worst = 0;
  for (Index i = 0; i < got.rows(); ++i)
    for (Index j = 0; j < got.cols(); ++j) {
      double s = accumulate ? double(c0(i, j)) : 0.0, mag = std::fabs(s);
      for (Index k = 0; k < opa.cols(); ++k) {
        s += double(opa(i, k)) * double(opb(k, j));
        mag += std::fabs(double(opa(i, k)) * double(opb(k, j)));
      }
      worst = std::max(worst, std::fabs(double(got(i, j)) - s) / (1.0 + mag));
    }
  return worst;
}

}  // namespace

TEST_CASE("kernels::gemm: every transposition, strided operands, accumulation, against a plain loop") {
  const std::string table = kernels::simd_kernels().name;
#if defined(TTT_SIMD_DISPATCH) && !defined(TTT_WITH_BLAS)
  // the build's own table runs the build's Eigen; the dispatch tables carry their own GEMM
  CHECK((kernels::simd_kernels().gemm != nullptr) == (table != xsimd::default_arch::name()));
#else
  CHECK(kernels::simd_kernels().gemm == nullptr);
#endif
  struct Shape {
    Index m, n, k;
  };
  // one row, tiny (under Eigen's GEMM threshold), the inner learners' 16-row products, a panel
  // past Eigen's cache blocks (k > 256, n > its nc for these sizes), odd sizes everywhere
  for (const Shape s : {Shape{1, 37, 19}, Shape{3, 5, 7}, Shape{16, 64, 256}, Shape{16, 16, 64}, Shape{61, 259, 97},
                        Shape{300, 190, 700}}) {
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      for (bool acc : {false, true}) {
        INFO(table << ": m " << s.m << " n " << s.n << " k " << s.k << " ta " << ta << " tb " << tb << " acc " << acc);
        // each operand a view into a larger matrix (leading dimension > its columns), offset by one row and column
        const Mat Abig = random_mat((ta ? s.k : s.m) + 2, (ta ? s.m : s.k) + 3, 1);
        const Mat Bbig = random_mat((tb ? s.n : s.k) + 2, (tb ? s.k : s.n) + 5, 2);
        Mat Cbig = random_mat(s.m + 2, s.n + 4, 3);
        const Mat C0 = Cbig.block(1, 1, s.m, s.n);
        const auto A = Abig.block(1, 1, ta ? s.k : s.m, ta ? s.m : s.k);
        const auto B = Bbig.block(1, 1, tb ? s.n : s.k, tb ? s.k : s.n);
        const Mat guard = Cbig;
        kernels::gemm(backend::cpu_default{}, ta, tb, s.m, s.n, s.k, A.data(), Abig.cols(), B.data(), Bbig.cols(),
                      Cbig.data() + Cbig.cols() + 1, Cbig.cols(), acc);
        const Mat got = Cbig.block(1, 1, s.m, s.n);
        double err = 0;
        if (!ta && !tb) err = worst_error(got, A, B, C0, acc);
        else if (!ta) err = worst_error(got, A, B.transpose(), C0, acc);
        else if (!tb) err = worst_error(got, A.transpose(), B, C0, acc);
        else err = worst_error(got, A.transpose(), B.transpose(), C0, acc);
        CHECK(err <= 1e-5);
        // nothing outside C's view written
        Cbig.block(1, 1, s.m, s.n) = guard.block(1, 1, s.m, s.n);
        CHECK(Cbig == guard);
      }
    }
  }
}

TEST_CASE("blocks::matmul: views and transposes go through kernels::gemm, others through Eigen, same values") {
  const Mat X = random_mat(130, 70, 4), W = random_mat(90, 70, 5), D = random_mat(130, 90, 6);
  // y = x W^T (a Matrix, resized), g += dy^T x (a block of a larger matrix), the reference in double
  Mat y;
  blocks::matmul(y, X, W.transpose());
  REQUIRE(y.rows() == 130);
  REQUIRE(y.cols() == 90);
  CHECK(worst_error(y, X, W.transpose(), Mat::Zero(130, 90), false) <= 1e-5);
  Mat G = random_mat(95, 75, 7);
  const Mat G0 = G;
  blocks::matmul(G.block(2, 3, 90, 70), D.transpose(), X, true);
  CHECK(worst_error(Mat(G.block(2, 3, 90, 70)), D.transpose(), X, Mat(G0.block(2, 3, 90, 70)), true) <= 1e-5);
  CHECK(G.topRows(2) == G0.topRows(2));
  CHECK(G.leftCols(3) == G0.leftCols(3));
  // a Ref with an outer stride, as the library passes views
  Mat out = Mat::Zero(130, 100);
  RefT<float> o(out.leftCols(90));
  blocks::matmul(o, cv(D.leftCols(70)), cv(W).transpose().transpose().transpose());
  CHECK(worst_error(Mat(out.leftCols(90)), D.leftCols(70), W.transpose(), Mat::Zero(130, 90), false) <= 1e-5);
  CHECK(out.rightCols(10).isZero());
  // an operand that is an expression (no strides) goes to Eigen's product: the same values
  Mat e;
  blocks::matmul(e, X * 2.0f, W.transpose());
  CHECK(worst_error(e, X * 2.0f, W.transpose(), Mat::Zero(130, 90), false) <= 1e-5);
  // double: Eigen's own product
  const MatT<double> Xd = X.cast<double>(), Wd = W.cast<double>();
  MatT<double> yd;
  blocks::matmul(yd, Xd, Wd.transpose());
  CHECK((yd - Xd * Wd.transpose()).cwiseAbs().maxCoeff() == 0.0);
}

// blocks::matmul hands Eigen's product (double here) operands as pointer + leading dimension:
// every memory layout of C, A and B must come out as the product written out.
TEST_CASE("blocks::matmul in double: every layout of C, A and B against a plain loop") {
  using MatD = MatT<double>;
  using ColD = Eigen::MatrixXd;
  std::mt19937 g(3);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  const auto fill = [&](auto& m) {
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j) m(i, j) = u(g);
  };
  // the exact C0 + alpha A B (accumulate) or alpha A B
  const auto exact = [](const ColD& a, const ColD& b, const ColD& c0, bool acc, double alpha) {
    ColD r = acc ? c0 : ColD::Zero(a.rows(), b.cols());
    for (Index i = 0; i < a.rows(); ++i)
      for (Index j = 0; j < b.cols(); ++j) {
        double s = 0;
        for (Index k = 0; k < a.cols(); ++k) s += a(i, k) * b(k, j);
        r(i, j) += alpha * s;
      }
    return r;
  };
  for (const auto& [m, n, k] : {std::tuple<Index, Index, Index>{5, 7, 3}, {1, 9, 4}, {6, 1, 8}, {1, 1, 5}, {4, 6, 0},
                                {40, 33, 25}}) {
    MatD Ar(m, k), Br(k, n), Bt(n, k), C0r(m, n);
    ColD Ac(m, k), big(3 * m + 2, 2 * k + 3);
    fill(Ar), fill(Br), fill(Bt), fill(C0r), fill(Ac), fill(big);
    // A with strides 2 in both directions (no unit stride: copied), a row-major block, a transpose
    Eigen::Map<const ColD, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>> Astr(
        big.data(), m, k, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(2 * big.rows(), 2));
    for (const bool acc : {false, true})
      for (const double alpha : {1.0, -1.0, 0.5}) {
        INFO(m << "x" << n << "x" << k << " acc " << acc << " alpha " << alpha);
        const auto check = [&](const auto& c, const ColD& a, const ColD& b) {
          CHECK((ColD(c) - exact(a, b, ColD(C0r), acc, alpha)).cwiseAbs().maxCoeff() <= 1e-12);
        };
        MatD C = C0r;  // row-major C, row-major operands
        blocks::matmul(C, Ar, Br, acc, alpha);
        check(C, Ar, Br);
        ColD Cc = C0r;  // column-major C (C^T = B^T A^T), a column-major A, a transposed B
        blocks::matmul(Cc, Ac, Bt.transpose(), acc, alpha);
        check(Cc, Ac, Bt.transpose());
        C = C0r;  // A with no unit stride, B an expression
        blocks::matmul(C, Astr, Br * 2.0, acc, alpha);
        check(C, ColD(Astr), Br * 2.0);
        MatD wide = MatD::Zero(m + 1, 2 * n);  // C a block with a stride, written into in place
        wide.block(1, 1, m, n) = C0r;
        blocks::matmul(wide.block(1, 1, m, n), Ar, Br, acc, alpha);
        check(wide.block(1, 1, m, n), Ar, Br);
        CHECK(wide.row(0).isZero());
        CHECK(wide.col(0).isZero());
        if (n == 1) {  // C a column of a row-major matrix (a stride between its entries)
          MatD cols = MatD::Zero(m, 3);
          cols.col(1) = C0r;
          blocks::matmul(cols.col(1), Ar, Br, acc, alpha);
          check(cols.col(1), Ar, Br);
          CHECK(cols.col(0).isZero());
        }
        if (m == 1) {  // A a row of a column-major matrix
          C = C0r;
          blocks::matmul(C, Ac.row(0), Br, acc, alpha);
          check(C, Ac.row(0), Br);
        }
        if (!acc && alpha == 1.0) {  // the two-argument overload, into a Matrix it resizes
          MatD r;
          blocks::matmul(r, Ar, Br);
          check(r, Ar, Br);
        }
      }
  }
}

// ad::Real: a scale that is a differentiable 1 still carries its gradient through the product.
TEST_CASE("blocks::matmul in ad::Real: alpha = 1 on the tape keeps its gradient") {
  using R = ad::Real<double>;
  ad::RealTape<double> tape;
  ad::RealTape<double>::Scope scope(tape);
  MatT<R> A(2, 3), B(3, 2), C(2, 2);
  for (Index i = 0; i < A.size(); ++i) A.data()[i] = R(0.25 * double(i + 1));
  for (Index i = 0; i < B.size(); ++i) B.data()[i] = R(1.0 - 0.5 * double(i));
  const R alpha = tape.leaf(1.0);
  blocks::matmul(C, A, B, false, alpha);
  R sum = 0.0;
  for (Index i = 0; i < C.size(); ++i) sum = sum + C.data()[i];
  const double d = tape.gradient({sum}, {1.0}, {alpha})[0].v;
  double expect = 0;
  for (Index i = 0; i < 2; ++i)
    for (Index j = 0; j < 2; ++j)
      for (Index k = 0; k < 3; ++k) expect += A(i, k).v * B(k, j).v;
  CHECK(std::fabs(sum.v - expect) <= 1e-12);
  CHECK(std::fabs(d - expect) <= 1e-12);
}

TEST_CASE("kernels::gemm and blocks::matmul with a scale alpha (C -= A B, C += c A B)") {
  const Index m = 33, n = 45, k = 70;
  const Mat A = random_mat(m, k, 10), B = random_mat(n, k, 11), C0 = random_mat(m, n, 12);
  for (const float alpha : {-1.0f, 0.5f, 3.0f}) {
    for (bool acc : {false, true}) {
      INFO("alpha " << alpha << " acc " << acc);
      Mat C = C0;
      kernels::gemm(backend::cpu_default{}, false, true, m, n, k, A.data(), k, B.data(), k, C.data(), n, acc, alpha);
      CHECK(worst_error(C, alpha * A, B.transpose(), C0, acc) <= 1e-5);
      Mat D = C0;
      blocks::matmul(D, A, B.transpose(), acc, alpha);
      CHECK(worst_error(D, alpha * A, B.transpose(), C0, acc) <= 1e-5);
    }
  }
}

TEST_CASE("kernels::gemm follows Eigen::setNbThreads (a large product, one thread and the default)") {
  const Index m = 400, n = 300, k = 500;
  const Mat A = random_mat(m, k, 8), B = random_mat(k, n, 9);
  Mat one(m, n), many(m, n);
  Eigen::setNbThreads(1);
  kernels::gemm(backend::cpu_default{}, false, false, m, n, k, A.data(), k, B.data(), n, one.data(), n, false);
  Eigen::setNbThreads(0);  // back to OpenMP's count
  kernels::gemm(backend::cpu_default{}, false, false, m, n, k, A.data(), k, B.data(), n, many.data(), n, false);
  CHECK(worst_error(one, A, B, Mat::Zero(m, n), false) <= 1e-5);
  CHECK(worst_error(many, A, B, Mat::Zero(m, n), false) <= 1e-5);
}
