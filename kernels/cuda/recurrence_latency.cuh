// Latency kernels of the recurrence (included by recurrence.cu only):
//   forward  h_t = z_t s_t + gamma_t h_{t-1}, s_t = sigmoid(W h_{t-1} + bias), W: [H, d, d] block-diagonal;
//   backward delta_t = G_t + gamma_{t+1} delta_{t+1} + W^T e_{t+1}, e_t = delta_t z_t s_t (1 - s_t).
//
// d in {32, 64, 128}. float32 storage (FMA kernels): one block per (R batch rows, head), d * kSplit threads.
// Thread (i, q) = threadIdx (i * kSplit + q) holds W[i][q*JS .. q*JS + JS) (backward: the
// column W[q*JS .., j]) in JS = d / kSplit registers for the whole sequence. The kSplit lanes of one output are
// adjacent in a warp; their R partial sums are reduce-scattered by __shfl_xor_sync so that lane q ends with the
// totals of rows q*RPL .. q*RPL + RPL (RPL = R / kSplit), whose state it keeps in float registers across steps.
// The step's input vector (h_{t-1}, or e_{t+1} in the backward) of the R rows lives in a double-buffered shared
// array; one __syncthreads per step. Per-step inputs are loaded kRing steps ahead into a register ring indexed by
// a statically unrolled loop, so no step waits on global memory.
// bf16 / f16 storage: the same loops on tensor cores (fwd_mma_kernel, bwd_mma_kernel below), float accumulation.
#pragma once

#include <type_traits>

#include "cuda/check.cuh"

