#pragma once
/// \file train/communicator.hpp
/// What data-parallel training needs from a group of processes: who am I, how many are we, sum
/// these numbers over all of us, compare one value, and stop everyone. `train()` (trainer.hpp)
/// takes one through TrainOptions::comm; without one it trains in this process alone
/// (SingleProcess). Behind the interface: MPI (train/mpi.hpp, MpiCommunicator) or threads of one
/// process (train/thread_group.hpp, ThreadGroup: the twin the tests run without MPI).
///
/// Every member except rank(), size() and abort() is collective: every rank calls it, in the same
/// order, with buffers of the same length.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace ttt::train {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  /// x <- the sum of x over the ranks; every rank gets the same values (bit for bit).
  virtual void allreduce_sum(std::span<float> x) = 0;
  virtual void allreduce_sum(std::span<double> x) = 0;
  /// Every rank's `v`, in rank order.
  virtual std::vector<uint64_t> allgather(uint64_t v) = 0;
  /// One rank failed with `why`: stop the others instead of leaving them waiting in a collective
  /// (MPI: the message on stderr, then MPI_Abort, which ends every process; threads: the others'
  /// next collective throws). Called by the trainer before it rethrows.
  virtual void abort(const std::string& why) noexcept = 0;
  /// What runs the group, for logs ("MPI, 2 processes").
  virtual std::string describe() const = 0;
};

/// One process, no peers: the sums are the values themselves.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void allreduce_sum(std::span<float>) override {}
  void allreduce_sum(std::span<double>) override {}
  std::vector<uint64_t> allgather(uint64_t v) override { return {v}; }
  void abort(const std::string&) noexcept override {}
  std::string describe() const override { return "one process"; }
};

/// The number of processes an MPI launcher (Open MPI's mpirun, MPICH's / Slurm's PMI) started
/// this one among, read from its environment; 1 when none did. A program built without MPI uses
/// it to refuse `mpirun -np N` instead of training N unrelated copies.
inline int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"})
    if (const char* v = std::getenv(var)) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  return 1;
}

}  // namespace ttt::train
