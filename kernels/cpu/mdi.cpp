// mdi: g_t^n = clamp(sigmoid(base^n) * sigmoid(mod_t^n), eps, 1-eps); m_t^n = g_t^n m_{t-1}^n + (1 - g_t^n) v_t.
// backward: delta_t = G_t + g_{t+1} delta_{t+1}; dg_t = delta_t (m_{t-1} - v_t), masked where the clamp cuts;
//           dv_t = sum_n delta_t^n (1 - g_t^n); dm0 = g_0 delta_0; dbase, dmod through the two sigmoids.
// Saved for backward: only m itself, N*D elements per token (8 KB at N = 4, D = 512, float32), which the op
// returns anyway; g and (1 - g) v never touch memory.
// Work per step and element: forward 1 mul, clamp, 1 sub, 1 fma; backward ~10 flops. One task = (batch, slice
// of D) streams its rows through time with the N running states in L1: the forward reads v and writes m
// once (B*T*D + B*T*N*D elements), the backward reads grad, m, v and writes dv once.
// The decay is formed as the product sigmoid(base) * sigmoid(mod) of factors computed once per (n, d) and
// once per (t, n): it equals exp(log sigmoid(base) + log sigmoid(mod)) up to rounding, and since the clamp
// at eps > 0 cuts below any underflow, log space would only add an exp per element. Factors below eps / 2
// are raised to eps / 2 (the clamp still gives eps, and the clamp mask still zeroes the gradient), which
// keeps denormals out of the inner loop.
// Reductions (dmod over D, dbase over B and T) go through per-task partials summed in a fixed order, so the
// tasks are scheduled dynamically (robust to a core shared with other work) with bit-identical results.
// m (and dv) of 16 MB and more leave through non-temporal stores (stream.h).
#include "cpu/mdi.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scalar.h"
#include "cpu/stream.h"

namespace mmrec::cpu {
namespace {

constexpr int64_t kMaxState = 2048;  // running state of one task (N x slice), 8 KB at float32

struct Tiling {
  int64_t slice, slices_per_batch, tasks;
};

// The widest slice (a multiple of 16 elements) whose N states fit kMaxState, narrowed until every thread
// has a task.
inline Tiling tile(int64_t B, int64_t N, int64_t D) {
  int threads = omp_get_max_threads();
  int64_t slice = std::min<int64_t>(D, std::max<int64_t>(16, kMaxState / N / 16 * 16));
  while (B * ((D + slice - 1) / slice) < threads && slice > 16) slice = std::max<int64_t>(16, (slice / 2 + 15) / 16 * 16);
  int64_t per = (D + slice - 1) / slice;
  return {slice, per, B * per};
}

template <class T>
struct FwdArgs {
  using A = acc_t<T>;
  const T *v, *mod, *base, *m0;
  T* m;
  int64_t T_, N, D;
  A lo, hi, floor;
  bool stream;  // m is written with non-temporal stores
};

template <class T>
struct BwdArgs {
  using A = acc_t<T>;
  const T *v, *mod, *base, *m0, *m, *grad;
  T *dv, *dm0;
  int64_t T_, N, D, slices_per_batch;
  A lo, hi, floor;
  A* dmod_part;   // [B, slices, T, N]: sum over the slice of dx * sigmoid(base)
  A* dbase_part;  // [B, N, D]: sum over T
  const T* zeros;  // [N, slice]: m_{-1} when m0 is None
  bool stream;     // dv is written with non-temporal stores
};

// Batch bi, columns [d0, d0 + w); ws: (2 * N + 1) * w accumulators.
template <class T>
MMREC_INLINE void fwd_task(const FwdArgs<T>& p, int64_t bi, int64_t d0, int64_t w, acc_t<T>* ws) {
  using A = acc_t<T>;
  const int64_t N = p.N, D = p.D;
  const A lo = p.lo, hi = p.hi, floor = p.floor;
  A* state = ws;                                       // [N, w]
  A* sb = ws + N * w;                                  // [N, w]
  T* tmp = reinterpret_cast<T*>(ws + 2 * N * w);       // [w]: a row in storage type, before streaming
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < w; ++i) {
      sb[n * w + i] = std::max(sigmoid(A(to_float(p.base[n * D + d0 + i]))), floor);
      state[n * w + i] = p.m0 ? A(to_float(p.m0[(bi * N + n) * D + d0 + i])) : A(0);
    }
  for (int64_t t = 0; t < p.T_; ++t) {
    const int64_t row = bi * p.T_ + t;
    const T* vt = p.v + row * D + d0;
    T* mt = p.m + row * N * D + d0;
    for (int64_t n = 0; n < N; ++n) {
      const A sm = std::max(sigmoid(A(to_float(p.mod[row * N + n]))), floor);
      A* st = state + n * w;
      const A* sbn = sb + n * w;
      T* mtn = mt + n * D;
      if (p.stream) {
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) {
          const A g = clamp(sbn[i] * sm, lo, hi);
          const A vi = A(to_float(vt[i]));
          st[i] = g * (st[i] - vi) + vi;
        }
        stream_row(mtn, st, w, tmp);
      } else {
#pragma omp simd
        for (int64_t i = 0; i < w; ++i) {
          const A g = clamp(sbn[i] * sm, lo, hi);
          const A vi = A(to_float(vt[i]));
          const A s = g * (st[i] - vi) + vi;
          st[i] = s;
          mtn[i] = from_acc<T>(s);
        }
      }
    }
  }
  if (p.stream) stream_fence();
}

