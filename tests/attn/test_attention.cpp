// Tiled attention (ttt/attention.hpp) against a naive double implementation, and its backward
// against central finite differences of that naive implementation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <ttt/blocks/attention.hpp>
#include <ttt/blocks/kv_cache.hpp>

namespace {

using ttt::Mat;
using ttt::MatD;

Mat randn(int64_t r, int64_t c, std::mt19937_64& rng, float s = 1.0f) {
  std::normal_distribution<float> nd(0.0f, s);
  Mat m(r, c);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

// The specification: every score, in double, masked by the position rule.
void naive(const MatD& Q, const MatD& K, const MatD& V, double scale, int64_t window, int64_t q0, int64_t k0, MatD& O,
           std::vector<double>& lse) {
  const int64_t n = Q.rows(), m = K.rows();
  O = MatD::Zero(n, V.cols());
  lse.assign(size_t(n), -std::numeric_limits<double>::infinity());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = q0 + i;
    std::vector<double> s(size_t(m), -std::numeric_limits<double>::infinity());
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < m; ++j) {
      const int64_t kp = k0 + j;
      if (kp > p || (window >= 0 && kp < p - window)) continue;
      s[size_t(j)] = scale * Q.row(i).dot(K.row(j));
      mx = std::max(mx, s[size_t(j)]);
    }
    if (mx == -std::numeric_limits<double>::infinity()) continue;
    double sum = 0.0;
    for (int64_t j = 0; j < m; ++j) sum += std::exp(s[size_t(j)] - mx);
    for (int64_t j = 0; j < m; ++j) O.row(i) += std::exp(s[size_t(j)] - mx) / sum * V.row(j);
    lse[size_t(i)] = mx + std::log(sum);
  }
}

struct Case {
  int64_t n, m, d, window, q0, k0;
};

double max_abs(const MatD& a) { return a.size() ? a.cwiseAbs().maxCoeff() : 0.0; }

}  // namespace

TEST_CASE("attention forward == naive double over sizes, windows and offsets") {
  std::mt19937_64 rng(1);
  const std::vector<Case> cases = {
      {1, 1, 4, -1, 0, 0},     {7, 7, 5, -1, 0, 0},     {64, 64, 8, -1, 0, 0},   {65, 65, 8, -1, 0, 0},
      {130, 130, 16, -1, 0, 0}, {130, 130, 16, 0, 0, 0}, {130, 130, 16, 1, 0, 0}, {130, 130, 16, 63, 0, 0},
      {130, 130, 16, 64, 0, 0}, {130, 130, 16, 129, 0, 0}, {130, 130, 16, 500, 0, 0},
      {1, 200, 8, -1, 199, 0},  {1, 200, 8, 17, 199, 0},  {3, 200, 8, 70, 197, 0},   // decode-like
      {40, 100, 6, -1, 60, 0},  {40, 100, 6, 33, 60, 0},  {40, 100, 6, 33, 75, 15},  // chunk after a prefix
      {50, 30, 6, -1, 0, 10},   {50, 30, 6, 5, 0, 10},    // queries before the first key: zero rows
      {97, 131, 64, 77, 40, 3},
  };
  for (const Case& c : cases) {
    CAPTURE(c.n); CAPTURE(c.m); CAPTURE(c.d); CAPTURE(c.window); CAPTURE(c.q0); CAPTURE(c.k0);
    const Mat Q = randn(c.n, c.d, rng), K = randn(c.m, c.d, rng), V = randn(c.m, c.d, rng);
    const float scale = 1.0f / std::sqrt(float(c.d));
    Mat O(c.n, c.d);
    std::vector<float> lse(size_t(c.n));
    ttt::attn::forward(Q, K, V, scale, c.window, c.q0, c.k0, O, lse.data());
    MatD Or;
    std::vector<double> lr;
    naive(Q.cast<double>(), K.cast<double>(), V.cast<double>(), scale, c.window, c.q0, c.k0, Or, lr);
    CHECK(max_abs(O.cast<double>() - Or) < 2e-5);
    for (int64_t i = 0; i < c.n; ++i) {
      if (std::isinf(lr[size_t(i)])) CHECK(std::isinf(lse[size_t(i)]));
      else CHECK(std::abs(lse[size_t(i)] - lr[size_t(i)]) < 2e-5 * (1 + std::abs(lr[size_t(i)])));
    }
    // the pieces API (begin / accumulate over a split of the keys / finish) computes the same
    if (c.m >= 2) {
      const int64_t s = c.m / 3 + 1;
      Mat A(c.n, c.d);
      std::vector<float> mx(size_t(c.n)), sm(size_t(c.n)), l2(size_t(c.n));
      ttt::attn::begin(A, mx.data(), sm.data());
      ttt::attn::accumulate(Q, K.bottomRows(c.m - s), V.bottomRows(c.m - s), scale, c.window, c.q0, c.k0 + s, A,
                            mx.data(), sm.data());
      ttt::attn::accumulate(Q, K.topRows(s), V.topRows(s), scale, c.window, c.q0, c.k0, A, mx.data(), sm.data());
      ttt::attn::finish(A, mx.data(), sm.data(), l2.data());
      CHECK(max_abs(A.cast<double>() - Or) < 2e-5);
    }
    // FLOP count = 4 d x the pairs the naive version scored
    double pairs = 0;
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t j = 0; j < c.m; ++j) {
        const int64_t p = c.q0 + i, kp = c.k0 + j;
        pairs += (kp <= p && (c.window < 0 || kp >= p - c.window)) ? 1 : 0;
      }
    CHECK(ttt::attn::forward_flops(c.n, c.m, c.d, c.window, c.q0, c.k0) == 4.0 * double(c.d) * pairs);
  }
}

