// The autodiff tape (ttt/ad): every op's VJP against central finite differences in double, on
// random inputs, through loss = sum(op(inputs) .* R) with a random R; a custom op with a
// user-given VJP; parameters' gradient sinks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include <ttt/ad/ops.hpp>
#include <ttt/blocks/activations.hpp>
#include <ttt/ad/tape.hpp>

using namespace ttt;
namespace test_ad {

using MD = ad::Matrix<double>;
using VD = ad::Var<double>;

MD randn(Eigen::Index r, Eigen::Index c, std::mt19937_64& rng, double s = 1.0) {
  std::normal_distribution<double> n(0.0, s);
  MD m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng);
  return m;
}

/// f maps the input leaves to an output; checks d sum(f .* R) / d input for every input entry.
/// Returns the largest |analytic - fd| / max(1, |fd|).
double fd_check(std::vector<MD> inputs, const std::function<VD(const std::vector<VD>&)>& f, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  MD R;
  auto value = [&](const std::vector<MD>& xs) {
    ad::Tape<double> t;
    std::vector<VD> v;
    for (const auto& x : xs) v.push_back(t.constant(x));
    const VD y = f(v);
    if (R.size() == 0) R = randn(y.rows(), y.cols(), rng);
    return (y.value().array() * R.array()).sum();
  };
  value(inputs);  // fixes R
  ad::Tape<double> t;
  std::vector<VD> v;
  for (const auto& x : inputs) v.push_back(t.leaf(x));
  const VD y = f(v);
  t.backward(ad::sum(ad::mul(y, t.constant(R))));
  double worst = 0;
  const double h = 1e-6;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const MD g = t.grad(v[i]);
    for (Eigen::Index k = 0; k < inputs[i].size(); ++k) {
      std::vector<MD> p = inputs, m = inputs;
      p[i].data()[k] += h;
      m[i].data()[k] -= h;
      const double fd = (value(p) - value(m)) / (2 * h);
      worst = std::max(worst, std::abs(g.data()[k] - fd) / std::max(1.0, std::abs(fd)));
    }
  }
  return worst;
}

TEST_CASE("ad: linear algebra, slicing and pointwise ops match finite differences") {
  std::mt19937_64 rng(7);
  CHECK(fd_check({randn(5, 4, rng), randn(3, 4, rng), randn(1, 3, rng)},
                 [](const std::vector<VD>& x) { return ad::linear(x[0], x[1], x[2]); }) < 1e-7);
  CHECK(fd_check({randn(4, 3, rng), randn(4, 3, rng)}, [](const std::vector<VD>& x) {
          return ad::mul(ad::add(x[0], x[1]), ad::scale(x[0], 0.5));
        }) < 1e-7);
  CHECK(fd_check({randn(6, 5, rng)}, [](const std::vector<VD>& x) { return ad::gelu(x[0]); }) < 1e-7);
  CHECK(fd_check({randn(6, 5, rng)}, [](const std::vector<VD>& x) { return ad::silu(x[0]); }) < 1e-7);
  CHECK(fd_check({randn(6, 5, rng)}, [](const std::vector<VD>& x) {
          // rows, cols, concat and gather with zero rows, repeated and dropped rows
          const VD a = ad::rows(x[0], 1, 4), b = ad::cols(x[0], 2, 3);
          const VD g = ad::gather_rows(b, {-1, 0, 0, 5, 2, -1});
          return ad::concat_cols(std::vector<VD>{ad::concat_rows(std::vector<VD>{a, ad::rows(x[0], 0, 2)}), g});
        }) < 1e-7);
}

