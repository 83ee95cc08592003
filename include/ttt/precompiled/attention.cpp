// ttt::precompiled: the attention layer, its reverse pass, the attention language model and its
// gradient, in float (see linear.cpp; double: double/attention.cpp).
#include "instantiate_models.hpp"

TTT_INSTANTIATE_ATTENTION(float)
