#pragma once
/// \file blocks/ln_l2.hpp
/// The gradient of TTT's inner loss with respect to the inner model's output, in closed form (the
/// reference's `ln_fused_l2_bwd`), and its vector-Jacobian product, which is where the second
/// derivative of the inner loss enters the outer gradient. Per row (eps 1e-6):
///   xh = (z - mean) / s,  s = sqrt(var + eps),  gx = (gamma xh + beta - target) gamma,
///   G  = (D gx - sum(gx) - xh sum(gx xh)) / (D s)      = d/dz 0.5 ||gamma LN(z) + beta - target||^2
#include <cmath>
#include <concepts>
#include <type_traits>

#include "../core/tensor.hpp"
#include "../kernels/simd.hpp"
#include "eigen_out.hpp"
#include "layer_norm.hpp"

namespace ttt::blocks {

/// ln_l2_grad below in plain loops (any scalar; ad::Real takes them).
template <class Z, class T, class G>
void ln_l2_grad_plain(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<T>& target, const typename Z::Scalar* gamma,
                      const typename Z::Scalar* beta, const Eigen::MatrixBase<G>& G_, double eps = 1e-6) {
  using S = typename Z::Scalar;
  const Eigen::Index d = z.cols();
  auto& g = detail::out(G_, z.rows(), d);
  for (Eigen::Index r = 0; r < z.rows(); ++r) {
    const auto moments = row_moments_plain(z, r);
    const S mu = moments.first, var = moments.second;
    using std::sqrt;  // or the scalar's own sqrt, by argument-dependent lookup (ad::Real)
    const S stdv = sqrt(var + S(eps));
    S s1 = 0, s2 = 0;
    for (Eigen::Index c = 0; c < d; ++c) {  // g temporarily holds gx
      const S xhat = (z(r, c) - mu) / stdv;
      const S gx = (gamma[c] * xhat + beta[c] - target(r, c)) * gamma[c];
      g(r, c) = gx;
      s1 += gx;
      s2 += gx * xhat;
    }
    const S scale = S(1) / (S(d) * stdv);
    for (Eigen::Index c = 0; c < d; ++c) {
      const S xhat = (z(r, c) - mu) / stdv;
      g(r, c) = (S(d) * g(r, c) - s1 - xhat * s2) * scale;
    }
  }
}

/// G = ln_l2_grad(Z, target).                         Z, target, G: (n, f); gamma, beta: (f)
/// Float rows in memory through kernels::ln_l2_grad_rows (four rows' reductions interleaved);
/// other float and double expressions row by row through Eigen's vectorised expressions and
/// reductions.
template <class Z, class T, class G>
void ln_l2_grad(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<T>& target, const typename Z::Scalar* gamma,
                const typename Z::Scalar* beta, const Eigen::MatrixBase<G>& G_, double eps = 1e-6) {
  using S = typename Z::Scalar;
  if constexpr (!std::floating_point<S>) {
    ln_l2_grad_plain(z, target, gamma, beta, G_, eps);
  } else {
    const Eigen::Index d = z.cols();
    auto& g = detail::out(G_, z.rows(), d);
    if constexpr (detail::kFloatRows<Z> && detail::kFloatRows<T> && detail::kFloatRows<G>) {
      const auto& zd = z.derived();  // one declarator each: the types may differ (C++ wants one `auto`)
      const auto& td = target.derived();
      auto& gd = g.derived();
      if (zd.innerStride() == 1 && td.innerStride() == 1 && gd.innerStride() == 1 && gd.data() != zd.data()) {
        kernels::ln_l2_grad_rows(backend::cpu_default{}, size_t(z.rows()), size_t(d), zd.data(), zd.outerStride(),
                                 td.data(), td.outerStride(), nullptr, 0, gamma, beta, gd.data(), gd.outerStride(),
                                 eps);
        return;
      }
    }
    using RowA = Eigen::Array<S, 1, Eigen::Dynamic>;
    const Eigen::Map<const RowA> gm(gamma, d), bt(beta, d);
    for (Eigen::Index r = 0; r < z.rows(); ++r) {
      const auto moments = row_moments(z, r);
      const S mu = moments.first, stdv = std::sqrt(moments.second + S(eps));
      const auto xhat = (z.row(r).array() - mu) / stdv;
      auto gr = g.row(r).array();
      gr = (gm * xhat + bt - target.row(r).array()) * gm;  // gx
      const S s1 = gr.sum(), s2 = (gr * xhat).sum();
      gr = (S(d) * gr - s1 - xhat * s2) * (S(1) / (S(d) * stdv));
    }
  }
}

/// G = ln_l2_grad(Z, A - B): the target of the dual forms, XV - XK, read and not stored. Float
/// rows through kernels::ln_l2_grad_rows, other scalars through ln_l2_grad.
template <class S>
void ln_l2_grad_diff(CRefT<S> z, CRefT<S> a, CRefT<S> b, const S* gamma, const S* beta, RefT<S> g) {
  if constexpr (std::is_same_v<S, float>) {
    kernels::ln_l2_grad_rows(backend::cpu_default{}, size_t(z.rows()), size_t(z.cols()), z.data(), z.outerStride(),
                             a.data(), a.outerStride(), b.data(), b.outerStride(), gamma, beta, g.data(),
                             g.outerStride());
  } else {
    ln_l2_grad(z, a - b, gamma, beta, g);
  }
}

/// Given dG, add to dZ, dT (the target's cotangent), dgamma, dbeta (either may be null). Row by
/// row through Eigen's vectorised expressions and reductions over row buffers (xh, gx, u = dG / (D s),
/// d gx, d xh): one division per row, not per element.
template <class Z, class T, class DG, class DZ, class DT>
void ln_l2_grad_bwd(const Eigen::MatrixBase<Z>& z, const Eigen::MatrixBase<T>& tg, const typename Z::Scalar* g,
                    const typename Z::Scalar* b, const Eigen::MatrixBase<DG>& dG, const Eigen::MatrixBase<DZ>& dZ_,
                    const Eigen::MatrixBase<DT>& dT_, typename Z::Scalar* dg, typename Z::Scalar* db,
                    double eps = 1e-6) {
  using S = typename Z::Scalar;
  using RowA = Eigen::Array<S, 1, Eigen::Dynamic>;
  auto& dZ = detail::inout(dZ_);
  auto& dT = detail::inout(dT_);
  const Eigen::Index d = z.cols();
  const S D = S(d);
  const Eigen::Map<const RowA> gm(g, d), bt(b, d);
  RowA buf(5 * d);
  auto xh = buf.segment(0, d), gx = buf.segment(d, d), u = buf.segment(2 * d, d), dgx = buf.segment(3 * d, d),
       dxh = buf.segment(4 * d, d);
  for (Eigen::Index t = 0; t < z.rows(); ++t) {
    const auto moments = row_moments(z, t);
    const S s = std::sqrt(moments.second + S(eps)), inv = S(1) / s, Ds = D * s;
    xh = (z.row(t).array() - moments.first) * inv;
    gx = (gm * xh + bt - tg.row(t).array()) * gm;
    const S s1 = gx.sum(), s2 = (gx * xh).sum();
    // G_c = (D gx_c - s1 - xh_c s2) / (D s); u = dG / (D s)
    u = dG.row(t).array() * (S(1) / Ds);
    const S U = u.sum(), ds2 = -(u * xh).sum();
    S ds = -((D * gx - s1 - xh * s2) * u).sum() * inv;  // G is proportional to 1/s at fixed xh, gx
    // dxh_c = -u_c s2 + ds2 gx_c + dgx_c g_c^2, dgx_c = D u_c - U + ds2 xh_c
    dgx = D * u - U + ds2 * xh;
    dxh = ds2 * gx - s2 * u + dgx * gm * gm;
    if (dg) Eigen::Map<RowA>(dg, d) += dgx * (S(2) * gm * xh + bt - tg.row(t).array());
    if (db) Eigen::Map<RowA>(db, d) += dgx * gm;
    dT.row(t).array() -= dgx * gm;
    ds -= (dxh * xh).sum() * inv;  // xh = xc / s
    const S dvar = ds / (S(2) * s);
    // dxc = dxh / s + dvar 2 xh s / D (xc = xh s); dZ = dxc - mean(dxc)
    const S mean_dxc = (dxh.sum() * inv + dvar * S(2) * s / D * xh.sum()) / D;
    dZ.row(t).array() += dxh * inv + (dvar * S(2) * s / D) * xh - mean_dxc;
  }
}

}  // namespace ttt::blocks
