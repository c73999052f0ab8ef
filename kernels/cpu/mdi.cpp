// mdi: g_t^n = clamp(sigmoid(base^n) * sigmoid(mod_t^n), eps, 1-eps); m_t^n = g_t^n m_{t-1}^n + (1 - g_t^n) v_t.
// backward: delta_t = G_t + g_{t+1} delta_{t+1}; dg_t = delta_t (m_{t-1} - v_t), masked where the clamp cuts;
//           dv_t = sum_n delta_t^n (1 - g_t^n); dm0 = g_0 delta_0; dbase, dmod through the two sigmoids.
// Saved for backward: only m itself (N*D elements per token); g and (1 - g) v never touch memory.
// Work per step and element: forward 1 mul, clamp, 1 sub, 1 fma; backward ~10 flops. One task = (batch, slice
// of D) streams its rows through time with the N running states in L1: the forward reads v and writes m
// once (B*T*D + B*T*N*D elements), the backward reads grad, m, v and writes dv once.
// The decay is formed as the product sigmoid(base) * sigmoid(mod) of factors computed once per (n, d) and
// once per (t, n): it equals exp(log sigmoid(base) + log sigmoid(mod)) up to rounding, and since the clamp
// at eps > 0 cuts below any underflow, log space would only add an exp per element. Factors below eps / 2
// are raised to eps / 2 (the clamp still gives eps, and the clamp mask still zeroes the gradient), which
// keeps denormals out of the inner loop.
// Reductions (dmod over D, dbase over B and T) go through per-task partials summed in a fixed order.
#include "cpu/mdi.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel.h"

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

template <class A>
MMREC_INLINE A sigmoid(A x) {
  if (x >= A(0)) return A(1) / (A(1) + std::exp(-x));
  A e = std::exp(x);
  return e / (A(1) + e);
}

