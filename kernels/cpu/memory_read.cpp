// memory_read: m = mdi(v, mod, base, m0) kept on chip; per read head, n_i = x_i rsqrt(mean(x_i^2) + ne) over the items
//   {h_t, m_t^1..N, Ms[c(t), 1..S]}, w = softmax(<q_t, n_i> / sqrt(dh)), r_t = sum_i w_i n_i; m_last = m_{T-1}.
// backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), dn_i = w_i G + ds_i q / sqrt(dh),
//   dx_i = rho_i (dn_i - n_i mean(dn_i n_i)); the bank items' dx feed mdi's reverse-time backward (delta_t = dx_t + g_{t+1} delta_{t+1}).
// One task = (batch row, read head): the head's dh channels of the N banks stay in L1 as the task walks time, so
// the [B, T, N, D] bank tensor never exists. The slot items change once per chunk: they are normalised once per
// chunk. The backward takes a checkpoint of the banks every K ~ sqrt(T) steps in a forward sweep, then walks the
// blocks backwards, recomputing each block's K bank states from its checkpoint (scratch (T / K + K) N dh per
// task). dMs of a chunk is summed over its tokens in the task and written once; dmod (a sum over heads) and
// dbase (a sum over batch rows) go through per-task partials reduced in a fixed order: bit-identical results
// under dynamic scheduling.
#include "cpu/memory_read.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/parallel.h"
#include "cpu/scalar.h"

