// The GPU model's members (models/cuda/model.cuh), compiled once by nvcc into ttt_cuda_model for
// the project's programs that use ttt::cuda::Model through models/cuda/model.hpp (test_model,
// `ttt eval --device cuda`). A program of one's own may do the same: this one line in a .cu file.
#include <ttt/models/cuda/model.cuh>