// torch.clamp: NaN passes through.
template <class A>
MMREC_INLINE A clamp(A x, A lo, A hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

template <class T>
MMREC_INLINE void fwd(const T* v, const T* mod, const T* base, const T* m0, T* m, int64_t B, int64_t T_, int64_t N,
                      int64_t D, double eps) {
  using A = acc_t<T>;
  const Tiling tl = tile(B, N, D);
  const A lo = A(eps), hi = A(1) - A(eps), floor = A(eps) / A(2);
#pragma omp parallel num_threads(num_threads_for(B * T_ * N * D, tl.tasks)) firstprivate(lo, hi, floor)
  {
    std::vector<A> state(N * tl.slice), sb(N * tl.slice);  // [N, slice]
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tl.tasks; ++task) {
      const int64_t bi = task / tl.slices_per_batch, d0 = (task % tl.slices_per_batch) * tl.slice;
      const int64_t w = std::min(tl.slice, D - d0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < w; ++i) {
          sb[n * w + i] = std::max(sigmoid(A(to_float(base[n * D + d0 + i]))), floor);
          state[n * w + i] = m0 ? A(to_float(m0[(bi * N + n) * D + d0 + i])) : A(0);
        }
      for (int64_t t = 0; t < T_; ++t) {
        const int64_t row = bi * T_ + t;
        const T* vt = v + row * D + d0;
        T* mt = m + row * N * D + d0;
        for (int64_t n = 0; n < N; ++n) {
          const A sm = std::max(sigmoid(A(to_float(mod[row * N + n]))), floor);
          A* st = state.data() + n * w;
          const A* sbn = sb.data() + n * w;
          T* mtn = mt + n * D;
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
  }
}

template <class T>
MMREC_INLINE void bwd(const T* v, const T* mod, const T* base, const T* m0, const T* m, const T* grad, T* dv,
                      T* dmod, T* dbase, T* dm0, int64_t B, int64_t T_, int64_t N, int64_t D, double eps) {
  using A = acc_t<T>;
  const Tiling tl = tile(B, N, D);
  const int64_t per = tl.slices_per_batch;
  const A lo = A(eps), hi = A(1) - A(eps), floor = A(eps) / A(2);
  std::vector<A> dmod_part(B * per * T_ * N);  // [B, slices, T, N]: sum over the slice of dx * sigmoid(base)
  std::vector<A> dbase_part(B * N * D);        // [B, N, D]: sum over T
  const T zero{};
  const int threads = num_threads_for(B * T_ * N * D, tl.tasks);
#pragma omp parallel num_threads(threads) firstprivate(lo, hi, floor)
  {
    std::vector<A> carry(N * tl.slice), sb(N * tl.slice), sb_neg(N * tl.slice), dbase_acc(N * tl.slice);
    std::vector<A> dv_acc(tl.slice);
    std::vector<T> zeros(N * tl.slice, zero);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tl.tasks; ++task) {
      const int64_t bi = task / per, slice_idx = task % per, d0 = slice_idx * tl.slice;
      const int64_t w = std::min(tl.slice, D - d0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < w; ++i) {
          const A b_ = A(to_float(base[n * D + d0 + i]));
          sb[n * w + i] = std::max(sigmoid(b_), floor);
          sb_neg[n * w + i] = sigmoid(-b_);  // 1 - sigmoid(base) without cancellation
          carry[n * w + i] = A(0);
          dbase_acc[n * w + i] = A(0);
        }
      A* dmod_out = dmod_part.data() + (bi * per + slice_idx) * T_ * N;
      for (int64_t t = T_ - 1; t >= 0; --t) {
        const int64_t row = bi * T_ + t;
        const T* vt = v + row * D + d0;
        const T* gt = grad + row * N * D + d0;
        // m_{t-1}: the previous row of m, else m0, else zeros; rows of n are `prev_stride` apart.
        const T* prev = t > 0 ? m + (row - 1) * N * D + d0 : m0 ? m0 + bi * N * D + d0 : zeros.data();
        const int64_t prev_stride = (t > 0 || m0) ? D : w;
        for (int64_t i = 0; i < w; ++i) dv_acc[i] = A(0);
        for (int64_t n = 0; n < N; ++n) {
          const A sm = std::max(sigmoid(A(to_float(mod[row * N + n]))), floor);
          A* cn = carry.data() + n * w;
          A* dbn = dbase_acc.data() + n * w;
          const A* sbn = sb.data() + n * w;
          const A* sbneg = sb_neg.data() + n * w;
          const T* gtn = gt + n * D;
          const T* pn = prev + n * prev_stride;
          A dsum = A(0);
#pragma omp simd reduction(+ : dsum)
          for (int64_t i = 0; i < w; ++i) {
            const A delta = A(to_float(gtn[i])) + cn[i];
            const A x = sbn[i] * sm;
            const A g = clamp(x, lo, hi);
            const A dx = (x >= lo && x <= hi) ? delta * (A(to_float(pn[i])) - A(to_float(vt[i]))) : A(0);
            dbn[i] += dx * x * sbneg[i];
            dsum += dx * sbn[i];
            dv_acc[i] += delta * (A(1) - g);
            cn[i] = g * delta;
          }
          dmod_out[t * N + n] = dsum;
        }
        T* dvt = dv + row * D + d0;
        for (int64_t i = 0; i < w; ++i) dvt[i] = from_acc<T>(dv_acc[i]);
      }
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < w; ++i) {
          dm0[(bi * N + n) * D + d0 + i] = from_acc<T>(carry[n * w + i]);
          dbase_part[(bi * N + n) * D + d0 + i] = dbase_acc[n * w + i];
        }
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

// One ISA-dispatched entry point per storage type (target_clones does not apply to templates).
#define MMREC_MDI_ENTRY(T, suffix)                                                                                \
  MMREC_ISA_DISPATCH void fwd_##suffix(const T* v, const T* mod, const T* base, const T* m0, T* m, int64_t B,     \
                                       int64_t T_, int64_t N, int64_t D, double eps) {                           \
    fwd(v, mod, base, m0, m, B, T_, N, D, eps);                                                                   \
  }                                                                                                               \
  MMREC_ISA_DISPATCH void bwd_##suffix(const T* v, const T* mod, const T* base, const T* m0, const T* m,          \
                                       const T* grad, T* dv, T* dmod, T* dbase, T* dm0, int64_t B, int64_t T_,    \
                                       int64_t N, int64_t D, double eps) {                                        \
    bwd(v, mod, base, m0, m, grad, dv, dmod, dbase, dm0, B, T_, N, D, eps);                                       \
  }
MMREC_MDI_ENTRY(float, f32)
MMREC_MDI_ENTRY(double, f64)
MMREC_MDI_ENTRY(bf16_t, bf16)
#undef MMREC_MDI_ENTRY

}  // namespace

#define MMREC_MDI_SPECIALIZE(T, suffix)                                                                           \
  template <>                                                                                                     \
  void mdi_fwd<T>(const T* v, const T* mod, const T* base, const T* m0, T* m, int64_t B, int64_t T_, int64_t N,   \
                  int64_t D, double eps) {                                                                        \
    fwd_##suffix(v, mod, base, m0, m, B, T_, N, D, eps);                                                          \
  }                                                                                                               \
  template <>                                                                                                     \
  void mdi_bwd<T>(const T* v, const T* mod, const T* base, const T* m0, const T* m, const T* grad, T* dv,         \
                  T* dmod, T* dbase, T* dm0, int64_t B, int64_t T_, int64_t N, int64_t D, double eps) {           \
    bwd_##suffix(v, mod, base, m0, m, grad, dv, dmod, dbase, dm0, B, T_, N, D, eps);                              \
  }
MMREC_MDI_SPECIALIZE(float, f32)
MMREC_MDI_SPECIALIZE(double, f64)
MMREC_MDI_SPECIALIZE(bf16_t, bf16)
#undef MMREC_MDI_SPECIALIZE

}  // namespace mmrec::cpu