// Batch bi, slice slice_idx = columns [d0, d0 + w); ws: 4 * N * w + 2 * w accumulators.
template <class T>
MMREC_INLINE void bwd_task(const BwdArgs<T>& p, int64_t bi, int64_t slice_idx, int64_t d0, int64_t w, acc_t<T>* ws) {
  using A = acc_t<T>;
  const int64_t T_ = p.T_, N = p.N, D = p.D;
  const A lo = p.lo, hi = p.hi, floor = p.floor;
  A* carry = ws;                  // [N, w]: g_{t+1} delta_{t+1}
  A* sb = ws + N * w;             // [N, w]: sigmoid(base)
  A* sb_neg = ws + 2 * N * w;     // [N, w]: 1 - sigmoid(base), without cancellation
  A* dbase_acc = ws + 3 * N * w;  // [N, w]
  A* dv_acc = ws + 4 * N * w;     // [w]
  T* tmp = reinterpret_cast<T*>(ws + 4 * N * w + w);  // [w]: dv_t in storage type, before streaming
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < w; ++i) {
      const A b_ = A(to_float(p.base[n * D + d0 + i]));
      sb[n * w + i] = std::max(sigmoid(b_), floor);
      sb_neg[n * w + i] = sigmoid(-b_);
      carry[n * w + i] = A(0);
      dbase_acc[n * w + i] = A(0);
    }
  A* dmod_out = p.dmod_part + (bi * p.slices_per_batch + slice_idx) * T_ * N;
  for (int64_t t = T_ - 1; t >= 0; --t) {
    const int64_t row = bi * T_ + t;
    const T* vt = p.v + row * D + d0;
    const T* gt = p.grad + row * N * D + d0;
    // m_{t-1}: the previous row of m, else m0, else zeros; its rows of n are `prev_stride` apart.
    const T* prev = t > 0 ? p.m + (row - 1) * N * D + d0 : p.m0 ? p.m0 + bi * N * D + d0 : p.zeros;
    const int64_t prev_stride = (t > 0 || p.m0) ? D : w;
    for (int64_t i = 0; i < w; ++i) dv_acc[i] = A(0);
    for (int64_t n = 0; n < N; ++n) {
      const A sm = std::max(sigmoid(A(to_float(p.mod[row * N + n]))), floor);
      A* cn = carry + n * w;
      A* dbn = dbase_acc + n * w;
      const A* sbn = sb + n * w;
      const A* sbneg = sb_neg + n * w;
      const T* gtn = gt + n * D;
      const T* pn = prev + n * prev_stride;
      A dsum = A(0);
#pragma omp simd reduction(+ : dsum)
      for (int64_t i = 0; i < w; ++i) {
        const A delta = A(to_float(gtn[i])) + cn[i];
        const A x = sbn[i] * sm;
        const A g = clamp(x, lo, hi);
        const A diff = A(to_float(pn[i])) - A(to_float(vt[i]));  // loaded unconditionally: no masked loads
        const A dx = (x >= lo && x <= hi) ? delta * diff : A(0);
        dbn[i] += dx * x * sbneg[i];
        dsum += dx * sbn[i];
        dv_acc[i] += delta * (A(1) - g);
        cn[i] = g * delta;
      }
      dmod_out[t * N + n] = dsum;
    }
    T* dvt = p.dv + row * D + d0;
    if (p.stream) {
      stream_row(dvt, dv_acc, w, tmp);
    } else {
      for (int64_t i = 0; i < w; ++i) dvt[i] = from_acc<T>(dv_acc[i]);
    }
  }
  if (p.stream) stream_fence();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < w; ++i) {
      p.dm0[(bi * N + n) * D + d0 + i] = from_acc<T>(carry[n * w + i]);
      p.dbase_part[(bi * N + n) * D + d0 + i] = dbase_acc[n * w + i];
    }
}