namespace mmrec::cuda {
namespace latency {

constexpr int kSplit = 4;     // lanes per output (one j range each)
constexpr int kRingFwd = 8;   // steps of z, gamma loaded ahead in the forward
constexpr int kRingBwd = 4;   // steps of G, z, s, h_{t-1}, gamma loaded ahead in the backward

// Shared-memory index of vector element j of row r ([d][R] per buffer), laid out so that the kSplit lanes of one
// output, each reading local element jj of its own j range, read kSplit adjacent R-float groups (no bank
// conflict) and the 8 outputs of a warp read the same addresses (broadcast).
template <int D, int R>
__device__ __forceinline__ int vec_index(int j, int r) {
  constexpr int JS = D / kSplit;
  return (j % JS) * (kSplit * R) + (j / JS) * R + r;
}

// v[R] partial sums of the kSplit lanes of one output -> lane q holds the totals of rows q*(R/kSplit) + k in v[k],
// k < R / kSplit. Fixed order of additions: deterministic.
template <int N, int OFF, int R>
__device__ __forceinline__ void reduce_scatter(float (&v)[R], int q) {
  if constexpr (OFF >= 1) {
    constexpr int HALF = N / 2;
    const bool hi = (q & OFF) != 0;
#pragma unroll
    for (int k = 0; k < HALF; ++k) {
      const float send = hi ? v[k] : v[k + HALF];
      const float keep = hi ? v[k + HALF] : v[k];
      v[k] = keep + __shfl_xor_sync(0xffffffffu, send, OFF);
    }
    reduce_scatter<HALF, OFF / 2>(v, q);
  }
}

// acc[r] = sum over this lane's JS elements jj of wreg[jj] * vec[q*JS + jj][r], r < R.
template <int D, int R>
__device__ __forceinline__ void partial_matvec(const float (&wreg)[D / kSplit], const float* __restrict__ vec, int q,
                                               float (&acc)[R]) {
  constexpr int JS = D / kSplit;
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
#pragma unroll
  for (int jj = 0; jj < JS; ++jj) {
    const float4* v = reinterpret_cast<const float4*>(vec + jj * (kSplit * R) + q * R);
#pragma unroll
    for (int r4 = 0; r4 < R / 4; ++r4) {
      const float4 x = v[r4];
      acc[4 * r4 + 0] = fmaf(wreg[jj], x.x, acc[4 * r4 + 0]);
      acc[4 * r4 + 1] = fmaf(wreg[jj], x.y, acc[4 * r4 + 1]);
      acc[4 * r4 + 2] = fmaf(wreg[jj], x.z, acc[4 * r4 + 2]);
      acc[4 * r4 + 3] = fmaf(wreg[jj], x.w, acc[4 * r4 + 3]);
    }
  }
}

// Forward. grid (ceil(B / R), H), block D * kSplit threads; dynamic shared memory 2 * D * R floats.
template <class T, int D, int R>
__global__ void __launch_bounds__(D * kSplit, 1)
    fwd_kernel(const T* __restrict__ z, const T* __restrict__ gamma, const T* __restrict__ w,
               const T* __restrict__ bias, const T* __restrict__ h0, T* __restrict__ h, int64_t B, int64_t T_,
               int H) {
  static_assert(R % 4 == 0 && R >= kSplit && D % kSplit == 0, "tile shape");
  constexpr int JS = D / kSplit, RPL = R / kSplit, P = kRingFwd;
  extern __shared__ __align__(16) float hbuf[];  // [2][D * R]: h_{t-1}, h_t of the block's rows
  const int k = blockIdx.y, i = threadIdx.x / kSplit, q = threadIdx.x % kSplit;
  const int64_t b0 = int64_t(blockIdx.x) * R, Dm = int64_t(H) * D, col = int64_t(k) * D + i;
  float wreg[JS];  // W[k][i][q*JS + jj]
#pragma unroll
  for (int jj = 0; jj < JS; ++jj) wreg[jj] = load(w + (int64_t(k) * D + i) * D + q * JS + jj);
  const float bi = bias ? load(bias + col) : 0.0f;
  bool live[RPL];   // row b0 + q*RPL + kk exists
  float hreg[RPL];  // this lane's h of its rows, float across all steps
#pragma unroll
  for (int kk = 0; kk < RPL; ++kk) {
    const int64_t b = b0 + q * RPL + kk;
    live[kk] = b < B;
    hreg[kk] = (live[kk] && h0) ? load(h0 + b * Dm + col) : 0.0f;
    hbuf[vec_index<D, R>(i, q * RPL + kk)] = hreg[kk];
  }
  // Ring of step inputs in storage type (converted where used, so a step never waits on a load it does not use).
  T zr[P][RPL], gr[P][RPL];
  const T zero = T(0.0f);
  auto fetch = [&](int64_t t, T (&zz)[RPL], T (&gg)[RPL]) {
#pragma unroll
    for (int kk = 0; kk < RPL; ++kk) {
      const bool ok = live[kk] && t < T_;
      const int64_t off = ((b0 + q * RPL + kk) * T_ + t) * Dm + col;
      zz[kk] = ok ? z[off] : zero;
      gg[kk] = ok ? gamma[off] : zero;
    }
  };
#pragma unroll
  for (int p = 0; p < P; ++p) fetch(p, zr[p], gr[p]);
  __syncthreads();
  int cur = 0;
  for (int64_t t0 = 0; t0 < T_; t0 += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t = t0 + p;
      if (t >= T_) break;  // block-uniform
      float acc[R];
      partial_matvec<D, R>(wreg, hbuf + cur * (D * R), q, acc);
      reduce_scatter<R, kSplit / 2>(acc, q);
      float* hn = hbuf + (cur ^ 1) * (D * R);
#pragma unroll
      for (int kk = 0; kk < RPL; ++kk) {
        hreg[kk] = to_acc(zr[p][kk]) * sigmoid(acc[kk] + bi) + to_acc(gr[p][kk]) * hreg[kk];
        hn[vec_index<D, R>(i, q * RPL + kk)] = hreg[kk];
        if (live[kk]) store(h + ((b0 + q * RPL + kk) * T_ + t) * Dm + col, hreg[kk]);
      }
      fetch(t + P, zr[p], gr[p]);
      __syncthreads();
      cur ^= 1;
    }
  }
}

// Backward reverse loop. Same grid and block as the forward. s: [B, T, Dm] float (sigmoid of the gate); writes
// e (float scratch for dW), dz, dgamma and dh0.
template <class T, int D, int R>
__global__ void __launch_bounds__(D * kSplit, 1)
    bwd_kernel(const T* __restrict__ grad, const T* __restrict__ z, const T* __restrict__ gamma,
               const T* __restrict__ w, const T* __restrict__ h, const T* __restrict__ h0,
               const float* __restrict__ s, float* __restrict__ e_out, T* __restrict__ dz, T* __restrict__ dgamma,
               T* __restrict__ dh0, int64_t B, int64_t T_, int H) {
  static_assert(R % 4 == 0 && R >= kSplit && D % kSplit == 0, "tile shape");
  constexpr int JS = D / kSplit, RPL = R / kSplit, P = kRingBwd;
  extern __shared__ __align__(16) float ebuf[];  // [2][D * R]: e_{t+1}, e_t of the block's rows
  const int k = blockIdx.y, j = threadIdx.x / kSplit, q = threadIdx.x % kSplit;
  const int64_t b0 = int64_t(blockIdx.x) * R, Dm = int64_t(H) * D, col = int64_t(k) * D + j;
  float wreg[JS];  // W[k][q*JS + ii][j]
#pragma unroll
  for (int ii = 0; ii < JS; ++ii) wreg[ii] = load(w + (int64_t(k) * D + q * JS + ii) * D + j);
  bool live[RPL];
  float delta[RPL], g_next[RPL];  // delta_t and gamma_{t+1} of this lane's rows
#pragma unroll
  for (int kk = 0; kk < RPL; ++kk) {
    live[kk] = b0 + q * RPL + kk < B;
    delta[kk] = 0.0f;
    g_next[kk] = 0.0f;
    ebuf[vec_index<D, R>(j, q * RPL + kk)] = 0.0f;  // e_T = 0
  }
  T Gr[P][RPL], zr[P][RPL], hr[P][RPL], gmr[P][RPL];  // step t: G, z, h_{t-1}, gamma (storage type)
  float sr[P][RPL];
  const T zero = T(0.0f);
  // u = T - 1 - t counts the reverse steps.
  auto fetch = [&](int64_t u, T (&G)[RPL], T (&Z)[RPL], float (&S)[RPL], T (&Hp)[RPL], T (&Gm)[RPL]) {
#pragma unroll
    for (int kk = 0; kk < RPL; ++kk) {
      const int64_t t = T_ - 1 - u, b = b0 + q * RPL + kk;
      const bool ok = live[kk] && t >= 0;
      const int64_t off = (b * T_ + t) * Dm + col;
      G[kk] = ok ? grad[off] : zero;
      Z[kk] = ok ? z[off] : zero;
      S[kk] = ok ? s[off] : 0.0f;
      Gm[kk] = ok ? gamma[off] : zero;
      Hp[kk] = !ok ? zero : t > 0 ? h[off - Dm] : h0 ? h0[b * Dm + col] : zero;
    }
  };
#pragma unroll
  for (int p = 0; p < P; ++p) fetch(p, Gr[p], zr[p], sr[p], hr[p], gmr[p]);
  __syncthreads();
  int cur = 0;
  for (int64_t u0 = 0; u0 < T_; u0 += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t u = u0 + p, t = T_ - 1 - u;
      if (u >= T_) break;  // block-uniform
      float acc[R];  // W^T e_{t+1}
      partial_matvec<D, R>(wreg, ebuf + cur * (D * R), q, acc);
      reduce_scatter<R, kSplit / 2>(acc, q);
      float* en = ebuf + (cur ^ 1) * (D * R);
#pragma unroll
      for (int kk = 0; kk < RPL; ++kk) {
        const float sv = sr[p][kk];
        delta[kk] = to_acc(Gr[p][kk]) + g_next[kk] * delta[kk] + acc[kk];
        const float e = delta[kk] * to_acc(zr[p][kk]) * sv * (1.0f - sv);
        en[vec_index<D, R>(j, q * RPL + kk)] = e;
        if (live[kk]) {
          const int64_t off = ((b0 + q * RPL + kk) * T_ + t) * Dm + col;
          e_out[off] = e;
          store(dz + off, delta[kk] * sv);
          store(dgamma + off, delta[kk] * to_acc(hr[p][kk]));
        }
        g_next[kk] = to_acc(gmr[p][kk]);
      }
      fetch(u + P, Gr[p], zr[p], sr[p], hr[p], gmr[p]);
      __syncthreads();
      cur ^= 1;
    }
  }
  float acc[R];  // W^T e_0
  partial_matvec<D, R>(wreg, ebuf + cur * (D * R), q, acc);
  reduce_scatter<R, kSplit / 2>(acc, q);
#pragma unroll
  for (int kk = 0; kk < RPL; ++kk)
    if (live[kk]) store(dh0 + (b0 + q * RPL + kk) * Dm + col, g_next[kk] * delta[kk] + acc[kk]);
}

