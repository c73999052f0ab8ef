// recurrence: p_t = W h_{t-1} + bias; s_t = sigmoid(p_t); h_t = z_t s_t + gamma_t h_{t-1} (W block-diagonal, [H, d, d]).
// backward: delta_t = G_t + gamma_{t+1} delta_{t+1} + W^T e_{t+1}; e_t = delta_t z_t s_t (1 - s_t);
//           dz = delta s; dgamma = delta h_{t-1}; dbias = sum e; dW[k] = sum e^k (h_{t-1}^k)^T; dh0 = gamma_0 delta_0 + W^T e_0.
//
// d in {32, 64, 128} (float32, bf16, f16) takes the latency kernels of recurrence_latency.cuh (W in registers, one
// barrier per step; the 16-bit forward on tensor cores); float64 and every other d take the general kernels below.
// General forward: a persistent block per (4 batch rows, head) loops over all T; output i of its head (for the 4 rows) is
// summed by up to 8 threads, each over a d/8 range of j, their partials added in a fixed order by the owner
// thread; W^T (float) and h (as [d][4] so one 16-byte load gives 4 rows) live in shared memory (W is read from
// global memory when it does not fit); z and gamma of step t+1 are loaded during step t.
// Backward: (1) s_t for all t at once, a GEMM-shaped kernel (h_{t-1} is known; tensor cores for 16-bit storage at the
// latency kernels' d, recurrence_gemm.cuh); (2) the reverse loop, one
// block per (4 rows, head), W^T e_{t+1} from shared memory (split over threads like the forward), e stored to a [B, T, D] scratch; (3) dW and dbias as
// a reduction over (b, t) split into P row ranges (tensor cores for bf16 at those d), then (4) a fixed-order sum of
// the P partials: deterministic.
#include <algorithm>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/recurrence_latency.cuh"
#include "cuda/recurrence_gemm.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

constexpr int kRows = 4;  // batch rows per block of the sequential kernels

template <class A>
struct alignas(16) Row4 {
  A r[kRows];
};

// h_{t-1} of flat row (b, t) at column c: h[b, t-1, c], h0[b, c] or 0.
template <class T>
__device__ __forceinline__ acc_t<T> h_prev(const T* h, const T* h0, int64_t row, int64_t T_, int64_t D, int64_t c) {
  const int64_t t = row % T_;
  if (t > 0) return acc_t<T>(load(h + (row - 1) * D + c));
  return h0 ? acc_t<T>(load(h0 + (row / T_) * D + c)) : acc_t<T>(0);
}

