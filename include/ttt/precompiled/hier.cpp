// ttt::precompiled: the hierarchical transformer's forward, loss (with gradients) and cached
// decoder, in float (see linear.cpp; double: double/hier.cpp).
#include "instantiate_models.hpp"

TTT_INSTANTIATE_HIER(float)