TEST_CASE("attention forward on strided head views (columns of a wider matrix)") {
  std::mt19937_64 rng(2);
  const int64_t n = 70, H = 3, d = 6;
  const Mat Q = randn(n, H * d, rng), K = randn(n, H * d, rng), V = randn(n, H * d, rng);
  Mat O = Mat::Constant(n, H * d, 7.0f);
  for (int64_t h = 0; h < H; ++h)
    ttt::attn::forward(Q.middleCols(h * d, d), K.middleCols(h * d, d), V.middleCols(h * d, d), 0.4f, 9, 0, 0,
                       O.middleCols(h * d, d), nullptr);
  for (int64_t h = 0; h < H; ++h) {
    MatD Or;
    std::vector<double> lr;
    naive(Q.middleCols(h * d, d).cast<double>(), K.middleCols(h * d, d).cast<double>(),
          V.middleCols(h * d, d).cast<double>(), 0.4, 9, 0, 0, Or, lr);
    CHECK(max_abs(O.middleCols(h * d, d).cast<double>() - Or) < 2e-5);
  }
}

TEST_CASE("attention backward == central finite differences of the naive double forward") {
  std::mt19937_64 rng(3);
  const std::vector<Case> cases = {{1, 1, 3, -1, 0, 0},  {9, 9, 4, -1, 0, 0},  {9, 9, 4, 0, 0, 0},
                                   {70, 70, 5, -1, 0, 0}, {70, 70, 5, 2, 0, 0}, {70, 70, 5, 66, 0, 0},
                                   {20, 90, 4, 30, 70, 0}, {30, 20, 4, -1, 0, 8}};
  for (const Case& c : cases) {
    CAPTURE(c.n); CAPTURE(c.m); CAPTURE(c.d); CAPTURE(c.window); CAPTURE(c.q0); CAPTURE(c.k0);
    const Mat Q = randn(c.n, c.d, rng), K = randn(c.m, c.d, rng), V = randn(c.m, c.d, rng);
    const Mat G = randn(c.n, c.d, rng);  // loss = sum(G * O)
    const float scale = 0.7f;
    Mat O(c.n, c.d);
    std::vector<float> lse(size_t(c.n));
    ttt::attn::forward(Q, K, V, scale, c.window, c.q0, c.k0, O, lse.data());
    Mat dQ = Mat::Constant(c.n, c.d, 0.5f), dK = Mat::Constant(c.m, c.d, 0.5f), dV = Mat::Constant(c.m, c.d, 0.5f);
    ttt::attn::backward(Q, K, V, O, G, lse.data(), scale, c.window, c.q0, c.k0, dQ, dK, dV);  // adds to 0.5
    const MatD Gd = G.cast<double>();
    auto loss = [&](const MatD& q, const MatD& k, const MatD& v) {
      MatD o;
      std::vector<double> l;
      naive(q, k, v, scale, c.window, c.q0, c.k0, o, l);
      return (o.array() * Gd.array()).sum();
    };
    auto fd = [&](int which) {
      MatD q = Q.cast<double>(), k = K.cast<double>(), v = V.cast<double>();
      MatD& x = which == 0 ? q : which == 1 ? k : v;
      MatD g(x.rows(), x.cols());
      const double h = 1e-5;
      for (int64_t i = 0; i < x.size(); ++i) {
        const double x0 = x.data()[i];
        x.data()[i] = x0 + h;
        const double lp = loss(q, k, v);
        x.data()[i] = x0 - h;
        const double lm = loss(q, k, v);
        x.data()[i] = x0;
        g.data()[i] = (lp - lm) / (2 * h);
      }
      return g;
    };
    const MatD gq = fd(0), gk = fd(1), gv = fd(2);
    auto rel = [](const Mat& a, const MatD& b) {
      return max_abs(a.cast<double>() - b) / std::max(1.0, max_abs(b));
    };
    CHECK(rel(dQ.array() - 0.5f, gq) < 1e-4);
    CHECK(rel(dK.array() - 0.5f, gk) < 1e-4);
    CHECK(rel(dV.array() - 0.5f, gv) < 1e-4);
    CHECK(ttt::attn::backward_flops(c.n, c.m, c.d, c.window, c.q0, c.k0) ==
          2.5 * ttt::attn::forward_flops(c.n, c.m, c.d, c.window, c.q0, c.k0));
  }
}