template <class T, bool W_SMEM>
__global__ void __launch_bounds__(1024) recurrence_fwd_kernel(const T* __restrict__ z, const T* __restrict__ gamma, const T* __restrict__ w,
                                      const T* __restrict__ bias, const T* __restrict__ h0, T* __restrict__ h,
                                      int64_t B, int64_t T_, int H, int d) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int dp = (d + 31) / 32 * 32, split = blockDim.x / dp;  // split threads per output, one j range each
  Row4<A>* hbuf = reinterpret_cast<Row4<A>*>(smem);   // [2][d]: h_{t-1} and h_t, 4 rows each
  Row4<A>* red = hbuf + 2 * d;                         // [split][d]: partial sums of the j ranges
  A* wt = reinterpret_cast<A*>(red + split * d);       // [d][d]: wt[j * d + i] = W[i][j]
  const int k = blockIdx.y, i = threadIdx.x % dp, q = threadIdx.x / dp;
  const int jspan = (d + split - 1) / split, jlo = min(d, q * jspan), jhi = min(d, jlo + jspan);
  const int64_t b0 = int64_t(blockIdx.x) * kRows, D = int64_t(H) * d;
  const T* wk = w + int64_t(k) * d * d;
  if (W_SMEM)
    for (int idx = threadIdx.x; idx < d * d; idx += blockDim.x) wt[(idx % d) * d + idx / d] = A(load(wk + idx));
  const bool part = i < d;             // sums its j range for output i
  const bool active = part && q == 0;  // owns output i: loads z, gamma, writes h
  const int64_t col = int64_t(k) * d + i;
  int nrows = int(min(int64_t(kRows), B - b0));
  if (active) {
    Row4<A> init;
#pragma unroll
    for (int r = 0; r < kRows; ++r) init.r[r] = (h0 && r < nrows) ? A(load(h0 + (b0 + r) * D + col)) : A(0);
    hbuf[i] = init;
  }
  const A bi = (active && bias) ? A(load(bias + col)) : A(0);
  A zc[kRows], gc[kRows], zn[kRows], gn[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const bool live = active && r < nrows;
    zc[r] = live ? A(load(z + (b0 + r) * T_ * D + col)) : A(0);
    gc[r] = live ? A(load(gamma + (b0 + r) * T_ * D + col)) : A(0);
  }
  __syncthreads();
  int cur = 0;
  for (int64_t t = 0; t < T_; ++t) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool live = active && r < nrows && t + 1 < T_;
      const int64_t off = ((b0 + r) * T_ + t + 1) * D + col;
      zn[r] = live ? A(load(z + off)) : A(0);
      gn[r] = live ? A(load(gamma + off)) : A(0);
    }
    const Row4<A>* hp = hbuf + cur * d;
    Row4<A> acc;
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc.r[r] = A(0);
    if (part) {
#pragma unroll 4
      for (int j = jlo; j < jhi; ++j) {
        const A wij = W_SMEM ? wt[j * d + i] : A(load(wk + int64_t(i) * d + j));
        const Row4<A> hv = hp[j];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc.r[r] += wij * hv.r[r];
      }
    }
    if (split > 1) {
      if (part && q > 0) red[q * d + i] = acc;
      __syncthreads();
    }
    if (active) {
      for (int qq = 1; qq < split; ++qq) {
        const Row4<A> pr = red[qq * d + i];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc.r[r] += pr.r[r];
      }
      const Row4<A> old = hp[i];
      Row4<A> nxt;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        nxt.r[r] = zc[r] * sigmoid(acc.r[r] + bi) + gc[r] * old.r[r];
        if (r < nrows) store(h + ((b0 + r) * T_ + t) * D + col, nxt.r[r]);
      }
      hbuf[(cur ^ 1) * d + i] = nxt;
    }
    __syncthreads();
    cur ^= 1;
#pragma unroll
    for (int r = 0; r < kRows; ++r) zc[r] = zn[r], gc[r] = gn[r];
  }
}