namespace mmrec::cpu {
namespace {

template <class T>
struct Args {
  using A = acc_t<T>;
  const T *q, *h, *v, *mod, *base, *Ms, *m0, *grad_r, *grad_m;
  T *r, *m_last, *dq, *dh_out, *dv, *dMs, *dm0;
  ReadDims d;
  int64_t dh_, I, K, blocks;  // head width, items 1 + N + S, checkpoint interval, ceil(T / K)
  A lo, hi, floor, ne, scale;
  A* dmod_part;   // [B, H, T, N]
  A* dbase_part;  // [B, N, D]
};

// out = x rsqrt(mean(x^2) + ne) over dh elements; returns the rsqrt.
template <class A, class X>
MMREC_INLINE A normalize(const X* x, int64_t dh, A ne, A* out) {
  A ss = A(0);
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < dh; ++i) {
    const A xi = A(to_float(x[i]));
    ss += xi * xi;
  }
  const A rho = A(1) / std::sqrt(ss / A(dh) + ne);
#pragma omp simd
  for (int64_t i = 0; i < dh; ++i) out[i] = A(to_float(x[i])) * rho;
  return rho;
}

template <class A>
MMREC_INLINE A dot(const A* x, const A* y, int64_t n) {
  A s = A(0);
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

// w = softmax_i(<qa, nrm_i> scale) over the I rows of nrm [I, dh].
template <class A>
MMREC_INLINE void softmax_weights(const A* qa, const A* nrm, int64_t I, int64_t dh, A scale, A* w) {
  A mx = -std::numeric_limits<A>::infinity();
  for (int64_t i = 0; i < I; ++i) {
    w[i] = dot(qa, nrm + i * dh, dh) * scale;
    mx = std::max(mx, w[i]);
  }
  A sum = A(0);
  for (int64_t i = 0; i < I; ++i) {
    w[i] = std::exp(w[i] - mx);
    sum += w[i];
  }
  const A inv = A(1) / sum;
  for (int64_t i = 0; i < I; ++i) w[i] *= inv;
}

// One step of the banks of head channels [d0, d0 + dh): st = g (st - v_t) + v_t, st: [N, dh].
template <class T>
MMREC_INLINE void bank_step(const Args<T>& p, const acc_t<T>* sb, int64_t row, int64_t d0, acc_t<T>* st) {
  using A = acc_t<T>;
  const int64_t N = p.d.N, dh = p.dh_;
  const T* vt = p.v + row * p.d.D + d0;
  for (int64_t n = 0; n < N; ++n) {
    const A sm = std::max(sigmoid(A(to_float(p.mod[row * N + n]))), p.floor);
    A* s = st + n * dh;
    const A* sbn = sb + n * dh;
#pragma omp simd
    for (int64_t i = 0; i < dh; ++i) {
      const A g = clamp(sbn[i] * sm, p.lo, p.hi);
      const A vi = A(to_float(vt[i]));
      s[i] = g * (s[i] - vi) + vi;
    }
  }
}

// Normalised slot items of chunk c into nrm rows 1 + N .. N + S (and their rsqrt into rho when given).
template <class T>
MMREC_INLINE void load_slots(const Args<T>& p, int64_t bi, int64_t c, int64_t d0, acc_t<T>* nrm, acc_t<T>* rho) {
  const int64_t S = p.d.S, N = p.d.N, dh = p.dh_;
  for (int64_t j = 0; j < S; ++j) {
    const auto x = normalize(p.Ms + ((bi * p.d.L + c) * S + j) * p.d.D + d0, dh, p.ne, nrm + (1 + N + j) * dh);
    if (rho) rho[1 + N + j] = x;
  }
}

// ws: (2 N + I + 2) dh + I accumulators.
template <class T>
MMREC_INLINE void fwd_task(const Args<T>& p, int64_t bi, int64_t k, acc_t<T>* ws) {
  using A = acc_t<T>;
  const int64_t T_ = p.d.T, N = p.d.N, D = p.d.D, dh = p.dh_, I = p.I, d0 = k * dh;
  A* sb = ws;              // [N, dh] sigmoid(base), floored
  A* st = sb + N * dh;     // [N, dh] banks
  A* nrm = st + N * dh;    // [I, dh] normalised items
  A* qa = nrm + I * dh;    // [dh]
  A* racc = qa + dh;       // [dh]
  A* w = racc + dh;        // [I]
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < dh; ++i) {
      sb[n * dh + i] = std::max(sigmoid(A(to_float(p.base[n * D + d0 + i]))), p.floor);
      st[n * dh + i] = p.m0 ? A(to_float(p.m0[(bi * N + n) * D + d0 + i])) : A(0);
    }
  int64_t cur = -1;
  for (int64_t t = 0; t < T_; ++t) {
    const int64_t row = bi * T_ + t, c = (p.d.k0 + t) / p.d.C;
    bank_step(p, sb, row, d0, st);
    if (c != cur) load_slots(p, bi, c, d0, nrm, static_cast<A*>(nullptr)), cur = c;
    normalize(p.h + row * D + d0, dh, p.ne, nrm);
    for (int64_t n = 0; n < N; ++n) normalize(st + n * dh, dh, p.ne, nrm + (1 + n) * dh);
    for (int64_t i = 0; i < dh; ++i) qa[i] = A(to_float(p.q[row * D + d0 + i]));
    softmax_weights(qa, nrm, I, dh, p.scale, w);
    for (int64_t i = 0; i < dh; ++i) racc[i] = A(0);
    for (int64_t it = 0; it < I; ++it) {
      const A wi = w[it];
      const A* ni = nrm + it * dh;
#pragma omp simd
      for (int64_t i = 0; i < dh; ++i) racc[i] += wi * ni[i];
    }
    T* rt = p.r + row * D + d0;
    for (int64_t i = 0; i < dh; ++i) rt[i] = from_acc<T>(racc[i]);
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < dh; ++i) p.m_last[(bi * N + n) * D + d0 + i] = from_acc<T>(st[n * dh + i]);
}

inline int64_t bwd_workspace(int64_t N, int64_t S, int64_t dh, int64_t I, int64_t K, int64_t blocks) {
  return (blocks + K + 5) * N * dh + (I + S + 5) * dh + 4 * I;
}

template <class T>
MMREC_INLINE void bwd_task(const Args<T>& p, int64_t bi, int64_t k, acc_t<T>* ws) {
  using A = acc_t<T>;
  const int64_t T_ = p.d.T, N = p.d.N, D = p.d.D, S = p.d.S, dh = p.dh_, I = p.I, K = p.K, d0 = k * dh;
  const int64_t Nd = N * dh;
  A* sb = ws;                    // [N, dh] sigmoid(base), floored
  A* sbneg = sb + Nd;            // [N, dh] 1 - sigmoid(base), without cancellation
  A* carry = sbneg + Nd;         // [N, dh] g_{t+1} delta_{t+1}
  A* dbase_acc = carry + Nd;     // [N, dh]
  A* dxm = dbase_acc + Nd;       // [N, dh] dL/dm_t from the read
  A* ckpt = dxm + Nd;            // [blocks, N, dh] banks before each block's first step
  A* buf = ckpt + p.blocks * Nd; // [K, N, dh] banks of the block being walked
  A* nrm = buf + K * Nd;         // [I, dh]
  A* dMs_acc = nrm + I * dh;     // [S, dh] dMs of the current chunk
  A* qa = dMs_acc + S * dh;      // [dh]
  A* G = qa + dh;                // [dh]
  A* dq = G + dh;                // [dh]
  A* dn = dq + dh;               // [dh]
  A* dv_acc = dn + dh;           // [dh]
  A* rho = dv_acc + dh;          // [I]
  A* w = rho + I;                // [I]
  A* a = w + I;                  // [I]
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < dh; ++i) {
      const A b_ = A(to_float(p.base[n * D + d0 + i]));
      sb[n * dh + i] = std::max(sigmoid(b_), p.floor);
      sbneg[n * dh + i] = sigmoid(-b_);
      ckpt[n * dh + i] = p.m0 ? A(to_float(p.m0[(bi * N + n) * D + d0 + i])) : A(0);
      carry[n * dh + i] = A(to_float(p.grad_m[(bi * N + n) * D + d0 + i]));
      dbase_acc[n * dh + i] = A(0);
    }
  std::copy(ckpt, ckpt + Nd, buf);  // forward sweep for the checkpoints, buf as the running state
  for (int64_t t = 0; t < (p.blocks - 1) * K; ++t) {
    bank_step(p, sb, bi * T_ + t, d0, buf);
    if ((t + 1) % K == 0) std::copy(buf, buf + Nd, ckpt + (t + 1) / K * Nd);
  }
  A* dmod_out = p.dmod_part + (bi * p.d.H + k) * T_ * N;
  int64_t cur = -1;
  for (int64_t blk = p.blocks - 1; blk >= 0; --blk) {
    const int64_t t0 = blk * K, t1 = std::min(T_, t0 + K);
    const A* prev = ckpt + blk * Nd;
    for (int64_t t = t0; t < t1; ++t) {
      A* st = buf + (t - t0) * Nd;
      std::copy(prev, prev + Nd, st);
      bank_step(p, sb, bi * T_ + t, d0, st);
      prev = st;
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t row = bi * T_ + t, c = (p.d.k0 + t) / p.d.C;
      const A* mt = buf + (t - t0) * Nd;
      const A* mprev = t > t0 ? mt - Nd : ckpt + blk * Nd;
      if (c != cur) {
        if (cur >= 0)
          for (int64_t j = 0; j < S * dh; ++j)
            p.dMs[((bi * p.d.L + cur) * S + j / dh) * D + d0 + j % dh] = from_acc<T>(dMs_acc[j]);
        std::fill(dMs_acc, dMs_acc + S * dh, A(0));
        load_slots(p, bi, c, d0, nrm, rho);
        cur = c;
      }
      rho[0] = normalize(p.h + row * D + d0, dh, p.ne, nrm);
      for (int64_t n = 0; n < N; ++n) rho[1 + n] = normalize(mt + n * dh, dh, p.ne, nrm + (1 + n) * dh);
      for (int64_t i = 0; i < dh; ++i) {
        qa[i] = A(to_float(p.q[row * D + d0 + i]));
        G[i] = A(to_float(p.grad_r[row * D + d0 + i]));
        dq[i] = A(0);
      }
      softmax_weights(qa, nrm, I, dh, p.scale, w);
      A abar = A(0);
      for (int64_t it = 0; it < I; ++it) {
        a[it] = dot(G, nrm + it * dh, dh);
        abar += w[it] * a[it];
      }
      for (int64_t it = 0; it < I; ++it) {
        const A* ni = nrm + it * dh;
        const A ds = w[it] * (a[it] - abar), wi = w[it], dsq = ds * p.scale;
#pragma omp simd
        for (int64_t i = 0; i < dh; ++i) {
          dq[i] += dsq * ni[i];
          dn[i] = wi * G[i] + dsq * qa[i];
        }
        const A mean = dot(dn, ni, dh) / A(dh), r_ = rho[it];
        A* out = it == 0 ? dn : it <= N ? dxm + (it - 1) * dh : nullptr;
        if (out) {
#pragma omp simd
          for (int64_t i = 0; i < dh; ++i) out[i] = r_ * (dn[i] - ni[i] * mean);
        } else {
          A* acc = dMs_acc + (it - 1 - N) * dh;
#pragma omp simd
          for (int64_t i = 0; i < dh; ++i) acc[i] += r_ * (dn[i] - ni[i] * mean);
        }
        if (it == 0)
          for (int64_t i = 0; i < dh; ++i) p.dh_out[row * D + d0 + i] = from_acc<T>(dn[i]);
      }
      for (int64_t i = 0; i < dh; ++i) {
        p.dq[row * D + d0 + i] = from_acc<T>(dq[i]);
        dv_acc[i] = A(0);
      }
      // mdi's backward step with G_t = dxm.
      const T* vt = p.v + row * D + d0;
      for (int64_t n = 0; n < N; ++n) {
        const A sm = std::max(sigmoid(A(to_float(p.mod[row * N + n]))), p.floor);
        A* cn = carry + n * dh;
        A* dbn = dbase_acc + n * dh;
        const A *sbn = sb + n * dh, *sbng = sbneg + n * dh, *gx = dxm + n * dh, *pn = mprev + n * dh;
        A dsum = A(0);
#pragma omp simd reduction(+ : dsum)
        for (int64_t i = 0; i < dh; ++i) {
          const A delta = gx[i] + cn[i];
          const A x = sbn[i] * sm;
          const A g = clamp(x, p.lo, p.hi);
          const A dx = (x >= p.lo && x <= p.hi) ? delta * (pn[i] - A(to_float(vt[i]))) : A(0);
          dbn[i] += dx * x * sbng[i];
          dsum += dx * sbn[i];
          dv_acc[i] += delta * (A(1) - g);
          cn[i] = g * delta;
        }
        dmod_out[t * N + n] = dsum;
      }
      for (int64_t i = 0; i < dh; ++i) p.dv[row * D + d0 + i] = from_acc<T>(dv_acc[i]);
    }
  }
  for (int64_t j = 0; j < S * dh; ++j)
    p.dMs[((bi * p.d.L + cur) * S + j / dh) * D + d0 + j % dh] = from_acc<T>(dMs_acc[j]);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < dh; ++i) {
      p.dm0[(bi * N + n) * D + d0 + i] = from_acc<T>(carry[n * dh + i]);
      p.dbase_part[(bi * N + n) * D + d0 + i] = dbase_acc[n * dh + i];
    }
}

