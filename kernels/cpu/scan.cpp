// scan: h_t = a_t * h_{t-1} + b_t (h_{-1} = h0); reverse runs t = T-1 .. 0 from h_T = h0.
// backward: delta_t = G_t + a_{t+1} * delta_{t+1}; da_t = delta_t * h_{t-1}; db_t = delta_t;
//           dh0 = a_0 * delta_0 (indices mirrored for reverse).
// One task = (batch, slice of D); it streams the rows of its slice through time with the running
// state in an L1-resident buffer, so every byte is read or written exactly once and sequentially:
// forward 3 x B*T*D elements, backward 5 x B*T*D (reads grad, a, h; writes da, db).
#include "cpu/scan.h"

#include <algorithm>

#include "cpu/parallel.h"

namespace mmrec::cpu {
namespace {

constexpr int64_t kMaxSlice = 1024;  // running state of one task: 4 KB (f32) of L1

struct Tiling {
  int64_t slice, slices_per_batch, tasks;
};

// Whole rows when the batch alone feeds every thread; otherwise narrower slices (multiples
// of 16 elements, so a slice starts on a 64-byte line) until each thread has one.
inline Tiling tile(int64_t B, int64_t D) {
  int threads = omp_get_max_threads();
  int64_t slice = std::min<int64_t>(D, kMaxSlice);
  while (B * ((D + slice - 1) / slice) < threads && slice > 16) slice = std::max<int64_t>(16, (slice / 2 + 15) / 16 * 16);
  int64_t per = (D + slice - 1) / slice;
  return {slice, per, B * per};
}

template <class T>
MMREC_INLINE void fwd_task(const T* a, const T* b, const T* h0, T* h, int64_t T_, int64_t D, int64_t width,
                           bool reverse) {
  using A = acc_t<T>;
  A state[kMaxSlice];
  for (int64_t i = 0; i < width; ++i) state[i] = h0 ? to_float(h0[i]) : A(0);
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t off = (reverse ? T_ - 1 - step : step) * D;
    const T* at = a + off;
    const T* bt = b + off;
    T* ht = h + off;
#pragma omp simd
    for (int64_t i = 0; i < width; ++i) {
      A x = A(to_float(at[i])) * state[i] + A(to_float(bt[i]));
      state[i] = x;
      ht[i] = from_acc<T>(x);
    }
  }
}

template <class T>
MMREC_INLINE void bwd_task(const T* a, const T* h, const T* h0, const T* g, T* da, T* db, T* dh0, int64_t T_,
                           int64_t D, int64_t width, bool reverse) {
  using A = acc_t<T>;
  A delta[kMaxSlice];
  for (int64_t i = 0; i < width; ++i) delta[i] = A(0);
  // Walk against the forward direction; `next` is the step that consumed h_t, `prev` fed it.
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t t = reverse ? step : T_ - 1 - step;
    const int64_t off = t * D;
    const T* an = step == 0 ? nullptr : a + (reverse ? t - 1 : t + 1) * D;
    const bool first = reverse ? t == T_ - 1 : t == 0;
    const T* hp = first ? h0 : h + (reverse ? t + 1 : t - 1) * D;
    const T* gt = g + off;
    T* dat = da + off;
    T* dbt = db + off;
    if (an) {
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) delta[i] = A(to_float(gt[i])) + A(to_float(an[i])) * delta[i];
    } else {
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) delta[i] = A(to_float(gt[i]));
    }
    if (hp) {
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        dbt[i] = from_acc<T>(delta[i]);
        dat[i] = from_acc<T>(delta[i] * A(to_float(hp[i])));
      }
    } else {
#pragma omp simd
      for (int64_t i = 0; i < width; ++i) {
        dbt[i] = from_acc<T>(delta[i]);
        dat[i] = from_acc<T>(A(0));
      }
    }
  }
  const T* a_first = a + (reverse ? T_ - 1 : 0) * D;
  for (int64_t i = 0; i < width; ++i) dh0[i] = from_acc<T>(A(to_float(a_first[i])) * delta[i]);
}