// Tensor-core forward for 16-bit storage (bf16, f16), d in {32, 64, 128}: one block per (8 batch rows, head),
// d / 16 warps; warp m computes outputs 16m .. 16m + 15 of the 8 rows as the m16n8 tile C = W[16m.., :] H, where
// H[j][n] = h_{t-1}[row n][j] rounded to the storage type (the only rounding of h: the lanes keep h in float).
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}, lane l, g = l / 4, c = l % 4 (PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type"; lower-indexed element in the low 16 bits of each register):
//   A (16 x 16, row-major), K tile kt: a[0] = W[g][2c, 2c+1], a[1] = W[g+8][2c, 2c+1], a[2] = W[g][2c+8, 2c+9],
//     a[3] = W[g+8][2c+8, 2c+9] (rows 16m + .., columns 16 kt + ..), held in registers for the whole sequence;
//   B (16 x 8, column-major): b0 = H[2c, 2c+1][g], b1 = H[2c+8, 2c+9][g]: two 32-bit words of row g of the
//     shared [8][d] h array (row stride d/2 + 4 words: the 8 rows x 4 lanes hit 32 distinct banks);
//   C (16 x 8): c[0] = C[g][2c], c[1] = C[g][2c+1], c[2] = C[g+8][2c], c[3] = C[g+8][2c+1]: the lane owns outputs
//     16m + g, 16m + g + 8 of rows 2c, 2c + 1, and keeps their float h across steps.
// Even and odd K tiles accumulate into two fragments (half the dependent mma chain), added in a fixed order.
template <class T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned short bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ unsigned short bits16(__half x) { return __half_as_ushort(x); }

constexpr int kMmaRows = 8;  // batch rows per block of the tensor-core kernels (the n8 of the tile)

// d / 16 dependent-pair mma over the K tiles of vector buffer `vb` (row g of the [8][SW] array): C += A V.
template <class T, int D>
__device__ __forceinline__ void mma_tile(const uint32_t (&a)[D / 16][4], const uint32_t* vb, int c, float (&out)[4]) {
  constexpr int KT = D / 16;
  float even[4] = {0.0f, 0.0f, 0.0f, 0.0f}, odd[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    const uint32_t bw0 = vb[8 * kt + c], bw1 = vb[8 * kt + 4 + c];
    if (kt % 2 == 0)
      mma_16816<T>(even, a[kt], bw0, bw1);
    else
      mma_16816<T>(odd, a[kt], bw0, bw1);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) out[e] = even[e] + odd[e];
}

// sigmoid from the SFU's ex2 and rcp: ~5 instructions instead of ~25 for expf and an IEEE division (ncu, run f: the
// 16-bit forward step issues ~257 instructions per warp at ~3.9 cycles each, one warp per scheduler). Its error
// (a few ulp of float) is far below the bf16 / f16 rounding that h_{t-1} takes each step as the mma operand.
__device__ __forceinline__ float sfu_sigmoid(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }

// grid (ceil(B / 8), H), block 2 d threads (d / 16 warps).
template <class T, int D>
__global__ void __launch_bounds__(2 * D, 1)
    fwd_mma_kernel(const T* __restrict__ z, const T* __restrict__ gamma, const T* __restrict__ w,
                   const T* __restrict__ bias, const T* __restrict__ h0, T* __restrict__ h, int64_t B, int64_t T_,
                   int H) {
  static_assert(D % 16 == 0 && D <= 128, "tile shape");
  constexpr int KT = D / 16, SW = D / 2 + 4, P = D >= 128 ? 6 : 8;
  __shared__ __align__(16) uint32_t hs[2 * kMmaRows * SW];  // [2][8 rows][SW words]: h_{t-1}, h_t in storage type
  const int lane = threadIdx.x % 32, m = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int64_t b0 = int64_t(blockIdx.x) * kMmaRows, Dm = int64_t(H) * D, k = blockIdx.y;
  const unsigned short* wb = reinterpret_cast<const unsigned short*>(w) + k * D * D;
  auto wpair = [&](int row, int col) { return uint32_t(wb[row * D + col]) | (uint32_t(wb[row * D + col + 1]) << 16); };
  uint32_t a[KT][4];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    const int r0 = 16 * m + g, c0 = 16 * kt + 2 * c;
    a[kt][0] = wpair(r0, c0);
    a[kt][1] = wpair(r0 + 8, c0);
    a[kt][2] = wpair(r0, c0 + 8);
    a[kt][3] = wpair(r0 + 8, c0 + 8);
  }
  // Owned pair e (0..3): output 16m + g + 8 (e / 2), row 2c + e % 2.
  int64_t col[4], rowoff[4];
  bool live[4];
  float bi[4], hreg[4];
  unsigned short* hs16 = reinterpret_cast<unsigned short*>(hs);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int i = 16 * m + g + 8 * (e / 2), n = 2 * c + e % 2;
    const int64_t b = b0 + n;
    col[e] = k * D + i;
    live[e] = b < B;
    rowoff[e] = b * T_ * Dm + col[e];
    bi[e] = bias ? load(bias + col[e]) : 0.0f;
    hreg[e] = (live[e] && h0) ? load(h0 + b * Dm + col[e]) : 0.0f;
    hs16[n * 2 * SW + i] = bits16(cvt<T>(hreg[e]));
  }
  T zr[P][4], gr[P][4];
  const T zero = T(0.0f);
  auto fetch = [&](int64_t t, T (&zz)[4], T (&gg)[4]) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const bool ok = live[e] && t < T_;
      zz[e] = ok ? z[rowoff[e] + t * Dm] : zero;
      gg[e] = ok ? gamma[rowoff[e] + t * Dm] : zero;
    }
  };
