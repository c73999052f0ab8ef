// recurrence: p_t = W h_{t-1} + bias (W block-diagonal, head k: w[k] @ h^k), s_t = sigmoid(p_t),
//             h_t = z_t * s_t + gamma_t * h_{t-1}  (h_{-1} = h0).
// backward:   delta_t = G_t + gamma_{t+1} * delta_{t+1} + W^T e_{t+1}, e_t = delta_t * z_t * s_t * (1 - s_t);
//             dz_t = delta_t s_t, dgamma_t = delta_t h_{t-1}, dbias = sum e_t, dW[k] = sum e^k_t (h^k_{t-1})^T,
//             dh0 = gamma_0 delta_0 + W^T e_0.
// Saved for backward: z, gamma and h, 3 D elements per token (12 D bytes in float32); s_t is recomputed
// from h_{t-1}. Work per token: forward 2 D d flops (the per-head matvecs) + ~20 D (gate); backward
// 6 D d (recomputed W h, W^T e, dW) + ~30 D.
//
// B * H independent sequences: one task = one head and a block of up to 4 batch rows, which walks all T
// steps with its state in a padded float buffer; each step is a small matmul [rows, d] x [d, d] whose
// register tiles reuse every loaded vector of w[k] across the rows, then the gate. The backward walks
// t = T-1 .. 0 in blocks of ~64 rows (steps x batch rows): p_t of a block is one matmul over the saved h,
// dW[k] += E^T H_prev of the block another, so only W^T e_t is a per-step matvec. dW and dbias go to
// per-task partials, summed per head in block order: the same bits every run and for any thread count.
// w[k] is packed once per call into 8-vector column panels (256 B rows; w[k]^T by 8 x 8 register transposes);
// the per-step matvecs alternate the panel order so the panel they end with starts the next step from L1 (B=1,
// d=128 forward: ~1.6x). With one task per head (B <= 4) the task packs its own w[k], and its last dW product
// writes dW[k] itself (float32/float64 with no padded columns). The fixed cost of a call at B=1 T=1
// H=4 d=128 float32, 2 threads (kernel alone, Zen 4 VM, AVX2 clone): forward 10 us, backward 30-38 us.
// Tasks run on a HelpPool (cpu/help_pool.h), not an OpenMP region: a task never synchronises with another,
// and the caller never waits for a worker to be scheduled. Measured on the shared 2-core Zen 3 (AVX2) at load
// 7-10, B=1 T=256 H=4 d=128 float32, 2 threads, kernel alone (a C++ loop, median of 100-200 calls):
// forward 20-24 ms with OpenMP (a 4 ms scheduler tick per join) -> 1.3-1.6 ms; backward 32-40 -> 6.7-8.3 ms.
// Floors at d = 128 (one thread, min of 300 calls, T=256 H=1): forward 0.21 ms = 0.8 us per step, the rate at
// which 64 KB of w[k]^T comes from L2 (32 B/cycle); backward 0.45 ms, its two 256x128x128 products near the
// 2 FMA/cycle peak (6-row tiles, 12 accumulators: 3% faster than 4-row ones).
// CPU, a 2-core Zen 4 VM (3.6 GHz; the AVX2 clone, forced, runs as fast as the AVX-512 one), B=1 T=256 d=128
// float32, kernel alone, one thread and H=1: forward 0.165 ms = 0.64 us per step, of which the w[k]^T matvec is
// 0.53 (64 KB from L2 at ~34 B/cycle); backward 0.35 ms, of which (each part left out in turn, minima of 300 calls)
// W^T e 0.15, the recomputed W h 0.08, dW 0.09, the rest 0.05. H=4 on 2 threads: minima forward 0.33 ms, backward
// 0.70 (two heads per thread, ~30 us for the woken worker to start); medians 10-40% higher while another process
// holds a core. Through autograd (bench/bench_recurrence.py) forward+backward is 1.26 ms at best, ~0.15 ms of it
// Python and autograd. W h taken from the same loaded w[k] vectors as W^T e (lane-wise dots, no w[k]^T) measured
// 0.38-0.41 ms against 0.35: GCC folds each w[k] load into both FMAs, and the loop is bound by L1 loads.
#include "cpu/recurrence.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>

