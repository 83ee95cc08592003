// TTT_WITH_BLAS=ON (built only then): Eigen's products go through the system BLAS
// (EIGEN_USE_BLAS, on the ttt target). Checks that they really do (the link wraps sgemm_, sgemv_
// and dgemm_ and counts the calls, where the linker has --wrap), that a large product in the
// library's three shapes (A B, A B^T, A^T B, on views with an outer stride) matches a plain loop,
// and that the models still match the ttt-lm-pytorch reference cases (logits, decode logits) at
// the tolerances of its README.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>

#include "test_helpers.hpp"

#ifndef EIGEN_USE_BLAS
#error "test_blas is built with TTT_WITH_BLAS=ON only: the ttt target must define EIGEN_USE_BLAS"
#endif

using namespace ttt;
namespace fs = std::filesystem;

#ifdef TTT_TEST_WRAP_BLAS
// -Wl,--wrap=sgemm_ (tests/core/CMakeLists.txt): every reference to sgemm_ in the program, the
// precompiled library's included, lands here; __real_sgemm_ is the BLAS's. Signatures as Eigen
// declares them (Eigen/src/misc/blas.h).
namespace {
std::atomic<long> sgemm_calls{0}, sgemv_calls{0}, dgemm_calls{0};
}
extern "C" {
int __real_sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
                  const float*, const int*, const float*, float*, const int*);
int __real_sgemv_(const char*, const int*, const int*, const float*, const float*, const int*, const float*,
                  const int*, const float*, float*, const int*);
int __real_dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
                  const int*, const double*, const int*, const double*, double*, const int*);