// ISA-dispatched task bodies, one per storage type (target_clones does not apply to templates, and the
// body of an OpenMP region is outlined at the baseline ISA, so dispatch happens per task inside it).
#define MMREC_SCAN_TASKS(T, SUFFIX)                                                                          \
  MMREC_ISA_DISPATCH void fwd_task_##SUFFIX(const T* a, const T* b, const T* h0, T* h, int64_t T_, int64_t D, \
                                            int64_t width, bool r) {                                          \
    fwd_task(a, b, h0, h, T_, D, width, r);                                                                   \
  }                                                                                                           \
  MMREC_ISA_DISPATCH void bwd_task_##SUFFIX(const T* a, const T* h, const T* h0, const T* g, T* da, T* db,     \
                                            T* dh0, int64_t T_, int64_t D, int64_t width, bool r) {           \
    bwd_task(a, h, h0, g, da, db, dh0, T_, D, width, r);                                                      \
  }                                                                                                           \
  void dispatch_task(const T* a, const T* b, const T* h0, T* h, int64_t T_, int64_t D, int64_t w, bool r) {   \
    fwd_task_##SUFFIX(a, b, h0, h, T_, D, w, r);                                                              \
  }                                                                                                           \
  void dispatch_task(const T* a, const T* h, const T* h0, const T* g, T* da, T* db, T* dh0, int64_t T_,       \
                     int64_t D, int64_t w, bool r) {                                                          \
    bwd_task_##SUFFIX(a, h, h0, g, da, db, dh0, T_, D, w, r);                                                 \
  }
MMREC_SCAN_TASKS(float, f32)
MMREC_SCAN_TASKS(double, f64)
MMREC_SCAN_TASKS(bf16_t, bf16)
#undef MMREC_SCAN_TASKS

}  // namespace

template <class T>
void scan_fwd(const T* a, const T* b, const T* h0, T* h, int64_t B, int64_t T_, int64_t D, bool reverse) {
  const Tiling tl = tile(B, D);
#pragma omp parallel for schedule(static) num_threads(num_threads_for(B * T_ * D, tl.tasks))
  for (int64_t task = 0; task < tl.tasks; ++task) {
    const int64_t bi = task / tl.slices_per_batch, d0 = (task % tl.slices_per_batch) * tl.slice;
    const int64_t width = std::min(tl.slice, D - d0), base = bi * T_ * D + d0;
    dispatch_task(a + base, b + base, h0 ? h0 + bi * D + d0 : nullptr, h + base, T_, D, width, reverse);
  }
}

template <class T>
void scan_bwd(const T* g, const T* a, const T* h, const T* h0, T* da, T* db, T* dh0, int64_t B, int64_t T_,
              int64_t D, bool reverse) {
  const Tiling tl = tile(B, D);
#pragma omp parallel for schedule(static) num_threads(num_threads_for(B * T_ * D, tl.tasks))
  for (int64_t task = 0; task < tl.tasks; ++task) {
    const int64_t bi = task / tl.slices_per_batch, d0 = (task % tl.slices_per_batch) * tl.slice;
    const int64_t width = std::min(tl.slice, D - d0), base = bi * T_ * D + d0;
    dispatch_task(a + base, h + base, h0 ? h0 + bi * D + d0 : nullptr, g + base, da + base, db + base,
                  dh0 + bi * D + d0, T_, D, width, reverse);
  }
}

template void scan_fwd<float>(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, bool);
template void scan_fwd<double>(const double*, const double*, const double*, double*, int64_t, int64_t, int64_t,
                               bool);
template void scan_fwd<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, bf16_t*, int64_t, int64_t, int64_t,
                               bool);
template void scan_bwd<float>(const float*, const float*, const float*, const float*, float*, float*, float*, int64_t,
                              int64_t, int64_t, bool);
template void scan_bwd<double>(const double*, const double*, const double*, const double*, double*, double*,
                               double*, int64_t, int64_t, int64_t, bool);
template void scan_bwd<bf16_t>(const bf16_t*, const bf16_t*, const bf16_t*, const bf16_t*, bf16_t*, bf16_t*, bf16_t*,
                               int64_t, int64_t, int64_t, bool);

}  // namespace mmrec::cpu
