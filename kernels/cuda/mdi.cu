// mdi: gamma_t^n = clamp(sigmoid(base^n) sigmoid(mod_t^n), eps, 1-eps); m_t^n = gamma m_{t-1}^n + (1 - gamma) v_t.
// backward: mu_t = G_t + gamma_{t+1} mu_{t+1}; dv_t = sum_n mu (1 - gamma); dgamma = mu (m_{t-1} - v_t), passed where
//           eps <= x <= 1-eps (x the unclamped product); dmod = sum_d dgamma sb sm (1-sm); dbase = sum_{b,t} dgamma sm sb (1-sb).
//
// Time is cut into chunks of kChunk steps so every (b, chunk, d) gets a thread (a per-channel loop over all T
// keeps 2 warps per SM and pays a memory latency per step: 10 ms backward at N=4 B=8 T=4096 D=1024). Each
// direction is three kernels: (1) per chunk, the affine map state_out = P state_in + Q of the local scan from a
// zero state; (2) per (b, n, d), a sequential pass over the chunk maps giving each chunk's entering state;
// (3) the chunk rescanned from its entering state, writing the outputs. A thread runs the banks of its channel
// in register groups of NB (v read once); sigmoid(mod) of the chunk is staged in shared memory. Reductions are
// fixed-order: dmod per warp (a multi-value butterfly) into [B, T, N, D/32] partials, dbase per thread into
// [B, chunks, N, D] partials, both summed in order by a small kernel.
#include <algorithm>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kChunk = 64;  // steps per chunk
constexpr int kPre = 8;     // steps whose loads are issued together

// Stages s[tt][n] = sigmoid(mod[b, t0 + tt, n0 + n]) for tt < steps (zero past T or past the group).
template <class T, int NB>
__device__ void stage_mod(acc_t<T> (*s)[NB], const T* mod, int64_t b, int64_t t0, int steps, int64_t T_, int N,
                          int n0, int nb) {
  using A = acc_t<T>;
  for (int idx = threadIdx.x; idx < steps * NB; idx += kThreads) {
    const int tt = idx / NB, n = idx % NB;
    s[tt][n] = (t0 + tt < T_ && n < nb) ? sigmoid(A(load(mod + (b * T_ + t0 + tt) * N + n0 + n))) : A(0);
  }
}

template <class A>
__device__ __forceinline__ A clamp_gamma(A x, A eps) { return min(max(x, eps), A(1) - eps); }

// The block's part of the problem: batch row b, chunk c of nch (steps of its kChunk steps inside T from t0),
// channel d of this thread (live: d < D).
struct ChunkTile {
  int64_t b, c, d, nch, t0;
  int steps;
  bool live;
};

__device__ __forceinline__ ChunkTile chunk_tile(int64_t T_, int64_t D) {
  ChunkTile p;
  p.b = blockIdx.z, p.c = blockIdx.y, p.d = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  p.nch = gridDim.y, p.t0 = p.c * kChunk;
  p.steps = int(T_ - p.t0 < kChunk ? T_ - p.t0 : int64_t(kChunk));
  p.live = p.d < D;
  return p;
}

// A chunk's maps (P, Q) of the nb banks of a group: carP, carQ[first + n * D] for n < nb.
template <class A, int NB>
__device__ __forceinline__ void store_chunk_map(A* carP, A* carQ, const A (&P)[NB], const A (&Q)[NB], int64_t first,
                                                int nb, int64_t D) {
#pragma unroll
  for (int n = 0; n < NB; ++n) {
    if (n >= nb) break;
    carP[first + n * D] = P[n];
    carQ[first + n * D] = Q[n];
  }
}