TEST_CASE("ad: norms, convolution, rotary, attention and losses match finite differences") {
  std::mt19937_64 rng(11);
  CHECK(fd_check({randn(5, 6, rng), randn(1, 6, rng)}, [](const std::vector<VD>& x) { return ad::l2_rms_norm(x[0], x[1]); }) < 1e-7);
  CHECK(fd_check({randn(5, 6, rng), randn(1, 6, rng), randn(1, 6, rng)},
                 [](const std::vector<VD>& x) { return ad::layer_norm(x[0], x[1], x[2]); }) < 1e-7);
  for (int64_t k : {1, 2, 4})
    for (int64_t s : {int64_t(1), int64_t(2), k}) {
      INFO("kernel " << k << " stride " << s);
      CHECK(fd_check({randn(7, 3, rng), randn(4, 3 * k, rng), randn(1, 4, rng)}, [k, s](const std::vector<VD>& x) {
              return ad::causal_conv1d(x[0], x[1], x[2], k, s);
            }) < 1e-7);
    }
  const MD cs = randn(6, 2, rng), sn = randn(6, 2, rng), fac = randn(6, 2, rng);
  CHECK(fd_check({randn(6, 8, rng)}, [&](const std::vector<VD>& x) { return ad::rotary(x[0], 2, cs, sn, fac); }) < 1e-7);
  CHECK(fd_check({randn(6, 8, rng)}, [&](const std::vector<VD>& x) { return ad::rotary(x[0], 2, cs, sn, MD()); }) < 1e-7);
  for (int64_t w : {-1, 0, 2, 10}) {
    INFO("window " << w);
    CHECK(fd_check({randn(7, 6, rng), randn(7, 6, rng), randn(7, 6, rng)}, [w](const std::vector<VD>& x) {
            return ad::attention(x[0], x[1], x[2], 2, w, 0.7);
          }) < 1e-7);
  }
  CHECK(fd_check({randn(5, 7, rng)}, [](const std::vector<VD>& x) {
          return ad::cross_entropy_sum(x[0], {3, 0, 6, 3, 1}, 3);
        }) < 1e-7);
  CHECK(fd_check({randn(5, 7, rng), randn(5, 7, rng)}, [](const std::vector<VD>& x) { return ad::cosine_sum(x[0], x[1]); }) < 1e-7);
}

TEST_CASE("ad: attention (ttt::attn kernels) equals the naive path, values and gradients, float and double") {
  std::mt19937_64 rng(13);
  for (int64_t n : {1, 7, 70, 150})
    for (int64_t w : {-1, 0, 3, 64, 200}) {
      INFO("n " << n << " window " << w);
      const MD Q = randn(n, 12, rng), K = randn(n, 12, rng), Vv = randn(n, 12, rng), R = randn(n, 12, rng);
      MD g[2][3];
      MD out[2];
      for (int path = 0; path < 2; ++path) {
        ad::Tape<double> t;
        const VD q = t.leaf(Q), k = t.leaf(K), v = t.leaf(Vv);
        const VD o = path ? ad::attention_naive(q, k, v, 3, w, 0.4) : ad::attention(q, k, v, 3, w, 0.4);
        out[path] = o.value();
        t.backward(ad::sum(ad::mul(o, t.constant(R))));
        g[path][0] = t.grad(q);
        g[path][1] = t.grad(k);
        g[path][2] = t.grad(v);
      }
      CHECK((out[0] - out[1]).norm() <= 1e-12 * (1 + out[1].norm()));
      for (int i = 0; i < 3; ++i) CHECK((g[0][i] - g[1][i]).norm() <= 1e-11 * (1 + g[1][i].norm()));
      ad::Tape<float> tf;
      using MF = ad::Matrix<float>;
      const MF of = ad::attention(tf.constant(MF(Q.cast<float>())), tf.constant(MF(K.cast<float>())),
                                  tf.constant(MF(Vv.cast<float>())), 3, w, 0.4f).value();
      CHECK((of.cast<double>() - out[1]).norm() <= 1e-5 * (1 + out[1].norm()));
    }
}