int __wrap_sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
                  const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
                  const int* ldc) {
  sgemm_calls.fetch_add(1, std::memory_order_relaxed);
  return __real_sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
int __wrap_sgemv_(const char* t, const int* m, const int* n, const float* alpha, const float* a, const int* lda,
                  const float* x, const int* incx, const float* beta, float* y, const int* incy) {
  sgemv_calls.fetch_add(1, std::memory_order_relaxed);
  return __real_sgemv_(t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
int __wrap_dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const double* alpha,
                  const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
                  const int* ldc) {
  dgemm_calls.fetch_add(1, std::memory_order_relaxed);
  return __real_dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
}
#define BLAS_CALLS(name) long(name##_calls.load())
#else
#define BLAS_CALLS(name) 1L  // no --wrap: the calls are not counted
#endif

namespace {

template <class S>
MatT<S> random_mat(int64_t r, int64_t c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  MatT<S> m(r, c);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = S(n01(rng));
  return m;
}

/// sum_k A(i, k) B(k, j) in double, the plain triple loop (B given as Bt when `bt`).
template <class S>
MatD loop_product(const MatT<S>& A, const MatT<S>& B, bool at, bool bt) {
  const int64_t m = at ? A.cols() : A.rows(), k = at ? A.rows() : A.cols(), n = bt ? B.rows() : B.cols();
  MatD C = MatD::Zero(m, n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) {
      const double a = double(at ? A(p, i) : A(i, p));
      for (int64_t j = 0; j < n; ++j) C(i, j) += a * double(bt ? B(j, p) : B(p, j));
    }
  return C;
}

template <class S>
double rel(const MatT<S>& got, const MatD& want) {
  REQUIRE(got.rows() == want.rows());
  REQUIRE(got.cols() == want.cols());
  return (got.template cast<double>() - want).norm() / want.norm();
}

template <class Lrn>
void check_reference_case(const fs::path& dir) {
  INFO("case " << dir.string());
  auto model = load_checkpoint<TTTModel<Lrn>>(dir);
  const auto ex = io::SafeTensors::load(dir / "expected.safetensors");
  const auto shape = ex.info("input_ids").shape;
  REQUIRE(shape.size() == 2);
  const int64_t B = shape[0], L = shape[1], V = model.cfg.vocab_size;
  const auto ids = ex.read_int("input_ids");
  const auto logits = ex.read_float("logits", {B, L, V});
  for (int64_t b = 0; b < B; ++b) {
    const long before = BLAS_CALLS(sgemm);
    const Mat out = model.forward(std::span<const int64_t>(ids.data() + b * L, size_t(L)));
    INFO("batch " << b);
    CHECK(BLAS_CALLS(sgemm) > before);  // the forward's products went through the BLAS
    CHECK(th::rel_err(out.data(), logits.data() + b * L * V, size_t(L * V)) < 1e-4);
  }
  if (!ex.contains("prompt_len")) return;
  const int64_t P = ex.read_int("prompt_len")[0];
  const auto dec = ex.read_float("decode_logits", {B, L - P, V});
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* seq = ids.data() + b * L;
    auto st = model.new_state();
    Mat lg, got(L - P, V);
    model.forward(st, std::span<const int64_t>(seq, size_t(P)), &lg, Logits::last);
    got.row(0) = lg.row(0);
    const long before = BLAS_CALLS(sgemv) + BLAS_CALLS(sgemm);
    for (int64_t t = P; t < L - 1; ++t) {
      model.forward(st, std::span<const int64_t>(seq + t, 1), &lg, Logits::last);
      got.row(t - P + 1) = lg.row(0);
    }
    INFO("decode, batch " << b);
    CHECK(BLAS_CALLS(sgemv) + BLAS_CALLS(sgemm) > before);  // one-token steps: matrix-vector products
    CHECK(th::rel_err(got.data(), dec.data() + b * (L - P) * V, size_t((L - P) * V)) < 1e-4);
  }
}

}  // namespace

TEST_CASE("large products through the BLAS match a plain loop") {
  // Odd sizes (no multiple of a kernel's tile), views with an outer stride (a head's columns).
  const int64_t m = 517, k = 703, n = 389;
  const Mat A = random_mat<float>(m, k, 1), Bw = random_mat<float>(k + 5, n + 7, 2);
  const Mat B = Bw.block(2, 3, k, n);  // a copy, for the loop
  const long s0 = BLAS_CALLS(sgemm), d0 = BLAS_CALLS(dgemm);

  Mat C(m, n + 11);
  C.block(0, 4, m, n).noalias() = cv(A) * cv(Bw.block(2, 3, k, n));  // A B, strided operand and result
  CHECK(rel(Mat(C.block(0, 4, m, n)), loop_product(A, B, false, false)) < 1e-5);

  const Mat Bt = random_mat<float>(n, k, 3);
  Mat D(m, n);
  D.noalias() = cv(A) * cv(Bt).transpose();  // A B^T (x W^T, a PyTorch [out, in] weight)
  CHECK(rel(D, loop_product(A, Bt, false, true)) < 1e-5);

  const Mat A2 = random_mat<float>(k, m, 4);
  Mat E(m, n);
  E.noalias() = cv(A2).transpose() * cv(B);  // A^T B (weight gradients)
  CHECK(rel(E, loop_product(A2, B, true, false)) < 1e-5);

  const MatD Ad = random_mat<double>(301, 257, 5), Bd = random_mat<double>(257, 263, 6);
  MatD Cd(301, 263);
  Cd.noalias() = cv(Ad) * cv(Bd);
  CHECK(rel(Cd, loop_product(Ad, Bd, false, false)) < 1e-12);

  const Mat x = random_mat<float>(1, k, 7);
  Mat y(1, n);
  y.noalias() = cv(x) * cv(B);  // one token: a matrix-vector product
  CHECK(rel(y, loop_product(x, B, false, false)) < 1e-5);

  CHECK(BLAS_CALLS(sgemm) >= s0 + 3);
  CHECK(BLAS_CALLS(dgemm) > d0);
}

TEST_CASE("ttt-lm-pytorch reference cases through the BLAS") {
  const fs::path root = th::reference_dir() / "ttt-lm-pytorch";
  if (!fs::exists(root)) {
    MESSAGE("reference directory " << root.string() << " not found: skipped");
    return;
  }
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (!fs::exists(entry.path() / "expected.safetensors")) continue;
    const ModelConfig cfg = load_checkpoint_config(entry.path());
    if (cfg.ttt_layer_type == "linear") check_reference_case<inner::Linear>(entry.path());
    else if (cfg.ttt_layer_type == "mlp") check_reference_case<inner::MLP>(entry.path());
    else FAIL("unknown ttt_layer_type " << cfg.ttt_layer_type);
    ++cases;
  }
  CHECK(cases >= 3);
}