// s[row, k*d + i] = sigmoid(bias + sum_j W[k][i][j] h_{t-1}[k*d + j]) for all rows (b, t): 32 x 32 tiles.
template <class T>
__global__ void recurrence_gate_kernel(const T* __restrict__ w, const T* __restrict__ bias, const T* __restrict__ h,
                                       const T* __restrict__ h0, acc_t<T>* __restrict__ s, int64_t rows, int64_t T_,
                                       int H, int d) {
  using A = acc_t<T>;
  __shared__ A hs[32][33], ws[32][33];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;  // 256 threads: output column tx, rows ty + 8m
  const int64_t r0 = int64_t(blockIdx.x) * 32;
  const int i0 = blockIdx.y * 32, k = blockIdx.z;
  const int64_t D = int64_t(H) * d;
  A acc[4] = {0, 0, 0, 0};
  for (int j0 = 0; j0 < d; j0 += 32) {
    for (int e = threadIdx.x; e < 32 * 32; e += 256) {
      const int rr = e / 32, jj = e % 32;
      const int64_t row = r0 + rr;
      hs[rr][jj] = (row < rows && j0 + jj < d) ? h_prev(h, h0, row, T_, D, int64_t(k) * d + j0 + jj) : A(0);
      ws[rr][jj] = (i0 + rr < d && j0 + jj < d) ? A(load(w + (int64_t(k) * d + i0 + rr) * d + j0 + jj)) : A(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int jj = 0; jj < 32; ++jj) {
      const A wv = ws[tx][jj];
#pragma unroll
      for (int m = 0; m < 4; ++m) acc[m] += wv * hs[ty + 8 * m][jj];
    }
    __syncthreads();
  }
  if (i0 + tx >= d) return;
  const A bi = bias ? A(load(bias + int64_t(k) * d + i0 + tx)) : A(0);
#pragma unroll
  for (int m = 0; m < 4; ++m) {
    const int64_t row = r0 + ty + 8 * m;
    if (row < rows) s[row * D + int64_t(k) * d + i0 + tx] = sigmoid(acc[m] + bi);
  }
}

template <class T, bool W_SMEM>
__global__ void __launch_bounds__(1024) recurrence_bwd_kernel(const T* __restrict__ grad, const T* __restrict__ z,
                                      const T* __restrict__ gamma, const T* __restrict__ w,
                                      const T* __restrict__ h, const T* __restrict__ h0,
                                      const acc_t<T>* __restrict__ s, acc_t<T>* __restrict__ e_out,
                                      T* __restrict__ dz, T* __restrict__ dgamma, T* __restrict__ dh0, int64_t B,
                                      int64_t T_, int H, int d) {
  using A = acc_t<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int dp = (d + 31) / 32 * 32, split = blockDim.x / dp;  // split threads per output, one i range each
  Row4<A>* ebuf = reinterpret_cast<Row4<A>*>(smem);  // [2][d]: e_{t+1} and e_t, 4 rows each
  Row4<A>* red = ebuf + 2 * d;                        // [split][d]: partial sums of the i ranges
  A* ws = reinterpret_cast<A*>(red + split * d);      // [d][d]: W[i][j] at i * d + j
  const int k = blockIdx.y, j = threadIdx.x % dp, q = threadIdx.x / dp;
  const int ispan = (d + split - 1) / split, ilo = min(d, q * ispan), ihi = min(d, ilo + ispan);
  const int64_t b0 = int64_t(blockIdx.x) * kRows, D = int64_t(H) * d;
  const T* wk = w + int64_t(k) * d * d;
  if (W_SMEM)
    for (int idx = threadIdx.x; idx < d * d; idx += blockDim.x) ws[idx] = A(load(wk + idx));
  const bool part = j < d;             // sums its i range of W^T e for output j
  const bool active = part && q == 0;  // owns output j: loads the step's inputs, writes the gradients
  const int64_t col = int64_t(k) * d + j;
  const int nrows = int(min(int64_t(kRows), B - b0));
  A delta[kRows], g_next[kRows];
  // Step t's inputs in storage type, converted only where used: a conversion right after the load makes every
  // 16-bit step wait for its prefetch (bf16 7.3 ms against 4.0 ms for float).
  T gc[kRows], zc[kRows], hc[kRows], gmc[kRows];  // step t: G, z, h_{t-1}, gamma
  T gn[kRows], zn[kRows], hn[kRows], gmn[kRows];  // step t-1
  A sc[kRows], sn[kRows];                         // s, float scratch
  const T zero = T(0.0f);
  auto fetch = [&](int64_t t, T* G, T* Z, A* S, T* Hp, T* Gm) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const bool live = active && r < nrows && t >= 0;
      const int64_t row = (b0 + r) * T_ + t, off = row * D + col;
      G[r] = live ? grad[off] : zero;
      Z[r] = live ? z[off] : zero;
      S[r] = live ? s[off] : A(0);
      Gm[r] = live ? gamma[off] : zero;
      Hp[r] = !live ? zero : (row % T_) > 0 ? h[off - D] : h0 ? h0[(b0 + r) * D + col] : zero;
    }
  };
  fetch(T_ - 1, gc, zc, sc, hc, gmc);
#pragma unroll
  for (int r = 0; r < kRows; ++r) delta[r] = A(0), g_next[r] = A(0);
  __syncthreads();
  int cur = 0;
  for (int64_t t = T_ - 1; t >= 0; --t) {
    fetch(t - 1, gn, zn, sn, hn, gmn);
    A wte[kRows] = {};
    if (part && t < T_ - 1) {
      const Row4<A>* ep = ebuf + cur * d;
#pragma unroll 4
      for (int i = ilo; i < ihi; ++i) {
        const A wij = W_SMEM ? ws[i * d + j] : A(load(wk + int64_t(i) * d + j));
        const Row4<A> ev = ep[i];
#pragma unroll
        for (int r = 0; r < kRows; ++r) wte[r] += wij * ev.r[r];
      }
    }
    if (split > 1) {
      if (part && q > 0) {
        Row4<A> pr;
#pragma unroll
        for (int r = 0; r < kRows; ++r) pr.r[r] = wte[r];
        red[q * d + j] = pr;
      }
      __syncthreads();
    }
    if (active) {
      for (int qq = 1; qq < split; ++qq) {
        const Row4<A> pr = red[qq * d + j];
#pragma unroll
        for (int r = 0; r < kRows; ++r) wte[r] += pr.r[r];
      }
      Row4<A> e;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        delta[r] = to_acc(gc[r]) + g_next[r] * delta[r] + wte[r];
        e.r[r] = delta[r] * to_acc(zc[r]) * sc[r] * (A(1) - sc[r]);
        if (r < nrows) {
          const int64_t off = ((b0 + r) * T_ + t) * D + col;
          e_out[off] = e.r[r];
          store(dz + off, delta[r] * sc[r]);
          store(dgamma + off, delta[r] * to_acc(hc[r]));
        }
        g_next[r] = to_acc(gmc[r]);
      }
      ebuf[(cur ^ 1) * d + j] = e;
    }
    __syncthreads();
    cur ^= 1;