#pragma unroll
  for (int p = 0; p < P; ++p) fetch(p, zr[p], gr[p]);
  __syncthreads();
  int cur = 0;
  for (int64_t t0 = 0; t0 < T_; t0 += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t t = t0 + p;
      if (t >= T_) break;  // block-uniform
      float wh[4];  // W h_{t-1}
      mma_tile<T, D>(a, hs + cur * (kMmaRows * SW) + g * SW, c, wh);
      unsigned short* hn = hs16 + (cur ^ 1) * (kMmaRows * SW * 2);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pre = wh[e] + bi[e];
        hreg[e] = to_acc(zr[p][e]) * sfu_sigmoid(pre) + to_acc(gr[p][e]) * hreg[e];
        hn[(2 * c + e % 2) * 2 * SW + 16 * m + g + 8 * (e / 2)] = bits16(cvt<T>(hreg[e]));
        if (live[e]) store(h + rowoff[e] + t * Dm, hreg[e]);
      }
      fetch(t + P, zr[p], gr[p]);
      __syncthreads();
      cur ^= 1;
    }
  }
}

// Tensor-core reverse loop for 16-bit storage, the forward's layout with A = W^T (warp m: outputs j = 16m ..,
// a[kt] from the columns 16m + g, 16m + g + 8 of W) and B = e_{t+1} rounded to the storage type; each lane keeps
// the float delta and gamma_{t+1} of its 4 (j, row) pairs. grid (ceil(B / 8), H), block 2 d threads.
template <class T, int D>
__global__ void __launch_bounds__(2 * D, 1)
    bwd_mma_kernel(const T* __restrict__ grad, const T* __restrict__ z, const T* __restrict__ gamma,
                   const T* __restrict__ w, const T* __restrict__ h, const T* __restrict__ h0,
                   const float* __restrict__ s, float* __restrict__ e_out, T* __restrict__ dz,
                   T* __restrict__ dgamma, T* __restrict__ dh0, int64_t B, int64_t T_, int H) {
  static_assert(D % 16 == 0 && D <= 128, "tile shape");
  constexpr int KT = D / 16, SW = D / 2 + 4, P = kRingBwd;
  __shared__ __align__(16) uint32_t es[2 * kMmaRows * SW];  // [2][8 rows][SW words]: e_{t+1}, e_t (storage type)
  const int lane = threadIdx.x % 32, m = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int64_t b0 = int64_t(blockIdx.x) * kMmaRows, Dm = int64_t(H) * D, k = blockIdx.y;
  const unsigned short* wb = reinterpret_cast<const unsigned short*>(w) + k * D * D;
  // W^T[row][col], W^T[row][col + 1] = W[col][row], W[col + 1][row]
  auto wtpair = [&](int row, int col) {
    return uint32_t(wb[col * D + row]) | (uint32_t(wb[(col + 1) * D + row]) << 16);
  };
  uint32_t a[KT][4];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    const int r0 = 16 * m + g, c0 = 16 * kt + 2 * c;
    a[kt][0] = wtpair(r0, c0);
    a[kt][1] = wtpair(r0 + 8, c0);
    a[kt][2] = wtpair(r0, c0 + 8);
    a[kt][3] = wtpair(r0 + 8, c0 + 8);
  }
  for (int idx = threadIdx.x; idx < kMmaRows * SW; idx += blockDim.x) es[idx] = 0u;  // e_T = 0
  // Owned pair e (0..3): output j = 16m + g + 8 (e / 2), row 2c + e % 2.
  int64_t col[4], rowoff[4];
  bool live[4];
  float delta[4], g_next[4];
  unsigned short* es16 = reinterpret_cast<unsigned short*>(es);
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int64_t b = b0 + 2 * c + e % 2;
    col[e] = k * D + 16 * m + g + 8 * (e / 2);
    live[e] = b < B;
    rowoff[e] = b * T_ * Dm + col[e];
    delta[e] = 0.0f;
    g_next[e] = 0.0f;
  }
  T Gr[P][4], zr[P][4], hr[P][4], gmr[P][4];  // step t: G, z, h_{t-1}, gamma (storage type)
  float sr[P][4];
  const T zero = T(0.0f);
  auto fetch = [&](int64_t u, T (&G)[4], T (&Z)[4], float (&S)[4], T (&Hp)[4], T (&Gm)[4]) {  // t = T - 1 - u
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t t = T_ - 1 - u;
      const bool ok = live[e] && t >= 0;
      const int64_t off = rowoff[e] + t * Dm;
      G[e] = ok ? grad[off] : zero;
      Z[e] = ok ? z[off] : zero;
      S[e] = ok ? s[off] : 0.0f;
      Gm[e] = ok ? gamma[off] : zero;
      Hp[e] = !ok ? zero : t > 0 ? h[off - Dm] : h0 ? h0[(b0 + 2 * c + e % 2) * Dm + col[e]] : zero;
    }
  };
