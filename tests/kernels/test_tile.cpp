// The CUDA kernels' maths (kernels/tile/*.hpp), run on the CPU. The scans of one head
// (tile::linear_scan_block, tile::mlp_scan_block) run on a HostBlock of 1, 7 and 64 threads, the
// shares one after the other, with the state in the workspace (prefill) and in place (decode),
// against the library's dual forms (inner::Linear, inner::MLP) chained segment by segment with
// gd's step, over chunks split anywhere (mid-mini-batch starts carry theta and the gradient).
// The row functions against blocks::layer_norm and blocks::ln_l2_grad. In double (1e-12) and
// float (1e-5 or 2e-5): the arithmetic the GPU runs, share by share, is tested here.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <ttt/blocks/layer_norm.hpp>
#include <ttt/blocks/ln_l2.hpp>
#include <ttt/inner/linear.hpp>
#include <ttt/inner/mlp.hpp>
#include <ttt/kernels/tile/linear.hpp>
#include <ttt/kernels/tile/mlp.hpp>
#include <vector>

#include "randn.hpp"

using namespace ttt;

namespace {

using test::randn;

template <class S>
double rel_err(const std::vector<S>& a, const std::vector<S>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i)
    num = std::max(num, std::abs(double(a[i]) - double(b[i]))), den = std::max(den, std::abs(double(b[i])));
  return num / std::max(1.0, den);
}

// One head's inputs over L rows.
template <class S>
struct Head {
  int L, f, mb, P;
  std::vector<S> XQ, XK, XV, token_eta, lr, ln_w, ln_b, theta0;
  Head(int L_, int f_, int mb_, int P_, uint64_t seed) : L(L_), f(f_), mb(mb_), P(P_) {
    std::mt19937_64 rng(seed);
    XQ = randn<S>(size_t(L * f), rng), XK = randn<S>(size_t(L * f), rng), XV = randn<S>(size_t(L * f), rng);
    theta0 = randn<S>(size_t(P), rng, 0.3), ln_w = randn<S>(size_t(f), rng, 0.5), ln_b = randn<S>(size_t(f), rng, 0.5);
    token_eta.resize(size_t(mb)), lr.resize(size_t(L));
    for (int t = 0; t < mb; ++t) token_eta[size_t(t)] = S(1.0 / (t + 1) + 0.01 * (t % 3));
    for (int t = 0; t < L; ++t) lr[size_t(t)] = S(0.02 + 0.01 * (t % 5));
  }
};

// The library's CPU path: the dual form segment by segment, gd's step at each mini-batch end;
// returns Zq, then theta and gacc at the end.
template <class Learner, class S>
std::vector<S> library_scan(const Head<S>& h) {
  std::vector<S> theta = h.theta0, gacc(size_t(h.P), S(0)), out(size_t(h.L * h.f));
  typename Learner::template Workspace<S> ws;
  using M = Eigen::Map<const MatT<S>>;
  for (int r0 = 0; r0 < h.L;) {
    const int phase = r0 % h.mb, n = std::min(h.mb - phase, h.L - r0);
    const M q(h.XQ.data() + r0 * h.f, n, h.f), k(h.XK.data() + r0 * h.f, n, h.f), v(h.XV.data() + r0 * h.f, n, h.f);
    inner::Segment<S> s{q,         k, v, h.token_eta.data() + phase, h.lr.data() + r0, h.ln_w.data(), h.ln_b.data(),
                        phase == 0};
    MatT<S> Z(n, h.f);
    Learner::template dual_form<S>(theta.data(), gacc.data(), s, Z, ws);
    std::copy(Z.data(), Z.data() + n * h.f, out.begin() + r0 * h.f);
    if (phase + n == h.mb) {
      const S eta_end = h.token_eta[size_t(h.mb - 1)];
      for (int e = 0; e < h.P; ++e) theta[size_t(e)] -= eta_end * gacc[size_t(e)], gacc[size_t(e)] = S(0);
    }
    r0 += n;
  }
  out.insert(out.end(), theta.begin(), theta.end());
  out.insert(out.end(), gacc.begin(), gacc.end());
  return out;
}

// The block scan over chunks cut at `cuts` (first 0, last L), on a HostBlock of nt threads.
template <class S, class Scan, class Size>
std::vector<S> block_scan(const Head<S>& h, const std::vector<int>& cuts, int nt, bool state_in_ws, Scan scan,
                          Size ws_size) {
  std::vector<S> theta = h.theta0, gacc(size_t(h.P), S(0)), out(size_t(h.L * h.f));
  std::vector<S> ws(ws_size(h.f, h.mb, state_in_ws), S(-7));  // garbage: every value read is written first
  const tile::HostBlock blk{nt};
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const int a = cuts[i], n = cuts[i + 1] - cuts[i];
    scan(blk, n, h.f, h.mb, a, h.XQ.data() + a * h.f, h.XK.data() + a * h.f, h.XV.data() + a * h.f, h.token_eta.data(),
         h.lr.data() + a, h.ln_w.data(), h.ln_b.data(), theta.data(), gacc.data(), out.data() + a * h.f, ws.data(),
         state_in_ws);
  }
  out.insert(out.end(), theta.begin(), theta.end());
  out.insert(out.end(), gacc.begin(), gacc.end());
  return out;
}

