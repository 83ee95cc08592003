#pragma once
/// \file core/parallel.hpp
/// The library's two kinds of parallelism, in one place:
///  - `parallel_for(tasks, workers, fn)`: independent tasks (sequences of a batch, shares of a
///    gradient) on a few std::threads, exceptions carried back to the caller;
///  - `parallel_heads(n, worth_it, fn)`: the OpenMP loop over the heads of a layer (or the query
///    tiles of attention) inside one task.
/// A worker of `parallel_for` gives its own OpenMP loops `inner_threads` threads, so that
/// workers x inner threads stays within the machine (a new std::thread would otherwise start
/// from OpenMP's default, one thread per core).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ttt {

/// Threads the OpenMP loops of the calling thread may use (1 without OpenMP).
inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Threads of the OpenMP loops of the calling thread; n <= 0 leaves them as they are.
inline void set_inner_threads(int n) {
#if defined(_OPENMP)
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

/// Cores the machine reports (at least 1).
inline int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : int(n);
}

/// fn(k) for every k in [0, tasks), on min(workers, tasks) threads of which the calling thread is
/// one; a free worker takes the next task. Each worker's OpenMP loops use `inner_threads`
/// threads (0: as many as the calling thread's). Tasks must be independent (each writes only
/// its own results), so what is computed does not depend on which thread ran a task. The first
/// exception (by task order of the workers) is rethrown once every worker has stopped.
template <class F>
void parallel_for(int64_t tasks, int workers, F&& fn, int inner_threads = 0) {
  const int64_t W = std::clamp<int64_t>(workers, 1, std::max<int64_t>(tasks, 1));
  if (W <= 1) {
    for (int64_t k = 0; k < tasks; ++k) fn(k);
    return;
  }
  const int inner = inner_threads > 0 ? inner_threads : max_threads();
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(W));
  auto work = [&](int64_t w) {
    try {
      set_inner_threads(inner);
      for (int64_t k; (k = next.fetch_add(1)) < tasks;) fn(k);
    } catch (...) {
      errors[size_t(w)] = std::current_exception();
      next.store(tasks);  // the others stop after their current task
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(size_t(W - 1));
  const int caller_threads = max_threads();
  for (int64_t w = 1; w < W; ++w) pool.emplace_back(work, w);
  work(0);
  set_inner_threads(caller_threads);
  for (auto& t : pool) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// fn(i) for i in [0, n) as an OpenMP loop (static schedule) when `worth_it` and n > 1, in order
/// on the calling thread otherwise. fn must not throw (an exception cannot leave an OpenMP loop).
template <class F>
void parallel_heads(int64_t n, bool worth_it, F&& fn) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (worth_it && n > 1)
  for (int64_t i = 0; i < n; ++i) fn(i);
#else
  (void)worth_it;
  for (int64_t i = 0; i < n; ++i) fn(i);
#endif
}

}  // namespace ttt