#define MMREC_READ_TASKS(T, SUFFIX)                                                                  \
  MMREC_ISA_DISPATCH void fwd_task_##SUFFIX(const Args<T>& p, int64_t bi, int64_t k, acc_t<T>* ws) { \
    fwd_task(p, bi, k, ws);                                                                          \
  }                                                                                                  \
  MMREC_ISA_DISPATCH void bwd_task_##SUFFIX(const Args<T>& p, int64_t bi, int64_t k, acc_t<T>* ws) { \
    bwd_task(p, bi, k, ws);                                                                          \
  }                                                                                                  \
  void run_task(const Args<T>& p, bool backward, int64_t bi, int64_t k, acc_t<T>* ws) {              \
    if (backward) bwd_task_##SUFFIX(p, bi, k, ws);                                                   \
    else fwd_task_##SUFFIX(p, bi, k, ws);                                                            \
  }
MMREC_READ_TASKS(float, f32)
MMREC_READ_TASKS(double, f64)
MMREC_READ_TASKS(bf16_t, bf16)
#undef MMREC_READ_TASKS

template <class T>
Args<T> make_args(const ReadDims& d, double eps, double norm_eps) {
  using A = acc_t<T>;
  Args<T> p{};
  p.d = d;
  p.dh_ = d.D / d.H;
  p.I = 1 + d.N + d.S;
  p.K = std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(d.T)))));
  p.blocks = (d.T + p.K - 1) / p.K;
  p.lo = A(eps), p.hi = A(1) - A(eps), p.floor = A(eps) / A(2), p.ne = A(norm_eps);
  p.scale = A(1) / std::sqrt(A(p.dh_));
  return p;
}

