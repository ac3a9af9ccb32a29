// Shared helpers of the native PnP kernels (see ../_native.py): a parallel loop over objects and the robust
// costs of ../robust.py written per element (same formulas, same floors).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace epnp {

// Calls fn(begin, end) on contiguous ranges of [0, n) from up to `threads` threads; runs inline when the work
// (n * cost_per_item, in rough point evaluations) is too small to pay for waking threads.
// With OpenMP the threads are those of the process's OpenMP runtime: libgomp.so.1 is already loaded by torch, so
// the kernels share torch's thread pool (separate std::threads competed with torch's spinning OpenMP workers for
// the cores); without OpenMP, std::threads.
template <typename F>
void parallel_for(int64_t n, int threads, double cost_per_item, F fn) {
  const double total = double(n) * cost_per_item;
  int t = std::max(1, std::min<int>(threads, int(std::min<double>(double(n), total / 20000.0))));
  if (t <= 1) {
    fn(int64_t(0), n);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel num_threads(t)
  {
    const int64_t k = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t step = (n + nt - 1) / nt;
    const int64_t a = std::min(n, k * step), b = std::min(n, (k + 1) * step);
    if (a < b) fn(a, b);
  }
  return;
#endif
  std::vector<std::thread> pool;
  pool.reserve(t - 1);
  const int64_t step = (n + t - 1) / t;
  for (int k = 1; k < t; ++k) {
    const int64_t a = std::min(n, k * step), b = std::min(n, (k + 1) * step);
    if (a < b) pool.emplace_back([=]() { fn(a, b); });
  }
  fn(int64_t(0), std::min(n, step));
  for (auto& th : pool) th.join();
}

// robust == 0: Huber rho = m (s - m/2), m = min(s, delta); robust == 1: Cauchy (d2/2) log1p(s^2/d2)
constexpr double DELTA_FLOOR = 1e-10;

template <typename T>
inline T rho(T s, T delta, int robust) {
  if (robust == 0) {
    const T m = std::min(s, delta);
    return m * (s - T(0.5) * m);
  }
  const T d = std::max(delta, T(DELTA_FLOOR));
  const T d2 = d * d;
  return T(0.5) * d2 * std::log1p(s * s / d2);
}

// IRLS weight rho'(s)/s: Huber min(1, max(delta, 1e-10) / max(s, 1e-10)); Cauchy 1 / (1 + s^2/d2)
template <typename T>
inline T irls_weight(T s, T delta, int robust) {
  if (robust == 0) return std::min(T(1), std::max(delta, T(1e-10)) / std::max(s, T(1e-10)));
  const T d = std::max(delta, T(DELTA_FLOOR));
  return T(1) / (T(1) + s * s / (d * d));
}

// d rho / d delta: Huber s - min(s, delta); Cauchy d (log1p(x) - x / (1 + x)), x = s^2/d^2
template <typename T>
inline T drho_ddelta(T s, T delta, int robust) {
  if (robust == 0) return s - std::min(s, delta);
  const T d = std::max(delta, T(DELTA_FLOOR));
  const T x = s * s / (d * d);
  return d * (std::log1p(x) - x / (T(1) + x));
}

}  // namespace epnp