#pragma unroll
    for (int r = 0; r < kRows; ++r) gc[r] = gn[r], zc[r] = zn[r], sc[r] = sn[r], hc[r] = hn[r], gmc[r] = gmn[r];
  }
  if (!active) return;
  A wte[kRows] = {};
  const Row4<A>* ep = ebuf + cur * d;  // e_0
  for (int i = 0; i < d; ++i) {
    const A wij = W_SMEM ? ws[i * d + j] : A(load(wk + int64_t(i) * d + j));
    const Row4<A> ev = ep[i];
#pragma unroll
    for (int r = 0; r < kRows; ++r) wte[r] += wij * ev.r[r];
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r)
    if (r < nrows) store(dh0 + (b0 + r) * D + col, g_next[r] * delta[r] + wte[r]);
}

// Partial dW / dbias over rows [part * rows_per_part, ...): dw_part[part][k][i][j] = sum_row e[row, k*d+i] h_{t-1}[k*d+j].
template <class T>
__global__ void recurrence_dw_kernel(const acc_t<T>* __restrict__ e, const T* __restrict__ h, const T* __restrict__ h0,
                                     acc_t<T>* __restrict__ dw_part, acc_t<T>* __restrict__ dbias_part, int64_t rows,
                                     int64_t rows_per_part, int64_t T_, int H, int d) {
  using A = acc_t<T>;
  __shared__ A es[32][33], hs[32][33];
  const int tx = threadIdx.x % 32, ty = threadIdx.x / 32;  // output (i = ty + 8m, j = tx)
  const int i0 = blockIdx.x / ((d + 31) / 32) * 32, j0 = blockIdx.x % ((d + 31) / 32) * 32;
  const int k = blockIdx.y, part = blockIdx.z;
  const int64_t D = int64_t(H) * d;
  const int64_t lo = part * rows_per_part, hi = min(rows, lo + rows_per_part);
  A acc[4] = {0, 0, 0, 0}, bsum = 0;
  for (int64_t r0 = lo; r0 < hi; r0 += 32) {
    for (int x = threadIdx.x; x < 32 * 32; x += 256) {
      const int rr = x / 32, cc = x % 32;
      const int64_t row = r0 + rr;
      const bool live = row < hi;
      es[rr][cc] = (live && i0 + cc < d) ? e[row * D + int64_t(k) * d + i0 + cc] : A(0);
      hs[rr][cc] = (live && j0 + cc < d) ? h_prev(h, h0, row, T_, D, int64_t(k) * d + j0 + cc) : A(0);
    }
    __syncthreads();
#pragma unroll 8
    for (int rr = 0; rr < 32; ++rr) {
      const A hv = hs[rr][tx];
#pragma unroll
      for (int m = 0; m < 4; ++m) acc[m] += es[rr][ty + 8 * m] * hv;
      if (ty == 0) bsum += es[rr][tx];
    }
    __syncthreads();
  }
  A* out = dw_part + (int64_t(part) * H + k) * d * d;
#pragma unroll
  for (int m = 0; m < 4; ++m)
    if (i0 + ty + 8 * m < d && j0 + tx < d) out[int64_t(i0 + ty + 8 * m) * d + j0 + tx] = acc[m];
  if (j0 == 0 && ty == 0 && i0 + tx < d) dbias_part[int64_t(part) * D + int64_t(k) * d + i0 + tx] = bsum;
}

template <class T>
__global__ void sum_parts_kernel(const acc_t<T>* __restrict__ parts, T* __restrict__ out, int64_t n, int nparts) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  acc_t<T> total = 0;
  for (int q = 0; q < nparts; ++q) total += parts[int64_t(q) * n + idx];
  store(out + idx, total);
}

