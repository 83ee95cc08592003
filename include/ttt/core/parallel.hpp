#pragma once
/// \file core/parallel.hpp
/// The library's kinds of parallelism, in one place:
///  - `parallel_for(tasks, workers, fn)`: independent tasks (sequences of a batch, shares of a
///    gradient) on a few std::threads, exceptions carried back to the caller;
///  - `parallel_heads(n, worth_it, fn)`: the OpenMP loop over the heads of a layer (or the query
///    tiles of attention) inside one task;
///  - `parallel_ranges(n, min_n, fn)`: elementwise work (activations, optimizer updates) or
///    independent tasks (the bf16 products' blocks) cut into one range per OpenMP thread.
/// An exception may not leave an OpenMP region (the program would end in std::terminate), so the
/// OpenMP forms run their tasks through `RegionErrors` and throw the first one after the region.
/// A worker of `parallel_for` gives its own OpenMP loops `inner_threads` threads, so that
/// workers x inner threads stays within the machine (a new std::thread would otherwise start
/// from OpenMP's default, one thread per core).
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ttt {

/// Carries an exception out of an OpenMP region: each task runs as `errors.run(fn)` inside the
/// region, `errors.rethrow()` after it. The first exception is kept; once one is thrown the
/// remaining tasks are skipped. A bad TTT_SIMD, for one, is found by the first kernel call, which
/// may be inside a region (kernels/simd_table.hpp).
class RegionErrors {
 public:
  template <class F>
  void run(F&& fn) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      fn();
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

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

/// The calling thread's OpenMP loops on `n` threads (n > 0; n <= 0 leaves them) until the end of
/// the scope, then as they were.
class InnerThreads {
 public:
  explicit InnerThreads(int n) : saved_(max_threads()) { set_inner_threads(n); }
  ~InnerThreads() { set_inner_threads(saved_); }
  InnerThreads(const InnerThreads&) = delete;
  InnerThreads& operator=(const InnerThreads&) = delete;

 private:
  int saved_;
};

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

/// fn(begin, end) over [0, n) cut into one contiguous range per OpenMP thread when n >= min_n, as
/// fn(0, n) otherwise (or inside a parallel region). For work whose result does not depend on the
/// cut (elementwise work, independent tasks). An exception from fn is thrown after the region.
template <class F>
void parallel_ranges(int64_t n, int64_t min_n, F&& fn) {
#if defined(_OPENMP)
  const int64_t T = n >= min_n && !omp_in_parallel() ? std::min<int64_t>(max_threads(), n) : 1;
  if (T > 1) {
    RegionErrors errors;
#pragma omp parallel for schedule(static) num_threads(int(T))
    for (int64_t t = 0; t < T; ++t) errors.run([&] { fn(n * t / T, n * (t + 1) / T); });
    errors.rethrow();
    return;
  }
#else
  (void)min_n;
#endif
  fn(int64_t(0), n);
}

/// fn(i) for i in [0, n) as an OpenMP loop (static schedule) when `worth_it` and n > 1, in order
/// on the calling thread otherwise. An exception from fn is thrown after the loop (the other
/// threads skip their remaining heads).
template <class F>
void parallel_heads(int64_t n, bool worth_it, F&& fn) {
#if defined(_OPENMP)
  if (worth_it && n > 1) {
    RegionErrors errors;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) errors.run([&] { fn(i); });
    errors.rethrow();
    return;
  }
#else
  (void)worth_it;
#endif
  for (int64_t i = 0; i < n; ++i) fn(i);
}

}  // namespace ttt
