// memory_update: w_c = softmax_j(<M_c[j], key_c> / sqrt(D)); M_{c+1}[j] = M_c[j] + strength_c w_c[j] (value_c - M_c[j]).
// backward (A = dL/dM_{c+1}): g_j = <A_j, value_c - M_j>; dstrength = sum_j g_j w_j; ds_j = w_j (st g_j - st dstrength);
//           dvalue = st sum_j w_j A_j; dkey = sum_j ds_j M_j / sqrt(D); dL/dM_c = A (1 - st w) + ds key / sqrt(D) + G_c.
//
// sm_90 path (S <= 8 * kSlotsMax): a thread-block cluster of up to 8 blocks per batch row, each block owning
// SP <= 8 slots of the state in shared memory (one block per row keeps 16 SMs busy with the state in L2: 50 ms
// fwd+bwd at B=16 NC=256 S=64 D=1024). Per chunk, each block reduces its own slots' dot products (a multi-value warp
// butterfly, then a fixed-order sum over warps), publishes them in shared memory, and after one cluster barrier
// every block reads all S scores through distributed shared memory in slot order and computes the same softmax
// (same inputs, same order: identical bits). Backward also publishes per-column partial sums over its slots of
// dvalue and dkey; block r adds the cluster's partials for its D/CL columns in rank order. Deterministic.
//
// Fallback (other GPUs, S > 64, state too large for shared memory): one block per batch row runs all chunks; thread x owns columns x, x + 256, ... of every slot, so the per-column
// sums over slots (dvalue, dkey) stay in the thread and only the per-slot dot products over D cross threads
// (warp shuffles, then a fixed-order sum over the 8 warps: deterministic). The state (M forward, its adjoint
// backward) is float [S, D] in shared memory when it fits, else in an L2-resident scratch. The forward folds the
// next chunk's addressing dot products into the pass that writes M_{c+1}: one pass over the state per chunk.
#include <cooperative_groups.h>

#include <cmath>

#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;

// Softmax over the S scores in w (in place), by warp 0; lane l owns entries l, l + 32, ...
template <class A>
__device__ void softmax_warp0(A* w, int S) {
  const int lane = threadIdx.x % 32;
  A mx = -INFINITY;
  for (int j = lane; j < S; j += 32) mx = max(mx, w[j]);
  mx = warp_max(mx);
  A sum = 0;
  for (int j = lane; j < S; j += 32) {
    const A e = exp(w[j] - mx);
    w[j] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  for (int j = lane; j < S; j += 32) w[j] /= sum;
}

template <class T, bool STATE_SMEM>
__global__ void __launch_bounds__(kThreads) memory_update_fwd_kernel(
    const T* __restrict__ M0, const T* __restrict__ key, const T* __restrict__ value, const T* __restrict__ strength,
    T* __restrict__ Ms, int64_t NC, acc_t<T>* __restrict__ state_global, int S, int64_t D) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  A* part = reinterpret_cast<A*>(smem);  // [kWarps][S] per-warp dot products
  A* wsm = part + kWarps * S;            // [S] scores, then weights
  A* key_s = wsm + S;                    // [D] (each thread touches only its own columns)
  A* val_s = key_s + D;                  // [D]
  const int64_t b = blockIdx.x, SD = int64_t(S) * D;
  A* M = STATE_SMEM ? val_s + D : state_global + b * SD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = A(1) / sqrt(A(D));

  for (int64_t d = threadIdx.x; d < D; d += kThreads) key_s[d] = A(load(key + b * NC * D + d));
  T* out = Ms + b * (NC + 1) * SD;
  for (int j = 0; j < S; ++j) {
    A dot = 0;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      const A x = A(load(M0 + b * SD + j * D + d));
      M[j * D + d] = x;
      store(out + j * D + d, x);
      dot += x * key_s[d];
    }
    dot = warp_sum(dot);
    if (lane == 0) part[warp * S + j] = dot;
  }
  for (int64_t c = 0; c < NC; ++c) {
    __syncthreads();
    for (int j = threadIdx.x; j < S; j += kThreads) {
      A sc = 0;
      for (int q = 0; q < kWarps; ++q) sc += part[q * S + j];
      wsm[j] = sc * scale;
    }
    __syncthreads();
    if (warp == 0) softmax_warp0(wsm, S);
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      val_s[d] = A(load(value + (b * NC + c) * D + d));
      key_s[d] = c + 1 < NC ? A(load(key + (b * NC + c + 1) * D + d)) : A(0);
    }
    const A st = A(load(strength + b * NC + c));
    __syncthreads();
    T* next = out + (c + 1) * SD;
    for (int j = 0; j < S; ++j) {
      const A coef = st * wsm[j];
      A dot = 0;
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        A x = M[j * D + d];
        x = x + coef * (val_s[d] - x);
        M[j * D + d] = x;
        store(next + j * D + d, x);
        dot += x * key_s[d];
      }
      dot = warp_sum(dot);
      if (lane == 0) part[warp * S + j] = dot;
    }
  }
}