#pragma unroll
  for (int p = 0; p < P; ++p) fetch(p, Gr[p], zr[p], sr[p], hr[p], gmr[p]);
  __syncthreads();
  int cur = 0;
  for (int64_t u0 = 0; u0 < T_; u0 += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int64_t u = u0 + p, t = T_ - 1 - u;
      if (u >= T_) break;  // block-uniform
      float wte[4];  // W^T e_{t+1}
      mma_tile<T, D>(a, es + cur * (kMmaRows * SW) + g * SW, c, wte);
      unsigned short* en = es16 + (cur ^ 1) * (kMmaRows * SW * 2);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float sv = sr[p][e];
        delta[e] = to_acc(Gr[p][e]) + g_next[e] * delta[e] + wte[e];
        const float ev = delta[e] * to_acc(zr[p][e]) * sv * (1.0f - sv);
        en[(2 * c + e % 2) * 2 * SW + 16 * m + g + 8 * (e / 2)] = bits16(cvt<T>(ev));
        if (live[e]) {
          const int64_t off = rowoff[e] + t * Dm;
          e_out[off] = ev;
          store(dz + off, delta[e] * sv);
          store(dgamma + off, delta[e] * to_acc(hr[p][e]));
        }
        g_next[e] = to_acc(gmr[p][e]);
      }
      fetch(u + P, Gr[p], zr[p], sr[p], hr[p], gmr[p]);
      __syncthreads();
      cur ^= 1;
    }
  }
  float wte[4];  // W^T e_0
  mma_tile<T, D>(a, es + cur * (kMmaRows * SW) + g * SW, c, wte);