TEST_CASE("attention: bad shapes throw ShapeError naming the tensor") {
  Mat Q(4, 3), K(5, 3), V(4, 3), O(4, 3);
  Q.setZero(); K.setZero(); V.setZero();
  CHECK_THROWS_WITH_AS(ttt::attn::forward(Q, K, V, 1.0f, -1, 0, 0, O, nullptr), doctest::Contains("V is (4, 3)"),
                       ttt::ShapeError);
  Mat K2 = Mat::Zero(4, 2);
  CHECK_THROWS_WITH_AS(ttt::attn::forward(Q, K2, V, 1.0f, -1, 0, 0, O, nullptr), doctest::Contains("head dims"),
                       ttt::ShapeError);
}

TEST_CASE("KVCache: chunked attend == one forward, for growing and ring caches") {
  std::mt19937_64 rng(4);
  const int64_t H = 2, d = 8, W = H * d, L = 150;
  const Mat Q = randn(L, W, rng), K = randn(L, W, rng), V = randn(L, W, rng);
  for (int64_t window : {-1, 0, 1, 7, 64, 149, 400}) {
    CAPTURE(window);
    Mat ref(L, W);
    for (int64_t h = 0; h < H; ++h)
      ttt::attn::forward(Q.middleCols(h * d, d), K.middleCols(h * d, d), V.middleCols(h * d, d), 0.3f, window, 0, 0,
                         ref.middleCols(h * d, d), nullptr);
    for (std::vector<int64_t> chunks : {std::vector<int64_t>{L}, {1, 1, 1, 147}, {70, 1, 1, 1, 77}, {5, 64, 3, 78},
                                        std::vector<int64_t>(size_t(L), 1)}) {
      ttt::attn::KVCache c(W, window);
      Mat out(L, W);
      int64_t p = 0;
      for (int64_t n : chunks) {
        Mat o(n, W);
        ttt::attn::attend(c, Q.middleRows(p, n), K.middleRows(p, n), V.middleRows(p, n), H, 0.3f, o);
        out.middleRows(p, n) = o;
        p += n;
      }
      CHECK(max_abs((out - ref).cast<double>()) < 1e-5);
      CHECK(c.bytes() == ttt::attn::KVCache::bytes_at(L, W, window));
    }
  }
}

TEST_CASE("attention in double: forward == naive to 1e-12, backward == finite differences to 1e-7") {
  std::mt19937_64 rng(5);
  for (const Case& c : std::vector<Case>{{70, 70, 5, -1, 0, 0}, {70, 70, 5, 3, 0, 0}, {20, 90, 4, 30, 70, 0}}) {
    CAPTURE(c.window);
    const MatD Q = randn(c.n, c.d, rng).cast<double>(), K = randn(c.m, c.d, rng).cast<double>(),
               V = randn(c.m, c.d, rng).cast<double>(), G = randn(c.n, c.d, rng).cast<double>();
    MatD O(c.n, c.d), Or;
    std::vector<double> lse(size_t(c.n)), lr;
    ttt::attn::forward(Q, K, V, 0.6, c.window, c.q0, c.k0, O, lse.data());
    naive(Q, K, V, 0.6, c.window, c.q0, c.k0, Or, lr);
    CHECK(max_abs(O - Or) < 1e-12);
    MatD dQ = MatD::Zero(c.n, c.d), dK = MatD::Zero(c.m, c.d), dV = MatD::Zero(c.m, c.d);
    ttt::attn::backward(Q, K, V, O, G, lse.data(), 0.6, c.window, c.q0, c.k0, dQ, dK, dV);
    auto loss = [&](const MatD& q, const MatD& k) {
      MatD o;
      std::vector<double> l;
      naive(q, k, V, 0.6, c.window, c.q0, c.k0, o, l);
      return (o.array() * G.array()).sum();
    };
    double err = 0, big = 0;
    for (int which = 0; which < 2; ++which) {
      MatD q = Q, k = K;
      MatD& x = which == 0 ? q : k;
      const MatD& g = which == 0 ? dQ : dK;
      for (int64_t i = 0; i < x.size(); ++i) {
        const double x0 = x.data()[i], h = 1e-5;
        x.data()[i] = x0 + h;
        const double lp = loss(q, k);
        x.data()[i] = x0 - h;
        const double lm = loss(q, k);
        x.data()[i] = x0;
        err = std::max(err, std::abs((lp - lm) / (2 * h) - g.data()[i]));
        big = std::max(big, std::abs(g.data()[i]));
      }
    }
    CHECK(big > 0.1);
    CHECK(err / big < 1e-7);
  }
}