// Forward over each chunk, per bank group of NB. Pass 1 (WRITE_M = false): the chunk's map, P = prod gamma and
// Q = its scan from a zero state, into carP, carQ: [B, chunks, N, D]. Pass 3 (WRITE_M = true): the chunk rescanned
// from its entering state (carQ after mdi_carry), writing m; carP is not read.
template <class T, int NB, bool WRITE_M>
__global__ void __launch_bounds__(kThreads) mdi_fwd_chunks(const T* __restrict__ v, const T* __restrict__ mod,
                                                           const T* __restrict__ base, acc_t<T>* __restrict__ carP,
                                                           acc_t<T>* __restrict__ carQ, T* __restrict__ m, int64_t T_,
                                                           int N, int64_t D, double eps_) {
  using A = acc_t<T>;
  __shared__ A smod[kChunk][NB];
  const auto [b, c, d, nch, t0, steps, live] = chunk_tile(T_, D);
  const A eps = A(eps_);
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = min(NB, N - n0);
    __syncthreads();
    stage_mod<T, NB>(smod, mod, b, t0, steps, T_, N, n0, nb);
    __syncthreads();
    if (!live) continue;
    A sb[NB], P[NB], Q[NB];  // WRITE_M: Q is the running state
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      sb[n] = n < nb ? sigmoid(A(load(base + (n0 + n) * D + d))) : A(0);
      P[n] = A(1);
      Q[n] = (WRITE_M && n < nb) ? carQ[((b * nch + c) * N + n0 + n) * D + d] : A(0);
    }
    for (int s0 = 0; s0 < steps; s0 += kPre) {
      A vb[kPre];
#pragma unroll
      for (int tt = 0; tt < kPre; ++tt) vb[tt] = s0 + tt < steps ? A(load(v + (b * T_ + t0 + s0 + tt) * D + d)) : A(0);
#pragma unroll
      for (int tt = 0; tt < kPre; ++tt) {
        if (s0 + tt >= steps) break;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          if (WRITE_M && n >= nb) break;
          const A g = clamp_gamma(sb[n] * smod[s0 + tt][n], eps);
          Q[n] = g * Q[n] + (A(1) - g) * vb[tt];
          if constexpr (WRITE_M) store(m + ((b * T_ + t0 + s0 + tt) * N + n0 + n) * D + d, Q[n]);
          else P[n] *= g;
        }
      }
    }
    if constexpr (!WRITE_M) store_chunk_map<A, NB>(carP, carQ, P, Q, ((b * nch + c) * N + n0) * D + d, nb, D);
  }
}