template <class T, bool STATE_SMEM>
__global__ void __launch_bounds__(kThreads) memory_update_bwd_kernel(
    const T* __restrict__ grad, const T* __restrict__ key, const T* __restrict__ value,
    const T* __restrict__ strength, const T* __restrict__ Ms, T* __restrict__ dM0, T* __restrict__ dkey,
    T* __restrict__ dvalue, T* __restrict__ dstrength, int64_t NC, acc_t<T>* __restrict__ state_global, int S,
    int64_t D) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  A* p_score = reinterpret_cast<A*>(smem);  // [kWarps][S]
  A* p_g = p_score + kWarps * S;             // [kWarps][S]
  A* wsm = p_g + kWarps * S;                 // [S] scores, then weights
  A* dss = wsm + S;                          // [S] g, then d(score)
  A* key_s = dss + S;                        // [D]
  A* val_s = key_s + D;                      // [D]
  const int64_t b = blockIdx.x, SD = int64_t(S) * D;
  A* adj = STATE_SMEM ? val_s + D : state_global + b * SD;  // dL/dM_{c+1}, [S, D]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A scale = A(1) / sqrt(A(D));
  const T* G = grad + b * (NC + 1) * SD;
  const T* Mb = Ms + b * (NC + 1) * SD;

  for (int j = 0; j < S; ++j)
    for (int64_t d = threadIdx.x; d < D; d += kThreads) adj[j * D + d] = A(load(G + NC * SD + j * D + d));
  for (int64_t c = NC - 1; c >= 0; --c) {
    const T* M = Mb + c * SD;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      key_s[d] = A(load(key + (b * NC + c) * D + d));
      val_s[d] = A(load(value + (b * NC + c) * D + d));
    }
    for (int j = 0; j < S; ++j) {
      A dot = 0, g = 0;
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        const A x = A(load(M + j * D + d));
        dot += x * key_s[d];
        g += adj[j * D + d] * (val_s[d] - x);
      }
      dot = warp_sum(dot);
      g = warp_sum(g);
      if (lane == 0) p_score[warp * S + j] = dot, p_g[warp * S + j] = g;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < S; j += kThreads) {
      A sc = 0, g = 0;
      for (int q = 0; q < kWarps; ++q) sc += p_score[q * S + j], g += p_g[q * S + j];
      wsm[j] = sc * scale;
      dss[j] = g;
    }
    __syncthreads();
    const A st = A(load(strength + b * NC + c));
    if (warp == 0) {
      softmax_warp0(wsm, S);
      A dst = 0;
      for (int j = lane; j < S; j += 32) dst += dss[j] * wsm[j];
      dst = warp_sum(dst);
      for (int j = lane; j < S; j += 32) dss[j] = wsm[j] * (st * dss[j] - st * dst);
      if (lane == 0) store(dstrength + b * NC + c, dst);
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      const A kd = key_s[d] * scale;
      A dv = 0, dk = 0;
      for (int j = 0; j < S; ++j) {
        const A a = adj[j * D + d], x = A(load(M + j * D + d)), w = wsm[j], ds = dss[j];
        adj[j * D + d] = a * (A(1) - st * w) + ds * kd + A(load(G + c * SD + j * D + d));
        dv += a * w;
        dk += ds * x;
      }
      store(dvalue + (b * NC + c) * D + d, st * dv);
      store(dkey + (b * NC + c) * D + d, scale * dk);
    }
    __syncthreads();
  }
  for (int j = 0; j < S; ++j)
    for (int64_t d = threadIdx.x; d < D; d += kThreads) store(dM0 + b * SD + j * D + d, adj[j * D + d]);
}