template <class T>
void run_tasks(const Args<T>& p, bool backward, int64_t ws_size) {
  const int64_t tasks = p.d.B * p.d.H;
#pragma omp parallel num_threads(num_threads_for(p.d.B * p.d.T * (p.I + p.d.N) * p.d.D, tasks))
  {
    std::vector<acc_t<T>> ws(ws_size);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) run_task(p, backward, task / p.d.H, task % p.d.H, ws.data());
  }
}

}  // namespace

template <class T>
void memory_read_fwd(const T* q, const T* h, const T* v, const T* mod, const T* base, const T* Ms, const T* m0,
                     T* r, T* m_last, const ReadDims& d, double eps, double norm_eps) {
  Args<T> p = make_args<T>(d, eps, norm_eps);
  p.q = q, p.h = h, p.v = v, p.mod = mod, p.base = base, p.Ms = Ms, p.m0 = m0, p.r = r, p.m_last = m_last;
  run_tasks(p, false, (2 * d.N + p.I + 2) * p.dh_ + p.I);
}

template <class T>
void memory_read_bwd(const T* grad_r, const T* grad_m, const T* q, const T* h, const T* v, const T* mod,
                     const T* base, const T* Ms, const T* m0, T* dq, T* dh, T* dv, T* dmod, T* dbase, T* dMs, T* dm0,
                     const ReadDims& d, double eps, double norm_eps) {
  using A = acc_t<T>;
  Args<T> p = make_args<T>(d, eps, norm_eps);
  std::vector<A> dmod_part(d.B * d.H * d.T * d.N), dbase_part(d.B * d.N * d.D);
  p.grad_r = grad_r, p.grad_m = grad_m, p.q = q, p.h = h, p.v = v, p.mod = mod, p.base = base, p.Ms = Ms, p.m0 = m0;
  p.dq = dq, p.dh_out = dh, p.dv = dv, p.dMs = dMs, p.dm0 = dm0;
  p.dmod_part = dmod_part.data(), p.dbase_part = dbase_part.data();
  run_tasks(p, true, bwd_workspace(d.N, d.S, p.dh_, p.I, p.K, p.blocks));
  // dmod = sigmoid'(mod) * (sum over heads); dbase = sum over batch rows; both in a fixed order.
  const int64_t N = d.N, T_ = d.T, H = d.H;
  for (int64_t row = 0; row < d.B * T_; ++row) {
    const int64_t bi = row / T_, t = row % T_;
    for (int64_t n = 0; n < N; ++n) {
      A s = A(0);
      for (int64_t k = 0; k < H; ++k) s += dmod_part[((bi * H + k) * T_ + t) * N + n];
      const A x = A(to_float(mod[row * N + n]));
      dmod[row * N + n] = from_acc<T>(s * sigmoid(x) * sigmoid(-x));
    }
  }
  for (int64_t j = 0; j < N * d.D; ++j) {
    A s = A(0);
    for (int64_t bi = 0; bi < d.B; ++bi) s += dbase_part[bi * N * d.D + j];
    dbase[j] = from_acc<T>(s);
  }
}

#define MMREC_READ_INSTANTIATE(T)                                                                                  \
  template void memory_read_fwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, T*, T*,   \
                                   const ReadDims&, double, double);                                              \
  template void memory_read_bwd<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, \
                                   const T*, T*, T*, T*, T*, T*, T*, T*, const ReadDims&, double, double);
MMREC_READ_INSTANTIATE(float)
MMREC_READ_INSTANTIATE(double)
MMREC_READ_INSTANTIATE(bf16_t)
#undef MMREC_READ_INSTANTIATE

}  // namespace mmrec::cpu
