// memory_update: w_c = softmax_j(<M_c[j], key_c> / sqrt(D)); M_{c+1}[j] = M_c[j] + strength_c w_c[j] (value_c - M_c[j]).
// backward (A = dL/dM_{c+1}): g_j = <A_j, value_c - M_j>; dstrength = sum_j g_j w_j; ds_j = w_j (st g_j - st dstrength);
//           dvalue = st sum_j w_j A_j; dkey = sum_j ds_j M_j / sqrt(D); dL/dM_c = A (1 - st w) + ds key / sqrt(D) + G_c.
//
// One block per batch row runs all chunks; thread x owns columns x, x + 256, ... of every slot, so the per-column
// sums over slots (dvalue, dkey) stay in the thread and only the per-slot dot products over D cross threads
// (warp shuffles, then a fixed-order sum over the 8 warps: deterministic). The state (M forward, its adjoint
// backward) is float [S, D] in shared memory when it fits, else in an L2-resident scratch. The forward folds the
// next chunk's addressing dot products into the pass that writes M_{c+1}: one pass over the state per chunk.
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

bool dims_ok(int64_t B, int64_t NC, int64_t S, int64_t D) {
  return B > 0 && NC > 0 && S > 0 && D > 0 && B <= INT32_MAX && S <= 65536;
}

}  // namespace

int memory_update_fwd(DType dt, const void* M0, const void* key, const void* value, const void* strength, void* Ms,
                      int64_t B, int64_t NC, int64_t S, int64_t D, void* stream) {
  if (!dims_ok(B, NC, S, D)) return kUnsupported;
  const cudaStream_t st = cudaStream_t(stream);
  return dispatch(dt, [&](auto tag) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
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
  if (!dims_ok(B, NC, S, D)) return kUnsupported;
  const cudaStream_t st = cudaStream_t(stream);
  return dispatch(dt, [&](auto tag) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    const size_t fixed = (size_t(2 * kWarps + 2) * S + 2 * size_t(D)) * sizeof(A);
    return launch_rows<T>(memory_update_bwd_kernel<T, true>, memory_update_bwd_kernel<T, false>, fixed, B, int(S), D,
                          st, static_cast<const T*>(grad), static_cast<const T*>(key), static_cast<const T*>(value),
                          static_cast<const T*>(strength), static_cast<const T*>(Ms), static_cast<T*>(dM0),
                          static_cast<T*>(dkey), static_cast<T*>(dvalue), static_cast<T*>(dstrength), NC);
  });
}

}  // namespace mmrec::cuda
