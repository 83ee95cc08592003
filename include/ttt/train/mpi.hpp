#pragma once
/// \file train/mpi.hpp
/// MpiCommunicator: the trainer's Communicator (train/communicator.hpp) over an MPI communicator,
/// and MpiSession, which initialises and finalises MPI. Needs <mpi.h> and the MPI library (CMake:
/// find_package(MPI COMPONENTS CXX) with MPI_CXX_SKIP_MPICXX, link MPI::MPI_CXX); the rest of the library never includes it.
///
/// \code
///   ttt::train::MpiSession mpi;                 // MPI_Init unless already initialised
///   ttt::train::MpiCommunicator comm;           // MPI_COMM_WORLD
///   ttt::train::TrainOptions o;  o.comm = &comm;
///   ttt::train::train(model, data, o);          // mpirun -np 2 ./my_trainer
/// \endcode
///
/// Errors of MPI calls come back as ttt::Error naming the call (the communicator's error handler
/// is set to MPI_ERRORS_RETURN). A process that dies makes the launcher (mpirun) end the others.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "communicator.hpp"

namespace ttt::train {

namespace detail {
inline void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw Error(std::string(call) + " failed: " + std::string(msg, size_t(len)));
}
}  // namespace detail

/// MPI_Init in the constructor (unless MPI is initialised already), MPI_Finalize in the
/// destructor (unless it was initialised by someone else, or is finalised already).
class MpiSession {
 public:
  MpiSession() {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
      detail::mpi_check(MPI_Init(nullptr, nullptr), "MPI_Init");
      owner_ = true;
    }
  }
  ~MpiSession() {
    int fin = 0;
    MPI_Finalized(&fin);
    if (owner_ && !fin) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owner_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  /// Over `comm` (MPI_COMM_WORLD by default); MPI must be initialised (MpiSession). `program`
  /// names the program in abort()'s message: "PROGRAM (rank K of N): why".
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, std::string program = "")
      : comm_(comm), program_(std::move(program)) {
    detail::mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    detail::mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void allreduce_sum(std::span<float> x) override { reduce(x.data(), x.size(), MPI_FLOAT); }
  void allreduce_sum(std::span<double> x) override { reduce(x.data(), x.size(), MPI_DOUBLE); }
  std::vector<uint64_t> allgather(uint64_t v) override {
    std::vector<uint64_t> out(size_t(size_), 0);
    detail::mpi_check(MPI_Allgather(&v, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_), "MPI_Allgather");
    return out;
  }
  void abort(const std::string& why) noexcept override {
    if (program_.empty()) std::fprintf(stderr, "rank %d of %d: %s\n", rank_, size_, why.c_str());
    else std::fprintf(stderr, "%s (rank %d of %d): %s\n", program_.c_str(), rank_, size_, why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm_, 1);
  }
  std::string describe() const override { return "MPI, " + std::to_string(size_) + " processes"; }

 private:
  // MPI_SUM over the ranks; in pieces of at most INT_MAX values (MPI counts are int).
  template <class S>
  void reduce(S* data, size_t n, MPI_Datatype type) {
    for (size_t off = 0; off < n; off += size_t(INT_MAX)) {
      const int count = int(std::min<size_t>(n - off, size_t(INT_MAX)));
      detail::mpi_check(MPI_Allreduce(MPI_IN_PLACE, data + off, count, type, MPI_SUM, comm_), "MPI_Allreduce");
    }
  }

  MPI_Comm comm_;
  std::string program_;
  int rank_ = 0, size_ = 1;
};

}  // namespace ttt::train