TEST_CASE("ad: attention sees exactly its window") {
  std::mt19937_64 rng(3);
  const MD q = randn(9, 4, rng), k = randn(9, 4, rng), v = randn(9, 4, rng);
  for (int64_t w : {0, 1, 3, -1}) {
    ad::Tape<double> t;
    const MD o = ad::attention(t.constant(q), t.constant(k), t.constant(v), 1, w, 0.5).value();
    for (Eigen::Index i = 0; i < 9; ++i) {
      // the plain softmax over keys [i - w, i]
      const Eigen::Index lo = w < 0 ? 0 : std::max<Eigen::Index>(0, i - w);
      Eigen::RowVectorXd s(i - lo + 1);
      for (Eigen::Index j = lo; j <= i; ++j) s(j - lo) = std::exp(0.5 * q.row(i).dot(k.row(j)));
      s /= s.sum();
      const Eigen::RowVectorXd want = s * v.middleRows(lo, i - lo + 1);
      CHECK((o.row(i) - want).norm() < 1e-12);
    }
  }
}

TEST_CASE("ad: custom op with a user VJP, parameter sinks, loss shape check") {
  std::mt19937_64 rng(5);
  const MD X = randn(3, 4, rng), W = randn(2, 4, rng);
  MD dW = MD::Zero(2, 4);
  ad::Tape<double> t;
  const VD x = t.leaf(X), w = t.param(W, &dW);
  // y = x * x elementwise with a hand-written VJP
  const VD y = t.custom({x}, X.cwiseProduct(X), [&](const MD& dy, std::span<MD> dx) { dx[0] += 2.0 * dy.cwiseProduct(X); });
  t.backward(ad::sum(ad::linear(y, w)));
  // d/dx sum(x^2 W^T) = 2 x .* (1 W), d/dW = 1^T x^2
  const MD ones = MD::Ones(3, 2);
  CHECK((t.grad(x) - 2.0 * X.cwiseProduct(ones * W)).norm() < 1e-12);
  CHECK((dW - ones.transpose() * X.cwiseProduct(X)).norm() < 1e-12);
  // sinks accumulate; a non-scalar loss is an error
  CHECK_THROWS_AS(t.backward(y), ShapeError);
  MD wrong = MD::Zero(3, 3);
  CHECK_THROWS_AS(t.param(W, &wrong), ShapeError);
  CHECK_THROWS_AS(ad::linear(x, t.leaf(MD::Zero(2, 3))), ShapeError);
}

TEST_CASE("ad: the vectorised exact GELU (Eigen's erf) equals its scalar twin act(Act::gelu); act_mul too") {
  Eigen::VectorXf x(4001), u(4001);
  for (Eigen::Index i = 0; i < x.size(); ++i) x[i] = -10.0f + 20.0f * float(i) / 4000.0f, u[i] = 0.5f + float(i % 7);
  const Eigen::VectorXf y = blocks::gelu_erf(x), dy = blocks::gelu_erf_grad(x);
  float e = 0, eg = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    e = std::max(e, std::abs(y[i] - blocks::act(blocks::Act::gelu, x[i])) / std::max(1.0f, std::abs(x[i])));
    eg = std::max(eg, std::abs(dy[i] - blocks::act_grad(blocks::Act::gelu, x[i])));
  }
  CHECK(e <= 2e-6f);
  CHECK(eg <= 2e-6f);
  Eigen::VectorXf g = x;
  blocks::act_mul(blocks::Act::gelu, g.data(), u.data(), size_t(g.size()));
  float em = 0;
  for (Eigen::Index i = 0; i < x.size(); ++i)
    em = std::max(em, std::abs(g[i] - blocks::act(blocks::Act::gelu, x[i]) * u[i]) / std::max(1.0f, std::abs(x[i] * u[i])));
  CHECK(em <= 2e-6f);
  // double: Eigen's erf is std::erf per element, so the two agree to the last bits
  const Eigen::VectorXd xd = x.cast<double>(), yd = blocks::gelu_erf(xd);
  for (Eigen::Index i = 0; i < xd.size(); ++i) CHECK(std::abs(yd[i] - blocks::act(blocks::Act::gelu, xd[i])) <= 1e-15 * std::max(1.0, std::abs(xd[i])));
}

