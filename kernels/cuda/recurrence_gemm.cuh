// GEMM-shaped passes of the recurrence's backward on tensor cores (included by recurrence.cu after
// recurrence_latency.cuh), for 16-bit storage and d in {32, 64, 128}:
//   gate  s[r, k d + i] = sigmoid(sum_j W[k][i][j] h_{t-1}[r, k d + j] + bias[k d + i])    (r = b T + t, all t at once)
//   dW    dW[k][i][j] = sum_r e[r, k d + i] h_{t-1}[r, k d + j],  dbias[k d + i] = sum_r e[r, k d + i]
// Both read h_{t-1} (h0 at t = 0) from the saved forward output, staged through shared memory. mma.sync m16n8k16 (fragments as in
// recurrence_latency.cuh), float accumulation. The dW pass rounds e (float) to bf16 for the mma; dbias sums the float
// e. Each row range's dW / dbias partial is written once and the partials are summed in a fixed order: deterministic.
// Measured reason (H200, bench_recurrence_latency.py): the CUDA-core versions of these two passes took more than
// the whole reverse loop at B = 16 (bwd 1.36 us per step against 0.49 at B = 1).
#pragma once

#include <algorithm>
#include <type_traits>

#include "cuda/check.cuh"

namespace mmrec::cuda {
namespace gemm {

constexpr int kGateRows = 64;  // rows of h_{t-1} staged per gate block
constexpr int kDwRows = 32;    // rows of e and h_{t-1} staged per step of a dW block

// Where row r's h_{t-1} starts: (r - 1) Dm in h when t > 0, -1 - b Dm (h0 row b) when t = 0 and h0 is given, kNone
// when it is zero (t = 0 without h0, or r outside [0, end)). One 64-bit division per row, done once per staged row.
constexpr int64_t kNone = INT64_MIN;

__device__ __forceinline__ int64_t prev_offset(int64_t row, int64_t end, int64_t T_, int64_t Dm, bool has_h0) {
  if (row >= end) return kNone;
  const int64_t b = row / T_;
  if (row - b * T_ > 0) return (row - 1) * Dm;
  return has_h0 ? -1 - b * Dm : kNone;
}

template <class T>
__device__ __forceinline__ T prev_value(const T* h, const T* h0, int64_t off, int64_t c) {
  if (off >= 0) return h[off + c];
  return off == kNone ? T(0.0f) : h0[-1 - off + c];
}

__device__ __forceinline__ uint32_t pack16(unsigned short lo, unsigned short hi) {
  return uint32_t(lo) | (uint32_t(hi) << 16);
}

// grid (ceil(rows / 64), H), block 2 D threads (D / 16 warps); warp m computes outputs 16m .. 16m + 15 of 8 rows per
// mma tile. hs: [64 rows][D + 8] storage-type values (row stride D / 2 + 4 words: the 8 rows x 4 lanes of a
// B-fragment read hit distinct banks).
template <class T, int D>
__global__ void __launch_bounds__(2 * D)
    gate_mma_kernel(const T* __restrict__ w, const T* __restrict__ bias, const T* __restrict__ h,
                    const T* __restrict__ h0, float* __restrict__ s, int64_t rows, int64_t T_, int H) {
  constexpr int KT = D / 16, SW = D / 2 + 4;
  __shared__ __align__(16) uint32_t hs[kGateRows * SW];
  unsigned short* hs16 = reinterpret_cast<unsigned short*>(hs);
  const int lane = threadIdx.x % 32, m = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int64_t k = blockIdx.y, Dm = int64_t(H) * D, r0 = int64_t(blockIdx.x) * kGateRows;
  __shared__ int64_t src[kGateRows];
  if (threadIdx.x < kGateRows) src[threadIdx.x] = prev_offset(r0 + threadIdx.x, rows, T_, Dm, h0 != nullptr);
  __syncthreads();
  for (int x = threadIdx.x; x < kGateRows * D; x += 2 * D) {  // coalesced: consecutive threads, consecutive j
    const int rr = x / D, j = x % D;
    hs16[rr * 2 * SW + j] = latency::bits16(prev_value(h, h0, src[rr], k * D + j));
  }
  const unsigned short* wb = reinterpret_cast<const unsigned short*>(w) + k * D * D;
  auto wpair = [&](int row, int col) { return pack16(wb[row * D + col], wb[row * D + col + 1]); };
  uint32_t a[KT][4];
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    const int i0 = 16 * m + g, j0 = 16 * kt + 2 * c;
    a[kt][0] = wpair(i0, j0);
    a[kt][1] = wpair(i0 + 8, j0);
    a[kt][2] = wpair(i0, j0 + 8);
    a[kt][3] = wpair(i0 + 8, j0 + 8);
  }
  const float b_lo = bias ? to_acc(bias[k * D + 16 * m + g]) : 0.0f;      // output 16m + g
  const float b_hi = bias ? to_acc(bias[k * D + 16 * m + g + 8]) : 0.0f;  // output 16m + g + 8
  __syncthreads();
#pragma unroll 2
  for (int tile = 0; tile < kGateRows / 8; ++tile) {
    float acc[4];
    latency::mma_tile<T, D>(a, hs + (8 * tile + g) * SW, c, acc);  // C[i][n], n = row 8 tile + n
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = r0 + 8 * tile + 2 * c + e % 2;
      if (row < rows) s[row * Dm + k * D + 16 * m + g + 8 * (e / 2)] = sigmoid(acc[e] + (e < 2 ? b_lo : b_hi));
    }
  }
}