// Launches with the state in shared memory when it fits (opt-in limit), else in `scratch`.
template <class T, class K1, class K2, class... Args>
int launch_rows(K1 kernel_smem, K2 kernel_global, size_t fixed_bytes, int64_t B, int S, int64_t D,
                cudaStream_t stream, Args... args) {
  using A = acc_t<T>;
  DeviceLimits lim;
  if (int err = device_limits(&lim)) return err;
  const size_t state_bytes = size_t(S) * D * sizeof(A);
  Scratch scratch(stream);
  if (fixed_bytes + state_bytes <= size_t(lim.smem_optin)) {
    const int bytes = int(fixed_bytes + state_bytes);
    MMREC_CHECK(cudaFuncSetAttribute(kernel_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    kernel_smem<<<unsigned(B), kThreads, bytes, stream>>>(args..., static_cast<A*>(nullptr), S, D);
  } else {
    if (fixed_bytes > size_t(lim.smem_optin)) return kUnsupported;
    if (int err = scratch.reserve(size_t(B) * state_bytes)) return err;
    A* state = scratch.take<A>(size_t(B) * S * D);
    MMREC_CHECK(cudaFuncSetAttribute(kernel_global, cudaFuncAttributeMaxDynamicSharedMemorySize, int(fixed_bytes)));
    kernel_global<<<unsigned(B), kThreads, fixed_bytes, stream>>>(args..., state, S, D);
  }
  MMREC_CHECK_LAUNCH();
  return 0;
}

namespace cg = cooperative_groups;
constexpr int kSlotsMax = 8, kClusterMax = 8;
// Columns per thread whose next-chunk value and key the forward holds in registers (D <= 2,048 entirely).
[[maybe_unused]] constexpr int kPrefetch = 8;

// Cluster shape for S slots: SP = ceil(S / 8) slots per block, CL = ceil(S / SP) blocks (none left empty).
struct ClusterShape {
  int sp, cl;
};
__host__ __device__ inline ClusterShape cluster_shape(int S) {
  const int sp = (S + kClusterMax - 1) / kClusterMax;
  return {sp, (S + sp - 1) / sp};
}

// Sums V = 1 or 2 vectors over the block (warp butterfly, then warps in order): out0[jj] = scale0 * sum of x0[jj]
// and, when V = 2, out1[jj] = sum of x1[jj], for jj < sp; `part` is [kWarps][V][kSlotsMax]. Two vectors cost one
// barrier, not two. out is written after the barrier: the caller's next barrier (cluster.sync) publishes it.
template <int V, class A>
__device__ __forceinline__ void block_sum_slots(A (&x0)[kSlotsMax], A (&x1)[kSlotsMax], A* part, A* out0, A* out1,
                                                int sp, A scale0) {
  static_assert(V == 1 || V == 2, "one or two vectors");
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const A s0 = warp_sum_multi<A, kSlotsMax>(x0, lane);
  const A s1 = V == 2 ? warp_sum_multi<A, kSlotsMax>(x1, lane) : A(0);
  if (multi_writer<kSlotsMax>(lane)) {
    part[warp * V * kSlotsMax + multi_index<kSlotsMax>(lane)] = s0;
    if (V == 2) part[(warp * V + 1) * kSlotsMax + multi_index<kSlotsMax>(lane)] = s1;
  }
  __syncthreads();
  const int v = threadIdx.x / kSlotsMax, jj = threadIdx.x % kSlotsMax;
  if (v < V && jj < sp) {
    A t = 0;
    for (int q = 0; q < kWarps; ++q) t += part[(q * V + v) * kSlotsMax + jj];
    if (v == 0) out0[jj] = t * scale0;
    else out1[jj] = t;
  }
}

// PAIRS (16-bit T, D even, Ms 4-byte aligned): the per-chunk update loop takes two adjacent columns per thread,
// with one 4-byte store of the pair to Ms and 8-byte shared accesses: half the instructions of the one-column loop
// on each chunk's critical path (H200 run 2026-12-05 m, bf16 B=16 NC=256 S=64 D=1024 forward 0.931 -> 0.775 ms,
// float32 0.909).
template <class T, bool PAIRS>
__global__ void __launch_bounds__(kThreads) memory_update_fwd_cluster(
    const T* __restrict__ M0, const T* __restrict__ key, const T* __restrict__ value, const T* __restrict__ strength,
    T* __restrict__ Ms, int64_t NC, int S, int64_t D) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using A = acc_t<T>;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const ClusterShape cs = cluster_shape(S);
  const int sp = cs.sp, j0 = rank * sp, sr = min(sp, S - j0);  // own slots j0 .. j0 + sr - 1
  extern __shared__ __align__(16) unsigned char smem[];
  A* Mst = reinterpret_cast<A*>(smem);        // [SP][D] own slots
  A* key_s = Mst + size_t(sp) * D;            // [D]
  A* val_s = key_s + D;                       // [D]
  A* part = val_s + D;                        // [kWarps][kSlotsMax]
  A* score = part + kWarps * kSlotsMax;       // [2][kSlotsMax] published scores, by chunk parity
  A* wown = score + 2 * kSlotsMax;            // [kSlotsMax] own weights
  const int64_t b = blockIdx.x / cs.cl, SD = int64_t(S) * D;
  const A scale = A(1) / sqrt(A(D));
  const int lane = threadIdx.x % 32;
  T* out = Ms + b * (NC + 1) * SD + int64_t(j0) * D;

  for (int64_t d = threadIdx.x; d < D; d += kThreads) key_s[d] = A(load(key + b * NC * D + d));
  __syncthreads();
  A dot[kSlotsMax];
#pragma unroll
  for (int jj = 0; jj < kSlotsMax; ++jj) dot[jj] = 0;
  for (int64_t d = threadIdx.x; d < D; d += kThreads) {
    const A kd = key_s[d];
#pragma unroll
    for (int jj = 0; jj < kSlotsMax; ++jj) {
      if (jj >= sr) break;
      const A x = A(load(M0 + b * SD + (j0 + jj) * D + d));
      Mst[jj * D + d] = x;
      store(out + jj * D + d, x);
      dot[jj] += x * kd;
    }
  }
  // value_c, key_{c+1} and strength_c of the next chunk, loaded one chunk ahead in storage type (columns
  // threadIdx.x + i * kThreads, i < kPrefetch; wider rows load the rest in place) and converted when used: their
  // global latency then overlaps a whole chunk step instead of preceding the cluster barrier (H200 run
  // 2026-12-05 l, bf16 forward: 0.707 -> 0.524 ms at B=1 NC=256 S=16 D=768, 1.027 -> 0.932 at B=16 NC=256 S=64
  // D=1024)
  T pre_val[kPrefetch], pre_key[kPrefetch], pre_st;
  const auto prefetch = [&](int64_t c) {
#pragma unroll
    for (int i = 0; i < kPrefetch; ++i) {
      const int64_t d = threadIdx.x + int64_t(i) * kThreads;
      if (d < D && c < NC) pre_val[i] = value[(b * NC + c) * D + d];
      if (d < D && c + 1 < NC) pre_key[i] = key[(b * NC + c + 1) * D + d];
    }
    if (c < NC) pre_st = strength[b * NC + c];
  };
  prefetch(0);
  for (int64_t c = 0; c < NC; ++c) {
    A* sc = score + (c & 1) * kSlotsMax;
    block_sum_slots<1>(dot, dot, part, sc, static_cast<A*>(nullptr), sr, scale);
    const A st = A(pre_st);
#pragma unroll
    for (int i = 0; i < kPrefetch; ++i) {  // key_s is free once the dots are summed
      const int64_t d = threadIdx.x + int64_t(i) * kThreads;
      if (d < D) {
        val_s[d] = A(pre_val[i]);
        key_s[d] = c + 1 < NC ? A(pre_key[i]) : A(0);
      }
    }
    for (int64_t d = threadIdx.x + int64_t(kPrefetch) * kThreads; d < D; d += kThreads) {
      val_s[d] = A(load(value + (b * NC + c) * D + d));
      key_s[d] = c + 1 < NC ? A(load(key + (b * NC + c + 1) * D + d)) : A(0);
    }
    prefetch(c + 1);
    cluster.sync();  // every block's scores of chunk c published
    if (threadIdx.x < 32) {  // S <= 64: lane holds slots lane and lane + 32
      const bool u0 = lane < S, u1 = lane + 32 < S;
      const A s0 = u0 ? *cluster.map_shared_rank(sc + lane % sp, lane / sp) : A(-INFINITY);
      const A s1 = u1 ? *cluster.map_shared_rank(sc + (lane + 32) % sp, (lane + 32) / sp) : A(-INFINITY);
      const A mx = warp_max(max(s0, s1));
      const A sum = warp_sum((u0 ? exp(s0 - mx) : A(0)) + (u1 ? exp(s1 - mx) : A(0)));
      if (lane < sr) wown[lane] = st * exp(sc[lane] - mx) / sum;
    }
    __syncthreads();
    A coef[kSlotsMax];
#pragma unroll
    for (int jj = 0; jj < kSlotsMax; ++jj) {
      coef[jj] = jj < sr ? wown[jj] : A(0);
      dot[jj] = 0;
    }
    T* next = out + (c + 1) * SD;
    if constexpr (PAIRS) {
      for (int64_t d = 2 * threadIdx.x; d < D; d += 2 * kThreads) {
        const float2 vd = *reinterpret_cast<const float2*>(val_s + d), kd = *reinterpret_cast<const float2*>(key_s + d);
#pragma unroll
        for (int jj = 0; jj < kSlotsMax; ++jj) {
          if (jj >= sr) break;
          float2 x = *reinterpret_cast<const float2*>(Mst + jj * D + d);
          x.x = x.x + coef[jj] * (vd.x - x.x);
          x.y = x.y + coef[jj] * (vd.y - x.y);
          *reinterpret_cast<float2*>(Mst + jj * D + d) = x;
          store2(next + jj * D + d, x);
          dot[jj] += x.x * kd.x + x.y * kd.y;
        }
      }
    } else {
      for (int64_t d = threadIdx.x; d < D; d += kThreads) {
        const A vd = val_s[d], kd = key_s[d];
#pragma unroll
        for (int jj = 0; jj < kSlotsMax; ++jj) {
          if (jj >= sr) break;
          A x = Mst[jj * D + d];
          x = x + coef[jj] * (vd - x);
          Mst[jj * D + d] = x;
          store(next + jj * D + d, x);
          dot[jj] += x * kd;
        }
      }
    }
  }
  cluster.sync();  // no block leaves while another may still read its scores
#endif
}

// Shared-memory layout of the backward cluster kernel (host and device agree on it): every piece 16-byte aligned.
struct BwdLayout {
  size_t adj, mbuf, gbuf, kbuf, vbuf, dvp, dkp, part, small, total;
  __host__ __device__ static size_t r16(size_t x) { return (x + 15) & ~size_t(15); }
  __host__ __device__ BwdLayout(int sp, int64_t D, size_t a_size, size_t t_size) {
    const size_t slots_t = r16(size_t(sp) * D * t_size), row_t = r16(size_t(D) * t_size);
    mbuf = 0;                     // T [2][SP][D]  M_c of the own slots, by chunk parity
    gbuf = mbuf + 2 * slots_t;    // T [2][SP][D]  grad of Ms[:, c], own slots
    kbuf = gbuf + 2 * slots_t;    // T [2][D]
    vbuf = kbuf + 2 * row_t;      // T [2][D]
    adj = vbuf + 2 * row_t;       // A [SP][D]  dL/dM_{c+1}, own slots
    dvp = adj + r16(size_t(sp) * D * a_size);  // A [D] published: sum over own slots of w_j adj_j
    dkp = dvp + r16(size_t(D) * a_size);       // A [D] published: sum over own slots of ds_j M_j
    part = dkp + r16(size_t(D) * a_size);      // A [kWarps][2 kSlotsMax]
    small = part + r16(size_t(kWarps) * 2 * kSlotsMax * a_size);  // A [4][kSlotsMax]: score, gsum, w, ds
    total = small + r16(4 * kSlotsMax * a_size);
  }
};

// Copies n elements src -> dst (shared): 16-byte cp.async when vec16 (both 16-byte aligned, n * sizeof(T) a
// multiple of 16), else plain loads and stores. Completes at cp_async_wait() plus a barrier.
template <class T>
__device__ __forceinline__ void stage_copy(T* dst, const T* src, int64_t n, bool vec16) {
  if (vec16) {
    const int64_t n16 = n * int64_t(sizeof(T)) / 16;
    const char* s = reinterpret_cast<const char*>(src);
    const unsigned d = unsigned(__cvta_generic_to_shared(dst));
    for (int64_t i = threadIdx.x; i < n16; i += kThreads)
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d + unsigned(i * 16)), "l"(s + i * 16));
  } else {
    for (int64_t i = threadIdx.x; i < n; i += kThreads) dst[i] = src[i];
  }
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// Backward: the next chunk's M, grad, key and value of the own slots are copied into shared memory (cp.async,
// double-buffered) while the current chunk runs, so no step waits on device memory.
template <class T>
__global__ void __launch_bounds__(kThreads) memory_update_bwd_cluster(
    const T* __restrict__ grad, const T* __restrict__ key, const T* __restrict__ value,
    const T* __restrict__ strength, const T* __restrict__ Ms, T* __restrict__ dM0, T* __restrict__ dkey,
    T* __restrict__ dvalue, T* __restrict__ dstrength, int64_t NC, int S, int64_t D, bool vec16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using A = acc_t<T>;
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = int(cluster.block_rank());
  const ClusterShape cs = cluster_shape(S);
  const int sp = cs.sp, cl = cs.cl, j0 = rank * sp, sr = min(sp, S - j0);
  extern __shared__ __align__(16) unsigned char smem[];
  const BwdLayout L(sp, D, sizeof(A), sizeof(T));
  T* mbuf = reinterpret_cast<T*>(smem + L.mbuf);
  T* gbuf = reinterpret_cast<T*>(smem + L.gbuf);
  T* kbuf = reinterpret_cast<T*>(smem + L.kbuf);
  T* vbuf = reinterpret_cast<T*>(smem + L.vbuf);
  A* adj = reinterpret_cast<A*>(smem + L.adj);
  A* dvp = reinterpret_cast<A*>(smem + L.dvp);
  A* dkp = reinterpret_cast<A*>(smem + L.dkp);
  A* part = reinterpret_cast<A*>(smem + L.part);
  A* score = reinterpret_cast<A*>(smem + L.small);  // [kSlotsMax] published scores
  A* gsum = score + kSlotsMax;                        // [kSlotsMax] published <adj_j, value - M_j>
  A* wown = gsum + kSlotsMax;                         // [kSlotsMax] own weights
  A* dsown = wown + kSlotsMax;                        // [kSlotsMax] own d(score)
  const int64_t b = blockIdx.x / cl, SD = int64_t(S) * D, SPD = int64_t(sp) * D, srD = int64_t(sr) * D;
  const A scale = A(1) / sqrt(A(D));
  const int lane = threadIdx.x % 32;
  const T* G = grad + b * (NC + 1) * SD + int64_t(j0) * D;
  const T* Mb = Ms + b * (NC + 1) * SD + int64_t(j0) * D;
  const int64_t dc = (D + cl - 1) / cl, d_lo = rank * dc, d_hi = min(D, d_lo + dc);  // columns this block reduces

  auto stage = [&](int64_t c) {
    const int p = int(c & 1);
    stage_copy(mbuf + p * SPD, Mb + c * SD, srD, vec16);
    stage_copy(gbuf + p * SPD, G + c * SD, srD, vec16);
    stage_copy(kbuf + p * D, key + (b * NC + c) * D, D, vec16);
    stage_copy(vbuf + p * D, value + (b * NC + c) * D, D, vec16);
    cp_async_commit();
  };
  stage(NC - 1);
  for (int64_t i = threadIdx.x; i < srD; i += kThreads) adj[i] = A(load(G + NC * SD + i));
  // strength_c is loaded one chunk ahead: a load issued just before the cluster barrier would wait there
  T st_next = strength[b * NC + NC - 1];
  for (int64_t c = NC - 1; c >= 0; --c) {
    const int p = int(c & 1);
    const A st = A(st_next);
    if (c > 0) st_next = strength[b * NC + c - 1];
    cp_async_wait();
    __syncthreads();  // chunk c staged; every thread is past chunk c + 1, so the other buffers are free
    if (c > 0) stage(c - 1);
    const T* Mc = mbuf + p * SPD;
    const T* Gc = gbuf + p * SPD;
    const T* kc = kbuf + p * D;
    const T* vc = vbuf + p * D;
    A dot[kSlotsMax], g[kSlotsMax];
#pragma unroll
    for (int jj = 0; jj < kSlotsMax; ++jj) dot[jj] = g[jj] = 0;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      const A kd = to_acc(kc[d]), vd = to_acc(vc[d]);
#pragma unroll
      for (int jj = 0; jj < kSlotsMax; ++jj) {
        if (jj >= sr) break;
        const A x = to_acc(Mc[jj * D + d]);
        dot[jj] += x * kd;
        g[jj] += adj[jj * D + d] * (vd - x);
      }
    }
    // both sums in one block reduction: one barrier per chunk instead of three (with strength loaded ahead,
    // run 2026-12-05 m: bf16 B=1 NC=256 S=16 D=768 forward+backward 1.478 -> 1.416 ms)
    block_sum_slots<2>(dot, g, part, score, gsum, sr, scale);
    cluster.sync();  // scores and g of chunk c published
    if (threadIdx.x < 32) {  // S <= 64: lane holds slots lane and lane + 32
      const bool u0 = lane < S, u1 = lane + 32 < S;
      const int q0 = lane / sp, r0 = lane % sp, q1 = (lane + 32) / sp, r1 = (lane + 32) % sp;
      const A s0 = u0 ? *cluster.map_shared_rank(score + r0, q0) : A(-INFINITY);
      const A s1 = u1 ? *cluster.map_shared_rank(score + r1, q1) : A(-INFINITY);
      const A g0 = u0 ? *cluster.map_shared_rank(gsum + r0, q0) : A(0);
      const A g1 = u1 ? *cluster.map_shared_rank(gsum + r1, q1) : A(0);
      const A mx = warp_max(max(s0, s1));
      const A e0 = u0 ? exp(s0 - mx) : A(0), e1 = u1 ? exp(s1 - mx) : A(0);
      const A sum = warp_sum(e0 + e1);
      const A dst = warp_sum(g0 * (e0 / sum) + g1 * (e1 / sum));
      if (lane < sr) {
        const A w = exp(score[lane] - mx) / sum;
        wown[lane] = w;
        dsown[lane] = w * (st * gsum[lane] - st * dst);
      }
      if (rank == 0 && lane == 0) store(dstrength + b * NC + c, dst);
    }
    __syncthreads();
    A w[kSlotsMax], ds[kSlotsMax];
#pragma unroll
    for (int jj = 0; jj < kSlotsMax; ++jj) {
      w[jj] = jj < sr ? wown[jj] : A(0);
      ds[jj] = jj < sr ? dsown[jj] : A(0);
    }
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      const A kd = to_acc(kc[d]) * scale;
      A dv = 0, dk = 0;
#pragma unroll
      for (int jj = 0; jj < kSlotsMax; ++jj) {
        if (jj >= sr) break;
        const A a = adj[jj * D + d];
        adj[jj * D + d] = a * (A(1) - st * w[jj]) + ds[jj] * kd + to_acc(Gc[jj * D + d]);
        dv += a * w[jj];
        dk += ds[jj] * to_acc(Mc[jj * D + d]);
      }
      dvp[d] = dv;
      dkp[d] = dk;
    }
    cluster.sync();  // column partials of chunk c published
    for (int64_t d = d_lo + threadIdx.x; d < d_hi; d += kThreads) {
      A pv[kClusterMax], pk[kClusterMax];
#pragma unroll
      for (int q = 0; q < kClusterMax; ++q) {
        pv[q] = q < cl ? *cluster.map_shared_rank(dvp + d, q) : A(0);
        pk[q] = q < cl ? *cluster.map_shared_rank(dkp + d, q) : A(0);
      }
      A dv = 0, dk = 0;
#pragma unroll
      for (int q = 0; q < kClusterMax; ++q) dv += pv[q], dk += pk[q];
      store(dvalue + (b * NC + c) * D + d, st * dv);
      store(dkey + (b * NC + c) * D + d, scale * dk);
    }
  }
  for (int64_t i = threadIdx.x; i < srD; i += kThreads) store(dM0 + b * SD + int64_t(j0) * D + i, adj[i]);
  cluster.sync();  // no block leaves while another may still read its partials
