// Native CPU kernels of the 4-DoF solvers (see ../_native.py): the robust cost of many poses per object and the
// whole trust-region LM / safeguarded Gauss-Newton loop, one problem at a time in registers. Same arithmetic as
// ../kernels.py (normal_equation_terms, normal_equations_planes, cost_prepared), ../linalg.py
// (ldl_solve_planes) and ../solver.py (_lm_loop, _lm_iteration, _gn_last_step); the tests compare them with the
// torch implementation (tests/test_ops/test_pnp_native_solver.py).
//
// Layout (all contiguous): point planes xs (3, B, n) object frame metres, obs (2, B, n) pixels, w (2, B, n);
// pose (B, 4) [x, y, z, yaw] camera frame; K (B, 3, 3) with last row [0, 0, 1]; lb, ub (B, 2) pixel clamp bounds;
// delta (B,) robust threshold; robust 0 = Huber, 1 = Cauchy.
#include <cmath>
#include <limits>

#include "common.h"

namespace {

using epnp::irls_weight;
using epnp::rho;

constexpr double S2_FLOOR = 1e-20;        // kernels.S2_FLOOR
constexpr double MAX_TRANSLATION = 1e6;   // solver.MAX_TRANSLATION

template <typename T>
struct Problem {
  const T *x, *y, *z, *ou, *ov, *wu, *wv;
  int64_t n;
  T k00, k01, k02, k10, k11, k12;
  T lbu, lbv, ubu, ubv, zmin, delta;
  int robust;
};

template <typename T>
Problem<T> make_problem(int64_t b, int64_t B, int64_t n, const T* xs, const T* obs, const T* w, const T* K,
                        const T* lb, const T* ub, T zmin, const T* delta, int robust) {
  const int64_t plane = B * n, off = b * n;
  const T* k = K + 9 * b;
  return Problem<T>{xs + off, xs + plane + off, xs + 2 * plane + off, obs + off, obs + plane + off, w + off,
                    w + plane + off, n, k[0], k[1], k[2], k[3], k[4], k[5], lb[2 * b], lb[2 * b + 1], ub[2 * b],
                    ub[2 * b + 1], zmin, delta[b], robust};
}

// Robust cost at pose; with DERIV also the normal equations A = J~^T J~ (4x4) and g = J~^T r~ (4), Jacobian
// clipped where the projection is clamped when CLIP (docs: kernels.normal_equation_terms)
template <typename T, bool DERIV, bool CLIP>
T evaluate(const Problem<T>& p, const T* pose, T A[4][4], T g[4]) {
  const T c = std::cos(pose[3]), s = std::sin(pose[3]);
  const T tx = pose[0], ty = pose[1], tz = pose[2];
  const T ax0 = p.k00 * c - p.k02 * s, az0 = p.k00 * s + p.k02 * c;
  const T ax1 = p.k10 * c - p.k12 * s, az1 = p.k10 * s + p.k12 * c;
  const T a10 = p.k00 * tx + p.k01 * ty + p.k02 * tz, a11 = p.k10 * tx + p.k11 * ty + p.k12 * tz;
  const T ay0 = p.k01, ay1 = p.k11, ms = -s;
  const T zmin = p.zmin, delta = p.delta, lbu = p.lbu, lbv = p.lbv, ubu = p.ubu, ubv = p.ubv;
  const T k02 = p.k02, k12 = p.k12;
  const int robust = p.robust;
  const T *X = p.x, *Y = p.y, *Z = p.z, *OU = p.ou, *OV = p.ov, *WU = p.wu, *WV = p.wv;
  T cost = 0;
  T su0 = 0, su1 = 0, su2 = 0, su11 = 0, su12 = 0, su22 = 0, gu0 = 0, gu1 = 0, gu2 = 0;
  T sv0 = 0, sv1 = 0, sv2 = 0, sv11 = 0, sv12 = 0, sv22 = 0, gv0 = 0, gv1 = 0, gv2 = 0;
#pragma omp simd reduction(+ : cost, su0, su1, su2, su11, su12, su22, gu0, gu1, gu2, sv0, sv1, sv2, sv11, sv12, \
                               sv22, gv0, gv1, gv2)
  for (int64_t j = 0; j < p.n; ++j) {
    const T x = X[j], y = Y[j], zz = Z[j];
    const T hu = a10 + x * ax0 + y * ay0 + zz * az0;
    const T hv = a11 + x * ax1 + y * ay1 + zz * az1;
    const T hz = tz + x * ms + zz * c;
    const T iz = T(1) / std::max(hz, zmin);
    const T ur = hu * iz, vr = hv * iz;
    const T u = std::min(std::max(ur, lbu), ubu), v = std::min(std::max(vr, lbv), ubv);
    const T ru = (u - OU[j]) * WU[j], rv = (v - OV[j]) * WV[j];
    const T sn = std::sqrt(std::max(ru * ru + rv * rv, T(S2_FLOOR)));
    cost += rho(sn, delta, robust);
    if (DERIV) {
      const T gu = -az0 * x + zz * ax0, gv = -az1 * x + zz * ax1, gz = -c * x + zz * ms;
      const T a = irls_weight(sn, delta, robust) * iz;
      const T cw = a * iz;
      T cu = WU[j] * WU[j] * cw, cv = WV[j] * WV[j] * cw;
      T qu = a * WU[j] * ru, qv = a * WV[j] * rv;
      if (CLIP) {
        const bool zok = hz > zmin;
        const T mu = T(zok && u == ur), mv = T(zok && v == vr);
        cu *= mu;
        qu *= mu;
        cv *= mv;
        qv *= mv;
      }
      const T fu1 = k02 - u, fu2 = gu - u * gz, fv1 = k12 - v, fv2 = gv - v * gz;
      const T cu1 = cu * fu1, cu2 = cu * fu2, cv1 = cv * fv1, cv2 = cv * fv2;
      su0 += cu;
      su1 += cu1;
      su2 += cu2;
      su11 += cu1 * fu1;
      su12 += cu1 * fu2;
      su22 += cu2 * fu2;
      gu0 += qu;
      gu1 += qu * fu1;
      gu2 += qu * fu2;
      sv0 += cv;
      sv1 += cv1;
      sv2 += cv2;
      sv11 += cv1 * fv1;
      sv12 += cv1 * fv2;
      sv22 += cv2 * fv2;
      gv0 += qv;
      gv1 += qv * fv1;
      gv2 += qv * fv2;
    }
  }
  if (DERIV) {
    const T kk[2][2] = {{p.k00, p.k01}, {p.k10, p.k11}};
    const T su[3] = {su0, su1, su2}, sv[3] = {sv0, sv1, sv2};
    for (int i = 0; i < 2; ++i) {
      for (int j = i; j < 2; ++j) A[i][j] = A[j][i] = su0 * (kk[0][i] * kk[0][j]) + sv0 * (kk[1][i] * kk[1][j]);
      for (int b = 0; b < 2; ++b) A[i][2 + b] = A[2 + b][i] = su[1 + b] * kk[0][i] + sv[1 + b] * kk[1][i];
      g[i] = gu0 * kk[0][i] + gv0 * kk[1][i];
    }
    A[2][2] = su11 + sv11;
    A[2][3] = A[3][2] = su12 + sv12;
    A[3][3] = su22 + sv22;
    g[2] = gu1 + gv1;
    g[3] = gu2 + gv2;
  }
  return cost;
}