// Launches a sequential kernel with W in shared memory when it fits, else read from global memory.
template <class T, class K1, class K2, class... Args>
int launch_sequential(K1 kernel_smem, K2 kernel_global, dim3 grid, int d, cudaStream_t stream, Args... args) {
  using A = acc_t<T>;
  DeviceLimits lim;
  if (int err = device_limits(&lim)) return err;
  // Up to 8 threads per output (each a d/split range of the dot product): 4 threads per output of d = 128 ran
  // one warp per SM scheduler, each step a chain of d dependent shared-memory loads and FMAs.
  const int dp = (d + 31) / 32 * 32;
  int split = 1;
  while (split < 8 && dp * split * 2 <= 1024) split *= 2;
  const size_t state = (2 + size_t(split)) * d * sizeof(Row4<A>), wbytes = size_t(d) * d * sizeof(A);
  const unsigned threads = unsigned(dp * split);
  if (state + wbytes <= size_t(lim.smem_optin)) {
    MMREC_CHECK(cudaFuncSetAttribute(kernel_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, int(state + wbytes)));
    kernel_smem<<<grid, threads, state + wbytes, stream>>>(args...);
  } else {
    MMREC_CHECK(cudaFuncSetAttribute(kernel_global, cudaFuncAttributeMaxDynamicSharedMemorySize, int(state)));
    kernel_global<<<grid, threads, state, stream>>>(args...);
  }
  MMREC_CHECK_LAUNCH();
  return 0;
}

bool dims_ok(int64_t B, int64_t T_, int64_t H, int64_t d) {
  return B > 0 && T_ > 0 && H > 0 && d > 0 && d <= 1024 && H <= 65535 && (B + kRows - 1) / kRows <= INT32_MAX;
}

}  // namespace

int recurrence_fwd(DType dt, const void* z, const void* gamma, const void* w, const void* bias, const void* h0,
                   void* h, int64_t B, int64_t T_, int64_t H, int64_t d, void* stream) {
  return run_entry(dims_ok(B, T_, H, d), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    if constexpr (!std::is_same_v<T, double>) {
      if (latency::takes(d)) {
        DeviceLimits lim;
        if (int err = device_limits(&lim)) return err;
        return latency::launch<T, false>(d, B, H, lim.sm_count, st, static_cast<const T*>(z),
                                         static_cast<const T*>(gamma), static_cast<const T*>(w),
                                         static_cast<const T*>(bias), static_cast<const T*>(h0), static_cast<T*>(h),
                                         B, T_);
      }
    }
    const dim3 grid(unsigned((B + kRows - 1) / kRows), unsigned(H));
    return launch_sequential<T>(recurrence_fwd_kernel<T, true>, recurrence_fwd_kernel<T, false>, grid, int(d), st,
                                static_cast<const T*>(z), static_cast<const T*>(gamma), static_cast<const T*>(w),
                                static_cast<const T*>(bias), static_cast<const T*>(h0), static_cast<T*>(h), B, T_,
                                int(H), int(d));
  });
}