#include "cpu/help_pool.h"
#include "cpu/parallel.h"

#pragma GCC diagnostic ignored "-Wpsabi"

namespace mmrec::cpu {
namespace {

// 32-byte vectors: AVX2 registers in the x86-64-v3 clone (two SSE halves in the baseline clone).
template <class A> struct Simd;
template <> struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
  static constexpr int N = 8;
};
template <> struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  static constexpr int N = 4;
};
template <class A> using vec = typename Simd<A>::V;

template <class A> MMREC_INLINE vec<A> load(const A* p) { return *reinterpret_cast<const vec<A>*>(p); }
template <class A> MMREC_INLINE void store(A* p, vec<A> v) { *reinterpret_cast<vec<A>*>(p) = v; }
// An explicit lane-0 shuffle: GCC 12 turns `vec{} + x` and brace initialisation into insert chains here.
MMREC_INLINE vec<float> splat(float x) {
  const vec<float> v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0);
}
MMREC_INLINE vec<double> splat(double x) {
  const vec<double> v = {x};
  return __builtin_shufflevector(v, v, 0, 0, 0, 0);
}

// 1 / (1 + exp(-x)) with exp(-x) = 2^n * poly(r) (Cephes expf polynomial, |rel err| < 2e-7);
// -x is clamped to [-87, 88] so 2^n stays a normal float. NaN propagates.
MMREC_INLINE vec<float> sigmoid(vec<float> x) {
  using V = vec<float>;
  using I = Simd<float>::I;
  V t = -x;
  t = t < splat(-87.f) ? splat(-87.f) : t;
  t = t > splat(88.f) ? splat(88.f) : t;
  const V n = (t * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest integer
  V r = t - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  const V scale = (V)((__builtin_convertvector(n, I) + 127) << 23);  // 2^n, bit cast
  return 1.f / (1.f + p * scale);
}

MMREC_INLINE vec<double> sigmoid(vec<double> x) {
  vec<double> s;
  for (int l = 0; l < Simd<double>::N; ++l) s[l] = 1.0 / (1.0 + std::exp(-x[l]));
  return s;
}

// out[r][0:NV*N] = init[r][0:NV*N] + sum_{j<K} x[r*xr + j*xc] * m[j][0:NV*N] for R rows: R x NV accumulators
// stay in registers, each loaded vector of m serves R rows.
template <class A, int R, int NV>
MMREC_INLINE void tile(const A* x, int64_t xr, int64_t xc, const A* m, int64_t ldm, int64_t K, const A* init,
                       int64_t ldi, A* out, int64_t ldo) {
  constexpr int N = Simd<A>::N;
  vec<A> acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = load(init + r * ldi + c * N);
  for (int64_t j = 0; j < K; ++j) {
    vec<A> mv[NV];
    for (int c = 0; c < NV; ++c) mv[c] = load(m + j * ldm + c * N);
    for (int r = 0; r < R; ++r) {
      const vec<A> xv = splat(x[r * xr + j * xc]);
      for (int c = 0; c < NV; ++c) acc[r][c] += xv * mv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) store(out + r * ldo + c * N, acc[r][c]);
}

// The right operand of a matmul: K rows, stored as panels of `pw` columns (panel q holds columns
// [q*pw, (q+1)*pw) as K contiguous rows of `ld` = pw elements, panels `ps` elements apart); a row-major
// matrix is one panel (pw > width, ld = row stride).
template <class A>
struct Mat {
  const A* p;
  int64_t ld, pw, ps;
  MMREC_INLINE const A* col(int64_t i) const { return p + (i / pw) * ps + i % pw; }
};

template <class A>
MMREC_INLINE Mat<A> row_major(const A* p, int64_t ld) { return {p, ld, INT64_MAX, 0}; }

// R rows over `width` columns (a multiple of N): the widest tiles first; 8-12 accumulators hide FMA latency.
// `backward` visits the column tiles last to first: alternating it per step leaves the tiles of the
// previous step's end, which it starts with, in L1 (w[k] of d = 128 is 64 KB, twice L1).
template <class A, int R>
MMREC_INLINE void row_block(const A* x, int64_t xr, int64_t xc, Mat<A> m, int64_t K, int64_t width, const A* init,
                            int64_t ldi, A* out, int64_t ldo, bool backward) {
  constexpr int N = Simd<A>::N;
  constexpr int NV = R == 1 ? 8 : R == 4 ? 2 : 4;
  const int64_t wide = width / (NV * N) * (NV * N);
  if (backward)
    for (int64_t i = wide - NV * N; i >= 0; i -= NV * N)
      tile<A, R, NV>(x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
  int64_t i = wide;
  if constexpr (NV > 4)
    for (; i + 4 * N <= width; i += 4 * N) tile<A, R, 4>(x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
  if constexpr (NV > 2)
    for (; i + 2 * N <= width; i += 2 * N) tile<A, R, 2>(x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
  for (; i < width; i += N) tile<A, R, 1>(x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
  if (!backward)
    for (i = 0; i < wide; i += NV * N) tile<A, R, NV>(x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
}

// One NV-vector column panel of m for all `rows` rows, 6 rows per tile (12 accumulators at NV = 2).
template <class A, int NV>
MMREC_INLINE void panel(int64_t rows, const A* x, int64_t xr, int64_t xc, const A* m, int64_t ldm, int64_t K,
                        const A* init, int64_t ldi, A* out, int64_t ldo) {
  int64_t r = 0;
  for (; r + 6 <= rows; r += 6)
    tile<A, 6, NV>(x + r * xr, xr, xc, m, ldm, K, init + r * ldi, ldi, out + r * ldo, ldo);
  const A* xs = x + r * xr;
  const A* is = init + r * ldi;
  A* os = out + r * ldo;
  switch (rows - r) {
    case 5: tile<A, 5, NV>(xs, xr, xc, m, ldm, K, is, ldi, os, ldo); break;
    case 4: tile<A, 4, NV>(xs, xr, xc, m, ldm, K, is, ldi, os, ldo); break;
    case 3: tile<A, 3, NV>(xs, xr, xc, m, ldm, K, is, ldi, os, ldo); break;
    case 2: tile<A, 2, NV>(xs, xr, xc, m, ldm, K, is, ldi, os, ldo); break;
    case 1: tile<A, 1, NV>(xs, xr, xc, m, ldm, K, is, ldi, os, ldo); break;
    default: break;
  }
}

// out[r][:width] = init[r][:width] + sum_{j<K} x(r, j) m[j][:width] for `rows` rows; x(r, j) = x[r*xr + j*xc],
// init row stride ldi (0: one row for all). out may equal init (each tile reads its init before writing).
// Up to 3 rows (the per-step matvecs): wide tiles per row block. More rows (the batched products): one
// 2N-wide panel of m (K x 2N, L1-resident) at a time serves every row block, so m is read from L2 once.
template <class A>
MMREC_INLINE void matmul(int64_t rows, const A* x, int64_t xr, int64_t xc, Mat<A> m, int64_t K, int64_t width,
                         const A* init, int64_t ldi, A* out, int64_t ldo, bool backward = false) {
  constexpr int N = Simd<A>::N;
  switch (rows) {
    case 1: row_block<A, 1>(x, xr, xc, m, K, width, init, ldi, out, ldo, backward); return;
    case 2: row_block<A, 2>(x, xr, xc, m, K, width, init, ldi, out, ldo, backward); return;
    case 3: row_block<A, 3>(x, xr, xc, m, K, width, init, ldi, out, ldo, backward); return;
    default: break;
  }
  int64_t i = 0;
  for (; i + 2 * N <= width; i += 2 * N)
    panel<A, 2>(rows, x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
  if (i < width) panel<A, 1>(rows, x, xr, xc, m.col(i), m.ld, K, init + i, ldi, out + i, ldo);
}

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Uninitialised 64-byte aligned buffer of n elements, one per slot and calling thread, kept between calls
// (grow-only): fresh pages from the allocator cost ~0.1 ms of page faults per call at d = 128. Whoever uses
// it writes every element it reads (zeroing it here cost ~40 us per call at B=1 H=4 d=128).
enum Slot { kPackedW, kPackedWT, kBias, kParts, kScratch, kSlots };

template <class A>
A* workspace(Slot slot, int64_t n) {
  struct Buffer {
    std::unique_ptr<char[], FreeDeleter> data;
    size_t bytes = 0;
  };
  static thread_local Buffer buffers[kSlots];
  Buffer& buf = buffers[slot];
  const size_t bytes = (size_t(std::max<int64_t>(n, 1)) * sizeof(A) + 63) / 64 * 64;
  if (bytes > buf.bytes) {
    buf.data.reset();
    buf.bytes = 0;
    char* p = static_cast<char*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
    buf.data.reset(p);
    buf.bytes = bytes;
  }
  return reinterpret_cast<A*>(buf.data.get());
}

struct Plan {
  int64_t rows;        // batch rows per task
  int64_t blocks;      // row blocks per head
  int64_t tasks;       // H * blocks; task = head * blocks + block
  int threads;
};

// Up to 4 rows share one pass over w[k]; fewer when that leaves a thread without a task.
inline Plan plan(int64_t B, int64_t T_, int64_t H, int64_t d) {
  const int max_threads = omp_get_max_threads();
  int64_t rows = std::min<int64_t>(B, 4);
  while (rows > 1 && H * ((B + rows - 1) / rows) < max_threads) rows = (rows + 1) / 2;
  const int64_t blocks = (B + rows - 1) / rows;
  return {rows, blocks, H * blocks, num_threads_for(B * T_ * H * d * d / 4, H * blocks)};
}

// dst[j][c] = src[c][j] for j < rows, c < cols (both multiples of 8), in 8 x 8 register blocks: the element loop
// of pack_head took 6.2 us for w[k]^T at d = 128 (a strided gather per element), this 1.5 us.
MMREC_ISA_DISPATCH void transpose8(const float* src, int64_t lds, float* dst, int64_t ldd, int64_t rows,
                                   int64_t cols) {
  typedef float U __attribute__((vector_size(32), aligned(4)));  // rows of w need not be 32-byte aligned
  using V = vec<float>;
  for (int64_t c = 0; c < cols; c += 8)
    for (int64_t j = 0; j < rows; j += 8) {
      V v[8], t[8], s[8];
      for (int r = 0; r < 8; ++r) v[r] = *reinterpret_cast<const U*>(src + (c + r) * lds + j);
      for (int r = 0; r < 8; r += 2) {
        t[r] = __builtin_shufflevector(v[r], v[r + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[r + 1] = __builtin_shufflevector(v[r], v[r + 1], 2, 10, 3, 11, 6, 14, 7, 15);
      }
      for (int r = 0; r < 8; r += 4)
        for (int h = 0; h < 2; ++h) {
          s[r + 2 * h] = __builtin_shufflevector(t[r + h], t[r + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
          s[r + 2 * h + 1] = __builtin_shufflevector(t[r + h], t[r + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
      for (int i = 0; i < 4; ++i) {  // s[i]: columns i and i + 4 of rows 0-3, s[i + 4] the same of rows 4-7
        store(dst + (j + i) * ldd + c, __builtin_shufflevector(s[i], s[i + 4], 0, 1, 2, 3, 8, 9, 10, 11));
        store(dst + (j + i + 4) * ldd + c, __builtin_shufflevector(s[i], s[i + 4], 4, 5, 6, 7, 12, 13, 14, 15));
      }
    }
}

// Packed float copies of w[k] in panels of pw columns (see Mat), d x dp each: wT holds w[k]^T (for W h), wp
// w[k] (for W^T e); columns past d are zeros, so padded state lanes never leak into real ones.
template <class T, class A>
void pack_head(const T* wk, int64_t d, int64_t dp, int64_t pw, A* wT, A* wp) {
  for (int64_t c0 = 0; c0 < dp; c0 += pw) {
    const int64_t width = std::max<int64_t>(0, std::min(pw, d - c0));
    A* tp = wT + c0 * d;  // tp[j][c] = w[k][c0 + c][j]
    bool transposed = false;
    if constexpr (std::is_same_v<T, float> && std::is_same_v<A, float>) {
      transposed = width == pw && d % 8 == 0;  // whole 8 x 8 blocks (d = 128: every panel)
      if (transposed) transpose8(wk + c0 * d, d, tp, pw, d, pw);
    }
    for (int64_t j = 0; j < d && !transposed; ++j) {
      for (int64_t c = 0; c < width; ++c) tp[j * pw + c] = A(to_float(wk[(c0 + c) * d + j]));
      for (int64_t c = width; c < pw; ++c) tp[j * pw + c] = A(0);
    }
    if (!wp) continue;
    A* pp = wp + c0 * d;  // pp[i][c] = w[k][i][c0 + c]
    for (int64_t i = 0; i < d; ++i) {
      if constexpr (std::is_same_v<T, A>)
        std::memcpy(pp + i * pw, wk + i * d + c0, width * sizeof(A));
      else
        for (int64_t c = 0; c < width; ++c) pp[i * pw + c] = A(to_float(wk[i * d + c0 + c]));
      for (int64_t c = width; c < pw; ++c) pp[i * pw + c] = A(0);
    }
  }
}

// bias^k padded to dp with zeros (all zeros without a bias).
template <class T, class A>
void pack_bias(const T* bias, int64_t H, int64_t d, int64_t dp, A* out) {
  for (int64_t k = 0; k < H; ++k)
    for (int64_t i = 0; i < dp; ++i) out[k * dp + i] = bias && i < d ? A(to_float(bias[k * d + i])) : A(0);
}

template <class T, class A>
MMREC_INLINE void load_rows(A* dst, int64_t dp, const T* src, int64_t stride, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * stride;
    A* o = dst + r * dp;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) o[i] = A(to_float(s[i]));
  }
}

template <class T, class A>
MMREC_INLINE void store_rows(T* dst, int64_t stride, const A* src, int64_t dp, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    T* o = dst + r * stride;
    const A* s = src + r * dp;
#pragma omp simd
    for (int64_t i = 0; i < d; ++i) o[i] = from_acc<T>(s[i]);
  }
}

// One head, `rows` batch rows, all T steps. z, gamma, h point at [b0, 0, k*d]; h0 at [b0, k*d] or null.
template <class T, class A>
MMREC_INLINE void fwd_task(const T* z, const T* gamma, const T* h0, T* h, Mat<A> wT, const A* bias, int64_t rows,
                           int64_t T_, int64_t D, int64_t d, int64_t dp, A* scratch) {
  constexpr int N = Simd<A>::N;
  const int64_t n = rows * dp, seq = T_ * D;
  A* hs = scratch;  // [rows, dp] state h_{t-1}
  A* zs = hs + n;   // [rows, dp] z_t
  A* gs = zs + n;   // [rows, dp] gamma_t
  A* ps = gs + n;   // [rows, dp] p_t
  std::memset(hs, 0, 4 * n * sizeof(A));
  if (h0) load_rows(hs, dp, h0, D, rows, d);
  for (int64_t t = 0; t < T_; ++t) {
    load_rows(zs, dp, z + t * D, seq, rows, d);
    load_rows(gs, dp, gamma + t * D, seq, rows, d);
    matmul<A>(rows, hs, dp, 1, wT, d, dp, bias, 0, ps, dp, t & 1);
    for (int64_t i = 0; i < n; i += N) {
      const vec<A> s = sigmoid(load(ps + i));
      store(hs + i, load(zs + i) * s + load(gs + i) * load(hs + i));
    }
    store_rows(h + t * D, seq, hs, dp, rows, d);
  }
}

// Steps handled as one block in the backward: their p_t = W h_{t-1} + bias (h is saved, so these do not
// depend on each other) and their dW contributions are each one matmul over ~64 rows instead of a
// matvec per step; only W^T e stays sequential.
constexpr int64_t kBlockRows = 64;

// Reverse walk of one task. dw_acc: this thread's [d, dp] partial of dW[k]; db_acc: its [dp] partial of dbias^k.
// The last block's dW product writes to dw_out (row stride ldw): dw_acc, or dW[k] itself when it is the only task
// of head k and needs no conversion.
template <class T, class A>
MMREC_INLINE void bwd_task(const T* z, const T* gamma, const T* h, const T* h0, const T* grad, T* dz, T* dgamma,
                           T* dh0, Mat<A> wT, Mat<A> wp, const A* bias, A* dw_acc, A* db_acc, A* dw_out, int64_t ldw,
                           int64_t rows,
                           int64_t T_, int64_t D, int64_t d, int64_t dp, A* scratch) {
  constexpr int N = Simd<A>::N;
  const int64_t n = rows * dp, seq = T_ * D;
  const int64_t block_steps = std::max<int64_t>(1, kBlockRows / rows);
  A* carry = scratch;  // [rows, dp] gamma_{t+1} delta_{t+1} + W^T e_{t+1}
  A* gs = carry + n;   // [rows, dp] G_t, then dz_t
  A* zs = gs + n;      // [rows, dp] z_t, then dgamma_t
  A* ys = zs + n;      // [rows, dp] gamma_t
  A* p_buf = ys + n;   // [block_steps * rows, dp] p_t of the block's steps (t descending)
  A* e_buf = p_buf + block_steps * n;   // [block_steps * rows, dp] their e_t
  A* hp_buf = e_buf + block_steps * n;  // [block_steps * rows, dp] their h_{t-1}
  std::memset(scratch, 0, 4 * n * sizeof(A));
  std::memset(hp_buf, 0, block_steps * n * sizeof(A));  // padding lanes; p_buf and e_buf are written in full
  for (int64_t t_hi = T_ - 1; t_hi >= 0; t_hi -= block_steps) {
    const int64_t steps = std::min(block_steps, t_hi + 1);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = t_hi - s;
      if (t > 0)
        load_rows(hp_buf + s * n, dp, h + (t - 1) * D, seq, rows, d);
      else if (h0)
        load_rows(hp_buf + s * n, dp, h0, D, rows, d);
      else
        std::memset(hp_buf + s * n, 0, n * sizeof(A));
    }
    matmul<A>(steps * rows, hp_buf, dp, 1, wT, d, dp, bias, 0, p_buf, dp);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = t_hi - s;
      const A* ps = p_buf + s * n;
      const A* hp = hp_buf + s * n;
      A* e = e_buf + s * n;
      load_rows(gs, dp, grad + t * D, seq, rows, d);
      load_rows(zs, dp, z + t * D, seq, rows, d);
      load_rows(ys, dp, gamma + t * D, seq, rows, d);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = r * dp; i < (r + 1) * dp; i += N) {
          const vec<A> sg = sigmoid(load(ps + i));
          const vec<A> delta = load(gs + i) + load(carry + i);
          const vec<A> ev = delta * load(zs + i) * sg * (A(1) - sg);
          store(zs + i, delta * load(hp + i));
          store(gs + i, delta * sg);
          store(e + i, ev);
          store(carry + i, load(ys + i) * delta);
          store(db_acc + i - r * dp, load(db_acc + i - r * dp) + ev);
        }
      store_rows(dz + t * D, seq, gs, dp, rows, d);
      store_rows(dgamma + t * D, seq, zs, dp, rows, d);
      matmul<A>(rows, e, dp, 1, wp, d, dp, carry, dp, carry, dp, s & 1);
    }
    // dW[k][i][j] += sum_n e[n][i] hp[n][j] over the block's rows n, in the order they were produced.
    const bool last = t_hi + 1 == steps;
    matmul<A>(d, e_buf, 1, dp, row_major(hp_buf, dp), steps * rows, dp, dw_acc, dp, last ? dw_out : dw_acc,
              last ? ldw : dp);
  }
  store_rows(dh0, D, carry, dp, rows, d);
}

// The task bodies are the ISA-dispatched functions: the drivers below (and the pool's task lambdas) are compiled
// for the baseline ISA, so everything vectorised happens inside these calls.
#define MMREC_REC_TASKS(T, A)                                                                                       \
  MMREC_ISA_DISPATCH void fwd_task_isa(const T* z, const T* gamma, const T* h0, T* h, Mat<A> wT, const A* bias,   \
                                       int64_t rows, int64_t T_, int64_t D, int64_t d, int64_t dp, A* scratch) {    \
    fwd_task<T, A>(z, gamma, h0, h, wT, bias, rows, T_, D, d, dp, scratch);                                         \
  }                                                                                                                 \
  MMREC_ISA_DISPATCH void bwd_task_isa(const T* z, const T* gamma, const T* h, const T* h0, const T* grad, T* dz,   \
                                       T* dgamma, T* dh0, Mat<A> wT, Mat<A> wp, const A* bias, A* dw_acc,       \
                                       A* db_acc, A* dw_out, int64_t ldw, int64_t rows, int64_t T_, int64_t D,      \
                                       int64_t d, int64_t dp, A* scratch) {                                         \
    bwd_task<T, A>(z, gamma, h, h0, grad, dz, dgamma, dh0, wT, wp, bias, dw_acc, db_acc, dw_out, ldw, rows, T_, D, \
                   d, dp, scratch);                                                                                 \
  }
MMREC_REC_TASKS(float, float)
MMREC_REC_TASKS(double, double)
MMREC_REC_TASKS(bf16_t, float)
#undef MMREC_REC_TASKS

// Columns padded to whole vectors, and to whole 8-vector panels beyond one panel.
inline int64_t padded(int64_t d, int lanes) {
  const int64_t unit = d > 8 * lanes ? 8 * lanes : lanes;
  return (d + unit - 1) / unit * unit;
}

template <class T>
void fwd(const T* z, const T* gamma, const T* w, const T* bias, const T* h0, T* h, int64_t B,
                      int64_t T_, int64_t H, int64_t d) {
  using A = acc_t<T>;
  const int64_t D = H * d, dp = padded(d, Simd<A>::N);
  const Plan pl = plan(B, T_, H, d);
  A* wT = workspace<A>(kPackedWT, H * d * dp);
  A* biasp = workspace<A>(kBias, H * dp);
  const int64_t pw = std::min<int64_t>(dp, 8 * Simd<A>::N);
  pack_bias(bias, H, d, dp, biasp);
  // One task per head (B <= 4 rows): each task packs its own w[k], in parallel and into the cache that uses it.
  const bool pack_in_task = pl.blocks == 1;
  if (!pack_in_task)
    for (int64_t k = 0; k < H; ++k) pack_head(w + k * d * d, d, dp, pw, wT + k * d * dp, static_cast<A*>(nullptr));
  const int64_t scratch_size = 4 * pl.rows * dp;
  A* scratch = workspace<A>(kScratch, pl.threads * scratch_size);
  HelpPool::instance().run(pl.tasks, pl.threads, [&](int64_t task, int participant) {
    const int64_t k = task / pl.blocks, b0 = (task % pl.blocks) * pl.rows;
    const int64_t rows = std::min(pl.rows, B - b0), base = b0 * T_ * D + k * d;
    if (pack_in_task) pack_head(w + k * d * d, d, dp, pw, wT + k * d * dp, static_cast<A*>(nullptr));
    fwd_task_isa(z + base, gamma + base, h0 ? h0 + b0 * D + k * d : nullptr, h + base,
                 Mat<A>{wT + k * d * dp, pw, pw, d * pw}, biasp + k * dp, rows, T_, D, d, dp,
                 scratch + participant * scratch_size);
  });
}

template <class T>
void bwd(const T* z, const T* gamma, const T* w, const T* bias, const T* h0, const T* h, const T* grad,
                      T* dz, T* dgamma, T* dw, T* dbias, T* dh0, int64_t B, int64_t T_, int64_t H, int64_t d) {
  using A = acc_t<T>;
  const int64_t D = H * d, dp = padded(d, Simd<A>::N);
  const Plan pl = plan(B, T_, H, d);
  A* wT = workspace<A>(kPackedWT, H * d * dp);
  A* wp = workspace<A>(kPackedW, H * d * dp);
  A* biasp = workspace<A>(kBias, H * dp);
  const int64_t pw = std::min<int64_t>(dp, 8 * Simd<A>::N);
  pack_bias(bias, H, d, dp, biasp);
  const bool pack_in_task = pl.blocks == 1;  // as in fwd
  if (!pack_in_task)
    for (int64_t k = 0; k < H; ++k) pack_head(w + k * d * d, d, dp, pw, wT + k * d * dp, wp + k * d * dp);
  // Per-task partials: [tasks][d + 1][dp] (task = head * blocks + block); row d holds dbias^k.
  const int64_t part = (d + 1) * dp;
  A* parts = workspace<A>(kParts, pl.tasks * part);
  const int64_t scratch_size = (4 * pl.rows + 3 * (kBlockRows + pl.rows)) * dp;  // >= any task's need
  A* scratch = workspace<A>(kScratch, pl.threads * scratch_size);
  // dW[k] and dbias^k: the partials of head k's blocks summed in block order (the same bits every run).
  const auto reduce_head = [&](int64_t k) {
    for (int64_t i = 0; i <= d; ++i) {
      T* out_row = i < d ? dw + (k * d + i) * d : dbias + k * d;
      const A* first = parts + k * pl.blocks * part + i * dp;
      for (int64_t j = 0; j < d; ++j) {
        A sum = first[j];
        for (int64_t blk = 1; blk < pl.blocks; ++blk) sum += first[blk * part + j];
        out_row[j] = from_acc<T>(sum);
      }
    }
  };
  // One task per head, no padding, no conversion: the task's last dW product writes dW[k] itself, so the partial
  // is never read back (that pass cost ~11 us per head at d = 128).
  const bool direct = std::is_same_v<T, A> && pl.blocks == 1 && d == dp;
  HelpPool& pool = HelpPool::instance();
  pool.run(pl.tasks, pl.threads, [&](int64_t task, int participant) {
    const int64_t k = task / pl.blocks, b0 = (task % pl.blocks) * pl.rows;
    const int64_t rows = std::min(pl.rows, B - b0), base = b0 * T_ * D + k * d;
    A* acc = parts + task * part;
    std::memset(acc, 0, part * sizeof(A));
    if (pack_in_task) pack_head(w + k * d * d, d, dp, pw, wT + k * d * dp, wp + k * d * dp);
    A* const dw_out = direct ? reinterpret_cast<A*>(dw + k * d * d) : acc;
    bwd_task_isa(z + base, gamma + base, h + base, h0 ? h0 + b0 * D + k * d : nullptr, grad + base, dz + base,
                 dgamma + base, dh0 + b0 * D + k * d, Mat<A>{wT + k * d * dp, pw, pw, d * pw},
                 Mat<A>{wp + k * d * dp, pw, pw, d * pw}, biasp + k * dp, acc, acc + d * dp, dw_out,
                 direct ? d : dp, rows, T_, D, d, dp, scratch + participant * scratch_size);
    if (direct)
      for (int64_t j = 0; j < d; ++j) dbias[k * d + j] = from_acc<T>(acc[d * dp + j]);
    else if (pl.blocks == 1)
      reduce_head(k);
  });
  if (pl.blocks > 1) pool.run(H, pl.threads, [&](int64_t k, int) { reduce_head(k); });
}

}  // namespace

#define MMREC_REC_SPECIALIZE(T)                                                                              \
  template <>                                                                                                        \
  void recurrence_fwd<T>(const T* z, const T* g, const T* w, const T* bias, const T* h0, T* h, int64_t B, int64_t T_, \
                         int64_t H, int64_t d) {                                                                     \
    fwd(z, g, w, bias, h0, h, B, T_, H, d);                                                                 \
  }                                                                                                                  \
  template <>                                                                                                        \
  void recurrence_bwd<T>(const T* grad, const T* z, const T* g, const T* w, const T* bias, const T* h0, const T* h,  \
                         T* dz, T* dg, T* dw, T* dbias, T* dh0, int64_t B, int64_t T_, int64_t H, int64_t d) {       \
    bwd(z, g, w, bias, h0, h, grad, dz, dg, dw, dbias, dh0, B, T_, H, d);                                   \
  }
MMREC_REC_SPECIALIZE(float)
MMREC_REC_SPECIALIZE(double)
MMREC_REC_SPECIALIZE(bf16_t)
#undef MMREC_REC_SPECIALIZE

}  // namespace mmrec::cpu