template <class S>
void check_scans(int f, int mb, int L, double tol, uint64_t seed) {
  const std::vector<std::vector<int>> splits = {{0, L}, {0, 1, L}, {0, 5, 6, 13, L}, {0, mb, 2 * mb + 3, L}};
  {
    const Head<S> h(L, f, mb, f * f + f, seed);
    const auto ref = library_scan<inner::Linear>(h);
    for (const auto& cuts : splits)
      for (int nt : {1, 7, 64})
        for (bool on_chip : {true, false}) {
          INFO("TTT-Linear f " << f << " mb " << mb << " L " << L << " threads " << nt << " cuts " << cuts.size()
                               << (on_chip ? " state in workspace" : " state in place"));
          const auto got = block_scan(
              h, cuts, nt, on_chip, [](auto&&... a) { tile::linear_scan_block(a...); }, tile::linear_scan_workspace);
          CHECK(rel_err(got, ref) < tol);
        }
  }
  {
    const Head<S> h(L, f, mb, 8 * f * f + 5 * f, seed + 1);
    const auto ref = library_scan<inner::MLP>(h);
    for (const auto& cuts : splits)
      for (int nt : {1, 7, 64})
        for (bool on_chip : {true, false}) {
          INFO("TTT-MLP f " << f << " mb " << mb << " L " << L << " threads " << nt << " cuts " << cuts.size()
                            << (on_chip ? " state in workspace" : " state in place"));
          const auto got = block_scan(
              h, cuts, nt, on_chip, [](auto&&... a) { tile::mlp_scan_block(a...); }, tile::mlp_scan_workspace);
          CHECK(rel_err(got, ref) < tol);
        }
  }
}

}  // namespace

TEST_CASE("tile: the block scans of TTT-Linear and TTT-MLP == the library's dual forms (any split, any thread count)") {
  check_scans<double>(8, 4, 19, 1e-12, 1);
  check_scans<double>(16, 16, 40, 1e-12, 3);
  check_scans<float>(16, 16, 40, 2e-5, 5);
  check_scans<float>(32, 8, 21, 2e-5, 7);
}

TEST_CASE("tile: the LayerNorm row == blocks::layer_norm, the LN-L2 gradient (row and block) == blocks::ln_l2_grad") {
  std::mt19937_64 rng(3);
  const int f = 24, n = 3;
  const auto x = randn<double>(size_t(n * f), rng, 2.0), t = randn<double>(size_t(n * f), rng);
  const auto g = randn<double>(size_t(f), rng), b = randn<double>(size_t(f), rng);
  std::vector<double> y(size_t(n * f)), gr(size_t(n * f));
  for (int r = 0; r < n; ++r) {
    tile::layer_norm_row(x.data() + r * f, g.data(), b.data(), f, y.data() + r * f);
    tile::ln_l2_grad_row(x.data() + r * f, t.data() + r * f, g.data(), b.data(), f, gr.data() + r * f);
  }
  const Eigen::Map<const MatT<double>> X(x.data(), n, f), T(t.data(), n, f);
  MatT<double> Y(n, f), G(n, f);
  blocks::layer_norm(X, g.data(), b.data(), 1e-6, Y);
  blocks::ln_l2_grad(X, T, g.data(), b.data(), G);
  CHECK(rel_err(y, std::vector<double>(Y.data(), Y.data() + n * f)) < 1e-12);
  CHECK(rel_err(gr, std::vector<double>(G.data(), G.data() + n * f)) < 1e-12);
  // the block version (parallel partial sums): any thread count, rows of any width
  std::vector<double> part(size_t(n) * 4 * tile::kLnParts);
  for (int nt : {1, 2, 5, 48, 64, 1024}) {
    std::vector<double> gb(size_t(n * f), -1.0);
    int ran = 0;
    tile::ln_l2_grad_block(tile::HostBlock{nt}, n, f, x.data(), t.data(), g.data(), b.data(), gb.data(), part.data(),
                           [&](int, int) { ++ran; });
    INFO("threads " << nt);
    CHECK(ran == nt);
    CHECK(rel_err(gb, std::vector<double>(G.data(), G.data() + n * f)) < 1e-12);
  }
}
