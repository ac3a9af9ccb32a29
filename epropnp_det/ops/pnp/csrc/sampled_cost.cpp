// Monte-Carlo sampled cost (../sampled_cost.py, _SampledCost): the robust reprojection cost of S poses per object
// and its backward w.r.t. the correspondences, one object per task (epnp::parallel_for), samples in the outer
// loop, points innermost (contiguous planes, `#pragma omp simd`).
//
// Layout (all contiguous, row-major):
//   A (S, N, 12)       [K·R | K·t] of sample s, object i, row-major 3x4 (the Python `affine` (S, N, 3, 4))
//   x3dT (N, 3, n)     object points as planes X, Y, Z
//   x2dT, w2dT (N, 2, n) observations and weights as planes u, v
//   delta (N,), lb, ub (N, 2), z_min, robust (0 Huber, 1 Cauchy)
// Forward: cost (S, N). Backward (upstream grad (S, N)): gx3dT (N, 3, n) = dL/dx3d, gq (N, 2, n) = Σ_s ψ
// (dL/dx2d = -gq ⊙ w, applied in Python), gw (N, 2, n) = Σ_s ψ ⊙ e = dL/dw2d, gd (N,) = dL/dδ; ψ = ω(s) r g.
// The arithmetic is that of the eager backward of _SampledCost (valid masks lb <= u_raw <= ub inclusive, depth
// clamped at z_min with the z-gradient where h_z >= z_min, s = sqrt(max(r_u² + r_v², 1e-30)), Huber through
// m = min(s, δ), Cauchy through the robust helpers of common.h); samples whose upstream gradient is exactly 0
// are skipped. Every object is computed by one thread in a fixed order: results do not depend on the threads.
#include "common.h"

namespace {

// clamps and minima written so that a NaN in the first operand propagates (as torch.clamp / torch.minimum)
template <typename T>
inline T clamp_lo(T x, T lo) { return x < lo ? lo : x; }
template <typename T>
inline T clamp_hi(T x, T hi) { return hi < x ? hi : x; }

template <typename T>
struct Obj {  // the planes and per-object constants of object i
  const T *X, *Y, *Z, *xu, *xv, *wu, *wv;
  T d, lbu, lbv, ubu, ubv;
  bool dnan;
  Obj(const T* x3dT, const T* x2dT, const T* w2dT, const T* delta, const T* lb, const T* ub, int64_t i,
      int64_t n) {
    X = x3dT + i * 3 * n;
    Y = X + n;
    Z = Y + n;
    xu = x2dT + i * 2 * n;
    xv = xu + n;
    wu = w2dT + i * 2 * n;
    wv = wu + n;
    d = delta[i];
    dnan = d != d;
    lbu = lb[2 * i];
    lbv = lb[2 * i + 1];
    ubu = ub[2 * i];
    ubv = ub[2 * i + 1];
  }
};

template <typename T, int ROBUST>
void forward_object(const T* A, const Obj<T>& o, int64_t S, int64_t N, int64_t n, int64_t i, T zmin, T* out) {
  const T *X = o.X, *Y = o.Y, *Z = o.Z, *xu = o.xu, *xv = o.xv, *wu = o.wu, *wv = o.wv;
  const T d = o.d, lbu = o.lbu, lbv = o.lbv, ubu = o.ubu, ubv = o.ubv;
  const bool dnan = o.dnan;
  for (int64_t s = 0; s < S; ++s) {
    const T* c = A + (s * N + i) * 12;
    const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7], c8 = c[8],
            c9 = c[9], c10 = c[10], c11 = c[11];
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t p = 0; p < n; ++p) {
      const T h0 = c0 * X[p] + c1 * Y[p] + c2 * Z[p] + c3;
      const T h1 = c4 * X[p] + c5 * Y[p] + c6 * Z[p] + c7;
      const T h2 = c8 * X[p] + c9 * Y[p] + c10 * Z[p] + c11;
      const T z = clamp_lo(h2, zmin);  // u, v divided as in torch (same rounding, same border masks)
      const T u = clamp_hi(clamp_lo(h0 / z, lbu), ubu);
      const T v = clamp_hi(clamp_lo(h1 / z, lbv), ubv);
      const T ru = (u - xu[p]) * wu[p], rv = (v - xv[p]) * wv[p];
      const T sn = std::sqrt(clamp_lo(ru * ru + rv * rv, T(1e-30)));
      if (ROBUST == 0) {
        const T m = dnan ? d : clamp_hi(sn, d);
        acc += m * (sn - T(0.5) * m);
      } else {
        acc += epnp::rho(sn, d, 1);
      }
    }
    out[s * N + i] = acc;
  }
}

