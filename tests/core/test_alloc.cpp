// Decode allocates nothing per token once the state's buffers are warm: every malloc in the
// process (Eigen allocates with malloc, not operator new) is counted while single tokens are fed.
#include <atomic>
#include <cstdlib>
#include <new>

#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include "test_helpers.hpp"

#include <ttt/inner/swiglu.hpp>

#include "count_allocs.hpp"

// The replacements pair malloc with free; GCC 12 sees `free` on what `operator new` returned once
// it inlines them and warns (-Wmismatched-new-delete), which is the point of the replacement here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

using namespace ttt;

TEST_CASE_TEMPLATE("no allocation per token in decode", Lrn, inner::Linear, inner::MLP, inner::SwiGLU) {
  ModelConfig c = th::small_config(std::string(Lrn::name));
  c.pre_conv = c.share_qk = c.use_gate = true;
  TTTModel<Lrn> m(c);
  th::randomize(m, 1);
  Mat logits;
  const auto ids = th::random_ids(40, c.vocab_size, 2);
  auto step = [&](auto& s, int t) { m.forward(s, std::span<const int64_t>(ids.data() + t, 1), &logits, Logits::last); };
  // mini-batches of 8. st: a prompt of 5, then tokens to 16 (its workspace warm for every path a
  // token takes: the dual form of one token while the prompt's gradient is in gacc, row decode
  // from 8 on, a mini-batch's end). st2: a prompt of 13, then one token (the same, mid-mini-batch).
  auto st = m.new_state(), st2 = m.new_state();
  m.forward(st, std::span<const int64_t>(ids.data(), 5), &logits, Logits::last);
  for (int t = 5; t <= 16; ++t) step(st, t);
  m.forward(st2, std::span<const int64_t>(ids.data(), 13), &logits, Logits::last);
  step(st2, 13);
  const long before = g_allocs.load();
  for (int t = 14; t < 16; ++t) step(st2, t);
  for (int t = 17; t < 40; ++t) step(st, t);
  CHECK(g_allocs.load() - before == 0);
}

TEST_CASE("the counter sees Eigen's allocations (the test above can fail)") {
  const long before = g_allocs.load();
  ttt::Mat m(64, 64);
  m.setZero();
  CHECK(g_allocs.load() - before >= 1);
}
