// ttt::precompiled: the attention layer, its reverse pass, the attention language model and its
// gradient, in double (float: ../attention.cpp).
#include "../instantiate_models.hpp"

TTT_INSTANTIATE_ATTENTION(double)
