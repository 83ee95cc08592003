// The CUDA prefill scan (kernels/cuda/linear_scan.cuh) against the same maths on the host
// (kernels/tile/linear_tile.hpp's linear_scan_head, itself tested against inner::Linear's dual
// form in tests/kernels/test_linear_tile.cpp): sequences x heads x head dims, a chunk that starts
// mid-mini-batch after another, the carried state. Exit 0 pass, 1 fail, 77 no CUDA device (the
// build machines compile it; scripts/gpu_check.sh runs it where a GPU is).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <random>
#include <utility>
#include <vector>

#include <ttt/kernels/cuda/linear_scan.cuh>

namespace {

struct DeviceBuffer {
  float* p = nullptr;
  explicit DeviceBuffer(const std::vector<float>& h) {
    ttt::cuda::check(cudaMalloc(&p, h.size() * sizeof(float) + 4), "cudaMalloc");
    ttt::cuda::check(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  ~DeviceBuffer() { cudaFree(p); }
  std::vector<float> get(size_t n) const {
    std::vector<float> h(n);
    ttt::cuda::check(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy");
    return h;
  }
};

double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 1;
  for (size_t i = 0; i < a.size(); ++i) num = std::fmax(num, std::fabs(double(a[i]) - b[i])), den = std::fmax(den, std::fabs(double(b[i])));
  return num / den;
}

// One configuration: B sequences x H heads of head dim f, mini-batch mb, L rows in two chunks
// (cut at `cut`); returns the worst relative error of Zq, theta and gacc against the host.
double run(int B, int H, int f, int mb, int L, int cut, int threads, unsigned seed) {
  const int BH = B * H, P = f * f + f;
  std::mt19937 rng(seed);
  std::normal_distribution<float> N(0.f, 1.f);
  auto randn = [&](size_t n, float s) {
    std::vector<float> v(n);
    for (auto& x : v) x = s * N(rng);
    return v;
  };
  const auto XQ = randn(size_t(BH) * L * f, 1), XK = randn(size_t(BH) * L * f, 1), XV = randn(size_t(BH) * L * f, 1);
  const auto theta0 = randn(size_t(BH) * P, 0.3f), ln_w = randn(size_t(H) * f, 0.5f), ln_b = randn(size_t(H) * f, 0.5f);
  std::vector<float> token_eta(static_cast<size_t>(L)), lr(static_cast<size_t>(BH) * L);
  for (int t = 0; t < L; ++t) token_eta[size_t(t)] = 1.f / float(t % mb + 1);
  for (auto& x : lr) x = 0.02f + 0.01f * std::fabs(N(rng));

  // host: block by block, chunk by chunk
  std::vector<float> theta_h = theta0, gacc_h(size_t(BH) * P, 0.f), Z_h(size_t(BH) * L * f), scratch(static_cast<size_t>(2 * f + mb * f));
  const std::pair<int, int> chunks[2] = {{0, cut}, {cut, L - cut}};  // (first row, rows)
  for (int bh = 0; bh < BH; ++bh)
    for (const auto& chunk : chunks) {
      const int a = chunk.first, n = chunk.second;
      const size_t o = (size_t(bh) * L + a) * f;
      ttt::tile::linear_scan_head(n, f, mb, a, XQ.data() + o, XK.data() + o, XV.data() + o, token_eta.data() + a,
                                  lr.data() + size_t(bh) * L + a, ln_w.data() + (bh % H) * f, ln_b.data() + (bh % H) * f,
                                  theta_h.data() + size_t(bh) * P, gacc_h.data() + size_t(bh) * P, Z_h.data() + o,
                                  scratch.data());
    }

  // device: the same two chunks (each chunk's tensors copied to the device as [BH, n, f])
  DeviceBuffer theta_d(theta0), gacc_d(std::vector<float>(size_t(BH) * P, 0.f)), lnw_d(ln_w), lnb_d(ln_b);
  std::vector<float> Z_d(size_t(BH) * L * f);
  for (const auto& chunk : chunks) {
    const int a = chunk.first, n = chunk.second;
    if (n == 0) continue;
    auto slice = [&](const std::vector<float>& X, int w) {
      std::vector<float> out;
      for (int bh = 0; bh < BH; ++bh) out.insert(out.end(), X.begin() + (size_t(bh) * L + a) * w, X.begin() + (size_t(bh) * L + a + n) * w);
      return out;
    };
    DeviceBuffer q(slice(XQ, f)), k(slice(XK, f)), v(slice(XV, f)), l(slice(lr, 1));
    DeviceBuffer te(std::vector<float>(token_eta.begin() + a, token_eta.begin() + a + n));
    DeviceBuffer z(std::vector<float>(size_t(BH) * n * f, 0.f));
    DeviceBuffer s(std::vector<float>(ttt::cuda::linear_scan_scratch_floats(BH, mb, f, threads), 0.f));
    ttt::cuda::LinearScanArgs args;
    args.BH = BH, args.heads = H, args.L = n, args.f = f, args.mini_batch = mb, args.pos0 = a;
    args.XQ = q.p, args.XK = k.p, args.XV = v.p, args.token_eta = te.p, args.lr = l.p, args.ln_w = lnw_d.p, args.ln_b = lnb_d.p;
    args.theta = theta_d.p, args.gacc = gacc_d.p, args.Zq = z.p, args.scratch = s.p;
    ttt::cuda::linear_scan(args, threads);
    ttt::cuda::check(cudaDeviceSynchronize(), "linear_scan");
    const auto zh = z.get(size_t(BH) * n * f);
    for (int bh = 0; bh < BH; ++bh)
      std::copy(zh.begin() + size_t(bh) * n * f, zh.begin() + size_t(bh + 1) * n * f, Z_d.begin() + (size_t(bh) * L + a) * f);
  }
  const double e = std::fmax(rel_err(Z_d, Z_h), std::fmax(rel_err(theta_d.get(theta_h.size()), theta_h),
                                                          rel_err(gacc_d.get(gacc_h.size()), gacc_h)));
  std::printf("B %d H %d f %3d mb %2d L %3d cut %3d threads %3d: max relative error %.2e\n", B, H, f, mb, L, cut, threads, e);
  return e;
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device\n");
    return 77;
  }
  double worst = 0;
  try {
    worst = std::fmax(worst, run(1, 1, 16, 16, 16, 0, 32, 1));
    worst = std::fmax(worst, run(2, 3, 16, 16, 45, 7, 64, 2));
    worst = std::fmax(worst, run(2, 2, 64, 16, 100, 37, 128, 3));
    worst = std::fmax(worst, run(1, 4, 128, 16, 64, 16, 128, 4));
    worst = std::fmax(worst, run(1, 2, 64, 64, 130, 65, 256, 5));
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  const bool ok = worst < 1e-4;
  std::printf("%s: worst relative error %.2e (tolerance 1e-4)\n", ok ? "PASS" : "FAIL", worst);
  return ok ? 0 : 1;
}
