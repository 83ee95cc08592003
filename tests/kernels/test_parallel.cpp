// core/parallel.hpp: an exception thrown by a task comes back to the caller from each kind of
// parallelism (an exception leaving an OpenMP region would end the program in std::terminate),
// whether or not the work is large enough for threads; the tasks that ran did their work.
// tests/kernels/CMakeLists.txt also runs this program with an unknown TTT_SIMD: the first kernel
// call, which may be inside a region, must fail with the name, not abort.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include <ttt/core/parallel.hpp>

namespace {

using namespace ttt;

// Runs fn with `threads` OpenMP threads (restored after).
template <class F>
void with_threads(int threads, F&& fn) {
  const int before = max_threads();
  set_inner_threads(threads);
  try {
    fn();
  } catch (...) {
    set_inner_threads(before);
    throw;
  }
  set_inner_threads(before);
}

TEST_CASE("parallel_ranges: a task's exception reaches the caller, with threads and without") {
  for (int threads : {1, 2, 4})
    for (int64_t min_n : {int64_t(1), int64_t(1) << 30}) {  // cut over the threads / one range
      CAPTURE(threads);
      CAPTURE(min_n);
      std::vector<int> hit(1000, 0);
      with_threads(threads, [&] {
        CHECK_THROWS_WITH_AS(parallel_ranges(1000, min_n,
                                             [&](int64_t b, int64_t e) {
                                               for (int64_t i = b; i < e; ++i) hit[size_t(i)] = 1;
                                               if (b <= 500 && 500 < e) throw std::runtime_error("range 500");
                                             }),
                             "range 500", std::runtime_error);
      });
      CHECK(hit[500] == 1);
    }
}

TEST_CASE("parallel_heads: a head's exception reaches the caller; the other heads ran or were skipped") {
  for (int threads : {1, 2, 4})
    for (bool worth_it : {true, false}) {
      CAPTURE(threads);
      CAPTURE(worth_it);
      std::atomic<int> ran{0};
      with_threads(threads, [&] {
        CHECK_THROWS_WITH_AS(parallel_heads(8, worth_it,
                                            [&](int64_t h) {
                                              ++ran;
                                              if (h == 3) throw std::invalid_argument("head 3");
                                            }),
                             "head 3", std::invalid_argument);
      });
      CHECK(ran.load() >= 1);
      CHECK(ran.load() <= 8);
      if (!worth_it) CHECK(ran.load() == 4);  // in order on the calling thread: heads 0 .. 3
      std::vector<int> done(8, 0);
      with_threads(threads, [&] { parallel_heads(8, worth_it, [&](int64_t h) { done[size_t(h)] = 1; }); });
      CHECK(done == std::vector<int>(8, 1));
    }
}

TEST_CASE("parallel_for: a task's exception reaches the caller after every worker stopped") {
  for (int workers : {1, 2, 3}) {
    CAPTURE(workers);
    std::atomic<int> ran{0};
    CHECK_THROWS_WITH_AS(parallel_for(6, workers,
                                      [&](int64_t k) {
                                        ++ran;
                                        if (k == 2) throw std::runtime_error("task 2");
                                      }),
                         "task 2", std::runtime_error);
    CHECK(ran.load() >= 3);  // tasks 0, 1, 2 at least (each worker takes the next task in order)
  }
}

}  // namespace