int recurrence_bwd(DType dt, const void* grad, const void* z, const void* gamma, const void* w, const void* bias,
                   const void* h0, const void* h, void* dz, void* dgamma, void* dw, void* dbias, void* dh0, int64_t B,
                   int64_t T_, int64_t H, int64_t d, void* stream) {
  return run_entry(dims_ok(B, T_, H, d), dt, stream, [&](auto tag, cudaStream_t st) -> int {
    using T = decltype(tag);
    using A = acc_t<T>;
    const int64_t D = H * d, rows = B * T_, dtiles = (d + 31) / 32;
    DeviceLimits lim;
    if (int err = device_limits(&lim)) return err;
    // 16-bit storage at d in {32, 64, 128}: the gate pass on tensor cores; bf16 also the dW pass (f16 keeps the
    // CUDA-core dW: e rounded to f16 could overflow).
    constexpr bool mma_gate = !std::is_same_v<T, float> && !std::is_same_v<T, double>;
    constexpr bool mma_dw = std::is_same_v<T, __nv_bfloat16>;
    const bool gate_tc = mma_gate && gemm::takes_gate(d), dw_tc = mma_dw && gemm::takes_gate(d);
    // Row ranges of the CUDA-core dW reduction: about 8 blocks per multiprocessor, at least 256 rows each.
    const int64_t base_blocks = dtiles * dtiles * H;
    int64_t nparts = std::max<int64_t>(1, std::min<int64_t>((8 * int64_t(lim.sm_count) + base_blocks - 1) / base_blocks,
                                                            (rows + 255) / 256));
    nparts = std::min<int64_t>(nparts, 65535);
    const int64_t rows_per_part = ((rows + nparts - 1) / nparts + 31) / 32 * 32;
    nparts = dw_tc ? gemm::dw_parts(rows, H, lim.sm_count) : (rows + rows_per_part - 1) / rows_per_part;
    Scratch scratch(st);
    const size_t n_act = size_t(rows) * D, n_dw = size_t(H) * d * d;
    if (int err = scratch.reserve(2 * Scratch::round(n_act * sizeof(A)) + Scratch::round(nparts * n_dw * sizeof(A)) +
                                  Scratch::round(nparts * D * sizeof(A))))
      return err;
    A* s = scratch.take<A>(n_act);
    A* e = scratch.take<A>(n_act);
    A* dw_part = scratch.take<A>(nparts * n_dw);
    A* db_part = scratch.take<A>(nparts * D);
    const T* w_ = static_cast<const T*>(w);
    const T* h_ = static_cast<const T*>(h);
    const T* h0_ = static_cast<const T*>(h0);
    if ((rows + 31) / 32 > INT32_MAX) return kUnsupported;
    if constexpr (mma_gate) {
      if (gate_tc) {
        if (int err = gemm::launch_gate<T>(d, w_, static_cast<const T*>(bias), h_, h0_, s, rows, T_, H, st)) return err;
      }
    }
    if (!gate_tc) {
      recurrence_gate_kernel<T><<<dim3(unsigned((rows + 31) / 32), unsigned(dtiles), unsigned(H)), 256, 0, st>>>(
          w_, static_cast<const T*>(bias), h_, h0_, s, rows, T_, int(H), int(d));
      MMREC_CHECK_LAUNCH();
    }
    bool fast = false;
    if constexpr (!std::is_same_v<T, double>) fast = latency::takes(d);
    if (fast) {
      if constexpr (!std::is_same_v<T, double>) {
        if (int err = latency::launch<T, true>(d, B, H, lim.sm_count, st, static_cast<const T*>(grad),
                                               static_cast<const T*>(z), static_cast<const T*>(gamma), w_, h_, h0_,
                                               static_cast<const A*>(s), e, static_cast<T*>(dz),
                                               static_cast<T*>(dgamma), static_cast<T*>(dh0), B, T_))
          return err;
      }
    } else {
      const dim3 grid(unsigned((B + kRows - 1) / kRows), unsigned(H));
      if (int err = launch_sequential<T>(recurrence_bwd_kernel<T, true>, recurrence_bwd_kernel<T, false>, grid,
                                         int(d), st, static_cast<const T*>(grad), static_cast<const T*>(z),
                                         static_cast<const T*>(gamma), w_, h_, h0_, static_cast<const A*>(s), e,
                                         static_cast<T*>(dz), static_cast<T*>(dgamma), static_cast<T*>(dh0), B, T_,
                                         int(H), int(d)))
        return err;
    }
    if constexpr (mma_dw) {
      if (dw_tc) {
        if (int err = gemm::launch_dw(d, e, h_, h0_, dw_part, db_part, rows, nparts, T_, H, st)) return err;
      }
    }
    if (!dw_tc) {
      recurrence_dw_kernel<T><<<dim3(unsigned(dtiles * dtiles), unsigned(H), unsigned(nparts)), 256, 0, st>>>(
          e, h_, h0_, dw_part, db_part, rows, rows_per_part, T_, int(H), int(d));
      MMREC_CHECK_LAUNCH();
    }
    sum_parts_kernel<T><<<blocks_for(int64_t(n_dw), 256), 256, 0, st>>>(dw_part, static_cast<T*>(dw), int64_t(n_dw),
                                                                        int(nparts));
    MMREC_CHECK_LAUNCH();
    sum_parts_kernel<T><<<blocks_for(D, 256), 256, 0, st>>>(db_part, static_cast<T*>(dbias), D, int(nparts));
    MMREC_CHECK_LAUNCH();
    return 0;
  });
}

}  // namespace mmrec::cuda