// grid (nparts, H), block 2 D threads (D / 16 warps). Block `part` sums rows [part * rows_per_part, ...) in steps of
// 32 rows staged transposed in shared memory (eT, hT: [D][32 + 8] bf16, so that one 32-bit word holds the K pair of
// an A or B fragment and the 8 x 4 lanes of a fragment read hit distinct banks). Warp m owns dW rows
// i = 16m .. 16m + 15 and all D columns (D / 8 n tiles: D / 2 float accumulators per lane). Thread x also sums the
// float e of column x % D over the rows x / D, x / D + 2, ... for dbias; the two halves are added in a fixed order.
template <int D>
__global__ void __launch_bounds__(2 * D)
    dw_mma_kernel(const float* __restrict__ e, const __nv_bfloat16* __restrict__ h,
                  const __nv_bfloat16* __restrict__ h0, float* __restrict__ dw_part, float* __restrict__ db_part,
                  int64_t rows, int64_t rows_per_part, int64_t T_, int H) {
  constexpr int NT = D / 8, RS = kDwRows + 8, RW = RS / 2;
  __shared__ __align__(16) uint32_t eT[D * RW], hT[D * RW];
  __shared__ float bsum_hi[D];
  __shared__ int64_t src[kDwRows];
  unsigned short* eT16 = reinterpret_cast<unsigned short*>(eT);
  unsigned short* hT16 = reinterpret_cast<unsigned short*>(hT);
  const int lane = threadIdx.x % 32, m = threadIdx.x / 32, g = lane / 4, c = lane % 4;
  const int64_t k = blockIdx.y, Dm = int64_t(H) * D, part = blockIdx.x;
  const int64_t lo = part * rows_per_part, hi = min(rows, lo + rows_per_part);
  const int col = threadIdx.x % D, half = threadIdx.x / D;
  float acc[NT][4] = {};
  float bsum = 0.0f;
  for (int64_t r0 = lo; r0 < hi; r0 += kDwRows) {
    if (threadIdx.x < kDwRows) src[threadIdx.x] = prev_offset(r0 + threadIdx.x, hi, T_, Dm, h0 != nullptr);
    __syncthreads();
#pragma unroll 4
    for (int rr = half; rr < kDwRows; rr += 2) {
      const int64_t row = r0 + rr;
      const float ev = row < hi ? e[row * Dm + k * D + col] : 0.0f;
      bsum += ev;
      eT16[col * RS + rr] = latency::bits16(__float2bfloat16_rn(ev));
      hT16[col * RS + rr] = latency::bits16(prev_value(h, h0, src[rr], k * D + col));
    }
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < kDwRows / 16; ++ks) {
      const int w0 = 8 * ks + c;  // word of rows 16 ks + 2c, 2c + 1 (w0 + 4: rows + 8, + 9)
      const int i = 16 * m + g;
      const uint32_t a[4] = {eT[i * RW + w0], eT[(i + 8) * RW + w0], eT[i * RW + w0 + 4], eT[(i + 8) * RW + w0 + 4]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int j = 8 * nt + g;
        latency::mma_16816<__nv_bfloat16>(acc[nt], a, hT[j * RW + w0], hT[j * RW + w0 + 4]);
      }
    }
    __syncthreads();
  }
  float* out = dw_part + (part * H + k) * D * D;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int i = 16 * m + g, j = 8 * nt + 2 * c;
    out[i * D + j] = acc[nt][0];
    out[i * D + j + 1] = acc[nt][1];
    out[(i + 8) * D + j] = acc[nt][2];
    out[(i + 8) * D + j + 1] = acc[nt][3];
  }
  if (half == 1) bsum_hi[col] = bsum;
  __syncthreads();
  if (half == 0) db_part[part * Dm + k * D + col] = bsum + bsum_hi[col];
}