template <typename T, int ROBUST, bool X3D>
void backward_object(const T* A, const Obj<T>& o, const T* grad, int64_t S, int64_t N, int64_t n, int64_t i,
                     T zmin, T* gx3dT, T* gq, T* gw, T* gd, T* ddacc) {
  const T *X = o.X, *Y = o.Y, *Z = o.Z, *xu = o.xu, *xv = o.xv, *wu = o.wu, *wv = o.wv;
  const T d = o.d, lbu = o.lbu, lbv = o.lbv, ubu = o.ubu, ubv = o.ubv;
  const bool dnan = o.dnan;
  T* gx = gx3dT + i * 3 * n;
  T* gy = gx + n;
  T* gz = gy + n;
  T* gqu = gq + i * 2 * n;
  T* gqv = gqu + n;
  T* gwu = gw + i * 2 * n;
  T* gwv = gwu + n;
  std::fill(gx, gx + 3 * n, T(0));
  std::fill(gqu, gqu + 2 * n, T(0));
  std::fill(gwu, gwu + 2 * n, T(0));
  std::fill(ddacc, ddacc + n, T(0));
  for (int64_t s = 0; s < S; ++s) {
    const T g = grad[s * N + i];
    if (g == T(0)) continue;  // after _flush_tiny most far-off samples
    const T* c = A + (s * N + i) * 12;
    const T c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7], c8 = c[8],
            c9 = c[9], c10 = c[10], c11 = c[11];
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) {
      const T h0 = c0 * X[p] + c1 * Y[p] + c2 * Z[p] + c3;
      const T h1 = c4 * X[p] + c5 * Y[p] + c6 * Z[p] + c7;
      const T h2 = c8 * X[p] + c9 * Y[p] + c10 * Z[p] + c11;
      const T z = clamp_lo(h2, zmin);
      const T u_raw = h0 / z, v_raw = h1 / z;
      const T rz = T(1) / z;  // dL/dh_uv multiply by it
      const T u = clamp_hi(clamp_lo(u_raw, lbu), ubu);
      const T v = clamp_hi(clamp_lo(v_raw, lbv), ubv);
      const T eu = u - xu[p], ev = v - xv[p];
      const T ru = eu * wu[p], rv = ev * wv[p];
      const T sn = std::sqrt(clamp_lo(ru * ru + rv * rv, T(1e-30)));
      T wgt, dd;
      if (ROBUST == 0) {
        const T m = dnan ? d : clamp_hi(sn, d);
        wgt = m / sn;
        dd = sn - m;
      } else {
        wgt = epnp::irls_weight(sn, d, 1);
        dd = epnp::drho_ddelta(sn, d, 1);
      }
      const T hg = wgt * g;
      const T qu = ru * hg, qv = rv * hg;  // ψ·g, ψ = dρ/dr
      gwu[p] += qu * eu;
      gwv[p] += qv * ev;
      gqu[p] += qu;
      gqv[p] += qv;
      ddacc[p] += dd * g;
      if (X3D) {
        const T vu = (u_raw >= lbu && u_raw <= ubu) ? T(1) : T(0);
        const T vv = (v_raw >= lbv && v_raw <= ubv) ? T(1) : T(0);
        const T zok = h2 >= zmin ? T(1) : T(0);
        const T au = qu * wu[p] * vu * rz;  // dL/dh_u
        const T av = qv * wv[p] * vv * rz;
        const T az = -((au * u + av * v) * zok);  // dL/dh_z
        gx[p] += au * c0 + av * c4 + az * c8;
        gy[p] += au * c1 + av * c5 + az * c9;
        gz[p] += au * c2 + av * c6 + az * c10;
      }
    }
  }
  T sum = 0;
  for (int64_t p = 0; p < n; ++p) sum += ddacc[p];
  gd[i] = sum;
}

template <typename T>
void forward(const T* A, const T* x3dT, const T* x2dT, const T* w2dT, const T* delta, const T* lb, const T* ub,
             int64_t S, int64_t N, int64_t n, double z_min, int robust, T* out, int threads) {
  if (S <= 0 || N <= 0) return;
  const T zmin = T(z_min);
  epnp::parallel_for(N, threads, double(S) * double(n), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const Obj<T> o(x3dT, x2dT, w2dT, delta, lb, ub, i, n);
      if (robust == 0)
        forward_object<T, 0>(A, o, S, N, n, i, zmin, out);
      else
        forward_object<T, 1>(A, o, S, N, n, i, zmin, out);
    }
  });
}