TEST_CASE("ad: the row-parallel ops give the same bits on one thread and on two (large inputs)") {
  std::mt19937_64 rng(7);
  const ad::Matrix<float> X = randn(1031, 96, rng).cast<float>(), Y = randn(1031, 96, rng).cast<float>(),
                          g = randn(1, 96, rng).cast<float>(), bb = randn(1, 96, rng).cast<float>(),
                          W = randn(40, 96 * 3, rng).cast<float>(), cb = randn(1, 40, rng).cast<float>(),
                          R = randn(1031, 96, rng).cast<float>(), cs = randn(1031, 12, rng).cast<float>(),
                          sn = randn(1031, 12, rng).cast<float>();
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 1031; ++i) idx.push_back(i % 5 == 0 ? -1 : (i * 7) % 1031);
  auto run = [&](int threads) {
    InnerThreads scope(threads);
    ad::Tape<float> t;
    ad::Matrix<float> gx = ad::Matrix<float>::Zero(1031, 96), gg = ad::Matrix<float>::Zero(1, 96);
    const ad::Var<float> x = t.param(X, &gx), y = t.constant(Y), w = t.param(g, &gg), b = t.constant(bb);
    const ad::Var<float> a = ad::add(ad::gelu(x), ad::silu(y));
    const ad::Var<float> n1 = ad::layer_norm(a, w, b), n2 = ad::l2_rms_norm(a, w);
    const ad::Var<float> c = ad::concat_cols(std::vector<ad::Var<float>>{ad::cols(n1, 0, 48), ad::cols(n2, 48, 48)});
    const ad::Var<float> r = ad::rotary(ad::gather_rows(c, idx), 4, cs, sn, ad::Matrix<float>());
    const ad::Var<float> v = ad::causal_conv1d(ad::add_row(r, b), t.constant(W), t.constant(cb), 3, 1);
    t.backward(ad::sum(ad::mul(v, t.constant(R.leftCols(40)))));
    return std::vector<ad::Matrix<float>>{v.value(), gx, gg};
  };
  // Eigen's own products stay on one thread (their blocking may depend on the thread count): what
  // is compared is the row-parallel code
  Eigen::setNbThreads(1);
  const auto one = run(1), two = run(2);
  Eigen::setNbThreads(0);  // back to OpenMP's count (nothing in the library sets it)
  for (size_t i = 0; i < one.size(); ++i) CHECK(one[i] == two[i]);
}

TEST_CASE("ad: an inference tape computes the same values, frees the intermediates it is told to, refuses gradients") {
  std::mt19937_64 rng(6);
  const MD X = randn(5, 4, rng), W1 = randn(6, 4, rng), W2 = randn(3, 6, rng);
  ad::Tape<double> g;
  const VD yg = ad::linear(ad::gelu(ad::linear(g.constant(X), g.param(W1, nullptr))), g.param(W2, nullptr));
  ad::Tape<double> t{ad::no_grad};
  CHECK(t.inference());
  CHECK_FALSE(g.inference());
  const VD x = t.leaf(X), w1 = t.param(W1, nullptr), w2 = t.param(W2, nullptr);
  CHECK_FALSE(x.requires_grad());  // a leaf of an inference tape needs no gradient
  const size_t mark = t.size();
  const VD h = ad::linear(x, w1), a = ad::gelu(h), y = ad::linear(a, w2);
  CHECK(y.value() == yg.value());  // bit for bit: the same ops
  t.release(mark, {y});
  CHECK(y.value() == yg.value());                     // kept
  CHECK_THROWS_AS((void)h.value(), Error);            // freed: reading it is an error, not garbage
  CHECK_THROWS_AS((void)a.value(), Error);
  CHECK(x.value() == X);                              // leaves and parameters stay
  CHECK(w1.value() == W1);
  CHECK_THROWS_AS(t.backward(ad::sum(y)), Error);     // no gradients on it
  MD sink = MD::Zero(6, 4);
  CHECK_THROWS_AS(t.param(W1, &sink), Error);
  // on a gradient tape release does nothing (backward still needs the values)
  const size_t gm = g.size();
  const VD z = ad::gelu(yg);
  g.release(gm, {});
  CHECK(z.value().size() == yg.value().size());
}

}  // namespace test_ad