#pragma unroll
  for (int e = 0; e < 4; ++e)
    if (live[e]) store(dh0 + (b0 + 2 * c + e % 2) * Dm + col[e], g_next[e] * delta[e] + wte[e]);
}

// Rows per block: 4 while the blocks of 4 rows fit on the multiprocessors at one per SM (fewer rows per block =
// fewer FMAs on each step's chain), else 8.
inline int rows_per_block(int64_t B, int64_t H, int sm_count) {
  return (B + 3) / 4 * H <= sm_count ? 4 : 8;
}

inline bool takes(int64_t d) { return d == 32 || d == 64 || d == 128; }

template <int D, int R, class K, class... Args>
int launch_tile(K kernel, int64_t B, int64_t H, cudaStream_t stream, Args... args) {
  const size_t smem = 2 * size_t(D) * R * sizeof(float);
  MMREC_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<dim3(unsigned((B + R - 1) / R), unsigned(H)), D * kSplit, smem, stream>>>(args...);
  MMREC_CHECK_LAUNCH();
  return 0;
}

// Dispatches d (32, 64, 128) and R (4, 8) to the forward (BWD = false) or backward kernel: float32 to the FMA
// kernels, 16-bit storage to the tensor-core kernels (8 rows per block).
template <class T, bool BWD, class... Args>
int launch(int64_t d, int64_t B, int64_t H, int sm_count, cudaStream_t stream, Args... args) {
  const int R = rows_per_block(B, H, sm_count);
  auto go = [&](auto dtag, auto rtag) -> int {
    constexpr int D = decltype(dtag)::value, RR = decltype(rtag)::value;
    if constexpr (BWD)
      return launch_tile<D, RR>(bwd_kernel<T, D, RR>, B, H, stream, args..., int(H));
    else
      return launch_tile<D, RR>(fwd_kernel<T, D, RR>, B, H, stream, args..., int(H));
  };
  auto with_r = [&](auto dtag) -> int {
    if constexpr (!std::is_same_v<T, float>) {
      constexpr int D = decltype(dtag)::value;
      const dim3 grid(unsigned((B + kMmaRows - 1) / kMmaRows), unsigned(H));
      if constexpr (BWD)
        bwd_mma_kernel<T, D><<<grid, 2 * D, 0, stream>>>(args..., int(H));
      else
        fwd_mma_kernel<T, D><<<grid, 2 * D, 0, stream>>>(args..., int(H));
      MMREC_CHECK_LAUNCH();
      return 0;
    } else {
      return R == 4 ? go(dtag, std::integral_constant<int, 4>{}) : go(dtag, std::integral_constant<int, 8>{});
    }
  };
  switch (d) {
    case 32: return with_r(std::integral_constant<int, 32>{});
    case 64: return with_r(std::integral_constant<int, 64>{});
    case 128: return with_r(std::integral_constant<int, 128>{});
  }
  return kUnsupported;
}

}  // namespace latency
}  // namespace mmrec::cuda
