// How `ttt train` joins the processes that `mpirun -np N` started: with MPI where the program was
// built with it (TTT_WITH_MPI: CMake found MPI), otherwise a clear refusal instead of N copies that
// each train alone and overwrite one another's checkpoints.
#include <memory>
#include <string>

#include <ttt/train/communicator.hpp>

#include "common.hpp"

#ifdef TTT_WITH_MPI
#include <ttt/train/mpi.hpp>
#endif

namespace ttt_cli {

#ifdef TTT_WITH_MPI
namespace {
// MPI_Init on construction, MPI_Finalize on destruction, the communicator in between.
struct MpiGroup {
  ttt::train::MpiSession session;
  ttt::train::MpiCommunicator comm{MPI_COMM_WORLD, "ttt train"};
};
}  // namespace
#endif

std::shared_ptr<ttt::train::Communicator> join_processes() {
  const int n = ttt::train::launcher_world_size();
  if (n <= 1) return nullptr;
#ifdef TTT_WITH_MPI
  auto g = std::make_shared<MpiGroup>();
  return std::shared_ptr<ttt::train::Communicator>(g, &g->comm);
#else
  throw UsageError("started as one of " + std::to_string(n) +
                   " processes (mpirun), but this ttt was built without MPI: install libopenmpi-dev "
                   "(scripts/setup.sh does) and rebuild, or run one process");
#endif
}

}  // namespace ttt_cli
