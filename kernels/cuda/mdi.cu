// mdi: gamma_t^n = clamp(sigmoid(base^n) sigmoid(mod_t^n), eps, 1-eps); m_t^n = gamma m_{t-1}^n + (1 - gamma) v_t.
// backward: mu_t = G_t + gamma_{t+1} mu_{t+1}; dv_t = sum_n mu (1 - gamma); dgamma = mu (m_{t-1} - v_t), passed where
//           eps <= x <= 1-eps (x the unclamped product); dmod = sum_d dgamma sb sm (1-sm); dbase = sum_{b,t} dgamma sm sb (1-sb).
//
// One thread per (b, d) runs the N scans of its channel together (v read once, N outputs written), banks in
// groups of NB held in registers; gamma is recomputed from sigmoid(base) (per thread, once) and sigmoid(mod)
// (staged in shared memory per 8 steps: shared by the block, which covers one batch row), never stored.
// v of the next 8 steps is loaded before they run. Backward reductions are deterministic: dmod is summed per
// warp (shuffles) into [B, T, N, D/32] partials, dbase per thread into [B, N, D] partials; two small kernels
// add the partials in a fixed order.
#include <algorithm>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kSteps = 8;  // steps staged at once

template <class T, int NB>
__global__ void __launch_bounds__(kThreads) mdi_fwd_kernel(const T* __restrict__ v, const T* __restrict__ mod,
                                                           const T* __restrict__ base, const T* __restrict__ m0,
                                                           T* __restrict__ m, int64_t T_, int N, int64_t D,
                                                           double eps_) {
  using A = acc_t<T>;
  __shared__ A smod[kSteps][NB];
  const int64_t b = blockIdx.y, d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const bool live = d < D;
  const A eps = A(eps_), one = A(1);
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = min(NB, N - n0);
    A sb[NB], st[NB];
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      const bool use = live && n < nb;
      sb[n] = use ? sigmoid(A(load(base + (n0 + n) * D + d))) : A(0);
      st[n] = (use && m0) ? A(load(m0 + (b * N + n0 + n) * D + d)) : A(0);
    }
    for (int64_t t0 = 0; t0 < T_; t0 += kSteps) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kSteps * NB; idx += kThreads) {
        const int tt = idx / NB, n = idx % NB;
        smod[tt][n] = (t0 + tt < T_ && n < nb) ? sigmoid(A(load(mod + (b * T_ + t0 + tt) * N + n0 + n))) : A(0);
      }
      A vb[kSteps];
#pragma unroll
      for (int tt = 0; tt < kSteps; ++tt)
        vb[tt] = (live && t0 + tt < T_) ? A(load(v + (b * T_ + t0 + tt) * D + d)) : A(0);
      __syncthreads();
#pragma unroll
      for (int tt = 0; tt < kSteps; ++tt) {
        const int64_t t = t0 + tt;
        if (t >= T_) break;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          if (n >= nb) break;
          const A g = min(max(sb[n] * smod[tt][n], eps), one - eps);
          st[n] = g * st[n] + (one - g) * vb[tt];
          if (live) store(m + ((b * T_ + t) * N + n0 + n) * D + d, st[n]);
        }
      }
    }
  }
}

template <class T, int NB>
__global__ void __launch_bounds__(kThreads) mdi_bwd_kernel(
    const T* __restrict__ grad, const T* __restrict__ v, const T* __restrict__ mod, const T* __restrict__ base,
    const T* __restrict__ m0, const T* __restrict__ m, T* __restrict__ dv, acc_t<T>* __restrict__ dv_acc,
    T* __restrict__ dm0, acc_t<T>* __restrict__ dbase_part, acc_t<T>* __restrict__ dmod_part, int64_t T_, int N,
    int64_t D, double eps_) {
  using A = acc_t<T>;
  __shared__ A smod[kSteps][NB];
  const int64_t b = blockIdx.y, d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = int64_t(gridDim.x) * (kThreads / 32), wid = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const bool live = d < D;
  const A eps = A(eps_), one = A(1);
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = min(NB, N - n0);
    const bool first = n0 == 0, last = n0 + NB >= N;
    A sb[NB], mu[NB], g_next[NB], dba[NB];
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      sb[n] = (live && n < nb) ? sigmoid(A(load(base + (n0 + n) * D + d))) : A(0);
      mu[n] = g_next[n] = dba[n] = A(0);
    }
    for (int64_t t0 = (T_ - 1) / kSteps * kSteps; t0 >= 0; t0 -= kSteps) {
      __syncthreads();
      for (int idx = threadIdx.x; idx < kSteps * NB; idx += kThreads) {
        const int tt = idx / NB, n = idx % NB;
        smod[tt][n] = (t0 + tt < T_ && n < nb) ? sigmoid(A(load(mod + (b * T_ + t0 + tt) * N + n0 + n))) : A(0);
      }
      A vb[kSteps];
#pragma unroll
      for (int tt = 0; tt < kSteps; ++tt)
        vb[tt] = (live && t0 + tt < T_) ? A(load(v + (b * T_ + t0 + tt) * D + d)) : A(0);
      __syncthreads();
#pragma unroll
      for (int tt = kSteps - 1; tt >= 0; --tt) {
        const int64_t t = t0 + tt;
        if (t >= T_) continue;
        A dvs = 0;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          if (n >= nb) break;
          const A sm = smod[tt][n], x = sb[n] * sm;
          const A g = min(max(x, eps), one - eps);
          const int64_t off = ((b * T_ + t) * N + n0 + n) * D + d;
          A gr = 0, mp = 0;
          if (live) {
            gr = A(load(grad + off));
            if (t > 0) mp = A(load(m + off - N * D));
            else if (m0) mp = A(load(m0 + (b * N + n0 + n) * D + d));
          }
          mu[n] = gr + g_next[n] * mu[n];
          const A dx = (x >= eps && x <= one - eps) ? mu[n] * (mp - vb[tt]) : A(0);
          dvs += mu[n] * (one - g);
          const A dm = warp_sum(dx * sb[n] * sm * (one - sm));
          if (lane == 0) dmod_part[((b * T_ + t) * N + n0 + n) * nwarps + wid] = dm;
          dba[n] += dx * sm * sb[n] * (one - sb[n]);
          g_next[n] = g;
        }
        if (live) {
          const int64_t off = (b * T_ + t) * D + d;
          if (first && last) {
            store(dv + off, dvs);
          } else {
            const A total = (first ? A(0) : dv_acc[off]) + dvs;
            if (last) store(dv + off, total);
            else dv_acc[off] = total;
          }
        }
      }
    }
    if (live) {
#pragma unroll
      for (int n = 0; n < NB; ++n) {
        if (n >= nb) break;
        store(dm0 + (b * N + n0 + n) * D + d, g_next[n] * mu[n]);
        dbase_part[(b * N + n0 + n) * D + d] = dba[n];
      }
    }
  }
}