template <typename T>
T evaluate_ne(const Problem<T>& p, const T* pose, T A[4][4], T g[4], bool clip) {
  return clip ? evaluate<T, true, true>(p, pose, A, g) : evaluate<T, true, false>(p, pose, A, g);
}

// (A + diag(damp)) x = b by the Jacobi-scaled, pivot-floored LDL^T of linalg.ldl_solve_planes
template <typename T>
void ldl_solve(const T A[4][4], const T b[4], const T damp[4], T x[4]) {
  const T floor = sizeof(T) == 8 ? T(1e-15) : T(1e-6);
  const T tiny = std::sqrt(std::numeric_limits<T>::min());
  T diag[4], sc[4], a[4][4], L[4][4], d[4];
  for (int i = 0; i < 4; ++i) {
    diag[i] = A[i][i] + damp[i];
    sc[i] = T(1) / std::sqrt(std::max(diag[i], tiny));
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j <= i; ++j) a[i][j] = i != j ? A[i][j] * (sc[i] * sc[j]) : diag[i] * (sc[i] * sc[i]);
  for (int j = 0; j < 4; ++j) {
    T v[4];
    for (int k = 0; k < j; ++k) v[k] = L[j][k] * d[k];
    T dj = a[j][j];
    for (int k = 0; k < j; ++k) dj = dj - L[j][k] * v[k];
    dj = std::max(dj, floor);
    d[j] = dj;
    const T inv = T(1) / dj;
    for (int i = j + 1; i < 4; ++i) {
      T acc = a[i][j];
      for (int k = 0; k < j; ++k) acc = acc - L[i][k] * v[k];
      L[i][j] = acc * inv;
    }
  }
  T y[4];
  for (int i = 0; i < 4; ++i) {
    y[i] = b[i] * sc[i];
    for (int k = 0; k < i; ++k) y[i] = y[i] - L[i][k] * y[k];
  }
  for (int i = 0; i < 4; ++i) x[i] = y[i] / d[i];
  for (int i = 3; i >= 0; --i)
    for (int k = i + 1; k < 4; ++k) x[i] = x[i] - L[k][i] * x[k];
  for (int i = 0; i < 4; ++i) x[i] = x[i] * sc[i];
}

