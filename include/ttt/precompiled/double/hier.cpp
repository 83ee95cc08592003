// ttt::precompiled: the hierarchical transformer's forward, loss (with gradients) and cached
// decoder, in double (float: ../hier.cpp).
#include "../instantiate_models.hpp"

TTT_INSTANTIATE_HIER(double)