// out[i] = sum_q parts[i * stride_i + q * stride_q] for q < nparts, in order.
template <class T>
__global__ void mdi_sum_kernel(const acc_t<T>* __restrict__ parts, T* __restrict__ out, int64_t n, int64_t nparts,
                               int64_t stride_i, int64_t stride_q) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  acc_t<T> total = 0;
  for (int64_t q = 0; q < nparts; ++q) total += parts[i * stride_i + q * stride_q];
  store(out + i, total);
}

// Banks per group: 4 covers the usual N <= 4 (fewer template copies keep the build short), else groups of 8.
template <class F>
int with_banks(int64_t N, F&& f) {
  if (N <= 4) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

bool dims_ok(int64_t B, int64_t T_, int64_t N, int64_t D) {
  return B > 0 && T_ > 0 && N > 0 && D > 0 && B <= 65535 && N <= INT32_MAX && (D + kThreads - 1) / kThreads <= INT32_MAX;
}

}  // namespace

int mdi_fwd(DType dt, const void* v, const void* mod, const void* base, const void* m0, void* m, int64_t B, int64_t T_,
            int64_t N, int64_t D, double eps, void* stream) {
  if (!dims_ok(B, T_, N, D)) return kUnsupported;
  const cudaStream_t st = cudaStream_t(stream);
  return dispatch(dt, [&](auto tag) -> int {
    using T = decltype(tag);
    return with_banks(N, [&](auto nb) -> int {
      const dim3 grid(unsigned((D + kThreads - 1) / kThreads), unsigned(B));
      mdi_fwd_kernel<T, decltype(nb)::value><<<grid, kThreads, 0, st>>>(
          static_cast<const T*>(v), static_cast<const T*>(mod), static_cast<const T*>(base),
          static_cast<const T*>(m0), static_cast<T*>(m), T_, int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      return 0;
    });
  });
}

int mdi_bwd(DType dt, const void* grad, const void* v, const void* mod, const void* base, const void* m0,
            const void* m, void* dv, void* dmod, void* dbase, void* dm0, int64_t B, int64_t T_, int64_t N, int64_t D,
            double eps, void* stream) {
  if (!dims_ok(B, T_, N, D)) return kUnsupported;
  const cudaStream_t st = cudaStream_t(stream);
  return dispatch(dt, [&](auto tag) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    return with_banks(N, [&](auto nb_tag) -> int {
      constexpr int NB = decltype(nb_tag)::value;
      const int64_t xblocks = (D + kThreads - 1) / kThreads, nwarps = xblocks * (kThreads / 32);
      const size_t n_dbase = size_t(B) * N * D, n_dmod = size_t(B) * T_ * N * nwarps;
      const size_t n_dv = N > NB ? size_t(B) * T_ * D : 0;
      Scratch scratch(st);
      if (int err = scratch.reserve(Scratch::round(n_dbase * sizeof(A)) + Scratch::round(n_dmod * sizeof(A)) +
                                    Scratch::round(n_dv * sizeof(A))))
        return err;
      A* dbase_part = scratch.take<A>(n_dbase);
      A* dmod_part = scratch.take<A>(n_dmod);
      A* dv_acc = n_dv ? scratch.take<A>(n_dv) : nullptr;
      mdi_bwd_kernel<T, NB><<<dim3(unsigned(xblocks), unsigned(B)), kThreads, 0, st>>>(
          static_cast<const T*>(grad), static_cast<const T*>(v), static_cast<const T*>(mod),
          static_cast<const T*>(base), static_cast<const T*>(m0), static_cast<const T*>(m), static_cast<T*>(dv),
          dv_acc, static_cast<T*>(dm0), dbase_part, dmod_part, T_, int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      const int64_t n_mod = B * T_ * N;  // dmod[i] = sum over the D/32 warp partials of row i
      mdi_sum_kernel<T><<<blocks_for(n_mod, 256), 256, 0, st>>>(dmod_part, static_cast<T*>(dmod), n_mod, nwarps,
                                                                 nwarps, 1);
      MMREC_CHECK_LAUNCH();
      const int64_t n_base = N * D;  // dbase[n, d] = sum_b dbase_part[b, n, d]
      mdi_sum_kernel<T><<<blocks_for(n_base, 256), 256, 0, st>>>(dbase_part, static_cast<T*>(dbase), n_base, B, 1,
                                                                  n_base);
      MMREC_CHECK_LAUNCH();
      return 0;
    });
  });
}

}  // namespace mmrec::cuda
