#pragma once
/// \file models/cuda/weights.hpp
/// A TTT language model's weights as plain host arrays: what the GPU model (models/cuda/model.hpp)
/// is built from. Plain C++17 with no library or CUDA headers, so that the CUDA side (compiled by
/// nvcc) and the CPU side (models/cuda/export.hpp fills it from a CausalLM) can both include it.
/// Layouts are the checkpoint's (PyTorch Linear weights [out, in], row-major).
#include <cstdint>
#include <string>
#include <vector>

namespace ttt::cuda {

/// One block: [pre_conv: x += conv(RMSNorm(x))]; x += TTT(RMSNorm(x)); x += SwiGLU(RMSNorm(x)).
struct LayerWeights {
  std::vector<float> seq_norm, ffn_norm;  ///< [C] the two RMSNorm weights
  std::vector<float> q, k, v, o;          ///< [C, C] projections
  std::vector<float> g;                   ///< [C, C] g_proj (use_gate), else empty
  std::vector<float> lr_w, lr_b;          ///< [H, C], [H] the learning-rate gate
  std::vector<float> token_idx;           ///< [mini_batch] learnable_token_idx
  std::vector<float> ln_w, ln_b;          ///< [H, f] the inner loss's LayerNorm (ttt_norm)
  std::vector<float> post_w, post_b;      ///< [C] post_norm
  std::vector<float> theta0;              ///< [H, P] the inner learner's initial weights per head
  std::vector<float> gate, up, down;      ///< [I, C], [I, C], [C, I] the SwiGLU MLP
  // share_qk: XQ, XK = two causal convs over q_proj's output (k_proj unused, left empty)
  std::vector<float> conv_q, conv_k;      ///< [C, K]
  std::vector<float> conv_q_b, conv_k_b;  ///< [C]
  // pre_conv: x += conv(RMSNorm(x)) before the TTT layer
  std::vector<float> conv_norm;  ///< [C]
  std::vector<float> conv_w;     ///< [C, K]
  std::vector<float> conv_b;     ///< [C]
};

struct ModelWeights {
  std::string learner = "linear";  ///< "linear" (W [f, f], b [f]) or "mlp" (W1 [f, 4f], b1, W2 [4f, f], b2)
  int C = 0, H = 0, f = 0, mini_batch = 16, I = 0, V = 0;
  double ttt_base_lr = 1.0, rope_theta = 10000.0, rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";  ///< the SwiGLU activation: silu, gelu, gelu_new / gelu_pytorch_tanh, relu
  bool use_gate = false;
  bool share_qk = false, pre_conv = false;
  int conv_kernel = 4;         ///< K of the share_qk and pre_conv convolutions
  std::vector<float> embed;    ///< [V, C]
  std::vector<float> lm_head;  ///< [V, C], empty when tied to the embedding
  std::vector<float> norm;     ///< [C] the final RMSNorm
  std::vector<LayerWeights> layers;
};

}  // namespace ttt::cuda