template <typename T>
void backward(const T* A, const T* x3dT, const T* x2dT, const T* w2dT, const T* delta, const T* lb, const T* ub,
              const T* grad, int64_t S, int64_t N, int64_t n, double z_min, int robust, int need_x3d, T* gx3dT,
              T* gq, T* gw, T* gd, int threads) {
  if (N <= 0) return;
  const T zmin = T(z_min);
  epnp::parallel_for(N, threads, double(S) * double(n) * 2.0, [&](int64_t i0, int64_t i1) {
    std::vector<T> ddacc(size_t(std::max<int64_t>(n, 1)));
    for (int64_t i = i0; i < i1; ++i) {
      const Obj<T> o(x3dT, x2dT, w2dT, delta, lb, ub, i, n);
      if (robust == 0) {
        if (need_x3d)
          backward_object<T, 0, true>(A, o, grad, S, N, n, i, zmin, gx3dT, gq, gw, gd, ddacc.data());
        else
          backward_object<T, 0, false>(A, o, grad, S, N, n, i, zmin, gx3dT, gq, gw, gd, ddacc.data());
      } else {
        if (need_x3d)
          backward_object<T, 1, true>(A, o, grad, S, N, n, i, zmin, gx3dT, gq, gw, gd, ddacc.data());
        else
          backward_object<T, 1, false>(A, o, grad, S, N, n, i, zmin, gx3dT, gq, gw, gd, ddacc.data());
      }
    }
  });
}

// [K·R | K·t] (S, N, 12) of poses (S, N, D): D = 4 [x, y, z, yaw] (rotation about the camera's y axis) or
// D = 7 [x, y, z, w, i, j, k] (unit quaternion), K (N, 3, 3); as sampled_cost._pose_affine (rotation.py's formula)
template <typename T>
void affine(const T* poses, const T* K, int64_t S, int64_t N, int D, T* out, int threads) {
  epnp::parallel_for(S * N, threads, 2.0, [&](int64_t a, int64_t b) {
    for (int64_t idx = a; idx < b; ++idx) {
      const T* q = poses + idx * D;
      const T* k = K + (idx % N) * 9;
      T rt[12];
      if (D == 4) {
        const T c = std::cos(q[3]), s = std::sin(q[3]);
        const T r[9] = {c, T(0), s, T(0), T(1), T(0), -s, T(0), c};
        for (int j = 0; j < 3; ++j) {
          for (int l = 0; l < 3; ++l) rt[j * 4 + l] = r[j * 3 + l];
        }
      } else {
        const T w = q[3], i = q[4], j = q[5], kk = q[6];
        const T ii = i * i, jj = j * j, k2 = kk * kk, ij = i * j, ik = i * kk, jk = j * kk, wi = w * i, wj = w * j,
                wk = w * kk;
        const T r[9] = {T(1) - T(2) * (jj + k2), T(2) * (ij - wk), T(2) * (ik + wj),
                        T(2) * (ij + wk), T(1) - T(2) * (ii + k2), T(2) * (jk - wi),
                        T(2) * (ik - wj), T(2) * (jk + wi), T(1) - T(2) * (ii + jj)};
        for (int r0 = 0; r0 < 3; ++r0) {
          for (int l = 0; l < 3; ++l) rt[r0 * 4 + l] = r[r0 * 3 + l];
        }
      }
      rt[3] = q[0];
      rt[7] = q[1];
      rt[11] = q[2];
      T* o = out + idx * 12;
      for (int r0 = 0; r0 < 3; ++r0) {
        for (int l = 0; l < 4; ++l) o[r0 * 4 + l] = k[r0 * 3] * rt[l] + k[r0 * 3 + 1] * rt[4 + l] + k[r0 * 3 + 2] * rt[8 + l];
      }
    }
  });
}

}  // namespace

#define EPNP_SAMPLED_WRAPPERS(T, SUF)                                                                           \
  extern "C" void epnp_sampled_forward_##SUF(const T* A, const T* x3dT, const T* x2dT, const T* w2dT,           \
                                             const T* delta, const T* lb, const T* ub, int64_t S, int64_t N,    \
                                             int64_t n, double z_min, int robust, T* out, int threads) {        \
    forward<T>(A, x3dT, x2dT, w2dT, delta, lb, ub, S, N, n, z_min, robust, out, threads);                       \
  }                                                                                                             \
  extern "C" void epnp_sampled_backward_##SUF(const T* A, const T* x3dT, const T* x2dT, const T* w2dT,          \
                                              const T* delta, const T* lb, const T* ub, const T* grad,          \
                                              int64_t S, int64_t N, int64_t n, double z_min, int robust,        \
                                              int need_x3d, T* gx3dT, T* gq, T* gw, T* gd, int threads) {       \
    backward<T>(A, x3dT, x2dT, w2dT, delta, lb, ub, grad, S, N, n, z_min, robust, need_x3d, gx3dT, gq, gw, gd,  \
                threads);                                                                                       \
  }                                                                                                             \
  extern "C" void epnp_sampled_affine_##SUF(const T* poses, const T* K, int64_t S, int64_t N, int D, T* out,   \
                                            int threads) {                                                      \
    affine<T>(poses, K, S, N, D, out, threads);                                                                 \
  }

EPNP_SAMPLED_WRAPPERS(float, f32)
EPNP_SAMPLED_WRAPPERS(double, f64)