// Pass 2 (both directions): per (b, n, d), walks the chunk maps in order (reverse: from the last chunk) and
// overwrites carQ[chunk] with the state entering that chunk. init: [B, N, D] or nullptr (zero).
template <class T>
__global__ void mdi_carry(acc_t<T>* __restrict__ carP, acc_t<T>* __restrict__ carQ, const T* __restrict__ init,
                          int64_t B, int64_t nch, int64_t ND, bool reverse) {
  using A = acc_t<T>;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;  // (b, n, d) flattened
  if (i >= B * ND) return;
  const int64_t b = i / ND, nd = i % ND;
  A h = init ? A(load(init + i)) : A(0);
  constexpr int U = 8;
  for (int64_t k0 = 0; k0 < nch; k0 += U) {
    A p[U], q[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = k0 + u, c = reverse ? nch - 1 - k : k;
      const int64_t off = (b * nch + c) * ND + nd;
      p[u] = k < nch ? carP[off] : A(1);
      q[u] = k < nch ? carQ[off] : A(0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = k0 + u, c = reverse ? nch - 1 - k : k;
      if (k >= nch) break;
      carQ[(b * nch + c) * ND + nd] = h;
      h = p[u] * h + q[u];
    }
  }
}

// Pass 1 backward: chunk maps of the reverse scan mu_t = G_t + gamma_{t+1} mu_{t+1}: mu entering the chunk's
// first step = P mu_{end} + Q, P = prod_{t0 < s <= end} gamma_s (gamma_T = 0).
template <class T, int NB>
__global__ void __launch_bounds__(kThreads) mdi_bwd_maps(const T* __restrict__ grad, const T* __restrict__ mod,
                                                         const T* __restrict__ base, acc_t<T>* __restrict__ carP,
                                                         acc_t<T>* __restrict__ carQ, int64_t T_, int N, int64_t D,
                                                         double eps_) {
  using A = acc_t<T>;
  __shared__ A smod[kChunk + 1][NB];
  const auto [b, c, d, nch, t0, steps, live] = chunk_tile(T_, D);
  const A eps = A(eps_);
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = min(NB, N - n0);
    __syncthreads();
    stage_mod<T, NB>(smod, mod, b, t0, steps + 1, T_, N, n0, nb);
    __syncthreads();
    if (!live) continue;
    A sb[NB], P[NB], Q[NB], gn[NB];
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      sb[n] = n < nb ? sigmoid(A(load(base + (n0 + n) * D + d))) : A(0);
      P[n] = A(1);
      Q[n] = A(0);
      gn[n] = t0 + steps < T_ ? clamp_gamma(sb[n] * smod[steps][n], eps) : A(0);
    }
    for (int e0 = steps; e0 > 0; e0 -= kPre) {  // steps e0 - kPre .. e0 - 1, newest first
      T gr[kPre][NB];  // storage type, converted where used (all loads issued before the first conversion)
#pragma unroll
      for (int k = 0; k < kPre; ++k) {
        const int tt = e0 - 1 - k;
#pragma unroll
        for (int n = 0; n < NB; ++n)
          gr[k][n] = (tt >= 0 && n < nb) ? grad[((b * T_ + t0 + tt) * N + n0 + n) * D + d] : T(0.0f);
      }
#pragma unroll
      for (int k = 0; k < kPre; ++k) {
        const int tt = e0 - 1 - k;
        if (tt < 0) break;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          Q[n] = to_acc(gr[k][n]) + gn[n] * Q[n];
          P[n] *= gn[n];
          gn[n] = clamp_gamma(sb[n] * smod[tt][n], eps);
        }
      }
    }
    store_chunk_map<A, NB>(carP, carQ, P, Q, ((b * nch + c) * N + n0) * D + d, nb, D);
  }
}

