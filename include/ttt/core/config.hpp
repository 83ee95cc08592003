#pragma once
/// \file core/config.hpp
/// Build-time switches shared by every header: the version and the host/device function macro
/// (CuTe's CUTE_HOST_DEVICE): a function marked TTT_HOST_DEVICE compiles for the GPU too when
/// nvcc builds it, and is a plain function otherwise.

#define TTT_VERSION_MAJOR 0
#define TTT_VERSION_MINOR 1
#define TTT_VERSION_PATCH 0

#if defined(__CUDACC__)
#define TTT_HOST_DEVICE __host__ __device__
#else
#define TTT_HOST_DEVICE
#endif
