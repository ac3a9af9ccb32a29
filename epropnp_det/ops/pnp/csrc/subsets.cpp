// Native RSLM subset drawing and gathering (see ../_native.py): the same subsets as solver.sample_subsets +
// Prepared.gather + Prepared.mask_points from the same uniform draws, written straight into the flat problem
// planes of the subset LM.
//
// cdf (N, n) normalised cumulative point probabilities (last entry 1); u (N, P * 2m) uniform draws in [0, 1)
// (subset p of object i uses u[i, 2m p : 2m (p + 1)]); planes (C, N, n) with C = 7 (xs 3, obs 2, w 2);
// out (C, P * N, m), problem index p * N + i. Each draw picks the first point whose cdf exceeds it
// (searchsorted right), the first m distinct draws form the subset (successive sampling); missing slots repeat the
// first draw with zero weight (w channels 5, 6 multiplied by 0).
#include "common.h"

namespace {

template <typename T>
void subsets(int64_t N, int64_t n, int64_t P, int64_t m, const T* cdf, const T* u, const T* planes, T* out,
             int threads) {
  const int64_t k = 2 * m, C = 7;
  epnp::parallel_for(N, threads, double(P) * double(k) * 8.0, [&](int64_t i0, int64_t i1) {
    std::vector<int64_t> stamp(n, -1), idx(m);
    for (int64_t i = i0; i < i1; ++i) {
      const T* c = cdf + i * n;
      std::fill(stamp.begin(), stamp.end(), int64_t(-1));
      for (int64_t p = 0; p < P; ++p) {
        const T* up = u + i * P * k + p * k;
        int64_t count = 0, first = 0;
        for (int64_t t = 0; t < k; ++t) {
          const T x = up[t];
          // first index with cdf > x, branch-free (the draws are random: a branchy search mispredicts every step)
          const T* b = c;
          int64_t len = n;
          while (len > 1) {
            const int64_t half = len >> 1;
            b = (b[half] <= x) ? b + half : b;
            len -= half;
          }
          const int64_t d = std::min<int64_t>((b - c) + (*b <= x), n - 1);
          if (t == 0) first = d;
          if (stamp[d] != p) {
            stamp[d] = p;
            if (count < m) idx[count++] = d;
          }
        }
        const int64_t prob = p * N + i;
        for (int64_t ch = 0; ch < C; ++ch) {
          const T* src = planes + (ch * N + i) * n;
          T* dst = out + (ch * P * N + prob) * m;
          const T scale = ch >= 5 ? T(0) : T(1);
          for (int64_t s = 0; s < count; ++s) dst[s] = src[idx[s]];
          for (int64_t s = count; s < m; ++s) dst[s] = src[first] * scale;
        }
      }
    }
  });
}

}  // namespace

extern "C" {

void epnp_subsets_f32(int64_t N, int64_t n, int64_t P, int64_t m, const float* cdf, const float* u,
                      const float* planes, float* out, int threads) {
  subsets<float>(N, n, P, m, cdf, u, planes, out, threads);
}

void epnp_subsets_f64(int64_t N, int64_t n, int64_t P, int64_t m, const double* cdf, const double* u,
                      const double* planes, double* out, int threads) {
  subsets<double>(N, n, P, m, cdf, u, planes, out, threads);
}

}  // extern "C"