// Pass 3 backward: rescans each chunk's reverse recurrence from its entering mu (carQ after mdi_carry) and writes
// dv (or accumulates it over bank groups in dv_acc), the dmod warp partials, the dbase chunk partials and dm0.
template <class T, int NB>
__global__ void __launch_bounds__(kThreads) mdi_bwd_out(
    const T* __restrict__ grad, const T* __restrict__ v, const T* __restrict__ mod, const T* __restrict__ base,
    const T* __restrict__ m0, const T* __restrict__ m, const acc_t<T>* __restrict__ muin, T* __restrict__ dv,
    acc_t<T>* __restrict__ dv_acc, T* __restrict__ dm0, acc_t<T>* __restrict__ dbase_part,
    acc_t<T>* __restrict__ dmod_part, int64_t T_, int N, int64_t D, double eps_) {
  using A = acc_t<T>;
  __shared__ A smod[kChunk + 1][NB];
  const auto [b, c, d, nch, t0, steps, live] = chunk_tile(T_, D);
  const int lane = threadIdx.x % 32;
  const int64_t nwarps = int64_t(gridDim.x) * (kThreads / 32), wid = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const A eps = A(eps_), one = A(1);
  const int my_n = multi_index<NB>(lane);
  const bool writer = multi_writer<NB>(lane);
  for (int n0 = 0; n0 < N; n0 += NB) {
    const int nb = min(NB, N - n0);
    const bool first = n0 == 0, last = n0 + NB >= N;
    __syncthreads();
    stage_mod<T, NB>(smod, mod, b, t0, steps + 1, T_, N, n0, nb);
    __syncthreads();
    A sb[NB], mu[NB], gn[NB], dba[NB];
#pragma unroll
    for (int n = 0; n < NB; ++n) {
      const bool use = live && n < nb;
      sb[n] = use ? sigmoid(A(load(base + (n0 + n) * D + d))) : A(0);
      mu[n] = use ? muin[((b * nch + c) * N + n0 + n) * D + d] : A(0);
      gn[n] = (use && t0 + steps < T_) ? clamp_gamma(sb[n] * smod[steps][n], eps) : A(0);
      dba[n] = A(0);
    }
    for (int e0 = steps; e0 > 0; e0 -= kPre) {
      // Storage type, converted where used: converting 16-bit values next to their loads makes the bfloat16 kernel
      // wait on each load in turn (0.98 ms against 0.53 ms for float at N=4 B=8 T=4096 D=1024).
      T gr[kPre][NB], mp[kPre][NB], vb[kPre];
      const T zero = T(0.0f);
#pragma unroll
      for (int k = 0; k < kPre; ++k) {
        const int tt = e0 - 1 - k;
        const int64_t t = t0 + tt;
        vb[k] = (live && tt >= 0) ? v[(b * T_ + t) * D + d] : zero;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          const bool use = live && tt >= 0 && n < nb;
          const int64_t off = ((b * T_ + t) * N + n0 + n) * D + d;
          gr[k][n] = use ? grad[off] : zero;
          mp[k][n] = !use ? zero : t > 0 ? m[off - N * D] : m0 ? m0[(b * N + n0 + n) * D + d] : zero;
        }
      }
#pragma unroll
      for (int k = 0; k < kPre; ++k) {
        const int tt = e0 - 1 - k;
        if (tt < 0) break;
        const int64_t t = t0 + tt;
        A dvs = 0, dm[NB];
#pragma unroll
        for (int n = 0; n < NB; ++n) {
          const A sm = smod[tt][n], x = sb[n] * sm;
          const A g = clamp_gamma(x, eps);
          mu[n] = to_acc(gr[k][n]) + gn[n] * mu[n];
          const A dx = (x >= eps && x <= one - eps) ? mu[n] * (to_acc(mp[k][n]) - to_acc(vb[k])) : A(0);
          dvs += mu[n] * (one - g);
          dm[n] = dx * sb[n] * sm * (one - sm);
          dba[n] += dx * sm * sb[n] * (one - sb[n]);
          gn[n] = g;
        }
        const A dmw = warp_sum_multi<A, NB>(dm, lane);
        if (writer && my_n < nb) dmod_part[((b * T_ + t) * N + n0 + my_n) * nwarps + wid] = dmw;
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
        if (c == 0) store(dm0 + (b * N + n0 + n) * D + d, gn[n] * mu[n]);
        dbase_part[((b * nch + c) * N + n0 + n) * D + d] = dba[n];
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

int64_t chunks(int64_t T_) { return (T_ + kChunk - 1) / kChunk; }

bool dims_ok(int64_t B, int64_t T_, int64_t N, int64_t D) {
  return B > 0 && T_ > 0 && N > 0 && D > 0 && B <= 65535 && chunks(T_) <= 65535 && N <= INT32_MAX &&
         (D + kThreads - 1) / kThreads <= INT32_MAX;
}

}  // namespace

int mdi_fwd(DType dt, const void* v, const void* mod, const void* base, const void* m0, void* m, int64_t B, int64_t T_,
            int64_t N, int64_t D, double eps, void* stream) {
  return run_entry(dims_ok(B, T_, N, D), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    return with_banks(N, [&](auto nb) -> int {
      constexpr int NB = decltype(nb)::value;
      const int64_t nch = chunks(T_), ncar = B * nch * N * D;
      Scratch scratch(st);
      if (int err = scratch.reserve(2 * Scratch::round(size_t(ncar) * sizeof(A)))) return err;
      A* carP = scratch.take<A>(ncar);
      A* carQ = scratch.take<A>(ncar);
      const dim3 grid{unsigned((D + kThreads - 1) / kThreads), unsigned(nch), unsigned(B)};
      mdi_fwd_chunks<T, NB, false><<<grid, kThreads, 0, st>>>(static_cast<const T*>(v), static_cast<const T*>(mod),
                                                              static_cast<const T*>(base), carP, carQ, nullptr, T_,
                                                              int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      mdi_carry<T><<<blocks_for(B * N * D, 256), 256, 0, st>>>(carP, carQ, static_cast<const T*>(m0), B, nch, N * D,
                                                               false);
      MMREC_CHECK_LAUNCH();
      mdi_fwd_chunks<T, NB, true><<<grid, kThreads, 0, st>>>(static_cast<const T*>(v), static_cast<const T*>(mod),
                                                             static_cast<const T*>(base), nullptr, carQ,
                                                             static_cast<T*>(m), T_, int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      return 0;
    });
  });
}

int mdi_bwd(DType dt, const void* grad, const void* v, const void* mod, const void* base, const void* m0,
            const void* m, void* dv, void* dmod, void* dbase, void* dm0, int64_t B, int64_t T_, int64_t N, int64_t D,
            double eps, void* stream) {
  return run_entry(dims_ok(B, T_, N, D), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    return with_banks(N, [&](auto nb_tag) -> int {
      constexpr int NB = decltype(nb_tag)::value;
      const int64_t xblocks = (D + kThreads - 1) / kThreads, nwarps = xblocks * (kThreads / 32);
      const int64_t nch = chunks(T_), ncar = B * nch * N * D;
      const size_t n_dmod = size_t(B) * T_ * N * nwarps;
      const size_t n_dv = N > NB ? size_t(B) * T_ * D : 0;
      Scratch scratch(st);
      if (int err = scratch.reserve(3 * Scratch::round(size_t(ncar) * sizeof(A)) + Scratch::round(n_dmod * sizeof(A)) +
                                    Scratch::round(n_dv * sizeof(A))))
        return err;
      A* carP = scratch.take<A>(ncar);
      A* carQ = scratch.take<A>(ncar);
      A* dbase_part = scratch.take<A>(ncar);  // [B, chunks, N, D]
      A* dmod_part = scratch.take<A>(n_dmod);
      A* dv_acc = n_dv ? scratch.take<A>(n_dv) : nullptr;
      const dim3 grid{unsigned(xblocks), unsigned(nch), unsigned(B)};
      mdi_bwd_maps<T, NB><<<grid, kThreads, 0, st>>>(static_cast<const T*>(grad), static_cast<const T*>(mod),
                                                     static_cast<const T*>(base), carP, carQ, T_, int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      mdi_carry<T><<<blocks_for(B * N * D, 256), 256, 0, st>>>(carP, carQ, static_cast<const T*>(nullptr), B, nch,
                                                               N * D, true);
      MMREC_CHECK_LAUNCH();
      mdi_bwd_out<T, NB><<<grid, kThreads, 0, st>>>(
          static_cast<const T*>(grad), static_cast<const T*>(v), static_cast<const T*>(mod),
          static_cast<const T*>(base), static_cast<const T*>(m0), static_cast<const T*>(m), carQ, static_cast<T*>(dv),
          dv_acc, static_cast<T*>(dm0), dbase_part, dmod_part, T_, int(N), D, eps);
      MMREC_CHECK_LAUNCH();
      const int64_t n_mod = B * T_ * N;  // dmod[i] = sum over the D/32 warp partials of row i
      mdi_sum_kernel<T><<<blocks_for(n_mod, 256), 256, 0, st>>>(dmod_part, static_cast<T*>(dmod), n_mod, nwarps,
                                                                 nwarps, 1);
      MMREC_CHECK_LAUNCH();
      const int64_t n_base = N * D;  // dbase[n, d] = sum over (b, chunk) of dbase_part[b, chunk, n, d]
      mdi_sum_kernel<T><<<blocks_for(n_base, 256), 256, 0, st>>>(dbase_part, static_cast<T*>(dbase), n_base,
                                                                  B * nch, 1, n_base);
      MMREC_CHECK_LAUNCH();
      return 0;
    });
  });
}

}  // namespace mmrec::cuda