template <typename T>
bool accept(const T* pose, T cost) {
  if (!std::isfinite(cost)) return false;
  for (int i = 0; i < 4; ++i)
    if (!std::isfinite(pose[i])) return false;
  for (int i = 0; i < 3; ++i)
    if (!(std::abs(pose[i]) <= T(MAX_TRANSLATION))) return false;
  return true;
}

struct LMConfig {
  int num_iter, fast_mode, final_eval;
  double eps, min_lm_diagonal, max_lm_diagonal, min_relative_decrease, initial_trust_region_radius,
      max_trust_region_radius;
};

// solver._lm_loop for one problem; pose is updated in place, cost / A written when final
template <typename T>
void lm_loop(const Problem<T>& p, T* pose, const LMConfig& cfg, T* cost_out, T* A_out) {
  const bool fast = cfg.fast_mode != 0, clip = !fast;
  const T eps = T(cfg.eps);
  T A[4][4], g[4], An[4][4], gn[4], damp[4], x[4], pn[4];
  T cost = evaluate_ne(p, pose, A, g, clip);
  T mu = 0, radius = T(cfg.initial_trust_region_radius), decrease = 2;
  for (int it = 0; it < cfg.num_iter; ++it) {
    if (fast && !cfg.final_eval && it == cfg.num_iter - 1) {  // solver._gn_last_step
      for (int i = 0; i < 4; ++i) damp[i] = A[i][i] * mu + eps;
      ldl_solve(A, g, damp, x);
      bool ok = true;
      for (int i = 0; i < 4; ++i) {
        pn[i] = pose[i] - x[i];
        ok = ok && std::isfinite(pn[i]);
      }
      for (int i = 0; i < 3; ++i) ok = ok && std::abs(pn[i]) <= T(MAX_TRANSLATION);
      if (ok)
        for (int i = 0; i < 4; ++i) pose[i] = pn[i];
      return;
    }
    if (fast) {
      for (int i = 0; i < 4; ++i) damp[i] = A[i][i] * mu + eps;
    } else {
      const T inv_r = T(1) / radius;
      for (int i = 0; i < 4; ++i)
        damp[i] = std::min(std::max(A[i][i], T(cfg.min_lm_diagonal)), T(cfg.max_lm_diagonal)) * inv_r + eps;
    }
    ldl_solve(A, g, damp, x);
    T step[4];
    for (int i = 0; i < 4; ++i) {
      step[i] = -x[i];
      pn[i] = pose[i] + step[i];
    }
    const T cn = evaluate_ne(p, pn, An, gn, clip);
    const bool ok = accept(pn, cn);
    bool success;
    if (fast) {
      success = ok && cn <= cost;
      mu = success ? mu * T(0.1) : std::max(mu * T(10), T(1e-3));
    } else {
      T model_change = 0;
      for (int i = 0; i < 4; ++i) {
        T As = 0;
        for (int j = 0; j < 4; ++j) As += A[i][j] * step[j];
        model_change += -step[i] * (T(0.5) * As + g[i]);
      }
      const T rel = (cost - cn) / model_change;
      success = ok && rel >= T(cfg.min_relative_decrease) && model_change > 0;
      const T t = 2 * rel - 1;
      const T grow = std::max(T(1) - t * t * t, T(1) / T(3));
      radius = success ? radius / grow : radius / decrease;
      radius = std::min(std::max(radius, eps), T(cfg.max_trust_region_radius));
      decrease = success ? T(2) : decrease * 2;
    }
    if (success) {
      for (int i = 0; i < 4; ++i) {
        pose[i] = pn[i];
        g[i] = gn[i];
        for (int j = 0; j < 4; ++j) A[i][j] = An[i][j];
      }
      cost = cn;
    }
  }
  if (cost_out) *cost_out = cost;
  if (A_out)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) A_out[4 * i + j] = A[i][j];
}

