// Attention decode allocates nothing per token once warm: with a sliding window (ring-buffer KV
// cache) never, with full attention only when the growing cache doubles its capacity. Every malloc
// of the process is counted (Eigen allocates with malloc), as in tests/core/test_alloc.cpp.
#include <atomic>
#include <cstdlib>
#include <new>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <ttt/models/transformer.hpp>

#include "../core/count_allocs.hpp"

namespace {
long decode_allocs(int64_t window, int64_t prompt, int64_t steps) {
  ttt::TransformerModel m(ttt::AttnConfig(ttt::ModelConfig::sized("attention", 50, 32, 2, 4, 48), window));
  m.init_weights(1);
  std::vector<int64_t> ids(static_cast<size_t>(prompt), 3);
  auto st = m.new_state();
  ttt::Mat logits;
  m.forward(st, std::span<const int64_t>(ids), &logits, ttt::Logits::last);
  int64_t tok = 5;
  for (int i = 0; i < 4; ++i) m.forward(st, std::span<const int64_t>(&tok, 1), &logits, ttt::Logits::last);
  const long before = g_allocs.load();
  for (int64_t i = 0; i < steps; ++i) m.forward(st, std::span<const int64_t>(&tok, 1), &logits, ttt::Logits::last);
  return g_allocs.load() - before;
}
}  // namespace

TEST_CASE("sliding-window decode: no allocation per token") { CHECK(decode_allocs(16, 40, 300) == 0); }

TEST_CASE("full-attention decode: allocations only when the cache doubles") {
  // capacity 40 after the prompt, 80 after the warm-up tokens; the 300 timed tokens (45 .. 344)
  // double it at 81, 161 and 321: 3 doublings x (K, V) x 2 layers = 12 allocations, no more
  const long n = decode_allocs(-1, 40, 300);
  MESSAGE("full-attention decode: " << n << " allocations over 300 tokens");
  CHECK(n <= 12);
}