// ISA-dispatched task bodies, one per storage type (the body of an OpenMP region is outlined at the
// baseline ISA, so dispatch happens per task inside it; see parallel.h).
#define MMREC_MDI_TASKS(T, SUFFIX)                                                                            \
  MMREC_ISA_DISPATCH void fwd_task_##SUFFIX(const FwdArgs<T>& p, int64_t bi, int64_t d0, int64_t w,           \
                                            acc_t<T>* ws) {                                                   \
    fwd_task(p, bi, d0, w, ws);                                                                               \
  }                                                                                                           \
  MMREC_ISA_DISPATCH void bwd_task_##SUFFIX(const BwdArgs<T>& p, int64_t bi, int64_t k, int64_t d0, int64_t w, \
                                            acc_t<T>* ws) {                                                   \
    bwd_task(p, bi, k, d0, w, ws);                                                                            \
  }                                                                                                           \
  void dispatch_task(const FwdArgs<T>& p, int64_t bi, int64_t d0, int64_t w, acc_t<T>* ws) {                  \
    fwd_task_##SUFFIX(p, bi, d0, w, ws);                                                                      \
  }                                                                                                           \
  void dispatch_task(const BwdArgs<T>& p, int64_t bi, int64_t k, int64_t d0, int64_t w, acc_t<T>* ws) {       \
    bwd_task_##SUFFIX(p, bi, k, d0, w, ws);                                                                   \
  }
MMREC_MDI_TASKS(float, f32)
MMREC_MDI_TASKS(double, f64)
MMREC_MDI_TASKS(bf16_t, bf16)
#undef MMREC_MDI_TASKS

}  // namespace

template <class T>
void mdi_fwd(const T* v, const T* mod, const T* base, const T* m0, T* m, int64_t B, int64_t T_, int64_t N, int64_t D,
             double eps) {
  using A = acc_t<T>;
  const Tiling tl = tile(B, N, D);
  const bool stream = B * T_ * N * D * int64_t(sizeof(T)) >= kStreamMinBytes;
  const FwdArgs<T> p{v, mod, base, m0, m, T_, N, D, A(eps), A(1) - A(eps), A(eps) / A(2), stream};
#pragma omp parallel num_threads(num_threads_for(B * T_ * N * D, tl.tasks))
  {
    std::vector<A> ws((2 * N + 1) * tl.slice);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tl.tasks; ++task) {
      const int64_t bi = task / tl.slices_per_batch, d0 = (task % tl.slices_per_batch) * tl.slice;
      dispatch_task(p, bi, d0, std::min(tl.slice, D - d0), ws.data());
    }
  }
}

template <class T>
void mdi_bwd(const T* grad, const T* v, const T* mod, const T* base, const T* m0, const T* m, T* dv, T* dmod,
             T* dbase, T* dm0, int64_t B, int64_t T_, int64_t N, int64_t D, double eps) {
  using A = acc_t<T>;
  const Tiling tl = tile(B, N, D);
  const int64_t per = tl.slices_per_batch;
  std::vector<A> dmod_part(B * per * T_ * N), dbase_part(B * N * D);
  const std::vector<T> zeros(N * tl.slice, T{});
  const BwdArgs<T> p{v,      mod,  base, m0,  m,   grad,          dv,           dm0,
                     T_,     N,    D,    per, A(eps), A(1) - A(eps), A(eps) / A(2), dmod_part.data(),
                     dbase_part.data(), zeros.data(), B * T_ * D * int64_t(sizeof(T)) >= kStreamMinBytes};
#pragma omp parallel num_threads(num_threads_for(B * T_ * N * D, tl.tasks))
  {
    std::vector<A> ws(4 * N * tl.slice + 2 * tl.slice);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tl.tasks; ++task) {
      const int64_t bi = task / per, k = task % per, d0 = k * tl.slice;
      dispatch_task(p, bi, k, d0, std::min(tl.slice, D - d0), ws.data());
    }
    // dmod = sigmoid'(mod) * (sum over slices); dbase = sum over batches; both in a fixed order.
#pragma omp for schedule(static)
    for (int64_t row = 0; row < B * T_; ++row) {
      const int64_t bi = row / T_, t = row % T_;
      for (int64_t n = 0; n < N; ++n) {
        A s = A(0);
        for (int64_t k = 0; k < per; ++k) s += dmod_part[((bi * per + k) * T_ + t) * N + n];
        const A x = A(to_float(mod[row * N + n]));
        dmod[row * N + n] = from_acc<T>(s * sigmoid(x) * sigmoid(-x));
      }
    }
#pragma omp for schedule(static)
    for (int64_t j = 0; j < N * D; ++j) {
      A s = A(0);
      for (int64_t bi = 0; bi < B; ++bi) s += dbase_part[bi * N * D + j];
      dbase[j] = from_acc<T>(s);
    }
  }
}

#define MMREC_MDI_INSTANTIATE(T)                                                                              \
  template void mdi_fwd<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,     \
                           double);                                                                           \
  template void mdi_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, T*, int64_t, \
                           int64_t, int64_t, int64_t, double);
MMREC_MDI_INSTANTIATE(float)
MMREC_MDI_INSTANTIATE(double)
MMREC_MDI_INSTANTIATE(bf16_t)
#undef MMREC_MDI_INSTANTIATE

}  // namespace mmrec::cpu
