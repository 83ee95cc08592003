#pragma once
/// \file train/thread_group.hpp
/// ThreadGroup: N ranks that are threads of one process, a Communicator for each. The plain twin
/// of MpiCommunicator (train/mpi.hpp): the tests run data-parallel training with it where MPI is
/// missing, and research code can check its own data-parallel loop without mpirun.
///
/// \code
///   ttt::train::ThreadGroup group(2);
///   std::vector<std::thread> ranks;
///   for (int r = 0; r < 2; ++r)
///     ranks.emplace_back([&, r] { auto o = opt; o.comm = &group.rank(r); train(models[r], data[r], o); });
/// \endcode
///
/// Sums are taken in rank order (rank 0's values + rank 1's + ...), the same on every rank. When
/// a rank calls abort(), every collective call of the others (waiting or later) throws ttt::Error.
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "communicator.hpp"

namespace ttt::train {

class ThreadGroup {
 public:
  explicit ThreadGroup(int n) {
    if (n < 1) throw Error("ThreadGroup: the number of ranks must be >= 1, got " + std::to_string(n));
    slots_.resize(size_t(n));
    for (int r = 0; r < n; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
  }
  ThreadGroup(const ThreadGroup&) = delete;
  ThreadGroup& operator=(const ThreadGroup&) = delete;

  int size() const { return int(ranks_.size()); }
  /// The communicator of rank `r` (0 <= r < size()), for the thread that plays it.
  Communicator& rank(int r) {
    if (r < 0 || r >= size()) throw Error("ThreadGroup: rank " + std::to_string(r) + " outside 0.." + std::to_string(size() - 1));
    return *ranks_[size_t(r)];
  }

 private:
  struct Slot {
    const void* data = nullptr;
    size_t count = 0;
    uint64_t value = 0;
  };

  class Rank final : public Communicator {
   public:
    Rank(ThreadGroup& g, int r) : g_(g), r_(r) {}
    int rank() const override { return r_; }
    int size() const override { return g_.size(); }
    void allreduce_sum(std::span<float> x) override { g_.reduce(r_, x); }
    void allreduce_sum(std::span<double> x) override { g_.reduce(r_, x); }
    std::vector<uint64_t> allgather(uint64_t v) override {
      g_.slots_[size_t(r_)].value = v;
      g_.barrier();
      std::vector<uint64_t> out;
      for (const Slot& s : g_.slots_) out.push_back(s.value);
      g_.barrier();  // nobody overwrites a slot before every rank has read it
      return out;
    }
    void abort(const std::string& why) noexcept override { g_.abort(r_, why); }
    std::string describe() const override { return "threads, " + std::to_string(size()) + " ranks"; }

   private:
    ThreadGroup& g_;
    int r_;
  };

  template <class S>
  void reduce(int r, std::span<S> x) {
    slots_[size_t(r)].data = x.data();
    slots_[size_t(r)].count = x.size();
    barrier();
    for (size_t k = 0; k < slots_.size(); ++k)
      if (slots_[k].count != x.size())
        fail_collective("allreduce_sum: rank " + std::to_string(k) + " gave " + std::to_string(slots_[k].count) +
                        " values, rank " + std::to_string(r) + " " + std::to_string(x.size()));
    std::vector<S> sum(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      S s = static_cast<const S*>(slots_[0].data)[i];
      for (size_t k = 1; k < slots_.size(); ++k) s += static_cast<const S*>(slots_[k].data)[i];
      sum[i] = s;
    }
    barrier();  // every rank has read every input before any is overwritten
    for (size_t i = 0; i < x.size(); ++i) x[i] = sum[i];
  }

  [[noreturn]] void fail_collective(const std::string& what) {
    abort(-1, what);
    throw Error("ThreadGroup: " + what);
  }

  void barrier() {
    std::unique_lock<std::mutex> lk(m_);
    if (!why_.empty()) throw Error(why_);
    const uint64_t gen = generation_;
    if (++arrived_ == size()) {
      arrived_ = 0, ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lk, [&] { return generation_ != gen || !why_.empty(); });
    if (generation_ == gen) throw Error(why_);
  }

  void abort(int r, const std::string& why) noexcept {
    try {
      std::lock_guard<std::mutex> lk(m_);
      if (why_.empty()) why_ = (r >= 0 ? "rank " + std::to_string(r) + " stopped: " : std::string()) + why;
    } catch (...) {
    }
    cv_.notify_all();
  }

  std::vector<std::unique_ptr<Rank>> ranks_;
  std::vector<Slot> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  std::string why_;
};

}  // namespace ttt::train