template <typename T>
void lm4(int64_t B, int64_t n, const T* xs, const T* obs, const T* w, T* pose, const T* K, const T* lb,
         const T* ub, double zmin, const T* delta, int robust, const LMConfig& cfg, T* cost_out, T* A_out,
         int threads) {
  const double per_item = double(n) * (cfg.num_iter + 1) * 4.0;
  epnp::parallel_for(B, threads, per_item, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const Problem<T> p = make_problem(b, B, n, xs, obs, w, K, lb, ub, T(zmin), delta, robust);
      lm_loop(p, pose + 4 * b, cfg, cost_out ? cost_out + b : nullptr, A_out ? A_out + 16 * b : nullptr);
    }
  });
}

// cost (S, N) of poses (S, N, 4) with planes (·, N, n)
template <typename T>
void cost4(int64_t S, int64_t N, int64_t n, const T* xs, const T* obs, const T* w, const T* poses, const T* K,
           const T* lb, const T* ub, double zmin, const T* delta, int robust, T* out, int threads) {
  epnp::parallel_for(N, threads, double(S) * double(n), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const Problem<T> p = make_problem(b, N, n, xs, obs, w, K, lb, ub, T(zmin), delta, robust);
      for (int64_t k = 0; k < S; ++k)
        out[k * N + b] = evaluate<T, false, false>(p, poses + 4 * (k * N + b), nullptr, nullptr);
    }
  });
}

}  // namespace

extern "C" {

#define EPNP_SOLVER_API(T, SUF)                                                                                 \
  void epnp_lm4_##SUF(int64_t B, int64_t n, const T* xs, const T* obs, const T* w, T* pose, const T* K,          \
                      const T* lb, const T* ub, double zmin, const T* delta, int robust, int num_iter,           \
                      int fast_mode, int final_eval, double eps, double min_lm_diagonal, double max_lm_diagonal, \
                      double min_relative_decrease, double initial_trust_region_radius,                         \
                      double max_trust_region_radius, T* cost_out, T* A_out, int threads) {                     \
    const LMConfig cfg{num_iter, fast_mode, final_eval, eps, min_lm_diagonal, max_lm_diagonal,                  \
                       min_relative_decrease, initial_trust_region_radius, max_trust_region_radius};            \
    lm4<T>(B, n, xs, obs, w, pose, K, lb, ub, zmin, delta, robust, cfg, cost_out, A_out, threads);               \
  }                                                                                                             \
  void epnp_cost4_##SUF(int64_t S, int64_t N, int64_t n, const T* xs, const T* obs, const T* w, const T* poses,  \
                        const T* K, const T* lb, const T* ub, double zmin, const T* delta, int robust, T* out,   \
                        int threads) {                                                                          \
    cost4<T>(S, N, n, xs, obs, w, poses, K, lb, ub, zmin, delta, robust, out, threads);                         \
  }

EPNP_SOLVER_API(float, f32)
EPNP_SOLVER_API(double, f64)

}  // extern "C"