inline bool takes_gate(int64_t d) { return d == 32 || d == 64 || d == 128; }

// Launches the gate pass for 16-bit T (d in {32, 64, 128}).
template <class T>
int launch_gate(int64_t d, const T* w, const T* bias, const T* h, const T* h0, float* s, int64_t rows, int64_t T_,
                int64_t H, cudaStream_t st) {
  const dim3 grid(unsigned((rows + kGateRows - 1) / kGateRows), unsigned(H));
  switch (d) {
    case 32: gate_mma_kernel<T, 32><<<grid, 64, 0, st>>>(w, bias, h, h0, s, rows, T_, int(H)); break;
    case 64: gate_mma_kernel<T, 64><<<grid, 128, 0, st>>>(w, bias, h, h0, s, rows, T_, int(H)); break;
    case 128: gate_mma_kernel<T, 128><<<grid, 256, 0, st>>>(w, bias, h, h0, s, rows, T_, int(H)); break;
    default: return kUnsupported;
  }
  MMREC_CHECK_LAUNCH();
  return 0;
}

// Row ranges of the dW pass: about four blocks per multiprocessor, whole 32-row steps.
inline int64_t dw_parts(int64_t rows, int64_t H, int sm_count) {
  const int64_t want = std::max<int64_t>(1, (4 * int64_t(sm_count) + H - 1) / H);
  return std::min<int64_t>(std::min<int64_t>(want, (rows + kDwRows - 1) / kDwRows), 65535);
}

inline int launch_dw(int64_t d, const float* e, const __nv_bfloat16* h, const __nv_bfloat16* h0, float* dw_part,
                     float* db_part, int64_t rows, int64_t nparts, int64_t T_, int64_t H, cudaStream_t st) {
  const int64_t rows_per_part = ((rows + nparts - 1) / nparts + kDwRows - 1) / kDwRows * kDwRows;
  const dim3 grid{unsigned(nparts), unsigned(H)};
  switch (d) {
    case 32: dw_mma_kernel<32><<<grid, 64, 0, st>>>(e, h, h0, dw_part, db_part, rows, rows_per_part, T_, int(H)); break;
    case 64: dw_mma_kernel<64><<<grid, 128, 0, st>>>(e, h, h0, dw_part, db_part, rows, rows_per_part, T_, int(H)); break;
    case 128:
      dw_mma_kernel<128><<<grid, 256, 0, st>>>(e, h, h0, dw_part, db_part, rows, rows_per_part, T_, int(H));
      break;
    default: return kUnsupported;
  }
  MMREC_CHECK_LAUNCH();
  return 0;
}

}  // namespace gemm
}  // namespace mmrec::cuda