#endif
}

constexpr int kNoCluster = -100;  // launch_cluster: not launched, take the fallback

// Launches `kernel` as B clusters of cluster_shape(S).cl blocks when the device is sm_90+ and the shared memory
// fits; returns kNoCluster (nothing launched) otherwise.
template <class K, class... Args>
int launch_cluster(K kernel, size_t smem_bytes, int64_t B, int S, cudaStream_t stream, Args... args) {
  if (S > kSlotsMax * kClusterMax) return kNoCluster;
  int dev = 0, major = 0;
  MMREC_CHECK(cudaGetDevice(&dev));
  MMREC_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  DeviceLimits lim;
  if (int err = device_limits(&lim)) return err;
  if (major < 9 || smem_bytes > size_t(lim.smem_optin)) return kNoCluster;
  const ClusterShape cs = cluster_shape(S);
  if (B * cs.cl > INT32_MAX) return kNoCluster;
  MMREC_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(B * cs.cl));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem_bytes;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(cs.cl);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int max_clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&max_clusters, kernel, &cfg) != cudaSuccess || max_clusters < 1) {
    cudaGetLastError();
    return kNoCluster;
  }
  MMREC_CHECK(cudaLaunchKernelEx(&cfg, kernel, args...));
  MMREC_CHECK_LAUNCH();
  return 0;
}

