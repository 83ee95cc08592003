#pragma once
/// \file config.hpp
/// Build-time switches shared by every header: the host/device function macro and the version.

#define TTT_VERSION_MAJOR 0
#define TTT_VERSION_MINOR 1
#define TTT_VERSION_PATCH 0

#if defined(__CUDACC__)
#define TTT_HOST_DEVICE __host__ __device__
#else
#define TTT_HOST_DEVICE
#endif

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ttt {
/// Number of threads the (batch, head) loops may use.
inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}
}  // namespace ttt
