// One thread for the per-head OpenMP loops: the heads of these tiny models are too small to
// share, and the resume test compares single-threaded runs bit for bit.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

int main(int argc, char** argv) {
#if defined(_OPENMP)
  omp_set_num_threads(1);
#endif
  return doctest::Context(argc, argv).run();
}