bool dims_ok(int64_t B, int64_t NC, int64_t S, int64_t D) {
  return B > 0 && NC > 0 && S > 0 && D > 0 && B <= INT32_MAX && S <= 65536;
}

}  // namespace

int memory_update_fwd(DType dt, const void* M0, const void* key, const void* value, const void* strength, void* Ms,
                      int64_t B, int64_t NC, int64_t S, int64_t D, void* stream) {
  return run_entry(dims_ok(B, NC, S, D), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    const size_t cluster_bytes =
        (size_t(cluster_shape(int(S)).sp) * D + 2 * size_t(D) + (kWarps + 3) * kSlotsMax) * sizeof(A);
    const auto fwd_cluster = [&](auto kernel) {
      return launch_cluster(kernel, cluster_bytes, B, int(S), st, static_cast<const T*>(M0),
                            static_cast<const T*>(key), static_cast<const T*>(value),
                            static_cast<const T*>(strength), static_cast<T*>(Ms), NC, int(S), D);
    };
    int r;
    if constexpr (sizeof(T) == 2) {
      const bool pairs = D % 2 == 0 && (reinterpret_cast<uintptr_t>(Ms) & 3u) == 0;
      r = pairs ? fwd_cluster(memory_update_fwd_cluster<T, true>) : fwd_cluster(memory_update_fwd_cluster<T, false>);
    } else {
      r = fwd_cluster(memory_update_fwd_cluster<T, false>);
    }
    if (r != kNoCluster) return r;
    const size_t fixed = (size_t(kWarps + 1) * S + 2 * size_t(D)) * sizeof(A);
    return launch_rows<T>(memory_update_fwd_kernel<T, true>, memory_update_fwd_kernel<T, false>, fixed, B, int(S), D,
                          st, static_cast<const T*>(M0), static_cast<const T*>(key), static_cast<const T*>(value),
                          static_cast<const T*>(strength), static_cast<T*>(Ms), NC);
  });
}

