// The GPU model's members (models/cuda/model.cuh), compiled once by nvcc for the programs that
// use ttt::cuda::Model through models/cuda/model.hpp (tests/cuda/test_model.cpp, bench_cuda).
#include <ttt/models/cuda/model.cuh>