int memory_update_bwd(DType dt, const void* grad, const void* M0, const void* key, const void* value,
                      const void* strength, const void* Ms, void* dM0, void* dkey, void* dvalue, void* dstrength,
                      int64_t B, int64_t NC, int64_t S, int64_t D, void* stream) {
  (void)M0;  // Ms[:, 0] holds M0
  return run_entry(dims_ok(B, NC, S, D), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool vec16 = (D * sizeof(T)) % 16 == 0 && aligned16(grad) && aligned16(Ms) && aligned16(key) &&
                       aligned16(value);
    const size_t cluster_bytes = BwdLayout(cluster_shape(int(S)).sp, D, sizeof(A), sizeof(T)).total;
    const int r = launch_cluster(memory_update_bwd_cluster<T>, cluster_bytes, B, int(S), st,
                                 static_cast<const T*>(grad), static_cast<const T*>(key), static_cast<const T*>(value),
                                 static_cast<const T*>(strength), static_cast<const T*>(Ms), static_cast<T*>(dM0),
                                 static_cast<T*>(dkey), static_cast<T*>(dvalue), static_cast<T*>(dstrength), NC, int(S),
                                 D, vec16);
    if (r != kNoCluster) return r;
    const size_t fixed = (size_t(2 * kWarps + 2) * S + 2 * size_t(D)) * sizeof(A);
    return launch_rows<T>(memory_update_bwd_kernel<T, true>, memory_update_bwd_kernel<T, false>, fixed, B, int(S), D,
                          st, static_cast<const T*>(grad), static_cast<const T*>(key), static_cast<const T*>(value),
                          static_cast<const T*>(strength), static_cast<const T*>(Ms), static_cast<T*>(dM0),
                          static_cast<T*>(dkey), static_cast<T*>(dvalue), static_cast<T*>(dstrength), NC);
  });
}

}  // namespace mmrec::cuda
